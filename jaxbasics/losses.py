"""Losses: binary cross-entropy (the chapter's autodiff and SimpleNet sections) and the
next-token cross-entropy used to train GPT-2.

``binary_cross_entropy`` follows PyTorch's ``BCELoss`` to the letter, including its two
safety measures at p in {0, 1}: each log term is clamped at -100 in the forward pass, and
the derivative w.r.t. p is ``(p - y) / max(p (1 - p), 1e-12)``. With those, a saturated
sigmoid gives a finite loss *and* a finite gradient where the plain formula gives inf/NaN.
"""

from __future__ import annotations

from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.typing import ArrayLike

from jaxbasics import checks

Reduction = Literal["mean", "sum", "none"]
_REDUCTIONS = ("mean", "sum", "none")
_LOG_CLAMP = -100.0  # torch.nn.BCELoss clamps log(p) and log(1 - p) at -100
_GRAD_EPS = 1e-12  # ... and divides by max(p (1 - p), 1e-12) in its backward pass


@jax.custom_jvp
def _bce_elementwise(p: jax.Array, y: jax.Array) -> jax.Array:
    log_p = jnp.maximum(jnp.log(p), _LOG_CLAMP)
    log_1mp = jnp.maximum(jnp.log1p(-p), _LOG_CLAMP)
    return -(y * log_p + (1.0 - y) * log_1mp)


@_bce_elementwise.defjvp
def _bce_elementwise_jvp(primals, tangents):
    p, y = primals
    p_dot, y_dot = tangents
    out = _bce_elementwise(p, y)
    d_dp = (p - y) / jnp.maximum(p * (1.0 - p), _GRAD_EPS)
    d_dy = jnp.maximum(jnp.log1p(-p), _LOG_CLAMP) - jnp.maximum(jnp.log(p), _LOG_CLAMP)
    return out, d_dp * p_dot + d_dy * y_dot


def _reduce(losses: jax.Array, reduction: str) -> jax.Array:
    if reduction == "mean":
        return jnp.mean(losses)
    if reduction == "sum":
        return jnp.sum(losses)
    return losses


def _check_pair(a: ArrayLike, a_name: str, targets: ArrayLike, reduction: str) -> tuple[jax.Array, jax.Array]:
    checks.one_of(reduction, "reduction", _REDUCTIONS)
    a = checks.float_array(a, a_name)
    targets = checks.float_array(targets, "targets")
    checks.same_shape(a, a_name, targets, "targets")
    checks.nonempty(a, a_name)
    checks.in_range(targets, "targets", 0.0, 1.0)
    return a, targets


def binary_cross_entropy(probs: ArrayLike, targets: ArrayLike,
                         reduction: Reduction = "mean") -> jax.Array:
    """Binary cross-entropy of probabilities, as ``torch.nn.functional.binary_cross_entropy``.

    ``l_i = -(y_i * max(log p_i, -100) + (1 - y_i) * max(log(1 - p_i), -100))``, then the
    mean (default), the sum, or the elementwise values (``reduction="none"``).
    The gradient w.r.t. ``p_i`` is ``(p_i - y_i) / max(p_i (1 - p_i), 1e-12)`` (times
    ``1/N`` for the mean), PyTorch's formula.

    Args:
      probs: probabilities in [0, 1], any non-empty shape, floating dtype.
      targets: same shape as ``probs``, values in [0, 1] (soft labels allowed).
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.

    Returns:
      A scalar, or an array shaped like ``probs`` for ``reduction="none"``.

    Raises:
      TypeError: a non-floating dtype.
      ValueError: shapes differ, empty input, values outside [0, 1] (checked on concrete
        arrays, i.e. outside ``jax.jit``), bad reduction.
    """
    probs, targets = _check_pair(probs, "probs", targets, reduction)
    checks.in_range(probs, "probs", 0.0, 1.0)
    return _reduce(_bce_elementwise(probs, targets), reduction)


def binary_cross_entropy_with_logits(logits: ArrayLike, targets: ArrayLike,
                                     reduction: Reduction = "mean") -> jax.Array:
    """Binary cross-entropy of ``sigmoid(logits)``, computed stably from the logits.

    ``l_i = -(y_i * log σ(x_i) + (1 - y_i) * log σ(-x_i))`` with ``log σ`` evaluated as
    ``-softplus(-x)``, so logits of ±1e4 give exact, finite losses and gradients
    (``∂l/∂x = σ(x) - y``). Equals :func:`binary_cross_entropy` of ``sigmoid(logits)``
    wherever the latter's clamp is not active. Uses ``optax.sigmoid_binary_cross_entropy``.

    Args:
      logits: any non-empty floating array.
      targets: same shape, values in [0, 1].
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.
    """
    logits, targets = _check_pair(logits, "logits", targets, reduction)
    return _reduce(optax.sigmoid_binary_cross_entropy(logits, targets), reduction)


def cross_entropy(logits: ArrayLike, labels: ArrayLike, reduction: Reduction = "mean",
                  ignore_index: int | None = None) -> jax.Array:
    """Softmax cross-entropy against integer class ids (``torch.nn.functional.cross_entropy``).

    ``l_i = logsumexp(z_i) - z_i[labels_i]``, computed in float32 even for bf16 logits.
    Positions whose label equals ``ignore_index`` count neither in the sum nor in the
    mean's denominator, and get a zero gradient; when every position is ignored the mean is
    0 (PyTorch's is 0/0 = NaN), so a fully padded batch adds a zero gradient, not NaNs.

    Args:
      logits: (..., V) floating scores.
      labels: (...) integer ids in [0, V).
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.
      ignore_index: a label value to skip, or ``None``.
    """
    checks.one_of(reduction, "reduction", _REDUCTIONS)
    logits = checks.float_array(logits, "logits")
    labels = checks.int_array(labels, "labels")
    if logits.shape[:-1] != labels.shape:
        raise ValueError(f"labels must have shape logits.shape[:-1] = {tuple(logits.shape[:-1])},"
                         f" got {tuple(labels.shape)}")
    checks.nonempty(labels, "labels")
    vocab = logits.shape[-1]
    if checks.is_concrete(labels):  # numpy, not jnp: inside a trace jnp would stage the check
        valid = np.asarray(labels)
        valid = valid if ignore_index is None else valid[valid != ignore_index]
        if valid.size and (int(valid.min()) < 0 or int(valid.max()) >= vocab):
            hint = (f" (to skip positions labelled {int(valid.min())}, pass ignore_index="
                    f"{int(valid.min())}: PyTorch's cross_entropy skips -100 by default, this one "
                    f"skips nothing unless told)"
                    if ignore_index is None and valid.min() < 0 else "")
            raise ValueError(f"labels must lie in [0, {vocab}), got values from "
                             f"{int(valid.min())} to {int(valid.max())}{hint}")
    mask = jnp.ones(labels.shape, bool) if ignore_index is None else labels != ignore_index
    safe = jnp.where(mask, labels, 0)
    losses = optax.softmax_cross_entropy_with_integer_labels(logits.astype(jnp.float32), safe)
    losses = jnp.where(mask, losses, 0.0)
    if reduction == "mean":
        return losses.sum() / jnp.maximum(mask.sum(), 1)
    return _reduce(losses, reduction)
