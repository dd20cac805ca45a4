"""Multi-process training for real: two JAX processes on localhost (a coordinator address, two
CPU devices each, gloo collectives), as two hosts of two accelerators each, against one process
with four devices; resuming a two-process run; processes that disagree, and a peer that never
comes."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from helpers import simulated_devices

WORKER = """
import json, os, sys
import jax, numpy as np
from jax.experimental import multihost_utils
from jaxbasics.gpt import sharding
from jaxbasics.gpt.config import GPTConfig
from jaxbasics.gpt.data import AdditionTask
from jaxbasics.gpt.train import TrainOptions, train

sharding.initialize_distributed(float(sys.argv[3]))
run_dir, out, runs = sys.argv[1], sys.argv[2], sys.argv[4].split()
for i, run in enumerate(runs):  # "MESH:ACCUMULATE:WIDTH:STEPS", one after the other
    mesh_spec, accumulate, width, steps = run.split(":")
    steps = int(steps)
    cfg = GPTConfig(vocab_size=256, context_length=16, emb_dim=int(width), n_heads=4,
                    n_layers=2, drop_rate=0.1)
    opts = TrainOptions(steps=steps, batch_size=8, warmup_steps=2, save_every=4,
                        accumulate=int(accumulate), steps_per_call=2 if accumulate != "1" else 1)
    mesh = sharding.make_mesh(mesh_spec)
    if run_dir == "-" or i > 0:  # all steps at once
        r = train(cfg, AdditionTask(2), opts, mesh=mesh)
    else:  # the first run: 4 steps, stop; then resume from the checkpoint on disk to the end
        train(cfg, AdditionTask(2), opts, run_dir=run_dir, stop_after=4, mesh=mesh)
        r = train(cfg, AdditionTask(2), opts, run_dir=run_dir, resume=True, mesh=mesh)
    # every process gathers the whole of each parameter (sharded ones from all processes)
    whole = multihost_utils.process_allgather(r.params, tiled=True)
    if jax.process_index() == 0:
        flat = jax.tree_util.tree_flatten_with_path(whole)[0]
        np.savez(f"{out}{i}.npz", **{jax.tree_util.keystr(p): np.asarray(v) for p, v in flat})
        with open(f"{out}{i}.json", "w") as f:
            json.dump(r.history, f)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes(n: int, run_dir: str, out: str, runs: str, timeout_s: float = 60.0,
               devices: int = 1):
    """``n`` worker processes of one multi-process session (a fresh coordinator port), each
    seeing ``devices`` CPU devices, started at once, making the ``runs``
    ("MESH:ACCUMULATE:WIDTH:STEPS ...") one after the other; the first stops halfway and
    resumes from ``run_dir`` unless it is "-"."""
    port = _free_port()
    env = {**simulated_devices(devices), "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
           "JAX_NUM_PROCESSES": str(n)}
    args = [run_dir, out, str(timeout_s), runs]
    return [subprocess.Popen([sys.executable, "-c", WORKER, *args],
                             env={**env, "JAX_PROCESS_ID": str(i)}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for i in range(n)]


def _one_process(n_devices: int, out: str, runs: str):
    """The same runs in one process that sees ``n_devices`` CPU devices, without stopping."""
    return subprocess.Popen([sys.executable, "-c", WORKER, "-", out, "60", runs],
                            env=simulated_devices(n_devices), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def _finish(procs, timeout=240):
    """``(stdout, stderr, exit status)`` of each process, once it has ended."""
    return [p.communicate(timeout=timeout) + (p.returncode,) for p in procs]


def _compare(tmp_path, i: int) -> None:
    """Run i's parameters and losses of the processes (``many``) against one process's
    (``one``), to float32 rounding: the collectives may add in another order than one
    process's devices do."""
    want, got = np.load(tmp_path / f"one{i}.npz"), np.load(tmp_path / f"many{i}.npz")
    assert sorted(want) == sorted(got) and len(want) > 10
    losses = [[r["loss"] for r in json.loads((tmp_path / f"{name}{i}.json").read_text())]
              for name in ("one", "many")]
    assert len(losses[0]) == len(losses[1]) >= 2
    for name in want:
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=2e-6, err_msg=name)
    np.testing.assert_allclose(losses[1], losses[0], rtol=2e-6)


def _run_both(tmp_path, n: int, runs: str, run_dir: str = "-", devices: int = 1) -> None:
    single = _one_process(n * devices, str(tmp_path / "one"), runs)
    procs = _processes(n, run_dir, str(tmp_path / "many"), runs, devices=devices)
    for _out, err, rc in _finish([*procs, single]):
        assert rc == 0, err


@pytest.mark.slow
def test_every_mesh_over_two_processes_of_two_devices_trains_as_one_process_with_four(tmp_path):
    """Two processes of two devices each against one process with four, one run after the
    other in the same processes, every mesh kind spanning both processes:

    * data=4, 4 steps, stopped, resumed from the checkpoint to step 8 (restoring failed: the
      arrays were moved between hosts): the history of all 8 steps;
    * tensor=4: every device holds the whole batch (process 1's rows were dropped, as each
      process fed its own contiguous half);
    * fsdp=4: parameters sharded over both processes' devices; two micro-batches an update,
      two updates a call.

    (A mesh of two axes, data=2 across the processes and tensor=2 inside each, was its own
    launch of four processes; on this two-process launch it adds nothing that data=4 and
    tensor=4 do not, and tests/test_sharding.py trains every combination on one process.)

    Each equal to the one process to float32 rounding: gloo's collectives may add partial sums
    in another order than one process's devices do.
    """
    _run_both(tmp_path, 2, "data=4:1:64:8 tensor=4:1:32:2 fsdp=4:2:32:2",
              run_dir=str(tmp_path / "run"), devices=2)
    history = json.loads((tmp_path / "many0.json").read_text())
    assert [r["step"] for r in history] == list(range(1, 9))
    for i in range(3):
        _compare(tmp_path, i)


def test_a_peer_that_never_arrives_ends_the_wait_naming_the_coordinator(monkeypatch, capsys):
    """JAX waited 300 s, then aborted the process from C++ with a stack trace. Here JAX's
    connection is a wait that never ends, and the process's exit is recorded instead."""
    import threading

    import jax

    from jaxbasics.gpt import sharding

    exited = threading.Event()
    codes = []

    def exit_(code):
        codes.append(code)
        exited.set()

    monkeypatch.setattr(jax.distributed, "initialize", lambda **kw: exited.wait(30))
    monkeypatch.setattr(os, "_exit", exit_)
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:9")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("JAX_PROCESS_ID", "1")
    assert sharding.initialize_distributed(0.5)
    assert codes == [3]
    assert capsys.readouterr().err == (
        "jaxbasics: process 1 of 2: not every process reached the coordinator at 127.0.0.1:9 "
        "within 0.5 s; start all 2 with the same JAX_COORDINATOR_ADDRESS and "
        "JAX_NUM_PROCESSES and each its own JAX_PROCESS_ID, or wait longer (--peer-timeout)\n")


def test_processes_that_disagree_are_refused_naming_what_differs(monkeypatch):
    """Two processes given different --out directories waited forever at the first
    checkpoint (each at a barrier the other never reached)."""
    import jax
    from jax.experimental import multihost_utils

    from jaxbasics.gpt import sharding

    seen = {}

    def allgather(mine):  # process 1 has another output directory, the rest alike
        seen["mine"] = np.asarray(mine)
        other = np.asarray(mine).copy()
        other[0] += 1
        return np.stack([np.asarray(mine), other])

    monkeypatch.setattr(jax, "process_count", lambda: 2)
    monkeypatch.setattr(multihost_utils, "process_allgather", allgather)
    fields = {"the output directory": "/runs/a", "the options": {"steps": 8}}
    with pytest.raises(ValueError, match=r"^the 2 processes of this run disagree on the output "
                       r"directory \(process 0: the output directory: '/runs/a' here\); start "
                       r"every process with the same options, output directory and data$"):
        sharding.check_processes_agree(fields)
    assert seen["mine"].dtype == np.int32 and seen["mine"].shape == (2,)
    monkeypatch.setattr(multihost_utils, "process_allgather",
                        lambda mine: np.stack([mine, mine]))
    sharding.check_processes_agree(fields)  # agreeing processes pass


@pytest.mark.parametrize("env, fragment", [
    ({"JAX_NUM_PROCESSES": "2"}, "JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers"),
    ({"JAX_NUM_PROCESSES": "2", "JAX_PROCESS_ID": "2"},
     r"JAX_PROCESS_ID must be in \[0, JAX_NUM_PROCESSES=2\), got 2"),
])
def test_bad_multi_process_settings_are_named_before_connecting(monkeypatch, env, fragment):
    from jaxbasics.gpt import sharding

    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1")
    monkeypatch.delenv("JAX_PROCESS_ID", raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    with pytest.raises(ValueError, match=fragment):
        sharding.initialize_distributed()
    monkeypatch.setenv("JAX_PROCESS_ID", "0")
    monkeypatch.setenv("JAX_NUM_PROCESSES", "2")
    with pytest.raises(ValueError, match="peer_timeout_s must be a number of seconds > 0, got 0"):
        sharding.initialize_distributed(0)
