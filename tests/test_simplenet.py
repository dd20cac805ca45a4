"""SimpleNet backprop: jax.grad against the hand-written chain rule, SGD steps, scan, accumulation."""

import re

import chex
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx
from hypothesis import given
from hypothesis import strategies as st

from jaxbasics.chapter import simplenet
from jaxbasics.chapter.finite_diff import numerical_grad
from jaxbasics.chapter.train_step import make_scan_train, make_train_step, sum_gradients
from jaxbasics.params import loss_of_params, split_params

LR = 0.01
_STEPS: dict = {}


def _setup(seed: int, batch: int = 8):
    model = simplenet.SimpleNet(rngs=nnx.Rngs(seed))
    graphdef, params = split_params(model)
    x, y = simplenet.toy_batch(jax.random.key(seed + 1), batch)
    return model, graphdef, params, x, y


@pytest.mark.parametrize("seed", ["-1", str(2**32)])
def test_tour_refuses_a_seed_out_of_range_by_name(seed, capsys):
    import argparse

    from jaxbasics.cli import tour

    parser = argparse.ArgumentParser(prog="jaxbasics")
    tour.register(parser.add_subparsers())
    args = parser.parse_args(["tour", "--seed", seed])
    assert args.func(args) == 2
    assert capsys.readouterr().err == (
        f"jaxbasics tour: --seed must be an integer in [0, 2**32), got {seed}\n")


def test_the_shared_example_is_one_model_and_batch_per_seed():
    """tour, compare and graph show simplenet.example(seed): one loss for "seed 0"."""
    model, x, y = simplenet.example(0)
    again, x2, y2 = simplenet.example(0)
    chex.assert_trees_all_equal(split_params(model)[1], split_params(again)[1])
    chex.assert_trees_all_equal((x, y), (x2, y2))
    assert x.shape == (simplenet.EXAMPLE_BATCH_SIZE, 10) and y.shape == (8, 1)
    np.testing.assert_array_equal(y, (x.sum(1, keepdims=True) > 0).astype(np.float32))
    xs, ys = simplenet.example_batches(0, 3)
    assert xs.shape == (3, 8, 10) and ys.shape == (3, 8, 1)
    chex.assert_trees_all_equal((xs[0], ys[0]), (x, y))
    assert not np.array_equal(xs[1], x)
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*32\), got -1"):
        simplenet.example(-1)


def test_architecture_matches_the_chapter():
    model = simplenet.SimpleNet(rngs=nnx.Rngs(0))
    shapes = {name: v.shape for name, v in simplenet.named_parameters(model)}
    assert shapes == {"fc1.kernel": (10, 5), "fc1.bias": (5,), "fc2.kernel": (5, 1),
                      "fc2.bias": (1,)}
    x = jax.random.normal(jax.random.key(1), (4, 10))
    p = nnx.to_pure_dict(nnx.state(model, nnx.Param))
    expected = jax.nn.sigmoid(
        jax.nn.relu(x @ p["fc1"]["kernel"] + p["fc1"]["bias"]) @ p["fc2"]["kernel"]
        + p["fc2"]["bias"])
    chex.assert_trees_all_close(model(x), expected, rtol=1e-6)


def test_init_follows_torch_uniform_bounds():
    model = simplenet.SimpleNet(n_in=400, n_hidden=300, rngs=nnx.Rngs(3))
    bound = 1 / np.sqrt(400)
    for leaf in (model.fc1.kernel[...], model.fc1.bias[...]):
        assert float(jnp.abs(leaf).max()) <= bound
    # U(-k, k) has standard deviation k / sqrt(3); 120,000 draws pin it to ~0.3 %
    np.testing.assert_allclose(float(model.fc1.kernel[...].std()), bound / np.sqrt(3), rtol=0.02)
    assert float(jnp.abs(model.fc2.kernel[...]).max()) <= 1 / np.sqrt(300)


@given(seed=st.integers(0, 10_000), batch=st.sampled_from([1, 33]))  # few shapes: few compiles
def test_jax_grad_equals_hand_written_backward_pass(seed, batch):
    _, graphdef, params, x, y = _setup(seed, batch)
    grads = jax.grad(loss_of_params(graphdef, simplenet.bce_loss))(params, x, y)
    manual = simplenet.manual_gradients(params, x, y)
    chex.assert_trees_all_close(grads, manual, rtol=1e-5, atol=1e-7)


