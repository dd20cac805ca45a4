"""Side-by-side timing of one optimisation step, PyTorch against JAX, in one process.

For each problem (the single neuron, SimpleNet at a given batch) the same SGD step
(forward, BCE, backward, parameter update with lr 0.01) is timed four ways:

* ``torch_eager``: ``zero_grad(); loss.backward(); optimizer.step()``
* ``torch_compile``: the same step function through ``torch.compile`` (None where it fails)
* ``jax_jit``: ``jax.jit(value_and_grad + optax)`` over split state, buffers donated
* ``jax_scan``: ``steps`` updates inside one ``jax.lax.scan``, per-step time

Each is a median over repeated samples after warm-up, the four taking turns sample by
sample (:func:`jaxbasics.timing.measure_interleaved`) so that a machine's drift in speed
does not favour one of them. PyTorch runs on the device JAX runs on
(:func:`jaxbasics.compare.device.torch_device`, which refuses a pair it cannot match).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
import torch
import torch.nn.functional as F
from flax import nnx

from jaxbasics import checks
from jaxbasics.chapter import neuron, simplenet
from jaxbasics.chapter.train_step import make_scan_train, make_train_step
from jaxbasics.compare import torch_reference as ref
from jaxbasics.compare.device import torch_device, torch_sync
from jaxbasics.compare.transfer import torch_to_flax
from jaxbasics.params import split_params
from jaxbasics.timing import measure_interleaved

LR = 0.01

#: the logger through which Dynamo reports a ``record_function`` it does not trace
DYNAMO_CONTEXT_LOGGER = "torch._dynamo.variables.ctx_manager"


class _IgnoredRecordFunctionNotice(logging.Filter):
    """Drops Dynamo's "Profiler record function ... will be ignored" warning, and nothing
    else: ``torch.optim``'s ``step()`` opens a profiler ``record_function`` on every call,
    which ``torch.compile`` leaves out of the compiled step, as it should here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not str(record.msg).startswith("Profiler record function")


def quiet_ignored_record_function() -> None:
    """Install :class:`_IgnoredRecordFunctionNotice` on :data:`DYNAMO_CONTEXT_LOGGER` (once)."""
    logger = logging.getLogger(DYNAMO_CONTEXT_LOGGER)
    if not any(isinstance(f, _IgnoredRecordFunctionNotice) for f in logger.filters):
        logger.addFilter(_IgnoredRecordFunctionNotice())


def _compiled_torch(step: Callable[[], Any], compile_torch: bool
                    ) -> tuple[Callable[[], Any] | None, dict[str, Any]]:
    """``torch.compile(step)`` after its first (compiling) call, and the compile time or the
    reason it failed."""
    if not compile_torch:
        return None, {}
    quiet_ignored_record_function()  # optimizer.step()'s profiler hook, left out as intended
    try:
        compiled = torch.compile(step)
        start = time.perf_counter()
        torch_sync(compiled())
        return compiled, {"torch_compile_s": time.perf_counter() - start}
    except Exception as err:  # torch.compile needs a working C++ toolchain; report why not
        return None, {"torch_compile_error":
                      f"{type(err).__name__}: {str(err).splitlines()[0][:200]}"}


def _time_all(torch_step: Callable[[], Any], compile_torch: bool, jax_step: Callable[[], Any],
              jax_scan: Callable[[], Any], scan_steps: int, repeats: int) -> dict[str, Any]:
    """The four ways, timed in turn (:func:`~jaxbasics.timing.measure_interleaved`), in µs."""
    compiled, result = _compiled_torch(torch_step, compile_torch)
    fns = {"torch_eager": torch_step, "jax_jit": jax_step, "jax_scan": jax_scan}
    if compiled is not None:
        fns["torch_compile"] = compiled
    times = measure_interleaved(fns, syncs={"torch_eager": torch_sync,
                                            "torch_compile": torch_sync}, repeats=repeats)
    result.update({"torch_eager_us": times["torch_eager"].median_us,
                   "torch_compile_us": times["torch_compile"].median_us if compiled else None,
                   "jax_jit_us": times["jax_jit"].median_us,
                   "jax_scan_us": times["jax_scan"].median_us / scan_steps,
                   "scan_steps": scan_steps})
    return result


