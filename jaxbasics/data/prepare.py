"""``prepare``: a corpus on disk -> a DATA folder of token shards, its tokenizer and a manifest
(layout: :mod:`jaxbasics.data.manifest`).

Order of work, so that bad input is refused before anything is written and a run killed at any
moment leaves no manifest:

1. the output folder is checked: new or empty, or an unfinished ``prepare`` of ours (cleared,
   and said so); one that holds a finished data set or anything else is refused;
2. the tokenizer folder is read (``tokenizer``) and tried on a test text (it must give the text
   back, its tokens' bytes adding up to the text's: :func:`~jaxbasics.data.vocab.check_round_trip`),
   and the sources found and scanned: every byte read once, checked (UTF-8, JSON Lines
   records), counted and digested;
3. the tokenizer is trained if asked (``train_vocab``: byte-level BPE on the training split's
   documents, streamed), and saved in ``DATA/tokenizer``;
4. documents are streamed to the batch encoder (``encode_batch``: all cores) in batches of
   about ``batch_bytes`` of text as ordinary text (a literal ``<|endoftext|>`` in a document is
   text), each preceded by the end-of-text id (llm.c: every document starts with it), every
   batch decoded again and checked as in 2 (so the manifest's bytes are the bytes the tokens
   stand for: bits per byte is exact), and appended to ``train_NNNNNN.bin`` / ``val_NNNNNN.bin`` shards of at
   most ``shard_tokens`` tokens;
5. ``manifest.json`` is written last.

The split is by document: a document goes to validation when the first 8 bytes of the SHA-256
of its UTF-8 bytes, read as a big-endian integer, are below ``val_fraction · 2**64``. It depends
on nothing but the text, so it is the same on every run and every machine, and copies of one
document always land in the same split. Where that rule would leave a split without a document
(a single story, a corpus of a few files: about ``1 / val_fraction`` documents are needed), the
split is by position instead, as nanoGPT splits Shakespeare: the tokens of the last
``val_fraction`` of the text's bytes (at least one window of ``context + 1`` tokens) are the
validation split, so that two tokenizers are scored on the same text. The manifest's
``split_rule`` says which rule was used.

Memory stays flat as the corpus grows: one batch of text and its ids, one long document's
piece (:func:`jaxbasics.data.sources.iter_pieces`), and the tokenizer trainer's counts.
"""

from __future__ import annotations

import re
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from jaxbasics import checks
from jaxbasics.data import manifest as manifest_file
from jaxbasics.data.shards import ShardWriter
from jaxbasics.data.sources import PIECE_BYTES, SourceFile, find_files, iter_pieces, scan
from jaxbasics.data.vocab import (
    PROBE_TEXT,
    ByteTokenizer,
    HFTokenizer,
    check_round_trip,
    check_vocab_size,
    load_tokenizer,
    token_dtype,
    train_bpe,
)

#: what the manifest says of the split
SPLIT_RULE = ("validation iff int.from_bytes(sha256(document's UTF-8 bytes)[:8], 'big') "
              "< val_fraction * 2**64")
POSITION_RULE = ("validation = the last val_tokens tokens of the stream of all documents: those "
                 "of the last val_fraction of its text's bytes (from the token holding the "
                 "first of them), at least one window of context + 1 tokens (the document rule "
                 "would have left a split without a document)")
_OURS = re.compile(r"^((train|val)_\d{6}\.bin(\.partial)?|manifest\.json\.partial|"
                   + re.escape(manifest_file.MARKER) + "|" + manifest_file.TOKENIZER_FOLDER + ")$")


