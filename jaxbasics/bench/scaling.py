"""Data-parallel scaling of the GPT-2 train step over 1, 2, 4, 8 devices (weak scaling:
a fixed per-device batch). Efficiency(n) = tokens/s per device on n devices ÷ on one.

On a CPU host split into simulated devices (``--xla_force_host_platform_device_count``) the
devices share the same cores, so efficiency falls as 1/n: the numbers then test the
machinery, not the hardware; the JSON says which with ``simulated_devices``.
"""

from __future__ import annotations

from typing import Any

import jax
from flax import nnx

from jaxbasics import sharding
from jaxbasics.bench.gpt2 import SIZES, _batch
from jaxbasics.gpt import GPT
from jaxbasics.gpt_train import TrainOptions, make_gpt_train_step, make_optimizer, sharded_state
from jaxbasics.timing import measure
from jaxbasics.train_step import split_params

PER_DEVICE_BATCH = {"smoke": 2, "cpu": 4, "full": 16}


def run_scaling(size: str, axis: str = "data") -> dict[str, Any]:
    """Tokens/s and tokens/s per device for each device count up to ``jax.device_count()``."""
    cfg, _, repeats = SIZES[size]
    per_device = PER_DEVICE_BATCH[size]
    counts = [n for n in (1, 2, 4, 8) if n <= jax.device_count()]
    out: dict[str, Any] = {"axis": axis, "per_device_batch": per_device,
                           "simulated_devices": jax.devices()[0].platform == "cpu"
                           and jax.device_count() > 1, "runs": {}}
    for n in counts:
        t = _time_on(cfg, per_device * n, sharding.make_mesh({axis: n}), repeats)
        tps = per_device * n * cfg.context_length / (t * 1e-6)
        out["runs"][str(n)] = {"devices": n, "step_ms": t / 1e3, "tokens_per_s": tps,
                               "tokens_per_s_per_device": tps / n}
    base = out["runs"]["1"]["tokens_per_s_per_device"]
    for r in out["runs"].values():
        r["efficiency"] = r["tokens_per_s_per_device"] / base
    return out


def _time_on(cfg, batch: int, mesh, repeats: int) -> float:
    """Median µs of the sharded train step for ``batch`` sequences on ``mesh``."""
    graphdef, params = split_params(GPT(cfg, rngs=nnx.Rngs(0)))
    tx = make_optimizer(TrainOptions(steps=1000, warmup_steps=10))
    params, opt_state, shardings = sharded_state(params, tx.init(params), tx, mesh)
    step = make_gpt_train_step(graphdef, tx, shardings=shardings)
    x, y = (sharding.global_batch(a, mesh) for a in _batch(cfg, batch))
    key = jax.random.key(0)
    state = [params, opt_state]

    def run():
        state[0], state[1], metrics = step(state[0], state[1], x, y, key)
        return metrics["loss"]

    return measure(run, warmup=2, repeats=repeats, min_sample_s=0.0).median_us
