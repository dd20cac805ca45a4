"""Numerical parity between the PyTorch reference and jaxbasics: every quantity of the
chapter computed on both sides from identical inputs and parameters.

Tolerances are for float32 on both sides: single evaluations agree to about 1e-6
relative; 100 SGD steps accumulate rounding differences of a few 1e-7 per step.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch

from jaxbasics import checks
from jaxbasics.chapter import neuron, simplenet, tensors
from jaxbasics.chapter.train_step import make_scan_train, sum_gradients
from jaxbasics.compare import torch_reference as ref
from jaxbasics.compare.transfer import flax_to_torch, torch_named_as_flax
from jaxbasics.losses import binary_cross_entropy
from jaxbasics.params import loss_of_params, split_params

RTOL_SINGLE = 1e-6  # one forward/backward in float32
ATOL_SINGLE = 1e-7
ATOL_100_STEPS = 1e-5  # parameters after 100 SGD steps


@dataclass(frozen=True)
class Row:
    """One compared quantity. ``torch``/``jax`` are display strings; ``abs_diff`` is the largest
    absolute difference; the row passes when ``abs_diff <= atol + rtol·|reference|``."""

    section: str
    quantity: str
    torch: str
    jax: str
    abs_diff: float
    tolerance: float
    ok: bool

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-ready)."""
        return asdict(self)


def _fmt(x: Any) -> str:
    arr = np.asarray(x)
    if arr.size == 1:
        value = arr.reshape(())
        return f"{value:.7g}" if np.issubdtype(arr.dtype, np.floating) else str(value)
    return f"{list(arr.shape)} max|·| {np.abs(arr).max():.5g}"


def _row(section: str, quantity: str, t: Any, j: Any, rtol: float = RTOL_SINGLE,
         atol: float = ATOL_SINGLE) -> Row:
    t64, j64 = np.asarray(t, np.float64), np.asarray(j, np.float64)
    if t64.shape != j64.shape:
        raise ValueError(f"{quantity}: torch shape {t64.shape} differs from jax shape {j64.shape}")
    diff = float(np.max(np.abs(t64 - j64))) if t64.size else 0.0
    tol = float(atol + rtol * np.max(np.abs(t64))) if t64.size else atol
    return Row(section, quantity, _fmt(t), _fmt(j), diff, tol, diff <= tol)


def _tensor_rows() -> list[Row]:
    rows = []
    t_tensors, j_tensors = ref.chapter_tensors(), tensors.chapter_tensors()
    for name, t in t_tensors.items():
        rows.append(_row("tensors", f"{name} values", t.numpy(), j_tensors[name], 0, 0))
    t2_j = tensors.shape_example()
    t2_t, m = torch.tensor(np.asarray(t2_j).tolist()), tensors.SHAPE_EXAMPLE_NAME
    rows.append(_row("tensors", f"{m}.view(3, 2) / reshape", t2_t.view(3, 2).numpy(),
                     tensors.reshape(t2_j, (3, 2)), 0, 0))
    rows.append(_row("tensors", f"{m}.T", t2_t.T.numpy(), tensors.transpose(t2_j), 0, 0))
    rows.append(_row("tensors", f"{m} @ {m}.T", (t2_t @ t2_t.T).numpy(),
                     tensors.matmul(t2_j, t2_j.T), 0, 0))
    # dtypes differ by design: shown, not compared numerically
    rows.append(Row("tensors", "default int dtype (documented difference)",
                    str(t_tensors["tensor1d"].dtype).replace("torch.", ""),
                    str(j_tensors["tensor1d"].dtype), 0.0, 0.0, True))
    rows.append(Row("tensors", "default float dtype", str(torch.tensor([1.0]).dtype)
                    .replace("torch.", ""), str(jnp.array([1.0]).dtype), 0.0, 0.0,
                    str(torch.tensor([1.0]).dtype) == f"torch.{jnp.array([1.0]).dtype}"))
    return rows


def _neuron(values: dict) -> list[Row]:
    ex = neuron.CHAPTER_EXAMPLE
    t_loss, t_gw, t_gb = ref.neuron_gradients(x=ex.x, w=ex.w, b=ex.b, y=ex.y)
    j_loss, (j_gw, j_gb) = neuron.value_and_gradients(x=ex.x, w=ex.w, b=ex.b, y=ex.y)
    values["neuron"] = {"torch": {"loss": t_loss, "grad_w": t_gw, "grad_b": t_gb},
                        "jax": {"loss": float(j_loss), "grad_w": float(j_gw),
                                "grad_b": float(j_gb)}}
    return [_row("neuron", "loss", t_loss, j_loss), _row("neuron", "dL/dw", t_gw, j_gw),
            _row("neuron", "dL/db", t_gb, j_gb)]


