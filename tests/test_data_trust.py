"""The data room refuses what would make its numbers wrong (issue 31, items 1-6): a document's
literal ``<|endoftext|>`` is text; a tokenizer that does not give the text back, whose tokens'
bytes do not add up, or that encodes text to nothing is refused by name; a manifest cannot send
a reader outside its folder nor disagree with its shards; raw token files with ids beyond the
vocabulary are refused before training. Bits per byte divides by the UTF-8 bytes of the text
scored, for every tokenizer kind ``prepare`` accepts: the expected bytes come from the
documents and the split rule written out here."""

import hashlib
import json

import numpy as np
import pytest
import tokenizers
from tokenizers import decoders, models, pre_tokenizers, trainers

from jaxbasics.cli import main

DOCS = [f"Document {i}: the quick brown fox, naïve café № {i}.\n\tdef f(x):\n    return x * {i}\n"
        f"{'Über 東京 🙂 ' * (i % 3)}end of {i}." for i in range(12)]
LITERAL = "A model card says <|endoftext|> ends a text; here it is only text."
ASCII = "".join(chr(c) for c in range(32, 127)) + "\n\t\r"


def _corpus(root, docs):
    root.mkdir(parents=True, exist_ok=True)
    for i, text in enumerate(docs):
        (root / f"doc{i:02d}.txt").write_text(text, encoding="utf-8")
    return root


def _llmc(path):
    """An llm.c shard read with NumPy alone: 256 int32 of header, then the tokens."""
    header = np.fromfile(path, "<i4", count=256)
    assert header[0] == 20240520
    return np.fromfile(path, "<u2" if header[1] == 1 else "<u4", offset=1024)


def _in_val(text, fraction):
    """The documented split rule, written out: SHA-256's first 8 bytes below fraction * 2**64."""
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") \
        < fraction * 2**64


def _prepare(capsys, corpus, out, *tok_args, val=0.5):
    capsys.readouterr()
    code = main(["prepare", str(corpus), "--out", str(out), *tok_args, "--val-fraction", str(val),
                 "--context", "8", "--quiet"])
    return code, capsys.readouterr()


def test_a_literal_end_of_text_in_a_document_is_ordinary_text(tmp_path, capsys):
    docs = [LITERAL, *DOCS[:3]]
    code, _ = _prepare(capsys, _corpus(tmp_path / "c", docs), tmp_path / "d",
                       "--train-tokenizer", "--vocab-size", "300", val=0)
    assert code == 0
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    tokens = np.concatenate([_llmc(tmp_path / "d" / s) for s in manifest["splits"]["train"]["shards"]])
    tok = tokenizers.Tokenizer.from_file(str(tmp_path / "d" / "tokenizer" / "tokenizer.json"))
    eot = tok.token_to_id("<|endoftext|>")
    # one end-of-text id per document, before it; the documents decode back, literal included
    assert int((tokens == eot).sum()) == len(docs) and tokens[0] == eot
    cuts = np.flatnonzero(tokens == eot).tolist() + [len(tokens)]
    back = [tok.decode(tokens[a + 1: b].tolist()) for a, b in zip(cuts, cuts[1:], strict=False)]
    assert sorted(back) == sorted(docs)
    assert manifest["splits"]["train"]["bytes"] == sum(len(d.encode("utf-8")) for d in docs)
    assert len(manifest["tokenizer"]["digest"]) == 64


def _metaspace(folder, prepend):
    """A BPE tokenizer.json with a Metaspace pre-tokenizer (SentencePiece's way of marking
    spaces), trained here on the corpus and ASCII, so nothing maps to an unknown token."""
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(prepend_scheme=prepend)
    tok.decoder = decoders.Metaspace(prepend_scheme=prepend)
    trainer = trainers.BpeTrainer(vocab_size=400, special_tokens=["<|endoftext|>"],
                                  show_progress=False)
    tok.train_from_iterator([*DOCS, ASCII, " ".join(ASCII)], trainer=trainer)
    folder.mkdir(parents=True)
    tok.save(str(folder / "tokenizer.json"))
    return folder


def _gpt2_files(folder):
    """GPT-2's two files (vocab.json, merges.txt) of a byte-level BPE trained here."""
    tok = tokenizers.ByteLevelBPETokenizer()
    tok.train_from_iterator(DOCS, vocab_size=320, min_frequency=1, special_tokens=["<|endoftext|>"],
                            show_progress=False)
    folder.mkdir(parents=True)
    tok.save_model(str(folder))
    return folder


@pytest.mark.parametrize("kind", ["trained", "bytes", "gpt2-files", "metaspace"])
def test_the_bytes_of_each_split_are_the_bytes_its_tokens_stand_for(tmp_path, capsys, kind):
    """What eval and the training evaluation divide by (TokenData.target_bytes of the labels)
    equals the UTF-8 bytes of the split's documents, computed here from the texts and the
    split rule, for each tokenizer kind prepare accepts."""
    from jaxbasics.data.batches import TokenData

    args = {"trained": ["--train-tokenizer", "--vocab-size", "320"], "bytes": ["--bytes"],
            "gpt2-files": ["--tokenizer", str(_gpt2_files(tmp_path / "gpt2"))] if kind == "gpt2-files"
            else [],
            "metaspace": ["--tokenizer", str(_metaspace(tmp_path / "ms", "never"))]
            if kind == "metaspace" else []}[kind]
    code, shown = _prepare(capsys, _corpus(tmp_path / "c", DOCS), tmp_path / "d", *args)
    assert code == 0, shown.err
    for split in ("train", "val"):
        want = sum(len(d.encode("utf-8")) for d in DOCS if _in_val(d, 0.5) == (split == "val"))
        assert want > 0
        data = TokenData.open(tmp_path / "d", split)
        y = data.read(np.array([1]), data.n - 1)  # every label after the first end-of-text
        assert int(data.target_bytes(y)[0]) == want, (kind, split)


