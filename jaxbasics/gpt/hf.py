"""GPT-2 checkpoints in the Hugging Face format (a directory holding ``config.json`` and
``model.safetensors``): loading them into :class:`jaxbasics.gpt.model.GPT` (:func:`load_gpt2`),
with their tokenizer files (:func:`jaxbasics.data.vocab.load_tokenizer`, importable from here
as well), and writing a model or a run as one (:func:`save_gpt2`, :func:`export`).

Nothing is downloaded: point at a directory (e.g. one written by ``save_pretrained`` or a
copy of the ``gpt2`` repository). Each parameter's Hugging Face name is declared where the
model creates it (:func:`jaxbasics.gpt.model.declared`; ``transformer.`` prefix optional),
e.g. ``wte.weight`` (V, d) -> ``tok_emb.embedding``, ``h.{i}.attn.c_attn.weight`` (d, 3d) ->
``blocks.attn.qkv.kernel[i]``, ``lm_head.weight`` (V, d) -> ``head.kernel`` (d, V) if untied.

GPT-2's ``Conv1D`` layers store weights as (in, out), Flax's kernel layout, so they are
copied as they are; only ``lm_head`` (a ``torch.nn.Linear``, (out, in)) is transposed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from jaxbasics import checks
from jaxbasics.data.vocab import Tokenizer as Tokenizer  # the one loader, importable from here
from jaxbasics.data.vocab import load_tokenizer as load_tokenizer
from jaxbasics.gpt.config import GPTConfig
from jaxbasics.gpt.model import GPT, ParamInfo, parameter_table

_BUFFERS = ("attn.bias", "attn.masked_bias")  # causal-mask buffers of older checkpoints


#: Hugging Face ``activation_function`` names -> :data:`jaxbasics.gpt.config.ACTIVATIONS`.
HF_ACTIVATIONS = {"gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh", "gelu": "gelu",
                  "relu": "relu", "silu": "silu", "swish": "silu"}
#: ``GPT2Config`` options that would change the computation and that this model does not have:
#: a config.json with them set to anything but these values is refused by name.
UNSUPPORTED = {"add_cross_attention": False}


def config_from_hf(directory: str | Path, drop_rate: float = 0.0) -> GPTConfig:
    """The :class:`GPTConfig` of a Hugging Face GPT-2 ``config.json``.

    Read: ``vocab_size``, ``n_positions`` (or ``n_ctx``), ``n_embd``, ``n_head``, ``n_layer``,
    ``tie_word_embeddings``, and the options that change the computation:
    ``layer_norm_epsilon`` -> ``ln_eps``, ``n_inner`` -> ``mlp_dim``, ``activation_function``
    (a name in :data:`HF_ACTIVATIONS`) -> ``activation``, ``scale_attn_weights`` and
    ``scale_attn_by_inverse_layer_idx``. ``reorder_and_upcast_attn`` is accepted as it is:
    it only computes the scores and softmax in float32, which this model always does. The
    dropout probabilities (``embd_pdrop``, ``attn_pdrop``, ``resid_pdrop``) matter only in
    training; ``drop_rate`` replaces all three (0 by default, for inference). OpenAI's weights
    have ``qkv_bias=True``.

    Raises ``FileNotFoundError`` without config.json, and ``ValueError`` naming the field for
    another ``model_type``, a missing size, an ``activation_function`` not in
    :data:`HF_ACTIVATIONS`, or an option this model does not implement (:data:`UNSUPPORTED`),
    before any weight is read.
    """
    path = Path(directory) / "config.json"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: expected a Hugging Face GPT-2 directory "
                                f"with config.json and model.safetensors")
    hf = checks.json_object(path)
    if hf.get("model_type", "gpt2") != "gpt2":
        raise ValueError(f"{path}: model_type must be 'gpt2', got {hf.get('model_type')!r}")
    missing = [k for k in ("vocab_size", "n_embd", "n_head", "n_layer") if k not in hf]
    if missing:
        raise ValueError(f"{path} lacks {', '.join(missing)}: not a GPT-2 config.json")
    for name, plain in UNSUPPORTED.items():
        if hf.get(name, plain) != plain:
            raise ValueError(f"{path}: {name}={hf[name]!r} changes the model in a way jaxbasics' "
                             f"GPT does not implement (only {name}={plain!r} can be loaded)")
    act = hf.get("activation_function", "gelu_new")
    if act not in HF_ACTIVATIONS:
        raise ValueError(f"{path}: activation_function must be one of {sorted(HF_ACTIVATIONS)}, "
                         f"got {act!r}")
    options: dict[str, tuple[str, Any]] = {  # GPTConfig field: (config.json key, its default)
        "ln_eps": ("layer_norm_epsilon", 1e-5), "mlp_dim": ("n_inner", None),
        "scale_attn_weights": ("scale_attn_weights", True),
        "scale_attn_by_inverse_layer_idx": ("scale_attn_by_inverse_layer_idx", False),
        "tie_embeddings": ("tie_word_embeddings", True)}
    fields: dict[str, Any] = {ours: hf.get(theirs, default)
                              for ours, (theirs, default) in options.items()}
    try:
        return GPTConfig(vocab_size=hf["vocab_size"],
                         context_length=hf.get("n_positions", hf.get("n_ctx", 1024)),
                         emb_dim=hf["n_embd"], n_heads=hf["n_head"], n_layers=hf["n_layer"],
                         drop_rate=drop_rate, qkv_bias=True, activation=HF_ACTIVATIONS[act],
                         **fields)
    except (TypeError, ValueError) as err:  # GPTConfig names its field: say config.json's
        message = str(err)
        hf_names = {"context_length": "n_positions", "emb_dim": "n_embd", "n_heads": "n_head",
                    "n_layers": "n_layer", **{k: v[0] for k, v in options.items()}}
        for ours, theirs in hf_names.items():
            if theirs != ours and message.startswith(ours + " "):
                message = f"{theirs} (GPTConfig.{ours}){message[len(ours):]}"
        raise ValueError(f"{path}: {message}") from err


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


def _gpt2_byte_alphabet() -> list[str]:
    """The character GPT-2's byte-level BPE writes for each byte 0..255 (its ``encoder.py``
    scheme, as ``tokenizers.pre_tokenizers.ByteLevel.alphabet()`` holds it): printable Latin-1
    bytes stand for themselves, the k-th other byte for chr(256 + k)."""
    keep = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1),
            *range(ord("®"), ord("ÿ") + 1)]
    others = iter(range(256, 512))
    return [chr(b) if b in keep else chr(next(others)) for b in range(256)]


def _tokenizer_files(tokenizer: Any, directory: Path, context_length: int) -> None:
    """``tokenizer.json`` and ``tokenizer_config.json`` that ``AutoTokenizer`` reads as
    ``PreTrainedTokenizerFast`` and that encode and decode as ``tokenizer`` does."""
    import tokenizers

    from jaxbasics.data.vocab import END_OF_TEXT, ByteTokenizer, HFTokenizer

    if isinstance(tokenizer, ByteTokenizer):
        # byte b is token b: a byte-level BPE without merges over GPT-2's byte alphabet
        vocab = {ch: b for b, ch in enumerate(_gpt2_byte_alphabet())}
        tok = tokenizers.Tokenizer(tokenizers.models.BPE(vocab, []))
        tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False,
                                                                use_regex=False)
        tok.decoder = tokenizers.decoders.ByteLevel()
        if tokenizer.eot_id is not None:
            tok.add_special_tokens([END_OF_TEXT])  # id 256, the next free one
        eot = END_OF_TEXT if tokenizer.eot_id is not None else None
    elif isinstance(tokenizer, HFTokenizer):
        tok = tokenizer.tok
        probe = "Hello, world."
        if tok.encode(probe).ids != tok.encode(probe, add_special_tokens=False).ids:
            raise ValueError(
                f"the tokenizer's post-processor ({type(tok.post_processor).__name__}) adds "
                f"special tokens that transformers would add to every text and jaxbasics never "
                f"does: this tokenizer cannot be exported faithfully")
        eot = None if tokenizer.eot_id is None else tok.id_to_token(tokenizer.eot_id)
    else:
        raise ValueError(f"a {type(tokenizer).__name__} cannot be written as Hugging Face "
                         f"tokenizer files")
    tok.save(str(directory / "tokenizer.json"))
    config: dict[str, Any] = {"tokenizer_class": "PreTrainedTokenizerFast",
                              "model_max_length": context_length, "add_prefix_space": False,
                              "clean_up_tokenization_spaces": False}
    if eot is not None:
        config.update(bos_token=eot, eos_token=eot, unk_token=eot)
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=1) + "\n")


def save_gpt2(model: GPT, directory: str | Path, tokenizer: Any = None) -> dict[str, np.ndarray]:
    """Write ``model`` as a Hugging Face GPT-2 folder that ``GPT2LMHeadModel.from_pretrained``
    (and :func:`load_gpt2`) read: ``config.json`` and ``model.safetensors`` (float32), and with
    ``tokenizer`` (a :class:`~jaxbasics.data.vocab.ByteTokenizer` or
    :class:`~jaxbasics.data.vocab.HFTokenizer`) ``tokenizer.json`` and
    ``tokenizer_config.json`` for ``AutoTokenizer``.

    Tensor names and layouts come from :func:`jaxbasics.gpt.model.parameter_table`. A model
    without qkv bias gets zero ``c_attn.bias`` tensors (GPT-2 always has them; zeros add
    nothing); an untied head is saved as ``lm_head.weight`` with ``tie_word_embeddings``
    false. ``directory`` is created (parents too) and its files overwritten.

    Returns the tensors written, by name. Raises ``ValueError`` for a tokenizer transformers
    would not read the same way (one whose post-processor adds special tokens).
    """
    from safetensors.numpy import save_file

    cfg = model.cfg
    directory = Path(directory)
    activation = {"gelu_tanh": "gelu_new", "gelu": "gelu", "relu": "relu", "silu": "silu"}
    table, params = parameter_table(model), nnx.to_pure_dict(nnx.state(model, nnx.Param))
    tensors: dict[str, np.ndarray] = {}
    for info, value in zip(jax.tree.leaves(table), jax.tree.leaves(params), strict=True):
        value = np.asarray(value, np.float32)
        for name, array in zip(info.hf_names(cfg.n_layers),
                               value if info.per_layer else [value], strict=True):
            tensors[name] = np.ascontiguousarray(array.T if info.hf_transpose else array)
    if not cfg.qkv_bias:
        for i in range(cfg.n_layers):
            tensors[f"h.{i}.attn.c_attn.bias"] = np.zeros(3 * cfg.emb_dim, np.float32)
    eot = getattr(tokenizer, "eot_id", None)
    config = {
        "model_type": "gpt2", "architectures": ["GPT2LMHeadModel"],
        "vocab_size": cfg.vocab_size, "n_positions": cfg.context_length,
        "n_ctx": cfg.context_length, "n_embd": cfg.emb_dim, "n_head": cfg.n_heads,
        "n_layer": cfg.n_layers, "n_inner": cfg.mlp_dim,
        "activation_function": activation[cfg.activation], "layer_norm_epsilon": cfg.ln_eps,
        "scale_attn_weights": cfg.scale_attn_weights,
        "scale_attn_by_inverse_layer_idx": cfg.scale_attn_by_inverse_layer_idx,
        "reorder_and_upcast_attn": False, "tie_word_embeddings": cfg.tie_embeddings,
        "embd_pdrop": cfg.drop_rate, "attn_pdrop": cfg.drop_rate, "resid_pdrop": cfg.drop_rate,
        "bos_token_id": eot, "eos_token_id": eot, "torch_dtype": "float32"}
    directory.mkdir(parents=True, exist_ok=True)
    if tokenizer is not None:
        _tokenizer_files(tokenizer, directory, cfg.context_length)
    save_file(tensors, str(directory / "model.safetensors"), metadata={"format": "pt"})
    (directory / "config.json").write_text(json.dumps(config, indent=1) + "\n")
    return tensors


def export(run_dir: str | Path, out: str | Path, *, overwrite: bool = False) -> Path:
    """Write the run in ``run_dir`` (its latest checkpoint and its tokenizer: the BPE trained
    by ``prepare``, GPT-2's files, or byte ids) as the Hugging Face GPT-2 folder ``out``
    (:func:`save_gpt2`). The folder is written beside ``out`` under another name and renamed
    into place when whole, so a failure never leaves a half-written ``out``.

    Returns ``out``. Raises ``FileExistsError`` for an ``out`` that exists and is not an empty
    folder unless ``overwrite`` (then it is replaced), ``FileNotFoundError`` without a run, and
    ``ValueError`` for what cannot be exported (named): a run on raw token files without a
    tokenizer, a tokenizer whose post-processor adds special tokens.
    """
    import shutil
    import tempfile

    from jaxbasics.gpt import checkpoint
    from jaxbasics.gpt.runs import load_run

    out, run_dir = Path(out), Path(run_dir)
    if out.exists() and not (out.is_dir() and not any(out.iterdir())) and not overwrite:
        raise FileExistsError(f"{out} already exists and is not an empty folder: choose another "
                              f"--out, or replace it with --overwrite")
    task = checkpoint.load_meta(run_dir)["task"]
    if task.get("kind") == "data" and not (run_dir / checkpoint.TOKENIZER_FOLDER).is_dir():
        raise ValueError(f"{run_dir} has no tokenizer (it was trained on raw token files given "
                         f"without --tokenizer): its token ids cannot be written as tokenizer "
                         f"files that AutoTokenizer would read the same way")
    model, tokenizer = load_run(run_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f".{out.name}.partial-", dir=out.parent))
    try:
        save_gpt2(model, partial, tokenizer)
        if out.is_dir():
            shutil.rmtree(out)
        elif out.exists():
            out.unlink()
        partial.rename(out)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return out
