"""Run by tests/test_sharding.py in a subprocess with 8 simulated CPU devices
(XLA_FLAGS=--xla_force_host_platform_device_count=8); prints one JSON object."""

import dataclasses
import json

import jax
import numpy as np

from jaxbasics.gpt import sharding
from jaxbasics.gpt.config import GPTConfig
from jaxbasics.gpt.data import AdditionTask
from jaxbasics.gpt.train import TrainOptions, train

CFG = GPTConfig(vocab_size=256, context_length=16, emb_dim=64, n_heads=4, n_layers=2,
                drop_rate=0.1)
TASK = AdditionTask(2)
OPTS = TrainOptions(steps=4, batch_size=16, warmup_steps=1, learning_rate=3e-3)


def host(tree):
    return [np.asarray(x) for x in jax.tree.leaves(tree)]


def max_diff(a, b):
    return max(float(np.max(np.abs(x - y))) for x, y in zip(host(a), host(b), strict=True))


out = {"device_count": jax.device_count()}
single = train(CFG, TASK, OPTS)
# pure data parallelism, and all three axes at once (fsdp and tensor splits together): each
# mesh is a program of its own, and this suite's time is compiling
for spec in ("data=8", "data=2,fsdp=2,tensor=2"):
    mesh = sharding.make_mesh(spec)
    run = train(CFG, TASK, OPTS, mesh=mesh)
    fc = run.params["blocks"]["mlp"]["fc"]["kernel"]
    emb = run.params["tok_emb"]["embedding"]
    mu = run.opt_state[1][0].mu["blocks"]["mlp"]["fc"]["kernel"]
    out[spec] = {
        "param_diff": max_diff(run.params, single.params),
        "loss_diff": max(abs(a["loss"] - b["loss"]) for a, b in zip(run.history, single.history,
                                                                     strict=True)),
        "fc_spec": [list(a) if isinstance(a, tuple) else a for a in fc.sharding.spec],
        "fc_shard_shape": list(fc.addressable_shards[0].data.shape),
        "emb_spec": [list(a) if isinstance(a, tuple) else a for a in emb.sharding.spec],
        "adam_mu_shard_shape": list(mu.addressable_shards[0].data.shape),
        "n_devices": len(fc.sharding.device_set),
    }
# several updates per call (one lax.scan), batches stacked (K, B, T) and split on B only
looped = train(CFG, TASK, dataclasses.replace(OPTS, steps_per_call=3),
               mesh=sharding.make_mesh("data=2,fsdp=2,tensor=2"))
out["steps_per_call"] = {"param_diff": max_diff(looped.params, single.params),
                         "steps": [r["step"] for r in looped.history]}
batch = sharding.global_batch(np.arange(48).reshape(16, 3), sharding.make_mesh("data=2,fsdp=4"))
out["batch_shards"] = sorted(np.asarray(s.data)[:, 0].tolist() for s in batch.addressable_shards)
asked = []  # rows read for a batch split over data only, each half held by four tensor devices
sharding.global_batch(lambda rows: asked.append([rows.start, rows.stop]) or np.zeros((8, 3)),
                      sharding.make_mesh("data=2,tensor=4"), shape=(16, 3))
out["rows_asked"] = sorted(asked)
errors = {}
for name, call in {
    "mesh_not_dividing": lambda: sharding.make_mesh("data=3"),
    "mesh_too_big": lambda: sharding.make_mesh("data=16"),
    "bad_axis": lambda: sharding.parse_mesh("model=2"),
    "batch_not_dividing": lambda: train(CFG, TASK, TrainOptions(steps=2, batch_size=12,
                                                                warmup_steps=0),
                                        mesh=sharding.make_mesh("data=8")),
}.items():
    try:
        call()
        errors[name] = None
    except ValueError as err:
        errors[name] = str(err)
out["errors"] = errors
print("PROBE" + json.dumps(out))
