"""Tokenizers: UTF-8 byte ids, and Hugging Face ``tokenizers`` BPE (loaded from a folder, or
trained on a corpus the way GPT-2's was: byte-level BPE), behind one small interface.

Every tokenizer here has ``encode(text) -> list[int]``, ``decode(ids) -> str``,
``encode_batch(texts) -> list[np.ndarray]`` (the ``tokenizers`` batch encoder: all cores),
``vocab_size``, ``eot_id`` (the end-of-text id that separates documents, or None),
``token_bytes()`` (UTF-8 bytes of each id's text, for bits per byte), ``digest()`` (what
identifies the mapping from text to ids: a data set and a model trained on it must share it)
and ``save(folder)``; :func:`load_tokenizer` reads back what ``save`` wrote.

Text is encoded as ordinary text (tiktoken's ``encode_ordinary``, as nanoGPT and llm.c prepare
their data): a special token's string inside a document, such as a literal ``<|endoftext|>``,
is encoded as the characters it is, never as the special id; end-of-text ids go only where
``prepare`` puts them, between documents. :func:`check_round_trip` says whether a tokenizer
gives each text back and counts its bytes exactly, which bits per byte relies on.

A tokenizer folder holds one of:

* ``tokenizer.json`` (the ``tokenizers`` library's own file, ``Tokenizer.save``);
* ``vocab.json`` + ``merges.txt``: byte-level BPE as GPT-2 ships it (read with GPT-2's
  pre-tokenizer and decoder, as ``tokenizers.ByteLevelBPETokenizer`` reads them);
* ``bytes.json``: ``{"kind": "bytes", "end_of_text": true|false}``, byte ids (this package's).
"""

from __future__ import annotations

