"""PyTorch parity: every row of `jaxbasics compare`, weight transfer, and the no-torch path."""

import json
import logging
import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch
from flax import nnx
from helpers import jax_seen_on, run_python
from hypothesis import given
from hypothesis import strategies as st

from jaxbasics.chapter import neuron, simplenet
from jaxbasics.cli import main
from jaxbasics.compare import torch_reference as ref
from jaxbasics.compare.parity import run_parity
from jaxbasics.compare.speed import (
    DYNAMO_CONTEXT_LOGGER,
    quiet_ignored_record_function,
    run_timings,
    time_simplenet,
)
from jaxbasics.compare.transfer import flax_to_torch, torch_named_as_flax, torch_to_flax
from jaxbasics.params import loss_of_params, split_params


@pytest.fixture(scope="module")
def parity():
    return run_parity(seed=0, steps=100)


def test_every_parity_row_is_within_its_tolerance(parity):
    rows, _ = parity
    assert len(rows) >= 20
    bad = [r for r in rows if not r.ok]
    assert not bad, bad


def test_parity_values_carry_the_chapter_numbers(parity):
    _, values = parity
    for side in ("torch", "jax"):
        assert round(values["neuron"][side]["grad_w"], 4) == -0.0898
        assert round(values["neuron"][side]["grad_b"], 4) == -0.0817
    assert values["simplenet"]["max_abs_param_diff_after_100_steps"] < 1e-5
    np.testing.assert_allclose(values["bce_edges"]["torch_loss"], values["bce_edges"]["jax_loss"],
                               rtol=1e-6)


def test_parity_compares_the_simplenet_example_tour_and_graph_show(parity):
    """"SimpleNet, seed 0" is one model and one batch in compare, tour and graph."""
    model, x, y = simplenet.example(0)
    expected = float(simplenet.bce_loss(model, x, y))
    _, values = parity
    assert values["simplenet"]["jax_loss"] == pytest.approx(expected, rel=1e-6)
    assert values["simplenet"]["torch_loss"] == pytest.approx(expected, rel=1e-6)


def test_documented_dtype_difference_is_real():
    assert ref.chapter_tensors()["tensor1d"].dtype == torch.int64
    assert jnp.array([1, 2, 3]).dtype == jnp.int32
    assert ref.chapter_tensors()["tensor1d"].tolist() == [1, 2, 3]


@given(w=st.floats(-3, 3, width=32), b=st.floats(-3, 3, width=32), x=st.floats(-3, 3, width=32),
       y=st.floats(0, 1, width=32))
def test_neuron_gradients_match_torch_for_random_values(w, b, x, y):
    t_loss, t_gw, t_gb = ref.neuron_gradients(w=w, b=b, x=x, y=y)
    j_loss, (j_gw, j_gb) = neuron.value_and_gradients(w=w, b=b, x=x, y=y)
    chex.assert_trees_all_close((float(j_loss), float(j_gw), float(j_gb)), (t_loss, t_gw, t_gb),
                                rtol=1e-5, atol=1e-6)


@given(seed=st.integers(0, 10_000), batch=st.sampled_from([1, 3, 16]))
def test_simplenet_forward_loss_and_gradients_match_torch(seed, batch):
    torch.manual_seed(seed)
    t_model = ref.TorchSimpleNet()
    j_model = simplenet.SimpleNet(rngs=nnx.Rngs(seed))
    torch_to_flax(t_model, j_model)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, 10)).astype(np.float32)
    y = rng.integers(0, 2, size=(batch, 1)).astype(np.float32)
    with torch.no_grad():
        np.testing.assert_allclose(j_model(x), t_model(torch.from_numpy(x)).numpy(), rtol=1e-6,
                                   atol=1e-7)
    t_loss, t_grads = ref.gradients(t_model, x, y)
    graphdef, params = split_params(j_model)
    j_loss, j_grads = jax.value_and_grad(loss_of_params(graphdef, simplenet.bce_loss))(params, x, y)
    np.testing.assert_allclose(float(j_loss), t_loss, rtol=1e-6)
    chex.assert_trees_all_close(j_grads, torch_named_as_flax(t_grads), rtol=1e-5, atol=1e-7)


