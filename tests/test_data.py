"""The data room: tokenizers against the tokenizers library, shards against an independent llm.c
reader, nanoGPT and llm.c files read as they are, damaged files named, and windows: every start
reachable, a pure function of (seed, step), rows of one batch shared out between processes."""

import re
import struct

import numpy as np
import pytest
import tokenizers

from jaxbasics.data.batches import TokenData, stride_windows
from jaxbasics.data.shards import read_shard, write_shard
from jaxbasics.data.vocab import ByteTokenizer, load_tokenizer, token_dtype, train_bpe

MULTILINGUAL = [
    "English: the quick brown fox jumps over the lazy dog.",
    "Deutsch: Größe, Straße, Übermut — „Anführungszeichen“.",
    "Français : où est l'hôtel ? Ça coûte 12,50 €.",
    "Русский: съешь же ещё этих мягких французских булок.",
    "Ελληνικά: Ξεσκεπάζω την ψυχοφθόρα βδελυγμία.",
    "中文：我能吞下玻璃而不伤身体。日本語：私はガラスを食べられます。",
    "한국어: 나는 유리를 먹을 수 있어요. हिन्दी: मैं काँच खा सकता हूँ।",
    "العربية: أنا قادر على أكل الزجاج و هذا لا يؤلمني.",
    "Emoji 🙂🚀 and combining marks: é (e + U+0301), Z͑ͫ̓ͪ̂ͫ̽͏̴̙̤̞͉͚̯̞̠͍",
    "code:\n\tdef f(x):\n\t\treturn x ** 2  # tabs\r\nand CRLF\r\n",
]


@pytest.fixture(scope="module")
def bpe():
    return train_bpe(iter(MULTILINGUAL * 5), 600, min_frequency=1)


def test_bpe_round_trips_multilingual_text_and_counts_its_bytes(bpe, tmp_path):
    held_out = "Unseen: Zwölf Boxkämpfer jagen Viktor quer über den großen Sylter Deich. 🦊 狐"
    for text in [*MULTILINGUAL, held_out]:
        ids = bpe.encode(text)
        assert bpe.decode(ids) == text
        assert len(ids) < len(text.encode("utf-8")) or text == held_out  # merges were learnt
        assert int(bpe.token_bytes()[ids].sum()) == len(text.encode("utf-8"))
    assert bpe.eot_id == 0 and bpe.token_bytes()[0] == 0
    assert 300 < bpe.vocab_size <= 600
    # the same ids as the tokenizers library's own tokenizer, loaded from what save() wrote
    bpe.save(tmp_path / "json")
    own = tokenizers.Tokenizer.from_file(str(tmp_path / "json" / "tokenizer.json"))
    batch = bpe.encode_batch(MULTILINGUAL)
    for text, ids in zip(MULTILINGUAL, batch, strict=True):
        assert ids.tolist() == own.encode(text, add_special_tokens=False).ids
    # GPT-2's way of shipping it (vocab.json + merges.txt) reads back to the same tokenizer
    (tmp_path / "gpt2").mkdir()
    own.model.save(str(tmp_path / "gpt2"))
    as_gpt2 = load_tokenizer(tmp_path / "gpt2")
    assert sorted(p.name for p in (tmp_path / "gpt2").iterdir()) == ["merges.txt", "vocab.json"]
    assert [as_gpt2.encode(t) for t in MULTILINGUAL] == [b.tolist() for b in batch]
    assert as_gpt2.eot_id == 0 and (as_gpt2.token_bytes() == bpe.token_bytes()).all()
    byte = ByteTokenizer(end_of_text=True)
    assert byte.decode(byte.encode(MULTILINGUAL[8]) + [256]) == MULTILINGUAL[8]
    byte.save(tmp_path / "bytes")
    assert load_tokenizer(tmp_path / "bytes").vocab_size == 257


