"""Text generation with GPT-2: greedy, temperature, top-k and top-p (nucleus) sampling, with
a KV cache, and past the context by a sliding window.

The whole loop is one ``jax.jit``-compiled ``lax.scan``. With the cache, the prompt is run
once (prefill) and each new token costs one single-position forward pass that reads the
cached keys/values; without it (``use_cache=False``) every step recomputes the full,
fixed-size sequence. Both give identical tokens; the tests check that.

Past the context (prompt + new tokens > ``context_length``) the window slides, as nanoGPT's
``generate`` crops: each new token is predicted from the last ``context_length`` tokens only,
recomputed without the cache (positions restart at 0 in every window, so cached keys would
be at the wrong positions).

Sampling of step i: ``p = softmax(logits / temperature)`` restricted to the ``top_k`` largest
logits, then to the nucleus (the likeliest tokens whose mass first reaches ``top_p``), drawn
with key ``split(rng, max_new_tokens)[i]``; ``temperature=0`` is greedy argmax.
"""

from __future__ import annotations

import dataclasses
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
                top_k: int | None, top_p: float | None = None) -> jax.Array:
    """Token ids (B,) from last-position logits (B, V): argmax if ``temperature == 0``, else a
    categorical draw from ``logits / temperature`` keeping only the ``top_k`` largest and then
    the nucleus of ``top_p``: sorted by probability, a token is kept when the mass of the
    tokens before it is below ``top_p`` (the likeliest token always is; ties with the last
    kept probability are kept too)."""
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p is not None and top_p < 1.0:
        probs = jax.nn.softmax(logits, axis=-1)
        ranked = -jnp.sort(-probs, axis=-1)  # (B, V) descending
        before = jnp.cumsum(ranked, axis=-1) - ranked
        kept = jnp.sum(before < top_p, axis=-1, keepdims=True)  # >= 1
        smallest = jnp.take_along_axis(ranked, kept - 1, axis=-1)
        logits = jnp.where(probs < smallest, -jnp.inf, logits)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "temperature",
                                             "top_k", "top_p", "use_cache"))
def _generate(graphdef, params, prompt, key, *, max_new_tokens, temperature, top_k, top_p,
              use_cache):
    model = nnx.merge(graphdef, params)
    b, t0 = prompt.shape
    total = t0 + max_new_tokens
    ctx = model.cfg.context_length
    buf = jnp.zeros((b, total), jnp.int32).at[:, :t0].set(prompt)
    keys = jax.random.split(key, max_new_tokens)
    steps = jnp.arange(max_new_tokens)

    def sample(logits, i):
        return sample_next(logits, keys[i], temperature, top_k, top_p)

    if total > ctx:  # the sliding window: the last ctx tokens before position t0 + i
        def slide(buf, i):
            start = jnp.maximum(t0 + i - ctx, 0)
            window = jax.lax.dynamic_slice_in_dim(buf, start, ctx, axis=1)  # (B, ctx)
            last = jax.lax.dynamic_index_in_dim(model(window), t0 + i - 1 - start, axis=1,
                                                keepdims=False)
            return buf.at[:, t0 + i].set(sample(last, i)), None

        buf, _ = jax.lax.scan(slide, buf, steps)
    elif use_cache:
        logits, cache = model.decode(prompt, init_cache(model.cfg, b, total, model.dtype), 0)

        def step(carry, i):
            buf, cache, last = carry
            tok = sample(last, i)
            buf = buf.at[:, t0 + i].set(tok)
            logits, cache = model.decode(tok[:, None], cache, t0 + i)
            return (buf, cache, logits[:, -1]), None

        (buf, _, _), _ = jax.lax.scan(step, (buf, cache, logits[:, -1]), steps)
    else:
        def step(buf, i):
            # causal attention: the zeros after position t0 + i - 1 cannot change its logits
            last = jax.lax.dynamic_index_in_dim(model(buf), t0 + i - 1, axis=1, keepdims=False)
            return buf.at[:, t0 + i].set(sample(last, i)), None

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
             top_k: int | None = None, top_p: float | None = None, rng: jax.Array | None = None,
             use_cache: bool = True) -> jax.Array:
    """Extend ``prompt`` (B, T0) int token ids by ``max_new_tokens`` tokens.

    Returns (B, T0 + max_new_tokens) int32 ids, the prompt included. Beyond
    ``context_length`` (a longer prompt, or more new tokens than the context holds) each token
    is predicted from the last ``context_length`` tokens (the sliding window of the module
    docstring). ``top_k`` above the vocabulary means the whole vocabulary; ``top_p`` in (0, 1]
    (1: no nucleus cut); ``rng`` is required when ``temperature > 0``.
    """
    cfg = model.cfg
    width = max(cfg.context_length, int(np.shape(prompt)[-1]) if np.ndim(prompt) == 2 else 0)
    prompt = check_tokens(prompt, dataclasses.replace(cfg, context_length=width)
                          ).astype(jnp.int32)
    checks.positive_int(max_new_tokens, "max_new_tokens")
    if (isinstance(temperature, bool) or not isinstance(temperature, int | float)
            or not 0 <= temperature < math.inf):  # NaN fails this too
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                              or top_k < 1):
        raise ValueError(f"top_k must be None or a positive int, got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, int | float)
                              or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be None or a number in (0, 1], got {top_p!r}")
    if temperature > 0 and rng is None:
        raise ValueError("rng (a jax.random.key) is required when temperature > 0")
    if rng is not None:
        checks.random_key(rng, "rng")
    graphdef, params = split_params(model)
    key = jax.random.key(0) if rng is None else rng
    return _generate(graphdef, params, prompt, key,
                     max_new_tokens=max_new_tokens, temperature=float(temperature),
                     top_k=None if top_k is None else min(top_k, cfg.vocab_size),
                     top_p=None if top_p is None else float(top_p), use_cache=use_cache)
