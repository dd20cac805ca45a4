"""BCE (PyTorch BCELoss semantics), BCE with logits, and cross-entropy against formulas."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from jaxbasics.losses import binary_cross_entropy, binary_cross_entropy_with_logits, cross_entropy


def _bce64(p, y):
    p, y = np.asarray(p, np.float64), np.asarray(y, np.float64)
    with np.errstate(divide="ignore"):
        return -(y * np.maximum(np.log(p), -100) + (1 - y) * np.maximum(np.log1p(-p), -100))


@given(seed=st.integers(0, 2**31 - 1), n=st.sampled_from([1, 2, 13]))  # few shapes: few compiles
def test_bce_matches_formula_for_every_reduction(seed, n):
    rng = np.random.default_rng(seed)
    p = rng.uniform(1e-4, 1 - 1e-4, size=(n, 2)).astype(np.float32)
    y = rng.uniform(0, 1, size=(n, 2)).astype(np.float32)
    ref = _bce64(p, y)
    np.testing.assert_allclose(binary_cross_entropy(p, y, "none"), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(binary_cross_entropy(p, y, "sum"), ref.sum(), rtol=1e-5)
    np.testing.assert_allclose(binary_cross_entropy(p, y), ref.mean(), rtol=1e-5)


@given(seed=st.integers(0, 2**31 - 1))
def test_bce_gradient_is_p_minus_y_over_p_one_minus_p(seed):
    rng = np.random.default_rng(seed)
    p = rng.uniform(0.01, 0.99, size=6).astype(np.float32)
    y = rng.uniform(0, 1, size=6).astype(np.float32)
    g = jax.grad(binary_cross_entropy)(p, y)
    p64 = p.astype(np.float64)
    np.testing.assert_allclose(g, (p64 - y) / (p64 * (1 - p64)) / 6, rtol=1e-5)


def test_bce_clamps_log_terms_at_minus_100_like_torch():
    p = jnp.array([0.0, 1.0, 0.0, 1.0])
    y = jnp.array([1.0, 0.0, 0.0, 1.0])
    np.testing.assert_array_equal(binary_cross_entropy(p, y, "none"), [100.0, 100.0, 0.0, 0.0])


def test_bce_gradient_at_saturated_probabilities_is_finite_torch_formula():
    p = jnp.array([0.0, 1.0, 0.0, 1.0, 1e-30])
    y = jnp.array([1.0, 0.0, 0.0, 1.0, 1.0])
    g = jax.grad(lambda p: binary_cross_entropy(p, y, "sum"))(p)
    assert np.isfinite(np.asarray(g)).all()
    # (p - y) / max(p (1 - p), 1e-12), float32 arithmetic
    np.testing.assert_allclose(g, [-1e12, 1e12, 0.0, 0.0, -1e12], rtol=1e-6)


def test_bce_gradient_with_respect_to_targets_is_log_ratio():
    p = jnp.array([0.2, 0.7])
    g = jax.grad(lambda y: binary_cross_entropy(p, y, "sum"))(jnp.array([0.5, 0.5]))
    np.testing.assert_allclose(g, np.log(1 - np.array([0.2, 0.7])) - np.log([0.2, 0.7]),
                               rtol=1e-6)


def test_bce_with_logits_is_finite_and_exact_at_large_logits():
    x = jnp.array([1e4, -1e4, 1e4, -1e4])
    y = jnp.array([0.0, 1.0, 1.0, 0.0])
    np.testing.assert_allclose(binary_cross_entropy_with_logits(x, y, "none"),
                               [1e4, 1e4, 0.0, 0.0])
    g = jax.grad(lambda x: binary_cross_entropy_with_logits(x, y, "sum"))(x)
    np.testing.assert_array_equal(g, [1.0, -1.0, 0.0, 0.0])  # σ(x) - y


@given(seed=st.integers(0, 2**31 - 1))
def test_bce_with_logits_equals_bce_of_sigmoid_where_both_are_finite(seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-6, 6, size=8)  # beyond, σ(x) in float32 loses 1 - p.astype(np.float32)
    y = rng.uniform(0, 1, size=8).astype(np.float32)
    for reduction in ("mean", "sum", "none"):
        chex.assert_trees_all_close(binary_cross_entropy_with_logits(x, y, reduction),
                                    binary_cross_entropy(jax.nn.sigmoid(x), y, reduction),
                                    rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("fn", [binary_cross_entropy, binary_cross_entropy_with_logits])
@pytest.mark.parametrize("a, y, error, fragment", [
    (np.ones((2, 3), np.float32) / 2, np.ones((3, 2), np.float32), ValueError,
     "targets must have the same shape as"),
    (np.array([1, 0]), np.array([1.0, 0.0]), TypeError,
     "must have a floating dtype (float16/bfloat16/float32/float64), got int64"),
    (np.array([0.5, 0.5]), np.array([1, 0]), TypeError, "targets must have a floating dtype"),
    (np.array([0.5]), np.array([2.0]), ValueError, "targets must lie in [0, 1], got values from 2"),
    (np.zeros(0, np.float32), np.zeros(0, np.float32), ValueError, "must not be empty"),
])
def test_bce_bad_inputs(fn, a, y, error, fragment):
    with pytest.raises(error) as info:
        fn(a, y)
    assert fragment in str(info.value)


def test_bce_rejects_probabilities_outside_unit_interval_and_nan():
    with pytest.raises(ValueError, match=r"probs must lie in \[0, 1\], got values from -0.1 to 1.2"):
        binary_cross_entropy(jnp.array([-0.1, 1.2]), jnp.array([0.0, 1.0]))
    with pytest.raises(ValueError, match=r"got NaN \(1 of 1 out of range\)"):
        binary_cross_entropy(jnp.array([jnp.nan]), jnp.array([1.0]))
    with pytest.raises(ValueError, match=r"got values from 0.5 to 2 and NaN \(2 of 3 out"):
        binary_cross_entropy(jnp.array([0.5, 2.0, jnp.nan]), jnp.array([1.0, 1.0, 1.0]))


def test_bad_reduction_is_named():
    with pytest.raises(ValueError, match="reduction must be one of 'mean', 'sum', 'none', got 'avg'"):
        binary_cross_entropy(jnp.array([0.5]), jnp.array([1.0]), "avg")


@given(seed=st.integers(0, 2**31 - 1))
def test_cross_entropy_matches_logsumexp_formula(seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(3, 4, 7)).astype(np.float32)
    labels = rng.integers(0, 7, size=(3, 4))
    z64 = z.astype(np.float64)
    lse = np.log(np.exp(z64).sum(-1))
    ref = lse - np.take_along_axis(z64, labels[..., None], -1)[..., 0]
    np.testing.assert_allclose(cross_entropy(z, labels, "none"), ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(cross_entropy(z, labels), ref.mean(), rtol=1e-5)
    labels[0, :2] = -1
    np.testing.assert_allclose(cross_entropy(z, labels, ignore_index=-1),
                               ref[labels != -1].mean(), rtol=1e-5)


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_and_its_gradient_match_torch_with_ignored_positions(reduction):
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(7)
    z = rng.normal(size=(3, 5, 11)).astype(np.float32)
    labels = rng.integers(0, 11, size=(3, 5))
    labels[0, 1:4] = labels[2, 0] = -100
    zt = torch.tensor(z, requires_grad=True)
    want = torch.nn.functional.cross_entropy(zt.reshape(-1, 11), torch.from_numpy(labels).reshape(-1),
                                             reduction=reduction, ignore_index=-100)
    want.sum().backward()
    value, grad = jax.value_and_grad(
        lambda z: cross_entropy(z, labels, reduction, ignore_index=-100).sum())(z)
    np.testing.assert_allclose(value, want.sum().item(), rtol=1e-6)
    np.testing.assert_allclose(grad, zt.grad.numpy(), rtol=1e-5, atol=1e-7)
    assert not np.asarray(grad)[labels == -100].any()  # ignored positions get no gradient
    if reduction == "none":
        np.testing.assert_allclose(cross_entropy(z, labels, "none", ignore_index=-100),
                                   want.detach().numpy().reshape(3, 5), rtol=1e-6)
    # every position ignored: PyTorch's mean is 0/0 = NaN; ours is 0 with a zero gradient
    every = np.full((3, 5), -100)
    value, grad = jax.value_and_grad(lambda z: cross_entropy(z, every, reduction,
                                                             ignore_index=-100).sum())(z)
    assert float(value) == 0.0 and not np.asarray(grad).any()


def test_cross_entropy_bad_inputs():
    z = jnp.zeros((2, 5))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\), got values from 0 to 5"):
        cross_entropy(z, jnp.array([0, 5]))
    with pytest.raises(ValueError, match=r"labels must have shape logits.shape\[:-1\] = \(2,\)"):
        cross_entropy(z, jnp.array([0, 1, 2]))
    with pytest.raises(TypeError, match="labels must have an integer dtype"):
        cross_entropy(z, jnp.array([0.0, 1.0]))
    # PyTorch's -100 padding label: refused with the way to skip it, not silently mis-scored
    with pytest.raises(ValueError, match=r"got values from -100 to 1 \(to skip positions labelled "
                                         r"-100, pass ignore_index=-100: PyTorch"):
        cross_entropy(z, jnp.array([-100, 1]))
    np.testing.assert_allclose(cross_entropy(z, jnp.array([-100, 1]), ignore_index=-100), np.log(5),
                               rtol=1e-6)
    # labels closed over by a jitted function are constants there: checked, not traced
    bad, good = jnp.array([-2, 1]), jnp.array([3, -1])
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 5\), got values from -2 to 1"):
        jax.jit(lambda z: cross_entropy(z, bad, ignore_index=-1))(z)
    np.testing.assert_allclose(jax.jit(lambda z: cross_entropy(z, good, ignore_index=-1))(z),
                               np.log(5), rtol=1e-6)
