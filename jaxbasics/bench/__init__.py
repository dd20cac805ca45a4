"""Benchmarks (``jaxbasics bench`` / ``python -m benchmarks``): the chapter's problems timed
on CPU, GPU or TPU, PyTorch beside JAX in one process, results as JSON with device info.

Suites: ``neuron`` and ``simplenet`` (one SGD step four ways, see
:mod:`jaxbasics.compare.speed`), ``gpt2`` (forward + backward + AdamW for a GPT-2 config:
tokens/s, step and compile time, peak memory, MFU; :mod:`.gpt2`).
"""
