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
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import optax
from flax import nnx

from jaxbasics import checks
from jaxbasics.params import LossFn, loss_of_params

#: ``metrics(loss, grads) -> what the step returns`` beside the new state (default: the loss)
Metrics = Callable[[jax.Array, Any], Any]


def _loss_only(loss: jax.Array, _grads: Any) -> jax.Array:
    return loss


def update_fn(graphdef: nnx.GraphDef, loss_fn: LossFn, tx: optax.GradientTransformation,
              metrics: Metrics = _loss_only) -> Callable[..., tuple[Any, Any, Any]]:
    """The pure (unjitted) update ``(params, opt_state, *batch) -> (params, opt_state,
    metrics(loss, grads))``, the loss taken before the update."""
    value_and_grad = jax.value_and_grad(loss_of_params(graphdef, loss_fn))

    def update(params, opt_state, *batch):
        loss, grads = value_and_grad(params, *batch)
        updates, opt_state = tx.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, metrics(loss, grads)

    return update


def make_step(graphdef: nnx.GraphDef, loss_fn: LossFn, tx: optax.GradientTransformation, *,
              scan: bool = False, unroll: int = 1, donate: bool = True,
              metrics: Metrics = _loss_only,
              check_stacked: Callable[[tuple[Any, ...]], None] | None = None,
              in_shardings: Any = None, out_shardings: Any = None
              ) -> jax.stages.Wrapped:
    """A compiled optimisation step ``(params, opt_state, *batch) -> (params, opt_state, out)``.

    Args:
      graphdef: the module's graph definition (:func:`jaxbasics.params.split_params`).
      loss_fn: ``loss_fn(model, *batch) -> scalar``, differentiated w.r.t. the parameters.
      tx: the Optax optimizer.
      scan: every array of ``batch`` has a leading axis of K >= 1 entries, one update each, run
        as one ``jax.lax.scan``; ``out`` then has that leading K axis too.
      unroll: scan iterations unrolled per loop trip (``jax.lax.scan``'s ``unroll``).
      donate: reuse the ``params``/``opt_state`` buffers for the outputs (do not touch the
        inputs afterwards).
      metrics: ``metrics(loss, grads)`` is ``out`` (default: the loss, before the update).
      check_stacked: with ``scan``, called with the batch arrays at trace time; raises
        ``ValueError`` for arrays it refuses (default: all must share their leading K axis).
      in_shardings, out_shardings: passed to ``jax.jit`` (a device mesh; None: JAX's placement).

    Raises:
      ValueError: ``unroll`` < 1; with ``scan``, batch arrays without a common leading axis
      (at the first call, while tracing).
    """
    checks.positive_int(unroll, "unroll")
    update = update_fn(graphdef, loss_fn, tx, metrics)
    fn = update
    if scan:
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
    return jax.jit(fn, donate_argnums=(0, 1) if donate else (), **kwargs)


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