def test_weight_transfer_round_trips_exactly():
    j_model = simplenet.SimpleNet(rngs=nnx.Rngs(5))
    t_model = ref.TorchSimpleNet()
    flax_to_torch(j_model, t_model)
    np.testing.assert_array_equal(t_model.fc1.weight.detach().numpy(), np.asarray(j_model.fc1.kernel[...]).T)
    back = simplenet.SimpleNet(rngs=nnx.Rngs(6))
    torch_to_flax(t_model, back)
    chex.assert_trees_all_equal(nnx.to_pure_dict(nnx.state(back, nnx.Param)),
                                nnx.to_pure_dict(nnx.state(j_model, nnx.Param)))


def test_weight_transfer_refuses_mismatched_sizes():
    with pytest.raises(ValueError, match=r"fc1.kernel: target expects shape \(10, 5\), source gives "
                                         r"\(10, 7\)"):
        torch_to_flax(ref.TorchSimpleNet(n_hidden=7), simplenet.SimpleNet(rngs=nnx.Rngs(0)))
    with pytest.raises(ValueError, match=r"fc1.weight: target expects shape \(7, 10\)"):
        flax_to_torch(simplenet.SimpleNet(rngs=nnx.Rngs(0)), ref.TorchSimpleNet(n_hidden=7))


def test_timing_reports_all_four_ways_as_positive_numbers():
    t = time_simplenet(4, compile_torch=False, scan_steps=5, repeats=1)
    for key in ("torch_eager_us", "jax_jit_us", "jax_scan_us"):
        assert t[key] > 0
    assert t["torch_compile_us"] is None


def test_only_dynamos_ignored_record_function_notice_is_silenced():
    """torch.compile of a step calling optimizer.step() warned "Profiler record function
    <class 'torch.autograd.profiler.record_function'> will be ignored" on stderr through this
    logger; that one message is dropped, any other still passes."""
    seen: list[str] = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())  # type: ignore[method-assign]
    logger = logging.getLogger(DYNAMO_CONTEXT_LOGGER)
    logger.addHandler(handler)
    try:
        quiet_ignored_record_function()
        quiet_ignored_record_function()  # installed once
        logger.warning("Profiler record function %s will be ignored",
                       torch.autograd.profiler.record_function)
        logger.warning("Graph break from %s", "something else")
    finally:
        logger.removeHandler(handler)
    assert seen == ["Graph break from something else"]
    assert len(logger.filters) == 1


