"""Token shards on disk: llm.c's format (which modded-nanogpt reads too), and nanoGPT's
headerless ``train.bin``/``val.bin``.

llm.c / modded-nanogpt shard (``dev/data/data_common.py`` there)::

    int32[256] header: [0] magic 20240520, [1] version, [2] token count n, the rest 0
    then n tokens, little-endian: version 1 -> uint16

A vocabulary over 65,536 ids does not fit uint16. Such shards are written with the same magic
and **version 2 -> uint32 tokens** (this package's own number; llm.c's readers refuse any
version but 1, rather than misread the tokens). llm.c's own uint32 shards (magic 20240801,
version 7, written for LLaMA 3) are read too.

nanoGPT's ``train.bin``/``val.bin`` are the tokens alone, uint16, no header: their vocabulary size
is not in the file, so whoever reads them gives it (or a tokenizer that has it).

Writing is atomic: a shard is written to ``NAME.partial`` and renamed to ``NAME`` once whole,
so a reader never sees half a shard. Reading maps the file (``np.memmap``): nothing is read
until a window asks for it, and resident memory does not grow with the data set.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from jaxbasics.data.vocab import token_dtype

MAGIC = 20240520
#: header version -> token dtype, for :data:`MAGIC`
VERSIONS: dict[int, np.dtype] = {1: np.dtype("<u2"), 2: np.dtype("<u4")}
#: llm.c's LLaMA-3 shards: (magic, version) of uint32 tokens, read (never written) here
LLAMA3 = (20240801, 7)
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
#: nanoGPT's file names: headerless uint16 tokens
NANOGPT_NAMES = ("train.bin", "val.bin")
_CHECK_CHUNK = 1 << 24  # tokens scanned at a time when checking ids against the vocabulary


def header(count: int, dtype: Any) -> np.ndarray:
    """The int32[256] header of a shard of ``count`` tokens of ``dtype`` (uint16: version 1,
    uint32: version 2)."""
    version = {np.dtype("<u2"): 1, np.dtype("<u4"): 2}.get(np.dtype(dtype).newbyteorder("<"))
    if version is None:
        raise ValueError(f"dtype must be uint16 or uint32, got {np.dtype(dtype)}")
    if not 0 <= count < 2**31:
        raise ValueError(f"a shard holds fewer than 2**31 tokens (an int32 count), got {count}")
    out = np.zeros(HEADER_INTS, "<i4")
    out[:3] = (MAGIC, version, count)
    return out


class ShardWriter:
    """Write one llm.c-format shard from token arrays appended in order.

    Usage::

        with ShardWriter(path, vocab_size) as w:
            w.write(ids)              # any integer array; ids must lie in [0, vocab_size)
        # now path exists, whole; on an exception nothing is left behind

    ``close`` writes the header, flushes to disk and renames ``path.partial`` to ``path``;
    ``abort`` removes the partial file."""

    def __init__(self, path: str | Path, vocab_size: int):
        self.path = Path(path)
        self.vocab_size = int(vocab_size)
        self.dtype = token_dtype(vocab_size).newbyteorder("<")
        self.partial = self.path.with_name(self.path.name + ".partial")
        self.count = 0
        self._file: Any = open(self.partial, "wb")  # closed by close() or abort()
        self._file.write(header(0, self.dtype).tobytes())

    def write(self, tokens: np.ndarray) -> None:
        """Append ``tokens`` (1-D integers in [0, vocab_size)); ``ValueError`` otherwise."""
        tokens = np.asarray(tokens)
        if tokens.size and (int(tokens.min()) < 0 or int(tokens.max()) >= self.vocab_size):
            raise ValueError(f"{self.path}: token ids must lie in [0, {self.vocab_size}), got "
                             f"{int(tokens.min())} to {int(tokens.max())}")
        if self.count + tokens.size >= 2**31:
            raise ValueError(f"{self.path}: a shard holds fewer than 2**31 tokens")
        self._file.write(tokens.astype(self.dtype, copy=False).tobytes())
        self.count += int(tokens.size)

    def close(self) -> Path:
        """Finish the shard (header, fsync, rename); returns its path."""
        self._file.seek(0)
        self._file.write(header(self.count, self.dtype).tobytes())
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        os.replace(self.partial, self.path)
        return self.path

    def abort(self) -> None:
        """Drop the partial shard."""
        self._file.close()
        self.partial.unlink(missing_ok=True)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, kind: Any, *rest: Any) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()


def truncate_shard(path: str | Path, count: int) -> None:
    """Keep the first ``count`` tokens of the llm.c-format shard at ``path`` (header and file
    size both), in place."""
    shard = read_shard(path, format="llm.c")
    if not 0 <= count <= len(shard):
        raise ValueError(f"{path}: cannot keep {count} of its {len(shard)} tokens")
    dtype = shard.tokens.dtype
    del shard
    with open(path, "r+b") as f:
        f.write(header(count, dtype).tobytes())
        f.truncate(HEADER_BYTES + count * dtype.itemsize)
        f.flush()
        os.fsync(f.fileno())


def write_shard(path: str | Path, tokens: np.ndarray, vocab_size: int) -> Path:
    """Write ``tokens`` as one llm.c-format shard at ``path`` (atomically); returns the path."""
    with ShardWriter(path, vocab_size) as w:
        w.write(tokens)
    return w.path


@dataclass(frozen=True)
class Shard:
    """One token file, mapped: ``tokens`` is a read-only 1-D ``np.memmap`` (uint16/uint32).

    ``format``: ``"llm.c"`` (with a header; ``version`` its version) or ``"nanogpt"``."""

    path: Path
    tokens: np.ndarray
    format: str
    version: int | None

    def __len__(self) -> int:
        return int(self.tokens.shape[0])


def read_shard(path: str | Path, *, format: str = "auto", vocab_size: int | None = None,
               check: bool = False) -> Shard:
    """Map the tokens of the shard at ``path``.

    ``format``: ``"llm.c"`` (a 256-int32 header: :data:`MAGIC` with version 1 or 2, or
    :data:`LLAMA3`), ``"nanogpt"`` (headerless uint16), or ``"auto"``: llm.c when the file
    starts with a known magic, nanoGPT when it is named ``train.bin`` or ``val.bin``. With
    ``check`` (and ``vocab_size``) every id is read once and compared with the vocabulary.

    Raises ``FileNotFoundError`` for a missing file, and ``ValueError`` naming the file for:
    a bad magic (neither format), an unknown version, a size that disagrees with the header's
    count (truncated or padded), a headerless file of an odd number of bytes or of none, and
    with ``check``, the first id outside ``[0, vocab_size)`` (its position and value)."""
    path = Path(path)
    if format not in ("auto", "llm.c", "nanogpt"):
        raise ValueError(f"format must be 'auto', 'llm.c' or 'nanogpt', got {format!r}")
    if not path.is_file():
        raise FileNotFoundError(f"token file {path} does not exist")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = np.frombuffer(f.read(HEADER_BYTES), "<i4", count=min(size, HEADER_BYTES) // 4)
    magic = int(head[0]) if head.size else None
    is_llmc = magic in (MAGIC, LLAMA3[0])
    if format == "nanogpt" or (format == "auto" and not is_llmc and path.name in NANOGPT_NAMES):
        if size == 0 or size % 2:
            raise ValueError(f"{path}: a headerless nanoGPT token file holds uint16 tokens, an "
                             f"even number of bytes > 0; it has {size} bytes")
        tokens = np.memmap(path, "<u2", mode="r")
        shard = Shard(path, tokens, "nanogpt", None)
    else:
        if not is_llmc:
            shown = "no header (the file is shorter than 1024 bytes)" if size < HEADER_BYTES \
                else f"magic {magic}"
            raise ValueError(f"{path}: bad magic: an llm.c shard starts with {MAGIC} (or "
                             f"{LLAMA3[0]}), this one has {shown}; a nanoGPT file without a "
                             f"header is read with format 'nanogpt'")
        version, count = int(head[1]), int(head[2])
        dtype: np.dtype | None
        if magic == LLAMA3[0]:
            dtype = np.dtype("<u4") if version == LLAMA3[1] else None
        else:
            dtype = VERSIONS.get(version)
        if dtype is None:
            known = f"{LLAMA3[1]}" if magic == LLAMA3[0] else "1 (uint16) or 2 (uint32)"
            raise ValueError(f"{path}: unknown shard version {version} for magic {magic} "
                             f"(known: {known})")
        want = HEADER_BYTES + count * dtype.itemsize
        if count < 0 or size != want:
            raise ValueError(f"{path}: damaged shard: its header counts {count} tokens "
                             f"({want} bytes with the header), but the file has {size} bytes")
        mapped: np.ndarray = np.memmap(path, dtype, mode="r", offset=HEADER_BYTES,
                                       shape=(count,)) if count else np.zeros(0, dtype)
        shard = Shard(path, mapped, "llm.c", version)
    if check:
        if vocab_size is None:
            raise ValueError("check=True needs vocab_size")
        check_ids(shard, vocab_size)
    return shard


def check_ids(shard: Shard, vocab_size: int, *, name: str = "vocab_size") -> None:
    """Raise ``ValueError`` naming the shard, its largest id, the vocabulary size (``name``:
    the argument that gave it, e.g. ``--vocab-size``) and the position of the first id not
    below ``vocab_size`` (read once, in chunks: memory stays flat)."""
    largest, first = -1, None
    for start in range(0, len(shard), _CHECK_CHUNK):
        chunk = np.asarray(shard.tokens[start: start + _CHECK_CHUNK])
        top = int(chunk.max())
        largest = max(largest, top)
        if first is None and top >= vocab_size:
            first = start + int(np.argmax(chunk >= vocab_size))
    if first is not None:
        raise ValueError(f"{shard.path}: token ids go up to {largest}, outside the vocabulary "
                         f"of {name} {vocab_size} (ids 0 to {vocab_size - 1}; the first one at "
                         f"position {first}): give the vocabulary size the file was written "
                         f"with")
