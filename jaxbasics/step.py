"""The one optimisation-step factory behind every training loop of the package (the chapter's
SimpleNet step and GPT-2's): a loss over a module, an Optax optimizer and options in; a jitted
step with donated buffers out.

One update, PyTorch's ``zero_grad(); loss.backward(); optimizer.step()`` as a pure function::

    loss, g = value_and_grad(f)(params, *batch)      f(params, *batch) = loss_fn(model, *batch)
    updates, opt_state = tx.update(g, opt_state, params)
    params = optax.apply_updates(params, updates)

With ``scan=True`` the step runs once per entry of a leading K axis of every batch array,
inside one ``jax.lax.scan``: K updates per call, the same ones as K calls of the step, with no
Python between them.

With ``accumulate=True`` one update takes K micro-batches (a leading K axis of every batch
array) and weighs every example (token) alike, whatever each micro-batch holds::

    loss = Σ_k total_k / Σ_k weight_k        g = Σ_k ∇total_k / Σ_k weight_k

where ``loss_fn`` returns ``(total_k, weight_k)``: the sum of the per-example losses of
micro-batch k and how many examples count in it (e.g. labelled tokens). That is the full
batch's mean loss and gradient; the mean of the K micro-batch means (``optax.MultiSteps``)
is not, unless every micro-batch counts as many examples.

Inside ``jax.jit`` the batch's values are unknown while tracing, so the eager checks of
:mod:`jaxbasics.checks` cannot look at them. ``checked=True`` compiles value checks into the
step instead (``jax.experimental.checkify``): the batch's (``check_batch``), and that the loss
and every gradient are finite; a failed check raises :class:`StepCheckError` after the call.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, cast

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxbasics import checks
from jaxbasics.params import LossFn, WeightedLossFn, loss_of_params

#: ``metrics(loss, grads) -> what the step returns`` beside the new state (default: the loss)
Metrics = Callable[[jax.Array, Any], Any]
#: ``check_batch(model, *batch)``: staged checks of one batch's values
#: (:func:`jaxbasics.checks.staged_in_range`, ...), compiled in by ``make_step(checked=True)``
BatchCheck = Callable[..., None]


class StepCheckError(ValueError):
    """A checked step (``make_step(checked=True)``) found a value it refuses: an input out of
    range, a loss or gradient that is not finite. The message names the first failed check;
    the step's results are not returned."""


def _loss_only(loss: jax.Array, _grads: Any) -> jax.Array:
    return loss


def update_fn(graphdef: nnx.GraphDef, loss_fn: LossFn | WeightedLossFn, tx: optax.GradientTransformation,
              metrics: Metrics = _loss_only, check_batch: BatchCheck | None = None,
              accumulate: bool = False) -> Callable[..., tuple[Any, Any, Any]]:
    """The pure (unjitted) update ``(params, opt_state, *batch) -> (params, opt_state,
    metrics(loss, grads))``, the loss taken before the update. With ``check_batch`` it also
    stages :func:`make_step`'s value checks (to be run under ``checkify``); with
    ``accumulate`` the batch arrays hold K micro-batches and ``loss_fn`` returns ``(total,
    weight)`` (:func:`accumulated_value_and_grad`)."""
    if check_batch is not None:
        plain_loss = loss_fn

        def loss_fn(model, *batch):
            check_batch(model, *batch)
            return plain_loss(model, *batch)

    value_and_grad = (accumulated_value_and_grad(graphdef, cast(WeightedLossFn, loss_fn))
                      if accumulate
                      else jax.value_and_grad(loss_of_params(graphdef, loss_fn)))

    def update(params, opt_state, *batch):
        loss, grads = value_and_grad(params, *batch)
        if check_batch is not None:
            _staged_finite_loss_and_grads(loss, grads)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics(loss, grads)

    return update


