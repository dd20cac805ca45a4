"""A real pretraining run both ways (``bench --suite pretrain``, issue 33): the ``train --data``
code path (:func:`jaxbasics.gpt.train.train` on :class:`~jaxbasics.gpt.data.PretrainData`,
evaluation and checkpoints off) beside a PyTorch training loop on the same prepared shards:
the same batches in the same order (:meth:`jaxbasics.data.batches.TokenData.batch`), the same
model shape and initial weights (:class:`jaxbasics.compare.torch_gpt.TorchGPT`, weights copied
from the JAX model), AdamW with the same decay groups, clipping and warmup + cosine schedule;
PyTorch eager and ``torch.compile``.

Each run is its own subprocess, so that its peak resident memory (Linux's ``VmHWM``) and its
start-up (imports + compile) are its own; the runs are interleaved, JAX, eager, compiled, then
again, so that the host's drift falls on all three. The first JAX run starts with an empty
compilation cache, the later ones with the cache it filled (the same for Inductor's).

Reported per run: steady ms per step (median of the steps after the first ``WARM`` ones, or
after the first half in runs shorter than ``2 · WARM``: :func:`warm_left_out`;
a step ends when its loss is on the host, and the updates of one JAX call of K, ``train``'s
``steps_per_call``, share that call's time), time to the first step's loss from the process's
launch, wall for all steps, peak RSS (and on an accelerator its memory at its highest, with
the same goal as RSS's), the first step's loss, MFU against
:func:`jaxbasics.bench.device.peak_flops` (a known accelerator's data-sheet dense bf16 peak, on
a CPU the best 2048² fp32 matmul measured in the same run, before and after every round; an
MFU above 100 % is withheld, None, as a peak measured while the host was busy); for JAX a
breakdown of one step from timers around each phase. With ``bf16`` both sides compute in
bfloat16 with float32 parameters: JAX as ``train --bf16`` (cuDNN attention on an NVIDIA GPU:
:func:`jaxbasics.gpt.train.resolve_attention`), PyTorch under ``torch.autocast``.
"""

from __future__ import annotations

import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: size -> corpus bytes, BPE ids (0: bytes), model (d, layers, heads), context, batch, steps,
#: rounds
SIZES: dict[str, dict[str, Any]] = {
    "smoke": {"corpus": 200_000, "vocab": 0, "model": (32, 2, 2), "context": 32, "batch": 4,
              "steps": 6, "rounds": 1, "steps_per_call": 2},  # K > 1 as a long run has
    "cpu": {"corpus": 4_000_000, "vocab": 4096, "model": (128, 4, 4), "context": 128,
            "batch": 32, "steps": 60, "rounds": 2},
    "full": {"corpus": 20_000_000, "vocab": 8192, "model": (768, 12, 12), "context": 1024,
             "batch": 16, "steps": 40, "rounds": 2}}
WARM = 8  # steps left out of the steady median (compiles, first touches, warm caches)
GOALS = {"step_vs_torch_eager": 1.2, "step_vs_torch_compile": 1.0,
         "first_step_over_eager_s": 1.0, "rss_vs_torch": 1.1}


def warm_left_out(steps: int) -> int:
    """How many of a run's first ``steps`` the steady median leaves out: :data:`WARM`, or half
    of a run shorter than twice that (so that the compiling call never sets the median)."""
    return WARM if steps >= 2 * WARM else steps // 2


def at_most(goal: str) -> bool:
    """Whether goal ``goal`` (a key of :func:`summarize`'s goals) is met at or below its target
    (start-up seconds, memory ratios), not at or above it (speed ratios)."""
    return goal.startswith(("first", "rss", "device"))

_PEAK = """
def peak_rss():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0
"""

