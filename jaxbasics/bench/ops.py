"""Where a compiled training update spends its time, op by op: ``train``'s K-update call
profiled with :func:`jax.profiler.trace`, each op's events attributed to the wall clock.

XLA records one event per executed op (a fusion, a library call such as ``ynn_fusion``, a
dot) on the thread that ran it; XLA:CPU runs independent ops concurrently on its worker
threads, so summed event times exceed the wall time. :func:`wall_shares` divides each moment
of the profile equally among the ops running in it, so that the shares add up to the time
that some op ran (the profile's span less its idle moments). Each op is then named by its
instruction in the compiled program (:func:`hlo_ops`): result shape and the JAX operation it
came from (``op_name`` metadata, e.g. ``.../transpose(jvp())/dot_general`` for a product of
the backward pass).

Run: ``python benchmarks/step_ops.py [--size smoke|cpu] [--calls N] [--top N]``.
"""

from __future__ import annotations

import glob
import gzip
import json
import os
import re
import tempfile
import time
from collections import defaultdict
from collections.abc import Iterable
from typing import Any

#: size -> model (d, layers, heads), vocab, context, batch: "cpu" is the README's
#: pretraining run (``bench --suite pretrain --size cpu``)
SIZES: dict[str, dict[str, Any]] = {
    "smoke": {"model": (32, 2, 2), "vocab": 256, "context": 32, "batch": 4},
    "cpu": {"model": (128, 4, 4), "vocab": 4096, "context": 128, "batch": 32}}
UPDATES_PER_CALL = 4  # as train's "auto" runs a run of 50 steps or more

