"""Training data for GPT-2 (the chapter's model put to work): an
embedded synthetic task (multi-digit addition written as text) and windows of a user's
UTF-8 text file, byte-tokenised (:class:`jaxbasics.data.vocab.ByteTokenizer`).

Every batch is a pure function of ``(seed, step)``, so a run resumed from a checkpoint at
step s sees exactly the batches an uninterrupted run would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jax
import numpy as np

from jaxbasics import checks
from jaxbasics.data.vocab import ByteTokenizer  # here before data/ existed: old imports keep working

IGNORE = -1  # label value excluded from the loss (see losses.cross_entropy's ignore_index)


@dataclass
class AdditionTask:
    """``"123+045=861\\n"``: two zero-padded ``digits``-digit numbers and their sum written
    least-significant digit first (the order a carry propagates, which makes the task learnable
    by a small model in minutes). A seeded 2 % of all pairs (at most 2,000) is held out.

    Loss is taken only on the answer and the newline (the operands are unpredictable).
    """

    digits: int = 3
    seed: int = 0
    tokenizer: ByteTokenizer = field(default_factory=ByteTokenizer)

    def __post_init__(self) -> None:
        checks.positive_int(self.digits, "digits")
        checks.uint32(self.seed, "seed")
        if self.digits > 6:
            raise ValueError(f"digits must be <= 6 (the pair table has 10**(2*digits) rows), "
                             f"got {self.digits}")
        n = 10 ** self.digits
        order = np.random.default_rng(self.seed).permutation(n * n)
        n_test = min(2000, max(1, n * n // 50))
        self._test, self._train = order[:n_test], order[n_test:]
        self.prompt_len = 2 * self.digits + 2  # "aaa+bbb="
        self.answer_len = self.digits + 1  # reversed sum, may carry into one more digit
        self.seq_len = self.prompt_len + self.answer_len + 1  # + "\n"

    def text(self, a: int, b: int) -> str:
        """The training line for ``a + b``: operands zero-padded, sum reversed, newline."""
        d = self.digits
        return f"{a:0{d}d}+{b:0{d}d}=" + f"{a + b:0{d + 1}d}"[::-1] + "\n"

    def _encode_pairs(self, pairs: np.ndarray) -> np.ndarray:
        n = 10 ** self.digits
        rows = [self.tokenizer.encode(self.text(int(p) // n, int(p) % n)) for p in pairs]
        return np.asarray(rows, np.int32)

    def batch(self, step: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` of shape (B, seq_len - 1): inputs and next-token labels, prompt labels
        set to :data:`IGNORE`."""
        rng = np.random.default_rng([self.seed, step])
        seqs = self._encode_pairs(self._train[rng.integers(0, len(self._train), batch_size)])
        x, y = seqs[:, :-1], seqs[:, 1:].copy()
        y[:, : self.prompt_len - 1] = IGNORE
        return x, y

    def test_prompts(self, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Held-out ``(prompts (N, prompt_len), answers (N, answer_len + 1))`` token ids."""
        seqs = self._encode_pairs(self._test[:limit])
        return seqs[:, : self.prompt_len], seqs[:, self.prompt_len:]

    def decode_answer(self, tokens: np.ndarray) -> str:
        """Text of answer token ids (still least-significant digit first)."""
        return self.tokenizer.decode(tokens)


@dataclass
class TextDataset:
    """Random windows of a UTF-8 text file, byte-tokenised: x = bytes[o:o+T], y = bytes[o+1:o+T+1]."""

    path: str | Path
    context_length: int
    seed: int = 0
    tokenizer: ByteTokenizer = field(default_factory=ByteTokenizer)

    def __post_init__(self) -> None:
        checks.uint32(self.seed, "seed")
        path = Path(self.path)
        if not path.is_file():
            raise FileNotFoundError(f"text file not found: {path}")
        raw = path.read_bytes()
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"{path} is not UTF-8 text (bad byte at offset {err.start})") from err
        checks.positive_int(self.context_length, "context_length")
        if len(raw) < self.context_length + 2:
            raise ValueError(f"{path} has {len(raw)} bytes; need more than context_length + 1 = "
                             f"{self.context_length + 1} to cut one training window")
        split = int(len(raw) * 0.9)
        data = np.frombuffer(raw, np.uint8).astype(np.int32)
        self.train, self.val = data[:split], data[split:]
        if len(self.val) < self.context_length + 2:  # tiny files: validate on the tail anyway
            self.val = data[-(self.context_length + 2):]

    def _windows(self, data: np.ndarray, rng: np.random.Generator, batch_size: int):
        # every start from 0 to len - C - 1 (the last window's label is the last token)
        starts = rng.integers(0, len(data) - self.context_length, batch_size)
        idx = starts[:, None] + np.arange(self.context_length + 1)[None, :]
        seqs = data[idx]
        return seqs[:, :-1], seqs[:, 1:]

    def batch(self, step: int, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """x (B, T) and y (B, T) from the training 90 % of the file; a pure function of (seed, step)."""
        return self._windows(self.train, np.random.default_rng([self.seed, step]), batch_size)

    def val_batch(self, batch_size: int) -> tuple[np.ndarray, np.ndarray]:
        """A fixed batch from the held-out last 10 % of the file."""
        return self._windows(self.val, np.random.default_rng([self.seed, 10**9]), batch_size)


def step_key(seed: int, step: int) -> jax.Array:
    """Dropout key of training step ``step``: a pure function of (seed, step), both integers
    in [0, 2³²)."""
    checks.uint32(seed, "seed")
    checks.uint32(step, "step")
    return jax.random.fold_in(jax.random.key(seed), step)


@dataclass
class PretrainData:
    """A prepared corpus (``jaxbasics prepare``, or nanoGPT/llm.c token files) as GPT training
    data: windows of ``context_length`` tokens of the training split, a pure function of
    ``(seed, step)`` reaching every start (:meth:`jaxbasics.data.batches.TokenData.batch`), and
    fixed windows of the validation split for evaluation.

    ``path``: a DATA folder written by ``prepare`` (vocabulary and tokenizer from its manifest),
    or raw token files (a folder holding nanoGPT's ``train.bin``/``val.bin`` or llm.c shards
    ``*train_*.bin``/``*val_*.bin``), which need ``vocab_size`` or ``tokenizer_dir``.
    Attributes: ``train``, ``val`` (a :class:`~jaxbasics.data.batches.TokenData`; ``val`` None
    when there is no validation split), ``tokenizer`` (None for raw files without one),
    ``vocab_size``.

    Raises ``FileNotFoundError``/``ValueError`` from
    :meth:`~jaxbasics.data.batches.TokenData.open` (what is missing or damaged), and
    ``ValueError`` when a split is too short for one window of ``context_length``.
    """

    path: str | Path
    context_length: int
    seed: int = 0
    vocab_size: int | None = None
    tokenizer_dir: str | Path | None = None

    def __post_init__(self) -> None:
        from jaxbasics.data.batches import TokenData

        checks.uint32(self.seed, "seed")
        checks.positive_int(self.context_length, "context_length")
        self.train = TokenData.open(self.path, "train", vocab_size=self.vocab_size,
                                    tokenizer=self.tokenizer_dir)
        self.train.batch_starts(0, 1, self.context_length)  # its error for a split too short
        self.val: Any = None
        if self._has_val_split():
            self.val = TokenData.open(self.path, "val", vocab_size=self.train.vocab_size,
                                      tokenizer=self.tokenizer_dir)
            self.val.eval_starts(1, self.context_length)
        self.tokenizer = self.train.tokenizer
        self.vocab_size = self.train.vocab_size

    def _has_val_split(self) -> bool:
        from jaxbasics.data.batches import raw_split_files

        if self.train.manifest is not None:
            return "val" in self.train.manifest["splits"]
        path = Path(self.path)
        return path.is_dir() and bool(raw_split_files(path, "val"))

    def batch(self, step: int, batch_size: int, rows: range | None = None
              ) -> tuple[np.ndarray, np.ndarray]:
        """``(x, y)`` int32 (rows, context_length) of training step ``step`` (all rows, or only
        ``rows`` of the batch: every process reads its own devices' rows of one batch)."""
        return self.train.batch(step, batch_size, self.context_length, seed=self.seed,
                                rows=None if rows is None else slice(rows.start, rows.stop))

    def describe(self) -> dict:
        """What a run's sidecar records of its data (compared on resume)."""
        return {"kind": "data", "path": str(Path(self.path).absolute()),
                "context_length": self.context_length, "seed": self.seed,
                "vocab_size": self.vocab_size,
                "tokenizer": None if self.tokenizer is None else self.tokenizer.digest(),
                "data": self.fingerprint()}

    def fingerprint(self) -> str:
        """A digest of the data: the manifest of a DATA folder (it holds each source's digest),
        else each token file's name, size and first and last MiB."""
        import hashlib
        import json

        if self.train.manifest is not None:  # what the data is, not when or where it was made
            same = {k: v for k, v in self.train.manifest.items()
                    if k not in ("created", "command", "encode_seconds", "sources")}
            same["sources"] = [[s.get("sha256"), s.get("documents"), s.get("bytes")]
                               for s in self.train.manifest.get("sources", [])]
            return hashlib.sha256(json.dumps(same, sort_keys=True, default=str).encode()
                                  ).hexdigest()
        h = hashlib.sha256()
        for shard in [*self.train.shards, *(self.val.shards if self.val is not None else [])]:
            tokens = np.asarray(shard.tokens)
            h.update(f"{Path(shard.path).name}:{tokens.size}".encode())
            h.update(tokens[: 1 << 19].tobytes() + tokens[-(1 << 19):].tobytes())
        return h.hexdigest()
