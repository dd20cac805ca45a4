"""Documents of a corpus on disk, streamed: UTF-8 text files (one file, one document), folders
walked recursively, and JSON Lines files (one record, one document).

A corpus is read twice by ``prepare``: :func:`scan` reads every byte once to check it (UTF-8,
JSON, the text field), count it and digest it, so that bad input is refused by name before any
output is written; :func:`iter_pieces` then streams the text to the tokenizer. Neither holds
more than one document (or one piece of a long one) in memory.

Rules:

* A path given as a source is read whatever its name; a folder is walked with each of the
  ``globs`` (default ``"**/*"``: every file below it; several: their union), hidden files and
  folders (a name starting with ``"."``) left out, in sorted order. A file reached twice counts
  once.
* A file whose name ends in ``.gz`` is read through gzip, as the file its name without ``.gz``
  names (``notes.jsonl.gz`` is JSON Lines).
* A file whose name ends in ``.jsonl`` is JSON Lines: each non-blank line is an object whose
  ``jsonl_field`` (default ``"text"``) is a string, the document. Any other file is text, in
  ``encoding`` (default UTF-8); a UTF-8 byte-order mark at its start is not text: it is
  dropped, and counted (``SourceFile.bom``).
* A document's digest is the SHA-256 of its UTF-8 bytes (the text as the tokenizer sees it).
* Progress (``on_bytes``) counts bytes of the files on disk, so that it ends at their total,
  whatever was skipped or decompressed.
"""

from __future__ import annotations

import codecs
import fnmatch
import gzip
import hashlib
import json
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: bytes read at a time
CHUNK = 1 << 20
#: a text document longer than this is handed to the tokenizer in pieces (:func:`iter_pieces`)
PIECE_BYTES = 8 << 20


@dataclass
class SourceFile:
    """One file of the corpus as :func:`scan` found it.

    ``kind``: ``"text"`` or ``"jsonl"``; ``gzip``: read through gzip; ``size``: bytes on
    disk; ``sha256``: hex digest of the file on disk; ``text_sha256``: of a text file's
    document (its UTF-8 text, after decompressing, decoding and dropping a byte-order mark:
    the split's key); ``documents``/``bytes``: the documents it gave and their UTF-8 bytes (a
    skipped file gives none); ``bom``: a UTF-8 byte-order mark was dropped; ``skipped``: what
    :func:`scan` left out of it with ``skip_bad``, as ``{"offset": byte offset (of the
    decompressed stream), "line": line (JSON Lines), "reason": ...}``."""

    path: Path
    kind: str
    gzip: bool = False
    size: int = 0
    sha256: str = ""
    text_sha256: str = ""
    documents: int = 0
    bytes: int = 0
    bom: bool = False
    skipped: list[dict] = field(default_factory=list)

    def describe(self) -> dict:
        """The manifest's entry: path, kind, size, sha256, documents, bytes (and gzip, a
        dropped byte-order mark and what was skipped, if anything)."""
        out: dict[str, Any] = {"path": str(self.path), "kind": self.kind, "size": self.size,
                               "sha256": self.sha256, "documents": self.documents,
                               "bytes": self.bytes}
        if self.gzip:
            out["gzip"] = True
        if self.bom:
            out["bom"] = True
        if self.skipped:
            out["skipped"] = self.skipped
        return out


@dataclass(frozen=True)
class Piece:
    """Text handed to the tokenizer: a whole document, or a piece of a long text document.

    ``first`` is True for a document's first piece (its end-of-text separator goes before it);
    ``digest`` is the document's SHA-256 (:func:`document_digest`), the same for all its
    pieces; ``nbytes`` the piece's UTF-8 bytes."""

    text: str
    nbytes: int
    first: bool
    digest: bytes
    source: str


def document_digest(data: bytes) -> bytes:
    """SHA-256 of a document's UTF-8 bytes (the key of its train/val split)."""
    return hashlib.sha256(data).digest()


