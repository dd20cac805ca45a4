"""`jaxbasics export`: a run as a Hugging Face GPT-2 folder, checked with transformers itself
(logits to 1e-4, the tokenizer's ids, greedy text equal to `jaxbasics generate`), `eval --hf`
of the export equal to `eval --run`; refusals; and `generate`'s sampling flags on a run."""

import json

import numpy as np
import pytest

from jaxbasics.cli import main
from jaxbasics.data.prepare import PrepareOptions, prepare
from jaxbasics.data.vocab import ByteTokenizer
from jaxbasics.gpt.config import GPTConfig
from jaxbasics.gpt.data import PretrainData
from jaxbasics.gpt.train import TrainOptions, train

# the shapes of tests/test_pretrain.py: its compiled programs serve here too
CFG = GPTConfig(vocab_size=300, context_length=16, emb_dim=32, n_heads=2, n_layers=1,
                drop_rate=0.0)
OPTS = TrainOptions(steps=6, batch_size=4, warmup_steps=1, save_every=3)
DOCS = ["Der schnelle braune Fuchs springt über den faulen Hund. " * 3,
        "The quick brown fox jumps over the lazy dog; 1234567890. " * 3,
        "いろはにほへと ちりぬるを わかよたれそ つねならむ " * 3] * 6
pytestmark = pytest.mark.xdist_group("pretrain")


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """A run on a corpus with a BPE trained by prepare: untied head, no qkv bias."""
    root = tmp_path_factory.mktemp("export")
    (root / "corpus").mkdir()
    for i, text in enumerate(DOCS):
        (root / "corpus" / f"doc{i:02d}.txt").write_text(f"{i}: {text}", encoding="utf-8")
    prepare([root / "corpus"], root / "data", train_vocab=300,
            options=PrepareOptions(val_fraction=0.3, context=16), log=lambda _msg: None)
    data = PretrainData(root / "data", 16, seed=0)
    cfg = CFG.replace(vocab_size=data.vocab_size)
    train(cfg, data, OPTS, run_dir=root / "run")
    return root


