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


PARTS = ("attention", "projections", "head and loss", "blocks' other work", "everything else")


def _scope(name: str, scope: str) -> bool:
    """Whether JAX op_name ``name`` lies in the named scope ``scope`` (a path component, or
    inside a transform's parentheses: ``.../attention/...``, ``jvp(head)``)."""
    return re.search(rf"(^|[/(]){re.escape(scope)}([/)]|$)", name) is not None


def part_of(row: dict[str, Any], config: dict[str, Any]) -> str:
    """Which of :data:`PARTS` an op of :func:`profile_update` (a row, and the run's config)
    belongs to: by the named scope its JAX op_name carries (the model names ``attention``,
    ``head`` and each layer's ``blocks``, the loss ``loss``:
    :class:`jaxbasics.gpt.model.GPT`, :func:`jaxbasics.gpt.train.lm_loss`): in a block, the
    products (op_name ending in ``dot_general``, or a dot) are the projections and the rest
    the blocks' other work; outside the blocks, everything else (embeddings, AdamW; with the
    layers unrolled also the slicing of each layer's parameters out of their stacks). An op
    without a scope that ran once a layer (``events`` equal to the layer count: inside the
    layer scan, its bookkeeping) counts as a block's too. A fusion is named after one of
    its ops, so an op of two parts counts in one; the rows say exactly what ran."""
    name = row["op_name"]
    if _scope(name, "attention"):
        return "attention"
    if _scope(name, "head") or _scope(name, "loss"):
        return "head and loss"
    if _scope(name, "blocks") or round(row["events"]) == config["n_layers"]:
        if name.endswith("dot_general") or row.get("opcode") == "dot":
            return "projections"
        return "blocks' other work"
    return "everything else"


def parts(result: dict[str, Any]) -> dict[str, float]:
    """ms an update of each of :data:`PARTS` (:func:`part_of`) in a :func:`profile_update`
    result; they add up to its ``busy_ms_per_update``."""
    total = dict.fromkeys(PARTS, 0.0)
    for row in result["ops"]:
        total[part_of(row, result["config"])] += row["ms"]
    return total


def profile_update(size: str = "cpu", calls: int = 2) -> dict[str, Any]:
    """Profile ``calls`` calls of ``train``'s K-update program (:data:`UPDATES_PER_CALL`
    updates each; AdamW, clipping, layer loop, remat and attention as ``train``'s defaults
    choose them) at ``size`` (:data:`SIZES`) on random tokens, after two unprofiled calls.
    Returns, per update: ``wall_ms_per_update``, the profiled calls' wall time (under the
    profiler, which slows them); ``busy_ms_per_update``, the time some op ran;
    ``idle_ms_per_update``, the time none ran between the profile's first op and its last
    (the rest of the wall time is before the first op and after the last: dispatch and the
    wait for the result); and one row per op, largest first: ``ms``, its wall share
    (:func:`wall_shares`), ``share``, that over the busy time, ``events`` (executions per
    update: 1 outside a layer scan, one per layer inside; unrolled layers are ops of their
    own), shape, opcode and JAX op_name. ``ValueError`` names a size or call count out of
    range."""
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
    # the program that runs is the one whose text names the ops: compiled once, called below
    compiled = loop.lower(params, opt_state, x, y, keys).compile()
    ops = hlo_ops(compiled.as_text() or "")
    for _ in range(2):  # buffers and thread pools warm
        params, opt_state, m = compiled(params, opt_state, x, y, keys)
        jax.block_until_ready(m)
    with tempfile.TemporaryDirectory(prefix="jaxbasics-ops-") as folder:
        with jax.profiler.trace(folder, create_perfetto_trace=True):
            start = time.perf_counter()  # the calls only, not the trace's writing
            for _ in range(calls):
                params, opt_state, m = compiled(params, opt_state, x, y, keys)
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
                                     "remat": model.remat, "scan_layers": model.scan_layers,
                                     "attention": model.attention},
            "updates": updates, "wall_ms_per_update": 1e3 * wall / updates,
            "busy_ms_per_update": busy_ms, "idle_ms_per_update": idle / 1e3 / updates,
            "ops": rows}
