"""Causal attention: against jax.nn.dot_product_attention, PyTorch SDPA and the formula,
with a query offset (KV cache), dropout, bf16, and bad inputs."""

import math

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from jaxbasics.gpt import attention
from jaxbasics.gpt.attention import causal_attention, query_blocks


def qkv(b=2, t=6, s=None, h=3, hd=4, seed=0, dtype=jnp.float32):
    keys = jax.random.split(jax.random.key(seed), 3)
    s = t if s is None else s
    return tuple(jax.random.normal(k, shape, dtype) for k, shape in
                 zip(keys, [(b, t, h, hd), (b, s, h, hd), (b, s, h, hd)], strict=True))


def by_formula(q, k, v, pos=0):
    """Loops over batch and head: softmax(q kᵀ / sqrt(hd) masked to j <= pos + i) v, float64."""
    q, k, v = (np.asarray(a, np.float64) for a in (q, k, v))
    b, t, h, hd = q.shape
    out = np.zeros_like(q)
    for bi in range(b):
        for hi in range(h):
            scores = q[bi, :, hi] @ k[bi, :, hi].T / math.sqrt(hd)
            scores[np.arange(k.shape[1])[None, :] > pos + np.arange(t)[:, None]] = -np.inf
            w = np.exp(scores - scores.max(-1, keepdims=True))
            out[bi, :, hi] = (w / w.sum(-1, keepdims=True)) @ v[bi, :, hi]
    return out


def test_equals_the_formula_and_jax_dot_product_attention():
    q, k, v = qkv()
    out = jax.jit(causal_attention)(q, k, v)
    np.testing.assert_allclose(out, by_formula(q, k, v), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out, jax.nn.dot_product_attention(q, k, v, is_causal=True),
                               rtol=1e-5, atol=1e-6)


def test_equals_pytorch_sdpa_forward_and_gradients():
    q, k, v = qkv(b=2, t=8, h=2, hd=8, seed=1)
    g = jax.random.normal(jax.random.key(9), q.shape)
    out, vjp = jax.vjp(causal_attention, q, k, v)
    grads = vjp(g)
    tq, tk, tv = (torch.tensor(np.asarray(a)).transpose(1, 2).requires_grad_() for a in (q, k, v))
    t_out = F.scaled_dot_product_attention(tq, tk, tv, is_causal=True)
    t_out.backward(torch.tensor(np.asarray(g)).transpose(1, 2))
    np.testing.assert_allclose(out, t_out.transpose(1, 2).detach().numpy(), rtol=1e-5, atol=1e-6)
    for ours, theirs in zip(grads, (tq, tk, tv), strict=True):
        np.testing.assert_allclose(ours, theirs.grad.transpose(1, 2).numpy(), rtol=1e-4,
                                   atol=1e-5)


@pytest.mark.parametrize("pos", [0, 3, 7])
def test_queries_at_an_offset_see_the_cache_up_to_their_own_position(pos):
    q, k, v = qkv(t=2, s=10)
    out = causal_attention(q, k, v, pos=pos)
    np.testing.assert_allclose(out, by_formula(q, k, v, pos), rtol=1e-5, atol=1e-6)
    # traced offset, as in the decoding loop
    traced = jax.jit(lambda p: causal_attention(q, k, v, pos=p))(jnp.int32(pos))
    np.testing.assert_allclose(traced, out, rtol=1e-6, atol=1e-7)


def test_dropout_zeroes_weights_by_key_and_keeps_the_expectation():
    q, k, v = qkv(b=1, t=5, h=1, hd=2)
    v = jnp.ones_like(v)  # every output is then the sum of the (dropped, rescaled) weights
    out = causal_attention(q, k, v, drop_rate=0.5, key=jax.random.key(0))
    assert not np.allclose(out, 1.0)  # some weights dropped, the rest doubled
    chex.assert_trees_all_equal(out, causal_attention(q, k, v, drop_rate=0.5,
                                                      key=jax.random.key(0)))
    assert causal_attention(q, k, v, drop_rate=0.5, key=None).tolist() == \
        causal_attention(q, k, v).tolist()
    many = jax.vmap(lambda key: causal_attention(q, k, v, drop_rate=0.5, key=key))(
        jax.random.split(jax.random.key(1), 4000))
    np.testing.assert_allclose(many.mean(0), 1.0, atol=0.05)  # E[out] = softmax sums to 1


