"""The matmul inside every GPT-2 projection, y = x·W, with its backward pass laid out for
XLA:CPU (backpropagation through a linear layer, the chapter's Linear(10, 5) at GPT size).

For x (M, k) and W (k, n), with g = dL/dy (M, n), backpropagation needs::

    dL/dx = g·Wᵀ      (M, n)·(n, k)
    dL/dW = xᵀ·g      (k, M)·(M, n)     the M = B·T token axis summed out

XLA computes dL/dW by contracting the first axis of both x and g, a form XLA:CPU's kernels
run slower than row-major products (``jaxbasics bench --suite gpt2-parts``, "weight_grad";
docs/performance.md, item 4). On CPU, :func:`dot_general` therefore copies the smaller of x
and g into its transpose first and multiplies row-major: xᵀ·g, or (gᵀ·x)ᵀ. The copy costs
one pass over an activation-sized array; the product is the same up to the order of the
float additions. Elsewhere (GPU, TPU: their matmul units take transposed operands at full
speed) it is plain ``jax.lax.dot_general``.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

_ROW_TIMES_COL = (((1,), (0,)), ((), ()))  # (M, k)·(k, n)


def _transposed(a: jax.Array) -> jax.Array:
    """``aᵀ`` as its own array in memory: the barrier keeps XLA from folding the transpose
    back into the next matmul as a transposed operand."""
    return lax.optimization_barrier(jnp.transpose(a))


@jax.custom_vjp
def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
    """``x·W`` for x (M, k) and W (k, n) -> (M, n); its gradient as in the module docstring,
    the weight gradient from an explicit transpose."""
    return x @ w


def _matmul_fwd(x, w):
    return x @ w, (x, w)


def weight_grad(x: jax.Array, g: jax.Array) -> jax.Array:
    """dL/dW = xᵀ·g (k, n) for x (M, k) and g (M, n), from an explicit transpose of the
    smaller of the two: xᵀ·g, or (gᵀ·x)ᵀ, whose (k, n) transpose is small."""
    if x.size <= g.size:
        return _transposed(x) @ g
    return (_transposed(g) @ x).T


def _matmul_bwd(residuals, g):
    x, w = residuals
    dx = g @ w.T  # (M, n)·(n, k): a form XLA:CPU runs at full speed
    return dx.astype(x.dtype), weight_grad(x, g).astype(w.dtype)


matmul.defvjp(_matmul_fwd, _matmul_bwd)


def active(backend: str | None = None) -> bool:
    """Whether :func:`dot_general` uses :func:`matmul` on ``backend`` (default: JAX's):
    on CPU only."""
    return (backend or jax.default_backend()) == "cpu"


def dot_general(lhs: jax.Array, rhs: jax.Array, dimension_numbers: Any, precision: Any = None,
                preferred_element_type: Any = None, out_sharding: Any = None) -> jax.Array:
    """Drop-in ``jax.lax.dot_general`` for ``nnx.Linear(..., dot_general=...)``: on CPU, a
    plain 2-D (M, k)·(k, n) product in one dtype goes through :func:`matmul`; anything else
    (other backends, shapes, precisions, shardings) through ``jax.lax.dot_general``."""
    dims = tuple(tuple(map(tuple, part)) for part in dimension_numbers)
    plain = (active() and lhs.ndim == 2 and rhs.ndim == 2 and dims == _ROW_TIMES_COL
             and lhs.dtype == rhs.dtype
             and precision is None and out_sharding is None
             and preferred_element_type in (None, lhs.dtype))
    if plain:
        return matmul(lhs, rhs)
    kwargs = {} if out_sharding is None else {"out_sharding": out_sharding}
    return lax.dot_general(lhs, rhs, dimension_numbers, precision=precision,
                           preferred_element_type=preferred_element_type, **kwargs)
