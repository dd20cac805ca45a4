"""Windows of tokens for training and evaluation, read from memory-mapped shards.

A split is the concatenation of its shards' tokens ``t[0..n-1]`` (documents already separated
by end-of-text). A training window at ``start`` is ``x = t[start : start+C]``,
``y = t[start+1 : start+C+1]`` (C the context), so ``start`` ranges over ``[0, n-C-1]``: every
one of those ``n - C`` starts can be drawn. The starts of step ``s`` are a pure function of
``(seed, s)``, so a resumed run reads exactly the windows an uninterrupted one reads, and a
process of a multi-process run can read only its own rows (``rows=``) of the same batch.

Nothing is read until a window asks for it: shards are ``np.memmap`` s, so resident memory does
not grow with the data set (the OS keeps recently read pages as cache it can drop).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from jaxbasics import checks
from jaxbasics.data import manifest as manifest_file
from jaxbasics.data.shards import Shard, check_ids, read_shard
from jaxbasics.data.vocab import ByteTokenizer, HFTokenizer, check_vocab_size, load_tokenizer

#: an integer index, a slice or a sequence of indices into a batch's rows
Rows = slice | Sequence[int] | np.ndarray


class TokenData:
    """The tokens of one split, memory-mapped, and what is known of their vocabulary.

    Open with :meth:`open`. Attributes: ``n`` (tokens), ``vocab_size``, ``tokenizer`` (or
    None for raw shards opened without one), ``shards``, ``source`` (what was opened),
    ``manifest`` (a DATA folder's, or None)."""

    def __init__(self, shards: Sequence[Shard], vocab_size: int, *,
                 tokenizer: ByteTokenizer | HFTokenizer | None = None, source: str = "",
                 manifest: dict[str, Any] | None = None):
        if not shards:
            raise ValueError(f"{source or 'TokenData'}: no shard to read")
        check_vocab_size(vocab_size, "vocab_size", low=1)
        self.shards = list(shards)
        self.vocab_size = int(vocab_size)
        self.tokenizer = tokenizer
        self.source = source
        self.manifest = manifest
        self._ends = np.cumsum([len(s) for s in self.shards])
        self._starts = self._ends - np.array([len(s) for s in self.shards])
        self.n = int(self._ends[-1])
        self._token_bytes: np.ndarray | None = None

    @classmethod
    def open(cls, path: str | Path | Sequence[str | Path], split: str = "train", *,
             vocab_size: int | None = None, tokenizer: str | Path | None = None,
             format: str = "auto", check: bool = False) -> TokenData:
        """The ``split`` of a data set at ``path``:

        * a DATA folder written by ``prepare`` (with ``manifest.json``): the split's shards,
          its vocabulary size and tokenizer (``DATA/tokenizer``) from the manifest (a folder of
          an unfinished ``prepare`` is refused: ``FileNotFoundError``);
        * a folder without a manifest: nanoGPT's ``{split}.bin``, else the llm.c shards
          ``*{split}_*.bin`` (modded-nanogpt's ``fineweb_train_000001.bin`` ...), in name order;
        * a shard file, or a list of them (``split`` unused).

        Raw shards need ``vocab_size``, or a ``tokenizer`` folder that gives it (both: they
        must agree, the tokenizer's not above it). ``format`` is
        :func:`~jaxbasics.data.shards.read_shard`'s. ``check``: every id read once and compared
        with the vocabulary; raw shards are always checked (nothing recorded their vocabulary:
        an id beyond it would index past the embedding table, silently), a DATA folder's only
        when asked (``prepare`` checked every id it wrote). A DATA folder's shard names must be
        plain file names inside it, and each shard must hold the tokens its manifest counts.

        Raises ``FileNotFoundError`` naming what is missing, ``ValueError`` for a split the
        manifest does not have, a vocabulary size that is unknown or disagrees, a shard name
        that leaves the folder, a shard whose token count disagrees with the manifest, every
        damaged shard (:func:`~jaxbasics.data.shards.read_shard`), and an id outside the
        vocabulary (naming the largest)."""
        tok = None if tokenizer is None else load_tokenizer(
            tokenizer, advice="give the tokenizer's folder (tokenizer.json, or vocab.json and "
                              "merges.txt), or the vocabulary size alone")
        if isinstance(path, str | Path) and Path(path).is_dir() and any(
                (Path(path) / name).exists() for name in (manifest_file.NAME, manifest_file.MARKER)):
            folder = Path(path)
            meta = manifest_file.read(folder)
            if split not in meta["splits"]:
                raise ValueError(f"{folder} has no {split!r} split (it has "
                                 f"{', '.join(meta['splits']) or 'none'}; see --val-fraction)")
            vocab = int(meta["vocab_size"])
            if vocab_size is not None and vocab_size != vocab:
                raise ValueError(f"vocab_size {vocab_size} disagrees with {folder}'s manifest "
                                 f"({vocab})")
            if tok is None:
                tok = load_tokenizer(folder / manifest_file.TOKENIZER_FOLDER)
                recorded = meta["tokenizer"].get("digest")
                if recorded is not None and recorded != tok.digest():
                    raise ValueError(f"{folder / manifest_file.TOKENIZER_FOLDER} is not the "
                                     f"tokenizer the shards were written with (digest "
                                     f"{tok.digest()[:12]}, the manifest records "
                                     f"{str(recorded)[:12]}): the folder is damaged")
            entry = meta["splits"][split]
            shards = [read_shard(manifest_file.shard_path(folder, name), format="llm.c",
                                 vocab_size=vocab, check=check) for name in entry["shards"]]
            counted = sum(len(s) for s in shards)
            if counted != entry.get("tokens"):
                raise ValueError(f"{folder}: the {split} shards hold {counted:,} tokens, its "
                                 f"{manifest_file.NAME} counts {entry.get('tokens')!r}: the "
                                 f"folder is damaged (prepare it again)")
            return cls(shards, vocab, tokenizer=tok, source=f"{folder} ({split})", manifest=meta)
        paths = _raw_paths(path, split)
        vocab = _raw_vocab(vocab_size, tok)
        shards = [read_shard(p, format=format, vocab_size=vocab) for p in paths]
        for shard in shards:
            check_ids(shard, vocab, name="vocab_size" if vocab_size is not None
                      else "the tokenizer's vocab_size")
        return cls(shards, vocab, tokenizer=tok,
                   source=str(path) if isinstance(path, str | Path) else f"{len(paths)} files")

    # --- reading -------------------------------------------------------------------------
    def read(self, starts: np.ndarray, length: int) -> np.ndarray:
        """``(len(starts), length)`` int32: ``t[s : s+length]`` for each start ``s`` (a window
        may span two or more shards). ``ValueError`` for a window outside ``[0, n)``."""
        starts = np.asarray(starts, np.int64).reshape(-1)
        if starts.size and (starts.min() < 0 or starts.max() + length > self.n):
            raise ValueError(f"{self.source}: windows of {length} tokens must start in "
                             f"[0, {self.n - length}], got starts from {starts.min()} to "
                             f"{starts.max()}")
        out = np.empty((starts.size, length), np.int32)
        first = np.searchsorted(self._ends, starts, side="right")
        for row, (s, k) in enumerate(zip(starts.tolist(), first.tolist(), strict=True)):
            at, k = 0, int(k)
            while at < length:  # most windows lie in one shard: one slice
                offset = s + at - int(self._starts[k])
                take = min(length - at, len(self.shards[k]) - offset)
                out[row, at: at + take] = self.shards[k].tokens[offset: offset + take]
                at, k = at + take, k + 1
        return out

    def windows(self, starts: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` int32 (len(starts), context): inputs ``t[s : s+C]`` and next-token labels
        ``t[s+1 : s+C+1]``."""
        seqs = self.read(starts, context + 1)
        return seqs[:, :-1], seqs[:, 1:]

    def _need(self, context: int) -> None:
        checks.positive_int(context, "context")
        if self.n < context + 1:
            raise ValueError(f"{self.source} holds {self.n} tokens: too few for one window of "
                             f"context {context} (needs {context + 1})")

    def batch_starts(self, step: int, batch_size: int, context: int, *, seed: int = 0
                     ) -> np.ndarray:
        """(batch_size,) int64 window starts of training step ``step``: uniform over all
        ``n - context`` starts ``[0, n-context-1]``, drawn by
        ``np.random.default_rng([seed, step])`` (a pure function of seed and step)."""
        checks.uint32(seed, "seed")
        checks.uint32(step, "step")
        checks.positive_int(batch_size, "batch_size")
        self._need(context)
        return np.random.default_rng([seed, step]).integers(0, self.n - context, batch_size)

    def batch(self, step: int, batch_size: int, context: int, *, seed: int = 0,
              rows: Rows | None = None) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` int32 (rows, context) of training step ``step`` (:meth:`batch_starts`).

        ``rows`` (a slice or indices into the batch) reads only those rows: every start is
        still drawn, so each process of a multi-process run, given its own devices' rows,
        reads its part of the one batch all processes agree on, and the parts' union is that
        batch. ``ValueError`` for rows outside ``[0, batch_size)``."""
        starts = self.batch_starts(step, batch_size, context, seed=seed)
        return self.windows(starts[_rows(rows, batch_size)], context)

    def eval_starts(self, count: int, context: int) -> np.ndarray:
        """``count`` fixed window starts spread evenly over the split, first and last window
        included (the same for every call: a validation curve compares like with like)."""
        checks.positive_int(count, "count")
        self._need(context)
        return np.linspace(0, self.n - context - 1, count).round().astype(np.int64)

    def eval_batches(self, n_batches: int, batch_size: int, context: int, *,
                     rows: Rows | None = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        """``n_batches`` batches ``(x, y)`` of the fixed windows of :meth:`eval_starts`
        (``n_batches * batch_size`` of them, in order), read one batch at a time; ``rows`` as in
        :meth:`batch`."""
        checks.positive_int(n_batches, "n_batches")
        checks.positive_int(batch_size, "batch_size")
        starts = self.eval_starts(n_batches * batch_size, context).reshape(n_batches, batch_size)
        pick = _rows(rows, batch_size)
        for row in starts:
            yield self.windows(row[pick], context)

    # --- bytes of text, for bits per byte ------------------------------------------------
    @property
    def token_bytes(self) -> np.ndarray:
        """(vocab_size,) int64: the UTF-8 bytes each id stands for (0 for end-of-text), from
        the tokenizer; ``ValueError`` when there is none."""
        if self._token_bytes is None:
            if self.tokenizer is None:
                raise ValueError(f"{self.source}: no tokenizer, so the bytes of text a token "
                                 f"stands for are unknown (give the tokenizer's folder)")
            table = self.tokenizer.token_bytes()
            if len(table) < self.vocab_size:
                table = np.concatenate([table, np.zeros(self.vocab_size - len(table), np.int64)])
            self._token_bytes = table
        return self._token_bytes

    def target_bytes(self, y: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """(rows,) int64: the UTF-8 bytes of the text each row of labels ``y`` scores (the
        denominator of bits per byte), counting only positions where ``mask`` is True."""
        b = self.token_bytes[np.asarray(y)]
        return (b if mask is None else np.where(mask, b, 0)).sum(axis=-1)


def _rows(rows: Rows | None, batch_size: int) -> slice | np.ndarray:
    if rows is None:
        return slice(None)
    if isinstance(rows, slice):
        start, stop, step = rows.indices(batch_size)
        if (rows.start is not None and not 0 <= rows.start <= batch_size) or \
                (rows.stop is not None and not 0 <= rows.stop <= batch_size) or step != 1:
            raise ValueError(f"rows must be a slice within [0, {batch_size}] with step 1, got "
                             f"{rows}")
        return slice(start, stop)
    idx = np.asarray(rows, np.int64).reshape(-1)
    if idx.size and (idx.min() < 0 or idx.max() >= batch_size):
        raise ValueError(f"rows must lie in [0, {batch_size}), got {idx.min()} to {idx.max()}")
    return idx


def _raw_paths(path: str | Path | Sequence[str | Path], split: str) -> list[Path]:
    if not isinstance(path, str | Path):
        paths = [Path(p) for p in path]
        if not paths:
            raise ValueError("no token file given")
        return paths
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise FileNotFoundError(f"{path} does not exist")
    found = raw_split_files(path, split)
    if not found:
        raise FileNotFoundError(f"{path} holds no {manifest_file.NAME} (a folder written by "
                                f"jaxbasics prepare), no nanoGPT {split}.bin and no llm.c shards "
                                f"*{split}_*.bin")
    return found


def raw_split_files(folder: Path, split: str) -> list[Path]:
    """The token files of ``split`` in a folder without a manifest: nanoGPT's ``{split}.bin``,
    else the llm.c shards ``*{split}_*.bin`` in name order; ``[]`` when it has neither."""
    if (folder / f"{split}.bin").is_file():
        return [folder / f"{split}.bin"]
    return sorted(folder.glob(f"*{split}_*.bin"))


def _raw_vocab(vocab_size: int | None, tok: ByteTokenizer | HFTokenizer | None) -> int:
    if vocab_size is None and tok is None:
        raise ValueError("raw token files do not record their vocabulary size: give it "
                         "(vocab_size, --vocab-size) or the tokenizer's folder")
    if vocab_size is not None:
        check_vocab_size(vocab_size, "vocab_size", low=1)
        if tok is not None and tok.vocab_size > vocab_size:
            raise ValueError(f"the tokenizer has {tok.vocab_size} ids, more than vocab_size "
                             f"{vocab_size}")
        return int(vocab_size)
    assert tok is not None
    return int(tok.vocab_size)


def stride_windows(n: int, context: int, stride: int) -> tuple[np.ndarray, np.ndarray]:
    """The windows that score every token of a split once: ``(starts, first)``, each (W,).

    Tokens ``t[0..n-1]``; the targets are ``t[1..n-1]``. Window k reads ``x = t[b : b+C]`` and
    scores the labels ``y = t[b+1 : b+C+1]`` from position ``first[k]`` on. The first window
    (b = 0) scores all C of its labels; each next one starts ``stride`` later (the last one
    moved back to end at ``t[n-1]``, so every window is whole) and scores only the labels the
    windows before it did not. Each label is thus scored exactly once, and (after the first
    window) with at least ``C - stride + 1`` tokens of input before it, its own position
    included. ``stride = C``: windows side by side, no token read twice.

    ``ValueError`` when ``n < C + 1`` (no whole window) or ``stride`` is not in ``[1, C]``."""
    checks.positive_int(context, "context")
    checks.positive_int(stride, "stride")
    if stride > context:
        raise ValueError(f"stride must be in [1, context={context}], got {stride}")
    if n < context + 1:
        raise ValueError(f"{n} tokens are too few for one window of context {context} "
                         f"(needs {context + 1})")
    last = n - 1 - context  # the start of the window that ends at t[n-1]
    count = 1 + -(-last // stride)  # ceil(last / stride) windows after the first
    starts = np.minimum(np.arange(count, dtype=np.int64) * stride, last)
    first = np.zeros(count, np.int64)
    first[1:] = starts[:-1] + context - starts[1:]  # labels up to the previous end are done
    return starts, first
