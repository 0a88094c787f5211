"""Per-channel passes (a vector along the last axis of an NHWC array) and bias sums."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.functional import _util
from lamina.functional._util import CHANNEL_ROW, channel_sums, per_channel, repeated


def _views(rng, dtype):
    """Contiguous arrays, views with merged-able last axes, and awkward layouts."""
    grid = rng.standard_normal((3, 9, 11, 6)).astype(dtype)
    return {
        "nhwc": rng.standard_normal((4, 5, 7, 6)).astype(dtype),
        "rows": rng.standard_normal((37, 16)).astype(dtype),               # 37 rows: prime
        "cropped": grid[:, 1:8, 2:9],                                      # a valid-region view
        "transposed": rng.standard_normal((6, 5, 4)).astype(dtype).transpose(2, 1, 0),
        "wide": rng.standard_normal((3, 2 * CHANNEL_ROW)).astype(dtype),   # channels >= CHANNEL_ROW
    }


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("ufunc", [np.add, np.multiply, np.subtract])
def test_per_channel_equals_broadcasting(ufunc, dtype):
    rng = np.random.default_rng(0)
    for name, x in _views(rng, dtype).items():
        v = rng.standard_normal(x.shape[-1]).astype(dtype)
        expected = ufunc(x, v)
        out = np.empty(x.shape, dtype)
        assert per_channel(ufunc, x, v, out) is out
        np.testing.assert_array_equal(out, expected, err_msg=name)
        np.testing.assert_array_equal(per_channel(ufunc, x, v), expected, err_msg=name)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_per_channel_through_repeated_rows_equals_broadcasting(dtype, monkeypatch):
    """Every array takes the repeated-row path (not only those past PER_CHANNEL_MIN)."""
    monkeypatch.setattr(_util, "PER_CHANNEL_MIN", 0)
    rng = np.random.default_rng(2)
    for name, x in _views(rng, dtype).items():
        v = rng.standard_normal(x.shape[-1]).astype(dtype)
        np.testing.assert_array_equal(per_channel(np.add, x, v), x + v, err_msg=name)
        y = x.copy()
        assert per_channel(np.multiply, y, v, y) is y
        np.testing.assert_array_equal(y, x * v, err_msg=name)


def test_repeated_is_tile():
    v = np.arange(6, dtype=np.float32)
    for r in (1, 2, 85):
        out = repeated(v, r)
        assert out.dtype == v.dtype and out.flags.c_contiguous
        np.testing.assert_array_equal(out, np.tile(v, r))
    strided = np.arange(24.0).reshape(4, 6)[:, 2]          # a column: not contiguous
    np.testing.assert_array_equal(repeated(strided, 3), np.tile(strided, 3))


def test_per_channel_in_place_and_into_a_strided_output():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 6, 6, 6)).astype(np.float32)
    v = rng.standard_normal(6).astype(np.float32)
    expected = x + v
    per_channel(np.add, x, v, x)
    np.testing.assert_array_equal(x, expected)
    grid = np.zeros((2, 8, 8, 6), np.float32)
    per_channel(np.multiply, expected, v, grid[:, 1:7, 1:7])
    np.testing.assert_array_equal(grid[:, 1:7, 1:7], expected * v)
    assert not grid[:, 0].any() and not grid[:, 7].any()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_channel_sums_equal_sums_over_all_but_the_last_axis(dtype):
    rng = np.random.default_rng(2)
    for name, x in _views(rng, dtype).items():
        expected = x.reshape(-1, x.shape[-1]).sum(axis=0, dtype=np.float64)
        got = channel_sums(x)
        assert got.shape == (x.shape[-1],) and got.dtype == dtype, name
        np.testing.assert_allclose(got, expected, rtol=1e-5 if dtype == np.float32 else 1e-12, atol=1e-5,
                                   err_msg=name)


def test_the_bias_gradient_of_a_broadcast_add_is_the_channel_sum():
    """x + b with b along the last axis: dJ/db goes through channel_sums, as torch."""
    import torch

    import lamina
    rng = np.random.default_rng(3)
    x, b = rng.standard_normal((4, 5, 7, 6)), rng.standard_normal(6)
    bl = lamina.tensor(b, requires_grad=True, dtype=np.float64)
    (lamina.tensor(x, dtype=np.float64) + bl).sum().backward()
    bt = torch.tensor(b, requires_grad=True)
    (torch.tensor(x) + bt).sum().backward()
    np.testing.assert_allclose(bl.grad, bt.grad.numpy(), rtol=1e-12)
