"""``evaluate`` and ``jaxbasics eval``: perplexity and bits per byte of a Hugging Face GPT-2 equal
transformers' on the same text, with and without a stride; a run directory scores as its model."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch
from transformers import GPT2Config, GPT2LMHeadModel

from jaxbasics.cli import main
from jaxbasics.data.batches import TokenData
from jaxbasics.data.vocab import train_bpe
from jaxbasics.gpt.evaluate import evaluate
from jaxbasics.gpt.hf import load_gpt2

CONTEXT = 16
TEXTS = ["The quick brown fox jumps over the lazy dog. " * 3,
         "Der schnelle braune Fuchs springt über den faulen Hund.",
         "Le vif renard brun saute par-dessus le chien paresseux, à côté de l'église.",
         "Быстрая коричневая лиса прыгает через ленивую собаку.",
         "敏捷的棕色狐狸跳过了懒狗。日本語の文章もあります。",
         "def add(a, b):\n    return a + b\n\nprint(add(2, 3))\n",
         "Ἐν ἀρχῇ ἦν ὁ λόγος — and then the story went on for a while.",
         "🙂 emoji, tabs\tand\nnew lines\n\n   spaces   too"]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A random transformers GPT-2 (with random LayerNorms and biases) saved as safetensors with a
    BPE tokenizer trained here, and the corpus prepared with that tokenizer."""
    root = tmp_path_factory.mktemp("eval")
    tok = train_bpe(TEXTS * 4, 320, min_frequency=1)
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=tok.vocab_size, n_positions=CONTEXT, n_embd=32, n_layer=2,
                     n_head=4, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0)
    hf = GPT2LMHeadModel(cfg).eval()
    with torch.no_grad():
        for name, p in hf.named_parameters():
            if "ln" in name or name.endswith("bias"):
                p.add_(0.1 * torch.randn_like(p))
    hf.save_pretrained(root / "hf")
    assert (root / "hf" / "model.safetensors").is_file()
    tok.save(root / "hf")
    corpus = root / "corpus"
    corpus.mkdir()
    for i, text in enumerate(TEXTS * 3):
        (corpus / f"doc{i:02d}.txt").write_text(f"{i}: {text}", encoding="utf-8")
    assert main(["prepare", str(corpus), "--out", str(root / "data"), "--tokenizer",
                 str(root / "hf"), "--val-fraction", "0.4", "--context", str(CONTEXT),
                 "--quiet"]) == 0
    return root, hf


def _llmc_tokens(path):
    """An llm.c shard read with nothing but NumPy: 256 int32 of header, then uint16 tokens."""
    header = np.fromfile(path, "<i4", count=256)
    assert header[0] == 20240520 and header[1] == 1
    tokens = np.fromfile(path, "<u2", offset=1024)
    assert tokens.size == header[2]
    return tokens


def _reference(hf, tokens, context, stride):
    """Sum of -log p(t_j | history) over j = 1..n-1 and the count, from transformers' logits,
    each token scored once: windows of `context` inputs moved by `stride` (the last one moved
    back to end at the split's end), each scoring the targets the earlier ones did not."""
    n, total, count, scored_to, begin = len(tokens), 0.0, 0, 0, 0
    while scored_to < n - 1:
        begin = min(begin, n - 1 - context)
        ids = torch.from_numpy(tokens[begin: begin + context].astype(np.int64))[None]
        with torch.no_grad():
            logp = torch.log_softmax(hf(ids).logits[0].double(), -1).numpy()
        for i in range(context):
            j = begin + 1 + i
            if j > scored_to:
                total -= logp[i, tokens[j]]
                count += 1
        scored_to, begin = begin + context, begin + stride
    return total, count


@pytest.mark.parametrize("stride", [None, 5], ids=["no-stride", "stride-5"])
def test_perplexity_and_bits_per_byte_equal_transformers(tiny, stride, capsys):
    root, hf = tiny
    manifest = json.loads((root / "data" / "manifest.json").read_text())
    tokens = np.concatenate([_llmc_tokens(root / "data" / s)
                             for s in manifest["splits"]["val"]["shards"]])
    assert len(tokens) > 4 * CONTEXT  # several windows, the last one moved back
    want_nll, want_count = _reference(hf, tokens, CONTEXT, stride or CONTEXT)
    assert want_count == len(tokens) - 1
    want_ppl = math.exp(want_nll / want_count)
    if stride is None:
        got = evaluate(load_gpt2(root / "hf"), TokenData.open(root / "data", "val"), batch_size=3)
        got = got.as_dict()
    else:
        capsys.readouterr()
        assert main(["eval", "--hf", str(root / "hf"), "--data", str(root / "data"),
                     "--stride", str(stride), "--batch-size", "3", "--json"]) == 0
        got = json.loads(capsys.readouterr().out)
    assert got["tokens"] == want_count and got["stride"] == (stride or CONTEXT)
    assert got["perplexity"] == pytest.approx(want_ppl, rel=1e-4)
    # every token scored once, the first (end-of-text) never: the bytes are the split's text
    assert got["bytes"] == manifest["splits"]["val"]["bytes"]
    assert got["bits_per_byte"] == pytest.approx(want_nll / math.log(2) / got["bytes"], rel=1e-4)


