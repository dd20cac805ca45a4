"""Tensors: the chapter's first section (creating arrays, dtypes, shape operations).

JAX arrays play the role of ``torch.Tensor`` with three differences worth knowing:

* **Default dtypes.** ``torch.tensor([1, 2, 3])`` is int64; ``jnp.array([1, 2, 3])`` is
  int32 unless ``jax_enable_x64`` is on. Python floats give float32 in both (float64 in
  JAX under x64).
* **Immutability.** A JAX array is never modified in place, so there is no ``.view`` that
  aliases storage: :func:`reshape` returns a new array, and ``x.at[i].set(v)`` replaces
  ``x[i] = v``. Inside ``jax.jit`` such an update is written in place only when the old
  buffer is dead: an intermediate nothing reads afterwards, or an argument donated with
  ``donate_argnums``; an argument that is not donated is copied first.
* **Placement.** Arrays live on the default device (CPU, GPU or TPU) without ``.to(device)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxbasics import checks

#: What PyTorch picks for the same literals, for side-by-side display.
TORCH_DEFAULT_DTYPES = {"int": "int64", "float": "float32"}


def chapter_tensors() -> dict[str, jax.Array]:
    """The chapter's 0-D to 3-D example arrays.

    Returns ``{"tensor0d": (), "tensor1d": (3,), "tensor2d": (2, 2), "tensor3d": (2, 2, 2)}``
    (name: shape), holding the integers 1, [1, 2, 3], [[1, 2], [3, 4]] and
    [[[1, 2], [3, 4]], [[5, 6], [7, 8]]].
    """
    return {
        "tensor0d": jnp.array(1),
        "tensor1d": jnp.array([1, 2, 3]),
        "tensor2d": jnp.array([[1, 2], [3, 4]]),
        "tensor3d": jnp.array([[[1, 2], [3, 4]], [[5, 6], [7, 8]]]),
    }


#: The name the 2×3 matrix of :func:`shape_example` goes by here; the chapter reuses the name
#: ``tensor2d`` for it after the 2×2 ``tensor2d`` of :func:`chapter_tensors`.
SHAPE_EXAMPLE_NAME = "tensor2x3"


def shape_example() -> jax.Array:
    """The 2×3 integer matrix ``[[1, 2, 3], [4, 5, 6]]`` of the book's tensor examples (the
    chapter itself reshapes, transposes and multiplies the 2×2 ``tensor2d``), named
    :data:`SHAPE_EXAMPLE_NAME` (``tensor2x3``) so that it is never confused with the 2×2
    ``tensor2d`` of :func:`chapter_tensors`."""
    return jnp.array([[1, 2, 3], [4, 5, 6]])


def describe(x: Any) -> dict[str, Any]:
    """Shape, rank, dtype and device of an array: the facts ``x.shape``/``x.dtype`` give."""
    arr = checks.array(x, "x")
    return {"shape": tuple(arr.shape), "ndim": arr.ndim, "dtype": str(arr.dtype),
            "size": int(arr.size), "device": str(next(iter(arr.devices())))}


def default_dtypes(x64: bool | None = None) -> dict[str, str]:
    """Dtypes JAX gives integer and float literals: ``{"int": ..., "float": ...}``.

    ``x64=None`` reports the current setting; ``True``/``False`` report what
    ``jax_enable_x64`` on/off would give, without changing the global flag.
    """
    def probe() -> dict[str, str]:
        return {"int": str(jnp.array([1, 2, 3]).dtype), "float": str(jnp.array([1.0]).dtype)}

    if x64 is None:
        return probe()
    with jax.enable_x64(bool(x64)):
        return probe()


def to_dtype(x: Any, dtype: Any) -> jax.Array:
    """``x`` converted to ``dtype`` (``tensor.to(torch.float32)`` in PyTorch).

    Float to int truncates toward zero, as in PyTorch. Without ``jax_enable_x64`` a request
    for a 64-bit dtype yields its 32-bit counterpart, so check ``.dtype`` of the result.
    """
    return checks.array(x, "x").astype(checks.dtype_of(dtype, "dtype"))


def reshape(x: Any, shape: Sequence[int] | int) -> jax.Array:
    """``x`` with a new shape holding the same elements in row-major order.

    Covers both ``tensor.reshape`` and ``tensor.view``: there is no aliasing in JAX, the
    result is a new (immutable) array. One entry of ``shape`` may be -1 (inferred).
    """
    arr = checks.array(x, "x")
    entries: Any = (shape,) if isinstance(shape, int | np.integer) else shape
    if (isinstance(entries, str) or not isinstance(entries, Sequence)
            or not all(isinstance(s, int | np.integer) and not isinstance(s, bool) for s in entries)):
        raise TypeError(f"shape must be a sequence of ints such as (2, -1), got {shape!r}")
    shape = tuple(int(s) for s in entries)
    known = int(np.prod([s for s in shape if s != -1]))
    n_inferred = shape.count(-1)
    fits = (n_inferred == 0 and known == arr.size) or (
        n_inferred == 1 and known > 0 and arr.size % known == 0)
    if n_inferred > 1 or not fits:
        raise ValueError(f"shape {shape} is incompatible with x of shape {tuple(arr.shape)} "
                         f"({arr.size} elements)")
    return arr.reshape(shape)


def transpose(x: Any) -> jax.Array:
    """``x.T``: axes reversed; for a matrix (m, n) -> (n, m)."""
    return checks.array(x, "x").T


def matmul(a: Any, b: Any) -> jax.Array:
    """``a @ b`` for (..., m, k) @ (..., k, n) -> (..., m, n), checking the inner sizes."""
    a, b = checks.array(a, "a"), checks.array(b, "b")
    if a.ndim == 0 or b.ndim == 0:
        raise ValueError(f"matmul needs arrays of rank >= 1, got a {tuple(a.shape)} and "
                         f"b {tuple(b.shape)}")
    k_a = a.shape[-1]
    k_b = b.shape[0] if b.ndim == 1 else b.shape[-2]
    if k_a != k_b:
        raise ValueError(f"inner sizes differ: a has shape {tuple(a.shape)} (last axis {k_a}), "
                         f"b has shape {tuple(b.shape)} (matching axis {k_b})")
    return a @ b