def time_neuron(*, compile_torch: bool = True, scan_steps: int = 1000,
                repeats: int = 15) -> dict[str, Any]:
    """One gradient-descent step on (w, b) for the chapter's neuron, four ways."""
    ex = neuron.CHAPTER_EXAMPLE
    dev = torch_device()
    w_t = torch.tensor([ex.w], requires_grad=True, device=dev)
    b_t = torch.tensor([ex.b], requires_grad=True, device=dev)
    x_t, y_t = torch.tensor([ex.x], device=dev), torch.tensor([ex.y], device=dev)

    def torch_step():
        w_t.grad = b_t.grad = None
        loss = F.binary_cross_entropy(torch.sigmoid(x_t * w_t + b_t), y_t)
        loss.backward()
        with torch.no_grad():
            w_t.sub_(LR * w_t.grad)
            b_t.sub_(LR * b_t.grad)
        return loss

    def jax_body(params, x, y):
        loss, (gw, gb) = jax.value_and_grad(neuron.loss, argnums=(0, 1))(*params, x, y)
        return (params[0] - LR * gw, params[1] - LR * gb), loss

    step = jax.jit(jax_body, donate_argnums=0)
    x, y = jnp.float32(ex.x), jnp.float32(ex.y)
    state = [(jnp.float32(ex.w), jnp.float32(ex.b))]

    def jax_step():
        state[0], loss = step(state[0], x, y)
        return loss

    @jax.jit
    def scan(params):
        return jax.lax.scan(lambda p, _: jax_body(p, x, y), params, length=scan_steps)

    params0 = (jnp.float32(ex.w), jnp.float32(ex.b))
    return _time_all(torch_step, compile_torch, jax_step, lambda: scan(params0), scan_steps,
                     repeats)


def time_simplenet(batch: int, *, compile_torch: bool = True, scan_steps: int = 1000,
                   repeats: int = 15, seed: int = 0) -> dict[str, Any]:
    """One SimpleNet SGD step at ``batch`` examples, four ways, from identical weights."""
    torch.manual_seed(seed)
    t_model = ref.TorchSimpleNet()
    j_model = simplenet.SimpleNet(rngs=nnx.Rngs(seed))
    torch_to_flax(t_model, j_model)
    dev = torch_device()
    t_model.to(dev)
    x_np, y_np = (np.asarray(a) for a in simplenet.toy_batch(jax.random.key(seed), batch))
    x_t, y_t = (torch.from_numpy(a.copy()).to(dev) for a in (x_np, y_np))
    optimizer = torch.optim.SGD(t_model.parameters(), lr=LR)
    loss_fn = torch.nn.BCELoss()

    def torch_step():
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(t_model(x_t), y_t)
        loss.backward()
        optimizer.step()
        return loss

    graphdef, params = split_params(j_model)
    tx = optax.sgd(LR)
    step = make_train_step(graphdef, simplenet.bce_loss, tx)
    x, y = jnp.asarray(x_np), jnp.asarray(y_np)
    state = [jax.tree.map(jnp.copy, params), None]
    state[1] = tx.init(state[0])

    def jax_step():
        state[0], state[1], loss = step(state[0], state[1], x, y)
        return loss

    run = make_scan_train(graphdef, simplenet.bce_loss, tx, donate=False)
    xs = jnp.broadcast_to(x, (scan_steps, *x.shape))
    ys = jnp.broadcast_to(y, (scan_steps, *y.shape))
    opt0 = tx.init(params)
    return _time_all(torch_step, compile_torch, jax_step, lambda: run(params, opt0, xs, ys),
                     scan_steps, repeats)


def add_ratios(entry: dict[str, Any]) -> dict[str, Any]:
    """Add ``speedup_*`` = torch eager time / other time (higher: faster than torch eager)."""
    eager = entry["torch_eager_us"]
    for key in ("torch_compile_us", "jax_jit_us", "jax_scan_us"):
        if entry.get(key):
            entry[f"speedup_{key[:-3]}_vs_torch_eager"] = eager / entry[key]
    return entry


def run_timings(*, compile_torch: bool = True, batches: tuple[int, ...] = (1, 1024),
                repeats: int = 15) -> dict[str, dict[str, Any]]:
    """``{"neuron": {...}, "simplenet_b1": {...}, "simplenet_b1024": {...}}`` in microseconds."""
    if isinstance(batches, str) or not isinstance(batches, tuple | list):
        raise ValueError(f"batches must be a tuple of batch sizes, got {batches!r}")
    for b in batches:
        checks.positive_int(b, "each of batches")
    out = {"neuron": add_ratios(time_neuron(compile_torch=compile_torch, repeats=repeats))}
    for b in batches:
        steps = 1000 if b <= 64 else 200
        out[f"simplenet_b{b}"] = add_ratios(time_simplenet(
            b, compile_torch=compile_torch, scan_steps=steps, repeats=repeats))
    return out
