"""Inputs whose length-1 axes carry an unusual stride (NumPy allows any: a transposed copy of
an NCHW array with one channel keeps the old one) give the same results as fresh copies in
every op that builds strided views of its input."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina import functional as F


def _odd_strides(shape_nchw, seed=0):
    """An NHWC array with one channel whose channel stride is not the C layout's."""
    x = np.ascontiguousarray(np.random.default_rng(seed).standard_normal(shape_nchw).transpose(0, 2, 3, 1))
    assert x.flags.c_contiguous and x.strides[-1] != x.itemsize
    return x


CASES = {
    "conv2d": lambda x: F.conv2d(x, np.ones((2, 3, 3, 1)), padding=1),
    "conv2d_strided": lambda x: F.conv2d(x, np.ones((2, 3, 3, 1)), stride=2),
    "conv2d_fft": lambda x: F.conv2d(x, np.ones((2, 5, 5, 1)), algorithm="fft"),
    "conv2d_dilated": lambda x: F.conv2d(x, np.ones((2, 3, 3, 1)), dilation=2),
    "max_pool2d": lambda x: F.max_pool2d(x, 3, 2),
    "avg_pool2d": lambda x: F.avg_pool2d(x, 2),
    "unfold": lambda x: F.unfold(x, 3, padding=1),
    "max_pool2d_with_indices": lambda x: F.max_pool2d_with_indices(x, 2)[0],
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_2d_ops_read_length_one_axes_right(name):
    x = _odd_strides((2, 1, 9, 9))
    fn = CASES[name]
    z = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    out = fn(z)
    out.backward(np.ones(out.shape))
    fresh = lamina.tensor(x.copy(), requires_grad=True, dtype=np.float64)
    expected = fn(fresh)
    expected.backward(np.ones(expected.shape))
    np.testing.assert_allclose(out.numpy(), expected.numpy(), rtol=1e-12)
    np.testing.assert_allclose(z.grad, fresh.grad, rtol=1e-12)


def test_3d_ops_read_length_one_axes_right():
    x = np.ascontiguousarray(np.random.default_rng(1).standard_normal((2, 1, 5, 6, 6)).transpose(0, 2, 3, 4, 1))
    assert x.strides[-1] != x.itemsize
    for fn in (lambda a: F.conv3d(a, np.ones((2, 3, 3, 3, 1))), lambda a: F.max_pool3d(a, 2)):
        np.testing.assert_allclose(fn(x).numpy(), fn(x.copy()).numpy(), rtol=1e-12)