@dataclass(frozen=True)
class PrepareOptions:
    """Settings of :func:`prepare` (the CLI's options of the same names).

    ``val_fraction``: expected share of documents in the validation split, in [0, 1) (0: no
    validation split); ``shard_tokens``: tokens per shard (llm.c: 100M); ``skip_bad``: leave out
    files (JSON Lines: records) that are not UTF-8, counted in the manifest, instead of
    refusing them; ``glob``: which files of a folder (patterns, their union; default all);
    ``exclude``: patterns of the paths below a folder to leave out
    (:func:`~jaxbasics.data.sources.find_files`); ``jsonl_field``: the text field of
    ``.jsonl`` records; ``encoding``: of text files (JSON Lines are UTF-8); ``context``: the
    validation split must hold one window of ``context + 1`` tokens (and a split by position
    is cut in such windows); ``batch_bytes``: text handed to the encoder at once;
    ``min_frequency``: of a BPE merge, when training."""

    val_fraction: float = 0.01
    shard_tokens: int = 100_000_000
    skip_bad: bool = False
    glob: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    jsonl_field: str = "text"
    encoding: str = "utf-8"
    context: int = 128
    batch_bytes: int = 4 << 20  # smaller: less memory, but cores idle at each batch's end
    min_frequency: int = 2

    def __post_init__(self) -> None:
        if isinstance(self.glob, str):  # one pattern, as before
            object.__setattr__(self, "glob", (self.glob,))
        import codecs

        try:
            codecs.getincrementaldecoder(self.encoding)
        except (LookupError, TypeError):
            raise ValueError(f"encoding {self.encoding!r} is not an encoding Python knows "
                             f"(e.g. utf-8, latin-1, cp1252)") from None
        checks.number_in(self.val_fraction, "val_fraction", 0.0, 1.0, open_hi=True)
        for name in ("shard_tokens", "context", "batch_bytes", "min_frequency"):
            checks.positive_int(getattr(self, name), name)
        if self.shard_tokens >= 2**31:
            raise ValueError(f"shard_tokens must be below 2**31 (an int32 count in the shard "
                             f"header), got {self.shard_tokens}")
        if not isinstance(self.jsonl_field, str) or not self.jsonl_field:
            raise ValueError(f"jsonl_field must be a field name, got {self.jsonl_field!r}")


def in_val(digest: bytes, val_fraction: float) -> bool:
    """True when the document of SHA-256 ``digest`` belongs to the validation split
    (module docstring)."""
    return int.from_bytes(digest[:8], "big") < val_fraction * 2**64


#: ``progress(phase, bytes_done, bytes_total, tokens_done)``; phases "scan", "train", "encode"
Progress = Callable[[str, int, int, int], Any]


def claim_output(out: Path) -> list[Path]:
    """What must be removed before ``prepare`` writes into ``out``: nothing for a new or empty
    folder, the entries of an unfinished ``prepare`` (it left its marker and no manifest).

    Raises ``ValueError`` naming ``out`` when it is a file, when it holds a finished data set
    (``manifest.json``), or anything ``prepare`` did not write."""
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out} is a file, not a folder")
    if not out.is_dir():
        return []
    entries = sorted(out.iterdir())
    if not entries:
        return []
    names = [e.name for e in entries]
    if manifest_file.NAME in names:
        raise ValueError(f"--out {out} already holds a prepared data set ({manifest_file.NAME}); "
                         f"remove the folder or choose another")
    if manifest_file.MARKER not in names:
        raise ValueError(f"--out {out} is not empty and was not written by jaxbasics prepare "
                         f"(it holds {', '.join(names[:3])}{' …' if len(names) > 3 else ''}); "
                         f"give a new or empty folder")
    foreign = [n for n in names if not _OURS.match(n)]
    if foreign:
        raise ValueError(f"--out {out} holds an unfinished prepare and also {', '.join(foreign[:3])}"
                         f", which prepare did not write: remove those or give another folder")
    return entries


def _tokenizer_choice(tokenizer: str | Path | None, train_vocab: int | None,
                      byte_level: bool) -> None:
    chosen = [n for n, on in (("tokenizer", tokenizer is not None),
                              ("train_vocab", train_vocab is not None),
                              ("byte_level", byte_level)) if on]
    if len(chosen) != 1:
        raise ValueError(f"choose one tokenizer: a folder (--tokenizer DIR), a trained BPE "
                         f"(--train-tokenizer --vocab-size N) or bytes (--bytes); got "
                         f"{' and '.join(chosen) or 'none'}")
    if train_vocab is not None:
        check_vocab_size(train_vocab, "--vocab-size", low=257)


