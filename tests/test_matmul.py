"""The projection matmul with a CPU-laid-out backward pass: same values and gradients as
``x @ W`` under plain autodiff, checked against finite differences too."""

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.test_util import check_grads

from jaxbasics.gpt import matmul


def _pair(m, k, n, dtype=jnp.float32, seed=0):
    kx, kw = jax.random.split(jax.random.key(seed))
    return (jax.random.normal(kx, (m, k), dtype), jax.random.normal(kw, (k, n), dtype))


# x smaller than g (the weight gradient from xᵀ), and g smaller than x (from gᵀ, transposed)
@pytest.mark.parametrize("shape", [(64, 16, 48), (64, 48, 16)])
def test_value_and_gradients_equal_plain_autodiff(shape):
    x, w = _pair(*shape)
    r = jax.random.normal(jax.random.key(1), (shape[0], shape[2]))

    def loss(mm):
        return lambda x, w: jnp.sum(jnp.tanh(mm(x, w)) * r)

    chex.assert_trees_all_close(matmul.matmul(x, w), x @ w, rtol=1e-6)
    ours = jax.jit(jax.grad(loss(matmul.matmul), argnums=(0, 1)))(x, w)
    plain = jax.jit(jax.grad(loss(jnp.matmul), argnums=(0, 1)))(x, w)
    chex.assert_trees_all_close(ours, plain, rtol=1e-5, atol=1e-6)
    # dL/dW = xᵀ·(dL/dy) by hand: dL/dy = r ⊙ (1 - tanh²(xW))
    gy = r * (1 - jnp.tanh(x @ w) ** 2)
    np.testing.assert_allclose(ours[1], np.asarray(x).T @ np.asarray(gy), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("shape", [(64, 16, 48), (64, 48, 16)])
def test_weight_gradient_from_the_transpose_is_x_transposed_times_g(shape):
    m, k, n = shape
    x, _ = _pair(m, k, n)
    g = jax.random.normal(jax.random.key(5), (m, n))
    dw = jax.jit(matmul.weight_grad)(x, g)
    assert dw.shape == (k, n)
    np.testing.assert_allclose(dw, np.asarray(x, np.float64).T @ np.asarray(g, np.float64),
                               rtol=1e-4, atol=1e-4)


def test_gradients_match_finite_differences():
    x, w = _pair(6, 4, 5, jnp.float64 if jax.config.jax_enable_x64 else jnp.float32)
    check_grads(matmul.matmul, (x, w), order=1, modes=("rev",), atol=5e-2, rtol=5e-2)


def test_bfloat16_gradients_keep_their_dtypes():
    x, w = _pair(32, 8, 24, jnp.bfloat16)
    dx, dw = jax.grad(lambda x, w: jnp.sum(matmul.matmul(x, w).astype(jnp.float32)),
                      argnums=(0, 1))(x, w)
    assert dx.dtype == dw.dtype == jnp.bfloat16
    # d/dx Σ xW = 1·Wᵀ: every row of dx is W's row sums
    np.testing.assert_allclose(np.asarray(dx[0], np.float32),
                               np.asarray(w, np.float32).sum(axis=1), rtol=2e-2, atol=2e-2)


def test_dot_general_falls_back_to_lax_where_it_does_not_apply():
    x3 = jax.random.normal(jax.random.key(2), (2, 5, 4))
    w = jax.random.normal(jax.random.key(3), (4, 3))
    dims = (((2,), (0,)), ((), ()))
    chex.assert_trees_all_close(matmul.dot_general(x3, w, dims),
                                jax.lax.dot_general(x3, w, dims))
    x, w = _pair(8, 4, 3)
    out = matmul.dot_general(x, w, (((1,), (0,)), ((), ())),
                             preferred_element_type=jnp.float32)
    chex.assert_trees_all_close(out, x @ w, rtol=1e-6)


def test_linear_layer_with_it_trains_like_the_default_one():
    layer = nnx.Linear(16, 8, dot_general=matmul.dot_general, rngs=nnx.Rngs(0))
    plain = nnx.Linear(16, 8, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(4), (32, 16))

    def grads(m):
        return nnx.grad(lambda m: jnp.mean(m(x) ** 2))(m)

    chex.assert_trees_all_close(nnx.state(grads(layer)), nnx.state(grads(plain)), rtol=1e-5,
                                atol=1e-7)