def find_files(sources: Sequence[str | Path], glob: str | Sequence[str] | None = None,
               exclude: Sequence[str] = ()) -> list[SourceFile]:
    """The files of ``sources`` (files, and folders walked with each pattern of ``glob``: their
    union), in order, each once; a folder's files whose path below it matches one of the
    ``exclude`` patterns (``fnmatch``, whose ``*`` crosses ``/``: ``site-packages/*`` leaves
    out everything under ``site-packages``) are left out.

    Raises ``FileNotFoundError`` naming a source that does not exist, ``ValueError`` when a
    folder holds no file matching the patterns (naming them) or when ``sources`` is empty."""
    if not sources:
        raise ValueError("no SOURCE given: name at least one file or folder")
    found: list[SourceFile] = []
    seen: set[Path] = set()
    patterns = [glob] if isinstance(glob, str) else list(glob or ())
    for source in map(Path, sources):
        if source.is_dir():
            root = source
            matched = {p for pattern in patterns or ["**/*"] for p in root.glob(pattern)}
            paths = sorted(p for p in matched if p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(root).parts)
                           and not any(fnmatch.fnmatch(p.relative_to(root).as_posix(), e)
                                       for e in exclude))
            if not paths:
                shown = " ".join(f"--glob {g!r}" for g in patterns) or "--glob '**/*'"
                raise ValueError(f"{shown} matches no file under {source}"
                                 + (f" outside --exclude {' '.join(exclude)}" if exclude else "")
                                 + ("" if patterns or exclude else " (the folder is empty)"))
        elif source.is_file():
            paths = [source]
        else:
            raise FileNotFoundError(f"SOURCE {source} does not exist")
        for p in paths:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                name = p.name[:-3] if p.name.endswith(".gz") else p.name
                found.append(SourceFile(p, "jsonl" if name.endswith(".jsonl") else "text",
                                        gzip=p.name.endswith(".gz")))
    return found


class BadInput(ValueError):
    """A source that cannot be read as a document (not UTF-8, not JSON, no text field, a
    damaged gzip file); the message names the file and the byte offset or line."""


class _BadRecord(Exception):
    """A JSON Lines record whose text is not Unicode (bad UTF-8, or a lone surrogate escaped
    in the JSON): skippable with ``skip_bad``."""

    def __init__(self, offset: int, reason: str, message: str):
        super().__init__(message)
        self.offset, self.reason, self.message = offset, reason, message


class _Disk:
    """The file on disk as a stream that digests and counts what is read of it (gzip reads its
    compressed bytes through this), reporting each read to ``on_disk``."""

    mode = "rb"

    def __init__(self, f: Any, on_disk: Callable[[int], None] | None):
        self.f, self.on_disk = f, on_disk
        self.digest = hashlib.sha256()
        self.count = 0

    def _seen(self, data: bytes) -> bytes:
        self.digest.update(data)
        self.count += len(data)
        if self.on_disk is not None and data:
            self.on_disk(len(data))
        return data

    def read(self, n: int = -1) -> bytes:
        return self._seen(self.f.read(n))

    def readline(self, limit: int = -1) -> bytes:
        return self._seen(self.f.readline(limit))

    def __iter__(self) -> Iterator[bytes]:
        while line := self.readline():
            yield line

    def finish(self) -> str:
        """Read what is left (the rest of a skipped file), return the file's hex digest."""
        while self.read(CHUNK):
            pass
        return self.digest.hexdigest()


class _Opened:
    """``with _Opened(src, on_disk) as (stream, disk)``: the file's bytes (decompressed for
    gzip) and its :class:`_Disk`."""

    def __init__(self, src: SourceFile, on_disk: Callable[[int], None] | None = None):
        self.src, self.on_disk = src, on_disk

    def __enter__(self) -> tuple[Any, _Disk]:
        self.raw = open(self.src.path, "rb")
        disk = _Disk(self.raw, self.on_disk)
        stream: Any = gzip.GzipFile(fileobj=disk, mode="rb") if self.src.gzip else disk  # type: ignore[call-overload]
        return stream, disk

    def __exit__(self, *exc: Any) -> None:
        self.raw.close()


def _gzip_error(path: Path, err: BaseException) -> BadInput:
    bad = BadInput(f"{path} is not a whole gzip file ({err or type(err).__name__}): fix it, or "
                   f"leave it out with --skip-bad")
    bad.damaged_gzip = True  # type: ignore[attr-defined]
    return bad


def _text_chunks(stream: Any, path: Path, encoding: str = "utf-8") -> Iterator[str]:
    """The text of ``stream`` decoded in :data:`CHUNK`-byte chunks (a character cut between
    two chunks waits for the next); a UTF-8 byte-order mark at the start is dropped (the
    first chunk then starts without it: see :func:`_drop_bom`). ``UnicodeDecodeError`` from the
    first bad byte has ``start`` set to its offset in the (decompressed) stream."""
    decoder = codecs.getincrementaldecoder(encoding)(errors="strict")
    fed = 0
    while True:
        try:
            chunk = stream.read(CHUNK)
        except (OSError, EOFError, gzip.BadGzipFile) as err:
            raise _gzip_error(path, err) from None
        buffered = len(decoder.getstate()[0])
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as err:
            at = fed - buffered + err.start
            raise UnicodeDecodeError(err.encoding, err.object, at, at + err.end - err.start,
                                     err.reason) from None
        fed += len(chunk)
        if text:
            yield text
        if not chunk:
            return


