"""Generation: KV cache equals recomputation for greedy and sampling; argument checks."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from jaxbasics.gpt.config import GPTConfig
from jaxbasics.gpt.generate import generate, sample_next
from jaxbasics.gpt.model import GPT

CFG = GPTConfig(vocab_size=53, context_length=16, emb_dim=32, n_heads=4, n_layers=2,
                drop_rate=0.0)


@pytest.fixture(scope="module")
def model():
    return GPT(CFG, rngs=nnx.Rngs(3))


PROMPT = jnp.asarray(np.random.default_rng(0).integers(0, 53, (3, 4)), jnp.int32)


@pytest.mark.parametrize("temperature, top_k", [(0.0, None), (1.0, None), (0.7, 5), (1.3, 1)])
def test_kv_cache_generation_equals_recomputation(model, temperature, top_k):
    kwargs = dict(temperature=temperature, top_k=top_k, rng=jax.random.key(7))
    cached = generate(model, PROMPT, 12, **kwargs)
    full = generate(model, PROMPT, 12, use_cache=False, **kwargs)
    chex.assert_trees_all_equal(cached, full)
    assert cached.shape == (3, 16)
    chex.assert_trees_all_equal(cached[:, :4], PROMPT)


def test_greedy_picks_the_argmax_of_the_models_logits(model):
    out = generate(model, PROMPT, 3)
    seq = PROMPT
    for _ in range(3):
        nxt = jnp.argmax(model(seq)[:, -1], axis=-1).astype(jnp.int32)
        seq = jnp.concatenate([seq, nxt[:, None]], axis=1)
    chex.assert_trees_all_equal(out, seq)


def test_top_k_one_is_greedy(model):
    chex.assert_trees_all_equal(generate(model, PROMPT, 8, temperature=0.9, top_k=1,
                                         rng=jax.random.key(1)), generate(model, PROMPT, 8))


def test_top_k_sampling_only_draws_from_the_k_largest():
    logits = jnp.tile(jnp.arange(10.0)[None], (2000, 1))
    draws = sample_next(logits, jax.random.key(0), 1.0, 3)
    assert set(np.asarray(draws).tolist()) == {7, 8, 9}
    counts = np.bincount(np.asarray(draws), minlength=10)[7:] / 2000
    np.testing.assert_allclose(counts, np.exp([7, 8, 9]) / np.exp([7, 8, 9]).sum(), atol=0.04)


def test_past_the_context_each_token_is_predicted_from_the_last_context_length_tokens(model):
    # nanoGPT's rule, recomputed here step by step: crop to the last 16 tokens, take the argmax
    # (what fits the context is the greedy test's program; the window of 16 compiles once)
    out = generate(model, PROMPT, 20)  # 4 + 20 = 24 > context 16
    last = jax.jit(lambda window: model(window)[:, -1])
    seq = generate(model, PROMPT, 12)
    for _ in range(8):
        nxt = jnp.argmax(last(seq[:, -CFG.context_length:]), axis=-1).astype(jnp.int32)
        seq = jnp.concatenate([seq, nxt[:, None]], axis=1)
    chex.assert_trees_all_equal(out, seq)
    # a prompt longer than the context is cropped the same way, and kept whole in the output
    long = jnp.concatenate([PROMPT, seq[:, 4:18]], axis=1)  # 18 tokens
    chex.assert_trees_all_equal(generate(model, long, 6), seq[:, :24])


def test_top_p_draws_only_from_the_nucleus_computed_by_hand():
    logits = np.log(np.asarray([0.05, 0.4, 0.1, 0.25, 0.2], np.float32))
    # by hand: sorted 0.4, 0.25, 0.2, 0.1, 0.05; mass before each 0, 0.4, 0.65, 0.85, 0.95;
    # top_p 0.7 keeps those with mass before < 0.7: ids 1, 3, 4, renormalised
    ranked = np.argsort(-logits)
    before = np.cumsum(np.exp(logits[ranked])) - np.exp(logits[ranked])
    nucleus = sorted(ranked[before < 0.7].tolist())
    assert nucleus == [1, 3, 4]
    draws = np.asarray(sample_next(jnp.tile(jnp.asarray(logits)[None], (4000, 1)),
                                   jax.random.key(0), 1.0, None, 0.7))
    assert sorted(set(draws.tolist())) == nucleus
    want = np.exp(logits[nucleus]) / np.exp(logits[nucleus]).sum()
    np.testing.assert_allclose(np.bincount(draws, minlength=5)[nucleus] / 4000, want, atol=0.03)
    # top_p 1 keeps everything; a tiny top_p keeps only the likeliest (greedy)
    assert set(np.asarray(sample_next(jnp.tile(jnp.asarray(logits)[None], (4000, 1)),
                                      jax.random.key(1), 1.0, None, 1e-6)).tolist()) == {1}


def test_top_k_above_the_vocabulary_samples_from_all_of_it(model):
    chex.assert_trees_all_equal(
        generate(model, PROMPT, 6, temperature=1.0, top_k=1000, rng=jax.random.key(4)),
        generate(model, PROMPT, 6, temperature=1.0, rng=jax.random.key(4)))


def test_sampling_with_the_same_key_repeats_and_differs_across_keys(model):
    a = generate(model, PROMPT, 10, temperature=1.0, rng=jax.random.key(1))
    chex.assert_trees_all_equal(a, generate(model, PROMPT, 10, temperature=1.0,
                                            rng=jax.random.key(1)))
    assert not np.array_equal(a, generate(model, PROMPT, 10, temperature=1.0,
                                          rng=jax.random.key(2)))


@pytest.mark.parametrize("kwargs, fragment", [
    ({"max_new_tokens": 0}, "max_new_tokens must be a positive integer, got 0"),
    ({"max_new_tokens": 2, "temperature": -1.0},
     "temperature must be a finite number >= 0, got -1.0"),
    ({"max_new_tokens": 2, "temperature": float("nan")},
     "temperature must be a finite number >= 0, got nan"),
    ({"max_new_tokens": 2, "temperature": float("inf")},
     "temperature must be a finite number >= 0, got inf"),
    ({"max_new_tokens": 2, "top_k": 0}, "top_k must be None or a positive int, got 0"),
    ({"max_new_tokens": 2, "top_p": 0.0}, "top_p must be None or a number in (0, 1], got 0.0"),
    ({"max_new_tokens": 2, "top_p": 1.5}, "top_p must be None or a number in (0, 1], got 1.5"),
    ({"max_new_tokens": 2, "temperature": 1.0}, "rng (a jax.random.key) is required"),
])
def test_bad_generation_arguments(model, kwargs, fragment):
    with pytest.raises(ValueError) as info:
        generate(model, PROMPT, **kwargs)
    assert fragment in str(info.value)


@pytest.mark.parametrize("rng, shown", [
    (0, "int 0"),
    (jnp.zeros(3, jnp.uint32), "uint32 array of shape (3,)"),
    (jax.random.split(jax.random.key(0), 2), "array of shape (2,)"),
])
def test_sampling_refuses_anything_but_one_random_key(model, rng, shown):
    with pytest.raises(TypeError, match=r"rng must be one JAX random key .*got .*"
                                        + re.escape(shown)):
        generate(model, PROMPT, 2, temperature=1.0, rng=rng)


def test_a_legacy_prngkey_samples_as_its_typed_key(model):
    legacy = generate(model, PROMPT, 4, temperature=1.0, rng=jax.random.PRNGKey(3))
    typed = generate(model, PROMPT, 4, temperature=1.0, rng=jax.random.wrap_key_data(jax.random.PRNGKey(3)))
    chex.assert_trees_all_equal(legacy, typed)
