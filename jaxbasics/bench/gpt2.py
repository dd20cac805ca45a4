"""GPT-2 training-step benchmark: forward + backward + clipped AdamW on one batch.

Model FLOPs per token (Kaplan et al. 2020; PaLM appendix B)::

    6·N + 12·L·H·Q·T        N: parameters without position embeddings, L layers,
                            H heads of Q dims, T sequence length

MFU = tokens/s · FLOPs/token / peak, with peak the device's data-sheet dense bf16 figure on
accelerators and a large matmul measured in the same run on CPU.
"""

from __future__ import annotations

import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxbasics import sharding
from jaxbasics.bench.device import measured_matmul_peak, peak_memory_bytes, table_peak_flops
from jaxbasics.config import GPT_CONFIG_124M, GPTConfig, parameter_count
from jaxbasics.gpt import GPT
from jaxbasics.gpt_train import TrainOptions, make_gpt_train_step, make_optimizer, sharded_state
from jaxbasics.timing import measure
from jaxbasics.train_step import split_params

#: size -> (config, batch size, timing repeats)
SIZES: dict[str, tuple[GPTConfig, int, int]] = {
    "smoke": (GPTConfig(vocab_size=512, context_length=64, emb_dim=64, n_heads=4, n_layers=2,
                        drop_rate=0.0), 4, 3),
    "cpu": (GPTConfig(vocab_size=8192, context_length=128, emb_dim=256, n_heads=4, n_layers=4,
                      drop_rate=0.0), 8, 5),
    # the chapter's GPT_CONFIG_124M; dropout off, as is usual when measuring throughput
    "full": (GPT_CONFIG_124M.replace(drop_rate=0.0), 16, 20),
}


def flops_per_token(cfg: GPTConfig, seq_len: int | None = None) -> float:
    """``6·N + 12·L·H·Q·T`` (module docstring) for ``cfg`` at sequence length ``seq_len``."""
    t = cfg.context_length if seq_len is None else seq_len
    n = parameter_count(cfg, include_position=False)
    return 6 * n + 12 * cfg.n_layers * cfg.n_heads * cfg.head_dim * t


