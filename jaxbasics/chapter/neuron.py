"""Automatic differentiation on one neuron: the chapter's autodiff and computational-graph
sections.

    z = x·w + b,    a = σ(z),    L = BCE(a, y) = -(y log a + (1 - y) log(1 - a))

By the chain rule, with dL/da = (a - y) / (a (1 - a)) and da/dz = a (1 - a):

    dL/dw = (a - y)·x,    dL/db = a - y.

For x = 1.1, w = 2.2, b = 0, y = 1 that is dL/dw = -0.0898 and dL/db = -0.0817.
PyTorch records its graph during the forward pass (each operation on a tensor that requires a
gradient adds a node) and ``loss.backward()`` walks that recording; JAX differentiates the
pure function ``loss`` and ``jax.make_jaxpr`` prints the program it traced (:func:`graph`).

The functions that take the example's four numbers (:func:`gradients` and its siblings) take
them by keyword only, ``gradients(x=1.1, w=2.2, b=0.0, y=1.0)``: written in the chapter's
order x, w, b, a positional call would silently compute another neuron's gradient.
:func:`forward` and :func:`loss` stay positional ``(w, b, x[, y])``, as ``jax.grad``'s
``argnums`` need.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxbasics import checks
from jaxbasics.chapter.finite_diff import numerical_grad
from jaxbasics.losses import binary_cross_entropy


@dataclass(frozen=True)
class NeuronExample:
    """The chapter's values: input x, weight w, bias b, label y."""

    x: float = 1.1
    w: float = 2.2
    b: float = 0.0
    y: float = 1.0


CHAPTER_EXAMPLE = NeuronExample()


def forward(w: ArrayLike, b: ArrayLike, x: ArrayLike) -> jax.Array:
    """Activation ``a = σ(x·w + b)``; scalar ``w``/``b``, any shape of ``x`` (a has x's shape)."""
    return jax.nn.sigmoid(jnp.asarray(x) * w + b)


def loss(w: ArrayLike, b: ArrayLike, x: ArrayLike, y: ArrayLike) -> jax.Array:
    """``L = mean BCE(σ(x·w + b), y)``: the pure function that ``jax.grad`` differentiates."""
    return binary_cross_entropy(forward(w, b, x), y)


_grad = jax.jit(jax.grad(loss, argnums=(0, 1)))
_value_and_grad = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))


def _validated(w: Any, b: Any, x: Any, y: Any) -> tuple[jax.Array, ...]:
    w, b = checks.float_array(w, "w"), checks.float_array(b, "b")
    for value, name in ((w, "w"), (b, "b")):
        if value.size != 1 or value.ndim > 1:
            raise ValueError(f"{name} must be a scalar (shape () or (1,)), "
                             f"got shape {tuple(value.shape)}")
    x, y = checks.float_array(x, "x"), checks.float_array(y, "y")
    checks.nonempty(x, "x")
    checks.same_shape(x, "x", y, "y")
    checks.in_range(y, "y", 0.0, 1.0)
    return w, b, x, y


def gradients(*, w: Any, b: Any, x: Any, y: Any) -> tuple[jax.Array, jax.Array]:
    """``(dL/dw, dL/db)`` by ``jax.jit(jax.grad(loss, argnums=(0, 1)))``.

    ``w``, ``b``: floating scalars (shape () or (1,)); ``x``, ``y``: floating arrays of one
    shape, y in [0, 1]; all four by keyword. Each gradient has the shape of its parameter.
    Raises ``TypeError`` for positional arguments or non-numbers, ``ValueError`` for a
    non-scalar w or b, shapes of x and y that differ, an empty x, or y outside [0, 1].
    """
    return _grad(*_validated(w, b, x, y))


def value_and_gradients(*, w: Any, b: Any, x: Any, y: Any
                        ) -> tuple[jax.Array, tuple[jax.Array, jax.Array]]:
    """``(L, (dL/dw, dL/db))`` in one compiled call (``jax.value_and_grad``)."""
    return _value_and_grad(*_validated(w, b, x, y))


def manual_gradients(*, w: Any, b: Any, x: Any, y: Any) -> tuple[jax.Array, jax.Array]:
    """The hand-derived gradient: ``dL/dw = mean((a - y)·x)``, ``dL/db = mean(a - y)``.

    Exact for the loss above while the BCE clamp is inactive (a strictly inside (0, 1)).
    """
    w, b, x, y = _validated(w, b, x, y)
    delta = forward(w, b, x) - y
    return (jnp.mean(delta * x).reshape(w.shape), jnp.mean(delta).reshape(b.shape))


def numerical_gradients(*, w: Any, b: Any, x: Any, y: Any,
                        eps: float = 1e-6) -> tuple[jax.Array, jax.Array]:
    """``(dL/dw, dL/db)`` by central differences in float64 (see :mod:`jaxbasics.chapter.finite_diff`)."""
    w, b, x, y = _validated(w, b, x, y)
    gw, gb = numerical_grad(lambda p, x_, y_: loss(p[0], p[1], x_, y_), (w, b), x, y, eps=eps)
    return jnp.asarray(gw, w.dtype), jnp.asarray(gb, b.dtype)


def graph(*, w: Any = CHAPTER_EXAMPLE.w, b: Any = CHAPTER_EXAMPLE.b, x: Any = CHAPTER_EXAMPLE.x,
          y: Any = CHAPTER_EXAMPLE.y, of: str = "loss") -> jax.extend.core.ClosedJaxpr:
    """The computational graph as a jaxpr: ``of="loss"`` for the forward pass, ``"grad"`` for
    the backward pass JAX derived from it. ``print()`` the result to read it."""
    checks.one_of(of, "of", ("loss", "grad"))
    fn = loss if of == "loss" else jax.grad(loss, argnums=(0, 1))
    return jax.make_jaxpr(fn)(*_validated(w, b, x, y))
