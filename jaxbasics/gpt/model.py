"""GPT-2 in Flax NNX: the model that the chapter's ``GPT_CONFIG_124M`` describes.

References: Radford et al., "Language Models are Unsupervised Multitask Learners" (2019);
the architecture follows OpenAI's released GPT-2 (pre-LayerNorm blocks, tanh-GELU,
LayerNorm eps 1e-5, learned position embeddings); the configuration can vary the LayerNorm
epsilon, the MLP's width and nonlinearity and the attention scaling as Hugging Face's
``GPT2Config`` does.

    x = drop(tok_emb[idx] + pos_emb[pos])                      (B, T, d)
    repeat n_layers:                                           (lax.scan over stacked blocks)
        x = x + drop(attn(ln1(x)))     causal, n_heads heads of d/n_heads
        x = x + drop(mlp(ln2(x)))      d -> 4d -> GELU -> d
    logits = ln_f(x) @ W_out                                   (B, T, V)

The blocks' parameters are stacked along a leading ``n_layers`` axis and the forward pass
is one ``jax.lax.scan``, so trace and compile time do not grow with depth
(``scan_layers=False`` unrolls it: the same program written out layer by layer, larger to
compile, faster for narrow models on a CPU). Dropout uses an
explicit key (``rng=``) and is active only with ``deterministic=False``; the model holds
parameters and nothing else, so ``split_params`` gives a plain dict of arrays.

Every parameter is created with what is known about it (:func:`declared`): its logical axes
(Flax partitioning metadata; the stacked blocks add ``"layers"`` in front) and its Hugging
Face name. :func:`parameter_table` reads that back, and the sharding rules
(:mod:`.sharding`), the weight-decay mask (:mod:`.train`), Hugging Face loading (:mod:`.hf`)
and the PyTorch twin's weight transfer derive from it; a parameter created without it is an
error naming the parameter.

Logical axes: ``vocab`` (token ids), ``context`` (positions), ``embed`` (the residual width d
of a matrix), ``qkv`` (the 3d query/key/value outputs and the d attention outputs), ``mlp``
(the 4d hidden width), ``residual`` (width-d vectors added to or normalising the residual
stream: LayerNorm scales and biases, output biases), ``layers`` (the stacked blocks).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx
from jax import lax

from jaxbasics import checks
from jaxbasics.gpt import matmul
from jaxbasics.gpt.attention import causal_attention, check_implementation, cudnn_model_refusal
from jaxbasics.gpt.config import GPTConfig

INIT_STD = 0.02

KVCache = dict[str, jax.Array]  # {"k", "v"}: (n_layers, B, T_max, n_heads, head_dim)
LAYERS = "layers"  # logical axis of the stacked blocks' leading n_layers dimension


def normal_init(std: float) -> Callable[..., jax.Array]:
    """``nnx.initializers.normal(std)`` with the same numbers eagerly and under ``jax.jit``:
    ``normal(key, shape) · std``, an optimization barrier between the draw and the scale, so
    that XLA cannot fold ``std`` into the draw's own √2 (it would, compiling the two products
    as one, and change the weights' last bits; :func:`jaxbasics.gpt.train.build_model` builds
    the model under ``jit``)."""
    def init(key: jax.Array, shape: Any, dtype: Any = jnp.float32) -> jax.Array:
        return lax.optimization_barrier(jax.random.normal(key, shape, dtype)) * jnp.asarray(
            std, dtype)

    return init


def declared(init: Any, axes: tuple[str, ...], hf_name: str, *, hf_transpose: bool = False
             ) -> Any:
    """``init`` carrying a parameter's description: its logical ``axes`` (one name per
    dimension, as ``nnx.with_partitioning``), its name in a Hugging Face GPT-2 checkpoint
    (``"h.{i}.attn.c_attn.weight"``, ``{i}`` the block index) and whether that tensor is the
    transpose of ours (``hf_transpose``: PyTorch ``nn.Linear`` weights, (out, in))."""
    return nnx.with_partitioning(init, axes, eager_sharding=False, hf_name=hf_name,
                                 hf_transpose=hf_transpose)


def _linear(n_in: int, n_out: int, axes: tuple[str, str], bias_axis: str | None, hf: str, *,
            std: float, dtype: Any, rngs: nnx.Rngs) -> nnx.Linear:
    """``nnx.Linear`` (kernel (n_in, n_out), normal(std); zero bias unless ``bias_axis`` is
    None) through :func:`jaxbasics.gpt.matmul.dot_general`, described by :func:`declared`."""
    kernel_init = declared(normal_init(std), axes, f"{hf}.weight")
    bias_init = declared(nnx.initializers.zeros_init(), (bias_axis or "",), f"{hf}.bias")
    return nnx.Linear(n_in, n_out, use_bias=bias_axis is not None, dtype=dtype,
                      dot_general=matmul.dot_general, kernel_init=kernel_init,
                      bias_init=bias_init, rngs=rngs)


def _layer_norm(d: int, hf: str, *, eps: float, dtype: Any, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(d, epsilon=eps, dtype=dtype, rngs=rngs,
                         scale_init=declared(nnx.initializers.ones_init(), ("residual",),
                                             f"{hf}.weight"),
                         bias_init=declared(nnx.initializers.zeros_init(), ("residual",),
                                            f"{hf}.bias"))


def _dropout(x: jax.Array, rate: float, key: jax.Array | None) -> jax.Array:
    """Inverted dropout: keep with prob 1 - rate and scale by 1/(1 - rate); identity without key."""
    if key is None or rate == 0.0:
        return x
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), 0.0).astype(x.dtype)


class CausalSelfAttention(nnx.Module):
    """Multi-head causal self-attention with a fused (d, 3d) query/key/value projection."""

    def __init__(self, cfg: GPTConfig, *, dtype: Any, rngs: nnx.Rngs, attention: str = "xla"):
        d = cfg.emb_dim
        self.n_heads, self.head_dim, self.drop_rate = cfg.n_heads, cfg.head_dim, cfg.drop_rate
        self.implementation, self.cfg = attention, cfg
        self.qkv = _linear(d, 3 * d, ("embed", "qkv"), "qkv" if cfg.qkv_bias else None,
                           "h.{i}.attn.c_attn", std=INIT_STD, dtype=dtype, rngs=rngs)
        # residual projection: std 0.02 / sqrt(2 n_layers) (GPT-2 paper, section 2.3)
        self.proj = _linear(d, d, ("qkv", "embed"), "residual", "h.{i}.attn.c_proj",
                            std=INIT_STD / math.sqrt(2 * cfg.n_layers), dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, shape: tuple[int, int], *, key: jax.Array | None = None,
                 cache: tuple[jax.Array, jax.Array] | None = None, pos: jax.Array | int = 0,
                 layer: jax.Array | int = 0
                 ) -> tuple[jax.Array, tuple[jax.Array, jax.Array] | None]:
        """Attention over tokens ``x`` (B·T, d) laid out as ``shape`` = (B, T) in block
        ``layer`` (it matters with ``scale_attn_by_inverse_layer_idx``); returns (B·T, d)."""
        b, t = shape
        d = x.shape[-1]
        q, k, v = jnp.split(self.qkv(x).reshape(b, t, 3 * self.n_heads, self.head_dim), 3,
                            axis=2)  # each (B, T, H, hd)
        if cache is not None:  # write this step's keys/values at [pos, pos + T)
            k = jax.lax.dynamic_update_slice(cache[0], k.astype(cache[0].dtype), (0, pos, 0, 0))
            v = jax.lax.dynamic_update_slice(cache[1], v.astype(cache[1].dtype), (0, pos, 0, 0))
            cache = (k, v)
        # cuDNN's kernel takes no KV cache: decoding computes the same function through XLA
        with jax.named_scope("attention"):  # names its ops in profiles (bench.ops)
            out = causal_attention(q, k, v, pos=pos, drop_rate=self.drop_rate, key=key,
                                   implementation="xla" if cache is not None
                                   else self.implementation,
                                   scale=self.cfg.attention_scale(layer))  # (B, T, H, hd)
        return self.proj(out.reshape(b * t, d)), cache


ACTIVATION_FNS: dict[str, Callable[[jax.Array], jax.Array]] = {
    "gelu_tanh": partial(jax.nn.gelu, approximate=True),  # GPT-2's, Hugging Face "gelu_new"
    "gelu": partial(jax.nn.gelu, approximate=False),      # x·Φ(x) with erf
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
}


class MLP(nnx.Module):
    """d -> m -> activation -> d (GPT-2: m = 4d, GELU's tanh approximation)."""

    def __init__(self, cfg: GPTConfig, *, dtype: Any, rngs: nnx.Rngs):
        d, m = cfg.emb_dim, cfg.hidden_dim
        self.activation = cfg.activation
        self.fc = _linear(d, m, ("embed", "mlp"), "mlp", "h.{i}.mlp.c_fc", std=INIT_STD,
                          dtype=dtype, rngs=rngs)
        self.proj = _linear(m, d, ("mlp", "embed"), "residual", "h.{i}.mlp.c_proj",
                            std=INIT_STD / math.sqrt(2 * cfg.n_layers), dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.proj(ACTIVATION_FNS[self.activation](self.fc(x)))


class Block(nnx.Module):
    """Pre-LayerNorm transformer block: x + attn(ln1(x)), then + mlp(ln2(x)).

    Inside the block the tokens are one (B·T, d) matrix: every projection is then a plain 2-D
    matmul, whose weight gradient XLA computes without first transposing the (B, T, ·)
    activations (measured on CPU: docs/performance.md, item 1).
    """

    def __init__(self, cfg: GPTConfig, *, dtype: Any, rngs: nnx.Rngs, attention: str = "xla"):
        d = cfg.emb_dim
        self.drop_rate = cfg.drop_rate
        self.ln1 = _layer_norm(d, "h.{i}.ln_1", eps=cfg.ln_eps, dtype=dtype, rngs=rngs)
        self.attn = CausalSelfAttention(cfg, dtype=dtype, rngs=rngs, attention=attention)
        self.ln2 = _layer_norm(d, "h.{i}.ln_2", eps=cfg.ln_eps, dtype=dtype, rngs=rngs)
        self.mlp = MLP(cfg, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, *, key: jax.Array | None = None, cache=None, pos=0,
                 layer: jax.Array | int = 0):
        """``x`` (B, T, d) -> (B, T, d) for block number ``layer``, and the updated cache when
        one is given."""
        b, t, d = x.shape
        keys = (None,) * 3 if key is None else tuple(jax.random.split(key, 3))
        x = x.reshape(b * t, d)  # (B·T, d)
        h, cache = self.attn(self.ln1(x), (b, t), key=keys[0], cache=cache, pos=pos, layer=layer)
        x = x + _dropout(h, self.drop_rate, keys[1])
        x = x + _dropout(self.mlp(self.ln2(x)), self.drop_rate, keys[2])
        return x.reshape(b, t, d), cache


class GPT(nnx.Module):
    """GPT-2 language model for a :class:`~jaxbasics.gpt.config.GPTConfig`.

    Args:
      cfg: the configuration (``GPT_CONFIG_124M`` for the chapter's model).
      dtype: compute dtype (``jnp.bfloat16`` for mixed precision); parameters stay float32.
      remat: rematerialisation of each block in the backward pass (``jax.checkpoint``):
        ``False`` stores every activation; ``True`` or ``"full"`` recomputes the whole block
        (about a third more compute, activation memory no longer grows with depth);
        ``"dots"`` keeps only the matmul outputs and recomputes the cheap elementwise work
        (``jax.checkpoint_policies.dots_with_no_batch_dims_saveable``), which on a CPU with
        the layers scanned is also the fastest, since it moves far less memory (unrolled,
        saving everything is: :func:`jaxbasics.gpt.train.resolve_remat`); any other name of
        a ``jax.checkpoint_policies`` policy is accepted too.
      scan_layers: ``True`` (default) runs the blocks as a loop over the layers
        (``jax.lax.scan``: one block compiled, whatever the depth); ``False`` unrolls that loop
        (``unroll=True``: every layer written out, so XLA keeps each layer's saved activations
        apart instead of stacking them; compile time grows with depth). The same function,
        to float rounding; parameters stacked either way.
      attention: ``"xla"`` (default, any device) or ``"cudnn"`` (cuDNN flash attention on
        NVIDIA GPUs, bfloat16/float16, no dropout: ``cfg.drop_rate`` must be 0; decoding with
        a KV cache computes the same function through XLA); see
        :mod:`jaxbasics.gpt.attention`.
      rngs: parameter initialisation keys.

    Raises:
      ValueError: ``attention="cudnn"`` with a float32 ``dtype``, dropout,
        ``scale_attn_by_inverse_layer_idx`` or a head size cuDNN does not take
        (:func:`~jaxbasics.gpt.attention.cudnn_model_refusal`).
    """

    def __init__(self, cfg: GPTConfig, *, dtype: Any = jnp.float32, remat: bool | str = False,
                 scan_layers: bool = True, attention: str = "xla", rngs: nnx.Rngs):
        if not isinstance(cfg, GPTConfig):
            raise TypeError(f"cfg must be a GPTConfig, got {type(cfg).__name__}")
        remat_policy(remat)  # validate early
        if not isinstance(scan_layers, bool):
            raise TypeError(f"scan_layers must be True or False, got {scan_layers!r}")
        check_implementation(attention)
        dtype = checks.dtype_of(dtype, "dtype", floating=True)
        if attention == "cudnn" and (why := cudnn_model_refusal(
                head_dim=cfg.head_dim, dtype=dtype, drop_rate=cfg.drop_rate,
                per_layer_scale=cfg.scale_attn_by_inverse_layer_idx)) is not None:
            raise ValueError(f"attention='cudnn' needs {why}; use attention='xla'")
        self.cfg, self.dtype, self.remat, self.attention = cfg, dtype, remat, attention
        self.scan_layers = scan_layers
        emb_init = normal_init(INIT_STD)
        self.tok_emb = nnx.Embed(cfg.vocab_size, cfg.emb_dim, dtype=dtype, rngs=rngs,
                                 embedding_init=declared(emb_init, ("vocab", "embed"), "wte.weight"))
        self.pos_emb = nnx.Embed(cfg.context_length, cfg.emb_dim, dtype=dtype, rngs=rngs,
                                 embedding_init=declared(emb_init, ("context", "embed"),
                                                         "wpe.weight"))

        @nnx.split_rngs(splits=cfg.n_layers)
        @nnx.vmap(in_axes=(0,), out_axes=0, transform_metadata={nnx.PARTITION_NAME: LAYERS})
        def stacked_blocks(rngs: nnx.Rngs) -> Block:
            return Block(cfg, dtype=dtype, rngs=rngs, attention=attention)

        self.blocks = stacked_blocks(rngs)  # every parameter has a leading n_layers axis
        self.ln_f = _layer_norm(cfg.emb_dim, "ln_f", eps=cfg.ln_eps, dtype=dtype, rngs=rngs)
        self.head = None if cfg.tie_embeddings else nnx.Linear(
            cfg.emb_dim, cfg.vocab_size, use_bias=False, dtype=dtype, rngs=rngs,
            dot_general=matmul.dot_general,
            kernel_init=declared(normal_init(INIT_STD), ("embed", "vocab"),
                                 "lm_head.weight", hf_transpose=True))

    def __call__(self, idx: jax.Array, *, deterministic: bool = True,
                 rng: jax.Array | None = None) -> jax.Array:
        """Next-token logits (B, T, V), float32, for token ids ``idx`` (B, T), T <= context.

        ``deterministic=False`` turns dropout on and needs ``rng`` (a JAX key) when
        ``drop_rate > 0``.
        """
        idx = check_tokens(idx, self.cfg)
        if rng is not None:
            checks.random_key(rng, "rng")
        key = None
        if not deterministic and self.cfg.drop_rate > 0:
            if rng is None:
                raise ValueError("rng (a jax.random.key) is required when deterministic=False "
                                 f"and drop_rate={self.cfg.drop_rate} > 0")
            key = rng
        logits, _ = self._forward(idx, key=key, cache=None, pos=0)
        return logits

    def decode(self, idx: jax.Array, cache: KVCache, pos: jax.Array | int
               ) -> tuple[jax.Array, KVCache]:
        """Logits for ``idx`` (B, T) placed at positions ``pos .. pos+T-1``, attending to the
        keys/values already in ``cache`` (see :func:`init_cache`); returns the updated cache.
        No dropout. ``cache`` must be :func:`init_cache`'s shape for this model and batch, and
        ``0 <= pos``, ``pos + T <= cache length``: checked here when ``pos`` is a Python or
        concrete integer; a traced ``pos`` (inside a compiled loop) is the caller's to keep in
        range, since XLA would clamp the cache write silently."""
        idx = check_tokens(idx, self.cfg)
        check_cache(cache, self.cfg, idx.shape[0])
        length = cache["k"].shape[2]
        if checks.is_concrete(pos):
            p = int(np.asarray(pos))
            if not 0 <= p <= length - idx.shape[1]:
                raise ValueError(f"pos must be in [0, cache length {length} - T {idx.shape[1]}] "
                                 f"= [0, {length - idx.shape[1]}] for idx of shape "
                                 f"{tuple(idx.shape)}, got {p}")
        return self._forward(idx, key=None, cache=cache, pos=pos)

    def _forward(self, idx, *, key, cache, pos):
        b, t = idx.shape
        emb_key, layer_key = (None, None) if key is None else tuple(jax.random.split(key))
        x = self.tok_emb(idx) + self.pos_emb(pos + jnp.arange(t))  # (B, T, d)
        x = _dropout(x, self.cfg.drop_rate, emb_key)
        layer_cache = None if cache is None else (cache["k"], cache["v"])
        x, new_cache = scan_blocks(self.blocks, x, remat=self.remat, key=layer_key,
                                   cache=layer_cache, pos=pos, unroll=not self.scan_layers)
        with jax.named_scope("head"):  # names its ops in profiles (bench.ops)
            x = self.ln_f(x.reshape(b * t, -1))  # (B·T, d): 2-D matmul for the head too
            logits = self.tok_emb.attend(x) if self.head is None else self.head(x)
            logits = logits.reshape(b, t, -1)
        if new_cache is not None:
            new_cache = {"k": new_cache[0], "v": new_cache[1]}
        return logits.astype(jnp.float32), new_cache


def scan_blocks(blocks: Block, x: jax.Array, *, remat: bool | str = False,
                key: jax.Array | None = None, cache: tuple[jax.Array, jax.Array] | None = None,
                pos: jax.Array | int = 0, unroll: bool = False) -> tuple[jax.Array, Any]:
    """Run stacked ``blocks`` (every parameter with a leading n_layers axis, as
    ``GPT.blocks``) over ``x`` (B, T, d) as one ``jax.lax.scan``: h_{l+1} = block_l(h_l),
    fully unrolled with ``unroll`` (``GPT``'s ``scan_layers=False``).

    ``remat`` as in :class:`GPT` (``jax.checkpoint`` around each layer), ``key`` a dropout key
    split over the layers (None: no dropout), ``cache`` the (k, v) arrays of shape
    (n_layers, B, T_max, H, hd) with queries at ``pos``. Returns (h_L, updated cache or None).
    """
    graphdef, state = nnx.split(blocks)
    n_layers = jax.tree.leaves(state)[0].shape[0]
    layer_keys = None if key is None else jax.random.split(key, n_layers)
    # the block index enters the program only where the computation depends on it
    index = jnp.arange(n_layers) if blocks.attn.cfg.scale_attn_by_inverse_layer_idx else None

    def body(h, xs):
        layer_state, lkey, lcache, layer = xs
        with jax.named_scope("blocks"):  # names its ops in profiles (bench.ops)
            h, lcache = nnx.merge(graphdef, layer_state)(
                h, key=lkey, cache=lcache, pos=pos, layer=0 if layer is None else layer)
        return h, lcache

    if remat:
        body = jax.checkpoint(body, prevent_cse=False, policy=remat_policy(remat))
    return jax.lax.scan(body, x, (state, layer_keys, cache, index), unroll=True if unroll else 1)


REMAT_ALIASES = {"full": "nothing_saveable", "dots": "dots_with_no_batch_dims_saveable"}


def remat_policy(remat: bool | str) -> Any:
    """The ``jax.checkpoint`` policy for a ``remat`` setting (None: save nothing, recompute all)."""
    if isinstance(remat, bool):
        return None
    name = REMAT_ALIASES.get(remat, remat)
    policy = getattr(jax.checkpoint_policies, name, None) if isinstance(name, str) else None
    if policy is None or name.startswith("_"):
        raise ValueError(f"remat must be False, True, 'full', 'dots' or a name in "
                         f"jax.checkpoint_policies, got {remat!r}")
    return None if name == "nothing_saveable" else policy


def init_cache(cfg: GPTConfig, batch_size: int, max_len: int | None = None,
               dtype: Any = jnp.float32) -> KVCache:
    """Zeroed key/value cache ``{"k", "v"}`` of shape (n_layers, B, max_len, n_heads, head_dim)."""
    checks.positive_int(batch_size, "batch_size")
    max_len = cfg.context_length if max_len is None else max_len
    checks.positive_int(max_len, "max_len")
    if max_len > cfg.context_length:
        raise ValueError(f"max_len must be <= context_length {cfg.context_length}, got {max_len}")
    shape = (cfg.n_layers, batch_size, max_len, cfg.n_heads, cfg.head_dim)
    return {"k": jnp.zeros(shape, dtype), "v": jnp.zeros(shape, dtype)}


def check_cache(cache: Any, cfg: GPTConfig, batch_size: int) -> None:
    """Raise ``ValueError`` unless ``cache`` is ``{"k", "v"}`` of shape
    (n_layers, batch_size, S, n_heads, head_dim), S <= context_length, as :func:`init_cache`
    makes for ``cfg``."""
    if not (isinstance(cache, dict) and set(cache) == {"k", "v"}):
        raise ValueError(f"cache must be init_cache()'s dict with keys 'k' and 'v', got "
                         f"{sorted(cache) if isinstance(cache, dict) else type(cache).__name__}")
    k, v = cache["k"], cache["v"]
    want = f"({cfg.n_layers}, {batch_size}, S, {cfg.n_heads}, {cfg.head_dim})"
    for name, a in (("k", k), ("v", v)):
        shape = tuple(getattr(a, "shape", ()))
        if (len(shape) != 5 or shape[:2] != (cfg.n_layers, batch_size)
                or shape[3:] != (cfg.n_heads, cfg.head_dim)
                or not 1 <= shape[2] <= cfg.context_length):
            raise ValueError(f"cache[{name!r}] must have shape {want} (n_layers, batch, "
                             f"S <= {cfg.context_length}, heads, head_dim), got {shape}")
    if k.shape != v.shape:
        raise ValueError(f"cache['v'] must have the shape of cache['k'] {tuple(k.shape)}, got "
                         f"{tuple(v.shape)}")


def check_tokens(idx: Any, cfg: GPTConfig) -> jax.Array:
    """Validate token ids for ``cfg``: integer dtype, shape (B, T) with 1 <= T <=
    context_length, and (on concrete arrays) values in [0, vocab_size)."""
    idx = checks.int_array(idx, "idx")
    if idx.ndim != 2:
        raise ValueError(f"idx must have shape (batch, seq_len), got {tuple(idx.shape)}")
    checks.nonempty(idx, "idx")
    if idx.shape[1] > cfg.context_length:
        raise ValueError(f"idx has {idx.shape[1]} tokens per sequence, more than "
                         f"context_length={cfg.context_length}")
    if checks.is_concrete(idx):  # numpy, not jnp: inside a trace jnp would stage the check
        arr = np.asarray(idx)
        lo, hi = int(arr.min()), int(arr.max())
        if lo < 0 or hi >= cfg.vocab_size:
            raise ValueError(f"idx must hold token ids in [0, {cfg.vocab_size}), got values "
                             f"from {lo} to {hi}")
    return idx


def count_params(model: nnx.Module) -> int:
    """Number of trainable scalars actually held by ``model``."""
    return sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))


