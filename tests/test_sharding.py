"""Sharded GPT-2 training on 8 simulated CPU devices equals the single-device run."""

import json
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from flax import nnx
from helpers import run_python, simulated_devices
from jax.sharding import PartitionSpec as P

from jaxbasics.gpt import sharding
from jaxbasics.gpt.config import GPTConfig
from jaxbasics.gpt.model import GPT, ParamInfo, parameter_table

SPECS = ("data=8", "data=2,fsdp=2,tensor=2")  # as in sharding_probe.py
# the probe is one subprocess for the module: its tests stay on one pytest-xdist worker
pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("sharding")]


@pytest.fixture(scope="module")
def probe():
    env = simulated_devices(8)
    done = subprocess.run([sys.executable, str(Path(__file__).with_name("sharding_probe.py"))],
                          capture_output=True, text=True, env=env, check=False, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("PROBE"))
    return json.loads(line[len("PROBE"):])


def test_probe_saw_eight_devices(probe):
    assert probe["device_count"] == 8


@pytest.mark.parametrize("spec", SPECS)
def test_sharded_training_matches_one_device(probe, spec):
    r = probe[spec]
    assert r["n_devices"] == 8
    assert r["param_diff"] < 2e-6, r  # float32 reduction-order differences only
    assert r["loss_diff"] < 2e-5, r


def test_sharded_training_with_several_steps_per_call_matches_one_device(probe):
    r = probe["steps_per_call"]
    assert r["steps"] == [1, 2, 3, 4]
    assert r["param_diff"] < 2e-6, r


def test_data_parallel_replicates_parameters(probe):
    r = probe["data=8"]
    assert r["fc_spec"] == [None, None, None] and r["fc_shard_shape"] == [2, 64, 256]


def test_fsdp_shards_parameters_and_adam_moments_and_tensor_splits_mlp_and_vocab(probe):
    r = probe["data=2,fsdp=2,tensor=2"]
    assert r["fc_spec"] == [None, "fsdp", "tensor"]
    assert r["fc_shard_shape"] == [2, 32, 128]  # 64 / 2 of embed, 256 / 2 of mlp per device
    assert r["adam_mu_shard_shape"] == [2, 32, 128]  # the moments follow their parameter
    assert r["emb_spec"] == ["tensor", "fsdp"]


def test_batch_rows_are_split_over_data_and_fsdp(probe):
    assert probe["batch_shards"] == [[0, 3], [6, 9], [12, 15], [18, 21], [24, 27], [30, 33],
                                     [36, 39], [42, 45]]
    assert probe["rows_asked"] == [[0, 8], [8, 16]]  # each block of rows read once


def test_bad_meshes_fail_clearly(probe):
    e = probe["errors"]
    assert e["mesh_not_dividing"] == "mesh {'data': 3} needs 3 devices, which must divide the 8 available"
    assert "needs 16 devices" in e["mesh_too_big"]
    assert "AXIS one of data, fsdp, tensor" in e["bad_axis"]
    assert e["batch_not_dividing"].startswith("batch_size 12 must be divisible by data × fsdp = 8")


@pytest.mark.parametrize("spec, expected", [("data=8", {"data": 8}),
                                            ("data=2, fsdp=4", {"data": 2, "fsdp": 4}),
                                            (" data = 2 ,fsdp= 4", {"data": 2, "fsdp": 4})])
def test_parse_mesh(spec, expected):
    assert sharding.parse_mesh(spec) == expected


@pytest.mark.parametrize("spec, fragment", [("", "mesh must look like"),
                                            ("data=0", "N >= 1"), ("data=2,data=2", "twice"),
                                            ("data", "AXIS=N")])
def test_parse_mesh_rejects(spec, fragment):
    with pytest.raises(ValueError, match=fragment):
        sharding.parse_mesh(spec)


@pytest.mark.parametrize("call, error, fragment", [
    (lambda: sharding.make_mesh({"dp": 1}), ValueError, "mesh axis 'dp' is not one of data, fsdp, tensor"),
    (lambda: sharding.make_mesh({"data": 0}), ValueError,
     "the size of mesh axis 'data' must be a positive integer, got 0"),
    (lambda: sharding.make_mesh(8), TypeError, "axes must be a dict such as {'data': 2, 'fsdp': 4} or a "
                                               "string such as 'data=2,fsdp=4', got int 8"),
    (lambda: sharding.check_batch_divides(0, sharding.make_mesh("data=1")), ValueError,
     "batch_size must be a positive integer, got 0"),
    (lambda: sharding.batch_sharding(sharding.make_mesh("data=1"), leading=3), ValueError,
     "leading must be 0, 1 or 2 axes before the batch rows, got 3"),
    (lambda: sharding.global_batch(lambda rows: np.zeros((4, 2)), sharding.make_mesh("data=1")),
     ValueError, "global_batch of a rows_of function needs the global shape"),
])
def test_mesh_helpers_name_bad_arguments(call, error, fragment):
    # an unknown axis name was dropped silently: the mesh came out all ones
    with pytest.raises(error) as info:
        call()
    assert fragment in str(info.value)


def _abstract_gpt(**changes):
    cfg = GPTConfig(vocab_size=64, context_length=16, emb_dim=32, n_heads=4, n_layers=2,
                    qkv_bias=True).replace(**changes)
    return nnx.eval_shape(lambda: GPT(cfg, rngs=nnx.Rngs(0)))