_JAX = _PEAK + """
import json, sys, time
spec = json.loads(sys.argv[1])
import jax
jax.config.update("jax_compilation_cache_dir", spec["cache"])
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
import numpy as np
from jaxbasics.gpt.config import GPTConfig
from jaxbasics.gpt.data import PretrainData, step_key
from jaxbasics.gpt.train import TrainOptions, train, build_model, make_optimizer, \\
    make_gpt_train_step, make_gpt_train_loop, resolve_steps_per_call, call_sizes
from jaxbasics.gpt.model import parameter_table
from jaxbasics.params import split_params
cfg = GPTConfig(**spec["cfg"])
task = PretrainData(spec["data"], cfg.context_length, seed=0)
opts = TrainOptions(**spec["opts"])
stamps = []
result = train(cfg, task, opts, on_step=lambda step, record: stamps.append(time.time()))
end = time.time()
losses = [r["loss"] for r in result.history]
rss = peak_rss()
device_peak = (jax.devices()[0].memory_stats() or {}).get("peak_bytes_in_use")  # None on CPU
# the breakdown: each phase of one step timed alone, after the run (programs compiled)
model = build_model(cfg, opts)
graphdef, params = split_params(model)
tx = make_optimizer(opts, parameter_table(model))
opt_state = tx.init(params)
K = resolve_steps_per_call(opts)  # the updates of one call of the run: timed as one call / K
step_fn = make_gpt_train_step(graphdef, tx) if K == 1 else make_gpt_train_loop(graphdef, tx)
def med(fn, n=spec["repeats"]):
    times = []
    for i in range(n):
        t0 = time.perf_counter(); fn(i); times.append(time.perf_counter() - t0)
    return float(np.median(times))
B = opts.batch_size
gather = med(lambda i: task.batch(i, B))
x, y = task.batch(0, B)
transfer = med(lambda i: jax.block_until_ready((jax.device_put(x), jax.device_put(y))))
key = step_key(0, 0)
if K > 1:
    x, y, key = np.stack([x] * K), np.stack([y] * K), jax.numpy.stack([key] * K)
xd, yd = jax.device_put(x), jax.device_put(y)
state = [params, opt_state, None]
def compute(i):
    state[0], state[1], state[2] = step_fn(state[0], state[1], xd, yd, key)
    jax.block_until_ready(state[2])
compute(0)
device = med(compute) / K
fetch = med(lambda i: (np.asarray(state[2]["loss"]), np.asarray(state[2]["grad_norm"])))
print(json.dumps({"steps_per_call": K, "calls": call_sizes(0, opts.steps, opts),
                  "attention": model.attention, "remat": model.remat,
                  "scan_layers": model.scan_layers,
                  "device_peak": device_peak,
                  "stamps": stamps, "end": end, "losses": losses, "peak_rss": rss,
                  "breakdown_s": {"batch_gather": gather, "transfer": transfer,
                                  "device_compute": device, "metric_fetch": fetch}}))
"""

_TORCH = _PEAK + """
import json, math, sys, time
spec = json.loads(sys.argv[1])
import torch
import torch.nn.functional as F
from jaxbasics.compare.torch_gpt import TorchGPT, adamw
from jaxbasics.data.batches import TokenData
from jaxbasics.gpt.config import GPTConfig
cfg = GPTConfig(**spec["cfg"])
o = spec["opts"]
data = TokenData.open(spec["data"], "train")
device = torch.device(spec["torch_device"])
if device.type == "cuda":  # TF32, as XLA computes float32 matmuls there (compare.device)
    torch.set_float32_matmul_precision("high")
model = TorchGPT(cfg)
model.load_state_dict(torch.load(spec["weights"]))
model.to(device)
model.train()
opt = adamw(model, lr=o["learning_rate"], weight_decay=o["weight_decay"], fused=True)
peak, warm, steps, floor = o["learning_rate"], o["warmup_steps"], o["steps"], o["min_lr_ratio"]
def lr(s):  # jaxbasics.gpt.train.learning_rate_schedule (its cosine), written out
    if s < warm:
        return peak * (s + 1) / (warm + 1)
    end = peak * floor
    f = min(1.0, (s - warm) / max(steps - warm, 1))
    return end + (peak - end) * (1 + math.cos(math.pi * f)) / 2
run = torch.compile(model) if spec["compile"] else model
stamps, losses = [], []
for step in range(steps):
    x, y = data.batch(step, o["batch_size"], cfg.context_length, seed=0)
    x, y = torch.from_numpy(x).long().to(device), torch.from_numpy(y).long().to(device)
    for group in opt.param_groups:
        group["lr"] = lr(step)
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=spec["bf16"]):
        logits = run(x)
    loss = F.cross_entropy(logits.float().reshape(-1, logits.shape[-1]), y.reshape(-1))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), o["clip_norm"])
    opt.step()
    losses.append(loss.item())
    stamps.append(time.time())
print(json.dumps({"stamps": stamps, "end": time.time(), "losses": losses,
                  "peak_rss": peak_rss(), "device_peak": torch.cuda.max_memory_allocated(device)
                  if device.type == "cuda" else None}))
"""


