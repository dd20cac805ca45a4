"""SimpleNet: the chapter's backpropagation section (a two-layer net trained with BCE + SGD).

    h = x W1 + b1      (B, 10) @ (10, 5) -> (B, 5)
    r = relu(h)
    s = r W2 + b2      (B, 5) @ (5, 1)   -> (B, 1)
    a = σ(s)
    L = mean BCE(a, y)

Backpropagation, written out as the matrix chain rule (:func:`manual_gradients`):

    dL/ds  = (a - y) / B                       (B, 1)   [BCE ∘ sigmoid]
    dL/dW2 = rᵀ dL/ds,  dL/db2 = Σ_batch dL/ds
    dL/dr  = dL/ds W2ᵀ                         (B, 5)
    dL/dh  = dL/dr ⊙ [h > 0]                   [relu']
    dL/dW1 = xᵀ dL/dh,  dL/db1 = Σ_batch dL/dh

Flax ``Linear`` stores its kernel as (in, out), the transpose of ``torch.nn.Linear.weight``.
Parameters are initialised as PyTorch does (U(±1/sqrt(fan_in)) for kernel and bias) so the
two frameworks start from the same distribution.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
from flax import nnx

from jaxbasics import checks
from jaxbasics.losses import binary_cross_entropy
from jaxbasics.params import named_parameters

__all__ = ["EXAMPLE_BATCH_SIZE", "SimpleNet", "bce_loss", "check_batch", "example",
           "example_batches", "manual_gradients", "named_parameters", "toy_batch",
           "torch_linear_init"]

#: the batch size of the SimpleNet example that tour, compare and graph show (:func:`example`)
EXAMPLE_BATCH_SIZE = 8


def torch_linear_init(fan_in: int):
    """Initializer drawing U(-1/sqrt(fan_in), 1/sqrt(fan_in)), PyTorch ``nn.Linear``'s default."""
    bound = 1.0 / jnp.sqrt(fan_in)

    def init(key: jax.Array, shape: tuple[int, ...], dtype: Any = jnp.float32) -> jax.Array:
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


def _linear(n_in: int, n_out: int, rngs: nnx.Rngs) -> nnx.Linear:
    init = torch_linear_init(n_in)
    return nnx.Linear(n_in, n_out, kernel_init=init, bias_init=init, rngs=rngs)