import hashlib
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

    def decode_batch(self, ids: Sequence[np.ndarray]) -> list[str]:
        """The text of each array of ids (:meth:`decode`)."""
        return [self.decode(a) for a in ids]

    def digest(self) -> str:
        """SHA-256 (hex) of ``{"kind": "bytes", "end_of_text": ...}``: byte ids with and without
        the end-of-text id are different tokenizers."""
        return _sha256_json({"kind": "bytes", "end_of_text": self.end_of_text})

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/bytes.json``; returns its path."""
        path = Path(folder) / "bytes.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"kind": "bytes", "end_of_text": self.end_of_text}) + "\n")
        return path

    def describe(self) -> dict:
        """``{"kind": "bytes", "vocab_size", "end_of_text"}`` (the manifest's entry)."""
        return {"kind": "bytes", "vocab_size": self.vocab_size, "end_of_text": self.eot_id,
                "digest": self.digest()}


class HFTokenizer:
    """A ``tokenizers.Tokenizer`` (BPE or any model the library reads) behind this module's
    interface. Encoding never adds a post-processor's special tokens (``[CLS]`` and the like)
    and reads special tokens' strings in the text as ordinary text (the library's
    ``encode_special_tokens``): documents are separated by :attr:`eot_id` where ``prepare``
    puts it.

    ``eot_id``: the id of the first of :data:`END_OF_TEXT_NAMES` in the vocabulary, or None.
    ``vocab_size``: one more than the largest id (added tokens included). ``ValueError``
    naming ``source`` for a tokenizer without a single id."""

    def __init__(self, tok: Any, source: str = ""):
        self.tok = tok
        self.source = source
        vocab = tok.get_vocab(with_added_tokens=True)
        if not vocab:
            raise ValueError(f"the tokenizer {source or ''} has an empty vocabulary: it cannot "
                             f"encode any text")
        tok.encode_special_tokens = True  # a literal <|endoftext|> in a text is text
        self.vocab_size = max(vocab.values()) + 1
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

    @property
    def lossless(self) -> bool:
        """True when every text decodes back by construction: GPT-2's scheme (no normalizer,
        the byte-level pre-tokenizer without a prefix space, the byte-level decoder, BPE) with
        all 256 byte characters in the vocabulary, so that no byte can become an unknown
        token. :func:`check_round_trip` skips decoding such tokenizers' texts."""
        from tokenizers import decoders, models, pre_tokenizers

        pre = self.tok.pre_tokenizer
        if not (self.tok.normalizer is None and isinstance(pre, pre_tokenizers.ByteLevel)
                and not pre.add_prefix_space and isinstance(self.tok.decoder, decoders.ByteLevel)
                and isinstance(self.tok.model, models.BPE)):
            return False
        vocab = self.tok.get_vocab(with_added_tokens=False)
        return all(c in vocab for c in pre_tokenizers.ByteLevel.alphabet())

    def encode(self, text: str) -> list[int]:
        """The ids of ``text``, read as ordinary text."""
        return self.tok.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int] | np.ndarray) -> str:
        """The text of ``ids`` (special tokens left out)."""
        return self.tok.decode([int(i) for i in ids])

    def decode_batch(self, ids: Sequence[np.ndarray]) -> list[str]:
        """The text of each array of ids (the library's batch decoder: all cores)."""
        return self.tok.decode_batch([np.asarray(a).tolist() for a in ids])

    def encode_batch(self, texts: Sequence[str]) -> list[np.ndarray]:
        """The ids of each text (``encode_batch_fast``, on all cores: set
        ``TOKENIZERS_PARALLELISM=false`` for one), as uint32 arrays."""
        encode = getattr(self.tok, "encode_batch_fast", self.tok.encode_batch)
        try:
            encoded = encode(list(texts), add_special_tokens=False)
        except Exception as err:  # the Rust side raises plain Exception (a WordLevel without [UNK])
            raise ValueError(f"the tokenizer {self.source} cannot encode the text: "
                             f"{str(err)[:200]}") from err
        return [np.asarray(e.ids, np.uint32) for e in encoded]

    def token_bytes(self) -> np.ndarray:
        """(vocab_size,) int64: the UTF-8 bytes of text each id stands for; 0 for special tokens
        (the end-of-text separator among them) and for ids the vocabulary does not use.

        Exact for byte-level BPE (each character of a token's string stands for one byte). For
        other decoders, the bytes the id adds when decoded after an anchor token (so that a
        decoder that drops a leading space at the start of a text, as Metaspace does, still
        counts it), or decoded alone where no anchor exists. Whether these counts add up to
        the text, document by document, is what :func:`check_round_trip` checks."""
        from tokenizers import decoders

        out = np.zeros(self.vocab_size, np.int64)
        added = self.tok.get_added_tokens_decoder()
        byte_level = isinstance(self.tok.decoder, decoders.ByteLevel)
        anchor = None if byte_level else self._anchor()
        base = 0 if anchor is None else len(self.tok.decode([anchor]).encode("utf-8"))
        for token, i in self.tok.get_vocab(with_added_tokens=True).items():
            if i in added:
                out[i] = 0 if added[i].special else len(added[i].content.encode("utf-8"))
            elif byte_level:
                out[i] = len(token)
            elif anchor is None:
                out[i] = len(self.tok.decode([i]).encode("utf-8"))
            else:
                out[i] = len(self.tok.decode([anchor, i]).encode("utf-8")) - base
        if self.eot_id is not None:
            out[self.eot_id] = 0
        return out

    def _anchor(self) -> int | None:
        """The id of a plain letter that encodes to itself, or None."""
        for letter in "xaeiouns":
            ids = self.tok.encode(letter, add_special_tokens=False).ids
            if len(ids) == 1 and self.tok.decode(ids) == letter:
                return int(ids[0])
        return None

    def digest(self) -> str:
        """SHA-256 (hex) of what maps text to ids: the normalizer, pre-tokenizer, model
        (vocabulary, merges) and decoder, and the added tokens' ids and strings (read from the
        library's own serialisation, in a canonical order; padding, truncation and the
        post-processor, which encoding here never uses, left out). Equal digests: the same
        text gives the same ids."""
        spec = json.loads(self.tok.to_str())
        return _sha256_json({
            **{k: spec.get(k) for k in ("normalizer", "pre_tokenizer", "model", "decoder")},
            "added_tokens": sorted([t["id"], t["content"], bool(t.get("special"))]
                                   for t in spec.get("added_tokens") or [])})

    def save(self, folder: str | Path) -> Path:
        """Write ``folder/tokenizer.json``; returns its path."""
        path = Path(folder) / "tokenizer.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tok.save(str(path))
        return path

    def describe(self) -> dict:
        """``{"kind": "tokenizers", "vocab_size", "end_of_text", "source"}``."""
        return {"kind": "tokenizers", "model": type(self.tok.model).__name__,
                "vocab_size": self.vocab_size, "end_of_text": self.eot_id, "source": self.source,
                "digest": self.digest()}


def _sha256_json(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, separators=(",", ":"))
                          .encode("utf-8")).hexdigest()


#: a text that exercises what tokenizers lose, in ASCII (which any vocabulary for text covers):
#: runs of spaces, tabs and line breaks, a leading space, punctuation, a special token's
#: string; ``prepare`` tries it before any corpus is read (:func:`check_round_trip`), and the
#: corpus itself, batch by batch, as it is encoded
PROBE_TEXT = (" Hello,  world!\n\tdef f(x):\n        return x  # ok\n\nA-Z a-z 0-9 (3.14) "
              "<|endoftext|> x\r\n")


