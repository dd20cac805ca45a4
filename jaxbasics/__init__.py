"""jaxbasics: the "basic LLM concepts" chapter done the JAX way.

Where things live (each folder names a role; imports run down this list, never up):

* shared basics ...... :mod:`jaxbasics.checks`, :mod:`jaxbasics.params` (``split_params``),
  :mod:`jaxbasics.losses`, :mod:`jaxbasics.step` (the one step factory), :mod:`jaxbasics.timing`
* the data pipeline .. :mod:`jaxbasics.data`: ``sources``, ``vocab`` (tokenizers), ``shards``,
  ``manifest``, ``prepare``, ``batches``
* the chapter ........ :mod:`jaxbasics.chapter`: ``tensors``, ``neuron``, ``finite_diff``,
  ``simplenet``, ``train_step``, ``graph``
* GPT-2 .............. :mod:`jaxbasics.gpt`: ``config``, ``model``, ``attention``, ``matmul``,
  ``data``, ``train``, ``evaluate``, ``generate``, ``checkpoint``, ``metrics``, ``runs``, ``hf``,
  ``sharding``
* PyTorch side ....... :mod:`jaxbasics.compare` (the ``compare`` extra); benchmarks:
  :mod:`jaxbasics.bench`
* command line ....... :mod:`jaxbasics.cli`

The names below are imported on first use (PEP 562), so ``import jaxbasics`` loads neither
Flax, Optax nor the GPT-2 stack until one of them is asked for.
"""

from __future__ import annotations

import importlib as _importlib
import typing as _typing

from jaxbasics.requirements import check_installed

check_installed()
del check_installed

__version__ = "0.1.0"

#: public name -> the module that defines it (a module itself where the value is "")
_EXPORTS = {
    "binary_cross_entropy": "jaxbasics.losses",
    "binary_cross_entropy_with_logits": "jaxbasics.losses",
    "cross_entropy": "jaxbasics.losses",
    "split_params": "jaxbasics.params",
    "make_step": "jaxbasics.step",
    "make_train_step": "jaxbasics.chapter.train_step",
    "make_scan_train": "jaxbasics.chapter.train_step",
    "sum_gradients": "jaxbasics.chapter.train_step",
    "SimpleNet": "jaxbasics.chapter.simplenet",
    "GPTConfig": "jaxbasics.gpt.config",
    "GPT_CONFIG_124M": "jaxbasics.gpt.config",
    "GPT_CONFIG_355M": "jaxbasics.gpt.config",
    "GPT_CONFIG_774M": "jaxbasics.gpt.config",
    "GPT_CONFIG_1558M": "jaxbasics.gpt.config",
    "PRESETS": "jaxbasics.gpt.config",
    "parameter_count": "jaxbasics.gpt.config",
    "GPT": "jaxbasics.gpt.model",
    "count_params": "jaxbasics.gpt.model",
    "init_cache": "jaxbasics.gpt.model",
    "generate": "jaxbasics.gpt.generate",
    "load_gpt2": "jaxbasics.gpt.hf",
    # pretraining: a corpus -> DATA -> a run -> scores, samples, a Hugging Face folder
    "prepare": "jaxbasics.data.prepare",
    "PrepareOptions": "jaxbasics.data.prepare",
    "TokenData": "jaxbasics.data.batches",
    "PretrainData": "jaxbasics.gpt.data",
    "TrainOptions": "jaxbasics.gpt.train",
    "Evaluation": "jaxbasics.gpt.train",
    "train": "jaxbasics.gpt.train",
    "evaluate": "jaxbasics.gpt.evaluate",
    "load_run": "jaxbasics.gpt.runs",
    "export": "jaxbasics.gpt.hf",
    # modules, by the short names the chapter uses
    "tensors": "jaxbasics.chapter.tensors",
    "neuron": "jaxbasics.chapter.neuron",
    "finite_diff": "jaxbasics.chapter.finite_diff",
    "simplenet": "jaxbasics.chapter.simplenet",
    "train_step": "jaxbasics.chapter.train_step",
    "losses": "jaxbasics.losses",
}
_MODULES = {"tensors", "neuron", "finite_diff", "simplenet", "train_step", "losses"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> _typing.Any:
    """Import the module behind a public name on first use and keep the value."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'jaxbasics' has no attribute {name!r}")
    loaded = _importlib.import_module(module)
    value = loaded if name in _MODULES else getattr(loaded, name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    """The public names only: ``__version__`` and those of ``__all__``."""
    return ["__version__", *__all__]


if _typing.TYPE_CHECKING:  # what type checkers and IDEs see: the same names, imported eagerly
    from jaxbasics import losses
    from jaxbasics.chapter import finite_diff, neuron, simplenet, tensors, train_step
    from jaxbasics.chapter.simplenet import SimpleNet
    from jaxbasics.chapter.train_step import make_scan_train, make_train_step, sum_gradients
    from jaxbasics.data.batches import TokenData
    from jaxbasics.data.prepare import PrepareOptions, prepare
    from jaxbasics.gpt.config import (
        GPT_CONFIG_124M,
        GPT_CONFIG_355M,
        GPT_CONFIG_774M,
        GPT_CONFIG_1558M,
        PRESETS,
        GPTConfig,
        parameter_count,
    )
    from jaxbasics.gpt.data import PretrainData
    from jaxbasics.gpt.evaluate import evaluate
    from jaxbasics.gpt.generate import generate
    from jaxbasics.gpt.hf import export, load_gpt2
    from jaxbasics.gpt.model import GPT, count_params, init_cache
    from jaxbasics.gpt.runs import load_run
    from jaxbasics.gpt.train import Evaluation, TrainOptions, train
    from jaxbasics.losses import binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy
    from jaxbasics.params import split_params
    from jaxbasics.step import make_step
