"""Reading back a run directory written by ``jaxbasics train`` (layout:
:mod:`jaxbasics.gpt.checkpoint`): its model and its tokenizer."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import jax
from flax import nnx

from jaxbasics.data.vocab import ByteTokenizer, HFTokenizer, load_tokenizer
from jaxbasics.gpt import checkpoint
from jaxbasics.gpt.model import GPT, parameter_table
from jaxbasics.gpt.train import TrainOptions, build_model, make_optimizer
from jaxbasics.params import split_params

TOKENIZER_FOLDER = checkpoint.TOKENIZER_FOLDER


def load_run(run_dir: str | Path) -> tuple[GPT, ByteTokenizer | HFTokenizer]:
    """``(model, tokenizer)`` of the latest checkpoint in ``run_dir``: the model rebuilt from
    the sidecar's configuration and options, holding the checkpoint's parameters; the tokenizer
    saved in ``run_dir/tokenizer`` if there is one, else byte ids (runs on the addition task or
    on a text file).

    Raises ``FileNotFoundError`` when ``run_dir`` holds no run, and ``ValueError`` naming what
    is damaged (:func:`jaxbasics.gpt.checkpoint.restore`)."""
    run_dir = Path(run_dir)
    meta = checkpoint.load_meta(run_dir)
    cfg, opts = checkpoint.config_of(meta), TrainOptions(**meta["options"])
    # the attention kernel and the layer loop change no parameter: this machine's choice, not
    # the training one's (a run trained with cuDNN's attention on a GPU loads on a laptop)
    opts = dataclasses.replace(opts, attention="auto", scan_layers="auto")
    abstract = nnx.eval_shape(lambda: build_model(cfg, opts))
    graphdef, params_like = split_params(abstract)
    opt_like = jax.eval_shape(make_optimizer(opts, parameter_table(abstract)).init, params_like)
    _, params, _ = checkpoint.restore(run_dir, params_like, opt_like)
    folder = run_dir / TOKENIZER_FOLDER
    tokenizer = load_tokenizer(folder) if folder.is_dir() else ByteTokenizer()
    return nnx.merge(graphdef, params), tokenizer
