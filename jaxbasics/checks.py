"""Input checks shared by every public function (used by all chapter sections).

Each check runs in Python on the argument's static facts (shape, dtype) and, when the
argument is a concrete array rather than a tracer inside ``jax.jit``, on its values.
That way a bad input is reported before anything is traced or compiled, with a message
that names the argument, what was expected and what was given. JAX is imported inside the
checks that look at arrays, so that the checks of plain numbers (configurations, CLI
options) load without it.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    import jax


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds values we can look at (not a tracer under jit/grad/vmap)."""
    import jax

    return not isinstance(x, jax.core.Tracer)


def array(x: Any, name: str) -> jax.Array:
    """``x`` (an array — JAX, NumPy, or anything with ``__array__`` such as a CPU
    ``torch.Tensor`` — a number or nested lists of numbers) as a JAX array, or ``TypeError``
    naming ``name`` for anything else (strings, None, ragged lists, objects)."""
    import jax
    import jax.numpy as jnp

    if isinstance(x, jax.Array):
        return x
    _numeric_dtype(x, name)
    return jnp.asarray(x)


def _numeric_dtype(x: Any, name: str) -> np.dtype:
    """The NumPy dtype ``x`` has or would have as an array; ``TypeError`` naming ``name`` if
    it is not a number, boolean or array of them."""
    import jax
    import jax.numpy as jnp

    if isinstance(x, jax.Array | np.ndarray | np.generic):
        dtype = x.dtype
    else:  # lists, Python numbers, and other libraries' arrays through __array__
        try:
            dtype = np.asarray(x).dtype
        except (ValueError, TypeError, RuntimeError):  # ragged lists, GPU tensors, ...
            dtype = np.dtype(object)
    if not (jnp.issubdtype(dtype, jnp.number) or jnp.issubdtype(dtype, jnp.bool_)):
        shown = repr(x) if len(repr(x)) <= 60 else repr(x)[:57] + "..."
        raise TypeError(f"{name} must be a number or an array of numbers, got "
                        f"{type(x).__name__} {shown}")
    return dtype


def float_array(x: Any, name: str) -> jax.Array:
    """``x`` as a JAX array with a floating dtype, or ``TypeError`` naming ``name``.

    Python floats become float32 (float64 under ``jax_enable_x64``); integer and boolean
    inputs are refused rather than silently cast, as PyTorch's losses do.
    """
    import jax.numpy as jnp

    actual: Any = type(x).__name__ if isinstance(x, bool | int) else _numeric_dtype(x, name)
    if isinstance(actual, str) or not jnp.issubdtype(actual, jnp.floating):
        raise TypeError(f"{name} must have a floating dtype (float16/bfloat16/float32/float64), "
                        f"got {actual}")
    return jnp.asarray(x)


def int_array(x: Any, name: str) -> jax.Array:
    """``x`` as a JAX array with an integer dtype, or ``TypeError`` naming ``name``."""
    import jax.numpy as jnp

    arr = array(x, name)
    if not jnp.issubdtype(arr.dtype, jnp.integer):
        raise TypeError(f"{name} must have an integer dtype (token ids), got {arr.dtype}")
    return arr


def dtype_of(value: Any, name: str, *, floating: bool = False) -> np.dtype:
    """``value`` (``"float32"``, ``jnp.bfloat16``, ``np.dtype(...)``) as a NumPy dtype, or
    ``TypeError`` naming ``name``; with ``floating``, only a floating one."""
    import jax.numpy as jnp

    try:
        dtype = np.dtype(jnp.dtype(value))
    except TypeError:
        dtype = None
    if dtype is None or (floating and not jnp.issubdtype(dtype, jnp.floating)):
        kind = "a floating dtype (float32, bfloat16, float16)" if floating \
            else "a NumPy/JAX dtype such as 'float32'"
        raise TypeError(f"{name} must be {kind}, got {value!r}")
    return dtype


def nonempty(x: jax.Array, name: str) -> None:
    """Raise ``ValueError`` when ``x`` has no elements."""
    if x.size == 0:
        raise ValueError(f"{name} must not be empty, got shape {tuple(x.shape)}")


def same_shape(a: jax.Array, a_name: str, b: jax.Array, b_name: str) -> None:
    """Raise ``ValueError`` unless ``a`` and ``b`` have identical shapes."""
    if a.shape != b.shape:
        raise ValueError(f"{b_name} must have the same shape as {a_name} {tuple(a.shape)}, "
                         f"got {tuple(b.shape)}")


def shape_is(x: jax.Array, name: str, expected: Sequence[int | None]) -> None:
    """Raise ``ValueError`` unless ``x.shape`` matches ``expected`` (``None`` = any size)."""
    ok = x.ndim == len(expected) and all(e is None or e == s for e, s in zip(expected, x.shape,
                                                                            strict=True))
    if not ok:
        pretty = "(" + ", ".join("*" if e is None else str(e) for e in expected) + ")"
        raise ValueError(f"{name} must have shape {pretty}, got {tuple(x.shape)}")