@pytest.mark.parametrize("kind", ["unk", "prefix-space", "metaspace-prefix", "empty", "no-ids",
                                  "raises"])
def test_a_tokenizer_that_loses_or_adds_text_is_refused_by_name(tmp_path, capsys, kind):
    """Refused before anything is written, one line naming the tokenizer."""
    folder = tmp_path / "tok"
    if kind == "metaspace-prefix":  # a phantom space before every text: one byte too many
        _metaspace(folder, "always")
    else:
        folder.mkdir()
        if kind == "unk":  # spaces and unknown characters lost
            tok = tokenizers.Tokenizer(models.WordLevel({"[UNK]": 0, "<|endoftext|>": 1, "Hello": 2},
                                                        unk_token="[UNK]"))
            tok.pre_tokenizer = pre_tokenizers.Whitespace()
        elif kind == "raises":  # a WordLevel model without its [UNK]: the library raises
            tok = tokenizers.Tokenizer(models.WordLevel({"<|endoftext|>": 0, "Hello": 1}))
            tok.pre_tokenizer = pre_tokenizers.Whitespace()
        elif kind == "prefix-space":
            tok = tokenizers.ByteLevelBPETokenizer(add_prefix_space=True)
            tok.train_from_iterator(DOCS, vocab_size=300, special_tokens=["<|endoftext|>"],
                                    show_progress=False)
        else:  # a vocabulary of the end-of-text token alone, or of nothing
            tok = tokenizers.Tokenizer(models.BPE(vocab={"<|endoftext|>": 0} if kind == "no-ids"
                                                  else {}, merges=[]))
            if kind == "no-ids":
                tok.add_special_tokens(["<|endoftext|>"])
        tok.save(str(folder / "tokenizer.json"))
    code, shown = _prepare(capsys, _corpus(tmp_path / "c", DOCS), tmp_path / "d",
                           "--tokenizer", str(folder))
    assert code == 2
    err = shown.err
    assert err.startswith("jaxbasics prepare: ") and err.count("\n") == 1, err
    assert str(folder) in err or kind == "empty"
    want = {"unk": "does not give the text back", "prefix-space": "does not give the text back",
            "metaspace-prefix": "does not give the text back", "empty": "empty vocabulary",
            "no-ids": "to no ids at all", "raises": "cannot encode the text"}[kind]
    assert want in err, err
    assert not (tmp_path / "d").exists()


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    root = tmp_path_factory.mktemp("trust")
    _corpus(root / "c", DOCS)
    assert main(["prepare", str(root / "c"), "--out", str(root / "d"), "--bytes", "--val-fraction",
                 "0.5", "--context", "8", "--quiet"]) == 0
    return root


@pytest.mark.parametrize("bad", ["../x.bin", "/tmp/x.bin", "sub/x.bin", "count"])
def test_a_manifest_cannot_send_a_reader_outside_its_folder_or_miscount(prepared, tmp_path, capsys,
                                                                         bad):
    import shutil

    data = tmp_path / "d"
    shutil.copytree(prepared / "d", data)
    manifest = json.loads((data / "manifest.json").read_text())
    outside = tmp_path / "x.bin"
    shutil.copy(data / manifest["splits"]["train"]["shards"][0], outside)
    if bad == "count":
        manifest["splits"]["val"]["tokens"] += 1
        want = f"the val shards hold {manifest['splits']['val']['tokens'] - 1:,} tokens, its " \
               f"manifest.json counts {manifest['splits']['val']['tokens']}"
    else:
        manifest["splits"]["val"]["shards"] = [bad]
        want = f"shard name {bad!r} is not a file name inside the folder"
    (data / "manifest.json").write_text(json.dumps(manifest))
    capsys.readouterr()
    assert main(["eval", "--hf", str(tmp_path / "nothing"), "--data", str(data)]) == 2
    err = capsys.readouterr().err
    assert want in err and err.count("\n") == 1, err


def test_raw_token_files_with_ids_beyond_the_vocabulary_are_refused_before_training(tmp_path,
                                                                                     capsys):
    folder = tmp_path / "nano"
    folder.mkdir()
    rng = np.random.default_rng(0)
    train = rng.integers(0, 500, 4000).astype(np.uint16)
    train[1234] = 600
    train.tofile(folder / "train.bin")
    rng.integers(0, 500, 400).astype(np.uint16).tofile(folder / "val.bin")
    capsys.readouterr()
    assert main(["train", "--data", str(folder), "--vocab-size", "512", "--steps", "1",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "token ids go up to 600, outside the vocabulary of --vocab-size 512" in err
    assert "first one at position 1234" in err and err.count("\n") == 1
    assert not (tmp_path / "run").exists()
