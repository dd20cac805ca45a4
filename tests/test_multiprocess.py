"""Multi-process training for real: two JAX processes on localhost (a coordinator address, one
CPU device each, gloo collectives) against one process with two devices; resuming a
two-process run; processes that disagree, and a peer that never comes."""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest
from helpers import simulated_devices

WORKER = """
import json, sys
import jax, numpy as np
from jaxbasics.gpt import sharding
from jaxbasics.gpt.config import GPTConfig
from jaxbasics.gpt.data import AdditionTask
from jaxbasics.gpt.train import TrainOptions, train

sharding.initialize_distributed(float(sys.argv[3]))
run_dir, out = sys.argv[1:3]
cfg = GPTConfig(vocab_size=256, context_length=16, emb_dim=64, n_heads=4, n_layers=2,
                drop_rate=0.1)
opts = TrainOptions(steps=8, batch_size=8, warmup_steps=2, save_every=4)
mesh = sharding.make_mesh("data=2")
if run_dir == "-":  # all 8 steps at once
    r = train(cfg, AdditionTask(2), opts, mesh=mesh)
else:  # 4 steps, stop; then resume from the checkpoint on disk to step 8
    train(cfg, AdditionTask(2), opts, run_dir=run_dir, stop_after=4, mesh=mesh)
    r = train(cfg, AdditionTask(2), opts, run_dir=run_dir, resume=True, mesh=mesh)
if jax.process_index() == 0:  # replicated parameters: process 0's copy is every process's
    flat = jax.tree_util.tree_flatten_with_path(r.params)[0]
    np.savez(out, **{jax.tree_util.keystr(p): np.asarray(v.addressable_data(0)) for p, v in flat})
    with open(out + ".json", "w") as f:
        json.dump(r.history, f)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes(n: int, *args: str, timeout_s: float = 60.0):
    """``n`` worker processes of one run (a fresh coordinator port), started at once."""
    port = _free_port()
    env = {**os.environ, "JAX_COORDINATOR_ADDRESS": f"127.0.0.1:{port}",
           "JAX_NUM_PROCESSES": "2"}
    return [subprocess.Popen([sys.executable, "-c", WORKER, *args, str(timeout_s)],
                             env={**env, "JAX_PROCESS_ID": str(i)}, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True) for i in range(n)]


def _finish(procs, timeout=240):
    """``(stdout, stderr, exit status)`` of each process, once it has ended."""
    return [p.communicate(timeout=timeout) + (p.returncode,) for p in procs]


@pytest.mark.slow
def test_two_processes_train_as_one_process_with_two_devices_and_resume_exactly(tmp_path):
    """Two processes (data=2 over 1 device each) run 4 steps, stop, and resume from the
    checkpoint to step 8 (restoring failed: the arrays were moved between hosts): every loss
    and every parameter equal those of one process with two devices running the 8 steps at
    once."""
    single = subprocess.Popen(
        [sys.executable, "-c", WORKER, "-", str(tmp_path / "single.npz"), "60"],
        env=simulated_devices(2), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    pair = _processes(2, str(tmp_path / "run"), str(tmp_path / "two.npz"))
    for _out, err, rc in _finish([*pair, single]):
        assert rc == 0, err
    want, got = np.load(tmp_path / "single.npz"), np.load(tmp_path / "two.npz")
    assert sorted(want) == sorted(got) and len(want) > 10
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    history = json.loads((tmp_path / "two.npz.json").read_text())
    assert [r["step"] for r in history] == list(range(1, 9))
    assert [r["loss"] for r in history] == [
        r["loss"] for r in json.loads((tmp_path / "single.npz.json").read_text())]


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