def test_every_gpt_parameter_declares_its_logical_axes_and_the_specs_follow_them():
    table = parameter_table(_abstract_gpt())
    axes = {jax.tree_util.keystr(p): info.axes for p, info in
            jax.tree_util.tree_flatten_with_path(table)[0]}
    assert axes["['blocks']['mlp']['fc']['kernel']"] == ("layers", "embed", "mlp")
    assert axes["['blocks']['attn']['qkv']['bias']"] == ("layers", "qkv")
    assert axes["['blocks']['ln1']['scale']"] == ("layers", "residual")
    assert axes["['tok_emb']['embedding']"] == ("vocab", "embed")
    assert axes["['ln_f']['bias']"] == ("residual",) and len(axes) == 17
    mesh = sharding.make_mesh("fsdp=1")  # one device: nothing split, every name still checked
    specs = sharding.param_specs(table, mesh)
    assert specs["blocks"]["mlp"]["fc"]["kernel"] == P(None, None, None)
    # split over fsdp=2 (mesh axes larger than one are what _mesh_axis keeps): a fake mesh shape
    fake = type("FakeMesh", (), {"shape": {"data": 1, "fsdp": 2, "tensor": 2}})()
    specs = sharding.param_specs(table, fake)
    assert specs["blocks"]["mlp"]["fc"]["kernel"] == P(None, "fsdp", "tensor")
    assert specs["blocks"]["ln1"]["scale"] == P(None, None)
    assert specs["tok_emb"]["embedding"] == P("tensor", "fsdp")
    assert specs["pos_emb"]["embedding"] == P(None, "fsdp")
    odd = sharding.param_specs(parameter_table(_abstract_gpt(vocab_size=65)), fake)
    assert odd["tok_emb"]["embedding"] == P(None, "fsdp")  # 65 rows do not split in two


def test_a_parameter_created_without_declared_axes_is_named_not_replicated_silently():
    model = _abstract_gpt()
    model.head = nnx.Linear(32, 64, use_bias=False, rngs=nnx.Rngs(0))  # a layer added plainly
    with pytest.raises(ValueError, match=r"parameter head.kernel \(shape \(32, 64\)\) must be "
                       r"created through jaxbasics.gpt.model.declared"):
        parameter_table(model)
    table = parameter_table(_abstract_gpt())
    table["ln_f"]["scale"] = ParamInfo(("width",), (32,), "ln_f.weight")
    with pytest.raises(ValueError, match=r"parameter \['ln_f'\]\['scale'\] has logical axis "
                       r"'width', which RULES does not map"):
        sharding.param_specs(table, sharding.make_mesh("data=1"))


def test_distributed_start_needs_all_variables(monkeypatch):
    monkeypatch.delenv("JAX_COORDINATOR_ADDRESS", raising=False)
    assert sharding.initialize_distributed() is False
    monkeypatch.setenv("JAX_COORDINATOR_ADDRESS", "127.0.0.1:1234")
    monkeypatch.delenv("JAX_NUM_PROCESSES", raising=False)
    with pytest.raises(ValueError, match="JAX_NUM_PROCESSES and JAX_PROCESS_ID must be integers"):
        sharding.initialize_distributed()


def test_scaling_benchmark_on_simulated_devices():
    code = ("import json\nfrom jaxbasics.bench.scaling import run_scaling\n"
            "print('PROBE' + json.dumps(run_scaling('smoke')))")
    env = simulated_devices(2)
    done = run_python(code, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    r = json.loads(next(x for x in done.stdout.splitlines() if x.startswith("PROBE"))[5:])
    assert list(r["runs"]) == ["1", "2"] and r["simulated_devices"] is True
    for run in r["runs"].values():
        assert run["tokens_per_s_per_device"] * run["devices"] == pytest.approx(run["tokens_per_s"])
    assert r["runs"]["1"]["efficiency"] == 1.0


def test_a_mesh_that_leaves_a_process_without_a_device_is_refused():
    """On two processes with two devices each, a mesh of the first two devices would leave
    process 1 idle while it believes it trains."""
    from types import SimpleNamespace

    devices = [SimpleNamespace(id=i, process_index=i // 2) for i in range(4)]
    with pytest.raises(ValueError, match=r"^mesh \{'data': 2\} takes 2 of the 4 devices, which "
                       r"leaves process 1 of 2 without a device; in a run of several processes "
                       r"the mesh must use devices of every process \(all 4 devices: a mesh "
                       r"whose sizes multiply to 4\)$"):
        sharding.check_every_process_in(devices[:2], {"data": 2}, 4, 2)
    sharding.check_every_process_in(devices[1:3], {"data": 2}, 4, 2)  # one of each: fine
    sharding.check_every_process_in(devices[:2], {"data": 2}, 2, 1)  # one process: fine


def test_global_batch_reads_only_the_rows_each_device_holds():
    """A rows_of function is asked once per distinct block of rows, never for the whole batch
    on a mesh that splits it; the array holds the batch."""
    mesh = sharding.make_mesh("data=1")
    asked = []

    def rows_of(rows):
        asked.append(rows)
        return np.arange(12).reshape(4, 3)[rows.start:rows.stop]

    batch = sharding.global_batch(rows_of, mesh, shape=(4, 3))
    np.testing.assert_array_equal(np.asarray(batch), np.arange(12).reshape(4, 3))
    assert asked == [range(0, 4)]
    stacked = sharding.global_batch(np.arange(24).reshape(2, 4, 3), mesh, leading=1)
    np.testing.assert_array_equal(np.asarray(stacked), np.arange(24).reshape(2, 4, 3))