def _launch(script: str, spec: dict, env: dict[str, str]) -> dict[str, Any]:
    start = time.time()
    done = subprocess.run([sys.executable, "-c", script, json.dumps(spec)], capture_output=True,
                          text=True, env=env, check=False, timeout=3600)
    if done.returncode != 0:
        raise RuntimeError(f"a pretraining run in a subprocess failed: {done.stderr[-1500:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    stamps = out.pop("stamps")
    # each step's time: from the end of the call before to the end of its own call, over the
    # updates that call made (JAX's records of a K-update call come together; PyTorch: one)
    steps, ends, made = [], [start] + stamps, 0
    for k in out.get("calls", [1] * len(stamps)):
        steps += [(ends[made + k] - ends[made]) / k] * k
        made += k
    steady = sorted(steps[warm_left_out(len(steps)):])
    out.update(first_step_s=stamps[0] - start, wall_s=out.pop("end") - start,
               steady_step_ms=1e3 * steady[len(steady) // 2], steps=len(stamps))
    return out


def make_data(folder: Path, size: str, log: Callable[[str], Any]) -> Path:
    """Prepare the size's slice of the standard library (:func:`jaxbasics.bench.data.
    stdlib_corpus`) into ``folder / "data"``: bytes at smoke size, else a BPE trained on it."""
    from jaxbasics.bench.data import stdlib_corpus
    from jaxbasics.data.prepare import PrepareOptions, prepare

    s = SIZES[size]
    corpus = folder / "corpus"
    nbytes = stdlib_corpus(corpus, s["corpus"])
    if s["vocab"]:
        log(f"pretrain: training a BPE of {s['vocab']} ids on {nbytes / 1e6:.1f} MB of stdlib")
    prepare([corpus], folder / "data", train_vocab=s["vocab"] or None,
            byte_level=not s["vocab"], log=lambda m: None,
            options=PrepareOptions(val_fraction=0.1, context=s["context"]))
    return folder / "data"


def run_pretrain(size: str, *, data: str | Path | None = None, preset: str | None = None,
                 context: int | None = None, steps: int | None = None,
                 batch_size: int | None = None, rounds: int | None = None,
                 compile_torch: bool = True,
                 bf16: bool = False, remat: bool | str = "auto",
                 scan_layers: bool | str = "auto",
                 log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Run the comparison of the module docstring at ``size`` (:data:`SIZES`) on ``data`` (a
    prepared DATA folder; None: the standard library, prepared here), the model of the size or
    of ``preset`` (:data:`jaxbasics.gpt.config.PRESETS`) at ``context``, ``steps`` and
    ``batch_size`` rows a batch, ``rounds`` interleaved rounds (None: the size's; the first
    round starts with empty compilation caches, the others with warm ones; more rounds make
    the steady-step ratios, medians of the rounds' ratios, less the host's drift);
    ``train``'s own ``steps_per_call`` default
    (4 updates a call from 50 steps on: :func:`jaxbasics.gpt.train.resolve_steps_per_call`), as
    a user's run of that length gets; ``bf16``: both sides in bfloat16 compute (module
    docstring); ``remat``: the JAX side's (``train --remat``; "auto": train's default,
    :func:`jaxbasics.gpt.train.resolve_remat`); ``scan_layers``: the JAX side's layer loop
    (``train --scan-layers``; "auto": :func:`jaxbasics.gpt.train.resolve_layers`); returns a
    JSON-ready
    dict: each run's figures, the medians per side, the JAX step's breakdown, the ratios and
    whether each goal (:data:`GOALS`) is met. ``ValueError`` names a size, preset, context,
    step count or batch size out of range before anything is prepared or run."""
    from jaxbasics import checks
    from jaxbasics.gpt.config import PRESETS, GPTConfig, flops_per_token

    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    if preset is not None and preset not in PRESETS:
        raise ValueError(f"preset must be one of {', '.join(PRESETS)}, got {preset!r}")
    for value, name in ((context, "context"), (steps, "steps"), (batch_size, "batch_size"),
                        (rounds, "rounds")):
        if value is not None:  # 0 is refused, not taken for "the size's"
            checks.positive_int(value, name)
    if steps == 1:
        raise ValueError("steps must be at least 2 (the first one compiles, and a steady step "
                         "is measured after it), got 1")
    from jaxbasics.gpt.train import TrainOptions

    TrainOptions(remat=remat, scan_layers=scan_layers)  # a bad value named before any work
    import torch

    from jaxbasics.bench.device import peak_flops, table_peak_flops
    from jaxbasics.compare.device import torch_device
    from jaxbasics.compare.torch_gpt import flax_in_torch_layout
    from jaxbasics.gpt.data import PretrainData
    from jaxbasics.gpt.model import parameter_table
    from jaxbasics.gpt.train import build_model
    from jaxbasics.params import split_params
    from jaxbasics.timing import default_device

    s = SIZES[size]
    ctx = s["context"] if context is None else context
    n = s["steps"] if steps is None else steps
    batch = s["batch"] if batch_size is None else batch_size
    n_rounds = s["rounds"] if rounds is None else rounds
    work = Path(tempfile.mkdtemp(prefix="jaxbasics-bench-pretrain-"))
    try:
        folder = Path(data) if data is not None else make_data(work, size, log)
        task = PretrainData(folder, ctx)
        if preset is not None:
            base = PRESETS[preset]
        else:
            d, layers, heads = s["model"]
            base = GPTConfig(emb_dim=d, n_layers=layers, n_heads=heads)
        cfg = base.replace(vocab_size=task.vocab_size, context_length=ctx, drop_rate=0.0)
        opts = TrainOptions(steps=n, batch_size=batch, learning_rate=1e-3,
                            steps_per_call=s.get("steps_per_call", "auto"), bf16=bf16,
                            remat=remat, scan_layers=scan_layers,
                            warmup_steps=min(100, n // 10), save_every=10**9)
        model = build_model(cfg, opts)  # the weights both sides start from
        weights = {name: torch.from_numpy(arr.copy()) for name, _, arr in
                   flax_in_torch_layout(split_params(model)[1], parameter_table(model))}
        torch.save(weights, work / "weights.pt")
        del model, weights
        cfg_d = {f: getattr(cfg, f) for f in cfg.__dataclass_fields__}
        opts_d = {f: getattr(opts, f) for f in ("steps", "batch_size", "learning_rate",
                                                "warmup_steps", "weight_decay", "clip_norm",
                                                "min_lr_ratio", "save_every",
                                                "steps_per_call", "bf16", "remat",
                                                "scan_layers")}
        spec = {"cfg": cfg_d, "opts": opts_d, "data": str(folder), "cache": str(work / "xla"),
                "weights": str(work / "weights.pt"), "repeats": 5 if size == "smoke" else 9,
                "bf16": bf16}
        spec["torch_device"] = str(torch_device())  # where JAX runs, or an error saying why not
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": str(work / "inductor")}
        sides = ["jax", "torch_eager"] + (["torch_compile"] if compile_torch else [])
        runs: dict[str, list[dict]] = {k: [] for k in sides}
        peak, peak_source = peak_flops()  # measured (no data-sheet figure): after every round
        peaks, measured = [peak], table_peak_flops(default_device().device_kind) is None
        for r in range(n_rounds):
            for side in sides:
                log(f"pretrain: round {r + 1} of {n_rounds}, {side} ({n} steps)")
                out = (_launch(_JAX, spec, env) if side == "jax" else
                       _launch(_TORCH, {**spec, "compile": side == "torch_compile"}, env))
                out["compile_cache"] = "cold" if r == 0 else "warm"
                runs[side].append(out)
            if measured:
                peaks.append(peak_flops()[0])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    peak = max(peaks)
    fpt = flops_per_token(cfg, ctx)
    summary, br, goals = summarize(runs, tokens=batch * ctx, flops_per_token=fpt, peak=peak)
    return {"config": {"emb_dim": cfg.emb_dim, "n_layers": cfg.n_layers, "n_heads": cfg.n_heads,
                       "vocab_size": cfg.vocab_size, "context": ctx, "batch": batch,
                       "steps": n, "warm_steps_left_out": warm_left_out(n), "preset": preset,
                       "rounds": n_rounds,
                       "dtype": "bfloat16 compute, float32 parameters" if bf16 else "float32",
                       "jax_attention": runs["jax"][0].get("attention", "xla"),
                       "jax_remat": runs["jax"][0].get("remat", "dots"),
                       "jax_scan_layers": runs["jax"][0].get("scan_layers", True),
                       "jax_steps_per_call": runs["jax"][0].get("steps_per_call", 1),
                       "data": "stdlib (prepared here)" if data is None else str(data)},
            "flops_per_token": fpt, "peak_flops": peak, "peak_source": peak_source,
            "summary": summary,
            "jax_breakdown_ms": br, "goals": goals, "runs": runs}


def _paired(runs: dict[str, list[dict]], side: str) -> float:
    """``side``'s steady step over JAX's, round by round (the runs of one round ran next to
    each other, so the host's drift between rounds cancels), the median of those ratios."""
    return statistics.median(o["steady_step_ms"] / j["steady_step_ms"]
                             for o, j in zip(runs[side], runs["jax"], strict=True))


def summarize(runs: dict[str, list[dict]], *, tokens: int, flops_per_token: float,
              peak: float) -> tuple[dict, dict, dict]:
    """From each side's runs (as :func:`run_pretrain` records them): the summary per side
    (steady ms/step: the median over rounds, tokens/s, MFU against ``peak`` FLOP/s (None
    above 100 %: a peak measured while the host was busy), first step
    cold and warm: from the process's launch to its first loss, None warm where only one round
    ran; wall, peak RSS, first loss), the JAX step's breakdown in ms (each phase's
    median; ``host_rest``: the steady step less their sum, negative where the phases timed
    alone after the run took longer than in it) and each goal of :data:`GOALS` with its value
    and whether it is met (step ratios paired by round: :func:`_paired`)."""
    summary: dict[str, dict[str, Any]] = {}
    for side, rs in runs.items():
        step_ms = statistics.median(x["steady_step_ms"] for x in rs)  # of 2: their mean
        warm = [x["first_step_s"] for x in rs if x["compile_cache"] == "warm"]
        summary[side] = {
            "steady_step_ms": step_ms, "tokens_per_s": tokens / step_ms * 1e3,
            "mfu": mfu if (mfu := flops_per_token * tokens / (step_ms / 1e3) / peak) <= 1.0
            else None,
            "first_step_s_cold": rs[0]["first_step_s"],
            "first_step_s_warm": min(warm) if warm else None,  # None: one round, no warm run
            "wall_s": min(x["wall_s"] for x in rs),
            "peak_rss_mib": max(x["peak_rss"] for x in rs) / 2**20,
            # an accelerator's memory at its highest (allocated, not reserved), None on a CPU
            "device_peak_mib": None if any(x.get("device_peak") is None for x in rs)
            else max(x["device_peak"] for x in rs) / 2**20,
            "first_loss": rs[0]["losses"][0]}
    jax_rs = runs["jax"]
    br = {k: 1e3 * statistics.median(x["breakdown_s"][k] for x in jax_rs)
          for k in jax_rs[0]["breakdown_s"]}
    br["host_rest"] = summary["jax"]["steady_step_ms"] - sum(br.values())
    j, e = summary["jax"], summary["torch_eager"]
    # the goal is set with a warm compile cache; a single round has only cold runs: said so
    cache = "warm" if j["first_step_s_warm"] is not None else "cold"
    first_step_gap = j[f"first_step_s_{cache}"] - e[f"first_step_s_{cache}"]
    goals = {"step_vs_torch_eager": {"value": _paired(runs, "torch_eager"),
                                     "goal": GOALS["step_vs_torch_eager"]},
             "first_step_over_eager_s": {"value": first_step_gap, "cache": cache,
                                         "goal": GOALS["first_step_over_eager_s"]},
             "rss_vs_torch": {"value": j["peak_rss_mib"] / e["peak_rss_mib"],
                              "goal": GOALS["rss_vs_torch"]}}
    if "torch_compile" in summary:
        c = summary["torch_compile"]
        goals["step_vs_torch_compile"] = {"value": _paired(runs, "torch_compile"),
                                          "goal": GOALS["step_vs_torch_compile"]}
        goals["rss_vs_torch"]["value"] = j["peak_rss_mib"] / min(e["peak_rss_mib"],
                                                                c["peak_rss_mib"])
    if j["device_peak_mib"] is not None and e["device_peak_mib"] is not None:
        # on an accelerator the memory that limits a run is the device's: its goal as RSS's
        goals["device_memory_vs_torch"] = {"value": j["device_peak_mib"] / e["device_peak_mib"],
                                           "goal": GOALS["rss_vs_torch"]}
    for name, g in goals.items():
        g["met"] = g["value"] <= g["goal"] if at_most(name) else g["value"] >= g["goal"]
    return summary, br, goals
