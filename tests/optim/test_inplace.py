"""The optimizers' in-place updates y += a x and y *= a, on BLAS and off it."""

import numpy as np
import pytest

from lamina.optim import inplace


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("layout", ["contiguous", "strided"])
def test_axpy_and_scale_update_in_place(dtype, layout):
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 8)).astype(dtype)
    base = rng.standard_normal((6, 8 if layout == "contiguous" else 16)).astype(dtype)
    y = base if layout == "contiguous" else base[:, ::2]
    expected = y.astype(np.float64) + 0.3 * x
    before = base.copy()
    inplace.axpy(0.3, x, y)
    np.testing.assert_allclose(y, expected, rtol=1e-6)
    if layout == "strided":
        np.testing.assert_array_equal(base[:, 1::2], before[:, 1::2])  # the other columns untouched
    inplace.scale(-2.0, y)
    np.testing.assert_allclose(y, -2.0 * expected, rtol=1e-6)
    assert y.dtype == dtype


def test_axpy_keeps_mixed_dtypes_on_the_array_path():
    y = np.ones(5, np.float32)
    inplace.axpy(0.5, np.arange(5, dtype=np.float64), y)
    np.testing.assert_allclose(y, 1 + 0.5 * np.arange(5))
    assert y.dtype == np.float32


def test_axpy_refuses_a_read_only_target():
    y = np.ones(4, np.float32)
    y.flags.writeable = False
    with pytest.raises(ValueError):
        inplace.axpy(1.0, np.ones(4, np.float32), y)


def test_axpy_broadcasts_a_smaller_operand_like_numpy():
    y = np.zeros((3, 4), np.float32)
    inplace.axpy(2.0, np.arange(4, dtype=np.float32), y)
    np.testing.assert_array_equal(y, np.tile(2.0 * np.arange(4), (3, 1)))


class _Tagged(np.ndarray):
    """An ndarray subclass: it must keep its type, so it takes the array expression."""


@pytest.mark.parametrize("target", ["plain", "subclass"])
def test_axpy_and_scale_on_array_subclasses(target):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 5)).astype(np.float32).view(_Tagged)
    y = rng.standard_normal((4, 5)).astype(np.float32)
    if target == "subclass":
        y = y.view(_Tagged)
    expected = (np.asarray(y, np.float64) + 1.5 * np.asarray(x)) * 0.25
    inplace.axpy(1.5, x, y)
    inplace.scale(0.25, y)
    np.testing.assert_allclose(np.asarray(y), expected, rtol=1e-6)
    assert type(y) is (_Tagged if target == "subclass" else np.ndarray)