def _drop_bom(chunks: Iterator[str], src: SourceFile) -> Iterator[str]:
    """``chunks`` without a leading U+FEFF (a UTF-8 byte-order mark), noted in ``src.bom``."""
    first = True
    for text in chunks:
        if first and text.startswith("\ufeff"):
            src.bom, text = True, text[1:]
        first = False
        if text:
            yield text


def _record_text(data: bytes, path: Path, line: int, offset: int, jsonl_field: str) -> str:
    if line == 1 and data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise _BadRecord(offset + err.start, "not UTF-8", f"not UTF-8: bad byte at byte offset "
                                                          f"{offset + err.start} ({err.reason})") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise BadInput(f"{path}:{line}: not a JSON record ({err.msg.removesuffix(' at')} at "
                       f"column {err.colno})") from err
    if not isinstance(record, dict):
        raise BadInput(f"{path}:{line}: a JSON Lines record must be an object, got "
                       f"{type(record).__name__}")
    if jsonl_field not in record:
        raise BadInput(f"{path}:{line}: the record has no field {jsonl_field!r} (--jsonl-field); "
                       f"its fields are {sorted(record)[:8]}")
    value = record[jsonl_field]
    if not isinstance(value, str):
        raise BadInput(f"{path}:{line}: field {jsonl_field!r} must be a string, got "
                       f"{type(value).__name__}")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as err:
        raise _BadRecord(offset, "lone surrogate", f"field {jsonl_field!r} holds a lone "
                         f"surrogate {value[err.start]!r} at character {err.start}, which is not "
                         f"Unicode text") from None
    return value


def _jsonl_records(stream: Any, path: Path, jsonl_field: str
                   ) -> Iterator[tuple[int, int, str | _BadRecord]]:
    """``(line, offset, text)`` of each non-blank record; a record whose text is not Unicode
    gives its :class:`_BadRecord` in place of the text."""
    offset = 0
    try:
        for line, data in enumerate(stream, 1):
            if data.strip():
                try:
                    yield line, offset, _record_text(data, path, line, offset, jsonl_field)
                except _BadRecord as err:
                    yield line, offset, err
            offset += len(data)
    except (OSError, EOFError, gzip.BadGzipFile) as err:
        raise _gzip_error(path, err) from None


def scan(files: list[SourceFile], *, jsonl_field: str = "text", skip_bad: bool = False,
         encoding: str = "utf-8", on_document: Callable[[bytes, int], None] | None = None,
         on_bytes: Callable[[int], None] | None = None) -> None:
    """Read every file once, filling in each :class:`SourceFile`'s size, digests, documents,
    bytes, byte-order mark and skipped entries; ``on_document(digest, nbytes)`` is called for
    each document kept, ``on_bytes(n)`` as bytes of the files on disk are read (a progress
    bar: they add up to the files' total size, skipped files included).

    Text files are decoded with ``encoding`` (JSON Lines are UTF-8, as the format says).
    Raises :class:`BadInput` (a ``ValueError``) naming the file and byte offset of the first
    byte that does not decode, with what the file looks like (gzip data, binary) and what to
    do (unless ``skip_bad``: the file, or the JSON Lines record, is skipped and recorded in
    ``skipped``), naming file and line of a JSON Lines record that is not JSON, not an object,
    has no string ``jsonl_field``, or holds a lone surrogate (skippable), and naming a damaged
    gzip file."""
    for src in files:
        src.size = src.path.stat().st_size
        with _Opened(src, on_bytes) as (stream, disk):
            try:
                _scan_file(src, stream, disk, jsonl_field, skip_bad, encoding, on_document)
            except BadInput as err:
                if not (skip_bad and getattr(err, "damaged_gzip", False)):
                    raise
                src.documents = src.bytes = 0
                src.skipped = [{"offset": 0, "reason": "damaged gzip"}]
                src.sha256 = disk.finish()


