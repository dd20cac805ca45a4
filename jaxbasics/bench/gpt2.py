"""GPT-2 training-step benchmark: forward + backward + clipped AdamW on one batch.

Model FLOPs per token (Kaplan et al. 2020; PaLM appendix B;
:func:`jaxbasics.gpt.config.flops_per_token`)::

    6·N + 12·L·T·d          N: parameters without position embeddings, L layers,
                            T sequence length, d width

MFU = tokens/s · FLOPs/token / peak, with peak the device's data-sheet dense bf16 figure on
known accelerators, else the best throughput of a large matmul measured in the same run (bf16
on an accelerator, fp32 on CPU; :func:`~jaxbasics.bench.device.peak_flops`): once before the
variants and again in every timing round beside them, so that a machine busy at one moment
does not lower the peak; an MFU still above 100 % is not given
(:func:`~jaxbasics.bench.results.set_mfu`).

Each variant also records the host process's minor page faults per step: on CPU, XLA takes
its buffer for a step's temporaries fresh from the allocator on every call (glibc hands a
block this large out by ``mmap``), and PyTorch its activations likewise, so every step first
touches tens of thousands of new pages.
"""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxbasics import timing
from jaxbasics.bench.device import (
    host_max_rss_bytes,
    minor_page_faults,
    peak_flops,
    peak_probe,
)
from jaxbasics.bench.results import set_mfu
from jaxbasics.compare.device import torch_device, torch_sync
from jaxbasics.gpt import sharding
from jaxbasics.gpt.config import GPT_CONFIG_124M, GPTConfig, flops_per_token, parameter_count
from jaxbasics.gpt.model import GPT, parameter_table
from jaxbasics.gpt.train import (
    TrainOptions,
    make_gpt_train_loop,
    make_gpt_train_step,
    make_optimizer,
    sharded_state,
)
from jaxbasics.params import split_params
from jaxbasics.timing import measure, measure_interleaved

#: size -> (config, batch size, timing repeats)
SIZES: dict[str, tuple[GPTConfig, int, int]] = {
    "smoke": (GPTConfig(vocab_size=512, context_length=64, emb_dim=64, n_heads=4, n_layers=2,
                        drop_rate=0.0), 4, 3),
    "cpu": (GPTConfig(vocab_size=8192, context_length=128, emb_dim=256, n_heads=4, n_layers=4,
                      drop_rate=0.0), 8, 5),
    # the chapter's GPT_CONFIG_124M; dropout off, as is usual when measuring throughput
    "full": (GPT_CONFIG_124M.replace(drop_rate=0.0), 16, 20),
}


def size_setting(size: str) -> tuple[GPTConfig, int, int]:
    """``(config, batch size, timing repeats)`` of ``size`` in :data:`SIZES`; a clear error for
    any other name."""
    if size not in SIZES:
        raise ValueError(f"size must be one of {', '.join(SIZES)}, got {size!r}")
    return SIZES[size]


