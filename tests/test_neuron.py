"""Single-neuron autodiff: jax.grad against the hand formula and finite differences."""

import re

import chex
import jax
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxbasics.chapter import neuron
from jaxbasics.chapter.finite_diff import numerical_grad

EX = neuron.CHAPTER_EXAMPLE
CHAPTER = {"x": EX.x, "w": EX.w, "b": EX.b, "y": EX.y}
floats = st.floats(-3.0, 3.0, allow_nan=False, width=32)


def test_chapter_values_give_the_chapters_gradients():
    gw, gb = neuron.gradients(**CHAPTER)
    assert round(float(gw), 4) == -0.0898
    assert round(float(gb), 4) == -0.0817
    # exact hand-derived values in float64: a = σ(2.42)
    a = 1.0 / (1.0 + np.exp(-2.42))
    np.testing.assert_allclose([float(gw), float(gb)], [(a - 1.0) * 1.1, a - 1.0], rtol=1e-6)


def test_chapter_values_agree_with_hand_formula_and_finite_differences():
    grads = neuron.gradients(**CHAPTER)
    chex.assert_trees_all_close(grads, neuron.manual_gradients(**CHAPTER),
                                rtol=1e-6)
    chex.assert_trees_all_close(grads, neuron.numerical_gradients(**CHAPTER),
                                rtol=1e-5, atol=1e-7)


def test_value_and_gradients_reports_the_bce_loss():
    loss, _ = neuron.value_and_gradients(**CHAPTER)
    np.testing.assert_allclose(float(loss), -np.log(1.0 / (1.0 + np.exp(-2.42))), rtol=1e-6)


@given(w=floats, b=floats, x=floats, y=st.floats(0.0, 1.0, width=32))
def test_grad_equals_hand_formula_for_random_scalars(w, b, x, y):
    grads = neuron.gradients(w=w, b=b, x=x, y=y)
    chex.assert_trees_all_close(grads, neuron.manual_gradients(w=w, b=b, x=x, y=y),
                                rtol=1e-5, atol=1e-7)


@given(w=floats, b=floats, x=floats, y=st.floats(0.0, 1.0, width=32))
def test_grad_agrees_with_finite_differences_for_random_scalars(w, b, x, y):
    chex.assert_trees_all_close(neuron.gradients(w=w, b=b, x=x, y=y),
                                neuron.numerical_gradients(w=w, b=b, x=x, y=y),
                                rtol=1e-4, atol=1e-6)


@given(seed=st.integers(0, 2**31 - 1), n=st.sampled_from([1, 5, 16]))  # few shapes: few compiles
def test_batched_inputs_average_the_per_example_gradients(seed, n):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=n).astype(np.float32)
    y = rng.integers(0, 2, size=n).astype(np.float32)
    w, b = np.float32(rng.normal()), np.float32(rng.normal())
    a = 1.0 / (1.0 + np.exp(-(x.astype(np.float64) * w + b)))
    expected = (np.mean((a - y) * x), np.mean(a - y))
    chex.assert_trees_all_close(neuron.gradients(w=w, b=b, x=x, y=y), expected,
                                rtol=1e-5, atol=1e-7)


def test_graph_is_an_executable_jaxpr_of_the_loss_and_its_gradient():
    forward = neuron.graph(of="loss")
    assert "logistic" in str(forward)
    args = [np.float32(v) for v in (EX.w, EX.b, EX.x, EX.y)]  # the jaxpr's order: w, b, x, y
    (value,) = jax.core.eval_jaxpr(forward.jaxpr, forward.consts, *args)
    np.testing.assert_allclose(float(value), float(neuron.loss(*args)), rtol=1e-7)
    backward = neuron.graph(of="grad")
    gw, gb = jax.core.eval_jaxpr(backward.jaxpr, backward.consts, *args)
    chex.assert_trees_all_close((gw, gb), neuron.gradients(**dict(zip("wbxy", args, strict=True))),
                                rtol=1e-7)


