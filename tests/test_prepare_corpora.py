"""``jaxbasics prepare`` on corpora as they come (issue 31, items 7-12): one short story and a
handful of files with the default options (split by position, said and recorded), repeated
--glob patterns as a union, gzip files, a byte-order mark, legacy encodings, JSON Lines records
that are not Unicode, files that are not text described by what they look like, a progress bar
that ends at 100 %; and eval / generate default to the context the run trained on. Expected
tokens and bytes come from the texts and the tokenizers library, written out here."""

import gzip
import hashlib
import json

import numpy as np
import tokenizers

from jaxbasics.cli import main

STORY = "".join(f"Chapter {i}. Once upon a time a fox named Ünal met a crow at the well; "
                f"they talked about the weather, the moon № {i}, and bread.\n" for i in range(60))


def _tokens(data, split):
    manifest = json.loads((data / "manifest.json").read_text())
    out = []
    for name in manifest["splits"][split]["shards"]:
        header = np.fromfile(data / name, "<i4", count=256)
        out.append(np.fromfile(data / name, "<u2" if header[1] == 1 else "<u4", offset=1024))
    return np.concatenate(out), manifest


def _in_val(text, fraction):
    return int.from_bytes(hashlib.sha256(text.encode("utf-8")).digest()[:8], "big") \
        < fraction * 2**64