def _scan_file(src: SourceFile, stream: Any, disk: _Disk, jsonl_field: str, skip_bad: bool,
               encoding: str, on_document: Callable[[bytes, int], None] | None) -> None:
    """:func:`scan` of one opened file."""
    if src.kind == "text":
        text_digest, nbytes = hashlib.sha256(), 0
        try:
            for text in _drop_bom(_text_chunks(stream, src.path, encoding), src):
                data = text.encode("utf-8")
                text_digest.update(data)
                nbytes += len(data)
        except UnicodeDecodeError as err:
            if not skip_bad:
                raise _bad_text(src, err, encoding) from None
            src.skipped.append({"offset": err.start, "reason": "not UTF-8" if
                                encoding == "utf-8" else f"not {encoding}"})
            src.sha256 = disk.finish()
            return
        src.sha256, src.text_sha256 = disk.finish(), text_digest.hexdigest()
        src.documents, src.bytes = 1, nbytes
        if on_document is not None:
            on_document(bytes.fromhex(src.text_sha256), nbytes)
        return
    for line, _, record in _jsonl_records(stream, src.path, jsonl_field):
        if isinstance(record, _BadRecord):
            if not skip_bad:
                raise BadInput(f"{src.path}:{line}: {record.message}; fix the record, or "
                               f"leave it out with --skip-bad") from None
            src.skipped.append({"offset": record.offset, "line": line, "reason": record.reason})
            continue
        data = record.encode("utf-8")
        src.documents += 1
        src.bytes += len(data)
        if on_document is not None:
            on_document(document_digest(data), len(data))
    src.sha256 = disk.finish()


def _bad_text(src: SourceFile, err: UnicodeDecodeError, encoding: str) -> BadInput:
    with (gzip.open if src.gzip else open)(src.path, "rb") as f:  # what the text would be
        head = f.read(4096)
    if head.startswith(b"\x1f\x8b") and not src.gzip:
        looks = "it is gzip-compressed data: name it .gz to have it read through gzip"
    elif b"\0" in head and not head.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE)):
        looks = "it looks binary (it holds NUL bytes): leave it out (--glob, --exclude) or " \
                "with --skip-bad"
    else:
        looks = "if it is text in another encoding, give it (--encoding latin-1, cp1252, ...); " \
                "else fix the file, or leave it out with --skip-bad"
    return BadInput(f"{src.path} is not {'UTF-8' if encoding == 'utf-8' else encoding} text: "
                    f"bad byte at byte offset {err.start} ({err.reason}); {looks}")


def _cut(text: str, limit: int) -> int | None:
    """Where to cut ``text`` into a piece of about ``limit`` characters: just after the last
    line break before ``limit`` with a non-space character on both sides (GPT-2's pre-tokenizer
    makes such a break a pre-token of its own, so text cut there gives the tokens the whole text
    gives), else after the first such break past it; None when there is none."""
    end = min(limit, len(text) - 1)
    while (pos := text.rfind("\n", 1, end)) > 0:
        if not text[pos - 1].isspace() and not text[pos + 1].isspace():
            return pos + 1
        end = pos
    pos = limit
    while (pos := text.find("\n", max(pos, 1), len(text) - 1)) > 0:
        if not text[pos - 1].isspace() and not text[pos + 1].isspace():
            return pos + 1
        pos += 1
    return None


def iter_pieces(files: list[SourceFile], *, jsonl_field: str = "text",
                piece_bytes: int | None = PIECE_BYTES, encoding: str = "utf-8") -> Iterator[Piece]:
    """The documents of files that :func:`scan` has read, in order, as :class:`Piece` s; what
    the scan skipped is skipped again.

    A text document over ``piece_bytes`` UTF-8 bytes comes in pieces of about that size,
    each cut right after a line break that has a non-space character on both sides (a piece
    grows until it holds one), so a huge file never sits whole in memory. For byte ids and for
    GPT-2's byte-level pre-tokenizer these cuts change no token: the break is a pre-token of its
    own either way. ``piece_bytes=None`` gives every document whole (for tokenizers where a cut
    could change the tokens)."""
    for src in files:
        if src.documents == 0 and src.skipped:
            continue
        with _Opened(src) as (stream, _):
            if src.kind == "jsonl":
                bad_lines = {s["line"] for s in src.skipped}
                for line, _, text in _jsonl_records(stream, src.path, jsonl_field):
                    if line in bad_lines or isinstance(text, _BadRecord):
                        continue
                    data = text.encode("utf-8")
                    yield Piece(text, len(data), True, document_digest(data), f"{src.path}:{line}")
                continue
            digest, first, held = bytes.fromhex(src.text_sha256), True, ""
            for text in _drop_bom(_text_chunks(stream, src.path, encoding), src):
                held += text
                # characters <= bytes: a piece holds piece_bytes characters or more
                while piece_bytes is not None and len(held) >= piece_bytes:
                    cut = _cut(held, piece_bytes)
                    if cut is None:
                        break  # no place to cut yet: read on
                    piece, held = held[:cut], held[cut:]
                    yield Piece(piece, len(piece.encode("utf-8")), first, digest, str(src.path))
                    first = False
            if held or first:
                yield Piece(held, len(held.encode("utf-8")), first, digest, str(src.path))
