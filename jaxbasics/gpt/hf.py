"""Loading GPT-2 checkpoints in the Hugging Face format (a directory holding ``config.json``
and ``model.safetensors``) into :class:`jaxbasics.gpt.model.GPT`, and their tokenizer files.

Nothing is downloaded: point at a directory (e.g. one written by ``save_pretrained`` or a
copy of the ``gpt2`` repository). Each parameter's Hugging Face name is declared where the
model creates it (:func:`jaxbasics.gpt.model.declared`; ``transformer.`` prefix optional),
e.g. ``wte.weight`` (V, d) -> ``tok_emb.embedding``, ``h.{i}.attn.c_attn.weight`` (d, 3d) ->
``blocks.attn.qkv.kernel[i]``, ``lm_head.weight`` (V, d) -> ``head.kernel`` (d, V) if untied.

GPT-2's ``Conv1D`` layers store weights as (in, out), Flax's kernel layout, so they are
copied as they are; only ``lm_head`` (a ``torch.nn.Linear``, (out, in)) is transposed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxbasics import checks
from jaxbasics.gpt.config import GPTConfig
from jaxbasics.gpt.data import ByteTokenizer
from jaxbasics.gpt.model import GPT, LN_EPS, ParamInfo, parameter_table

_BUFFERS = ("attn.bias", "attn.masked_bias")  # causal-mask buffers of older checkpoints


def config_from_hf(directory: str | Path, drop_rate: float = 0.0) -> GPTConfig:
    """The :class:`GPTConfig` of a Hugging Face GPT-2 ``config.json`` (dropout off by default,
    for inference; OpenAI's weights have ``qkv_bias=True`` and tied embeddings)."""
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: expected a Hugging Face GPT-2 directory "
                                f"with config.json and model.safetensors")
    hf = checks.json_object(path)
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"{path}: model_type must be 'gpt2', got {hf.get('model_type')!r}")
    act = hf.get("activation_function", "gelu_new")
    if act not in ("gelu_new", "gelu_pytorch_tanh"):
        raise ValueError(f"{path}: activation_function must be the tanh GELU ('gelu_new'), "
                         f"got {act!r}")
    eps = hf.get("layer_norm_epsilon", LN_EPS)
    if abs(eps - LN_EPS) > 1e-12:
        raise ValueError(f"{path}: layer_norm_epsilon must be {LN_EPS}, got {eps}")
    missing = [k for k in ("vocab_size", "n_embd", "n_head", "n_layer") if k not in hf]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: not a GPT-2 config.json")
    return GPTConfig(vocab_size=hf["vocab_size"],
                     context_length=hf.get("n_positions", hf.get("n_ctx", 1024)),
                     emb_dim=hf["n_embd"], n_heads=hf["n_head"], n_layers=hf["n_layer"],
                     drop_rate=drop_rate, qkv_bias=True,
                     tie_embeddings=bool(hf.get("tie_word_embeddings", True)))


def _read_tensors(directory: Path) -> dict[str, np.ndarray]:
    from safetensors import SafetensorError
    from safetensors.numpy import load_file

    single, index = directory / "model.safetensors", directory / "model.safetensors.index.json"
    if single.is_file():
        files = [single]
    elif index.is_file():
        weight_map = checks.json_object(index).get("weight_map")
        names = list(weight_map.values()) if isinstance(weight_map, dict) else None
        if names is None or not all(isinstance(f, str) for f in names):
            got = type(weight_map).__name__ if names is None else "file names that are not strings"
            raise ValueError(f"{index} must map tensor names to file names under 'weight_map', "
                             f"got {got}")
        shards = sorted(set(names))
        missing = [f for f in shards if not (directory / f).is_file()]
        if missing:
            raise FileNotFoundError(f"{index} lists {len(missing)} shard(s) not in {directory}: "
                                    f"{', '.join(missing)}")
        files = [directory / f for f in shards]
    else:
        raise FileNotFoundError(f"no model.safetensors (or model.safetensors.index.json) in "
                                f"{directory}")
    tensors: dict[str, np.ndarray] = {}
    for f in files:
        try:
            loaded = load_file(str(f))
        except (SafetensorError, OSError) as err:  # truncated, empty, not safetensors at all
            raise ValueError(f"{f} is damaged or incomplete: not a safetensors file that can be "
                             f"read ({err})") from err
        for key, value in loaded.items():
            tensors[key.removeprefix("transformer.")] = value
    return tensors


