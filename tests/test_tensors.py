"""Tensor helpers: the chapter's arrays, dtype rules, shape operations."""

import jax.numpy as jnp
import numpy as np
import pytest

from jaxbasics.chapter import tensors


def test_chapter_tensors_have_ranks_zero_to_three_and_int32():
    t = tensors.chapter_tensors()
    assert [t[k].ndim for k in ("tensor0d", "tensor1d", "tensor2d", "tensor3d")] == [0, 1, 2, 3]
    assert tensors.describe(t["tensor3d"])["shape"] == (2, 2, 2)
    assert int(t["tensor3d"][1, 1, 1]) == 8
    assert {str(v.dtype) for v in t.values()} == {"int32"}


def test_default_dtypes_follow_x64_flag_without_changing_it():
    assert tensors.default_dtypes() == {"int": "int32", "float": "float32"}
    assert tensors.default_dtypes(x64=True) == {"int": "int64", "float": "float64"}
    assert tensors.default_dtypes(x64=False) == {"int": "int32", "float": "float32"}
    assert jnp.array([1]).dtype == jnp.int32  # global flag untouched


def test_to_dtype_converts_and_truncates_like_torch():
    out = tensors.to_dtype(jnp.array([1.7, -1.7]), "int32")
    assert out.dtype == jnp.int32 and out.tolist() == [1, -1]
    assert tensors.to_dtype([1, 2, 3], jnp.float32).dtype == jnp.float32
    with pytest.raises(TypeError, match="dtype must be a NumPy/JAX dtype"):
        tensors.to_dtype([1], "float33")


def test_the_2x3_example_has_a_name_of_its_own():
    """The chapter calls both [[1, 2], [3, 4]] and [[1, 2, 3], [4, 5, 6]] tensor2d."""
    assert tensors.chapter_tensors()["tensor2d"].tolist() == [[1, 2], [3, 4]]
    assert tensors.shape_example().tolist() == [[1, 2, 3], [4, 5, 6]]
    assert tensors.SHAPE_EXAMPLE_NAME == "tensor2x3"
    assert tensors.SHAPE_EXAMPLE_NAME not in tensors.chapter_tensors()


def test_reshape_transpose_matmul_give_the_chapters_values():
    t2 = tensors.shape_example()
    assert tensors.reshape(t2, (3, 2)).tolist() == [[1, 2], [3, 4], [5, 6]]
    assert tensors.reshape(t2, (-1,)).tolist() == [1, 2, 3, 4, 5, 6]
    assert tensors.transpose(t2).tolist() == [[1, 4], [2, 5], [3, 6]]
    assert tensors.matmul(t2, t2.T).tolist() == [[14, 32], [32, 77]]
    np.testing.assert_array_equal(tensors.matmul(np.ones((2, 3, 4)), np.ones((4,))),
                                  np.full((2, 3), 4.0))


def test_shape_errors_name_the_shapes():
    t2 = jnp.ones((2, 3))
    with pytest.raises(ValueError, match=r"shape \(4, 2\) is incompatible with x of shape \(2, 3\)"):
        tensors.reshape(t2, (4, 2))
    with pytest.raises(ValueError, match="incompatible"):
        tensors.reshape(t2, (-1, -1))
    with pytest.raises(ValueError, match=r"inner sizes differ: a has shape \(2, 3\)"):
        tensors.matmul(t2, t2)
    with pytest.raises(ValueError, match="rank >= 1"):
        tensors.matmul(jnp.array(1.0), t2)


@pytest.mark.parametrize("call", [
    lambda: tensors.describe("abc"), lambda: tensors.to_dtype("abc", "float32"),
    lambda: tensors.reshape("abc", (3,)), lambda: tensors.transpose("abc"),
    lambda: tensors.matmul("abc", jnp.ones(3)),
])
def test_non_numeric_inputs_are_named(call):
    with pytest.raises(TypeError, match=r"(x|a) must be a number or an array of numbers, got str 'abc'"):
        call()


def test_reshape_takes_a_sequence_of_ints_or_one_int_and_refuses_anything_else():
    x = np.arange(6)
    np.testing.assert_array_equal(tensors.reshape(x, 6), x)
    np.testing.assert_array_equal(tensors.reshape(x, [np.int64(2), -1]), x.reshape(2, 3))
    for bad in ("23", (2.0, 3), (True, 6), None):
        with pytest.raises(TypeError, match=r"shape must be a sequence of ints such as \(2, -1\), got "):
            tensors.reshape(x, bad)
