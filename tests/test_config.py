"""GPTConfig: the chapter's values, presets, validation, exact parameter counts."""

import pytest

from jaxbasics.gpt.config import GPT_CONFIG_124M, PRESETS, GPTConfig, parameter_count


def test_gpt_config_124m_is_the_chapters():
    assert GPT_CONFIG_124M.to_dict() == {
        "vocab_size": 50257, "context_length": 1024, "emb_dim": 768, "n_heads": 12,
        "n_layers": 12, "drop_rate": 0.1, "qkv_bias": False, "tie_embeddings": False}


def test_parameter_counts_of_124m():
    assert parameter_count(GPT_CONFIG_124M) == 163_009_536
    assert parameter_count(GPT_CONFIG_124M, tie_embeddings=True) == 124_412_160
    released = GPT_CONFIG_124M.replace(qkv_bias=True, tie_embeddings=True)
    assert parameter_count(released) == 124_439_808
    assert parameter_count(GPT_CONFIG_124M, include_position=False) == 163_009_536 - 1024 * 768


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
])
def test_invalid_configs_are_refused(changes, error, fragment):
    with pytest.raises(error) as info:
        GPT_CONFIG_124M.replace(**changes)
    assert fragment in str(info.value)


def test_config_is_frozen_and_has_head_dim():
    with pytest.raises(AttributeError):
        GPT_CONFIG_124M.emb_dim = 1  # type: ignore[misc]
    assert GPTConfig(emb_dim=64, n_heads=4).head_dim == 16
