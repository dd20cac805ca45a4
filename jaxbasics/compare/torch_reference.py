"""The chapter's PyTorch programs, kept as the reference the JAX code is compared with:
tensors, single-neuron autograd, SimpleNet with ``BCELoss`` + ``SGD(lr=0.01)``.

Everything here is object-oriented PyTorch on purpose: modules own parameters,
``loss.backward()`` writes ``.grad``, ``optimizer.step()`` mutates in place.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def grad_of(p: torch.Tensor) -> torch.Tensor:
    """``p.grad``, which ``backward()`` has filled; a clear error where it has not."""
    if p.grad is None:
        raise RuntimeError(f"no .grad on a tensor of shape {tuple(p.shape)}: backward() did not "
                           "reach it (requires_grad False, or not in the loss)")
    return p.grad


def chapter_tensors() -> dict[str, torch.Tensor]:
    """``tensor0d`` … ``tensor3d`` as the chapter creates them (int64 by default)."""
    return {"tensor0d": torch.tensor(1), "tensor1d": torch.tensor([1, 2, 3]),
            "tensor2d": torch.tensor([[1, 2], [3, 4]]),
            "tensor3d": torch.tensor([[[1, 2], [3, 4]], [[5, 6], [7, 8]]])}


def neuron_gradients(*, w: float, b: float, x: float, y: float) -> tuple[float, float, float]:
    """``(loss, dL/dw, dL/db)`` by ``loss.backward()`` on z = x·w + b, a = σ(z), BCE(a, y);
    keyword arguments only, as :func:`jaxbasics.chapter.neuron.gradients`."""
    w_t = torch.tensor([w], requires_grad=True)
    b_t = torch.tensor([b], requires_grad=True)
    a = torch.sigmoid(torch.tensor([x]) * w_t + b_t)
    loss = F.binary_cross_entropy(a, torch.tensor([y]))
    loss.backward()
    return loss.item(), grad_of(w_t).item(), grad_of(b_t).item()


class TorchSimpleNet(torch.nn.Module):
    """Linear(10, 5) → ReLU → Linear(5, 1) → Sigmoid, attribute names as in the Flax model."""

    def __init__(self, n_in: int = 10, n_hidden: int = 5, n_out: int = 1):
        super().__init__()
        self.fc1 = torch.nn.Linear(n_in, n_hidden)
        self.fc2 = torch.nn.Linear(n_hidden, n_out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.fc2(torch.relu(self.fc1(x))))


def gradients(model: torch.nn.Module, x: np.ndarray, y: np.ndarray) -> tuple[float, dict]:
    """``(loss, {name: grad})`` after ``zero_grad(); BCELoss()(model(x), y).backward()``."""
    model.zero_grad()
    loss = torch.nn.BCELoss()(model(torch.as_tensor(x)), torch.as_tensor(y))
    loss.backward()
    return loss.item(), {n: grad_of(p).detach().numpy().copy() for n, p in model.named_parameters()}


def sgd_train(model: torch.nn.Module, xs: np.ndarray, ys: np.ndarray,
              lr: float = 0.01) -> list[float]:
    """The chapter's loop over batches ``xs[i], ys[i]``; mutates ``model``; returns losses."""
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    loss_fn = torch.nn.BCELoss()
    losses = []
    for x, y in zip(torch.as_tensor(xs), torch.as_tensor(ys), strict=True):
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


def accumulated_gradients(model: torch.nn.Module, batches: list[tuple[np.ndarray, np.ndarray]]
                          ) -> dict[str, np.ndarray]:
    """``.grad`` after one ``zero_grad()`` and a ``backward()`` per batch: the sum of the
    per-batch gradients, PyTorch's implicit accumulation."""
    model.zero_grad()
    loss_fn = torch.nn.BCELoss()
    for x, y in batches:
        loss_fn(model(torch.as_tensor(x)), torch.as_tensor(y)).backward()
    return {n: grad_of(p).detach().numpy().copy() for n, p in model.named_parameters()}


def bce_with_grad(p: np.ndarray, y: np.ndarray, reduction: str = "sum"
                  ) -> tuple[np.ndarray, np.ndarray]:
    """``(loss, dloss/dp)`` of ``F.binary_cross_entropy`` (clamped logs, clamped gradient)."""
    p_t = torch.tensor(p, requires_grad=True)
    loss = F.binary_cross_entropy(p_t, torch.as_tensor(y), reduction=reduction)
    loss.sum().backward()
    return loss.detach().numpy(), grad_of(p_t).numpy()
