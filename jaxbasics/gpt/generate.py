"""Text generation with GPT-2: greedy, temperature and top-k sampling, with a KV cache.

The whole loop is one ``jax.jit``-compiled ``lax.scan``. With the cache, the prompt is run
once (prefill) and each new token costs one single-position forward pass that reads the
cached keys/values; without it (``use_cache=False``) every step recomputes the full,
fixed-size sequence. Both give identical tokens; the tests check that.

Sampling of step i: ``p = softmax(logits / temperature)`` restricted to the ``top_k`` largest
logits, drawn with key ``split(rng, max_new_tokens)[i]``; ``temperature=0`` is greedy argmax.
"""

from __future__ import annotations

import functools
import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxbasics import checks
from jaxbasics.gpt.model import GPT, check_tokens, init_cache
from jaxbasics.params import split_params


def sample_next(logits: jax.Array, key: jax.Array, temperature: float,
                top_k: int | None) -> jax.Array:
    """Token ids (B,) from last-position logits (B, V): argmax if ``temperature == 0``, else a
    categorical draw from ``logits / temperature`` keeping only the ``top_k`` largest."""
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "temperature",
                                             "top_k", "use_cache"))
def _generate(graphdef, params, prompt, key, *, max_new_tokens, temperature, top_k, use_cache):
    model = nnx.merge(graphdef, params)
    b, t0 = prompt.shape
    total = t0 + max_new_tokens
    buf = jnp.zeros((b, total), jnp.int32).at[:, :t0].set(prompt)
    keys = jax.random.split(key, max_new_tokens)
    steps = jnp.arange(max_new_tokens)

    if use_cache:
        logits, cache = model.decode(prompt, init_cache(model.cfg, b, total, model.dtype), 0)

        def step(carry, i):
            buf, cache, last = carry
            tok = sample_next(last, keys[i], temperature, top_k)
            buf = buf.at[:, t0 + i].set(tok)
            logits, cache = model.decode(tok[:, None], cache, t0 + i)
            return (buf, cache, logits[:, -1]), None

        (buf, _, _), _ = jax.lax.scan(step, (buf, cache, logits[:, -1]), steps)
    else:
        def step(buf, i):
            # causal attention: the zeros after position t0 + i - 1 cannot change its logits
            last = jax.lax.dynamic_index_in_dim(model(buf), t0 + i - 1, axis=1, keepdims=False)
            return buf.at[:, t0 + i].set(sample_next(last, keys[i], temperature, top_k)), None

        buf, _ = jax.lax.scan(step, buf, steps)
    return buf


def encode_prompt(tokenizer: Any, text: str, vocab_size: int, *, name: str | None = None
                  ) -> np.ndarray:
    """``text`` as a (1, T) int32 batch of ``tokenizer``'s ids (its ``encode``), checked against
    a model's ``vocab_size``.

    Raises ``ValueError`` for a prompt that encodes to no token, and for one whose tokens fall
    outside [0, vocab_size): the message names the first such character, its position in
    ``text``, its token id and the tokenizer (``name``, or the tokenizer's class name), e.g.
    a byte-level prompt with 'é' given to a model trained on a smaller alphabet.
    """
    ids = [int(i) for i in tokenizer.encode(text)]
    if not ids:
        raise ValueError(f"the prompt {text!r} encodes to no tokens; give at least one character")
    bad = [i for i, t in enumerate(ids) if not 0 <= t < vocab_size]
    if bad:
        first = bad[0]
        prefix = tokenizer.decode(ids[:first])  # text before the token: its position
        pos = min(len(prefix.rstrip("\ufffd")), len(text) - 1)  # a split character counts whole
        raise ValueError(
            f"prompt character {text[pos]!r} at position {pos} is token id {ids[first]} of "
            f"{name or type(tokenizer).__name__}, outside the model's vocabulary "
            f"[0, {vocab_size}) ({len(bad)} of the prompt's {len(ids)} tokens are)")
    return np.asarray([ids], np.int32)


def generate(model: GPT, prompt: Any, max_new_tokens: int, *, temperature: float = 0.0,
             top_k: int | None = None, rng: jax.Array | None = None,
             use_cache: bool = True) -> jax.Array:
    """Extend ``prompt`` (B, T0) int token ids by ``max_new_tokens`` tokens.

    Returns (B, T0 + max_new_tokens) int32 ids, the prompt included. Needs
    ``T0 + max_new_tokens <= context_length``; ``rng`` is required when ``temperature > 0``.
    """
    cfg = model.cfg
    prompt = check_tokens(prompt, cfg).astype(jnp.int32)
    checks.positive_int(max_new_tokens, "max_new_tokens")
    total = prompt.shape[1] + max_new_tokens
    if total > cfg.context_length:
        raise ValueError(f"prompt length {prompt.shape[1]} + max_new_tokens {max_new_tokens} = "
                         f"{total} exceeds context_length={cfg.context_length}")
    if (isinstance(temperature, bool) or not isinstance(temperature, int | float)
            or not 0 <= temperature < math.inf):  # NaN fails this too
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                              or not 1 <= top_k <= cfg.vocab_size):
        raise ValueError(f"top_k must be None or an int in [1, {cfg.vocab_size}], got {top_k!r}")
    if temperature > 0 and rng is None:
        raise ValueError("rng (a jax.random.key) is required when temperature > 0")
    if rng is not None:
        checks.random_key(rng, "rng")
    graphdef, params = split_params(model)
    key = jax.random.key(0) if rng is None else rng
    return _generate(graphdef, params, prompt, key,
                     max_new_tokens=max_new_tokens, temperature=float(temperature),
                     top_k=top_k, use_cache=use_cache)