def test_bf16_inputs_softmax_in_float32():
    q, k, v = qkv(t=16, hd=16, dtype=jnp.bfloat16)
    out = causal_attention(q, k, v)
    assert out.dtype == jnp.bfloat16
    np.testing.assert_allclose(out.astype(jnp.float32), by_formula(q, k, v), atol=3e-2)


def test_bad_arguments_are_named():
    q, k, v = qkv()
    with pytest.raises(ValueError, match=r"implementation must be one of \('xla', 'cudnn'\), "
                                         r"got 'flash'"):
        causal_attention(q, k, v, implementation="flash")
    with pytest.raises(ValueError, match=r"k and v must have shape .* got k \(2, 6, 3, 5\)"):
        causal_attention(q, k[..., :1].repeat(5, -1), v)
    with pytest.raises(ValueError, match="'cudnn' supports neither dropout nor a KV cache"):
        causal_attention(q, k, v, implementation="cudnn", pos=2)
    with pytest.raises(ValueError, match="'cudnn' supports neither dropout nor a KV cache"):
        causal_attention(q, k, v, implementation="cudnn", drop_rate=0.1, key=jax.random.key(0))
    for rate in (1.0, -0.1, float("nan")):
        with pytest.raises(ValueError, match=rf"drop_rate must be in \[0, 1\), got {rate!r}"):
            causal_attention(q, k, v, drop_rate=rate, key=jax.random.key(0))


def test_query_blocks_on_a_cpu_hold_at_least_32_rows_and_none_elsewhere():
    assert [query_blocks(t, "cpu") for t in (16, 60, 64, 96, 100, 128, 256, 1024)] == \
        [1, 1, 2, 3, 2, 4, 4, 4]
    assert query_blocks(128, "gpu") == query_blocks(128, "tpu") == 1


def test_blocks_of_queries_compute_the_whole_attention_with_its_dropout(monkeypatch):
    """t=96 on the CPU: 3 blocks of 32 queries, each scoring only the keys it may see. Equal to
    the formula, to PyTorch SDPA's forward and gradients, and, with dropout, to attention
    computed whole (query_blocks 1) from the same key."""
    q, k, v = qkv(b=1, t=96, h=2, hd=4, seed=2)
    assert query_blocks(96) == 3  # these tests run on the CPU
    g = jax.random.normal(jax.random.key(5), q.shape)
    out, vjp = jax.vjp(causal_attention, q, k, v)
    np.testing.assert_allclose(out, by_formula(q, k, v), rtol=1e-5, atol=1e-6)
    tq, tk, tv = (torch.tensor(np.asarray(a)).transpose(1, 2).requires_grad_() for a in (q, k, v))
    F.scaled_dot_product_attention(tq, tk, tv, is_causal=True).backward(
        torch.tensor(np.asarray(g)).transpose(1, 2))
    for ours, theirs in zip(vjp(g), (tq, tk, tv), strict=True):
        np.testing.assert_allclose(ours, theirs.grad.transpose(1, 2).numpy(), rtol=1e-4,
                                   atol=1e-5)
    key = jax.random.key(7)
    blocked = causal_attention(q, k, v, drop_rate=0.2, key=key)
    monkeypatch.setattr(attention, "query_blocks", lambda t: 1)
    np.testing.assert_allclose(blocked, causal_attention(q, k, v, drop_rate=0.2, key=key),
                               rtol=1e-5, atol=1e-6)
    assert not np.allclose(blocked, out)  # dropout did drop