class SimpleNet(nnx.Module):
    """Linear(n_in, n_hidden) → ReLU → Linear(n_hidden, n_out) → Sigmoid; defaults 10, 5, 1.

    ``model(x)`` maps x of shape (B, n_in) — or (..., n_in), as ``nnx.Linear`` — to
    probabilities of shape (B, n_out); any other last axis is refused before tracing.
    """

    def __init__(self, n_in: int = 10, n_hidden: int = 5, n_out: int = 1, *, rngs: nnx.Rngs):
        for value, name in ((n_in, "n_in"), (n_hidden, "n_hidden"), (n_out, "n_out")):
            checks.positive_int(value, name)
        self.fc1 = _linear(n_in, n_hidden, rngs)
        self.fc2 = _linear(n_hidden, n_out, rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        n_in = self.fc1.in_features
        x = checks.array(x, "x")
        if x.ndim < 1 or x.shape[-1] != n_in:
            raise ValueError(f"x must have shape (..., {n_in}) (n_in={n_in} features last), "
                             f"got {tuple(x.shape)}")
        return jax.nn.sigmoid(self.fc2(jax.nn.relu(self.fc1(x))))


def check_batch(model: SimpleNet, x: Any, y: Any) -> tuple[jax.Array, jax.Array]:
    """Validate a (x, y) batch for ``model``: x (B, n_in) float, y (B, n_out) float in [0, 1]."""
    n_in, n_out = model.fc1.in_features, model.fc2.out_features
    x, y = checks.float_array(x, "x"), checks.float_array(y, "y")
    checks.shape_is(x, "x", (None, n_in))
    checks.nonempty(x, "x")
    checks.shape_is(y, "y", (x.shape[0], n_out))
    checks.in_range(y, "y", 0.0, 1.0)
    return x, y


def staged_batch_checks(model: SimpleNet, x: jax.Array, y: jax.Array) -> None:
    """The value checks of :func:`check_batch` compiled into a checked train step
    (``make_train_step(..., checked=True, check_batch=staged_batch_checks)``): x finite and
    y in [0, 1], for batches whose values are known only inside ``jax.jit``."""
    checks.staged_finite(x, "x")
    checks.staged_in_range(y, "y", 0.0, 1.0)


def bce_loss(model: SimpleNet, x: jax.Array, y: jax.Array) -> jax.Array:
    """``mean BCE(model(x), y)`` for x (B, n_in), y (B, n_out): the chapter's training loss."""
    return binary_cross_entropy(model(x), y)


def manual_gradients(params: dict, x: jax.Array, y: jax.Array) -> dict:
    """The backward pass by hand (module docstring), no ``jax.grad``.

    Args:
      params: ``split_params(model)[1]`` (``nnx.to_pure_dict(nnx.state(model, nnx.Param))``), i.e.
        ``{"fc1": {"kernel": (n_in, H), "bias": (H,)}, "fc2": {"kernel": (H, O), "bias": (O,)}}``.
      x: (B, n_in). y: (B, O).

    Returns:
      A dict of the same structure holding dL/dθ. Exact while the BCE clamp is inactive.
    """
    w1, b1 = params["fc1"]["kernel"], params["fc1"]["bias"]
    w2, b2 = params["fc2"]["kernel"], params["fc2"]["bias"]
    h = x @ w1 + b1
    r = jax.nn.relu(h)
    a = jax.nn.sigmoid(r @ w2 + b2)
    d_s = (a - y) / y.size
    d_h = (d_s @ w2.T) * (h > 0)
    return {"fc1": {"kernel": x.T @ d_h, "bias": d_h.sum(0)},
            "fc2": {"kernel": r.T @ d_s, "bias": d_s.sum(0)}}


def toy_batch(key: jax.Array, batch_size: int, n_in: int = 10) -> tuple[jax.Array, jax.Array]:
    """A learnable binary task: x ~ N(0, 1)^(B, n_in), y = 1[Σ x_j > 0] of shape (B, 1)."""
    checks.positive_int(batch_size, "batch_size")
    x = jax.random.normal(key, (batch_size, n_in))
    return x, (x.sum(axis=1, keepdims=True) > 0).astype(jnp.float32)


def example(seed: int = 0, batch_size: int = EXAMPLE_BATCH_SIZE
            ) -> tuple[SimpleNet, jax.Array, jax.Array]:
    """The SimpleNet example for ``seed``, the one ``jaxbasics tour``, ``compare`` and
    ``graph`` all show (so "SimpleNet, seed 0" has one loss everywhere): the model
    ``SimpleNet(rngs=nnx.Rngs(seed))`` and the batch
    ``toy_batch(fold_in(key(seed), 1), batch_size)``, x (batch_size, 10) and y (batch_size, 1).

    Raises ``ValueError`` unless seed is an int in [0, 2**32) and batch_size a positive int.
    """
    checks.uint32(seed, "seed")
    checks.positive_int(batch_size, "batch_size")
    x, y = toy_batch(jax.random.fold_in(jax.random.key(seed), 1), batch_size)
    return SimpleNet(rngs=nnx.Rngs(seed)), x, y


def example_batches(seed: int, steps: int, batch_size: int = EXAMPLE_BATCH_SIZE
                    ) -> tuple[jax.Array, jax.Array]:
    """``steps`` training batches stacked, xs (steps, batch_size, 10) and ys (steps,
    batch_size, 1): the first is :func:`example`'s batch for ``seed``, the others are drawn
    from ``fold_in(key(seed), 2)``."""
    checks.uint32(seed, "seed")
    checks.positive_int(steps, "steps")
    _, x, y = example(seed, batch_size)
    keys = jax.random.split(jax.random.fold_in(jax.random.key(seed), 2), steps - 1)
    xs, ys = jax.vmap(lambda k: toy_batch(k, batch_size))(keys)
    return jnp.concatenate([x[None], xs]), jnp.concatenate([y[None], ys])
