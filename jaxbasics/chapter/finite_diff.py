"""Central finite differences: the independent check on automatic differentiation (autodiff
section). Evaluated in float64 so the O(eps^2) truncation error, not float32 rounding, sets
the accuracy.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbasics import checks


def numerical_grad(f: Callable[..., Any], params: Any, *args: Any, eps: float = 1e-6) -> Any:
    """Gradient of scalar ``f(params, *args)`` w.r.t. the pytree ``params`` by central differences.

    ``∂f/∂θ_i ≈ (f(θ + eps·e_i) - f(θ - eps·e_i)) / (2 eps)``, one pair of evaluations per
    scalar in ``params`` (so meant for small models). ``params`` and floating ``args`` are
    promoted to float64 for the evaluations; the result has the structure of ``params`` and
    float64 leaves (NumPy arrays).

    Refused before any evaluation: an ``eps`` that is not a finite number > 0, a ``params``
    leaf without a floating dtype (a step of ``eps`` cannot be taken in it); and, at the first
    evaluation, an ``f`` whose value is not a scalar.
    """
    if isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps < float("inf"):
        raise ValueError(f"eps must be a finite number > 0, got {eps!r}")
    paths_leaves, treedef = jax.tree_util.tree_flatten_with_path(params)
    for path, leaf in paths_leaves:
        checks.float_array(leaf, f"params{jax.tree_util.keystr(path)}")
    with jax.enable_x64(True):
        leaves = [np.asarray(leaf, dtype=np.float64) for _, leaf in paths_leaves]
        args64 = jax.tree.map(_to64, args)

        def evaluate(flat: list[np.ndarray]) -> float:
            value = f(jax.tree.unflatten(treedef, [jnp.asarray(x) for x in flat]), *args64)
            if np.size(value) != 1:
                raise ValueError(f"f must return a scalar, got shape {np.shape(value)}")
            return float(np.asarray(value).reshape(()))

        grads = []
        for i, leaf in enumerate(leaves):
            g = np.zeros_like(leaf)
            for idx in np.ndindex(leaf.shape):
                plus = [x.copy() for x in leaves]
                minus = [x.copy() for x in leaves]
                plus[i][idx] += eps
                minus[i][idx] -= eps
                g[idx] = (evaluate(plus) - evaluate(minus)) / (2 * eps)
            grads.append(g)
        return jax.tree.unflatten(treedef, grads)


def _to64(x: Any) -> Any:
    arr = np.asarray(x)
    return jnp.asarray(arr, dtype=np.float64) if np.issubdtype(arr.dtype, np.floating) else x