_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = (\S+) ([\w\-]+)\((.*)$", re.M)


def wall_shares(events: Iterable[tuple[str, float, float]]) -> tuple[dict[str, float], float]:
    """``events``: (name, start, duration), any time unit. Returns ({name: time}, idle):
    every moment between the first start and the last end is divided equally among the
    events running then (two at once: half each); ``idle`` is the time none ran. The times
    add up to the span less ``idle``. ``ValueError`` for a negative duration."""
    points: list[tuple[float, int, int]] = []
    names = []
    for i, (name, start, duration) in enumerate(events):
        if duration < 0:
            raise ValueError(f"event {name!r} has a negative duration {duration}")
        names.append(name)
        points += [(start, 1, i), (start + duration, -1, i)]
    # at one instant starts before ends, so that an event of no duration comes and goes
    # (the order among events that touch does not matter: no time passes between them)
    points.sort(key=lambda p: (p[0], -p[1]))
    shares: dict[str, float] = defaultdict(float)
    active: set[int] = set()
    idle, last = 0.0, None
    for when, kind, i in points:
        if last is not None and when > last:
            if active:
                for j in active:
                    shares[names[j]] += (when - last) / len(active)
            else:
                idle += when - last
        last = when
        if kind == 1:
            active.add(i)
        else:
            active.discard(i)
    return dict(shares), idle


def hlo_ops(hlo_text: str) -> dict[str, dict[str, str]]:
    """Each instruction of a compiled program's text (``compiled.as_text()``): name ->
    {"shape": result shape, "opcode", "op_name": the JAX operation it came from ("" if the
    metadata names none)}."""
    ops = {}
    for m in _INSTRUCTION.finditer(hlo_text):
        name, shape, opcode, rest = m.groups()
        op_name = re.search(r'op_name="([^"]*)"', rest)
        ops[name] = {"shape": shape, "opcode": opcode,
                     "op_name": op_name.group(1) if op_name else ""}
    return ops


def profile_update(size: str = "cpu", calls: int = 2) -> dict[str, Any]:
    """Profile ``calls`` calls of ``train``'s K-update program (:data:`UPDATES_PER_CALL`
    updates each; AdamW, clipping, remat and attention as ``train``'s defaults choose them) at
    ``size`` (:data:`SIZES`) on random tokens, after two unprofiled calls. Returns the wall
    time per update, the profile's per-update busy and idle time and one row per op: its wall
    share per update (:func:`wall_shares`), its events per update, shape and JAX op_name,
    largest first. ``ValueError`` names a size or call count out of range."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    if isinstance(calls, bool) or not isinstance(calls, int) or calls < 1:
        raise ValueError(f"calls must be a positive int, got {calls!r}")
    import jax
    import numpy as np

    from jaxbasics.gpt.config import GPTConfig
    from jaxbasics.gpt.data import step_key
    from jaxbasics.gpt.model import parameter_table
    from jaxbasics.gpt.train import TrainOptions, build_model, make_gpt_train_loop, make_optimizer
    from jaxbasics.params import split_params

    s, k = SIZES[size], UPDATES_PER_CALL
    d, layers, heads = s["model"]
    cfg = GPTConfig(vocab_size=s["vocab"], context_length=s["context"], emb_dim=d,
                    n_layers=layers, n_heads=heads, drop_rate=0.0)
    opts = TrainOptions(steps=60, batch_size=s["batch"])
    model = build_model(cfg, opts)
    graphdef, params = split_params(model)
    tx = make_optimizer(opts, parameter_table(model))
    opt_state = tx.init(params)
    loop = make_gpt_train_loop(graphdef, tx)
    rng = np.random.default_rng(0)
    x, y = (rng.integers(0, s["vocab"], (k, s["batch"], s["context"]), dtype=np.int32)
            for _ in range(2))
    keys = jax.numpy.stack([step_key(0, i) for i in range(k)])
    ops = hlo_ops(loop.lower(params, opt_state, x, y, keys).compile().as_text() or "")
    for _ in range(2):  # compiled, buffers and thread pools warm
        params, opt_state, m = loop(params, opt_state, x, y, keys)
        jax.block_until_ready(m)
    with tempfile.TemporaryDirectory(prefix="jaxbasics-ops-") as folder:
        start = time.perf_counter()
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            for _ in range(calls):
                params, opt_state, m = loop(params, opt_state, x, y, keys)
                jax.block_until_ready(m)
        wall = time.perf_counter() - start
        traces = glob.glob(os.path.join(folder, "**", "*.trace.json.gz"), recursive=True)
        if not traces:
            raise RuntimeError(f"jax.profiler wrote no trace.json.gz under {folder}")
        with gzip.open(traces[0], "rt", encoding="utf-8") as f:
            trace = json.load(f)
    # the ops of the program: complete events named after one of its instructions (not the
    # executor's, the thread pool's or Python's own; loops' bodies are counted, not loops)
    leaves = [(e["name"], float(e["ts"]), float(e["dur"])) for e in trace["traceEvents"]
              if e.get("ph") == "X" and e["name"] in ops and ops[e["name"]]["opcode"] != "while"]
    shares, idle = wall_shares(leaves)
    counts: dict[str, int] = defaultdict(int)
    for name, _, _ in leaves:
        counts[name] += 1
    updates = calls * k
    busy_ms = sum(shares.values()) / 1e3 / updates  # trace times are in microseconds
    rows = [{"op": name, "ms": t / 1e3 / updates, "share": t / 1e3 / updates / busy_ms,
             "events": counts[name] / updates, **ops[name]}
            for name, t in sorted(shares.items(), key=lambda kv: -kv[1])]
    return {"size": size, "config": {"emb_dim": d, "n_layers": layers, "n_heads": heads,
                                     "vocab_size": s["vocab"], "context": s["context"],
                                     "batch": s["batch"], "updates_per_call": k,
                                     "remat": model.remat, "attention": model.attention},
            "updates": updates, "wall_ms_per_update": 1e3 * wall / updates,
            "busy_ms_per_update": busy_ms, "idle_ms_per_update": idle / 1e3 / updates,
            "ops": rows}
