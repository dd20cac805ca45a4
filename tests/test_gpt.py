"""The Flax GPT-2: parameter counts, shapes, causality, dropout, init, remat, bf16, KV cache."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

from jaxbasics.gpt.config import GPT_CONFIG_124M, GPTConfig, parameter_count
from jaxbasics.gpt.model import GPT, count_params, init_cache
from jaxbasics.gpt.train import lm_loss
from jaxbasics.params import split_params

# "tiny configs for testing efficiency"
TINY = GPTConfig(vocab_size=61, context_length=12, emb_dim=32, n_heads=4, n_layers=2,
                 drop_rate=0.1)


@pytest.fixture(scope="module")
def model():
    return GPT(TINY, rngs=nnx.Rngs(0))


def _ids(seed, b=2, t=12, vocab=TINY.vocab_size):
    return jnp.asarray(np.random.default_rng(seed).integers(0, vocab, (b, t)), jnp.int32)


@pytest.mark.parametrize("tied, expected", [(False, 163_009_536), (True, 124_412_160)])
def test_parameter_count_of_124m_equals_the_models_leaves(tied, expected):
    cfg = GPT_CONFIG_124M.replace(tie_embeddings=tied)
    abstract = nnx.eval_shape(lambda: GPT(cfg, rngs=nnx.Rngs(0)))
    assert count_params(abstract) == parameter_count(cfg) == expected


@pytest.mark.parametrize("changes", [{}, {"qkv_bias": True}, {"tie_embeddings": True},
                                     {"n_layers": 3, "qkv_bias": True, "tie_embeddings": True}])
def test_parameter_count_formula_matches_small_models(changes):
    cfg = TINY.replace(**changes)
    assert count_params(GPT(cfg, rngs=nnx.Rngs(1))) == parameter_count(cfg)


def test_blocks_are_stacked_along_a_layer_axis(model):
    _, params = split_params(model)
    for leaf in jax.tree.leaves(params["blocks"]):
        assert leaf.shape[0] == TINY.n_layers
    assert params["blocks"]["attn"]["qkv"]["kernel"].shape == (2, 32, 96)
    assert "bias" not in params["blocks"]["attn"]["qkv"]  # qkv_bias=False


def test_logits_shape_and_dtype(model):
    logits = model(_ids(0, b=3, t=7))
    assert logits.shape == (3, 7, TINY.vocab_size) and logits.dtype == jnp.float32


@pytest.fixture(scope="module")
def jitted_forward(model):
    graphdef, params = split_params(model)
    forward = jax.jit(lambda p, ids: nnx.merge(graphdef, p)(ids))
    return lambda ids: forward(params, ids)


@given(seed=st.integers(0, 1000), j=st.integers(1, 11))
def test_changing_a_later_token_never_changes_earlier_logits(jitted_forward, seed, j):
    ids = _ids(seed)
    changed = ids.at[:, j].set((ids[:, j] + 1) % TINY.vocab_size)
    a, b = jitted_forward(ids), jitted_forward(changed)
    chex.assert_trees_all_close(a[:, :j], b[:, :j], atol=1e-6)
    assert float(jnp.abs(a[:, j] - b[:, j]).max()) > 1e-4  # position j itself does change


def test_dropout_is_off_in_eval_and_keyed_in_training(model):
    ids = _ids(1)
    chex.assert_trees_all_equal(model(ids), model(ids))
    k1, k2 = jax.random.key(1), jax.random.key(2)
    train1 = model(ids, deterministic=False, rng=k1)
    chex.assert_trees_all_equal(train1, model(ids, deterministic=False, rng=k1))
    assert float(jnp.abs(train1 - model(ids, deterministic=False, rng=k2)).max()) > 1e-3
    assert float(jnp.abs(train1 - model(ids)).max()) > 1e-3
    with pytest.raises(ValueError, match="rng .* is required when deterministic=False"):
        model(ids, deterministic=False)


def test_initialisation_follows_gpt2():
    cfg = TINY.replace(emb_dim=256, n_layers=8, n_heads=4, vocab_size=500)
    _, p = split_params(GPT(cfg, rngs=nnx.Rngs(0)))
    np.testing.assert_allclose(float(p["tok_emb"]["embedding"].std()), 0.02, rtol=0.03)
    np.testing.assert_allclose(float(p["blocks"]["mlp"]["fc"]["kernel"].std()), 0.02, rtol=0.03)
    np.testing.assert_allclose(float(p["blocks"]["mlp"]["proj"]["kernel"].std()),
                               0.02 / np.sqrt(2 * 8), rtol=0.03)
    np.testing.assert_allclose(float(p["blocks"]["attn"]["proj"]["kernel"].std()),
                               0.02 / np.sqrt(2 * 8), rtol=0.03)
    assert float(jnp.abs(p["blocks"]["mlp"]["fc"]["bias"]).max()) == 0.0
    assert float(p["ln_f"]["scale"].min()) == 1.0


@pytest.mark.parametrize("remat, scan_layers", [(True, True), ("dots", True), (False, False),
                                                ("dots", False)])
def test_remat_and_unrolled_layers_give_the_same_loss_and_gradients(remat, scan_layers):
    """Against the scanned model without remat, dropout on: the same keys reach each layer;
    unrolled, the program has no loop left."""
    ids = _ids(2)
    grads = []
    for setting, scan in ((False, True), (remat, scan_layers)):
        graphdef, params = split_params(GPT(TINY, remat=setting, scan_layers=scan,
                                            rngs=nnx.Rngs(0)))
        def loss(p, graphdef=graphdef):
            return lm_loss(nnx.merge(graphdef, p), ids[:, :-1], ids[:, 1:], jax.random.key(0))

        grads.append(jax.jit(jax.value_and_grad(loss))(params))
    forward = jax.jit(lambda p: nnx.merge(graphdef, p)(ids)).lower(params).as_text()
    assert ("stablehlo.while" in forward) == scan_layers  # dropout's random bits loop too
    chex.assert_trees_all_close(grads[0], grads[1], rtol=1e-5, atol=1e-7)


def test_bf16_compute_keeps_float32_parameters_and_close_logits():
    ids = _ids(3)
    f32 = GPT(TINY, rngs=nnx.Rngs(0))
    bf16 = GPT(TINY, dtype=jnp.bfloat16, rngs=nnx.Rngs(0))
    assert {leaf.dtype for leaf in jax.tree.leaves(split_params(bf16)[1])} == {jnp.dtype("float32")}
    a, b = f32(ids), bf16(ids)
    assert b.dtype == jnp.float32
    np.testing.assert_allclose(b, a, atol=0.05)
    assert float(jnp.abs(a - b).max()) > 0  # bf16 really ran


def test_kv_cache_decode_equals_full_forward(model):
    ids = _ids(4)
    full = model(ids)
    cache = init_cache(TINY, 2, 12)
    prefill, cache = model.decode(ids[:, :5], cache, 0)
    chex.assert_trees_all_close(prefill, full[:, :5], atol=1e-5)
    for t in range(5, 12):
        step, cache = model.decode(ids[:, t:t + 1], cache, t)
        chex.assert_trees_all_close(step[:, 0], full[:, t], atol=1e-5)


@pytest.mark.parametrize("ids, error, fragment", [
    (jnp.zeros((2, 4), jnp.float32), TypeError, "idx must have an integer dtype"),
    (jnp.zeros((4,), jnp.int32), ValueError, "idx must have shape (batch, seq_len), got (4,)"),
    (jnp.zeros((1, 13), jnp.int32), ValueError, "13 tokens per sequence, more than context_length=12"),
    (jnp.full((1, 3), 61, jnp.int32), ValueError, "token ids in [0, 61), got values from 61 to 61"),
    (jnp.full((1, 3), -1, jnp.int32), ValueError, "got values from -1 to -1"),
    (jnp.zeros((1, 0), jnp.int32), ValueError, "idx must not be empty"),
])
def test_bad_token_inputs_are_named(model, ids, error, fragment):
    with pytest.raises(error) as info:
        model(ids)
    assert fragment in str(info.value)


def test_bad_model_arguments():
    with pytest.raises(TypeError, match="cfg must be a GPTConfig, got dict"):
        GPT({"emb_dim": 3}, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="max_len must be <= context_length 12, got 13"):
        init_cache(TINY, 1, 13)
    with pytest.raises(ValueError, match="remat must be False, True, 'full', 'dots' or a name"):
        GPT(TINY, remat="sometimes", rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="scan_layers must be True or False, got 'no'"):
        GPT(TINY, scan_layers="no", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"attention implementation must be one of .* got 'sdpa'"):
        GPT(TINY, attention="sdpa", rngs=nnx.Rngs(0))
    for dtype in ("float8", jnp.int32, "not-a-dtype"):
        with pytest.raises(TypeError, match=rf"dtype must be a floating dtype .*got {dtype!r}"):
            GPT(TINY, dtype=dtype, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"attention='cudnn' needs bfloat16 or float16 compute "
                                         r"\(cuDNN's flash attention\), got float32; use "):
        GPT(TINY, attention="cudnn", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=r"attention='cudnn' needs no dropout .*got drop_rate 0.1"):
        GPT(TINY, dtype=jnp.bfloat16, attention="cudnn", rngs=nnx.Rngs(0))
    bare = TINY.replace(drop_rate=0.0)
    with pytest.raises(ValueError, match="needs one attention scale for every block"):
        GPT(bare.replace(scale_attn_by_inverse_layer_idx=True), dtype=jnp.bfloat16,
            attention="cudnn", rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="a multiple of 8 and at most 128, got 6; use "):
        GPT(bare.replace(emb_dim=24), dtype=jnp.float16, attention="cudnn", rngs=nnx.Rngs(0))
    with pytest.raises(TypeError, match="cfg must be a GPTConfig, got str 'gpt2'"):
        parameter_count("gpt2")


@pytest.mark.parametrize("rng, shown", [
    (0, "int 0"), (jax.random.split(jax.random.key(0), 3), "array of shape (3,)")])
def test_training_mode_refuses_anything_but_one_random_key(model, rng, shown):
    with pytest.raises(TypeError, match=r"rng must be one JAX random key .*got .*" + re.escape(shown)):
        model(_ids(0), deterministic=False, rng=rng)


def test_a_legacy_prngkey_drops_out_as_its_typed_key(model):
    legacy = model(_ids(0), deterministic=False, rng=jax.random.PRNGKey(7))
    typed = model(_ids(0), deterministic=False, rng=jax.random.wrap_key_data(jax.random.PRNGKey(7)))
    chex.assert_trees_all_equal(legacy, typed)
    assert not np.allclose(legacy, model(_ids(0)))  # dropout really ran


def test_decode_refuses_a_cache_of_another_shape_and_positions_past_its_end(model):
    ids = _ids(5, b=2, t=4)
    # pos + T past the cache's end: XLA would clamp the write and return wrong logits silently
    with pytest.raises(ValueError, match=r"pos must be in \[0, cache length 8 - T 4\] = \[0, 4\] for "
                                         r"idx of shape \(2, 4\), got 6"):
        model.decode(ids, init_cache(TINY, 2, 8), 6)
    with pytest.raises(ValueError, match=r"got -1"):
        model.decode(ids, init_cache(TINY, 2, 8), jnp.int32(-1))
    with pytest.raises(ValueError, match=r"cache\['k'\] must have shape \(2, 2, S, 4, 8\) .*got "
                                         r"\(2, 1, 8, 4, 8\)"):
        model.decode(ids, init_cache(TINY, 1, 8), 0)
    cache = init_cache(TINY, 2, 8)
    with pytest.raises(ValueError, match=r"cache\['v'\] must have the shape of cache\['k'\] "
                                         r"\(2, 2, 8, 4, 8\), got \(2, 2, 6, 4, 8\)"):
        model.decode(ids, {"k": cache["k"], "v": cache["v"][:, :, :6]}, 0)
    with pytest.raises(ValueError, match=r"cache must be init_cache\(\)'s dict with keys 'k' and 'v', "
                                         r"got tuple"):
        model.decode(ids, (cache["k"], cache["v"]), 0)
    # the last position that fits is accepted and equals the full forward pass there
    last, _ = model.decode(ids, init_cache(TINY, 2, 8), 4)
    assert last.shape == (2, 4, TINY.vocab_size)


def test_token_ids_closed_over_by_a_jitted_function_are_checked_not_traced(model):
    ids = jnp.array([[1, 2, 3]])
    graphdef, params = split_params(model)
    logits = jax.jit(lambda p: nnx.merge(graphdef, p)(ids))(params)  # ids: a constant here
    np.testing.assert_allclose(logits, model(ids), rtol=1e-5, atol=1e-6)
    bad = jnp.array([[1, 2, TINY.vocab_size]])
    with pytest.raises(ValueError, match=f"idx must hold token ids in \\[0, {TINY.vocab_size}\\)"):
        jax.jit(lambda p: nnx.merge(graphdef, p)(bad))(params)


def test_a_model_built_for_cudnn_attention_decodes_through_xla():
    """cuDNN's kernel takes no KV cache, so generation with a model built with
    ``attention="cudnn"`` (as train builds it on an NVIDIA GPU in bf16) runs XLA's attention:
    on any device, token for token what the same weights give built with ``"xla"``."""
    from jaxbasics.gpt.generate import generate

    cfg = TINY.replace(drop_rate=0.0)
    prompt = jnp.asarray([[1, 2, 3], [4, 5, 6]])
    fast, plain = (GPT(cfg, dtype=jnp.bfloat16, attention=a, rngs=nnx.Rngs(0))
                   for a in ("cudnn", "xla"))
    np.testing.assert_array_equal(generate(fast, prompt, 6), generate(plain, prompt, 6))