@pytest.mark.parametrize("args, error, fragment", [
    ((2, 0.0, 1.1, 1.0), TypeError, "w must have a floating dtype"),
    ((2.2, 0.0, np.array([1, 2]), np.array([1.0, 0.0])), TypeError, "x must have a floating"),
    ((np.ones(2, np.float32), 0.0, 1.1, 1.0), ValueError, "w must be a scalar"),
    ((2.2, 0.0, np.ones(3, np.float32), np.ones(2, np.float32)), ValueError,
     "y must have the same shape as x (3,), got (2,)"),
    ((2.2, 0.0, 1.1, 1.5), ValueError, "y must lie in [0, 1]"),
    ((2.2, 0.0, np.zeros(0, np.float32), np.zeros(0, np.float32)), ValueError,
     "x must not be empty"),
    ((2.2, 0.0, 1.1, float("nan")), ValueError, "NaN"),
    (("2.2", 0.0, 1.1, 1.0), TypeError, "w must be a number or an array of numbers, got str '2.2'"),
    ((2.2, None, 1.1, 1.0), TypeError, "b must be a number or an array of numbers, got NoneType"),
    ((2.2, 0.0, [[1.1], [1.0, 2.0]], 1.0), TypeError, "x must be a number or an array of numbers"),
])
def test_bad_inputs_raise_clear_errors(args, error, fragment):
    for fn in (neuron.gradients, neuron.manual_gradients, neuron.numerical_gradients):
        with pytest.raises(error) as info:
            fn(**dict(zip("wbxy", args, strict=True)))
        assert fragment in str(info.value)


@pytest.mark.parametrize("fn", [neuron.gradients, neuron.value_and_gradients,
                                neuron.manual_gradients, neuron.numerical_gradients, neuron.graph])
def test_the_example_values_are_taken_by_keyword_only(fn):
    """Typed in the chapter's order (x, w, b, y) a positional call would compute the gradient
    at w=1.1, x=2.2 instead: refused, so that it cannot silently give other numbers."""
    with pytest.raises(TypeError, match="positional argument"):
        fn(EX.x, EX.w, EX.b, EX.y)
    # by keyword, the order they are written in does not matter
    if fn is neuron.gradients:
        gw, gb = fn(x=1.1, w=2.2, b=0.0, y=1.0)
        assert (round(float(gw), 4), round(float(gb), 4)) == (-0.0898, -0.0817)


def test_graph_rejects_unknown_kind():
    with pytest.raises(ValueError, match="of must be one of 'loss', 'grad', got 'hessian'"):
        neuron.graph(of="hessian")


@pytest.mark.parametrize("eps", [0.0, -1e-6, float("nan"), float("inf"), True, "1e-6"])
def test_finite_differences_refuse_a_step_that_is_not_a_positive_number(eps):
    with pytest.raises(ValueError, match=rf"eps must be a finite number > 0, got {re.escape(repr(eps))}"):
        neuron.numerical_gradients(**CHAPTER, eps=eps)


def test_finite_differences_refuse_integer_parameters_and_non_scalar_functions():
    # an integer leaf cannot take a step of eps: refused, naming the leaf, before evaluating f
    calls = []
    with pytest.raises(TypeError, match=r"params\['b'\]\[0\] must have a floating dtype.*got int32"):
        numerical_grad(lambda p: calls.append(p) or 0.0, {"a": np.ones(2), "b": [np.ones(2, np.int32)]})
    assert calls == []
    with pytest.raises(ValueError, match=r"f must return a scalar, got shape \(3,\)"):
        numerical_grad(lambda p: p ** 2, np.ones(3))
    # a one-element result counts as a scalar, as in torch's backward(); d/dp Σp² = 2p
    chex.assert_trees_all_close(
        numerical_grad(lambda p: (p ** 2).sum(keepdims=True), np.array([1.0, -2.0])),
        np.array([2.0, -4.0]), atol=1e-8)
