"""Causal scaled dot-product attention: the computation inside GPT-2's attention layer.

For each batch row and head, with queries at positions ``pos .. pos+T-1`` and keys at
positions ``0 .. S-1``::

    scores = Q Kᵀ · scale      (scale 1/sqrt(hd) unless given) (T, S)
    scores[i, j] = -inf  where j > pos + i                    (a query sees no later key)
    out = dropout(softmax(scores)) V                          (T, hd)

Two implementations give the same numbers:

* ``"xla"``: the formula above written so that XLA's batched matmuls see the batch and head
  axes in front: (B, T, H, hd) is laid out once as (B·H, T, hd), so that XLA need not
  transpose around every dot as it does for ``jax.nn.dot_product_attention``'s XLA path
  (measured: docs/performance.md, item 3). It handles a query offset (KV-cache decoding)
  and attention dropout. On a CPU, causal self-attention over a whole sequence (no
  offset, S = T) skips the keys that no query of a block sees (:func:`query_blocks`): the
  queries in ``n`` blocks of T/n rows, block i scoring only keys ``0 .. (i+1)·T/n - 1``,
  about (n+1)/2n of the products; the same numbers, to float rounding, with the same
  dropout.
* ``"cudnn"``: ``jax.nn.dot_product_attention(..., implementation="cudnn")``, the fused
  flash-attention kernel of cuDNN, for NVIDIA GPUs with bfloat16/float16 inputs; no dropout,
  no query offset.

Softmax is computed in float32 whatever the input dtype.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp

from jaxbasics import checks
from jaxbasics.timing import default_device

IMPLEMENTATIONS = ("xla", "cudnn")


def check_implementation(implementation: Any) -> str:
    """Validate an ``attention`` implementation name; returns it."""
    if implementation not in IMPLEMENTATIONS:
        raise ValueError(f"attention implementation must be one of {IMPLEMENTATIONS}, got "
                         f"{implementation!r}")
    return implementation


def cudnn_model_refusal(*, head_dim: int, dtype: Any, drop_rate: float,
                        per_layer_scale: bool) -> str | None:
    """Why ``"cudnn"`` cannot compute a model's attention, whatever the device, as the end of
    a sentence "needs ...", or None where it can: cuDNN's flash kernel takes bfloat16 or
    float16 inputs (``dtype``), has no dropout (``drop_rate`` must be 0), takes one Python
    scale for all blocks (not ``per_layer_scale``: GPT's ``scale_attn_by_inverse_layer_idx``)
    and a head size (``head_dim``) that is a multiple of 8, at most 128. The device's part
    (an NVIDIA GPU of compute capability 8.0 or later) is
    :func:`jaxbasics.gpt.train.resolve_attention`'s."""
    name = jnp.dtype(dtype).name
    if name not in ("bfloat16", "float16"):
        return f"bfloat16 or float16 compute (cuDNN's flash attention), got {name}"
    if drop_rate:
        return f"no dropout (cuDNN's kernel has none), got drop_rate {drop_rate}"
    if per_layer_scale:
        return "one attention scale for every block, got scale_attn_by_inverse_layer_idx"
    if head_dim % 8 or head_dim > 128:
        return f"a head size that is a multiple of 8 and at most 128, got {head_dim}"
    return None


def causal_attention(q: jax.Array, k: jax.Array, v: jax.Array, *, pos: jax.Array | int = 0,
                     drop_rate: float = 0.0, key: jax.Array | None = None,
                     implementation: str = "xla", scale: Any = None) -> jax.Array:
    """Causal multi-head attention (module docstring).

    Args:
      q: queries (B, T, H, hd), at positions ``pos .. pos+T-1``.
      k: keys (B, S, H, hd), at positions ``0 .. S-1`` (S >= pos + T; with a KV cache S is
        the cache length and keys past ``pos + T`` are masked).
      v: values, shaped as ``k``.
      pos: position of the first query (0 without a cache); may be traced.
      drop_rate: dropout on the attention weights, applied only when ``key`` is given.
      key: dropout key, or None for no dropout.
      implementation: ``"xla"`` or ``"cudnn"`` (module docstring).
      scale: what the scores are multiplied by; None means 1/sqrt(hd). A Python number, or
        (``"xla"`` only) a traced scalar, e.g. a per-layer scale inside a scan.

    Returns:
      (B, T, H, hd), in ``v``'s dtype.
    """
    check_implementation(implementation)
    b, t, h, hd = q.shape
    s = k.shape[1]
    if k.shape != (b, s, h, hd) or v.shape != k.shape:
        raise ValueError(f"k and v must have shape (B, S, H, hd) = (b, S, {h}, {hd}) matching q "
                         f"{tuple(q.shape)}, got k {tuple(k.shape)} and v {tuple(v.shape)}")
    checks.number_in(drop_rate, "drop_rate", 0.0, 1.0, open_hi=True)
    dropout_key = key if drop_rate > 0.0 else None
    scale = 1.0 / math.sqrt(hd) if scale is None else scale
    if implementation == "cudnn":
        if dropout_key is not None or not (isinstance(pos, int) and pos == 0 and s == t):
            raise ValueError("attention implementation 'cudnn' supports neither dropout nor a "
                             "KV cache; use 'xla' for those")
        if not isinstance(scale, (int, float)):
            raise ValueError("attention implementation 'cudnn' needs a Python number as scale "
                             "(not a per-layer traced one); use 'xla'")
        return jax.nn.dot_product_attention(q, k, v, is_causal=True, scale=float(scale),
                                            implementation="cudnn")

    def heads_major(a: jax.Array) -> jax.Array:  # (B, L, H, hd) -> (B·H, L, hd)
        return jnp.swapaxes(a, 1, 2).reshape(b * h, a.shape[1], hd)

    qh, kh, vh = heads_major(q), heads_major(k), heads_major(v)
    keep = None if dropout_key is None else jax.random.bernoulli(
        dropout_key, 1.0 - drop_rate, (b * h, t, s))  # drawn whole: blocks take their part
    n = query_blocks(t) if isinstance(pos, int) and pos == 0 and s == t else 1
    rows = t // n
    outs = []
    for i in range(n):  # block i: queries [i·rows, (i+1)·rows), keys [0, (i+1)·rows)
        first, seen = i * rows, s if n == 1 else (i + 1) * rows
        scores = jnp.einsum("nqd,nkd->nqk", qh[:, first:first + rows], kh[:, :seen],
                            preferred_element_type=jnp.float32)
        if not (isinstance(scale, (int, float)) and scale == 1.0):
            scores = scores * scale  # (B·H, rows, seen)
        visible = jnp.arange(seen)[None, :] <= pos + first + jnp.arange(rows)[:, None]
        weights = jax.nn.softmax(jnp.where(visible, scores, -jnp.inf), axis=-1)
        if keep is not None:
            weights = jnp.where(keep[:, first:first + rows, :seen], weights / (1.0 - drop_rate),
                                0.0)
        outs.append(jnp.einsum("nqk,nkd->nqd", weights.astype(v.dtype), vh[:, :seen]))
    out = outs[0] if n == 1 else jnp.concatenate(outs, axis=1)  # (B·H, T, hd)
    return jnp.swapaxes(out.reshape(b, h, t, hd), 1, 2)


#: the fewest query rows a block of :func:`query_blocks` holds, and the most blocks
MIN_BLOCK_ROWS, MAX_BLOCKS = 32, 4


def query_blocks(t: int, backend: str | None = None) -> int:
    """How many blocks of queries ``"xla"`` causal self-attention over ``t`` tokens splits
    into (module docstring) on ``backend`` (default:
    :func:`jaxbasics.timing.default_device`'s platform): on a CPU the most of
    :data:`MAX_BLOCKS`, 3, 2 that divides ``t`` into blocks of at least
    :data:`MIN_BLOCK_ROWS` rows (t=128: 4 blocks of 32, 62.5 % of the products; the
    README's pretraining step 1.08x faster, GPT-2's width at t=256 1.03x: docs/performance.md),
    else 1; 1 elsewhere (a GPU runs the whole product at once; not measured there)."""
    if (backend or default_device().platform) != "cpu":
        return 1
    for n in range(MAX_BLOCKS, 1, -1):
        if t % n == 0 and t // n >= MIN_BLOCK_ROWS:
            return n
    return 1