def test_tokenizer_errors_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match=rf"{tmp_path} has no tokenizer \(tokenizer.json, "
                                                r"or vocab.json and merges.txt\)"):
        load_tokenizer(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(ValueError, match="tokenizer.json is not a tokenizer file the tokenizers "
                                         "package can read"):
        load_tokenizer(tmp_path)
    for size in (255, 256, 2**32 + 1, "300"):
        with pytest.raises(ValueError, match=r"vocab_size must be an integer in \[257, 2\*\*32\]"):
            train_bpe(iter(["a"]), size)
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


def _llmc_read(path):
    """An independent reader of llm.c's format: struct for the header, np.fromfile for tokens."""
    with open(path, "rb") as f:
        magic, version, count = struct.unpack("<3i", f.read(12))
    dtype = {1: "<u2", 2: "<u4"}[version]
    assert magic == 20240520
    tokens = np.fromfile(path, dtype, offset=1024)
    assert tokens.size == count
    return version, tokens


def test_shards_read_back_by_an_independent_reader_and_damage_is_named(tmp_path):
    tokens = np.random.default_rng(0).integers(0, 50257, 1000)
    path = write_shard(tmp_path / "a_train_000000.bin", tokens, 50257)
    version, back = _llmc_read(path)
    assert version == 1 and (back == tokens).all()
    assert not list(tmp_path.glob("*.partial"))
    wide = np.array([0, 70000, 99999])
    version, back = _llmc_read(write_shard(tmp_path / "wide.bin", wide, 100000))
    assert version == 2 and (back == wide).all()
    assert (read_shard(tmp_path / "wide.bin").tokens == wide).all()
    data = path.read_bytes()
    damaged = {"truncated.bin": data[:-2], "padded.bin": data + b"\0\0", "magic.bin": b"\1" + data[1:],
               "version.bin": data[:4] + struct.pack("<i", 3) + data[8:]}
    messages = {"truncated.bin": "damaged shard: its header counts 1000 tokens (3024 bytes with the "
                                 "header), but the file has 3022 bytes",
                "padded.bin": "but the file has 3026 bytes",
                "magic.bin": "bad magic: an llm.c shard starts with 20240520",
                "version.bin": "unknown shard version 3 for magic 20240520"}
    for name, content in damaged.items():
        (tmp_path / name).write_bytes(content)
        with pytest.raises(ValueError, match=re.escape(messages[name])) as info:
            read_shard(tmp_path / name)
        assert str(info.value).startswith(str(tmp_path / name))
    bad = int(np.argmax(tokens >= 40000))
    with pytest.raises(ValueError, match=rf"token ids go up to {tokens.max()}, outside the "
                                         r"vocabulary of vocab_size 40000 "
                                         rf"\(ids 0 to 39999; the "
                                         rf"first one at position {bad}\)"):
        TokenData.open(path, vocab_size=40000, check=True)
    with pytest.raises(ValueError, match="token ids must lie in"):
        write_shard(tmp_path / "x.bin", np.array([5, 300]), 300)
    assert not (tmp_path / "x.bin").exists() and not list(tmp_path.glob("*.partial"))


def test_nanogpt_and_llmc_files_are_read_as_they_are(tmp_path, bpe):
    """nanoGPT's headerless uint16 train.bin / val.bin, and shards written the way llm.c's
    data_common.write_datafile writes them (named as modded-nanogpt names FineWeb's)."""
    rng = np.random.default_rng(1)
    nano = tmp_path / "nano"
    nano.mkdir()
    train, val = rng.integers(0, 300, 500, dtype=np.uint16), rng.integers(0, 300, 80, dtype=np.uint16)
    train.tofile(nano / "train.bin")
    val.tofile(nano / "val.bin")
    data = TokenData.open(nano, "val", vocab_size=300)
    assert data.n == 80 and data.shards[0].format == "nanogpt"
    assert (data.read([0], 80)[0] == val).all()
    bpe.save(tmp_path / "tok")
    data = TokenData.open(nano, "train", tokenizer=tmp_path / "tok")  # vocabulary from it
    assert data.vocab_size == bpe.vocab_size and (data.read([0], 500)[0] == train).all()
    with pytest.raises(ValueError, match="raw token files do not record their vocabulary size"):
        TokenData.open(nano, "train")
    llmc = tmp_path / "llmc"
    llmc.mkdir()
    parts = [rng.integers(0, 50257, n) for n in (300, 200)]
    for i, part in enumerate(parts):
        header = np.zeros(256, np.int32)
        header[:3] = 20240520, 1, len(part)
        with open(llmc / f"fineweb_train_{i + 1:06d}.bin", "wb") as f:
            f.write(header.tobytes())
            f.write(part.astype(np.uint16).tobytes())
    data = TokenData.open(llmc, "train", vocab_size=50257)
    assert data.n == 500 and len(data.shards) == 2
    # a window across the two shards reads on from the first into the second
    assert (data.read([290], 20)[0] == np.concatenate(parts)[290:310]).all()


@pytest.fixture()
def split(tmp_path):
    tokens = np.arange(1, 41, dtype=np.int64) * 7 % 97
    write_shard(tmp_path / "s_train_000000.bin", tokens[:25], 97)
    write_shard(tmp_path / "s_train_000001.bin", tokens[25:], 97)
    return TokenData.open(tmp_path, "train", vocab_size=97), tokens


def test_every_window_start_is_drawn_and_batches_are_a_pure_function_of_seed_and_step(split):
    """The old draw (integers(0, n - C - 1)) never gave the last start, n - C - 1."""
    data, tokens = split
    context = 36  # n = 40: starts 0..3
    seen = set()
    for step in range(40):
        starts = data.batch_starts(step, 4, context, seed=5)
        x, y = data.batch(step, 4, context, seed=5)
        for s, xr, yr in zip(starts, x, y, strict=True):
            assert (xr == tokens[s: s + context]).all() and (yr == tokens[s + 1: s + context + 1]).all()
        seen |= set(starts.tolist())
        again = data.batch(step, 4, context, seed=5)
        assert (again[0] == x).all() and (again[1] == y).all()
    assert seen == {0, 1, 2, 3}
    assert x.dtype == np.int32 and x.shape == (4, context)
    assert not (data.batch(0, 4, 8, seed=1)[0] == data.batch(0, 4, 8, seed=2)[0]).all()
    with pytest.raises(ValueError, match="holds 40 tokens: too few for one window of context 40"):
        data.batch(0, 2, 40)


def test_two_processes_rows_are_disjoint_and_make_the_whole_batch(split):
    data, _ = split
    x, y = data.batch(7, 8, 10, seed=3)
    first, second = data.batch(7, 8, 10, seed=3, rows=slice(0, 4)), data.batch(7, 8, 10, seed=3,
                                                                             rows=slice(4, 8))
    assert (np.concatenate([first[0], second[0]]) == x).all()
    assert (np.concatenate([first[1], second[1]]) == y).all()
    odd = data.batch(7, 8, 10, seed=3, rows=[1, 3, 5, 7])
    assert (odd[0] == x[1::2]).all()
    with pytest.raises(ValueError, match=r"rows must lie in \[0, 8\), got 0 to 8"):
        data.batch(7, 8, 10, rows=[0, 8])


def test_evaluation_windows_are_fixed_and_cover_the_split(split):
    data, tokens = split
    starts = data.eval_starts(5, 10)
    assert starts[0] == 0 and starts[-1] == 40 - 10 - 1
    batches = list(data.eval_batches(2, 3, 10))
    assert len(batches) == 2 and all(x.shape == (3, 10) for x, _ in batches)
    assert (batches[1][1][-1] == tokens[-10:]).all()  # the last window ends at the last token
    assert all((a[0] == b[0]).all() for a, b in zip(batches, data.eval_batches(2, 3, 10), strict=True))


@pytest.mark.parametrize("n,context,stride", [(11, 4, 2), (12, 4, 3), (5, 4, 4), (100, 16, 16),
                                              (100, 16, 1), (97, 16, 5)])
def test_strided_windows_score_each_token_once_with_the_history_promised(n, context, stride):
    starts, first = stride_windows(n, context, stride)
    scored = []
    for k, (b, f) in enumerate(zip(starts, first, strict=True)):
        assert 0 <= b <= n - 1 - context  # whole windows
        targets = [b + 1 + i for i in range(f, context)]
        scored += targets
        if k:
            assert f + 1 >= context - stride + 1  # inputs up to the first scored label
    assert sorted(scored) == list(range(1, n)) and len(scored) == n - 1


def test_a_long_document_cut_into_pieces_gives_the_ids_of_the_whole(bpe, tmp_path):
    """prepare hands a text file over 8 MiB to the encoder in pieces, cut after a line break
    between non-space characters: GPT-2's pre-tokenizer gives the same ids as for the whole."""
    from jaxbasics.data.sources import find_files, iter_pieces, scan

    lines = [f"{t}  \n\n   {i}\n" if i % 3 else t for i, t in enumerate(MULTILINGUAL * 6)]
    text = "\n".join(lines)
    (tmp_path / "long.txt").write_text(text, encoding="utf-8")
    files = find_files([tmp_path / "long.txt"])
    scan(files)
    pieces = list(iter_pieces(files, piece_bytes=300))
    assert len(pieces) > 5 and [p.first for p in pieces] == [True] + [False] * (len(pieces) - 1)
    assert "".join(p.text for p in pieces) == text
    assert sum(p.nbytes for p in pieces) == len(text.encode()) == files[0].bytes
    assert bpe.splits_at_line_breaks
    assert [i for ids in bpe.encode_batch([p.text for p in pieces]) for i in ids] == bpe.encode(text)


def test_a_folder_walk_leaves_out_the_excluded_paths(tmp_path):
    """prepare --exclude 'site-packages/*' (the README's standard-library corpus): fnmatch's *
    crosses folders; a walk left with nothing names the patterns."""
    from jaxbasics.data.sources import find_files

    for rel in ("a.py", "pkg/b.py", "site-packages/x/c.py", "site-packages/d.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("pass\n")
    found = [f.path.relative_to(tmp_path).as_posix()
             for f in find_files([tmp_path], "**/*.py", ("site-packages/*",))]
    assert found == ["a.py", "pkg/b.py"]
    with pytest.raises(ValueError, match=r"matches no file under .* outside --exclude \*\.py"):
        find_files([tmp_path], "**/*.py", ("*.py",))


def test_a_tokenizer_folder_that_does_not_exist_is_named_as_missing(tmp_path, capsys):
    """generate --hf path/to/gpt2 (the README's placeholder) said the folder had no tokenizer."""
    from jaxbasics.cli import main
    from jaxbasics.data.vocab import load_tokenizer

    with pytest.raises(FileNotFoundError, match=r"nope does not exist \(or is not a folder\)"):
        load_tokenizer(tmp_path / "nope")
    assert main(["generate", "--hf", str(tmp_path / "nope"), "--prompt", "a"]) == 2
    assert capsys.readouterr().err == (f"jaxbasics generate: {tmp_path / 'nope'} does not exist "
                                       f"(or is not a folder): give the folder that holds the "
                                       f"tokenizer's files\n")