def test_an_exported_run_loads_in_transformers_with_its_logits_tokens_and_greedy_text(
        run, capsys):
    import torch
    from transformers import AutoTokenizer, GPT2LMHeadModel

    from jaxbasics.gpt.runs import load_run

    hf = run / "hf"
    assert main(["export", "--run", str(run / "run"), "--out", str(hf)]) == 0
    assert "exported" in capsys.readouterr().out
    config = json.loads((hf / "config.json").read_text())
    assert config["tie_word_embeddings"] is False and config["n_positions"] == 16
    theirs = GPT2LMHeadModel.from_pretrained(hf, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(hf, local_files_only=True)
    model, ours = load_run(run / "run")
    text = "Der schnelle Fuchs über 123"
    ids = ours.encode(text)
    assert tok(text)["input_ids"] == ids and tok.decode(ids) == ours.decode(ids) == text
    assert tok.eos_token_id == ours.eot_id
    with torch.no_grad():
        want = theirs(torch.tensor([ids])).logits.numpy()
    np.testing.assert_allclose(np.asarray(model(np.asarray([ids], np.int32))), want, atol=1e-4)
    # greedy text: transformers' generate against jaxbasics generate on the run
    prompt = "The quick"
    assert main(["generate", "--run", str(run / "run"), "--prompt", prompt,
                 "--max-new-tokens", "8"]) == 0
    printed = capsys.readouterr().out
    start = tok(prompt, return_tensors="pt")["input_ids"]
    theirs.generation_config.eos_token_id = None  # jaxbasics generate does not stop at it
    with torch.no_grad():
        out = theirs.generate(start, do_sample=False, max_new_tokens=8,
                              pad_token_id=tok.eos_token_id)
    assert out.shape[1] == start.shape[1] + 8
    assert printed == tok.decode(out[0], skip_special_tokens=True) + "\n"


def test_eval_of_the_export_equals_eval_of_the_run(run, capsys):
    hf = run / "hf-eval"
    assert main(["export", "--run", str(run / "run"), "--out", str(hf)]) == 0
    capsys.readouterr()
    scores = []
    for source in (["--run", str(run / "run")], ["--hf", str(hf)]):
        assert main(["eval", *source, "--data", str(run / "data"), "--json"]) == 0
        scores.append(json.loads(capsys.readouterr().out))
    for key in ("loss", "perplexity", "bits_per_byte", "tokens", "bytes"):
        assert scores[0][key] == pytest.approx(scores[1][key], rel=1e-5), key


def test_export_refuses_a_folder_in_use_and_never_leaves_half_a_folder(run, capsys,
                                                                       monkeypatch):
    from jaxbasics.gpt import hf as hf_module

    taken = run / "taken"
    taken.mkdir()
    (taken / "notes.txt").write_text("mine")
    assert main(["export", "--run", str(run / "run"), "--out", str(taken)]) == 2
    err = capsys.readouterr().err
    assert f"{taken} already exists and is not an empty folder" in err and "--overwrite" in err
    assert (taken / "notes.txt").read_text() == "mine"

    def broken(model, directory, tokenizer=None):
        (directory / "config.json").write_text("{}")
        raise ValueError("disk full")

    monkeypatch.setattr(hf_module, "save_gpt2", broken)
    assert main(["export", "--run", str(run / "run"), "--out", str(taken), "--overwrite"]) == 2
    assert "disk full" in capsys.readouterr().err
    assert sorted(p.name for p in taken.iterdir()) == ["notes.txt"]  # untouched
    assert not [p for p in run.iterdir() if ".partial" in p.name]
    monkeypatch.undo()
    # a run on raw token files given without a tokenizer: its ids mean nothing to AutoTokenizer
    import shutil

    shutil.copytree(run / "run", run / "raw-run")
    shutil.rmtree(run / "raw-run" / "tokenizer")
    assert main(["export", "--run", str(run / "raw-run"), "--out", str(run / "raw-hf")]) == 2
    assert "has no tokenizer (it was trained on raw token files" in capsys.readouterr().err
    assert not (run / "raw-hf").exists()
    assert main(["export", "--run", str(run / "run"), "--out", str(taken), "--overwrite"]) == 0
    assert sorted(p.name for p in taken.iterdir()) == ["config.json", "model.safetensors",
                                                      "tokenizer.json", "tokenizer_config.json"]


def test_byte_ids_export_as_a_tokenizer_transformers_reads_as_bytes(tmp_path):
    from flax import nnx
    from transformers import AutoTokenizer

    from jaxbasics.gpt.hf import save_gpt2
    from jaxbasics.gpt.model import GPT

    model = GPT(CFG.replace(vocab_size=257), rngs=nnx.Rngs(0))
    save_gpt2(model, tmp_path, ByteTokenizer(end_of_text=True))
    tok = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    text = "Grüße, 世界! \t\n  x"
    assert tok(text)["input_ids"] == list(text.encode("utf-8"))
    assert tok.decode(list(text.encode("utf-8"))) == text
    assert tok.eos_token_id == 256 and tok.decode([256, 72, 105], skip_special_tokens=True) == "Hi"
    # eval --hf of this folder on --bytes data: the same ids stored another way, not refused
    # (it was: 'trained with another tokenizer (BPE, 257 ids ...) than ... (byte ids ...)');
    # another mapping of the same size still is
    from jaxbasics.data.vocab import check_same_tokenizer, load_tokenizer

    exported = load_tokenizer(tmp_path)
    assert exported.digest() != ByteTokenizer(end_of_text=True).digest()
    check_same_tokenizer(exported, ByteTokenizer(end_of_text=True), model="--hf", data="--data",
                         texts=[text])
    (tmp_path / "other").mkdir()
    spec = json.loads((tmp_path / "tokenizer.json").read_text())
    vocab = spec["model"]["vocab"]
    first, second = sorted(vocab, key=vocab.get)[65:67]  # the ids of 'A' and 'B' swapped
    vocab[first], vocab[second] = vocab[second], vocab[first]
    (tmp_path / "other" / "tokenizer.json").write_text(json.dumps(spec))
    with pytest.raises(ValueError, match="was trained with another tokenizer"):
        check_same_tokenizer(load_tokenizer(tmp_path / "other"), ByteTokenizer(end_of_text=True),
                             model="--hf", data="--data")


def test_generate_samples_past_the_context_from_end_of_text_several_at_once(run, capsys):
    # prompt "": starts from <|endoftext|>; 1 + 30 tokens > context 16: the window slides;
    # --top-k above the vocabulary samples from all of it, said on stderr
    argv = ["generate", "--run", str(run / "run"), "--prompt", "", "--max-new-tokens", "30",
            "--num-samples", "3", "--temperature", "1.0", "--top-k", "100000", "--top-p", "0.9"]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    assert "--top-k 100000 is above the vocabulary" in err
    samples = out.split("--- sample ")[1:]
    assert [s.split(" ---")[0] for s in samples] == ["1 of 3", "2 of 3", "3 of 3"]
    assert len(set(samples[i].split("---\n", 1)[1] for i in range(3))) == 3
    assert main(argv) == 0 and capsys.readouterr().out == out  # --seed 0 both times
    assert main(["generate", "--run", str(run / "run"), "--top-p", "0"]) == 2
    assert "--top-p must be in (0, 1], got 0.0" in capsys.readouterr().err


def test_a_tied_head_with_qkv_bias_exports_as_gpt2_itself(tmp_path):
    import torch
    from flax import nnx
    from transformers import GPT2LMHeadModel

    from jaxbasics.gpt.hf import save_gpt2
    from jaxbasics.gpt.model import GPT

    model = GPT(CFG.replace(tie_embeddings=True, qkv_bias=True, activation="gelu"),
                rngs=nnx.Rngs(1))
    written = save_gpt2(model, tmp_path)
    assert "lm_head.weight" not in written
    theirs = GPT2LMHeadModel.from_pretrained(tmp_path, local_files_only=True).eval()
    assert theirs.config.tie_word_embeddings and theirs.config.activation_function == "gelu"
    ids = np.random.default_rng(0).integers(0, 300, (2, 16))
    with torch.no_grad():
        want = theirs(torch.tensor(ids)).logits.numpy()
    np.testing.assert_allclose(np.asarray(model(ids.astype(np.int32))), want, atol=1e-4)