def test_one_story_prepares_with_the_default_options_split_by_position(tmp_path, capsys,
                                                                      monkeypatch):
    """``jaxbasics prepare story.txt --train-tokenizer --vocab-size 512`` as a learner types it:
    the last 1 % of the tokens, in whole windows of 129, is the validation split."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "story.txt").write_text(STORY, encoding="utf-8")
    assert main(["prepare", "story.txt", "--train-tokenizer", "--vocab-size", "512",
                 "--out", "data"]) == 0
    out = capsys.readouterr().out
    assert "split by position: the last" in out and "MB/s" not in out.splitlines()[-1]
    train, manifest = _tokens(tmp_path / "data", "train")
    val, _ = _tokens(tmp_path / "data", "val")
    rule = manifest["split_rule"]
    assert rule["kind"] == "position" and rule["window"] == 129
    tok = tokenizers.Tokenizer.from_file(str(tmp_path / "data" / "tokenizer" / "tokenizer.json"))
    want = [tok.token_to_id("<|endoftext|>"), *tok.encode(STORY, add_special_tokens=False).ids]
    n = len(want)
    # the tokens of the last 1 % of the text's bytes (a byte-level token's string has a
    # character a byte; end-of-text none), at least one window of 129
    target, held, k = -(-len(STORY.encode("utf-8")) // 100), 0, 0
    while held < target:
        k += 1
        held += 0 if want[-k] == want[0] else len(tok.id_to_token(want[-k]))
    assert len(val) == rule["val_tokens"] == max(k, 129)
    assert np.concatenate([train, val]).tolist() == want
    splits = manifest["splits"]
    assert splits["train"]["tokens"] == n - len(val) and splits["val"]["tokens"] == len(val)
    assert splits["train"]["bytes"] + splits["val"]["bytes"] == len(STORY.encode("utf-8"))
    assert splits["val"]["bytes"] == len(tok.decode(val.tolist()).encode("utf-8"))
    assert splits["train"]["documents"] == 1 and splits["val"]["documents"] == 1
    # the training code reads both splits
    from jaxbasics.gpt.data import PretrainData

    data = PretrainData(tmp_path / "data", 128)
    assert data.val is not None and data.val.n == len(val) and data.train.n == n - len(val)


def test_fifteen_files_prepare_with_the_default_options(tmp_path, capsys):
    docs = [f"Note {i}: " + STORY[i * 90: i * 90 + 400] for i in range(15)]
    if any(_in_val(d, 0.01) for d in docs):  # by document, validation would hold none (86 %)
        docs = [f"Memo {i}: " + STORY[i * 90: i * 90 + 400] for i in range(15)]
    assert not any(_in_val(d, 0.01) for d in docs)
    for i, text in enumerate(docs):
        (tmp_path / f"n{i:02d}.txt").write_text(text, encoding="utf-8")
    assert main(["prepare", str(tmp_path), "--bytes", "--out", str(tmp_path / "d"), "--quiet"]) == 0
    train, manifest = _tokens(tmp_path / "d", "train")
    val, _ = _tokens(tmp_path / "d", "val")
    want = [t for d in docs for t in [256, *d.encode("utf-8")]]
    assert manifest["split_rule"]["kind"] == "position"
    assert np.concatenate([train, val]).tolist() == want and len(val) == 129
    assert manifest["splits"]["val"]["documents"] == 1 + int((val == 256).sum()) - int(val[0] == 256)


def test_globs_are_a_union_and_gzip_bom_and_legacy_text_are_read(tmp_path, capsys):
    corpus = tmp_path / "c"
    (corpus / "sub").mkdir(parents=True)
    texts = {"a.txt": "plain text file\n", "sub/b.md": "# markdown\n", "c.rst": "left out\n"}
    for name, text in texts.items():
        (corpus / name).write_text(text, encoding="utf-8")
    (corpus / "sub" / "z.txt.gz").write_bytes(gzip.compress("zipped text, ça va\n".encode()))
    (corpus / "r.jsonl.gz").write_bytes(gzip.compress(
        b'{"text": "record one"}\n{"text": "record \\u00e9"}\n'))
    (corpus / "bom.txt").write_bytes(b"\xef\xbb\xbfwith a byte-order mark\n")
    assert main(["prepare", str(corpus), "--glob", "**/*.txt", "--glob", "**/*.md",
                 "--glob", "**/*.gz", "--bytes", "--val-fraction", "0", "--out",
                 str(tmp_path / "d")]) == 0
    assert "1 file(s) began with a UTF-8 byte-order mark" in capsys.readouterr().out
    tokens, manifest = _tokens(tmp_path / "d", "train")
    read = sorted(s["path"].removeprefix(str(corpus) + "/") for s in manifest["sources"])
    assert read == ["a.txt", "bom.txt", "r.jsonl.gz", "sub/b.md", "sub/z.txt.gz"]
    docs = ["plain text file\n", "with a byte-order mark\n", "record one", "record é",
            "# markdown\n", "zipped text, ça va\n"]
    assert sorted(docs) == sorted(bytes(part).decode() for part in _documents(tokens))
    assert manifest["splits"]["train"]["bytes"] == sum(len(d.encode()) for d in docs)
    assert [s.get("gzip", False) for s in sorted(manifest["sources"], key=lambda s: s["path"])] \
        == [False, False, True, False, True]
    # legacy text: latin-1 bytes decoded with --encoding, stored as UTF-8
    legacy = tmp_path / "legacy"
    legacy.mkdir()
    (legacy / "old.txt").write_bytes("café crème, Straße\n".encode("latin-1"))
    assert main(["prepare", str(legacy), "--bytes", "--val-fraction", "0", "--quiet",
                 "--out", str(tmp_path / "l")]) == 2
    err = capsys.readouterr().err
    assert "is not UTF-8 text: bad byte at byte offset 3" in err and "--encoding latin-1" in err
    assert main(["prepare", str(legacy), "--bytes", "--val-fraction", "0", "--quiet",
                 "--encoding", "latin-1", "--out", str(tmp_path / "l")]) == 0
    tokens, manifest = _tokens(tmp_path / "l", "train")
    assert tokens.tolist() == [256, *"café crème, Straße\n".encode()]


def _documents(tokens):
    """The documents of a byte-level stream: the byte runs after each end-of-text id (256)."""
    cuts = np.flatnonzero(tokens == 256).tolist() + [len(tokens)]
    return [tokens[a + 1: b].tolist() for a, b in zip(cuts, cuts[1:], strict=False)]


def test_what_is_not_text_is_named_and_skip_bad_skips_it_to_the_end_of_the_bar(tmp_path, capsys):
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "ok.txt").write_text("fine text " * 20, encoding="utf-8")
    (corpus / "s.jsonl").write_text('{"text": "good"}\n{"text": "bad \\ud800 x"}\n')
    cases = {"s.jsonl": f"{corpus / 's.jsonl'}:2: field 'text' holds a lone surrogate '\\ud800' at "
                        f"character 4, which is not Unicode text; fix the record, or leave it out "
                        f"with --skip-bad",
             "packed.txt": "is gzip-compressed data: name it .gz",
             "image.txt": "it looks binary (it holds NUL bytes)",
             "broken.txt.gz": "is not a whole gzip file"}
    for name, message in cases.items():
        if name == "packed.txt":
            (corpus / name).write_bytes(gzip.compress(b"hidden \xff text"))
        elif name == "image.txt":
            (corpus / name).write_bytes(b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR\xff\xfe")
        elif name == "broken.txt.gz":
            (corpus / name).write_bytes(gzip.compress(np.random.default_rng(0).bytes(4000))[:900])
        assert main(["prepare", str(corpus), "--bytes", "--quiet", "--out",
                     str(tmp_path / "d")]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1, err
        assert not (tmp_path / "d").exists()
        if name != "s.jsonl":
            (corpus / name).unlink()
    for name in ("packed.txt", "image.txt"):  # both left in for --skip-bad
        (corpus / name).write_bytes(b"\x1f\x8b\x08\0\xff\xfe" if name == "packed.txt"
                                    else b"\0\xff\0\xfe")
    from jaxbasics.data.prepare import PrepareOptions, prepare

    seen = []
    manifest = prepare([corpus], tmp_path / "d", byte_level=True,
                       options=PrepareOptions(skip_bad=True, val_fraction=0, context=8),
                       progress=lambda phase, done, total, _t: seen.append((phase, done, total)),
                       log=lambda _m: None)
    scans = [(d, t) for p, d, t in seen if p == "scan"]
    assert scans[-1][0] == scans[-1][1] == sum(p.stat().st_size for p in corpus.iterdir())
    assert manifest["skipped"] == {"files": 2, "records": 1}
    bad = next(s for s in manifest["sources"] if s["path"].endswith("s.jsonl"))
    assert bad["documents"] == 1 and bad["skipped"] == [{"offset": 17, "line": 2,
                                                          "reason": "lone surrogate"}]


def test_eval_and_generate_default_to_the_context_the_run_trained_on(tmp_path, capsys):
    """train --context 24 builds a model of 24 positions (it built 32, and eval and generate
    read windows of 32: positions never trained)."""
    (tmp_path / "story.txt").write_text(STORY, encoding="utf-8")
    assert main(["prepare", str(tmp_path / "story.txt"), "--bytes", "--context", "24", "--quiet",
                 "--out", str(tmp_path / "d")]) == 0
    assert main(["train", "--data", str(tmp_path / "d"), "--context", "24", "--steps", "2",
                 "--batch-size", "2", "--eval-every", "2", "--eval-batches", "1", "--quiet",
                 "--n-layer", "1", "--n-embd", "32", "--n-head", "2",
                 "--out", str(tmp_path / "r")]) == 0
    config = json.loads((tmp_path / "r" / "run.json").read_text())["config"]
    assert config["context_length"] == 24
    capsys.readouterr()
    assert main(["eval", "--run", str(tmp_path / "r"), "--data", str(tmp_path / "d"),
                 "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["context"] == 24


def test_a_json_record_cut_short_is_named_once_with_its_column(tmp_path, capsys):
    """json's message 'Unterminated string starting at' read 'starting at at column 10'."""
    (tmp_path / "cut.jsonl").write_text('{"text": "abc')
    assert main(["prepare", str(tmp_path / "cut.jsonl"), "--bytes", "--quiet", "--out",
                 str(tmp_path / "d")]) == 2
    err = capsys.readouterr().err
    assert "cut.jsonl:1: not a JSON record (Unterminated string starting at column 10)" in err, err


