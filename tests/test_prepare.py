"""``jaxbasics prepare``: the shards hold exactly the tokenizers library's encoding of each
document after an end-of-text, each document in one split; a killed prepare leaves no manifest
and the next one clears it; every bad input is refused by name with nothing left behind."""

import hashlib
import json
import subprocess
import sys

import numpy as np
import pytest
import tokenizers

from jaxbasics.cli import main

DOCS = ["Hello world! Привет, мир! 你好，世界！",
        "def f(x):\n    return x * 2\n",
        "Ünïcödé everywhere: naïve café, Œuvre, ß, ﬁ ligature.",
        "مرحبا بالعالم — שלום עולם",
        "Numbers 1234567890 and symbols <>[]{}",
        "एक दो तीन चार पाँच",
        "Ελληνικά και English mixed together in one line.",
        "Short."] * 2


def _corpus(root):
    """Text files in nested folders and a JSON Lines file; returns the documents in the order
    prepare reads them (sorted paths; a .jsonl file's records in order)."""
    (root / "a" / "b").mkdir(parents=True)
    docs = []
    for i, text in enumerate(DOCS[:10]):
        path = root / ("a" if i % 2 else "a/b") / f"doc{i:02d}.txt"
        path.write_text(f"{i}. {text}", encoding="utf-8")
    (root / "a" / "notes.jsonl").write_text(
        "".join(json.dumps({"id": i, "text": f"record {i}: {t}"}) + "\n" for i, t in enumerate(DOCS[10:]))
        + "\n", encoding="utf-8")
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.suffix == ".jsonl":
            docs += [json.loads(line)["text"] for line in path.read_text().splitlines() if line]
        else:
            docs.append(path.read_text(encoding="utf-8"))
    return docs


def _llmc(path):
    header = np.fromfile(path, "<i4", count=256)
    assert header[0] == 20240520 and header[1] == 1
    tokens = np.fromfile(path, "<u2", offset=1024)
    assert tokens.size == header[2]
    return tokens


def _split_tokens(data, manifest, split):
    return np.concatenate([_llmc(data / name) for name in manifest["splits"][split]["shards"]])


def test_shards_hold_the_tokenizers_librarys_encoding_of_each_document_once(tmp_path, capsys):
    docs = _corpus(tmp_path / "corpus")
    data = tmp_path / "data"
    assert main(["prepare", str(tmp_path / "corpus"), "--out", str(data), "--train-tokenizer",
                 "--vocab-size", "400", "--val-fraction", "0.3", "--shard-tokens", "150",
                 "--context", "8", "--quiet"]) == 0
    out = capsys.readouterr().out
    assert "train" in out and "val" in out and "tokens" in out
    manifest = json.loads((data / "manifest.json").read_text())
    tok = tokenizers.Tokenizer.from_file(str(data / "tokenizer" / "tokenizer.json"))
    eot = tok.token_to_id("<|endoftext|>")
    assert manifest["tokenizer"]["end_of_text"] == eot and manifest["token_dtype"] == "uint16"
    assert manifest["vocab_size"] == tok.get_vocab_size()
    want = {"train": [], "val": []}
    for doc in docs:  # the documented rule, recomputed here
        key = int.from_bytes(hashlib.sha256(doc.encode()).digest()[:8], "big")
        want["val" if key < 0.3 * 2**64 else "train"].append(doc)
    assert want["train"] and want["val"]
    for split, members in want.items():
        ids = [[eot, *tok.encode(d, add_special_tokens=False).ids] for d in members]
        tokens = _split_tokens(data, manifest, split)
        assert tokens.tolist() == [i for doc in ids for i in doc]
        s = manifest["splits"][split]
        assert s["documents"] == len(members) and s["tokens"] == tokens.size
        assert s["bytes"] == sum(len(d.encode()) for d in members)
        # each document of the split decodes back from between its separators
        texts = [tok.decode(part.tolist()) for part in np.split(tokens, np.flatnonzero(tokens == eot))[1:]]
        assert texts == members
    assert len(manifest["splits"]["train"]["shards"]) > 1  # --shard-tokens 150
    assert not set(want["train"]) & set(want["val"])
    sources = {s["path"]: s for s in manifest["sources"]}
    jsonl = next(s for p, s in sources.items() if p.endswith("notes.jsonl"))
    assert jsonl["documents"] == 6 and jsonl["kind"] == "jsonl"
    first = tmp_path / "corpus" / "a" / "b" / "doc00.txt"
    assert sources[str(first)]["sha256"] == hashlib.sha256(first.read_bytes()).hexdigest()
    assert manifest["command"][:3] == ["jaxbasics", "prepare", str(tmp_path / "corpus")]
    assert "--train-tokenizer" in manifest["command"]
    assert manifest["split_rule"]["val_fraction"] == 0.3
    assert not list(data.glob("*.partial"))
    # the same corpus through GPT-2's file pair and through --bytes
    (tmp_path / "gpt2").mkdir()
    tok.model.save(str(tmp_path / "gpt2"))
    assert main(["prepare", str(tmp_path / "corpus"), "--out", str(tmp_path / "via_gpt2"),
                 "--tokenizer", str(tmp_path / "gpt2"), "--val-fraction", "0.3", "--context", "8",
                 "--quiet"]) == 0
    again = json.loads((tmp_path / "via_gpt2" / "manifest.json").read_text())
    assert (_split_tokens(tmp_path / "via_gpt2", again, "val")
            == _split_tokens(data, manifest, "val")).all()
    assert main(["prepare", str(tmp_path / "corpus"), "--out", str(tmp_path / "bytes"), "--bytes",
                 "--val-fraction", "0.3", "--context", "8", "--quiet"]) == 0
    raw = json.loads((tmp_path / "bytes" / "manifest.json").read_text())
    tokens = _split_tokens(tmp_path / "bytes", raw, "val")
    assert tokens.tolist() == [i for d in want["val"] for i in [256, *d.encode()]]