def test_compare_cli_json_has_the_documented_keys(capsys):
    assert main(["compare", "--json", "--no-compile", "--repeats", "1", "--steps", "100"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["all_equal"] is True
    assert out["neuron"]["torch"]["grad_w"] == pytest.approx(out["neuron"]["jax"]["grad_w"],
                                                             rel=1e-6)
    assert out["simplenet"]["max_abs_param_diff_after_100_steps"] < 1e-5
    for case in ("neuron", "simplenet_b1", "simplenet_b1024"):
        for key in ("torch_eager_us", "jax_jit_us", "jax_scan_us"):
            assert out["timing"][case][key] > 0
    assert out["versions"]["torch"].startswith("2.")


@pytest.mark.parametrize("kwargs, fragment", [
    ({"steps": 0}, "steps must be a positive integer, got 0"),
    ({"batch": -1}, "batch must be a positive integer, got -1"),
    ({"seed": -1}, "seed must be an integer in [0, 2**32), got -1"),
])
def test_parity_refuses_bad_sizes_and_seeds_before_running(kwargs, fragment):
    with pytest.raises(ValueError) as info:
        run_parity(**kwargs)
    assert fragment in str(info.value)


@pytest.mark.parametrize("command", ["tour", "graph", "compare", "bench"])
def test_help_shows_every_options_default(command):
    import argparse

    from jaxbasics.cli import build_parser, tour

    parser = build_parser()
    if command == "tour":  # registered by jaxbasics.cli.tour.register
        parser = argparse.ArgumentParser(prog="jaxbasics")
        tour.register(parser.add_subparsers())
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    p = sub.choices[command]
    text = p.format_help()
    for action in p._actions:
        if action.dest == "help":
            continue
        assert action.help, f"{command} {action.option_strings} has no help"
        assert "(default" not in action.help.replace("%(default)", ""), action.help
        assert f"(default: {action.default})" in " ".join(text.split()), action.option_strings
    assert text.count("(default") == len(p._actions) - 1  # once each, none written by hand


def test_compare_cli_names_a_bad_seed(capsys):
    assert main(["compare", "--no-timing", "--seed", "-1"]) == 2
    assert "jaxbasics compare: seed must be an integer in [0, 2**32), got -1" in capsys.readouterr().err


def test_timings_refuse_batch_sizes_that_are_not_positive_integers():
    for batches, fragment in (((0,), "each of batches must be a positive integer, got 0"),
                              (8, "batches must be a tuple of batch sizes, got 8")):
        with pytest.raises(ValueError, match=re.escape(fragment)):
            run_timings(batches=batches)


def test_compare_skips_timings_where_pytorch_cannot_run_beside_jax(monkeypatch, capsys):
    """The values are still compared; the timings are not taken with PyTorch on another device."""
    jax_seen_on(monkeypatch, "gpu", "NVIDIA H100 80GB HBM3")
    assert main(["compare", "--json", "--no-compile", "--repeats", "1", "--steps", "10"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["all_equal"] is True and "timing" not in out
    assert out["timing_skipped"].startswith("JAX runs on gpu (NVIDIA H100 80GB HBM3) but PyTorch cannot")


def test_compare_without_torch_explains_how_to_install():
    code = ("import sys; sys.modules['torch'] = None\n"
            "from jaxbasics.cli import main\n"
            "sys.exit(main(['compare']))")
    done = run_python(code)
    assert done.returncode == 3
    assert "pip install torch==2.13.0" in done.stderr and ".[compare]" in done.stderr


def test_cpu_torch_tensors_are_taken_as_arrays_by_the_jax_side():
    """A PyTorch user's tensors go straight into the helpers and losses (through __array__);
    their dtype is checked like any array's."""
    from jaxbasics import losses
    from jaxbasics.chapter import tensors

    t = torch.tensor([[0.25, 0.5], [0.75, 1.0]])
    assert tensors.describe(t) == {"shape": (2, 2), "ndim": 2, "dtype": "float32", "size": 4,
                                   "device": str(jax.devices()[0])}
    np.testing.assert_allclose(losses.binary_cross_entropy(t, torch.ones(2, 2)),
                               torch.nn.functional.binary_cross_entropy(t, torch.ones(2, 2)).item(),
                               rtol=1e-6)
    with pytest.raises(TypeError, match="targets must have a floating dtype .*got int64"):
        losses.binary_cross_entropy(t, torch.ones(2, 2, dtype=torch.int64))


def test_core_package_does_not_import_torch():
    code = ("import sys, jaxbasics, jaxbasics.cli\n"
            "jaxbasics.cli.build_parser()\n"
            "assert 'torch' not in sys.modules, 'torch imported by the core'\n")
    done = run_python(code)
    assert done.returncode == 0, done.stderr


def test_grad_of_reads_backward_and_refuses_a_tensor_it_did_not_reach():
    w = torch.tensor([2.0], requires_grad=True)
    (3.0 * w).sum().backward()
    assert ref.grad_of(w).item() == 3.0
    with pytest.raises(RuntimeError, match=r"no \.grad on a tensor of shape \(2,\): backward\(\) "
                                           "did not reach it"):
        ref.grad_of(torch.zeros(2))
