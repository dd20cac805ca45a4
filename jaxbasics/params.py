"""A module's parameters as plain data (shared by the chapter, GPT-2, the comparison and the
benchmarks): ``nnx.split`` once, outside the hot path, into a graph definition and a nested
dict of arrays, a pure loss over that dict, and its leaves by dotted name.

PyTorch keeps parameters inside the module and mutates them; the functional hot path here
takes them out once::

    graphdef, params = split_params(model)        # params: {"fc1": {"kernel": ..., ...}}
    f = loss_of_params(graphdef, loss_fn)         # f(params, *batch) = loss_fn(model, *batch)
    loss, grads = jax.value_and_grad(f)(params, *batch)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import jax
from flax import nnx

LossFn = Callable[..., jax.Array]  # loss_fn(model, *batch) -> scalar
#: loss_fn(model, *batch) -> (summed loss, weight): the parts an accumulating step adds up
WeightedLossFn = Callable[..., tuple[jax.Array, jax.Array]]
_Out = TypeVar("_Out")

def split_params(model: nnx.Module) -> tuple[nnx.GraphDef, dict]:
    """``(graphdef, params)`` of a module whose only state is ``nnx.Param`` (e.g. SimpleNet).

    ``params`` is a plain nested dict of arrays (``{"fc1": {"kernel": ..., "bias": ...}}``):
    plain dicts are flattened by JAX's C++ pytree code, which keeps the per-call dispatch of a
    jitted step cheaper than passing ``nnx.State`` (docs/performance.md). ``nnx.merge(graphdef, params)``
    rebuilds the module.
    """
    graphdef, params, *rest = nnx.split(model, nnx.Param, ...)  # rest: [everything else]
    if jax.tree.leaves(rest):
        raise ValueError(f"model has non-parameter state ({sorted(nnx.to_pure_dict(rest[0]))}); "
                         f"split it with nnx.split(model, nnx.Param, ...) and thread it yourself")
    return graphdef, nnx.to_pure_dict(params)


def loss_of_params(graphdef: nnx.GraphDef, loss_fn: Callable[..., _Out]) -> Callable[..., _Out]:
    """``f(params, *batch) = loss_fn(nnx.merge(graphdef, params), *batch)``: a pure function
    of the parameters, ready for ``jax.grad``."""
    def f(params: Any, *batch: Any) -> _Out:
        try:
            model = nnx.merge(graphdef, params)
        except ValueError as err:  # another model's tree, or one with leaves missing
            raise ValueError("params must be the parameter tree of the model that graphdef was "
                             f"split from (split_params(model)[1]): {err}") from err
        return loss_fn(model, *batch)
    return f


def named_parameters(tree: Any) -> list[tuple[str, jax.Array]]:
    """``[("fc1.kernel", array), ...]``: a parameter (or gradient) tree flattened with dotted
    names, like ``model.named_parameters()`` or iterating ``p.grad`` in PyTorch."""
    if isinstance(tree, nnx.Module):
        tree = nnx.state(tree, nnx.Param)
    if isinstance(tree, nnx.State):
        tree = nnx.to_pure_dict(tree)
    flat = jax.tree_util.tree_flatten_with_path(tree)[0]
    return [(".".join(_key_name(k) for k in path), leaf) for path, leaf in flat]


def _key_name(key: Any) -> str:
    for attr in ("key", "name", "idx"):
        if hasattr(key, attr):
            return str(getattr(key, attr))
    return str(key)