def load_gpt2(directory: str | Path, *, drop_rate: float = 0.0, dtype: Any = jnp.float32) -> GPT:
    """A :class:`GPT` holding the weights of the Hugging Face GPT-2 checkpoint in ``directory``:
    ``config.json`` and ``model.safetensors``, or the shards ``model.safetensors.index.json``
    lists; weights saved in float32, float16 or bfloat16 are held as float32.

    Raises ``ValueError`` naming the tensor when a shape disagrees with ``config.json``, or
    when tensors are missing or unexpected.
    """
    directory = Path(directory)
    cfg = config_from_hf(directory, drop_rate)
    tensors = _read_tensors(directory)
    abstract = nnx.eval_shape(lambda: GPT(cfg, dtype=dtype, rngs=nnx.Rngs(0)))
    graphdef, _ = nnx.split(abstract)
    table = parameter_table(abstract)
    wanted = {name for info in jax.tree.leaves(table) for name in info.hf_names(cfg.n_layers)}
    missing = sorted(wanted - set(tensors))
    if missing:
        raise ValueError(f"{directory}: {len(missing)} tensor(s) of a {cfg.n_layers}-layer GPT-2 "
                         f"missing from the checkpoint: {', '.join(missing[:6])}"
                         f"{' …' if len(missing) > 6 else ''}")

    def take(key: str, want: tuple[int, ...], transpose: bool) -> jax.Array:
        value = tensors[key].T if transpose else tensors[key]
        if value.shape != tuple(want):
            raise ValueError(f"{directory}: tensor {key!r} has shape {value.shape}, but "
                             f"config.json implies {tuple(want)}")
        return jnp.asarray(value, jnp.float32)

    def load(info: ParamInfo) -> jax.Array:
        if info.per_layer:  # one tensor per block, stacked on the leading layer axis
            return jnp.stack([take(name, info.shape[1:], info.hf_transpose)
                              for name in info.hf_names(cfg.n_layers)])
        return take(info.hf_name, info.shape, info.hf_transpose)

    params = jax.tree.map(load, table)
    unexpected = sorted(k for k in tensors if k not in wanted and not k.endswith(_BUFFERS)
                        and not (cfg.tie_embeddings and k == "lm_head.weight"))
    if unexpected:
        raise ValueError(f"{directory}: unexpected tensors for a {cfg.n_layers}-layer GPT-2: "
                         f"{unexpected[:5]}{' …' if len(unexpected) > 5 else ''}")
    return nnx.merge(graphdef, params)


class Tokenizer(Protocol):
    """What generation needs of a tokenizer: ``encode(str) -> ids`` and ``decode(ids) -> str``."""

    def encode(self, text: str) -> list[int]: ...
    def decode(self, ids: list[int]) -> str: ...


class _HFTokenizer:
    def __init__(self, tok: Any):
        self._tok = tok

    def encode(self, text: str) -> list[int]:
        return self._tok.encode(text).ids

    def decode(self, ids: list[int]) -> str:
        return self._tok.decode([int(i) for i in ids])


def load_tokenizer(directory: str | Path, *, byte_fallback: bool = False) -> Tokenizer:
    """The checkpoint's BPE tokenizer: ``tokenizer.json``, or ``vocab.json`` + ``merges.txt``,
    read with the ``tokenizers`` package.

    A directory without those files raises ``FileNotFoundError`` naming them: its model's
    prompt would otherwise be read as raw UTF-8 bytes, ids that mean other tokens to a GPT-2
    vocabulary. ``byte_fallback=True`` asks for those byte ids (:class:`ByteTokenizer`) on
    purpose. Tokenizer files without the ``tokenizers`` package raise ``ImportError`` with the
    pip command."""
    directory = Path(directory)
    has_json = (directory / "tokenizer.json").is_file()
    has_bpe = (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file()
    if not (has_json or has_bpe):
        if byte_fallback:
            return ByteTokenizer()
        raise FileNotFoundError(f"{directory} has no tokenizer (tokenizer.json, or vocab.json "
                                f"and merges.txt): its prompt would be read as raw bytes; give "
                                f"the files, or ask for byte-level ids on purpose (jaxbasics "
                                f"generate --byte-tokens)")
    try:
        import tokenizers
    except ImportError as err:
        raise ImportError(f"{directory}'s tokenizer files need the tokenizers package: "
                          f"python -m pip install tokenizers") from err
    if has_json:
        return _HFTokenizer(tokenizers.Tokenizer.from_file(str(directory / "tokenizer.json")))
    if (directory / "vocab.json").is_file() and (directory / "merges.txt").is_file():
        return _HFTokenizer(tokenizers.ByteLevelBPETokenizer(
            str(directory / "vocab.json"), str(directory / "merges.txt")))
    return ByteTokenizer()