def random_batch(cfg: GPTConfig, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(x, y)`` of shape (batch, context_length): uniform random token ids from ``seed``, y
    the next token of x."""
    ids = np.random.default_rng(seed).integers(0, cfg.vocab_size, (batch, cfg.context_length + 1))
    return ids[:, :-1].astype(np.int32), ids[:, 1:].astype(np.int32)


def _short(dtype: str | None) -> str:
    return {"bfloat16": "bf16", "float32": "fp32"}.get(dtype or "", str(dtype))


def _summary(step_us: float, tokens: int) -> dict[str, Any]:
    return {"step_ms": step_us / 1e3, "tokens_per_s": tokens / (step_us * 1e-6)}


@dataclass(frozen=True)
class Variant:
    """One way of running the step: framework, compute dtype and the knobs that matter."""

    name: str
    framework: str  # "jax" or "torch"
    dtype: str = "float32"  # compute dtype; parameters and optimizer state stay float32
    remat: bool | str = False  # JAX: see jaxbasics.gpt.model.GPT
    attention: str = "xla"  # JAX: see jaxbasics.gpt.attention
    compile: bool = False  # torch: through torch.compile
    steps_per_call: int = 1  # JAX: updates per compiled call (jaxbasics.gpt.train.make_gpt_train_loop)


#: updates per call of the ``_loop`` variants
LOOP = 4


def variants(platform: str, *, torch_side: bool = True, compile_torch: bool = True,
             bf16: bool = True) -> list[Variant]:
    """The variants run on ``platform``. Everywhere: JAX fp32 (plain and ``remat="dots"``),
    PyTorch eager and torch.compile fp32; off GPU also JAX fp32 ``remat="dots"`` with
    :data:`LOOP` updates per call. With bf16: JAX bf16; on GPU also JAX bf16 with
    ``remat="dots"``, with cuDNN flash attention and with :data:`LOOP` updates per call, and
    PyTorch in bf16 autocast (on CPU without bf16 matmul units those tell nothing)."""
    gpu = platform == "gpu"
    out = [Variant("jax_fp32", "jax"),
           # keep only matmul outputs for the backward pass: less memory traffic
           Variant("jax_fp32_remat_dots", "jax", remat="dots")]
    if not gpu:  # and four updates per call: one temporary buffer per call, not per step
        out.append(Variant(f"jax_fp32_remat_dots_loop{LOOP}", "jax", remat="dots",
                           steps_per_call=LOOP))
    if bf16:
        out.append(Variant("jax_bf16", "jax", dtype="bfloat16"))
        if gpu:
            out += [Variant("jax_bf16_remat_dots", "jax", dtype="bfloat16", remat="dots"),
                    Variant("jax_bf16_cudnn", "jax", dtype="bfloat16", attention="cudnn"),
                    Variant(f"jax_bf16_loop{LOOP}", "jax", dtype="bfloat16",
                            steps_per_call=LOOP)]
    if torch_side:
        out.append(Variant("torch_eager_fp32", "torch"))
        if compile_torch:
            out.append(Variant("torch_compile_fp32", "torch", compile=True))
        if bf16 and gpu:
            out.append(Variant("torch_eager_bf16", "torch", dtype="bfloat16"))
            if compile_torch:
                out.append(Variant("torch_compile_bf16", "torch", dtype="bfloat16", compile=True))
    return out


@dataclass
class Prepared:
    """A variant ready to time: ``run()`` does ``steps`` optimizer updates, ``sync(out)``
    waits for them."""

    run: Callable[[], Any]
    sync: Callable[[Any], Any]
    first_loss: float
    info: dict[str, Any]  # compile_s, memory
    steps: int = 1  # optimizer updates per run()


def prepare_jax(cfg: GPTConfig, batch: int, *, dtype: Any = jnp.float32,
                remat: bool | str = False, attention: str = "xla", mesh: Any = None,
                steps_per_call: int = 1) -> Prepared:
    """The jaxbasics train step (split state, donated buffers, blocks under lax.scan) for
    ``batch`` sequences, sharded over ``mesh`` when given, compiled and run once. With
    ``steps_per_call`` > 1, :func:`~jaxbasics.gpt.train.make_gpt_train_loop` over that many
    batches (the first the same as the single step's), each ``run()`` that many updates."""
    model = GPT(cfg, dtype=dtype, remat=remat, attention=attention, rngs=nnx.Rngs(0))
    graphdef, params = split_params(model)
    table = parameter_table(model)
    tx = make_optimizer(TrainOptions(steps=1000, warmup_steps=10, learning_rate=6e-4), table)
    opt_state = tx.init(params)
    shardings = None
    loop = steps_per_call > 1
    host = [random_batch(cfg, batch, seed=i) for i in range(steps_per_call)]
    data = (np.stack([h[0] for h in host]), np.stack([h[1] for h in host])) if loop else host[0]
    if mesh is None:
        x, y = (jnp.asarray(a) for a in data)
    else:
        params, opt_state, shardings = sharded_state(params, opt_state, tx, mesh, table)
        x, y = (sharding.global_batch(a, mesh, leading=int(loop)) for a in data)
    key = jnp.stack([jax.random.key(i) for i in range(steps_per_call)]) if loop \
        else jax.random.key(0)
    step = (make_gpt_train_loop if loop else make_gpt_train_step)(graphdef, tx,
                                                                  shardings=shardings)
    start = time.perf_counter()
    compiled = step.lower(params, opt_state, x, y, key).compile()
    info: dict[str, Any] = {"compile_s": time.perf_counter() - start}
    memory = compiled.memory_analysis()
    if memory is not None:  # XLA's buffer plan: live arguments, outputs and temporaries
        info["device_peak_bytes"] = int(memory.argument_size_in_bytes + memory.temp_size_in_bytes
                                        + memory.output_size_in_bytes - memory.alias_size_in_bytes)
    state = [params, opt_state]

    def run():
        state[0], state[1], metrics = compiled(state[0], state[1], x, y, key)
        return metrics["loss"]

    first = np.asarray(run())
    return Prepared(run, jax.block_until_ready, float(first[0] if loop else first), info,
                    steps=steps_per_call)


def prepare_torch(cfg: GPTConfig, batch: int, *, compile_model: bool = False,
                  dtype: str = "float32") -> Prepared:
    """The same step in PyTorch (eager, or the model through ``torch.compile``; bf16 by
    autocast), from the same initial weights as the JAX model; compiled and run once."""
    import torch
    import torch.nn.functional as F

    from jaxbasics.compare.torch_gpt import TorchGPT, adamw, load_from_flax

    device = torch_device()
    cuda = device == "cuda"
    model = TorchGPT(cfg)
    flax_model = GPT(cfg, rngs=nnx.Rngs(0))  # the JAX variants' initial weights
    load_from_flax(model, split_params(flax_model)[1], parameter_table(flax_model))
    model = model.to(device).train()
    opt = adamw(model, fused=True)
    x, y = (torch.from_numpy(a).long().to(device) for a in random_batch(cfg, batch))
    forward = torch.compile(model) if compile_model else model
    autocast = torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bfloat16")

    def run():
        opt.zero_grad(set_to_none=True)
        with autocast:
            logits = forward(x)
        loss = F.cross_entropy(logits.float().view(-1, cfg.vocab_size), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    if cuda:
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    first_loss = torch_sync(run()).item()
    info: dict[str, Any] = {"compile_s": time.perf_counter() - start} if compile_model else {}
    if cuda:
        info["device_peak_bytes"] = torch.cuda.max_memory_allocated()
    return Prepared(run, torch_sync, first_loss, info)


def prepare(cfg: GPTConfig, batch: int, variant: Variant) -> Prepared:
    """:func:`prepare_jax` or :func:`prepare_torch` for ``variant``."""
    if variant.framework == "jax":
        return prepare_jax(cfg, batch, dtype=jnp.dtype(variant.dtype), remat=variant.remat,
                           attention=variant.attention, steps_per_call=variant.steps_per_call)
    return prepare_torch(cfg, batch, compile_model=variant.compile, dtype=variant.dtype)


def time_jax_step(cfg: GPTConfig, batch: int, *, dtype: Any = jnp.float32,
                  remat: bool | str = False, mesh: Any = None, repeats: int = 5
                  ) -> dict[str, Any]:
    """:func:`prepare_jax` timed alone: ``{"median_us", "compile_s", "first_loss"}``."""
    p = prepare_jax(cfg, batch, dtype=dtype, remat=remat, mesh=mesh)
    t = measure(p.run, warmup=2, repeats=repeats, min_sample_s=0.0)
    return {"median_us": t.median_us, "compile_s": p.info["compile_s"],
            "first_loss": p.first_loss}


def page_faults_per_step(prepared: Prepared, steps: int = 2) -> float:
    """Minor page faults of the host process per optimizer update of ``prepared``, over
    ``steps`` calls run after the timing: how much of each step's memory comes fresh from the
    OS (on CPU, a step's buffers; elsewhere, host-side work only)."""
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    start = minor_page_faults()
    for _ in range(steps):
        prepared.sync(prepared.run())
    return (minor_page_faults() - start) / (steps * prepared.steps)


def select_variants(chosen: list[Variant], patterns: Sequence[str] | None) -> list[Variant]:
    """The variants of ``chosen`` whose names match one of the shell-style ``patterns``
    (``"jax_bf16*"``, ``"*fp32*"``), in their order; all of them for ``None``. A pattern that
    matches none of them is refused with the names there are to choose from."""
    if patterns is None:
        return chosen
    if isinstance(patterns, str) or not patterns:
        raise ValueError(f"variants must be a non-empty list of name patterns, got {patterns!r}")
    names = [v.name for v in chosen]
    unmatched = [p for p in patterns if not fnmatch.filter(names, p)]
    if unmatched:
        raise ValueError(f"variants: {', '.join(map(repr, unmatched))} matches none of this "
                         f"run's variants: {', '.join(names)}")
    return [v for v in chosen if any(fnmatch.fnmatchcase(v.name, p) for p in patterns)]


def run_gpt2(size: str, *, torch_side: bool = True, compile_torch: bool = True,
             bf16: bool = True, platform: str | None = None,
             only: Sequence[str] | None = None,
             on_group: Callable[[dict[str, Any]], Any] | None = None,
             log: Callable[[str], Any] | None = None) -> dict[str, Any]:
    """Every variant of :func:`variants` for ``size``, prepared (compiled, run once) one after
    another, then timed in turn (:func:`~jaxbasics.timing.measure_interleaved`) so that the
    machine's drift in speed during the run is shared fairly between them.

    Variants are timed in groups, one per dtype that PyTorch also runs in (:func:`_groups`):
    on GPU fp32 and bf16, each with its PyTorch baseline; elsewhere one group. A group's
    variants are released before the next is prepared, so that at GPT-2 124M a GPU holds one
    group's weights, optimizer states and allocator pools at a time, not all ten variants'.

    ``platform`` picks the variant set (default: that of JAX's default device). Naming
    ``"gpu"`` on a CPU rehearses the accelerator run end to end: every variant runs on the CPU
    except the cuDNN one, which is recorded with its error, as any variant that cannot run
    where it is asked to, or runs out of device memory (JAX's plain XLA variants excepted:
    any other failure of theirs is raised).

    ``only`` keeps the variants whose names match one of its patterns
    (:func:`select_variants`), checked before anything is compiled, so that a long run can be
    split over several processes (one per group, say) and the results joined with
    :func:`~jaxbasics.bench.results.merge_results`. ``on_group`` is called with the result so
    far (``"complete": False``) after each group but the last, for a caller that saves it
    as it goes; ``log`` with a line as each variant is prepared."""
    cfg, batch, repeats = size_setting(size)
    if platform not in (None, "cpu", "gpu", "tpu"):
        raise ValueError(f"platform must be None, 'cpu', 'gpu' or 'tpu', got {platform!r}")
    chosen = select_variants(variants(platform or timing.default_device().platform,
                                      torch_side=torch_side, compile_torch=compile_torch,
                                      bf16=bf16), only)
    peak, peak_source = peak_flops()
    probe = peak_probe()  # None for a data-sheet peak
    groups = _groups(chosen)
    result: dict[str, Any] = {
        "config": cfg.to_dict(), "batch_size": batch, "seq_len": cfg.context_length,
        "parameters": parameter_count(cfg), "flops_per_token": flops_per_token(cfg),
        "peak_flops": peak, "peak_source": peak_source, "timing": "interleaved",
        "variant_set": platform or timing.default_device().platform,
        "timing_groups": [[v.name for v in g] for g in groups], "complete": False,
        "variants": {}}
    out = result["variants"]
    if probe is not None:
        result["peak_flops_before"], result["peak_flops_in_rounds"] = peak, []
    for i, group in enumerate(groups):
        entries, round_peak = _time_group(cfg, batch, group, repeats, probe, log=log)
        out.update(entries)
        if round_peak is not None:  # the best matmul seen so far is the peak
            result["peak_flops_in_rounds"].append(round_peak)
            result["peak_flops"] = max(result["peak_flops"], round_peak)
        set_mfu(result)
        _release_device_memory()  # the group's variants are gone with _time_group's frame
        _add_speedups(out)
        if on_group is not None and i + 1 < len(groups):
            on_group(result)
    result["host_max_rss_bytes"] = host_max_rss_bytes()
    result["complete"] = True
    return result


def _add_speedups(out: dict[str, Any]) -> None:
    """Set each timed variant's ``speedup_vs_torch_eager``: against PyTorch eager in its dtype
    where that ran, else in float32 (timed in the same group: :func:`_groups`)."""
    for entry in out.values():
        base = [out[n] for n in (f"torch_eager_{_short(entry.get('dtype'))}", "torch_eager_fp32")
                if n in out and "step_ms" in out[n]]
        if "step_ms" in entry and base:
            entry["speedup_vs_torch_eager"] = base[0]["step_ms"] / entry["step_ms"]


def _time_group(cfg: GPTConfig, batch: int, group: list[Variant], repeats: int,
                probe: tuple[Callable[[], Any], float] | None,
                log: Callable[[str], Any] | None = None) -> tuple[dict[str, Any], float | None]:
    """Prepare ``group``'s variants one after another, time them in turn, and return each one's
    entry (its error where it could not run; MFU is set by the caller), and the FLOP/s of the
    ``probe`` matmul (:func:`~jaxbasics.bench.device.peak_probe`), timed in the same rounds
    as the variants (None without a probe). Running out of device memory while the group is
    timed (each variant ran alone once, but not all of them in turn) is recorded as every
    variant's error, and the run goes on with the next group."""
    out: dict[str, Any] = {}
    ready: dict[str, Prepared] = {}
    for v in group:
        if log is not None:
            log(f"gpt2: compiling and running {v.name} once")
        try:
            p = prepare(cfg, batch, v)
        except Exception as err:  # report, do not hide, a variant that cannot run here
            if v.framework == "jax" and v.attention == "xla" and not _out_of_memory(err):
                raise
            out[v.name] = {"error": f"{type(err).__name__}: {err}"[:300]}
            continue
        ready[v.name] = p
        out[v.name] = {"framework": v.framework, "dtype": v.dtype, "remat": v.remat,
                       "steps_per_call": v.steps_per_call,
                       "attention": v.attention if v.framework == "jax" else "sdpa",
                       "compiled": v.compile or v.framework == "jax",
                       "first_loss": p.first_loss, **p.info}
    if not ready:
        return out, None
    tokens = batch * cfg.context_length
    fns: dict[str, Callable[[], Any]] = {n: p.run for n, p in ready.items()}
    if probe is not None:
        fns[_PROBE] = probe[0]
    try:
        times = measure_interleaved(fns, syncs={n: p.sync for n, p in ready.items()}, warmup=2,
                                    repeats=repeats, min_sample_s=0.0)
    except Exception as err:  # the group together outgrew the device: the next group may fit
        if not _out_of_memory(err):
            raise
        error = f"timing the group {', '.join(ready)}: {type(err).__name__}: {err}"[:300]
        for name in ready:
            out[name]["error"] = error
        return out, None
    round_peak = None if probe is None else probe[1] / (times.pop(_PROBE).min_us * 1e-6)
    for name, t in times.items():  # per optimizer update: a call's time over its updates
        k = ready[name].steps
        out[name].update(_summary(t.median_us / k, tokens),
                         step_ms_min=t.min_us / k / 1e3, step_ms_max=t.max_us / k / 1e3,
                         host_page_faults_per_step=page_faults_per_step(ready[name]))
    return out, round_peak


_PROBE = "peak matmul"  # the peak probe's name among the timed functions


def _groups(chosen: list[Variant]) -> list[list[Variant]]:
    """``chosen`` split into timing groups: one per dtype that a PyTorch variant runs in, each
    variant in the group of its dtype (of float32 where PyTorch does not run in its dtype, so
    that it is timed beside the baseline it is compared with), in the order given."""
    torch_dtypes = {v.dtype for v in chosen if v.framework == "torch"}
    key = [v.dtype if v.dtype in torch_dtypes else "float32" for v in chosen]
    return [[v for v, k in zip(chosen, key, strict=True) if k == d] for d in dict.fromkeys(key)]


def _out_of_memory(err: Exception) -> bool:
    """True for a device allocation failure (XLA's RESOURCE_EXHAUSTED): the machine's limit,
    recorded as the variant's result, not a fault of the code."""
    return "RESOURCE_EXHAUSTED" in str(err) or "out of memory" in str(err).lower()


def _release_device_memory() -> None:
    """Let a finished group's buffers go: collect them, and hand PyTorch's cached GPU blocks
    back (JAX's freed buffers return to its own pool, which the next group reuses)."""
    import gc
    import sys

    gc.collect()
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()
