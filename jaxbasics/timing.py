"""Wall-clock timing done right for asynchronous frameworks (used by ``compare`` and
``benchmarks``): warm-up first, wait for the device (``block_until_ready`` for JAX, a
``sync`` callback for PyTorch on GPU), report the median of repeated samples.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Mapping
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
    return measure_interleaved({"fn": fn}, syncs={"fn": sync}, warmup=warmup, repeats=repeats,
                               min_sample_s=min_sample_s, max_inner=max_inner)["fn"]


def measure_interleaved(fns: Mapping[str, Callable[[], Any]], *,
                        syncs: Mapping[str, Callable[[Any], Any]] | None = None, warmup: int = 3,
                        repeats: int = 15, min_sample_s: float = 2e-3,
                        max_inner: int = 10_000, settle_s: float = 0.02
                        ) -> dict[str, Timing]:
    """Time several functions against each other: :func:`measure` for each, but with their
    samples taken in turn (sample 1 of every function, then sample 2, ...).

    On a shared or throttling machine the speed changes over seconds; timing one function
    after another lets that drift land on one of them and bias the ratio, while taking turns
    spreads it evenly, so ratios within one run stay fair. ``syncs[name]`` (default
    :func:`block`) waits for ``fns[name]``'s result.

    Taking turns has its own bias, which ``settle_s`` removes: a framework's worker threads
    keep spinning for milliseconds after its call returns (PyTorch's OpenMP threads, XLA's
    pool), and the next function's first milliseconds then run on fewer free cores
    (docs/performance.md). So before each timed sample the function runs untimed for
    ``settle_s`` seconds (at least once): every sample then sees its own framework in the
    steady state of a loop, as in training.
    """
    if warmup < 1 or repeats < 1:
        raise ValueError(f"warmup and repeats must be >= 1, got warmup={warmup}, repeats={repeats}")
    if not fns:
        raise ValueError("fns must name at least one function to time")
    if not settle_s >= 0:
        raise ValueError(f"settle_s must be >= 0 seconds, got {settle_s}")
    syncs = {name: (syncs or {}).get(name, block) for name in fns}

    def sample(name: str, inner: int) -> float:
        fn, sync = fns[name], syncs[name]
        start = time.perf_counter()
        for _ in range(inner):
            out = fn()
        sync(out)
        return time.perf_counter() - start

    inners = {}
    for name in fns:
        for _ in range(warmup):
            sample(name, 1)
        inner = 1
        while inner < max_inner and sample(name, inner) < min_sample_s:
            inner *= 2
        inners[name] = inner

    def settle(name: str) -> None:  # untimed calls for >= settle_s, at least one
        until = time.perf_counter() + settle_s
        while True:
            syncs[name](fns[name]())
            if time.perf_counter() >= until:
                return

    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, inner in inners.items():
            if settle_s > 0 and len(fns) > 1:
                settle(name)
            samples[name].append(sample(name, inner) / inner * 1e6)
    return {name: Timing(statistics.median(v), min(v), max(v), repeats, inners[name])
            for name, v in samples.items()}


def time_once(fn: Callable[[], Any], *, sync: Callable[[Any], Any] = block) -> tuple[Any, float]:
    """``(result, seconds)`` of one synchronised call: for compile times."""
    start = time.perf_counter()
    out = sync(fn())
    return out, time.perf_counter() - start


def default_device() -> jax.Device:
    """The device JAX puts a new array on: ``jax_default_device`` where it is set (``jaxbasics
    bench --device``; a device or a platform name), else the first device of JAX's default
    backend. Allocates nothing, so it may be asked while a function is traced."""
    chosen = getattr(jax.config, "jax_default_device", None)
    if chosen is None:
        return jax.devices()[0]
    return jax.devices(chosen)[0] if isinstance(chosen, str) else chosen


# Dense (no sparsity) bf16 tensor-core peaks per JAX device, from the vendors' data sheets, in
# FLOP/s, keyed by a part of ``jax.Device.device_kind`` as JAX reports it. Order matters: the
# first key found in the kind wins, so a key that another contains comes after it ("TPU v5 lite"
# is a v5e, "TPU v5" a v5p; "NVIDIA H100 PCIe" is slower than the SXM part, "NVIDIA H100 80GB
# HBM3"). A kind with no entry gets a peak measured in the run instead
# (:func:`jaxbasics.bench.device.peak_flops`).
PEAK_BF16_FLOPS: tuple[tuple[str, float], ...] = (
    ("H100 PCIe", 756e12), ("H100 NVL", 835e12), ("H100", 989e12), ("H200", 989e12),
    ("GH200", 989e12), ("A100", 312e12), ("L40S", 362e12), ("L4", 121e12),
    ("TPU v4 lite", 138e12), ("TPU v4", 275e12),
    ("TPU v5 lite", 197e12), ("TPU v5e", 197e12), ("TPU v5p", 459e12), ("TPU v5", 459e12),
    ("TPU v6 lite", 918e12), ("TPU v6e", 918e12),
)


def table_peak_flops(device_kind: str) -> float | None:
    """Data-sheet dense bf16 peak (FLOP/s) of a known accelerator from its ``device_kind``
    (case ignored), else None."""
    kind = device_kind.lower()
    for name, peak in PEAK_BF16_FLOPS:
        if name.lower() in kind:
            return peak
    return None