KILLER = """
import os, signal, sys
from jaxbasics.data import prepare as p
from jaxbasics.data.prepare import PrepareOptions

def progress(phase, done, total, tokens):
    if phase == "encode":
        os.kill(os.getpid(), signal.SIGKILL)  # as kill -9, after the first batch was written

p.prepare([sys.argv[1]], sys.argv[2], byte_level=True, progress=progress,
          options=PrepareOptions(val_fraction=0.3, shard_tokens=50, batch_bytes=64, context=8))
"""


def test_a_killed_prepare_leaves_no_manifest_and_the_next_one_starts_clean(tmp_path, capsys,
                                                                           monkeypatch):
    _corpus(tmp_path / "corpus")
    data = tmp_path / "data"
    done = subprocess.run([sys.executable, "-c", KILLER, str(tmp_path / "corpus"), str(data)],
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == -9, done.stderr[-2000:]
    left = sorted(p.name for p in data.iterdir())
    assert "manifest.json" not in left and any(n.startswith("train_") for n in left), left
    with pytest.raises(FileNotFoundError, match="its prepare did not finish"):
        from jaxbasics.data.batches import TokenData

        TokenData.open(data)
    args = ["--bytes", "--val-fraction", "0.3", "--shard-tokens", "50", "--context", "8", "--quiet"]
    assert main(["prepare", str(tmp_path / "corpus"), "--out", str(data), *args]) == 0
    assert "clearing an unfinished prepare" in capsys.readouterr().out
    assert main(["prepare", str(tmp_path / "corpus"), "--out", str(tmp_path / "fresh"), *args]) == 0
    names = sorted(p.name for p in data.iterdir())
    assert names == sorted(p.name for p in (tmp_path / "fresh").iterdir())
    for name in names:
        if name.endswith(".bin"):
            assert (data / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()
    # an exception midway (a shard that cannot be written) leaves nothing behind either
    from jaxbasics.data import shards

    def broken(self, tokens):
        raise OSError("disk full (injected)")

    monkeypatch.setattr(shards.ShardWriter, "write", broken)
    with pytest.raises(OSError, match="injected"):
        main(["prepare", str(tmp_path / "corpus"), "--out", str(tmp_path / "broken"), *args])
    assert not (tmp_path / "broken").exists()


def _refused(capsys, argv, message):
    assert main(["prepare", *map(str, argv)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("jaxbasics prepare: ") and err.count("\n") == 1, err
    assert message in err, err
    return err


def test_every_bad_input_is_refused_by_name_and_nothing_is_left(tmp_path, capsys):
    corpus = tmp_path / "corpus"
    _corpus(corpus)
    out = tmp_path / "out"
    ok = ["--bytes", "--val-fraction", "0.3", "--context", "8", "--quiet"]
    bad = corpus / "a" / "b" / "latin1.txt"
    bad.write_bytes("caf\u00e9 ok".encode("utf-8") + "caf\u00e9 more".encode("latin-1"))
    _refused(capsys, [corpus, "--out", out, *ok],
             f"{bad} is not UTF-8 text: bad byte at byte offset 11 (invalid continuation byte)")
    assert not out.exists()
    (corpus / "a" / "bad.jsonl").write_bytes(b'{"text": "fine"}\n{"text": "\xff"}\n')
    assert main(["prepare", str(corpus), "--out", str(out), "--skip-bad", *ok]) == 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["skipped"] == {"files": 1, "records": 1}
    skipped = {s["path"]: s.get("skipped") for s in manifest["sources"]}
    assert skipped[str(bad)] == [{"offset": 11, "reason": "not UTF-8"}]
    assert skipped[str(corpus / "a" / "bad.jsonl")] == [{"offset": 27, "line": 2,
                                                         "reason": "not UTF-8"}]
    bad.unlink()
    (corpus / "a" / "bad.jsonl").unlink()
    _refused(capsys, [corpus, "--out", out, *ok], f"--out {out} already holds a prepared data set")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "thesis.tex").write_text("mine")
    _refused(capsys, [corpus, "--out", foreign, *ok], "is not empty and was not written by "
                                                      "jaxbasics prepare (it holds thesis.tex)")
    assert (foreign / "thesis.tex").read_text() == "mine"
    fresh = tmp_path / "fresh"
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "nothing.txt").write_text("")
    (tmp_path / "records.jsonl").write_text('{"body": "x"}\n')
    tok_dir = tmp_path / "no_tokenizer"
    tok_dir.mkdir()
    cases = [
        ([tmp_path / "empty", "--out", fresh, *ok], "empty corpus: 1 file(s) hold no text"),
        ([corpus, "--glob", "**/*.md", "--out", fresh, *ok],
         f"--glob '**/*.md' matches no file under {corpus}"),
        ([tmp_path / "missing", "--out", fresh, *ok], f"SOURCE {tmp_path / 'missing'} does not exist"),
        ([tmp_path / "records.jsonl", "--out", fresh, *ok],
         "records.jsonl:1: the record has no field 'text' (--jsonl-field); its fields are ['body']"),
        ([corpus, "--out", fresh, "--tokenizer", tok_dir],
         f"{tok_dir} has no tokenizer (tokenizer.json, or vocab.json and merges.txt)"),
        ([corpus, "--out", fresh, "--train-tokenizer", "--vocab-size", "200"],
         "--vocab-size must be an integer in [257, 2**32]"),
        ([corpus, "--out", fresh, "--train-tokenizer", "--vocab-size", str(2**32 + 1)],
         "--vocab-size must be an integer in [257, 2**32]"),
        ([corpus, "--out", fresh, "--train-tokenizer"], "--train-tokenizer needs --vocab-size N"),
        ([corpus, "--out", fresh, "--bytes", "--vocab-size", "300"], "--vocab-size goes with "
                                                                     "--train-tokenizer"),
        ([corpus, "--out", fresh, "--bytes", "--val-fraction", "1.5"],
         "--val-fraction must be in [0, 1), got 1.5"),
        ([corpus, "--out", fresh, "--bytes", "--val-fraction", "0.3", "--context", "100000"],
         "the validation split holds"),
        ([corpus, "--out", fresh, "--bytes", "--val-fraction", "1e-9", "--context", "100000"],
         "too few to split off one window of --context 100000 for validation"),
        ([corpus, "--out", fresh, "--bytes", "--encoding", "klingon"],
         "--encoding 'klingon' is not an encoding Python knows"),
    ]
    for argv, message in cases:
        _refused(capsys, argv, message)
        assert not fresh.exists(), argv  # nothing half-written, not even the folder