def accumulated_value_and_grad(graphdef: nnx.GraphDef, loss_fn: WeightedLossFn
                               ) -> Callable[..., tuple[jax.Array, Any]]:
    """``f(params, *micro) -> (loss, grads)`` over K micro-batches (every array of ``micro``
    has a leading K axis), one at a time in a ``jax.lax.scan`` (the memory of one)::

        loss = Σ_k total_k / Σ_k weight_k        grads = Σ_k ∇total_k / Σ_k weight_k

    where ``loss_fn(model, *batch_k) -> (total_k, weight_k)``: the summed loss of micro-batch k
    and the number of examples (tokens) it counts. The weights may differ between
    micro-batches; ``Σ weight = 0`` (nothing labelled) gives loss 0 and zero gradients.
    """
    total_and_grad = jax.value_and_grad(loss_of_params(graphdef, loss_fn), has_aux=True)

    def f(params: Any, *micro: Any) -> tuple[jax.Array, Any]:
        def add(carry, batch):
            total, weight, grads = carry
            (t, w), g = total_and_grad(params, *batch)
            return (total + t.astype(jnp.float32), weight + jnp.asarray(w, jnp.float32),
                    jax.tree.map(jnp.add, grads, g)), None

        zero = jnp.zeros((), jnp.float32)
        start = (zero, zero, jax.tree.map(jnp.zeros_like, params))
        (total, weight, grads), _ = jax.lax.scan(add, start, micro)
        scale = 1.0 / jnp.maximum(weight, 1.0)
        return total * scale, jax.tree.map(lambda g: (g * scale).astype(g.dtype), grads)

    return f


def make_step(graphdef: nnx.GraphDef, loss_fn: LossFn | WeightedLossFn, tx: optax.GradientTransformation, *,
              scan: bool = False, accumulate: bool = False, unroll: int = 1,
              donate: bool = True,
              metrics: Metrics = _loss_only,
              check_stacked: Callable[[tuple[Any, ...]], None] | None = None,
              in_shardings: Any = None, out_shardings: Any = None,
              checked: bool = False, check_batch: BatchCheck | None = None
              ) -> jax.stages.Wrapped:
    """A compiled optimisation step ``(params, opt_state, *batch) -> (params, opt_state, out)``.

    Args:
      graphdef: the module's graph definition (:func:`jaxbasics.params.split_params`).
      loss_fn: ``loss_fn(model, *batch) -> scalar``, differentiated w.r.t. the parameters.
      tx: the Optax optimizer.
      scan: every array of ``batch`` has a leading axis of K >= 1 entries, one update each, run
        as one ``jax.lax.scan``; ``out`` then has that leading K axis too.
      accumulate: one update from K >= 1 micro-batches, every example weighed alike
        (:func:`accumulated_value_and_grad`): every array of ``batch`` has a leading K axis
        (after the steps axis of ``scan``), and ``loss_fn`` returns ``(total, weight)``.
      unroll: scan iterations unrolled per loop trip (``jax.lax.scan``'s ``unroll``).
      donate: reuse the ``params``/``opt_state`` buffers for the outputs (do not touch the
        inputs afterwards).
      metrics: ``metrics(loss, grads)`` is ``out`` (default: the loss, before the update).
      check_stacked: with ``scan``, called with the batch arrays at trace time; raises
        ``ValueError`` for arrays it refuses (default: all must share their leading K axis).
      in_shardings: passed to ``jax.jit`` (a device mesh; None: JAX's placement).
      out_shardings: passed to ``jax.jit``, as ``in_shardings``.
      checked: compile value checks into the step (``jax.experimental.checkify``):
        ``check_batch(model, *batch)`` (staged checks such as
        :func:`jaxbasics.checks.staged_in_range`), and that the loss and each gradient are
        finite. Every call then waits for its result and raises :class:`StepCheckError`
        naming the first failed check (with ``scan``, in any of the K updates); the step's
        outputs are not returned, and with ``donate`` its inputs are consumed, so keep a copy
        (``donate=False``) to go on from before the failed step. Slower: docs/performance.md.
        Not with shardings.
      check_batch: the batch checks of ``checked`` (None: only the loss and gradients).

    Returns:
      The jitted step; with ``checked``, a function that calls the jitted, checkified step
      and raises on a failed check (its ``lower`` lowers the checkified program).

    Raises:
      ValueError: ``unroll`` < 1; ``check_batch`` without ``checked``; ``checked`` with
        shardings; with ``scan`` or ``accumulate``, batch arrays without a common leading
        axis (at the first call, while tracing).
    """
    checks.positive_int(unroll, "unroll")
    if check_batch is not None and not checked:
        raise ValueError("check_batch is compiled in only with checked=True")
    if checked and (in_shardings is not None or out_shardings is not None):
        raise ValueError("checked=True does not take in_shardings/out_shardings (the checked "
                         "step returns checkify's error beside its outputs)")
    if checked and check_batch is None:
        check_batch = _no_batch_check
    update = update_fn(graphdef, loss_fn, tx, metrics, check_batch, accumulate)
    fn = update
    if accumulate and not scan:
        def fn(params, opt_state, *micro):
            (check_stacked or check_common_steps_axis)(micro)
            return update(params, opt_state, *micro)
    elif scan:
        check = check_stacked or check_common_steps_axis

        def fn(params, opt_state, *stacked):
            check(stacked)

            def body(carry, batch):
                params, opt_state, out = update(*carry, *batch)
                return (params, opt_state), out

            (params, opt_state), out = jax.lax.scan(body, (params, opt_state), stacked,
                                                    unroll=unroll)
            return params, opt_state, out

    kwargs = {k: v for k, v in (("in_shardings", in_shardings), ("out_shardings", out_shardings))
              if v is not None}
    if not checked:
        return jax.jit(fn, donate_argnums=(0, 1) if donate else (), **kwargs)
    from jax.experimental import checkify

    jitted = jax.jit(checkify.checkify(fn, errors=checkify.user_checks),
                     donate_argnums=(0, 1) if donate else ())

    def checked_step(params, opt_state, *batch):
        error, out = jitted(params, opt_state, *batch)
        message = error.get()
        if message is not None:
            raise StepCheckError(_check_message(message))
        return out

    checked_step.lower = jitted.lower  # type: ignore[attr-defined]
    return cast(jax.stages.Wrapped, checked_step)


