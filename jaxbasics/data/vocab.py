"""Tokenizers: UTF-8 byte ids, and Hugging Face ``tokenizers`` BPE (loaded from a folder, or
trained on a corpus the way GPT-2's was: byte-level BPE), behind one small interface.

Every tokenizer here has ``encode(text) -> list[int]``, ``decode(ids) -> str``,
``encode_batch(texts) -> list[np.ndarray]`` (the ``tokenizers`` batch encoder: all cores),
``vocab_size``, ``eot_id`` (the end-of-text id that separates documents, or None),
``token_bytes()`` (UTF-8 bytes of each id's text, for bits per byte) and ``save(folder)``;
:func:`load_tokenizer` reads back what ``save`` wrote.

A tokenizer folder holds one of:

* ``tokenizer.json`` (the ``tokenizers`` library's own file, ``Tokenizer.save``);
* ``vocab.json`` + ``merges.txt``: byte-level BPE as GPT-2 ships it (read with GPT-2's
  pre-tokenizer and decoder, as ``tokenizers.ByteLevelBPETokenizer`` reads them);
* ``bytes.json``: ``{"kind": "bytes", "end_of_text": true|false}``, byte ids (this package's).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

#: the end-of-text token of GPT-2 (and of the BPE vocabularies trained here)
END_OF_TEXT = "<|endoftext|>"
#: other spellings of an end-of-text token that a loaded tokenizer may use, tried in order
END_OF_TEXT_NAMES = (END_OF_TEXT, "<|end_of_text|>", "</s>", "<eos>", "<|eos|>")
#: the largest vocabulary a token shard can hold (uint32 ids)
MAX_VOCAB = 2**32


class Tokenizer(Protocol):
    """What generation needs of a tokenizer: ``encode(str) -> ids`` and ``decode(ids) -> str``."""

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...


def token_dtype(vocab_size: int) -> np.dtype:
    """The narrowest unsigned dtype of a shard holding ids below ``vocab_size``: uint16 up to
    65,536 ids (llm.c's format), else uint32. ``ValueError`` outside [1, 2**32]."""
    check_vocab_size(vocab_size, "vocab_size", low=1)
    return np.dtype(np.uint16 if vocab_size <= 2**16 else np.uint32)


def check_vocab_size(value: Any, name: str, *, low: int = 256) -> None:
    """Raise ``ValueError`` naming ``name`` unless ``value`` is an int in [low, 2**32] (the ids
    a uint32 shard can hold)."""
    if isinstance(value, bool) or not isinstance(value, int | np.integer) \
            or not low <= value <= MAX_VOCAB:
        raise ValueError(f"{name} must be an integer in [{low}, 2**32] (token ids are stored as "
                         f"uint16 up to 65,536 and uint32 beyond), got {value!r}")


class ByteTokenizer:
    """UTF-8 bytes as token ids 0..255: no vocabulary file, any text round-trips.

    With ``end_of_text=True`` the vocabulary has one more id, 256, that separates documents
    (``prepare --bytes``); it decodes to nothing and counts 0 bytes."""

    splits_at_line_breaks = True  # a text cut anywhere gives the same ids

    def __init__(self, end_of_text: bool = False):
        self.end_of_text = bool(end_of_text)
        self.vocab_size = 257 if self.end_of_text else 256
        self.eot_id: int | None = 256 if self.end_of_text else None

    def encode(self, text: str) -> list[int]:
        """UTF-8 bytes of ``text`` as ids."""
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """Text of the byte ids (ids outside 0..255 dropped, bad UTF-8 replaced)."""
        return bytes(int(i) for i in ids if 0 <= int(i) < 256).decode("utf-8", errors="replace")

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """The ids of each text, as uint8 arrays."""
        return [np.frombuffer(t.encode("utf-8"), np.uint8) for t in texts]

    def token_bytes(self) -> np.ndarray:
        """(vocab_size,) int64: 1 for each byte id, 0 for the end-of-text id."""
        out = np.ones(self.vocab_size, np.int64)
        if self.eot_id is not None:
            out[self.eot_id] = 0
        return out

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/bytes.json``; returns its path."""
        path = Path(folder) / "bytes.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"kind": "bytes", "end_of_text": self.end_of_text}) + "\n")
        return path

    def describe(self) -> dict:
        """``{"kind": "bytes", "vocab_size", "end_of_text"}`` (the manifest's entry)."""
        return {"kind": "bytes", "vocab_size": self.vocab_size, "end_of_text": self.eot_id}


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` (BPE or any model the library reads) behind this module's
    interface. Encoding never adds a post-processor's special tokens (``[CLS]`` and the like):
    documents are separated by :attr:`eot_id` where ``prepare`` puts it.

    ``eot_id``: the id of the first of :data:`END_OF_TEXT_NAMES` in the vocabulary, or None.
    ``vocab_size``: one more than the largest id (added tokens included)."""

    def __init__(self, tok: Any, source: str = ""):
        self.tok = tok
        self.source = source
        self.vocab_size = max(tok.get_vocab(with_added_tokens=True).values()) + 1
        self.eot_id: int | None = next((i for name in END_OF_TEXT_NAMES
                                        if (i := tok.token_to_id(name)) is not None), None)

    @property
    def splits_at_line_breaks(self) -> bool:
        """True when cutting a text after a line break between non-space characters gives the
        same ids (GPT-2's byte-level pre-tokenizer and no normalizer: see
        :func:`jaxbasics.data.sources.iter_pieces`)."""
        from tokenizers import pre_tokenizers

        return self.tok.normalizer is None and isinstance(self.tok.pre_tokenizer,
                                                          pre_tokenizers.ByteLevel)

    def encode(self, text: str) -> list[int]:
        """The ids of ``text``."""
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of ``ids`` (special tokens left out)."""
        return self.tok.decode([int(i) for i in ids])

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """The ids of each text (``encode_batch_fast``, on all cores: set
        ``TOKENIZERS_PARALLELISM=false`` for one), as uint32 arrays."""
        encode = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)
        return [np.asarray(e.ids, np.uint32) for e in encode(list(texts), add_special_tokens=False)]

    def token_bytes(self) -> np.ndarray:
        """(vocab_size,) int64: the UTF-8 bytes of text each id stands for; 0 for special tokens
        (the end-of-text separator among them) and for ids the vocabulary does not use.

        Exact for byte-level BPE (each character of a token's string stands for one byte);
        for other decoders, the bytes of the id decoded alone."""
        from tokenizers import decoders

        out = np.zeros(self.vocab_size, np.int64)
        added = self.tok.get_added_tokens_decoder()
        byte_level = isinstance(self.tok.decoder, decoders.ByteLevel)
        for token, i in self.tok.get_vocab(with_added_tokens=True).items():
            if i in added:
                out[i] = 0 if added[i].special else len(added[i].content.encode("utf-8"))
            elif byte_level:
                out[i] = len(token)
            else:
                out[i] = len(self.tok.decode([i]).encode("utf-8"))
        if self.eot_id is not None:
            out[self.eot_id] = 0
        return out

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/tokenizer.json``; returns its path."""
        path = Path(folder) / "tokenizer.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tok.save(str(path))
        return path

    def describe(self) -> dict:
        """``{"kind": "tokenizers", "vocab_size", "end_of_text", "source"}``."""
        return {"kind": "tokenizers", "model": type(self.tok.model).__name__,
                "vocab_size": self.vocab_size, "end_of_text": self.eot_id, "source": self.source}


def _tokenizers_package(directory: Path) -> Any:
    try:
        import tokenizers
    except ImportError as err:
        raise ImportError(f"{directory}'s tokenizer files need the tokenizers package: "
                          f"python -m pip install tokenizers") from err
    return tokenizers


#: what :func:`load_tokenizer` says, after naming the folder, when it has no tokenizer files
GENERATE_ADVICE = ("its prompt would be read as raw bytes; give the files, or ask for byte-level "
                   "ids on purpose (jaxbasics generate --byte-tokens)")


def load_tokenizer(directory: str | Path, *, byte_fallback: bool = False,
                   advice: str = GENERATE_ADVICE) -> ByteTokenizer | HFTokenizer:
    """The tokenizer saved in ``directory``: ``tokenizer.json``, or ``vocab.json`` +
    ``merges.txt`` (GPT-2's files), read with the ``tokenizers`` package; or ``bytes.json``.

    A directory that does not exist raises ``FileNotFoundError`` saying so; one without those
    files raises ``FileNotFoundError`` naming them, then
    ``advice`` (by default, why a model's prompt must not silently become raw UTF-8 bytes:
    ids that mean other tokens to a GPT-2 vocabulary). ``byte_fallback=True`` asks for those
    byte ids (:class:`ByteTokenizer`) on purpose. Tokenizer files without the ``tokenizers``
    package raise ``ImportError`` with the pip command; a file the package cannot read raises
    ``ValueError`` naming it."""
    directory = Path(directory)
    if not directory.is_dir():
        raise FileNotFoundError(f"{directory} does not exist (or is not a folder): give the "
                                f"folder that holds the tokenizer's files")
    has_json = (directory / "tokenizer.json").is_file()
    has_bpe = (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file()
    if (directory / "bytes.json").is_file() and not (has_json or has_bpe):
        spec = _read_json(directory / "bytes.json")
        if spec.get("kind") != "bytes" or not isinstance(spec.get("end_of_text"), bool):
            raise ValueError(f"{directory / 'bytes.json'} must hold {{\"kind\": \"bytes\", "
                             f"\"end_of_text\": true|false}}, got {spec}")
        return ByteTokenizer(end_of_text=spec["end_of_text"])
    if not (has_json or has_bpe):
        if byte_fallback:
            return ByteTokenizer()
        raise FileNotFoundError(f"{directory} has no tokenizer (tokenizer.json, or vocab.json "
                                f"and merges.txt): {advice}")
    tokenizers = _tokenizers_package(directory)
    name = directory / ("tokenizer.json" if has_json else "vocab.json")
    try:
        if has_json:
            tok = tokenizers.Tokenizer.from_file(str(name))
        else:  # as tokenizers.ByteLevelBPETokenizer builds it from GPT-2's two files
            tok = tokenizers.Tokenizer(tokenizers.models.BPE.from_file(
                str(directory / "vocab.json"), str(directory / "merges.txt")))
            tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
            tok.decoder = tokenizers.decoders.ByteLevel()
            tok.post_processor = tokenizers.processors.ByteLevel(trim_offsets=False)
    except Exception as err:  # the Rust side raises plain Exception for a malformed file
        raise ValueError(f"{name} is not a tokenizer file the tokenizers package can read "
                         f"({str(err)[:200]})") from err
    return HFTokenizer(tok, source=str(directory))


def _read_json(path: Path) -> dict:
    from jaxbasics import checks

    return checks.json_object(path)


def train_bpe(texts: Iterable[str], vocab_size: int, *, min_frequency: int = 2,
              length: int | None = None) -> HFTokenizer:
    """A byte-level BPE tokenizer (GPT-2's scheme: the 256 bytes as the base alphabet, GPT-2's
    pre-tokenizer without a prefix space, merges learnt from ``texts``) with
    :data:`END_OF_TEXT` as its special token (id 0), trained by the ``tokenizers`` library.

    ``texts`` is consumed once, as an iterator: nothing holds the corpus (the trainer keeps
    the counts of distinct pre-tokens). ``vocab_size`` is an upper bound: a small corpus may
    yield fewer merges. ``length`` (the number of texts, if known) only feeds progress.

    Raises ``ValueError`` when ``vocab_size`` is below 257 (the byte alphabet plus
    end-of-text) or beyond 2**32."""
    check_vocab_size(vocab_size, "vocab_size", low=257)
    if isinstance(min_frequency, bool) or not isinstance(min_frequency, int) or min_frequency < 1:
        raise ValueError(f"min_frequency must be a positive integer, got {min_frequency!r}")
    tokenizers = _tokenizers_package(Path("."))
    tok = tokenizers.Tokenizer(tokenizers.models.BPE())
    tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = tokenizers.decoders.ByteLevel()
    trainer = tokenizers.trainers.BpeTrainer(
        vocab_size=int(vocab_size), min_frequency=min_frequency, special_tokens=[END_OF_TEXT],
        initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(texts, trainer=trainer, length=length)
    return HFTokenizer(tok, source=f"trained (byte-level BPE, vocab_size {vocab_size})")