@dataclass(frozen=True)
class ParamInfo:
    """What :func:`declared` said of one parameter, as :func:`parameter_table` reads it back.

    Attributes:
      axes: logical axis names, one per dimension (``"layers"`` first in the stacked blocks).
      shape: the parameter's shape.
      hf_name: its Hugging Face GPT-2 tensor name; ``{i}`` stands for the block index.
      hf_transpose: that tensor is the transpose of ours (``lm_head``, an ``nn.Linear``).
    """

    axes: tuple[str, ...]
    shape: tuple[int, ...]
    hf_name: str
    hf_transpose: bool = False

    @property
    def per_layer(self) -> bool:
        """A stacked block parameter (its first axis is ``"layers"``)."""
        return self.axes[:1] == (LAYERS,)

    def hf_names(self, n_layers: int) -> list[str]:
        """Its Hugging Face tensor names: one per block for a stacked block parameter."""
        return [self.hf_name.format(i=i) for i in range(n_layers)] if self.per_layer \
            else [self.hf_name]

    @property
    def is_matrix(self) -> bool:
        """A weight matrix or embedding table (two axes besides ``"layers"``): what weight
        decay applies to, rather than biases and LayerNorm parameters."""
        return len(self.axes) - self.per_layer == 2


def parameter_table(model: nnx.Module) -> dict:
    """Each ``nnx.Param`` of ``model`` (a :class:`GPT`, real or from ``nnx.eval_shape``) as a
    :class:`ParamInfo`, in a nested dict of the structure of ``split_params(model)[1]``.

    Raises ``ValueError`` naming a parameter created without :func:`declared` (no logical axes
    or no Hugging Face name) or whose axes do not match its number of dimensions: every view
    derived from this table (sharding, weight decay, checkpoint names) would otherwise skip
    it silently.
    """
    state = nnx.state(model, nnx.Param)
    specs = dict(jax.tree_util.tree_flatten_with_path(
        nnx.to_pure_dict(nnx.get_partition_spec(state)),
        is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))[0])
    table: dict = {}
    for path, variable in nnx.to_flat_state(state):
        name = ".".join(map(str, path))
        key_path = tuple(jax.tree_util.DictKey(k) for k in path)
        axes = tuple(specs.get(key_path, ()))
        hf_name = getattr(variable, "hf_name", None)
        ndim = len(variable.shape)
        if len(axes) != ndim or not all(isinstance(a, str) and a for a in axes) or not hf_name:
            raise ValueError(f"parameter {name} (shape {tuple(variable.shape)}) must be created "
                             f"through jaxbasics.gpt.model.declared with one logical axis per "
                             f"dimension and its Hugging Face name, got axes {axes} and "
                             f"hf_name {hf_name!r}")
        node = table
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = ParamInfo(axes, tuple(variable.shape), hf_name,
                                   bool(getattr(variable, "hf_transpose", False)))
    return table
