"""The manifest of a prepared DATA folder: ``DATA/manifest.json``, written last by ``prepare``
(its commit point: a folder without it is not a data set, whatever else it holds).

Layout of a DATA folder::

    DATA/
      .jaxbasics-prepare       marker: written first, says the folder is prepare's
      tokenizer/               the tokenizer (tokenizer.json, or bytes.json)
      train_000000.bin ...     llm.c-format shards of the training split
      val_000000.bin ...       and of the validation split
      manifest.json            written last, atomically

``manifest.json`` (``format`` 1)::

    {"format": 1, "created": ISO time, "command": [argv...],
     "tokenizer": {"kind", "vocab_size", "end_of_text", "digest", ..., "folder": "tokenizer"},
     "vocab_size": V, "token_dtype": "uint16" | "uint32",
     "splits": {"train": {"documents", "bytes", "tokens", "shards": [file names]},
                "val": {...}},
     "split_rule": {"val_fraction", "kind": "document" | "position", "rule": text,
                    "window"?, "val_tokens"?},
     "sources": [{"path", "kind", "size", "sha256", "documents", "bytes", "gzip"?, "bom"?,
                  "skipped"?}],
     "skipped": {"files", "records"}, "options": {...}}

``bytes`` counts the UTF-8 bytes of the text the split's tokens stand for (end-of-text
separators add none; ``prepare`` checks that the tokens' bytes add up to each document's),
``tokens`` every token written, separators included; ``documents`` of a split by position
counts the document cut in two in both splits. ``tokenizer.digest``: what maps text to ids
(:meth:`jaxbasics.data.vocab.HFTokenizer.digest`), compared with a model's before scoring.
Shard names are plain file names inside the folder (:func:`shard_path`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from jaxbasics import checks

NAME = "manifest.json"
MARKER = ".jaxbasics-prepare"
TOKENIZER_FOLDER = "tokenizer"
FORMAT = 1
SPLITS = ("train", "val")
_KEYS = ("format", "tokenizer", "vocab_size", "token_dtype", "splits", "split_rule", "sources")


def write(folder: str | Path, manifest: dict[str, Any]) -> Path:
    """Write ``folder/manifest.json`` atomically (a temporary file renamed over it)."""
    path = Path(folder) / NAME
    partial = path.with_name(NAME + ".partial")
    with open(partial, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(partial, path)
    return path


def shard_path(folder: str | Path, name: Any) -> Path:
    """``folder/name`` for a shard ``name`` read from a manifest: ``ValueError`` unless it is a
    plain file name (no folder part, no ``..``, not absolute), so that a manifest cannot send a
    reader to files outside its folder."""
    if not isinstance(name, str) or not name or Path(name).name != name or name in (".", "..") \
            or "\\" in name:
        raise ValueError(f"{Path(folder) / NAME}: shard name {name!r} is not a file name inside "
                         f"the folder: the manifest is damaged or not prepare's")
    return Path(folder) / name


def read(folder: str | Path) -> dict[str, Any]:
    """The manifest of the DATA folder ``folder``: ``FileNotFoundError`` when there is none
    (an unfinished ``prepare``, or not a DATA folder), ``ValueError`` naming the file when it
    lacks a key or has another format number."""
    path = Path(folder) / NAME
    if not path.is_file():
        partial = (Path(folder) / MARKER).exists()
        raise FileNotFoundError(f"{folder} holds no {NAME}: "
                                + ("its prepare did not finish (run it again)" if partial
                                   else "not a folder written by jaxbasics prepare"))
    manifest = checks.json_object(path, ": the DATA folder is damaged")
    missing = [k for k in _KEYS if k not in manifest]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: not a jaxbasics prepare manifest")
    if manifest["format"] != FORMAT:
        raise ValueError(f"{path}: manifest format {manifest['format']!r}; this jaxbasics reads "
                         f"format {FORMAT}")
    return manifest
