"""Loading Hugging Face GPT-2 checkpoints: logit and generation parity with transformers."""

import json

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

from jaxbasics.gpt.data import ByteTokenizer
from jaxbasics.gpt.generate import encode_prompt, generate
from jaxbasics.gpt.hf import config_from_hf, load_gpt2, load_tokenizer


def _save_tiny(path, tie=True, seed=0, **options):
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=97, n_positions=24, n_embd=32, n_layer=3, n_head=4,
                     tie_word_embeddings=tie, bos_token_id=0, eos_token_id=0,
                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, **options)
    model = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():  # random LayerNorm and bias values, so a mix-up would show
        for name, p in model.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    model.save_pretrained(path)
    return model


@pytest.mark.parametrize("tie", [True, False])
def test_logits_match_transformers(tmp_path, tie):
    hf = _save_tiny(tmp_path, tie=tie)
    ours = load_gpt2(tmp_path)
    assert ours.cfg.qkv_bias and ours.cfg.tie_embeddings == tie and ours.cfg.n_layers == 3
    ids = np.random.default_rng(1).integers(0, 97, (2, 24))
    with torch.no_grad():
        want = hf(torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours(ids)), want, atol=1e-4)


@pytest.mark.parametrize("options", [
    {"scale_attn_by_inverse_layer_idx": True, "layer_norm_epsilon": 0.03, "n_inner": 48,
     "activation_function": "gelu", "reorder_and_upcast_attn": True},
    {"scale_attn_weights": False, "activation_function": "relu"},
], ids=["layer-scaled,eps,n_inner,erf-gelu", "unscaled,relu"])
def test_config_options_that_change_the_math_match_transformers(tmp_path, options):
    """These options were loaded as plain GPT-2: with scale_attn_by_inverse_layer_idx the
    logits differed from transformers' by 0.18."""
    hf = _save_tiny(tmp_path, **options)
    ours = load_gpt2(tmp_path)
    ids = np.random.default_rng(5).integers(0, 97, (2, 24))
    with torch.no_grad():
        want = hf(torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(np.asarray(ours(ids)), want, atol=1e-4)
    plain = json.loads((tmp_path / "config.json").read_text())
    for name in set(options) - {"n_inner"}:  # the same weights read as plain GPT-2 differ
        plain.pop(name)
    (tmp_path / "config.json").write_text(json.dumps(plain))
    assert np.abs(np.asarray(load_gpt2(tmp_path)(ids)) - want).max() > 1e-2


def test_greedy_generation_matches_transformers(tmp_path):
    hf = _save_tiny(tmp_path, seed=3)
    ours = load_gpt2(tmp_path)
    prompt = np.random.default_rng(2).integers(1, 97, (2, 6))
    with torch.no_grad():
        want = hf.generate(torch.from_numpy(prompt), max_new_tokens=14, do_sample=False,
                           pad_token_id=0, eos_token_id=None).numpy()
    np.testing.assert_array_equal(np.asarray(generate(ours, prompt, 14)), want)


def test_sharded_and_half_precision_checkpoints_load_the_same_model(tmp_path):
    """save_pretrained's sharded form (model.safetensors.index.json + shards) and a bf16 save
    give the single-file float32 model's logits (bf16: those of the rounded weights)."""
    hf = _save_tiny(tmp_path / "one")
    hf.save_pretrained(tmp_path / "sharded", max_shard_size="20KB")
    assert len(list((tmp_path / "sharded").glob("model-*.safetensors"))) > 1
    ids = np.random.default_rng(4).integers(0, 97, (2, 24))
    want = np.asarray(load_gpt2(tmp_path / "one")(ids))
    np.testing.assert_array_equal(np.asarray(load_gpt2(tmp_path / "sharded")(ids)), want)
    hf.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    with torch.no_grad():
        rounded = hf.float()(torch.from_numpy(ids)).logits.numpy()
    np.testing.assert_allclose(np.asarray(load_gpt2(tmp_path / "bf16")(ids)), rounded, atol=1e-5)
    assert np.abs(rounded - want).max() > 1e-4  # the bf16 file really held rounded weights
    next((tmp_path / "sharded").glob("model-00002-*.safetensors")).unlink()
    with pytest.raises(FileNotFoundError, match=r"index.json lists 1 shard\(s\) not in .*: "
                                                r"model-00002-of-"):
        load_gpt2(tmp_path / "sharded")
    index = tmp_path / "sharded" / "model.safetensors.index.json"
    for text, fragment in (("{", "index.json is not a JSON file (Expecting property name"),
                           ('{"metadata": {}}', "index.json must map tensor names to file names "
                                                "under 'weight_map', got NoneType"),
                           ('{"weight_map": {"wte.weight": 3}}', "got file names that are not "
                                                                 "strings")):
        index.write_text(text)
        with pytest.raises(ValueError) as info:
            load_gpt2(tmp_path / "sharded")
        assert fragment in str(info.value)


def test_shape_disagreeing_with_config_is_named(tmp_path):
    _save_tiny(tmp_path)
    tensors = load_file(str(tmp_path / "model.safetensors"))
    key = next(k for k in tensors if k.endswith("h.1.mlp.c_fc.weight"))
    tensors[key] = np.zeros((32, 64), np.float32)
    save_file(tensors, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=r"tensor 'h.1.mlp.c_fc.weight' has shape \(32, 64\), "
                                         r"but config.json implies \(32, 128\)"):
        load_gpt2(tmp_path)


def test_missing_and_unexpected_tensors_are_refused(tmp_path):
    _save_tiny(tmp_path)
    cfg = json.loads((tmp_path / "config.json").read_text())
    cfg["n_layer"] = 4
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match=r"12 tensor\(s\) of a 4-layer GPT-2 missing from the "
                       r"checkpoint: h.3.attn.c_attn.bias, .*, h.3.ln_1.weight …"):
        load_gpt2(tmp_path)
    cfg["n_layer"] = 2
    (tmp_path / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ValueError, match="unexpected tensors for a 2-layer GPT-2"):
        load_gpt2(tmp_path)


