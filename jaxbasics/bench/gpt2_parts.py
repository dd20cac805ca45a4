"""Where the GPT-2 training step's time goes: its three parts timed alone, JAX against
PyTorch, from the same weights and inputs (the step of :mod:`jaxbasics.bench.gpt2`, taken
apart), and inside the blocks the attention alone.

* ``blocks``: the n_layers transformer blocks, forward and backward, for
  ``s = Σ h_L ⊙ r`` with ``h_L = blocks(h_0)``, h_0 and r fixed (B, T, d) arrays; gradients
  for every block parameter and for h_0. JAX: one ``lax.scan`` over the stacked blocks with
  the training step's remat setting (``resolve_remat("auto")``); PyTorch: its module loop.
* ``attention``: inside each block, causal attention alone, forward and backward, for
  ``s = Σ attention(q, k, v) ⊙ r`` with q, k, v, r fixed (B, T, H, hd) arrays; gradients for
  q, k and v. JAX: :func:`jaxbasics.gpt.attention.causal_attention`; PyTorch:
  ``scaled_dot_product_attention(..., is_causal=True)``, as its model calls it.
* ``head_loss``: final hidden states h (B·T, d) → logits h·W (B·T, V) → mean cross-entropy
  against the batch's labels; gradients for h and W.
* ``update``: global-norm clipping and AdamW on every parameter, from fixed gradients
  (optax in place with donated buffers; PyTorch's fused AdamW).

Each part's first value (``s``, the loss, the parameters' global norm after one update) is
recorded for both frameworks: equal values show that the same computation is being timed.

Below the parts, the matmul kernels themselves: for each projection of the step (x (M, k)
tokens times a (k, n) weight W, M = B·T) the products that training runs::

    forward       x·W      (M, k)·(k, n)     both frameworks: the layer's output
    input_grad    g·Wᵀ     (M, n)·(n, k)     g = dL/d(output)
    weight_grad   xᵀ·g     (k, M)·(M, n)     PyTorch forms gᵀ·x, its weight being stored (n, k)
    weight_grad_transposed                   the same, JAX from an explicit transpose first,
                                             as jaxbasics.gpt.matmul runs it on CPU

each timed alone in both frameworks on the same numbers (GFLOP/s = 2·M·k·n / time), with the
relative difference ‖a − b‖ / ‖b‖ of the two results, and summed as one step runs them
(``per_step``). Each sample is one call, waited for; at the smoke size a kernel takes
microseconds and what is timed is mostly each framework's per-call overhead.

Then attention's batched products, over n = B·H heads of (T, hd) queries, keys, values and
(T, T) weights p, each form timed alone (:data:`ATTENTION_PRODUCTS`)::

    q·kᵀ     (T, hd)·(hd, T)   the scores; the backward's g·vᵀ has the same form
    p·v      (T, T)·(T, hd)    the output; the backward's ds·k too
    pᵀ·g     (T, T)ᵀ·(T, hd)   the gradients of v and k (dsᵀ·q): T contracted in both

On CPU these show what the whole-step numbers hide: XLA:CPU runs a batched product whose
single (T, hd) matrices are this small on one thread, where PyTorch splits the batch over
its threads.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from jaxbasics.bench.gpt2 import random_batch, size_setting
from jaxbasics.compare.device import torch_device, torch_sync
from jaxbasics.gpt import matmul
from jaxbasics.gpt.attention import causal_attention
from jaxbasics.gpt.model import GPT, parameter_table, scan_blocks
from jaxbasics.gpt.train import decay_mask, resolve_remat
from jaxbasics.losses import cross_entropy
from jaxbasics.params import split_params
from jaxbasics.timing import measure_interleaved

PARTS = ("blocks", "attention", "head_loss", "update")
PRODUCTS = ("forward", "input_grad", "weight_grad", "weight_grad_transposed")
# attention's batched products: name -> the einsum over n = B·H heads (module docstring)
ATTENTION_PRODUCTS = {"q·kᵀ": "nqd,nkd->nqk", "p·v": "nqk,nkd->nqd", "pᵀ·g": "nqk,nqd->nkd"}


def projections(cfg) -> dict[str, tuple[int, int]]:
    """The step's projections as ``{name: (k, n)}``, the weight's (inputs, outputs)."""
    d = cfg.emb_dim
    return {"qkv": (d, 3 * d), "attn_proj": (d, d), "mlp_fc": (d, 4 * d),
            "mlp_proj": (4 * d, d), "head": (d, cfg.vocab_size)}


def _inputs(cfg, batch: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(1)
    shape = (batch, cfg.context_length, cfg.emb_dim)
    heads = (batch, cfg.context_length, cfg.n_heads, cfg.head_dim)
    return {"h0": rng.standard_normal(shape, np.float32),
            "r": rng.standard_normal(shape, np.float32),
            **{name: rng.standard_normal(heads, np.float32) for name in ("q", "k", "v", "r_att")},
            "h": rng.standard_normal((batch * cfg.context_length, cfg.emb_dim), np.float32),
            "y": random_batch(cfg, batch)[1].reshape(-1)}


def _jax_parts(cfg, params: Any, graphdef: Any, table: Any, data: dict[str, np.ndarray]
               ) -> dict[str, tuple[Callable[[], Any], float]]:
    """``{part: (run, first value)}`` for JAX."""
    remat = resolve_remat("auto")
    h0, r, h, y = (jnp.asarray(data[k]) for k in ("h0", "r", "h", "y"))
    blocks_gd, _ = nnx.split(nnx.merge(graphdef, params).blocks)

    def blocks_value(block_params, x):
        out, _ = scan_blocks(nnx.merge(blocks_gd, block_params), x, remat=remat)
        return jnp.sum(out * r)

    blocks = jax.jit(jax.value_and_grad(blocks_value, argnums=(0, 1)))
    q, k, v, r_att = (jnp.asarray(data[name]) for name in ("q", "k", "v", "r_att"))
    attention = jax.jit(jax.value_and_grad(
        lambda q, k, v: jnp.sum(causal_attention(q, k, v) * r_att), argnums=(0, 1, 2)))
    head = jax.jit(jax.value_and_grad(lambda hh, w: cross_entropy(hh @ w, y), argnums=(0, 1)))
    w = params["head"]["kernel"]
    # PyTorch's AdamW as jaxbasics.compare.torch_gpt.adamw sets it up: constant lr 6e-4
    tx = optax.chain(optax.clip_by_global_norm(1.0),
                     optax.adamw(6e-4, b1=0.9, b2=0.95, weight_decay=0.1,
                                 mask=decay_mask(table)))

    def update(p, o, g):
        updates, o = tx.update(g, o, p)
        return optax.apply_updates(p, updates), o

    update = jax.jit(update, donate_argnums=(0, 1))
    grads = jax.tree.map(lambda a: jnp.full_like(a, 1e-3), params)
    start = jax.tree.map(jnp.copy, params)  # the update donates its parameters
    state = [start, tx.init(start)]

    def run_update():
        state[0], state[1] = update(state[0], state[1], grads)
        return state[0]

    first = {"blocks": float(blocks(params["blocks"], h0)[0]),
             "attention": float(attention(q, k, v)[0]), "head_loss": float(head(h, w)[0]),
             "update": float(optax.tree.norm(run_update()))}
    return {"blocks": (lambda: blocks(params["blocks"], h0), first["blocks"]),
            "attention": (lambda: attention(q, k, v), first["attention"]),
            "head_loss": (lambda: head(h, w), first["head_loss"]),
            "update": (run_update, first["update"])}


def _torch_parts(cfg, params: Any, table: Any, data: dict[str, np.ndarray]
                 ) -> dict[str, tuple[Callable[[], Any], float]]:
    """``{part: (run, first value)}`` for PyTorch (CPU or CUDA)."""
    import torch
    import torch.nn.functional as F

    from jaxbasics.compare.torch_gpt import TorchGPT, adamw, load_from_flax

    device = torch_device()

    def fresh_model() -> TorchGPT:
        model = TorchGPT(cfg)
        load_from_flax(model, params, table)
        return model.to(device).train()

    model = fresh_model()
    h0, r, h = (torch.from_numpy(data[k]).to(device) for k in ("h0", "r", "h"))
    h0.requires_grad_(True)
    h.requires_grad_(True)
    y = torch.from_numpy(data["y"]).long().to(device)
    assert model.head is not None  # untied: run_gpt2_parts refuses a tied config
    w = model.head.weight  # (V, d)
    q, k, v, r_att = (torch.from_numpy(data[name]).to(device) for name in ("q", "k", "v", "r_att"))
    for t in (q, k, v):
        t.requires_grad_(True)

    def blocks():
        model.zero_grad(set_to_none=True)
        h0.grad = None
        out = h0
        for block in model.blocks:
            out = block(out)
        s = (out * r).sum()
        s.backward()
        return s

    def attention():
        q.grad = k.grad = v.grad = None
        # (B, T, H, hd) seen as (B, H, T, hd), as the model's attention does
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                             v.transpose(1, 2), is_causal=True)
        s = (out.transpose(1, 2) * r_att).sum()
        s.backward()
        return s

    def head():
        h.grad = w.grad = None
        loss = F.cross_entropy(h @ w.T, y)
        loss.backward()
        return loss

    # the update works on its own copy: blocks() and head() clear and replace the gradients
    # of `model` on every call, after which an optimizer step would skip those parameters
    stepped = fresh_model()
    opt = adamw(stepped, fused=True)
    for p in stepped.parameters():
        p.grad = torch.full_like(p, 1e-3)

    def update():
        torch.nn.utils.clip_grad_norm_(stepped.parameters(), 1.0)
        opt.step()

    first = {"blocks": blocks().item(), "attention": attention().item(), "head_loss": head().item()}
    update()
    with torch.no_grad():
        first["update"] = float(torch.sqrt(torch.stack([(p.double() ** 2).sum()
                                                        for p in stepped.parameters()]).sum()))
    run = {"blocks": blocks, "attention": attention, "head_loss": head, "update": update}
    return {part: (run[part], first[part]) for part in PARTS}


def run_matmuls(cfg, tokens: int, *, repeats: int) -> list[dict[str, Any]]:
    """The matmul kernels of the step (module docstring) for ``tokens`` = B·T rows, JAX and
    PyTorch timed in turn; one row per projection and product."""
    import torch

    device = torch_device()
    rng = np.random.default_rng(2)
    fns: dict[str, Callable] = {}
    syncs: dict[str, Callable] = {}
    rows: list[dict[str, Any]] = []
    for name, (k, n) in projections(cfg).items():
        x = rng.standard_normal((tokens, k), np.float32)
        w = rng.standard_normal((k, n), np.float32) / math.sqrt(k)
        g = rng.standard_normal((tokens, n), np.float32)
        jx, jw, jg = (jnp.asarray(a) for a in (x, w, g))
        # PyTorch holds a Linear weight as (out, in) = Wᵀ, contiguous
        tx, twt, tg = (torch.from_numpy(np.ascontiguousarray(a)).to(device) for a in (x, w.T, g))
        jax_fns = {"forward": (jax.jit(lambda x, w: x @ w), (jx, jw)),
                   "input_grad": (jax.jit(lambda g, w: g @ w.T), (jg, jw)),
                   "weight_grad": (jax.jit(lambda x, g: x.T @ g), (jx, jg)),
                   # as jaxbasics.gpt.matmul computes it on CPU: transpose first, then multiply
                   "weight_grad_transposed": (jax.jit(matmul.weight_grad), (jx, jg))}
        torch_fns = {"forward": lambda tx=tx, twt=twt: tx @ twt.T,
                     "input_grad": lambda tg=tg, twt=twt: tg @ twt,
                     "weight_grad": lambda tg=tg, tx=tx: tg.T @ tx}
        for product in PRODUCTS:
            f, args = jax_fns[product]
            key = f"{name} {product}"
            fns[f"jax {key}"], syncs[f"jax {key}"] = (lambda f=f, a=args: f(*a)), jax.block_until_ready
            if product in torch_fns:  # PyTorch has one weight gradient: both rows share it
                fns[f"torch {key}"], syncs[f"torch {key}"] = torch_fns[product], torch_sync
            # float32 on the host: the 124M head's products are 3 GB each
            a = np.asarray(fns[f"jax {key}"]())
            b = torch_fns.get(product, torch_fns["weight_grad"])().cpu().numpy()
            b = b.T if product.startswith("weight_grad") else b  # PyTorch's is dWᵀ
            m_k_n = {"forward": (tokens, k, n), "input_grad": (tokens, n, k)}.get(
                product, (k, tokens, n))
            rows.append({"matmul": name, "product": product, "m_k_n": list(m_k_n),
                         "rel_diff": float(np.linalg.norm(a - b) / np.linalg.norm(b))})
    # one call per sample, waited for, like the parts: a kernel of a few ms then carries one
    # dispatch (~30 µs for JAX)
    times = measure_interleaved(fns, syncs=syncs, warmup=2, repeats=3 * repeats,
                                min_sample_s=0.0)
    for row in rows:
        torch_key = f"torch {row['matmul']} {row['product'].removesuffix('_transposed')}"
        row.update(_rates(2 * math.prod(row["m_k_n"]),
                          times[f"jax {row['matmul']} {row['product']}"].median_us,
                          times[torch_key].median_us))
    return rows


def run_attention_matmuls(cfg, batch: int, *, repeats: int) -> list[dict[str, Any]]:
    """Attention's batched products (:data:`ATTENTION_PRODUCTS`, module docstring) over n =
    B·H heads, JAX and PyTorch timed in turn on the same numbers; one row per form with
    ``{"product", "einsum", "batch", "m_k_n", "jax_ms", "torch_ms", "jax_gflops",
    "torch_gflops", "speedup_vs_torch", "rel_diff"}``, GFLOP/s = 2·n·m·k·n_out / time."""
    import torch

    device = torch_device()
    rng = np.random.default_rng(3)
    n, seq, hd = batch * cfg.n_heads, cfg.context_length, cfg.head_dim
    fns, syncs, rows = {}, {}, []
    for name, spec in ATTENTION_PRODUCTS.items():
        lhs = (n, seq, hd) if name == "q·kᵀ" else (n, seq, seq)
        a, b = (rng.standard_normal(shape, np.float32) for shape in (lhs, (n, seq, hd)))
        f = jax.jit(lambda x, y, spec=spec: jnp.einsum(spec, x, y))
        ja, jb = jnp.asarray(a), jnp.asarray(b)
        ta, tb = (torch.from_numpy(x).to(device) for x in (a, b))
        fns[f"jax {name}"] = lambda f=f, x=ja, y=jb: f(x, y)
        fns[f"torch {name}"] = lambda spec=spec, x=ta, y=tb: torch.einsum(spec, x, y)
        syncs[f"jax {name}"], syncs[f"torch {name}"] = jax.block_until_ready, torch_sync
        ours, theirs = np.asarray(fns[f"jax {name}"]()), fns[f"torch {name}"]().cpu().numpy()
        rows.append({"product": name, "einsum": spec, "batch": n,
                     "m_k_n": [seq, hd, seq] if name == "q·kᵀ" else [seq, seq, hd],
                     "rel_diff": float(np.linalg.norm(ours - theirs) / np.linalg.norm(theirs))})
    times = measure_interleaved(fns, syncs=syncs, warmup=2, repeats=3 * repeats,
                                min_sample_s=0.0)
    for row in rows:
        row.update(_rates(2 * row["batch"] * math.prod(row["m_k_n"]),
                          times[f"jax {row['product']}"].median_us,
                          times[f"torch {row['product']}"].median_us))
    return rows


def _rates(flops: float, jax_us: float, torch_us: float) -> dict[str, float]:
    """A kernel row's times (ms), rates (GFLOP/s) and JAX's speed-up over PyTorch."""
    return {"jax_ms": jax_us / 1e3, "torch_ms": torch_us / 1e3, "jax_gflops": flops / jax_us / 1e3,
            "torch_gflops": flops / torch_us / 1e3, "speedup_vs_torch": torch_us / jax_us}


def run_gpt2_parts(size: str, *, repeats: int | None = None) -> dict[str, Any]:
    """Time the four parts (module docstring) for ``size`` of :data:`~jaxbasics.bench.gpt2.SIZES`
    in both frameworks, interleaved, then the step's matmul kernels and attention's batched
    products; returns ``{"config", "batch_size", "remat", "parts": {part: {"jax_ms",
    "torch_ms", "jax_value", "torch_value", "speedup_vs_torch"}}, "matmuls": [{"matmul",
    "product", "m_k_n", "jax_ms", "torch_ms", "jax_gflops", "torch_gflops",
    "speedup_vs_torch", "rel_diff"}], "matmuls_per_step": :func:`per_step`,
    "attention_matmuls": :func:`run_attention_matmuls`}``."""
    cfg, batch, default_repeats = size_setting(size)
    repeats = repeats or default_repeats
    if cfg.tie_embeddings:
        raise ValueError("gpt2 parts time an untied head; the sizes' configs are untied")
    model = GPT(cfg, rngs=nnx.Rngs(0))
    graphdef, params = split_params(model)
    table = parameter_table(model)
    data = _inputs(cfg, batch)
    jax_parts = _jax_parts(cfg, params, graphdef, table, data)
    torch_parts = _torch_parts(cfg, params, table, data)
    fns, syncs = {}, {}
    for part in PARTS:
        fns[f"jax {part}"], syncs[f"jax {part}"] = jax_parts[part][0], jax.block_until_ready
        fns[f"torch {part}"], syncs[f"torch {part}"] = torch_parts[part][0], torch_sync
    times = measure_interleaved(fns, syncs=syncs, warmup=2,
                                repeats=repeats, min_sample_s=0.0)
    parts = {}
    for part in PARTS:
        j, t = times[f"jax {part}"].median_us / 1e3, times[f"torch {part}"].median_us / 1e3
        parts[part] = {"jax_ms": j, "torch_ms": t, "speedup_vs_torch": t / j,
                       "jax_value": jax_parts[part][1], "torch_value": torch_parts[part][1]}
    matmuls = run_matmuls(cfg, batch * cfg.context_length, repeats=repeats)
    return {"config": cfg.to_dict(), "batch_size": batch, "seq_len": cfg.context_length,
            "remat": resolve_remat("auto"), "timing": "interleaved", "parts": parts,
            "matmuls": matmuls, "matmuls_per_step": per_step(matmuls, cfg.n_layers),
            "attention_matmuls": run_attention_matmuls(cfg, batch, repeats=repeats)}


def per_step(matmuls: list[dict[str, Any]], n_layers: int,
             backend: str | None = None) -> dict[str, dict[str, float]]:
    """The kernels' times as one training step runs them (each block projection n_layers
    times, the head once; the weight gradient in the form :mod:`jaxbasics.gpt.matmul` uses on
    ``backend``), summed by product and over all: ``{product or "all": {"jax_ms",
    "torch_ms", "speedup_vs_torch"}}``."""
    run = ("forward", "input_grad",
           "weight_grad_transposed" if matmul.active(backend) else "weight_grad")
    out: dict[str, dict[str, float]] = {}
    for key in (*run, "all"):
        rows = [r for r in matmuls if r["product"] in run and key in ("all", r["product"])]
        j, t = (sum(r[f] * (1 if r["matmul"] == "head" else n_layers) for r in rows)
                for f in ("jax_ms", "torch_ms"))
        out[key] = {"jax_ms": j, "torch_ms": t, "speedup_vs_torch": t / j}
    return out
