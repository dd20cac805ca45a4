"""GPT-2 both ways (``jaxbasics compare --gpt2``): the object-oriented PyTorch model and the
functional Flax one on identical weights, at a tiny size."""

import json

import numpy as np
import pytest
import torch

from jaxbasics.compare import gpt2_styles
from jaxbasics.compare.torch_gpt import load_from_flax
from jaxbasics.gpt.config import GPTConfig

TINY = "emb=64,layers=2,heads=4,vocab=128,context=16"


@pytest.mark.slow
def test_compare_gpt2_json_has_every_gradient_and_the_documented_keys(tmp_path, capsys):
    from jaxbasics.cli import main

    assert main(["compare", "--gpt2", "--gpt2-size", TINY, "--gpt2-steps", "3",
                 "--gpt2-batch", "2", "--json", "--out", str(tmp_path)]) == 0
    g = json.loads(capsys.readouterr().out)["gpt2"]
    assert g["ok"] and g["config"]["emb_dim"] == 64 and g["config"]["drop_rate"] == 0.0
    assert g["max_abs_logit_diff"] < 1e-5
    assert g["loss"]["torch"] == pytest.approx(g["loss"]["jax"], rel=1e-6)
    # every parameter tensor by its PyTorch name: 2 embeddings, head, final LayerNorm, and
    # per block 2 LayerNorms, qkv kernel (no bias: the chapter's qkv_bias=False), attention
    # projection, MLP in and out
    per_block = ["ln1.weight", "ln1.bias", "attn.qkv.weight", "attn.proj.weight",
                 "attn.proj.bias", "ln2.weight", "ln2.bias", "mlp.fc.weight", "mlp.fc.bias",
                 "mlp.proj.weight", "mlp.proj.bias"]
    assert sorted(g["grad"]) == sorted(
        ["tok_emb.weight", "pos_emb.weight", "head.weight", "ln_f.weight", "ln_f.bias"]
        + [f"blocks.{i}.{n}" for i in range(2) for n in per_block])
    for name, e in g["grad"].items():
        assert e["max_rel_diff"] <= 1e-3, name
    rel = [r["max_rel_diff"] for r in g["grad_worst"]]
    assert rel == sorted(rel, reverse=True)
    a = g["adamw_3"]
    assert len(a["loss_torch"]) == len(a["loss_jax"]) == 3
    np.testing.assert_allclose(a["loss_jax"], a["loss_torch"], rtol=1e-5)
    assert a["max_abs_param_diff"] <= a["tolerance"] and (tmp_path / "gpt2-adamw.png").is_file()
    m = g["memory"]
    assert 0 < m["torch_saved_mib_without_params"] < m["torch_saved_mib"]
    r = m["by_remat"]
    assert m["jax_residual_mib"] == r["none"]["residual_mib"]
    # recomputing more keeps less: the point of remat
    assert r["full"]["residual_mib"] < r["dots"]["residual_mib"] < r["none"]["residual_mib"]
    assert r["full"]["compiled_temp_mib"] < r["none"]["compiled_temp_mib"]
    t = g["time"]
    assert t["jax_first_step_s"] >= t["jax_trace_s"] + t["jax_compile_s"] > 0
    assert t["torch_first_step_s"] > 0 and t["torch_step_ms"] > 0 and t["jax_step_ms"] > 0


def _transposes_nothing(model, params, table):
    """A wrong weight transfer: block 0's attention projection copied as it is, not
    transposed (the kernel is square, so no shape check can see it)."""
    load_from_flax(model, params, table)
    with torch.no_grad():
        model.blocks[0].attn.proj.weight.copy_(
            torch.from_numpy(np.array(params["blocks"]["attn"]["proj"]["kernel"][0])))


@pytest.mark.slow
def test_options_agree_and_a_wrong_transfer_fails_by_name():
    """The PyTorch twin follows the configuration's options (LayerNorm epsilon, MLP width and
    activation, per-layer attention scaling); a kernel left untransposed is found, named."""
    cfg = gpt2_styles.parse_size(TINY).replace(ln_eps=1e-3, mlp_dim=96, activation="gelu",
                                              scale_attn_by_inverse_layer_idx=True)
    good = gpt2_styles.compare_gpt2(cfg, batch_size=2, steps=1, memory=False)
    assert good["ok"]
    bad = gpt2_styles.compare_gpt2(cfg, batch_size=2, steps=1, memory=False,
                                   transfer=_transposes_nothing)
    assert not bad["ok"] and bad["max_abs_logit_diff"] > 1e-3
    worst = bad["grad_worst"][0]
    assert not worst["ok"] and worst["max_rel_diff"] > 1e-2
    failing = {r["name"] for r in bad["grad_worst"] if not r["ok"]}
    assert "blocks.0.attn.proj.weight" in failing


def test_sizes_are_read_or_named():
    assert gpt2_styles.parse_size("small") == gpt2_styles.SMALL
    assert gpt2_styles.parse_size("gpt2").emb_dim == 768
    assert gpt2_styles.parse_size("gpt2").drop_rate == 0.0
    assert gpt2_styles.parse_size("emb=64,layers=2") == gpt2_styles.SMALL.replace(
        emb_dim=64, n_layers=2)
    with pytest.raises(ValueError, match="size must be 'small', one of gpt2, .*got 'emb=x'"):
        gpt2_styles.parse_size("emb=x")
    with pytest.raises(TypeError, match="cfg must be a GPTConfig"):
        gpt2_styles.compare_gpt2("small")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="steps must be a positive integer, got 0"):
        gpt2_styles.compare_gpt2(GPTConfig(), steps=0)