def test_a_damaged_gzip_is_skipped_with_skip_bad_and_legacy_text_inside_gzip_is_named(tmp_path,
                                                                                      capsys):
    corpus = tmp_path / "c"
    corpus.mkdir()
    (corpus / "ok.txt").write_text("fine text " * 30, encoding="utf-8")
    (corpus / "cut.txt.gz").write_bytes(gzip.compress(np.random.default_rng(1).bytes(4000))[:900])
    assert main(["prepare", str(corpus), "--bytes", "--skip-bad", "--val-fraction", "0",
                 "--quiet", "--out", str(tmp_path / "d")]) == 0
    manifest = json.loads((tmp_path / "d" / "manifest.json").read_text())
    cut = next(s for s in manifest["sources"] if s["path"].endswith("cut.txt.gz"))
    assert cut["skipped"] == [{"offset": 0, "reason": "damaged gzip"}] and cut["documents"] == 0
    assert manifest["splits"]["train"]["bytes"] == 300
    (corpus / "cut.txt.gz").unlink()
    (corpus / "old.txt.gz").write_bytes(gzip.compress("café crème\n".encode("latin-1")))
    assert main(["prepare", str(corpus), "--bytes", "--quiet", "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err
    assert "--encoding latin-1" in err and "binary" not in err, err


def test_split_by_position_scores_two_tokenizers_on_the_same_text(tmp_path):
    """BPE and bytes over one long document: the validation text is the last 1 % of its bytes
    for both, to within a token at the cut (a cut in tokens gave them different texts)."""
    from jaxbasics.data.batches import TokenData

    (tmp_path / "long.txt").write_text(STORY * 30, encoding="utf-8")
    texts = {}
    for name, args in (("bpe", ["--train-tokenizer", "--vocab-size", "400"]), ("bytes", ["--bytes"])):
        assert main(["prepare", str(tmp_path / "long.txt"), *args, "--context", "16", "--quiet",
                     "--out", str(tmp_path / name)]) == 0
        val = TokenData.open(tmp_path / name, "val")
        texts[name] = val.tokenizer.decode(val.read(np.zeros(1, np.int64), val.n)[0])
    whole = (STORY * 30).encode("utf-8")
    assert len(texts["bytes"].encode("utf-8")) == -(-len(whole) // 100)
    short, long = sorted(texts.values(), key=len)
    assert long.endswith(short) and 0 <= len(long) - len(short) < 16
