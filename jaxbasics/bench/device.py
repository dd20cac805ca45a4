"""What the benchmark ran on, and the peak it is measured against (MFU's denominator)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import resource
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

from jaxbasics import timing
from jaxbasics.timing import PEAK_BF16_FLOPS, table_peak_flops  # noqa: F401 (this module's names)


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The host CPU's model name (from Linux's ``cpuinfo`` file, e.g. "AMD EPYC"), or what
    :mod:`platform` knows where that file is missing or names no model."""
    try:
        with open(cpuinfo, encoding="utf-8", errors="replace") as f:
            for line in f:
                if line.lower().startswith(("model name", "cpu model", "hardware")):
                    name = line.split(":", 1)[1].strip()
                    if name:
                        return name
    except OSError:
        pass
    return platform.processor() or platform.machine()


def device_info() -> dict:
    """Platform, device kind and count (of :func:`jaxbasics.timing.default_device`'s
    platform), host, CPU model (:func:`cpu_model`), library versions and the date."""
    import flax
    import optax

    dev = timing.default_device()
    info = {"platform": dev.platform, "device_kind": dev.device_kind,
            "device_count": len(jax.devices(dev.platform)), "host": platform.node(),
            "cpu": platform.processor() or platform.machine(), "cpu_model": cpu_model(),
            # host cores this process may run on (what `taskset` leaves it), and all of them
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(), "cpus_total": os.cpu_count(),
            # what a float32 matmul computes in: JAX's default precision uses TF32 on NVIDIA
            # GPUs, and torch_device() sets PyTorch to match
            "float32_matmul": "tf32 (JAX default precision; PyTorch set to 'high')"
            if dev.platform == "gpu" else "float32",
            "jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
            "ml_dtypes": _version("ml_dtypes"),
            "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            # settings that change CPU timings a lot: a preloaded allocator, XLA flags, threads
            "env": {k: os.environ[k] for k in ("LD_PRELOAD", "XLA_FLAGS", "OMP_NUM_THREADS")
                    if k in os.environ}}
    try:
        import torch

        info["torch"] = torch.__version__
        info["torch_threads"] = torch.get_num_threads()
    except ImportError:
        info["torch"] = None
    return info


def _version(package: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(package)
    except PackageNotFoundError:
        return None


def peak_flops(device: jax.Device | None = None) -> tuple[float, str]:
    """MFU's denominator for ``device`` (default: :func:`jaxbasics.timing.default_device`) and where it comes
    from: the data-sheet dense bf16 peak of a known accelerator; on any other accelerator the
    best of a jitted 8192² bf16 matmul, and on a CPU of a 2048² fp32 one (XLA:CPU has no
    faster bf16 path), both measured in this run (and again in each timing round:
    :func:`peak_probe`)."""
    device = device or timing.default_device()
    peak = table_peak_flops(device.device_kind)
    if peak is not None:
        return peak, "data sheet, dense bf16"
    if device.platform == "cpu":
        return (measured_matmul_peak(2048, jnp.float32, device=device),
                "best fp32 matmul measured in this run")
    return (measured_matmul_peak(8192, jnp.bfloat16, device=device),
            f"best 8192² bf16 matmul measured in this run ({device.device_kind} not in the "
            f"data-sheet table)")


def matmul(n: int, dtype: Any, device: jax.Device | None = None
           ) -> tuple[Callable[[], jax.Array], float]:
    """``(run, flops)``: a compiled (and once run) (n, n) @ (n, n) matmul on ``device`` and the
    2n³ FLOPs of one call."""
    a = jax.device_put(jax.random.normal(jax.random.key(0), (n, n), dtype), device)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    return (lambda: f(a, a)), 2.0 * n**3


def peak_probe(device: jax.Device | None = None) -> tuple[Callable[[], jax.Array], float] | None:
    """The matmul to time beside the model in every timing round, where MFU's peak is measured
    (:func:`peak_flops`), so that the peak and the model see the same machine: (run, flops),
    or None for a data-sheet peak. On a CPU a 1024² fp32 matmul (as fast per FLOP as 2048²
    and an eighth of its time in each round), elsewhere an 8192² bf16 one."""
    device = device or timing.default_device()
    if table_peak_flops(device.device_kind) is not None:
        return None
    return matmul(1024, jnp.float32, device) if device.platform == "cpu" \
        else matmul(8192, jnp.bfloat16, device)


def measured_matmul_peak(n: int = 2048, dtype=jnp.float32, repeats: int = 5,
                         device: jax.Device | None = None) -> float:
    """FLOP/s of a jitted (n, n) @ (n, n) matmul on ``device``, best of ``repeats``: a
    practical peak, measured in the same run as the model."""
    run, flops = matmul(n, dtype, device)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        run().block_until_ready()
        best = min(best, time.perf_counter() - start)
    return flops / best


def minor_page_faults() -> int:
    """Minor page faults of this process (all its threads) so far: each is a first touch of
    memory the OS has just handed out, a few µs of CPU time on a fresh allocation."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def host_max_rss_bytes() -> int:
    """The largest resident set of this process so far, in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
