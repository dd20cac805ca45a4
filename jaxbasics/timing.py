"""Wall-clock timing done right for asynchronous frameworks (used by ``compare`` and
``benchmarks``): warm-up first, wait for the device (``block_until_ready`` for JAX, a
``sync`` callback for PyTorch on GPU), report the median of repeated samples.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import jax


@dataclass(frozen=True)
class Timing:
    """Per-call time of one function: the median and spread of ``repeats`` samples, each
    sample the mean over ``inner`` back-to-back calls."""

    median_us: float
    min_us: float
    max_us: float
    repeats: int
    inner: int

    def to_dict(self) -> dict[str, Any]:
        """The fields as a plain dict (JSON-ready)."""
        return asdict(self)


def block(out: Any) -> Any:
    """Wait until every JAX array in ``out`` is computed (no-op for other leaves)."""
    return jax.block_until_ready(out)


def measure(fn: Callable[[], Any], *, sync: Callable[[Any], Any] = block, warmup: int = 3,
            repeats: int = 15, min_sample_s: float = 2e-3, max_inner: int = 10_000) -> Timing:
    """Time ``fn()``: ``warmup`` untimed calls, then ``repeats`` samples.

    ``inner`` (calls per sample) is chosen so one sample lasts at least ``min_sample_s``,
    which keeps timer resolution out of microsecond-scale results. ``sync(result)`` runs after
    each sample's last call so asynchronous work is counted.
    """
    if warmup < 1 or repeats < 1:
        raise ValueError(f"warmup and repeats must be >= 1, got warmup={warmup}, repeats={repeats}")
    for _ in range(warmup):
        sync(fn())
    inner = 1
    while inner < max_inner:
        start = time.perf_counter()
        for _ in range(inner):
            out = fn()
        sync(out)
        if time.perf_counter() - start >= min_sample_s:
            break
        inner *= 2
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(inner):
            out = fn()
        sync(out)
        samples.append((time.perf_counter() - start) / inner * 1e6)
    return Timing(statistics.median(samples), min(samples), max(samples), repeats, inner)


def time_once(fn: Callable[[], Any], *, sync: Callable[[Any], Any] = block) -> tuple[Any, float]:
    """``(result, seconds)`` of one synchronised call: for compile times."""
    start = time.perf_counter()
    out = sync(fn())
    return out, time.perf_counter() - start