def _batch(cfg: GPTConfig, batch: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    ids = np.random.default_rng(seed).integers(0, cfg.vocab_size, (batch, cfg.context_length + 1))
    return ids[:, :-1].astype(np.int32), ids[:, 1:].astype(np.int32)


def _summary(step_us: float, tokens: int, fpt: float, peak: float | None) -> dict[str, Any]:
    tps = tokens / (step_us * 1e-6)
    return {"step_ms": step_us / 1e3, "tokens_per_s": tps,
            "mfu": None if peak is None else tps * fpt / peak}


def time_jax_step(cfg: GPTConfig, batch: int, *, dtype: Any = jnp.float32,
                  remat: bool | str = False, mesh: Any = None, repeats: int = 5
                  ) -> dict[str, Any]:
    """The jaxbasics train step (split state, donated buffers, blocks under lax.scan) for
    ``batch`` sequences, sharded over ``mesh`` when given: ``{"median_us", "compile_s",
    "first_loss"}``."""
    graphdef, params = split_params(GPT(cfg, dtype=dtype, remat=remat, rngs=nnx.Rngs(0)))
    tx = make_optimizer(TrainOptions(steps=1000, warmup_steps=10, learning_rate=6e-4))
    opt_state = tx.init(params)
    shardings = None
    if mesh is None:
        x, y = (jnp.asarray(a) for a in _batch(cfg, batch))
    else:
        params, opt_state, shardings = sharded_state(params, opt_state, tx, mesh)
        x, y = (sharding.global_batch(a, mesh) for a in _batch(cfg, batch))
    key = jax.random.key(0)
    step = make_gpt_train_step(graphdef, tx, shardings=shardings)
    start = time.perf_counter()
    compiled = step.lower(params, opt_state, x, y, key).compile()
    compile_s = time.perf_counter() - start
    state = [params, opt_state]

    def run():
        state[0], state[1], metrics = compiled(state[0], state[1], x, y, key)
        return metrics["loss"]

    first_loss = float(run())
    t = measure(run, warmup=2, repeats=repeats, min_sample_s=0.0)
    return {"median_us": t.median_us, "compile_s": compile_s, "first_loss": first_loss}


def time_jax(cfg: GPTConfig, batch: int, *, dtype: Any, repeats: int, peak: float | None,
             remat: bool | str = False) -> dict[str, Any]:
    """:func:`time_jax_step` on one device, summarised as step time, tokens/s and MFU."""
    t = time_jax_step(cfg, batch, dtype=dtype, remat=remat, repeats=repeats)
    return {**_summary(t["median_us"], batch * cfg.context_length, flops_per_token(cfg), peak),
            "compile_s": t["compile_s"], "first_loss": t["first_loss"], **peak_memory_bytes()}


def time_torch(cfg: GPTConfig, batch: int, *, compile_model: bool, repeats: int,
               peak: float | None) -> dict[str, Any]:
    """The same step in PyTorch: eager, or with the model through ``torch.compile``."""
    import torch
    import torch.nn.functional as F

    from jaxbasics.compare.torch_gpt import TorchGPT, adamw, load_from_flax

    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = TorchGPT(cfg)
    load_from_flax(model, split_params(GPT(cfg, rngs=nnx.Rngs(0)))[1])  # same start as JAX
    model = model.to(device).train()
    opt = adamw(model)
    x, y = (torch.from_numpy(a).long().to(device) for a in _batch(cfg, batch))
    forward = torch.compile(model) if compile_model else model

    def sync(out):
        if device == "cuda":
            torch.cuda.synchronize()
        return out

    def run():
        opt.zero_grad(set_to_none=True)
        loss = F.cross_entropy(forward(x).view(-1, cfg.vocab_size), y.view(-1))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        return loss

    start = time.perf_counter()
    first_loss = sync(run()).item()
    first_s = time.perf_counter() - start
    t = measure(run, sync=sync, warmup=2, repeats=repeats, min_sample_s=0.0)
    out = {**_summary(t.median_us, batch * cfg.context_length, flops_per_token(cfg), peak),
           "first_loss": first_loss}
    if compile_model:
        out["compile_s"] = first_s
    if device == "cuda":
        out["device_peak_bytes"] = torch.cuda.max_memory_allocated()
    return out


def run_gpt2(size: str, *, torch_side: bool = True, compile_torch: bool = True,
             bf16: bool = True) -> dict[str, Any]:
    """All variants for ``size``: JAX fp32 (plain and with ``remat="dots"``) and bf16, torch
    eager and torch.compile."""
    cfg, batch, repeats = SIZES[size]
    kind = jax.devices()[0].device_kind
    peak = table_peak_flops(kind)
    peak_source = "data sheet, dense bf16"
    if peak is None:
        peak, peak_source = measured_matmul_peak(), "measured 2048² fp32 matmul, this run"
    result: dict[str, Any] = {
        "config": cfg.to_dict(), "batch_size": batch, "seq_len": cfg.context_length,
        "parameters": parameter_count(cfg), "flops_per_token": flops_per_token(cfg),
        "peak_flops": peak, "peak_source": peak_source, "variants": {}}
    v = result["variants"]
    v["jax_fp32"] = time_jax(cfg, batch, dtype=jnp.float32, repeats=repeats, peak=peak)
    # keep only matmul outputs for the backward pass: less memory traffic, faster on CPU
    v["jax_fp32_remat_dots"] = time_jax(cfg, batch, dtype=jnp.float32, repeats=repeats,
                                        peak=peak, remat="dots")
    if bf16:
        v["jax_bf16"] = time_jax(cfg, batch, dtype=jnp.bfloat16, repeats=repeats, peak=peak)
    if torch_side:
        v["torch_eager_fp32"] = time_torch(cfg, batch, compile_model=False, repeats=repeats,
                                           peak=peak)
        if compile_torch:
            try:
                v["torch_compile_fp32"] = time_torch(cfg, batch, compile_model=True,
                                                     repeats=repeats, peak=peak)
            except Exception as err:  # report, do not hide, a torch.compile failure
                v["torch_compile_fp32"] = {"error": f"{type(err).__name__}: {err}"[:300]}
        eager = v["torch_eager_fp32"]["step_ms"]
        for entry in v.values():
            if "step_ms" in entry:
                entry["speedup_vs_torch_eager"] = eager / entry["step_ms"]
    return result