def in_range(x: jax.Array, name: str, lo: float, hi: float) -> None:
    """Raise ``ValueError`` when a concrete ``x`` has values outside ``[lo, hi]`` or NaN.

    Tracers (inside ``jax.jit``) are skipped: their values are unknown until run time.
    """
    if not is_concrete(x) or x.size == 0:
        return
    arr = np.asarray(x, dtype=np.float64)
    bad = ~((arr >= lo) & (arr <= hi))
    if bad.any():
        finite = arr[~np.isnan(arr)]
        seen = [f"values from {np.min(finite):g} to {np.max(finite):g}"] if finite.size else []
        if finite.size < arr.size:
            seen.append("NaN")
        raise ValueError(f"{name} must lie in [{lo:g}, {hi:g}], got {' and '.join(seen)} "
                         f"({int(bad.sum())} of {arr.size} out of range)")


def staged_in_range(x: jax.Array, name: str, lo: float, hi: float, *,
                    also: float | None = None) -> None:
    """The check of :func:`in_range` compiled into a function transformed by
    ``jax.experimental.checkify`` (e.g. :func:`jaxbasics.step.make_step` with
    ``checked=True``), for values known only when it runs: the call's error then names
    ``name``, the range and the smallest and largest value given. ``also`` is one more allowed
    value outside the range (an ignore label). Only valid inside a checkified function."""
    import jax.numpy as jnp
    from jax.experimental import checkify

    ok = (x >= lo) & (x <= hi)
    if also is not None:
        ok = ok | (x == also)
    extra = f" or {also:g}" if also is not None else ""
    checkify.check(jnp.all(ok), f"{name} must lie in [{lo:g}, {hi:g}]{extra}, got values from "
                   "{lo} to {hi} ({bad} out of range)", lo=jnp.min(x), hi=jnp.max(x),
                   bad=jnp.sum(~ok))


def staged_finite(x: jax.Array, name: str) -> None:
    """Compiled check (as :func:`staged_in_range`) that every value of ``x`` is finite."""
    import jax.numpy as jnp
    from jax.experimental import checkify

    finite = jnp.isfinite(x)
    checkify.check(jnp.all(finite), f"{name} must be finite, got {{bad}} NaN or infinite "
                   f"value(s) of {x.size}", bad=jnp.sum(~finite))


def one_of(value: Any, name: str, allowed: Sequence[Any]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``allowed``."""
    if value not in allowed:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}")


def number_in(value: Any, name: str, lo: float, hi: float, *, open_hi: bool = False) -> None:
    """Raise ``ValueError`` unless ``value`` is a Python int or float (not a bool) in
    ``[lo, hi]``, or ``[lo, hi)`` with ``open_hi``; NaN fails the comparison and is refused."""
    inside = lo <= value < hi if open_hi else lo <= value <= hi
    if isinstance(value, bool) or not isinstance(value, int | float) or not inside:
        raise ValueError(f"{name} must be in [{lo:g}, {hi:g}{')' if open_hi else ']'}, "
                         f"got {value!r}")


def positive_int(value: Any, name: str) -> None:
    """Raise ``ValueError`` unless ``value`` is an int > 0."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def uint32(value: Any, name: str) -> None:
    """Raise ``ValueError`` unless ``value`` is an int in [0, 2**32): a seed or a step that
    seeds NumPy's and JAX's generators."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or not 0 <= value < 2**32:
        raise ValueError(f"{name} must be an integer in [0, 2**32), got {value!r}")


def random_key(rng: Any, name: str) -> None:
    """Raise ``TypeError`` unless ``rng`` is one JAX random key: a typed key of shape ()
    (``jax.random.key``) or a legacy uint32[2] ``jax.random.PRNGKey``; traced ones too."""
    import jax
    import jax.numpy as jnp

    ok = isinstance(rng, jax.Array) and (
        rng.shape == () if jnp.issubdtype(rng.dtype, jax.dtypes.prng_key)
        else rng.dtype == jnp.uint32 and rng.shape == (2,))
    if not ok:
        shown = (f"{rng.dtype} array of shape {tuple(rng.shape)}" if isinstance(rng, jax.Array)
                 else f"{type(rng).__name__} {rng!r}")
        raise TypeError(f"{name} must be one JAX random key (jax.random.key(seed), or a legacy "
                        f"uint32[2] jax.random.PRNGKey), got {shown}")


def json_object(path: str | Path, suffix: str = "") -> dict[str, Any]:
    """The JSON object in the file at ``path``, or ``ValueError`` naming the file when it
    cannot be read, is not UTF-8 JSON or holds something other than an object; ``suffix``
    (e.g. what a damaged file means for the caller) ends each message."""
    path = Path(path)
    try:
        parsed = json.loads(path.read_text(encoding="utf-8"))
    except OSError as err:
        raise ValueError(f"{path}: cannot read it ({err.strerror or err}){suffix}") from err
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{path} is not a JSON file ({err}){suffix}") from err
    if not isinstance(parsed, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(parsed).__name__}{suffix}")
    return parsed
