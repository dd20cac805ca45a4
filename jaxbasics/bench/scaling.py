"""Data-parallel scaling of the GPT-2 train step over 1, 2, 4, 8 devices (weak scaling:
a fixed per-device batch). Efficiency(n) = tokens/s per device on n devices ÷ on one.

On a CPU host split into simulated devices (``--xla_force_host_platform_device_count``) the
devices share the same cores, so efficiency falls as 1/n: the numbers then test the
machinery, not the hardware; the JSON says which with ``simulated_devices``.
"""

from __future__ import annotations

from typing import Any

import jax

from jaxbasics.bench.gpt2 import size_setting, time_jax_step
from jaxbasics.gpt import sharding
from jaxbasics.timing import default_device

PER_DEVICE_BATCH = {"smoke": 2, "cpu": 4, "full": 16}


def run_scaling(size: str, axis: str = "data") -> dict[str, Any]:
    """Tokens/s and tokens/s per device for each device count up to the number of devices of
    the default device's platform (``jaxbasics bench --device`` picks it)."""
    cfg, _, repeats = size_setting(size)
    per_device = PER_DEVICE_BATCH[size]
    platform = default_device().platform
    devices = jax.devices(platform)
    counts = [n for n in (1, 2, 4, 8) if n <= len(devices)]
    out: dict[str, Any] = {"axis": axis, "per_device_batch": per_device, "platform": platform,
                           "simulated_devices": platform == "cpu" and len(devices) > 1, "runs": {}}
    for n in counts:
        t = time_jax_step(cfg, per_device * n, mesh=sharding.make_mesh({axis: n}, devices),
                          repeats=repeats)["median_us"]
        tps = per_device * n * cfg.context_length / (t * 1e-6)
        out["runs"][str(n)] = {"devices": n, "step_ms": t / 1e3, "tokens_per_s": tps,
                               "tokens_per_s_per_device": tps / n}
    base = out["runs"]["1"]["tokens_per_s_per_device"]
    for r in out["runs"].values():
        r["efficiency"] = r["tokens_per_s_per_device"] / base
    return out

