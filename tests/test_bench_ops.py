"""benchmarks/step_ops.py (jaxbasics.bench.ops): a training update's time op by op, each
moment of the profile divided among the ops running in it."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxbasics.bench.ops import PARTS, hlo_ops, part_of, profile_update, wall_shares

ROOT = Path(__file__).resolve().parents[1]


def test_wall_shares_divide_each_moment_among_the_ops_running():
    # a alone 0-5, a and b 5-10, b alone 10-15, nothing 15-20, c 20-24, nothing, a 30-32
    shares, idle = wall_shares([("a", 0, 10), ("b", 5, 10), ("c", 20, 4), ("a", 30, 2)])
    assert shares == {"a": 5 + 2.5 + 2, "b": 2.5 + 5, "c": 4} and idle == 5 + 6
    assert sum(shares.values()) + idle == 32  # the span
    three, _ = wall_shares([("x", 0, 3), ("y", 0, 3), ("z", 0, 3), ("x", 3, 1)])
    assert three == {"x": 2, "y": 1, "z": 1}  # an op that ends as another starts: no overlap
    # an event of no duration takes no time, inside another or alone, and leaves idle time idle
    assert wall_shares([("z", 5, 0), ("a", 0, 10), ("b", 20, 10), ("y", 15, 0)]) == (
        {"a": 10, "b": 10}, 10)
    with pytest.raises(ValueError, match="event 'a' has a negative duration -1"):
        wall_shares([("a", 0, -1)])


def test_hlo_ops_name_each_instruction_with_its_shape_and_jax_source():
    f = jax.jit(lambda a, b: jnp.tanh(a @ b))
    a, b = np.ones((4, 3), np.float32), np.ones((3, 5), np.float32)
    ops = hlo_ops(f.lower(a, b).compile().as_text())
    dots = [o for o in ops.values() if o["op_name"].endswith("dot_general")]
    assert dots and all(o["shape"].startswith("f32[4,5]") for o in dots), ops
    assert any(o["op_name"].endswith("tanh") for o in ops.values()), ops


def test_step_ops_script_profiles_train_s_update_op_by_op(tmp_path):
    """The script as docs/performance.md runs it (smoke size): every op's share of the time
    some op ran adds up to 1, the profile's span fits in the wall time around it, and the
    products of the forward and backward passes are among the ops."""
    out = tmp_path / "ops.json"
    done = subprocess.run([sys.executable, "benchmarks/step_ops.py", "--size", "smoke",
                           "--calls", "1", "--top", "5", "--json", str(out)], cwd=ROOT,
                          capture_output=True, text=True, check=False, timeout=300)
    assert done.returncode == 0, done.stderr
    r = json.loads(out.read_text())
    assert r["updates"] == 4 and r["config"]["updates_per_call"] == 4
    assert sum(row["share"] for row in r["ops"]) == pytest.approx(1.0)
    assert 0 < r["busy_ms_per_update"] + r["idle_ms_per_update"] <= r["wall_ms_per_update"]
    names = [row["op_name"] for row in r["ops"]]
    assert any("transpose(jvp())" in n and n.endswith("dot_general") for n in names)
    assert any("transpose(jvp())" not in n and n.endswith("dot_general") for n in names)
    assert all(row["ms"] >= 0 and row["events"] > 0 for row in r["ops"])
    assert len(done.stdout.strip().splitlines()) == 5 + 5 + 1  # header, 5 ops, the file
    assert sum(r["parts_ms"].values()) == pytest.approx(r["busy_ms_per_update"])
    assert all(r["parts_ms"][p] > 0 for p in ("attention", "projections", "head and loss"))
    bad = subprocess.run([sys.executable, "benchmarks/step_ops.py", "--calls", "0"], cwd=ROOT,
                         capture_output=True, text=True, check=False, timeout=60)
    assert bad.returncode == 2 and "--calls must be at least 1, got 0" in bad.stderr


def test_ops_are_parted_by_their_named_scope_or_where_they_ran():
    """Scanned layers run once a layer, unrolled ones carry the scope 'blocks'."""
    cfg = {"n_layers": 4}

    def row(op_name, events=4, opcode="fusion"):
        return {"op_name": op_name, "events": events, "opcode": opcode}

    for r, part in (
            (row("jit(fn)/while/body/closed_call/jvp()/while/body/closed_call/attention/div"),
             "attention"),
            (row("x/transpose(jvp())/checkpoint/attention/nqk,nkd->nqd/transpose", opcode="dot"),
             "attention"),
            (row("jit(fn)/while/body/closed_call/transpose(jvp(head))/dot_general", 1),
             "head and loss"),
            (row("jit(fn)/while/body/closed_call/jvp(loss)/exp", 1), "head and loss"),
            (row("x/transpose(jvp())/while/body/closed_call/checkpoint/dot_general"),
             "projections"),
            (row("x/checkpoint/transpose", opcode="dot"), "projections"),
            (row("x/checkpoint/rematted_computation/tanh"), "blocks' other work"),
            (row("x/heads/overhead/add"), "blocks' other work"),  # not the scope 'head'
            # unrolled layers: once an update each, known by the scope 'blocks'
            (row("jit(fn)/while/body/closed_call/jvp(blocks)/dot_general", 1), "projections"),
            (row("jit(fn)/while/body/closed_call/transpose(jvp(blocks))/mul", 1),
             "blocks' other work"),
            (row("jit(fn)/while/body/closed_call/blocks/attention/exp", 1), "attention"),
            (row("jit(fn)/while/body/closed_call/div", 1), "everything else")):
        assert part_of(r, cfg) == part, r
    assert set(PARTS) == {"attention", "projections", "head and loss", "blocks' other work",
                          "everything else"}


def test_profile_update_refuses_a_bad_size_or_call_count():
    with pytest.raises(ValueError, match="size must be one of smoke, cpu, got 'full'"):
        profile_update("full")
    for calls in (0, 1.5, True):
        with pytest.raises(ValueError, match=rf"calls must be a positive int, got {calls!r}"):
            profile_update("smoke", calls)