def test_jax_grad_agrees_with_finite_differences():
    _, graphdef, params, x, y = _setup(7, 6)
    loss_fn = loss_of_params(graphdef, simplenet.bce_loss)
    grads = jax.grad(loss_fn)(params, x, y)
    numeric = numerical_grad(
        lambda p, x_, y_: loss_fn(p, x_, y_), params, x, y)
    chex.assert_trees_all_close(grads, numeric, rtol=1e-4, atol=1e-6)


@given(seed=st.integers(0, 10_000))
def test_one_sgd_step_is_params_minus_lr_times_grad(seed):
    _, graphdef, params, x, y = _setup(seed)
    grads = jax.grad(loss_of_params(graphdef, simplenet.bce_loss))(params, x, y)
    expected = jax.tree.map(lambda p, g: p - LR * g, params, grads)
    tx = optax.sgd(LR)
    if graphdef not in _STEPS:  # one compiled step for every example: the structure is the same
        _STEPS[graphdef] = make_train_step(graphdef, simplenet.bce_loss, tx, donate=False)
    new_params, _, loss = _STEPS[graphdef](params, tx.init(params), x, y)
    chex.assert_trees_all_close(new_params, expected, rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(loss, loss_of_params(graphdef, simplenet.bce_loss)(params, x, y),
                               rtol=1e-6)


def test_donated_step_matches_undonated_step():
    _, graphdef, params, x, y = _setup(4)
    tx = optax.sgd(LR)
    expected, _, _ = make_train_step(graphdef, simplenet.bce_loss, tx, donate=False)(
        params, tx.init(params), x, y)
    copy = jax.tree.map(jnp.array, params)
    got, _, _ = make_train_step(graphdef, simplenet.bce_loss, tx)(copy, tx.init(copy), x, y)
    chex.assert_trees_all_close(got, expected, rtol=0, atol=0)


@pytest.mark.parametrize("unroll", [1, 4])  # 25 steps: unroll 4 leaves a remainder of 1
def test_scan_of_many_steps_equals_python_loop(unroll):
    _, graphdef, params, _, _ = _setup(11)
    steps = 25
    xs, ys = jax.vmap(lambda k: simplenet.toy_batch(k, 16))(
        jax.random.split(jax.random.key(5), steps))
    tx = optax.sgd(LR)
    step = make_train_step(graphdef, simplenet.bce_loss, tx, donate=False)
    p, s, losses = params, tx.init(params), []
    for i in range(steps):
        p, s, loss = step(p, s, xs[i], ys[i])
        losses.append(loss)
    scan = make_scan_train(graphdef, simplenet.bce_loss, tx, donate=False, unroll=unroll)
    p_scan, _, scan_losses = scan(params, tx.init(params), xs, ys)
    chex.assert_trees_all_close(p_scan, p, rtol=1e-5, atol=1e-7)
    chex.assert_trees_all_close(scan_losses, jnp.stack(losses), rtol=1e-5)


def test_checked_steps_refuse_bad_values_under_jit_and_change_nothing_else():
    """Inside jax.jit the eager checks see no values: labels outside [0, 1] or NaN features
    gave a loss and a step. The checked step compiles the checks in."""
    from jaxbasics.step import StepCheckError, make_step

    _, graphdef, params, x, y = _setup(6)
    tx = optax.sgd(LR)
    plain = make_train_step(graphdef, simplenet.bce_loss, tx, donate=False)
    checked = make_train_step(graphdef, simplenet.bce_loss, tx, donate=False, checked=True,
                              check_batch=simplenet.staged_batch_checks)
    chex.assert_trees_all_equal(checked(params, tx.init(params), x, y),
                                plain(params, tx.init(params), x, y))
    nan_x = x.at[1, 2].set(jnp.nan)
    _, _, loss = plain(params, tx.init(params), nan_x, y)
    assert jnp.isnan(loss)  # unchecked: a NaN loss and a NaN update, no error
    for bad_x, bad_y, message in (
            (x, y.at[0, 0].set(2.0), r"y must lie in \[0, 1\], got values from 0.0 to 2.0 "
                                     r"\(1 out of range\)$"),
            (nan_x, y, r"x must be finite, got 1 NaN or infinite value\(s\) of 80$")):
        with pytest.raises(StepCheckError, match=message):
            checked(params, tx.init(params), bad_x, bad_y)
    # without batch checks, the loss and gradients are still checked (first the loss)
    only_finite = make_step(graphdef, simplenet.bce_loss, tx, donate=False, checked=True)
    with pytest.raises(StepCheckError, match=r"^the loss is not finite: nan$"):
        only_finite(params, tx.init(params), nan_x, y)
    # in a scan, a bad batch among the steps is found too
    scan = make_scan_train(graphdef, simplenet.bce_loss, tx, donate=False, checked=True,
                           check_batch=simplenet.staged_batch_checks)
    xs, ys = jnp.stack([x, x, x]), jnp.stack([y, y, y.at[3, 0].set(-1.0)])
    with pytest.raises(StepCheckError, match=r"y must lie in \[0, 1\], got values from -1.0"):
        scan(params, tx.init(params), xs, ys)
    with pytest.raises(ValueError, match="check_batch is compiled in only with checked=True"):
        make_step(graphdef, simplenet.bce_loss, tx, check_batch=simplenet.staged_batch_checks)
    with pytest.raises(ValueError, match="checked=True does not take in_shardings"):
        make_step(graphdef, simplenet.bce_loss, tx, checked=True, in_shardings=None,
                  out_shardings=jax.sharding.SingleDeviceSharding(jax.devices()[0]))


def test_scan_unroll_must_be_a_positive_int():
    _, graphdef, _, _, _ = _setup(2)
    with pytest.raises(ValueError, match="unroll must be a positive integer, got 0"):
        make_scan_train(graphdef, simplenet.bce_loss, optax.sgd(LR), unroll=0)


def test_training_lowers_the_loss():
    _, graphdef, params, _, _ = _setup(2)
    xs, ys = jax.vmap(lambda k: simplenet.toy_batch(k, 32))(
        jax.random.split(jax.random.key(9), 1500))
    tx = optax.sgd(0.1)
    _, _, losses = make_scan_train(graphdef, simplenet.bce_loss, tx)(
        params, tx.init(params), xs, ys)
    assert float(losses[-100:].mean()) < 0.5 * float(losses[:100].mean())


def test_multisteps_accumulation_equals_one_full_batch_step():
    _, graphdef, params, x, y = _setup(8, 12)
    tx = optax.sgd(LR)
    full, _, _ = make_train_step(graphdef, simplenet.bce_loss, tx, donate=False)(
        params, tx.init(params), x, y)
    multi = optax.MultiSteps(tx, every_k_schedule=3)
    mstep = make_train_step(graphdef, simplenet.bce_loss, multi, donate=False)
    p, s = params, multi.init(params)
    for i in range(3):
        p, s, _ = mstep(p, s, x[4 * i:4 * i + 4], y[4 * i:4 * i + 4])
        if i < 2:  # nothing applied before the k-th micro-batch
            chex.assert_trees_all_close(p, params, rtol=0, atol=0)
    chex.assert_trees_all_close(p, full, rtol=1e-6, atol=1e-8)


def test_sum_gradients_is_what_two_backward_calls_accumulate():
    _, graphdef, params, x, y = _setup(6, 10)
    loss_fn = loss_of_params(graphdef, simplenet.bce_loss)
    g1 = jax.grad(loss_fn)(params, x[:5], y[:5])
    g2 = jax.grad(loss_fn)(params, x[5:], y[5:])
    both = jax.grad(lambda p: loss_fn(p, x[:5], y[:5]) + loss_fn(p, x[5:], y[5:]))(params)
    chex.assert_trees_all_close(sum_gradients(g1, g2), both, rtol=1e-6)
    with pytest.raises(ValueError, match="at least one gradient tree"):
        sum_gradients()
    with pytest.raises(ValueError, match=r"grad_trees\[1\] must have the structure of grad_trees\[0\]"):
        sum_gradients(g1, {"fc1": g2["fc1"]})
    g2["fc2"]["bias"] = jnp.zeros(3)
    with pytest.raises(ValueError, match=r"grad_trees\[1\]\['fc2'\]\['bias'\] must have shape "
                                         r"\(1,\) as in grad_trees\[0\], got \(3,\)"):
        sum_gradients(g1, g2)


def test_a_step_given_another_models_parameters_names_them_before_compiling():
    _, graphdef, params, x, y = _setup(6, 10)
    step = make_train_step(graphdef, simplenet.bce_loss, optax.sgd(0.01))
    with pytest.raises(ValueError, match=r"params must be the parameter tree of the model that graphdef "
                                         r"was split from \(split_params\(model\)\[1\]\)"):
        step({"fc1": params["fc1"]}, optax.sgd(0.01).init(params), x, y)


def test_scan_train_refuses_stacked_batches_of_different_lengths():
    _, graphdef, params, x, y = _setup(6, 10)
    run = make_scan_train(graphdef, simplenet.bce_loss, optax.sgd(0.01))
    xs, ys = jnp.stack([x, x, x]), jnp.stack([y, y])
    with pytest.raises(ValueError, match=r"stacked arrays must share their leading steps axis, got "
                                         r"stacked\[0\]: 3, stacked\[1\]: 2"):
        run(params, optax.sgd(0.01).init(params), xs, ys)
    with pytest.raises(ValueError, match=r"stacked\[1\] must have a leading steps axis of length >= 1, "
                                         r"got shape \(\)"):
        run(params, optax.sgd(0.01).init(params), xs, jnp.float32(1.0))


def test_named_parameters_accepts_module_state_and_dict():
    model, _, params, _, _ = _setup(0)
    names = [n for n, _ in simplenet.named_parameters(model)]
    assert names == [n for n, _ in simplenet.named_parameters(params)]
    assert names == [n for n, _ in simplenet.named_parameters(nnx.state(model, nnx.Param))]
    assert sorted(names) == ["fc1.bias", "fc1.kernel", "fc2.bias", "fc2.kernel"]


@pytest.mark.parametrize("x, y, error, fragment", [
    (np.ones((4, 9), np.float32), np.ones((4, 1), np.float32), ValueError,
     "x must have shape (*, 10), got (4, 9)"),
    (np.ones((4, 10), np.float32), np.ones((4,), np.float32), ValueError,
     "y must have shape (4, 1), got (4,)"),
    (np.ones((4, 10), np.float32), np.full((4, 1), 2.0, np.float32), ValueError,
     "y must lie in [0, 1]"),
    (np.ones((4, 10), np.int32), np.ones((4, 1), np.float32), TypeError,
     "x must have a floating dtype"),
    (np.ones((0, 10), np.float32), np.ones((0, 1), np.float32), ValueError,
     "x must not be empty"),
])
def test_check_batch_rejects_bad_inputs(x, y, error, fragment):
    model = simplenet.SimpleNet(rngs=nnx.Rngs(0))
    with pytest.raises(error) as info:
        simplenet.check_batch(model, x, y)
    assert fragment in str(info.value)


def test_bad_sizes_and_non_parameter_state_are_refused():
    with pytest.raises(ValueError, match="n_hidden must be a positive integer, got 0"):
        simplenet.SimpleNet(n_hidden=0, rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        simplenet.toy_batch(jax.random.key(0), 0)
    with pytest.raises(ValueError, match="non-parameter state"):
        split_params(nnx.BatchNorm(3, rngs=nnx.Rngs(0)))


@pytest.mark.parametrize("shape", [(2, 9), (10, 2), (), (0,)])
def test_calling_the_model_with_the_wrong_feature_count_is_refused_before_tracing(shape):
    model = simplenet.SimpleNet(rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match=rf"x must have shape \(\.\.\., 10\).*got {re.escape(str(shape))}"):
        model(jnp.ones(shape))


def test_the_model_maps_any_leading_axes_like_its_linear_layers():
    model = simplenet.SimpleNet(rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (3, 4, 10))
    chex.assert_trees_all_close(model(x), model(x.reshape(12, 10)).reshape(3, 4, 1), rtol=1e-6)
    chex.assert_trees_all_close(model(np.asarray(x[0]).tolist()), model(x[0]), rtol=1e-6)  # lists too
