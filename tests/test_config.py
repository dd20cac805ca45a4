"""GPTConfig: the chapter's values, presets, validation, exact parameter counts."""

import pytest

from jaxbasics.gpt.config import (
    GPT_CONFIG_124M,
    PRESETS,
    GPTConfig,
    flops_per_token,
    parameter_count,
)


def test_gpt_config_124m_is_the_chapters():
    assert GPT_CONFIG_124M.to_dict() == {
        "vocab_size": 50257, "context_length": 1024, "emb_dim": 768, "n_heads": 12,
        "n_layers": 12, "drop_rate": 0.1, "qkv_bias": False, "tie_embeddings": False,
        # GPT-2's architecture, which the chapter takes as given
        "ln_eps": 1e-5, "mlp_dim": None, "activation": "gelu_tanh", "scale_attn_weights": True,
        "scale_attn_by_inverse_layer_idx": False}
    assert GPT_CONFIG_124M.hidden_dim == 3072 and GPT_CONFIG_124M.attention_scale() == 0.125


def test_config_from_a_dict_fills_defaults_and_names_what_it_cannot_take():
    old = {k: v for k, v in GPT_CONFIG_124M.to_dict().items() if k != "ln_eps"}
    assert GPTConfig.from_dict(old) == GPT_CONFIG_124M  # a sidecar written before ln_eps
    with pytest.raises(ValueError, match="run.json has fields GPTConfig does not know: rope"):
        GPTConfig.from_dict({**old, "rope": True}, "run.json")
    with pytest.raises(ValueError, match="run.json: activation must be one of"):
        GPTConfig.from_dict({**old, "activation": "tanh"}, "run.json")
    with pytest.raises(ValueError, match="must be a JSON object of GPTConfig fields, got list"):
        GPTConfig.from_dict([1])


def test_parameter_counts_of_124m():
    assert parameter_count(GPT_CONFIG_124M) == 163_009_536
    assert parameter_count(GPT_CONFIG_124M, tie_embeddings=True) == 124_412_160
    released = GPT_CONFIG_124M.replace(qkv_bias=True, tie_embeddings=True)
    assert parameter_count(released) == 124_439_808
    assert parameter_count(GPT_CONFIG_124M, include_position=False) == 163_009_536 - 1024 * 768
    narrow = GPT_CONFIG_124M.replace(mlp_dim=1000)  # per block: 2·768·(1000 - 3072) + 1000 - 3072
    assert parameter_count(narrow) == 163_009_536 - 12 * (2 * 768 * 2072 + 2072)


def test_presets_have_the_published_sizes():
    tied = {name: parameter_count(cfg.replace(qkv_bias=True), tie_embeddings=True)
            for name, cfg in PRESETS.items()}
    # Hugging Face's num_parameters() for gpt2, gpt2-medium, gpt2-large, gpt2-xl
    assert tied == {"gpt2": 124_439_808, "gpt2-medium": 354_823_168,
                    "gpt2-large": 774_030_080, "gpt2-xl": 1_557_611_200}


@pytest.mark.parametrize("changes, error, fragment", [
    ({"n_heads": 5}, ValueError, "emb_dim must be divisible by n_heads, got emb_dim=768 and n_heads=5"),
    ({"emb_dim": 0}, ValueError, "emb_dim must be a positive integer, got 0"),
    ({"n_layers": 2.5}, ValueError, "n_layers must be a positive integer, got 2.5"),
    ({"drop_rate": 1.0}, ValueError, "drop_rate must be in [0, 1), got 1.0"),
    ({"drop_rate": -0.1}, ValueError, "drop_rate must be in [0, 1)"),
    ({"qkv_bias": 1}, TypeError, "qkv_bias must be a bool, got 1"),
    ({"n_embd": 3}, TypeError, "unknown GPTConfig field(s): n_embd"),
    ({"mlp_dim": 0}, ValueError, "mlp_dim must be a positive integer, got 0"),
    ({"ln_eps": 0.0}, ValueError, "ln_eps must be a number in (0, 1), got 0.0"),
    ({"activation": "tanh"}, ValueError, "activation must be one of ('gelu_tanh', 'gelu', "),
    ({"scale_attn_by_inverse_layer_idx": 1}, TypeError,
     "scale_attn_by_inverse_layer_idx must be a bool, got 1"),
])
def test_invalid_configs_are_refused(changes, error, fragment):
    with pytest.raises(error) as info:
        GPT_CONFIG_124M.replace(**changes)
    assert fragment in str(info.value)


def test_config_is_frozen_and_has_head_dim():
    with pytest.raises(AttributeError):
        GPT_CONFIG_124M.emb_dim = 1  # type: ignore[misc]
    assert GPTConfig(emb_dim=64, n_heads=4).head_dim == 16


def test_flops_per_token_counted_by_hand():
    cfg = GPTConfig(vocab_size=10, context_length=8, emb_dim=4, n_heads=2, n_layers=1)
    # weights that multiply (no position table, and the token table is a lookup too): block:
    # LayerNorm 8, QKV 3·4·4 = 48, out-proj 16 + 4 = 20, LayerNorm 8, MLP 4·16 + 16 = 80 and
    # 16·4 + 4 = 68; final LayerNorm 8; head 10·4 = 40: N = 232 + 8 + 40 = 280
    # attention per token: Q·Kᵀ and scores·V, 2·T·d each, ×3 for the backward: 12·L·T·d
    assert flops_per_token(cfg) == 6 * 280 + 12 * 1 * 8 * 4 == 2064
    assert flops_per_token(cfg, 4) == 6 * 280 + 12 * 1 * 4 * 4 == 1872
    # tied, the one matrix is the head: the same count (the FLOPs do not change)
    assert flops_per_token(cfg.replace(tie_embeddings=True)) == 2064
    # GPT-2 124M untied: 163,009,536 parameters less the two tables; tied it has 124,412,160
    # less the position table, the same N (nanoGPT's estimate_mfu: 6·N + 12·L·H·Q·T, N its
    # tied model's parameters without the position table)
    n = 163_009_536 - 1024 * 768 - 50257 * 768
    assert n == 124_412_160 - 1024 * 768 == 123_625_728
    assert flops_per_token(GPT_CONFIG_124M) == 6 * n + 12 * 12 * 1024 * 768 == 855_000_576
    with pytest.raises(ValueError, match="seq_len must be a positive integer, got 0"):
        flops_per_token(cfg, 0)
    with pytest.raises(TypeError, match="cfg must be a GPTConfig, got str"):
        flops_per_token("gpt2")
