"""What the benchmark ran on, and the peak it is measured against (MFU's denominator)."""

from __future__ import annotations

import datetime as dt
import os
import platform
import resource
import time

import jax
import jax.numpy as jnp

# Dense bf16 tensor-core peaks from the vendors' data sheets (FLOP/s).
PEAK_BF16_FLOPS = {"H100": 989e12, "H200": 989e12, "A100": 312e12, "L4": 121e12,
                   "TPU v4": 275e12, "TPU v5e": 197e12, "TPU v5p": 459e12}


def device_info() -> dict:
    """Platform, device kind and count, host, library versions and the date."""
    import flax
    import optax

    dev = jax.devices()[0]
    info = {"platform": dev.platform, "device_kind": dev.device_kind,
            "device_count": jax.device_count(), "host": platform.node(),
            "cpu": platform.processor() or platform.machine(),
            # host cores this process may run on (what `taskset` leaves it), and all of them
            "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity")
            else os.cpu_count(), "cpus_total": os.cpu_count(),
            "jax": jax.__version__, "flax": flax.__version__, "optax": optax.__version__,
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


def table_peak_flops(device_kind: str) -> float | None:
    """Data-sheet bf16 peak for a known accelerator, else None."""
    for name, peak in PEAK_BF16_FLOPS.items():
        if name.lower() in device_kind.lower():
            return peak
    return None


def measured_matmul_peak(n: int = 2048, dtype=jnp.float32, repeats: int = 5) -> float:
    """FLOP/s of a large jitted (n, n) @ (n, n) matmul, best of ``repeats``: the CPU's
    practical peak, measured in the same run as the model."""
    a = jax.random.normal(jax.random.key(0), (n, n), dtype)
    f = jax.jit(lambda x, y: x @ y)
    f(a, a).block_until_ready()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        f(a, a).block_until_ready()
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best


def minor_page_faults() -> int:
    """Minor page faults of this process (all its threads) so far: each is a first touch of
    memory the OS has just handed out, a few µs of CPU time on a fresh allocation."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def host_max_rss_bytes() -> int:
    """The largest resident set of this process so far, in bytes."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