class _Split:
    """The shards of one split being written, and its counts."""

    def __init__(self, out: Path, name: str, vocab_size: int, shard_tokens: int):
        self.out, self.name, self.vocab_size, self.limit = out, name, vocab_size, shard_tokens
        self.documents = self.bytes = self.tokens = 0
        self.shards: list[str] = []
        self._writer: ShardWriter | None = None

    def write(self, ids: np.ndarray) -> None:
        while ids.size:
            if self._writer is None:
                name = f"{self.name}_{len(self.shards):06d}.bin"
                self._writer = ShardWriter(self.out / name, self.vocab_size)
                self.shards.append(name)
            take = min(ids.size, self.limit - self._writer.count)
            self._writer.write(ids[:take])
            self.tokens += take
            ids = ids[take:]
            if self._writer.count == self.limit:
                self._writer.close()
                self._writer = None

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def abort(self) -> None:
        if self._writer is not None:
            self._writer.abort()
            self._writer = None

    def describe(self) -> dict:
        return {"documents": self.documents, "bytes": self.bytes, "tokens": self.tokens,
                "shards": self.shards}


def prepare(sources: Sequence[str | Path], out: str | Path, *,
            tokenizer: str | Path | None = None, train_vocab: int | None = None,
            byte_level: bool = False, options: PrepareOptions | None = None,
            command: Sequence[str] | None = None, progress: Progress | None = None,
            log: Callable[[str], Any] = print) -> dict[str, Any]:
    """Tokenize the documents of ``sources`` into the DATA folder ``out`` (module docstring);
    returns the manifest written.

    Exactly one tokenizer: ``tokenizer`` (a folder :func:`~jaxbasics.data.vocab.load_tokenizer`
    reads, e.g. GPT-2's ``vocab.json`` + ``merges.txt``; it must have an end-of-text token),
    ``train_vocab`` (train a byte-level BPE of at most that many ids) or ``byte_level`` (UTF-8
    byte ids, 256 = end-of-text). ``command`` is recorded (default ``sys.argv``); ``log`` is
    told when an unfinished prepare is cleared.

    Raises, before anything is written: ``ValueError`` for options out of range, a second or
    no tokenizer, an output folder that holds a data set or something else, a file that is not
    UTF-8 (:class:`~jaxbasics.data.sources.BadInput`, named with its byte offset), a bad JSON
    Lines record, a glob that matches nothing, an empty corpus, a split left without a document,
    a tokenizer without an end-of-text token; ``FileNotFoundError`` for a missing source or
    tokenizer file. And after tokenizing, with everything written removed: ``ValueError`` when
    the validation split holds fewer than ``context + 1`` tokens."""
    opts = options or PrepareOptions()
    out = Path(out)
    _tokenizer_choice(tokenizer, train_vocab, byte_level)
    leftovers = claim_output(out)
    tok: ByteTokenizer | HFTokenizer | None = None
    if tokenizer is not None:
        tok = load_tokenizer(tokenizer, advice="give a folder with the tokenizer's files "
                                               "(--tokenizer), or --train-tokenizer, or --bytes")
        if tok.eot_id is None:
            raise ValueError(f"--tokenizer {tokenizer} has no end-of-text token (one of "
                             f"<|endoftext|>, </s>, <eos>) to separate documents with")
        check_round_trip(tok, [PROBE_TEXT], tok.encode_batch([PROBE_TEXT]),
                         name=f"--tokenizer {tokenizer}", where=["a test text"])
    elif byte_level:
        tok = ByteTokenizer(end_of_text=True)

    files = find_files(sources, opts.glob, opts.exclude)
    counts = {"train": [0, 0], "val": [0, 0]}  # documents, bytes (by the document rule)
    total = sum(f.path.stat().st_size for f in files)
    done = [0]

    def on_document(digest: bytes, nbytes: int) -> None:
        c = counts["val" if in_val(digest, opts.val_fraction) else "train"]
        c[0] += 1
        c[1] += nbytes

    def on_bytes(n: int) -> None:
        done[0] += n
        if progress is not None:
            progress("scan", done[0], total, 0)

    scan(files, jsonl_field=opts.jsonl_field, skip_bad=opts.skip_bad, encoding=opts.encoding,
         on_document=on_document, on_bytes=on_bytes)
    _check_corpus(files, counts)
    by_position = opts.val_fraction > 0 and (counts["train"][0] == 0 or counts["val"][0] == 0)

    def split_of(digest: bytes) -> str:
        return "val" if not by_position and in_val(digest, opts.val_fraction) else "train"

    created = not out.exists()
    if leftovers:
        log(f"{out}: clearing an unfinished prepare ({len(leftovers)} entries) and starting over")
        for entry in leftovers:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    out.mkdir(parents=True, exist_ok=True)
    writing: dict[str, _Split] = {}
    try:
        (out / manifest_file.MARKER).write_text(f"jaxbasics prepare, started "
                                                f"{datetime.now(UTC).isoformat()}\n")
        if tok is None:
            assert train_vocab is not None
            tok = _train(files, train_vocab, split_of, opts, progress)
        tok.save(out / manifest_file.TOKENIZER_FOLDER)
        assert tok.eot_id is not None
        splits = ("train", "val") if opts.val_fraction > 0 else ("train",)
        writing = {s: _Split(out, s, tok.vocab_size, opts.shard_tokens) for s in splits}
        t0 = time.perf_counter()
        _encode(files, tok, writing, opts, split_of, sum(c[1] for c in counts.values()),
                progress)
        for split in writing.values():
            split.close()
        if by_position:
            _split_tail(writing["train"], writing["val"], opts, tok)
        seconds = time.perf_counter() - t0
        if "val" in writing and writing["val"].tokens < opts.context + 1:
            raise ValueError(f"the validation split holds {writing['val'].tokens} tokens "
                             f"({writing['val'].documents} documents), too few for one window of "
                             f"context {opts.context}: raise --val-fraction, or lower --context")
        manifest = {
            "format": manifest_file.FORMAT, "created": datetime.now(UTC).isoformat(),
            "command": list(sys.argv if command is None else command),
            "tokenizer": {**tok.describe(), "folder": manifest_file.TOKENIZER_FOLDER},
            "vocab_size": tok.vocab_size, "token_dtype": token_dtype(tok.vocab_size).name,
            "splits": {name: s.describe() for name, s in writing.items()},
            "split_rule": {"val_fraction": opts.val_fraction, "kind": "document", "rule": SPLIT_RULE}
            if not by_position else {"val_fraction": opts.val_fraction, "kind": "position",
                                     "rule": POSITION_RULE, "window": opts.context + 1,
                                     "val_tokens": writing["val"].tokens},
            "sources": [f.describe() for f in files],
            "skipped": {"files": sum(1 for f in files if f.skipped and f.kind == "text"),
                        "records": sum(len(f.skipped) for f in files if f.kind == "jsonl")},
            "options": asdict(opts), "encode_seconds": round(seconds, 3)}
        manifest_file.write(out, manifest)
    except BaseException:
        for split in writing.values():
            split.abort()
        _remove_ours(out, created)
        raise
    return manifest