def _check_message(message: str) -> str:
    """checkify's message without its suffix (where the check was staged)."""
    first = message.split("\n")[0]
    for tail in (" (`check` failed)", " (check failed at"):
        first = first.split(tail)[0]
    return first


def _no_batch_check(_model: Any, *_batch: Any) -> None:
    return None


def _staged_finite_loss_and_grads(loss: jax.Array, grads: Any) -> None:
    """Staged checks: the loss, then each gradient (named by its path), finite."""
    from jax.experimental import checkify

    checkify.check(jnp.isfinite(loss), "the loss is not finite: {loss}", loss=loss)
    for path, g in jax.tree_util.tree_flatten_with_path(grads)[0]:
        checks.staged_finite(g, f"the gradient of "
                                f"{jax.tree_util.keystr(path, simple=True, separator='.')}")


def check_common_steps_axis(stacked: tuple[Any, ...]) -> None:
    """Raise ``ValueError`` unless every array of a stacked batch has the same leading (steps)
    axis, of length >= 1."""
    leaves = jax.tree_util.tree_flatten_with_path(stacked)[0]
    if not leaves:
        raise ValueError("stacked must hold at least one array with a leading steps axis, got none")
    lengths = {}
    for path, leaf in leaves:
        name = f"stacked{jax.tree_util.keystr(path)}"
        if getattr(leaf, "ndim", 0) < 1 or leaf.shape[0] < 1:
            raise ValueError(f"{name} must have a leading steps axis of length >= 1, got shape "
                             f"{tuple(getattr(leaf, 'shape', ()))}")
        lengths[name] = leaf.shape[0]
    if len(set(lengths.values())) > 1:
        raise ValueError("stacked arrays must share their leading steps axis, got "
                         + ", ".join(f"{n}: {s}" for n, s in lengths.items()))