def _simplenet(values: dict, seed: int, steps: int, batch: int) -> list[Row]:
    j_model, _, _ = simplenet.example(seed, batch)  # tour's and graph's SimpleNet and batch
    t_model = ref.TorchSimpleNet()
    flax_to_torch(j_model, t_model)
    graphdef, params = split_params(j_model)
    xs, ys = (np.array(a) for a in simplenet.example_batches(seed, steps, batch))  # writable
    x, y = xs[0], ys[0]

    rows = []
    with torch.no_grad():
        t_out = t_model(torch.as_tensor(x)).numpy()
    rows.append(_row("simplenet", "forward model(x)", t_out, j_model(jnp.asarray(x))))
    t_loss, t_grads = ref.gradients(t_model, x, y)
    loss_fn = loss_of_params(graphdef, simplenet.bce_loss)
    j_loss, j_grads = jax.value_and_grad(loss_fn)(params, x, y)
    rows.append(_row("simplenet", "BCE loss", t_loss, j_loss))
    t_grads_flax = torch_named_as_flax(t_grads)
    for layer in ("fc1", "fc2"):
        for kind in ("kernel", "bias"):
            rows.append(_row("simplenet", f"grad {layer}.{kind}", t_grads_flax[layer][kind],
                             j_grads[layer][kind]))

    tx = optax.sgd(0.01)
    run = make_scan_train(graphdef, simplenet.bce_loss, tx, donate=False)
    diffs = {}
    for n in (1, steps):
        t_copy = ref.TorchSimpleNet()
        t_copy.load_state_dict(t_model.state_dict())
        t_losses = ref.sgd_train(t_copy, xs[:n], ys[:n])
        j_params, _, j_losses = run(params, tx.init(params), xs[:n], ys[:n])
        t_params = torch_named_as_flax({k: v.detach().numpy() for k, v in
                                        t_copy.named_parameters()})
        t_leaves = jax.tree.leaves(t_params)
        j_leaves = jax.tree.leaves(j_params)
        atol = ATOL_SINGLE if n == 1 else ATOL_100_STEPS
        rows.append(_row("simplenet", f"all parameters after {n} SGD step{'s' * (n > 1)}",
                         np.concatenate([a.ravel() for a in t_leaves]),
                         np.concatenate([np.asarray(a).ravel() for a in j_leaves]), 0, atol))
        rows.append(_row("simplenet", f"losses over {n} step{'s' * (n > 1)}", t_losses, j_losses,
                         RTOL_SINGLE if n == 1 else 1e-5, atol))
        diffs[n] = rows[-2].abs_diff
    values["simplenet"] = {"torch_loss": t_loss, "jax_loss": float(j_loss),
                           "max_abs_grad_diff": max(r.abs_diff for r in rows
                                                    if r.quantity.startswith("grad")),
                           "max_abs_param_diff_after_1_step": diffs[1],
                           f"max_abs_param_diff_after_{steps}_steps": diffs[steps]}

    # PyTorch: two backward() without zero_grad() sum into .grad; JAX: an explicit sum
    halves = [(x[: batch // 2], y[: batch // 2]), (x[batch // 2:], y[batch // 2:])]
    t_acc = torch_named_as_flax(ref.accumulated_gradients(t_model, halves))
    j_acc = sum_gradients(*(jax.grad(loss_fn)(params, hx, hy) for hx, hy in halves))
    for layer in ("fc1", "fc2"):
        rows.append(_row("accumulation", f"2× backward vs sum_gradients: {layer}.kernel",
                         t_acc[layer]["kernel"], j_acc[layer]["kernel"]))
    return rows


def _bce_edges(values: dict) -> list[Row]:
    p = np.array([0.0, 1.0, 0.0, 1.0, 1e-30, 1e-8, 1 - 1e-7, 0.5], np.float32)
    y = np.array([1.0, 0.0, 0.0, 1.0, 1.0, 1.0, 0.0, 1.0], np.float32)
    t_loss, t_grad = ref.bce_with_grad(p, y, "none")
    j_loss = binary_cross_entropy(p, y, "none")
    j_grad = jax.grad(lambda q: binary_cross_entropy(q, y, "sum"))(jnp.asarray(p))
    values["bce_edges"] = {"p": p.tolist(), "y": y.tolist(), "torch_loss": t_loss.tolist(),
                           "jax_loss": np.asarray(j_loss).tolist()}
    return [_row("bce", "loss at p ∈ {0, 1, 1e-30, 1e-8, 1-1e-7, 0.5}", t_loss, j_loss),
            _row("bce", "dL/dp at the same p (torch clamps at 1e-12)", t_grad, j_grad)]


def run_parity(seed: int = 0, steps: int = 100, batch: int = simplenet.EXAMPLE_BATCH_SIZE
               ) -> tuple[list[Row], dict]:
    """Every comparison row, and the headline values for the JSON output: SimpleNet's
    forward pass, loss and gradients on :func:`jaxbasics.chapter.simplenet.example` (the
    model and batch that ``tour`` and ``graph`` show for ``seed``), then ``steps`` SGD steps
    on :func:`~jaxbasics.chapter.simplenet.example_batches` of ``batch``."""
    checks.uint32(seed, "seed")
    checks.positive_int(steps, "steps")
    checks.positive_int(batch, "batch")
    values: dict[str, Any] = {}
    rows = (_tensor_rows() + _neuron(values) + _simplenet(values, seed, steps, batch)
            + _bce_edges(values))
    return rows, values