def test_missing_files_and_foreign_configs(tmp_path):
    with pytest.raises(FileNotFoundError, match="config.json not found"):
        load_gpt2(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama"}))
    with pytest.raises(ValueError, match="model_type must be 'gpt2', got 'llama'"):
        config_from_hf(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"n_embd": 8, "n_head": 2}))
    with pytest.raises(ValueError, match="config.json lacks vocab_size, n_layer: not a GPT-2 config"):
        config_from_hf(tmp_path)
    (tmp_path / "config.json").write_text("{'vocab_size': 10}")
    with pytest.raises(ValueError, match=r"config.json is not a JSON file \(Expecting property name"):
        config_from_hf(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="config.json must hold a JSON object, got list"):
        config_from_hf(tmp_path)
    sizes = {"vocab_size": 10, "n_embd": 8, "n_head": 2, "n_layer": 1}
    for extra, message in (
            ({"activation_function": "gelu_fast"}, "activation_function must be one of "
                                                   r"\['gelu', .*\], got 'gelu_fast'"),
            ({"add_cross_attention": True}, "add_cross_attention=True changes the model in a "
                                            "way jaxbasics' GPT does not implement"),
            ({"n_inner": 0}, r"n_inner \(GPTConfig.mlp_dim\) must be a positive"),
            ({"layer_norm_epsilon": "1e-5"}, r"layer_norm_epsilon \(GPTConfig.ln_eps\) must be "
                                             r"a number in \(0, 1\), got '1e-5'"),
            ({"n_head": 3}, r"n_embd \(GPTConfig.emb_dim\) must be divisible by n_heads"),
            ({"scale_attn_weights": "yes"}, "scale_attn_weights must be a bool, got 'yes'")):
        (tmp_path / "config.json").write_text(json.dumps({**sizes, **extra}))
        with pytest.raises(ValueError, match=message):
            load_gpt2(tmp_path)  # refused before the (absent) weights are looked for
    (tmp_path / "config.json").write_text(json.dumps(sizes))
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        load_gpt2(tmp_path)


