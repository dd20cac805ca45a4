"""Weight transfer between the PyTorch and Flax SimpleNet, so both start from the same numbers.

``torch.nn.Linear.weight`` is (out, in) and computes x Wᵀ + b; ``flax.nnx.Linear.kernel`` is
(in, out) and computes x K + b. Hence K = Wᵀ, and biases are copied as they are.
"""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import torch
from flax import nnx

_LAYERS = ("fc1", "fc2")


def _check(name: str, expected: tuple[int, ...], got: tuple[int, ...]) -> None:
    if tuple(expected) != tuple(got):
        raise ValueError(f"{name}: target expects shape {tuple(expected)}, source gives "
                         f"{tuple(got)} (are the layer sizes the same on both sides?)")


def torch_to_flax(torch_model: torch.nn.Module, flax_model: nnx.Module) -> None:
    """Copy ``torch_model``'s fc1/fc2 weights into ``flax_model`` in place (kernel = weightᵀ)."""
    state = nnx.state(flax_model, nnx.Param)
    new = nnx.to_pure_dict(state)
    for layer in _LAYERS:
        src = getattr(torch_model, layer)
        kernel = src.weight.detach().cpu().numpy().T
        bias = src.bias.detach().cpu().numpy()
        _check(f"{layer}.kernel", new[layer]["kernel"].shape, kernel.shape)
        _check(f"{layer}.bias", new[layer]["bias"].shape, bias.shape)
        new[layer] = {"kernel": jnp.asarray(kernel), "bias": jnp.asarray(bias)}
    nnx.replace_by_pure_dict(state, new)
    nnx.update(flax_model, state)


def flax_to_torch(flax_model: nnx.Module, torch_model: torch.nn.Module) -> None:
    """Copy ``flax_model``'s fc1/fc2 parameters into ``torch_model`` in place (weight = kernelᵀ)."""
    params = nnx.to_pure_dict(nnx.state(flax_model, nnx.Param))
    with torch.no_grad():
        for layer in _LAYERS:
            dst = getattr(torch_model, layer)
            weight = np.array(params[layer]["kernel"]).T  # np.array: a writable copy
            bias = np.array(params[layer]["bias"])
            _check(f"{layer}.weight", tuple(dst.weight.shape), weight.shape)
            _check(f"{layer}.bias", tuple(dst.bias.shape), bias.shape)
            dst.weight.copy_(torch.from_numpy(np.ascontiguousarray(weight)))
            dst.bias.copy_(torch.from_numpy(bias))


def torch_named_as_flax(torch_grads: dict[str, np.ndarray]) -> dict:
    """``{"fc1.weight": (out, in), ...}`` → ``{"fc1": {"kernel": (in, out), "bias": ...}, ...}``."""
    out: dict = {}
    for name, value in torch_grads.items():
        layer, kind = name.split(".")
        out.setdefault(layer, {})["kernel" if kind == "weight" else "bias"] = (
            np.asarray(value).T if kind == "weight" else np.asarray(value))
    return out
