"""jaxbasics: the "basic LLM concepts" chapter done the JAX way.

Sections and where they live:

* tensors ........................ :mod:`jaxbasics.tensors`
* losses (BCE, cross-entropy) .... :mod:`jaxbasics.losses`
* autodiff on one neuron ......... :mod:`jaxbasics.neuron`
* finite differences ............. :mod:`jaxbasics.finite_diff`
* SimpleNet and backprop ......... :mod:`jaxbasics.simplenet`
* functional training ............ :mod:`jaxbasics.train_step`
* the GPT-2 configuration ........ :mod:`jaxbasics.config`
* GPT-2 model and generation ..... :mod:`jaxbasics.gpt`, :mod:`jaxbasics.attention`,
  :mod:`jaxbasics.generate`
* GPT-2 training, checkpoints .... :mod:`jaxbasics.gpt_train`, :mod:`jaxbasics.checkpoint`,
  :mod:`jaxbasics.data`
* Hugging Face GPT-2 loading ..... :mod:`jaxbasics.hf`
* sharding over devices/hosts .... :mod:`jaxbasics.sharding`
* PyTorch side by side ........... :mod:`jaxbasics.compare` (needs the ``compare`` extra)
* benchmarks ..................... :mod:`jaxbasics.bench`
"""

from jaxbasics.requirements import check_installed

check_installed()

from jaxbasics import finite_diff, losses, neuron, simplenet, tensors, train_step
from jaxbasics.config import (
    GPT_CONFIG_124M,
    GPT_CONFIG_355M,
    GPT_CONFIG_774M,
    GPT_CONFIG_1558M,
    PRESETS,
    GPTConfig,
    parameter_count,
)
from jaxbasics.generate import generate
from jaxbasics.gpt import GPT, count_params, init_cache
from jaxbasics.hf import load_gpt2
from jaxbasics.losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
)
from jaxbasics.simplenet import SimpleNet
from jaxbasics.train_step import make_scan_train, make_train_step, split_params, sum_gradients

__version__ = "0.1.0"

__all__ = [
    "binary_cross_entropy", "binary_cross_entropy_with_logits", "count_params", "cross_entropy",
    "finite_diff", "generate", "GPT", "GPT_CONFIG_124M", "GPT_CONFIG_1558M", "GPT_CONFIG_355M",
    "GPT_CONFIG_774M", "GPTConfig", "init_cache", "load_gpt2", "losses", "make_scan_train",
    "make_train_step", "neuron", "parameter_count", "PRESETS", "simplenet", "SimpleNet",
    "split_params", "sum_gradients", "tensors", "train_step",
]