def test_tokenizer_files_are_used_and_bytes_only_when_asked_for(tmp_path, capsys):
    """A GPT-2 directory without tokenizer files had its prompt read as raw bytes, silently."""
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path} has no tokenizer \(tokenizer.json, "
                       r"or vocab.json and merges.txt\).*jaxbasics generate --byte-tokens"):
        load_tokenizer(tmp_path)
    assert isinstance(load_tokenizer(tmp_path, byte_fallback=True), ByteTokenizer)
    from jaxbasics.cli import main

    assert main(["generate", "--hf", str(tmp_path), "--prompt", "a"]) == 2  # before any weights
    assert capsys.readouterr().err.startswith(f"jaxbasics generate: {tmp_path} has no tokenizer")
    from tokenizers import ByteLevelBPETokenizer

    bpe = ByteLevelBPETokenizer()
    bpe.train_from_iterator(["the quick brown fox jumps over the lazy dog"] * 20,
                            vocab_size=300, min_frequency=1)
    bpe.save_model(str(tmp_path))
    tok = load_tokenizer(tmp_path)
    ids = tok.encode("the lazy fox")
    assert len(ids) < len("the lazy fox")  # merges applied, not bytes
    assert tok.decode(ids) == "the lazy fox"
    # a model with only the 256 byte-level ids cannot take " the" (a merge): named, not a range
    with pytest.raises(ValueError, match=r"prompt character ' ' at position 3 is token id "
                       r"\d+ of the test tokenizer, outside the model's vocabulary \[0, 256\)"):
        encode_prompt(tok, "zzz the", 256, name="the test tokenizer")


def test_a_prompt_outside_the_vocabulary_names_the_character(tmp_path, capsys):
    """It said only 'idx must hold token ids in [0, 97)'."""
    np.testing.assert_array_equal(encode_prompt(ByteTokenizer(), "AB", 97), [[65, 66]])
    with pytest.raises(ValueError, match="the prompt '' encodes to no tokens"):
        encode_prompt(ByteTokenizer(), "", 97)
    with pytest.raises(ValueError, match=r"prompt character 'é' at position 2 is token id 195 of "
                       r"ByteTokenizer, outside the model's vocabulary \[0, 128\) \(2 of the "
                       r"prompt's 5 tokens are\)"):
        encode_prompt(ByteTokenizer(), "ABéC", 128)  # é: two bytes, one character
    _save_tiny(tmp_path)
    from jaxbasics.cli import main

    capsys.readouterr()
    assert main(["generate", "--hf", str(tmp_path), "--byte-tokens", "--prompt", "AB a"]) == 2
    assert capsys.readouterr().err == (
        "jaxbasics generate: prompt character 'a' at position 3 is token id 97 of the byte-level "
        "tokenizer (--byte-tokens), outside the model's vocabulary [0, 97) (1 of the prompt's 4 "
        "tokens are)\n")


@pytest.mark.parametrize("damage", ["empty", "truncated", "not safetensors"])
def test_a_damaged_weights_file_is_named_not_a_safetensors_traceback(tmp_path, capsys, damage):
    _save_tiny(tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes({"empty": b"", "truncated": data[: len(data) // 2],
                         "not safetensors": b"<html>rate limited</html>"}[damage])
    with pytest.raises(ValueError, match=rf"{weights} is damaged or incomplete: not a safetensors "
                       "file that can be read"):
        load_gpt2(tmp_path)
    from jaxbasics.cli import main

    capsys.readouterr()  # save_pretrained's progress bar
    assert main(["generate", "--hf", str(tmp_path), "--byte-tokens", "--prompt", "a"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"jaxbasics generate: {weights} is damaged or incomplete")
    assert "Traceback" not in err