def _check_corpus(files: list[SourceFile], counts: dict[str, list[int]]) -> None:
    documents = counts["train"][0] + counts["val"][0]
    if documents == 0 or counts["train"][1] + counts["val"][1] == 0:
        skipped = sum(len(f.skipped) for f in files)
        raise ValueError(f"empty corpus: {len(files)} file(s) hold no text"
                         + (f" ({skipped} left out with --skip-bad)" if skipped else ""))


def _split_tail(train: _Split, val: _Split, opts: PrepareOptions,
                tok: ByteTokenizer | HFTokenizer) -> None:
    """Move the tokens of the last ``val_fraction`` of the text's bytes (from the token that
    holds the first of those bytes on), at least one window of ``context + 1`` tokens, to the
    validation split: the split by position (module docstring). Cut in bytes of text, the
    validation text is the same, to within a token at the cut, whatever the tokenizer: bits per
    byte of two tokenizers compare over the same text. ``ValueError`` when that would leave
    training less than one window."""
    from jaxbasics.data.shards import read_shard, truncate_shard

    window = opts.context + 1
    n = train.tokens
    table = tok.token_bytes()
    want = -(-train.bytes * opts.val_fraction // 1)  # ceil: the last bytes of text to take
    count, held = 0, 0
    for name in reversed(train.shards):  # from the end, a chunk at a time: memory stays flat
        tokens = read_shard(train.out / name).tokens
        for stop in range(len(tokens), 0, -(1 << 24)):
            part = np.asarray(tokens[max(0, stop - (1 << 24)): stop])[::-1]
            reached = np.flatnonzero(held + np.cumsum(table[part]) >= want)
            if reached.size:
                count += int(reached[0]) + 1
                break
            count, held = count + part.size, held + int(table[part].sum())
        else:
            del tokens
            continue
        del tokens
        break
    count = max(count, window)
    if n - count < window:
        raise ValueError(f"the corpus is {n:,} tokens: too few to split off one window of "
                         f"--context {opts.context} for validation and keep one for training; "
                         f"lower --context, add text, or --val-fraction 0 (no validation split)")
    assert tok.eot_id is not None
    keep, ends = n - count, np.cumsum([len(read_shard(train.out / s)) for s in train.shards])
    first = int(np.searchsorted(ends, keep, side="right"))  # the shard holding token `keep`
    moved_eot, head = 0, None
    for k in range(first, len(train.shards)):
        tokens = read_shard(train.out / train.shards[k]).tokens
        start = keep - (int(ends[k - 1]) if k else 0) if k == first else 0
        for at in range(start, len(tokens), 1 << 24):
            part = np.asarray(tokens[at: at + (1 << 24)])
            head = part[0] if head is None else head
            val.write(part)
            val.bytes += int(table[part].sum())
            moved_eot += int((part == tok.eot_id).sum())
        del tokens  # no map of a shard is left open when it is cut
    val.close()
    for k in range(len(train.shards) - 1, first - 1, -1):
        start = keep - (int(ends[k - 1]) if k else 0)
        if start > 0:
            truncate_shard(train.out / train.shards[k], start)
        else:
            (train.out / train.shards.pop(k)).unlink()
    val.documents = moved_eot + int(head != tok.eot_id)
    train.documents -= moved_eot
    train.bytes -= val.bytes
    train.tokens = keep


def _train(files: list[SourceFile], vocab_size: int, split_of: Callable[[bytes], str],
           opts: PrepareOptions, progress: Progress | None) -> HFTokenizer:
    done = [0]
    nbytes = sum(f.bytes for f in files)

    def texts():
        for piece in iter_pieces(files, jsonl_field=opts.jsonl_field, encoding=opts.encoding):
            if split_of(piece.digest) == "train":
                done[0] += piece.nbytes
                if progress is not None:
                    progress("train", done[0], nbytes, 0)
                yield piece.text

    return train_bpe(texts(), vocab_size, min_frequency=opts.min_frequency)


def _encode(files: list[SourceFile], tok: ByteTokenizer | HFTokenizer, writing: dict[str, _Split],
            opts: PrepareOptions, split_of: Callable[[bytes], str], nbytes: int,
            progress: Progress | None) -> None:
    assert tok.eot_id is not None
    eot = np.array([tok.eot_id], np.uint32)
    batch: list[Any] = []
    held = [0, 0, 0]  # bytes in the batch, bytes done, tokens done
    table = tok.token_bytes()
    who = "--train-tokenizer's BPE" if isinstance(tok, HFTokenizer) and tok.source.startswith(
        "trained") else f"--tokenizer {getattr(tok, 'source', '')}"

    def flush() -> None:
        texts = [p.text for p in batch]
        ids = tok.encode_batch(texts)
        check_round_trip(tok, texts, ids, name=who, where=[p.source for p in batch], table=table)
        parts: dict[str, list[np.ndarray]] = {name: [] for name in writing}
        for piece, a in zip(batch, ids, strict=True):
            name = split_of(piece.digest)
            split = writing[name]
            if piece.first:
                parts[name].append(eot)
                split.documents += 1
            parts[name].append(a)
            split.bytes += piece.nbytes
        for name, arrays in parts.items():
            if arrays:
                joined = np.concatenate(arrays)
                writing[name].write(joined)
                held[2] += joined.size
        held[1] += held[0]
        held[0] = 0
        batch.clear()
        if progress is not None:
            progress("encode", held[1], nbytes, held[2])

    piece_bytes = PIECE_BYTES if tok.splits_at_line_breaks else None
    for piece in iter_pieces(files, jsonl_field=opts.jsonl_field, piece_bytes=piece_bytes,
                             encoding=opts.encoding):
        batch.append(piece)
        held[0] += piece.nbytes
        if held[0] >= opts.batch_bytes:
            flush()
    if batch:
        flush()


def _remove_ours(out: Path, created: bool) -> None:
    """Remove what prepare wrote into ``out`` (the folder too, if it made it)."""
    if not out.is_dir():
        return
    for entry in out.iterdir():
        if _OURS.match(entry.name) or entry.name == manifest_file.NAME:
            shutil.rmtree(entry) if entry.is_dir() else entry.unlink()
    if created and not any(out.iterdir()):
        out.rmdir()
