"""jaxbasics: the "basic LLM concepts" chapter done the JAX way.

Sections and where they live:

* tensors ........................ :mod:`jaxbasics.tensors`
* losses (BCE, cross-entropy) .... :mod:`jaxbasics.losses`
* autodiff on one neuron ......... :mod:`jaxbasics.neuron`
* finite differences ............. :mod:`jaxbasics.finite_diff`
* SimpleNet and backprop ......... :mod:`jaxbasics.simplenet`
* functional training ............ :mod:`jaxbasics.train_step`
* the GPT-2 configuration ........ :mod:`jaxbasics.config`
"""

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
from jaxbasics.losses import (
    binary_cross_entropy,
    binary_cross_entropy_with_logits,
    cross_entropy,
)
from jaxbasics.simplenet import SimpleNet
from jaxbasics.train_step import make_scan_train, make_train_step, split_params, sum_gradients

__version__ = "0.1.0"

__all__ = [
    "GPTConfig", "GPT_CONFIG_124M", "GPT_CONFIG_355M", "GPT_CONFIG_774M", "GPT_CONFIG_1558M",
    "PRESETS", "SimpleNet", "binary_cross_entropy", "binary_cross_entropy_with_logits",
    "cross_entropy", "finite_diff", "losses", "make_scan_train", "make_train_step", "neuron",
    "parameter_count", "simplenet", "split_params", "sum_gradients", "tensors", "train_step",
]
