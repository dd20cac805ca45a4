"""Functional training: the chapter's "training loop" part of the backpropagation section.

PyTorch's loop mutates objects::

    optimizer.zero_grad(); loss = loss_fn(model(x), y); loss.backward(); optimizer.step()

``loss.backward()`` *adds* into each ``p.grad``, which is why ``zero_grad()`` comes first.
The JAX loop is a pure function of the parameters (split from the NNX module once)::

    loss, grads = jax.value_and_grad(loss_of_params)(params, batch)  # fresh grads every call
    updates, opt_state = tx.update(grads, opt_state, params)
    params = optax.apply_updates(params, updates)                    # new arrays, old donated

Nothing accumulates unless asked: :func:`sum_gradients` does what two ``backward()`` calls
do, and ``optax.MultiSteps`` averages k micro-batches into one update.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from jaxbasics.params import LossFn
from jaxbasics.step import BatchCheck, make_step


def make_train_step(graphdef: nnx.GraphDef, loss_fn: LossFn, tx: optax.GradientTransformation,
                    *, donate: bool = True, checked: bool = False,
                    check_batch: BatchCheck | None = None) -> jax.stages.Wrapped:
    """One compiled optimisation step ``(params, opt_state, *batch) -> (params, opt_state, loss)``.

    ``params ← params + tx(∇_params loss_fn(model, *batch))``. With ``donate=True`` the input
    ``params``/``opt_state`` buffers are reused for the outputs: do not touch them afterwards,
    nor the module they were split from (``split_params`` shares its arrays, so calling it
    raises "Array has been deleted"). Unlike PyTorch's ``optimizer.step()``, nothing is
    changed in place: ``nnx.merge(graphdef, params)`` makes a module of the returned
    parameters (or ``nnx.update(model, params)`` puts them back into one).
    The loss reported is the one *before* the update. The batch's values are not checked
    inside ``jax.jit``; ``checked=True`` compiles in ``check_batch`` (for SimpleNet:
    :func:`~jaxbasics.chapter.simplenet.staged_batch_checks`) and finite loss and gradient
    checks, raising :class:`~jaxbasics.step.StepCheckError`. (:func:`jaxbasics.step.make_step`.)
    """
    return make_step(graphdef, loss_fn, tx, donate=donate, checked=checked,
                     check_batch=check_batch)


def make_scan_train(graphdef: nnx.GraphDef, loss_fn: LossFn, tx: optax.GradientTransformation,
                    *, donate: bool = True, unroll: int = 4, checked: bool = False,
                    check_batch: BatchCheck | None = None) -> jax.stages.Wrapped:
    """Many steps in one compiled call: ``(params, opt_state, *stacked) -> (..., losses)``.

    Each array in ``stacked`` has a leading axis of length S (one batch per step); the
    ``jax.lax.scan`` applies the same update as :func:`make_train_step` S times and returns
    the S losses (shape (S,)). No Python runs between steps. ``unroll`` steps run per loop
    iteration (for a tiny model that lets XLA drop the loop's per-iteration copies; see
    docs/performance.md). Arrays of another leading length are refused at the first call.
    ``checked``, ``check_batch``: as :func:`make_train_step`, in every one of the S steps.
    """
    return make_step(graphdef, loss_fn, tx, scan=True, unroll=unroll, donate=donate,
                     checked=checked, check_batch=check_batch)


def sum_gradients(*grad_trees: Any) -> Any:
    """Elementwise sum of gradient pytrees: what PyTorch's ``.grad`` holds after several
    ``backward()`` calls without ``zero_grad()``. Every tree must have the structure and leaf
    shapes of the first."""
    if not grad_trees:
        raise ValueError("sum_gradients needs at least one gradient tree, got none")
    first, first_def = jax.tree_util.tree_flatten_with_path(grad_trees[0])
    for i, tree in enumerate(grad_trees[1:], start=1):
        flat, treedef = jax.tree_util.tree_flatten_with_path(tree)
        if treedef != first_def:  # type: ignore[operator]  # (PyTreeDef has no __ne__ in its stub)
            raise ValueError(f"grad_trees[{i}] must have the structure of grad_trees[0] "
                             f"({first_def}), got {treedef}")
        for (path, a), (_, b) in zip(first, flat, strict=True):
            if jnp.shape(a) != jnp.shape(b):
                raise ValueError(f"grad_trees[{i}]{jax.tree_util.keystr(path)} must have shape "
                                 f"{jnp.shape(a)} as in grad_trees[0], got {jnp.shape(b)}")
    return jax.tree.map(lambda *g: sum(g[1:], g[0]), *grad_trees)