def check_same_tokenizer(model_tok: ByteTokenizer | HFTokenizer, data_tok: ByteTokenizer |
                         HFTokenizer, *, model: str, data: str, texts: Sequence[str] = ()
                         ) -> None:
    """Raise ``ValueError`` naming both unless the tokenizer a model was trained with
    (``model_tok``, of ``model``, e.g. ``"--run R"``) maps text to ids as the one ``data`` was
    prepared with: the same ids must mean the same text, or every loss and bits per byte
    computed over them is meaningless.

    Equal :meth:`~HFTokenizer.digest` s pass. So do tokenizers stored differently that behave
    alike (byte ids and the byte-level BPE without merges ``export`` writes for them; GPT-2's
    two files and the ``tokenizer.json`` transformers saves of them): the same vocabulary
    size, end-of-text id and bytes per id, and the same ids for :data:`PROBE_TEXT` and every
    one of ``texts`` (e.g. text decoded from the data)."""
    if model_tok.digest() == data_tok.digest():
        return
    if (model_tok.vocab_size == data_tok.vocab_size and model_tok.eot_id == data_tok.eot_id
            and np.array_equal(model_tok.token_bytes(), data_tok.token_bytes())):
        probes = [PROBE_TEXT, *texts]
        if all(np.array_equal(a, b) for a, b in zip(model_tok.encode_batch(probes),
                                                     data_tok.encode_batch(probes), strict=True)):
            return

    def kind(t: ByteTokenizer | HFTokenizer) -> str:
        if isinstance(t, ByteTokenizer):
            return f"byte ids{' + end-of-text' if t.eot_id is not None else ''}"
        return type(t.tok.model).__name__

    raise ValueError(f"{model} was trained with another tokenizer ({kind(model_tok)}, "
                     f"{model_tok.vocab_size:,} ids, digest {model_tok.digest()[:12]}) than {data} "
                     f"was prepared with ({kind(data_tok)}, {data_tok.vocab_size:,} ids, digest "
                     f"{data_tok.digest()[:12]}): its ids mean other text to the model, so its "
                     f"scores would be meaningless; prepare the data with the model's tokenizer "
                     f"(--tokenizer)")


class TokenizerMismatch(ValueError):
    """A tokenizer that does not give a text back, or whose tokens' bytes do not add up to
    the text's: bits per byte over its ids would divide by the wrong number of bytes."""


def check_round_trip(tok: ByteTokenizer | HFTokenizer, texts: Sequence[str],
                     ids: Sequence[np.ndarray], *, name: str, where: Sequence[str] = (),
                     table: np.ndarray | None = None) -> None:
    """Raise :class:`TokenizerMismatch` naming the tokenizer (``name``, e.g.
    ``"--tokenizer DIR"``) and the text (``where[i]``, e.g. its file) unless, for every
    ``texts[i]`` and its ids ``ids[i]``:

    * the ids decode to the text exactly (nothing dropped, added or replaced: no ``[UNK]``,
      no prefix space, no normalisation), and
    * ``token_bytes()[ids].sum()`` (``table``, computed once by the caller for speed) equals
      the text's UTF-8 length: bits per byte divides by exactly the bytes of the text scored;
    * a non-empty text encodes to at least one id.

    Byte ids (:class:`ByteTokenizer`) pass by construction and are not decoded, nor are the
    texts of a :attr:`HFTokenizer.lossless` tokenizer (their bytes are still counted)."""
    if isinstance(tok, ByteTokenizer):
        return
    table = tok.token_bytes() if table is None else table
    decoded = texts if tok.lossless else tok.decode_batch(ids)
    for i, (text, a, back) in enumerate(zip(texts, ids, decoded, strict=True)):
        at = f" ({where[i]})" if i < len(where) else ""
        nbytes = len(text.encode("utf-8"))
        if nbytes and not len(a):
            raise TokenizerMismatch(f"{name} encodes a text of {nbytes} bytes{at} to no ids at "
                                    f"all (an empty or broken vocabulary?): refused")
        if back != text:
            k = next((j for j, (p, q) in enumerate(zip(back, text, strict=False)) if p != q),
                     min(len(back), len(text)))
            raise TokenizerMismatch(
                f"{name} does not give the text back{at}: at character {k}, "
                f"{text[max(0, k - 12): k + 12]!r} decodes as {back[max(0, k - 12): k + 12]!r}; "
                f"bits per byte over its ids would count the wrong bytes: use a tokenizer that "
                f"round-trips (byte-level BPE: GPT-2's files, --train-tokenizer) or --bytes")
        counted = int(table[np.asarray(a, np.int64)].sum())
        if counted != nbytes:
            raise TokenizerMismatch(
                f"{name}'s tokens stand for {counted} bytes of text where the text{at} has "
                f"{nbytes} (it adds or drops text, e.g. a prefix space): bits per byte would "
                f"divide by the wrong bytes: use a tokenizer that round-trips (byte-level BPE: "
                f"GPT-2's files, --train-tokenizer) or --bytes")


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