@pytest.mark.slow
def test_a_run_directory_scores_as_its_model_and_mismatches_are_named(tiny, tmp_path, capsys):
    """eval --run reads the run's model (and its tokenizer folder) through gpt.runs.load_run."""
    from jaxbasics.data.vocab import load_tokenizer
    from jaxbasics.gpt import checkpoint
    from jaxbasics.gpt.model import parameter_table
    from jaxbasics.gpt.runs import load_run
    from jaxbasics.gpt.train import TrainOptions, build_model, make_optimizer
    from jaxbasics.params import split_params

    root, _ = tiny
    hf_model = load_gpt2(root / "hf")
    opts = TrainOptions(remat=False)
    model = build_model(hf_model.cfg, opts)
    _, params = split_params(model)
    _, hf_params = split_params(hf_model)
    opt_state = make_optimizer(opts, parameter_table(model)).init(params)
    # trained with cuDNN's attention (on a GPU): the kernel is this machine's choice on loading,
    # or a run from a GPU could not be scored, sampled or exported on a laptop
    checkpoint.save(tmp_path / "run", 3, hf_params, opt_state,
                    {"config": hf_model.cfg.to_dict(),
                     "options": {**dataclasses.asdict(opts), "attention": "cudnn"},
                     "task": {"kind": "test"}, "history": []})
    load_tokenizer(root / "hf").save(tmp_path / "run" / "tokenizer")
    loaded, tok = load_run(tmp_path / "run")
    assert loaded.attention == "xla"
    assert tok.encode(TEXTS[1]) == load_tokenizer(root / "hf").encode(TEXTS[1])
    capsys.readouterr()
    assert main(["eval", "--run", str(tmp_path / "run"), "--data", str(root / "data"),
                 "--batch-size", "3", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = evaluate(hf_model, TokenData.open(root / "data", "val"), batch_size=3)
    assert got["loss"] == pytest.approx(want.loss, rel=1e-6) and got["tokens"] == want.tokens
    for args, message in (
            (["--stride", "17"], "stride must be in [1, context=16], got 17"),
            (["--context", "32"], "context 32 exceeds the model's context_length 16"),
            (["--split", "test"], "has no 'test' split (it has train, val"),
            (["--batch-size", "0"], "--batch-size must be a positive integer, got 0")):
        assert main(["eval", "--hf", str(root / "hf"), "--data", str(root / "data"), *args]) == 2
        err = capsys.readouterr().err
        assert err.startswith("jaxbasics eval: ") and message in err and err.count("\n") == 1
    # data of another tokenizer (bytes: ids that mean other text to the model), and a model
    # folder that does not say which tokenizer it was trained with, are refused by name
    assert main(["prepare", str(root / "corpus"), "--out", str(tmp_path / "bytes"), "--bytes",
                 "--val-fraction", "0.4", "--context", str(CONTEXT), "--quiet"]) == 0
    (tmp_path / "bare").mkdir()
    for name in ("config.json", "model.safetensors"):
        (tmp_path / "bare" / name).write_bytes((root / "hf" / name).read_bytes())
    capsys.readouterr()
    for args, message in (
            (["--run", str(tmp_path / "run"), "--data", str(tmp_path / "bytes")],
             f"--run {tmp_path / 'run'} was trained with another tokenizer (BPE, "),
            (["--hf", str(root / "hf"), "--data", str(tmp_path / "bytes")],
             f"than --data {tmp_path / 'bytes'} was prepared with (byte ids + end-of-text, 257 "
             f"ids"),
            (["--hf", str(tmp_path / "bare"), "--data", str(root / "data")],
             "has no tokenizer (tokenizer.json, or vocab.json and merges.txt): without them")):
        assert main(["eval", *args]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
    small = dataclasses.replace(hf_model.cfg, vocab_size=200)
    with pytest.raises(ValueError, match=r"vocabulary of \d+ ids, the model only 200"):
        evaluate(build_model(small, opts), TokenData.open(root / "data", "val"))
