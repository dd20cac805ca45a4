"""Text generation with GPT-2: greedy, temperature and top-k sampling, with a KV cache.

The whole loop is one ``jax.jit``-compiled ``lax.scan``. With the cache, the prompt is run
once (prefill) and each new token costs one single-position forward pass that reads the
cached keys/values; without it (``use_cache=False``) every step recomputes the full,
fixed-size sequence. Both give identical tokens; the tests check that.

Sampling of step i: ``p = softmax(logits / temperature)`` restricted to the ``top_k`` largest
logits, then to the nucleus (``top_p``: the most likely tokens whose probabilities add up to
at least ``top_p``, the first always kept), drawn with key ``split(rng, max_new_tokens)[i]``;
``temperature=0`` is greedy argmax.

Past the context: once prompt and new tokens fill ``context_length``, each further token is
predicted from the last ``context_length`` tokens alone (the window slides, as nanoGPT's
``generate`` crops ``idx[:, -block_size:]``), recomputed without the cache, one compiled
call a token.
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


def nucleus(logits: jax.Array, top_p: float) -> jax.Array:
    """``logits`` (B, V) with every token outside the nucleus set to -inf: in order of
    probability, the tokens up to and including the one at which the cumulative probability
    reaches ``top_p`` (Holtzman et al. 2019), at least one; a token tied with the last kept one
    is kept too."""
    ordered = jnp.sort(logits, axis=-1)[:, ::-1]
    probs = jax.nn.softmax(ordered, axis=-1)
    before = jnp.cumsum(probs, axis=-1) - probs  # the mass of the tokens ranked above each
    kept = jnp.maximum(jnp.sum(before < top_p, axis=-1, keepdims=True), 1)
    cutoff = jnp.take_along_axis(ordered, kept - 1, axis=-1)
    return jnp.where(logits < cutoff, -jnp.inf, logits)


def sample_next(logits: jax.Array, key: jax.Array, temperature: float,
                top_k: int | None, top_p: float | None = None) -> jax.Array:
    """Token ids (B,) from last-position logits (B, V): argmax if ``temperature == 0``, else a
    categorical draw from ``logits / temperature`` keeping only the ``top_k`` largest, then
    only the ``top_p`` nucleus (:func:`nucleus`)."""
    if temperature == 0.0:
        return jnp.argmax(logits, axis=-1).astype(jnp.int32)
    logits = logits / temperature
    if top_k is not None:
        kth = jax.lax.top_k(logits, top_k)[0][:, -1:]
        logits = jnp.where(logits < kth, -jnp.inf, logits)
    if top_p is not None and top_p < 1.0:
        logits = nucleus(logits, top_p)
    return jax.random.categorical(key, logits, axis=-1).astype(jnp.int32)


@functools.partial(jax.jit, static_argnames=("graphdef", "max_new_tokens", "temperature",
                                             "top_k", "top_p", "use_cache"))
def _generate(graphdef, params, prompt, key, *, max_new_tokens, temperature, top_k, top_p,
              use_cache):
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
            tok = sample_next(last, keys[i], temperature, top_k, top_p)
            buf = buf.at[:, t0 + i].set(tok)
            logits, cache = model.decode(tok[:, None], cache, t0 + i)
            return (buf, cache, logits[:, -1]), None

        (buf, _, _), _ = jax.lax.scan(step, (buf, cache, logits[:, -1]), steps)
    else:
        def step(buf, i):
            # causal attention: the zeros after position t0 + i - 1 cannot change its logits
            last = jax.lax.dynamic_index_in_dim(model(buf), t0 + i - 1, axis=1, keepdims=False)
            return buf.at[:, t0 + i].set(sample_next(last, keys[i], temperature, top_k,
                                                     top_p)), None

        buf, _ = jax.lax.scan(step, buf, steps)
    return buf


@functools.partial(jax.jit, static_argnames=("graphdef", "temperature", "top_k", "top_p"))
def _next_in_window(graphdef, params, window, key, *, temperature, top_k, top_p):
    """The token after ``window`` (B, context_length), from the window alone."""
    logits = nnx.merge(graphdef, params)(window)[:, -1]
    return sample_next(logits, key, temperature, top_k, top_p)


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

    Returns (B, T0 + max_new_tokens) int32 ids, the prompt included. Past ``context_length``
    the window slides (module docstring): ``T0`` itself must fit the context. ``top_p`` in
    (0, 1] (1 or None: no nucleus). ``rng`` is required when ``temperature > 0``. Raises
    ``ValueError`` naming the argument for each value out of range.
    """
    cfg = model.cfg
    prompt = check_tokens(prompt, cfg).astype(jnp.int32)
    checks.positive_int(max_new_tokens, "max_new_tokens")
    if (isinstance(temperature, bool) or not isinstance(temperature, int | float)
            or not 0 <= temperature < math.inf):  # NaN fails this too
        raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
    if top_k is not None and (isinstance(top_k, bool) or not isinstance(top_k, int)
                              or not 1 <= top_k <= cfg.vocab_size):
        raise ValueError(f"top_k must be None or an int in [1, {cfg.vocab_size}], got {top_k!r}")
    if top_p is not None and (isinstance(top_p, bool) or not isinstance(top_p, int | float)
                              or not 0 < top_p <= 1):
        raise ValueError(f"top_p must be None or a number in (0, 1], got {top_p!r}")
    if temperature > 0 and rng is None:
        raise ValueError("rng (a jax.random.key) is required when temperature > 0")
    if rng is not None:
        checks.random_key(rng, "rng")
    graphdef, params = split_params(model)
    key = jax.random.key(0) if rng is None else rng
    fits = min(max_new_tokens, cfg.context_length - prompt.shape[1])
    keys = jax.random.split(key, max_new_tokens)
    sampling = {"temperature": float(temperature), "top_k": top_k,
                "top_p": None if top_p is None or top_p == 1 else float(top_p)}
    out = prompt if fits == 0 else _generate(graphdef, params, prompt, keys[0] if fits <
                                             max_new_tokens else key, max_new_tokens=fits,
                                             use_cache=use_cache, **sampling)
    if fits == max_new_tokens:
        return out
    tokens = [out]
    window = out[:, -cfg.context_length:]
    for i in range(fits, max_new_tokens):  # the window slides: one token a call
        tok = _next_in_window(graphdef, params, window, keys[i], **sampling)
        tokens.append(tok[:, None])
        window = jnp.concatenate([window[:, 1:], tok[:, None]], axis=1)
    return jnp.concatenate(tokens, axis=1)
