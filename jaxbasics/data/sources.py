"""Documents of a corpus on disk, streamed: UTF-8 text files (one file, one document), folders
walked recursively, and JSON Lines files (one record, one document).

A corpus is read twice by ``prepare``: :func:`scan` reads every byte once to check it (UTF-8,
JSON, the text field), count it and digest it, so that bad input is refused by name before any
output is written; :func:`iter_pieces` then streams the text to the tokenizer. Neither holds
more than one document (or one piece of a long one) in memory.

Rules:

* A path given as a source is read whatever its name; a folder is walked with ``glob``
  (default ``"**/*"``: every file below it), hidden files and folders (a name starting with
  ``"."``) left out, in sorted order. A file reached twice counts once.
* A file whose name ends in ``.jsonl`` is JSON Lines: each non-blank line is an object whose
  ``jsonl_field`` (default ``"text"``) is a string, the document. Any other file is text.
* A document's digest is the SHA-256 of its UTF-8 bytes (a text file's: the file's own).
"""

from __future__ import annotations

import fnmatch
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

    ``kind``: ``"text"`` or ``"jsonl"``; ``size``: bytes on disk; ``sha256``: hex digest of
    the file; ``documents``/``bytes``: the documents it gave and their UTF-8 bytes (a skipped
    file gives none); ``skipped``: what :func:`scan` left out of it with ``skip_bad``, as
    ``{"offset": byte offset, "line": line (JSON Lines), "reason": ...}``."""

    path: Path
    kind: str
    size: int = 0
    sha256: str = ""
    documents: int = 0
    bytes: int = 0
    skipped: list[dict] = field(default_factory=list)

    def describe(self) -> dict:
        """The manifest's entry: path, kind, size, sha256, documents, bytes (and what was
        skipped, if anything)."""
        out = {"path": str(self.path), "kind": self.kind, "size": self.size, "sha256": self.sha256,
               "documents": self.documents, "bytes": self.bytes}
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


def find_files(sources: Sequence[str | Path], glob: str | None = None,
               exclude: Sequence[str] = ()) -> list[SourceFile]:
    """The files of ``sources`` (files, and folders walked with ``glob``), in order, each once;
    a folder's files whose path below it matches one of the ``exclude`` patterns
    (``fnmatch``, whose ``*`` crosses ``/``: ``site-packages/*`` leaves out everything under
    ``site-packages``) are left out.

    Raises ``FileNotFoundError`` naming a source that does not exist, ``ValueError`` when a
    folder holds no file matching ``glob`` (naming both) or when ``sources`` is empty."""
    if not sources:
        raise ValueError("no SOURCE given: name at least one file or folder")
    found: list[SourceFile] = []
    seen: set[Path] = set()
    pattern = glob or "**/*"
    for source in map(Path, sources):
        if source.is_dir():
            root = source
            paths = sorted(p for p in root.glob(pattern) if p.is_file()
                           and not any(part.startswith(".") for part in p.relative_to(root).parts)
                           and not any(fnmatch.fnmatch(p.relative_to(root).as_posix(), e)
                                       for e in exclude))
            if not paths:
                raise ValueError(f"--glob {pattern!r} matches no file under {source}"
                                 + (f" outside --exclude {' '.join(exclude)}" if exclude else "")
                                 + ("" if glob or exclude else " (the folder is empty)"))
        elif source.is_file():
            paths = [source]
        else:
            raise FileNotFoundError(f"SOURCE {source} does not exist")
        for p in paths:
            key = p.resolve()
            if key not in seen:
                seen.add(key)
                found.append(SourceFile(p, "jsonl" if p.name.endswith(".jsonl") else "text"))
    return found


class BadInput(ValueError):
    """A source that cannot be read as a document (not UTF-8, not JSON, no text field); the
    message names the file and the byte offset or line."""


def _utf8_chunks(path: Path, digest: Any = None) -> Iterator[tuple[int, str]]:
    """``(nbytes, text)`` of the file read in :data:`CHUNK`-byte chunks, each cut at a whole
    character (``nbytes``: the text's UTF-8 bytes); ``UnicodeDecodeError`` from the first bad
    byte has its ``start`` set to the byte's offset in the file."""
    pending, consumed = b"", 0
    with open(path, "rb") as f:
        while True:
            chunk = f.read(CHUNK)
            if digest is not None:
                digest.update(chunk)
            data = pending + chunk
            try:
                text = data.decode("utf-8")
                pending = b""
            except UnicodeDecodeError as err:
                if chunk and err.reason == "unexpected end of data":  # a character cut in two
                    text, pending = data[: err.start].decode("utf-8"), data[err.start:]
                else:
                    raise UnicodeDecodeError(err.encoding, err.object, consumed + err.start,
                                             consumed + err.end, err.reason) from None
            if text or not chunk:
                yield len(data) - len(pending), text
            consumed += len(data) - len(pending)
            if not chunk:
                return


def _record_text(data: bytes, path: Path, line: int, offset: int, jsonl_field: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as err:
        raise UnicodeDecodeError(err.encoding, err.object, offset + err.start, offset + err.end,
                                 err.reason) from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as err:
        raise BadInput(f"{path}:{line}: not a JSON record ({err.msg} at column {err.colno})") from err
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
    return value


def _jsonl_records(path: Path, jsonl_field: str, digest: Any = None
                   ) -> Iterator[tuple[int, int, str | UnicodeDecodeError]]:
    """``(line, offset, text)`` of each non-blank record; a record that is not UTF-8 gives its
    ``UnicodeDecodeError`` (offset in the file) in place of the text."""
    offset = 0
    with open(path, "rb") as f:
        for line, data in enumerate(f, 1):
            if digest is not None:
                digest.update(data)
            if data.strip():
                try:
                    yield line, offset, _record_text(data, path, line, offset, jsonl_field)
                except UnicodeDecodeError as err:
                    yield line, offset, err
            offset += len(data)


def scan(files: list[SourceFile], *, jsonl_field: str = "text", skip_bad: bool = False,
         on_document: Callable[[bytes, int], None] | None = None,
         on_bytes: Callable[[int], None] | None = None) -> None:
    """Read every file once, filling in each :class:`SourceFile`'s size, sha256, documents,
    bytes and skipped entries; ``on_document(digest, nbytes)`` is called for each document kept,
    ``on_bytes(n)`` after each chunk read (a progress bar).

    Raises :class:`BadInput` (a ``ValueError``) naming the file and byte offset of the first
    byte that is not UTF-8 (unless ``skip_bad``: the file, or the JSON Lines record, is
    skipped and recorded in ``skipped``), and naming file and line of a JSON Lines record that
    is not JSON, not an object, or has no string ``jsonl_field``."""
    for src in files:
        src.size = src.path.stat().st_size
        digest = hashlib.sha256()
        if src.kind == "text":
            try:
                for nbytes, _ in _utf8_chunks(src.path, digest):
                    if on_bytes is not None:
                        on_bytes(nbytes)
            except UnicodeDecodeError as err:
                if not skip_bad:
                    raise _bad_text(src.path, err) from None
                src.skipped.append({"offset": err.start, "reason": "not UTF-8"})
                src.sha256 = _file_digest(src.path)
                continue
            src.sha256, src.documents, src.bytes = digest.hexdigest(), 1, src.size
            if on_document is not None:
                on_document(bytes.fromhex(src.sha256), src.size)
        else:
            for line, _, text in _jsonl_records(src.path, jsonl_field, digest):
                if isinstance(text, UnicodeDecodeError):
                    if not skip_bad:
                        raise _bad_text(src.path, text, line) from None
                    src.skipped.append({"offset": text.start, "line": line, "reason": "not UTF-8"})
                    continue
                data = text.encode("utf-8")
                src.documents += 1
                src.bytes += len(data)
                if on_document is not None:
                    on_document(document_digest(data), len(data))
                if on_bytes is not None:
                    on_bytes(len(data))
            src.sha256 = digest.hexdigest()


def _bad_text(path: Path, err: UnicodeDecodeError, line: int | None = None) -> BadInput:
    where = f", line {line}" if line is not None else ""
    return BadInput(f"{path} is not UTF-8 text: bad byte at byte offset {err.start}{where} "
                    f"({err.reason}); fix the file, or leave it out with --skip-bad")


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


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
                piece_bytes: int | None = PIECE_BYTES) -> Iterator[Piece]:
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
        if src.kind == "jsonl":
            bad_lines = {s["line"] for s in src.skipped}
            for line, _, text in _jsonl_records(src.path, jsonl_field):
                if line in bad_lines or isinstance(text, UnicodeDecodeError):
                    continue
                data = text.encode("utf-8")
                yield Piece(text, len(data), True, document_digest(data), f"{src.path}:{line}")
            continue
        digest, first, held = bytes.fromhex(src.sha256), True, ""
        for _, text in _utf8_chunks(src.path):
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
