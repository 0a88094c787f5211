"""conv_transpose2d: PyTorch's conv_transpose2d in values and gradients, the adjoint of conv2d
(the 'same' rule included), gradient checks and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch
from lamina.functional import conv2d, conv_transpose2d


def _torch_transposed(stride, padding, output_padding):
    """PyTorch's conv_transpose2d on NHWC tensors, computed in float64: its float32 CPU kernel
    (2.13) gave a wrong weight gradient on its first call for a 1x1 kernel with
    output_padding (a different value on each run)."""
    def run(x, w, b=None):
        dtype = x.dtype
        y = torch.nn.functional.conv_transpose2d(x.double().permute(0, 3, 1, 2), w.double().permute(0, 3, 1, 2),
                                                 None if b is None else b.double(), stride=stride, padding=padding,
                                                 output_padding=output_padding)
        return y.permute(0, 2, 3, 1).to(dtype)
    return run


# (h, w, c_in, c_out, kernel, stride, padding, output_padding): strides 1-3, even and odd and
# rectangular kernels, 1x1, kernels smaller than the stride, channel counts that take each
# of conv2d's kernels (im2col, rows, flat, 1x1, toeplitz)
CASES = [
    (5, 5, 3, 4, 3, 1, 0, 0),
    (5, 6, 3, 4, 3, 2, 0, 0),
    (5, 5, 3, 4, 3, 2, 1, 1),
    (4, 4, 8, 2, 4, 2, 1, 0),
    (7, 7, 16, 8, 3, 2, 1, 1),
    (3, 3, 2, 3, 1, 2, 0, 1),
    (6, 6, 32, 32, 3, 1, 1, 0),
    (8, 8, 64, 32, 2, 2, 0, 0),
    (4, 5, 3, 2, 5, 3, 2, 2),
    (9, 9, 20, 20, 3, 1, 0, 0),
    (16, 16, 32, 16, 3, 2, 1, 1),
    (5, 5, 3, 4, (3, 1), (2, 1), (1, 0), (1, 0)),
    (4, 4, 6, 5, 2, 3, 0, 2),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("h, w, c_in, c_out, f, s, p, op", CASES)
def test_matches_torch(h, w, c_in, c_out, f, s, p, op, dtype):
    rng = np.random.default_rng(h * 100 + c_in)
    fh, fw = (f, f) if isinstance(f, int) else f
    x = rng.standard_normal((2, h, w, c_in))
    weights = rng.standard_normal((c_in, fh, fw, c_out))
    bias = rng.standard_normal(c_out)
    compare_with_torch(lambda x, w, b: conv_transpose2d(x, w, b, stride=s, padding=p, output_padding=op),
                       _torch_transposed(s, p, op), x, weights, bias, dtype=dtype,
                       rtol=1e-4 if dtype == np.float32 else 1e-10)


def test_without_bias_and_with_constant_weights_matches_torch():
    rng = np.random.default_rng(1)
    x, weights = rng.standard_normal((3, 4, 4, 5)), rng.standard_normal((5, 3, 3, 2))
    compare_with_torch(lambda x, w: conv_transpose2d(x, w, stride=2), _torch_transposed(2, 0, 0), x, weights,
                       dtype=np.float64, grad=[True, False])
    compare_with_torch(lambda x, w: conv_transpose2d(x, w, stride=2), _torch_transposed(2, 0, 0), x, weights,
                       dtype=np.float64, grad=[False, True])


@pytest.mark.parametrize("padding, stride, output_padding", [
    (1, 2, 1), ("same", 2, 0), ("same", 3, 0), ("valid", 2, 1), ((0, 1), (1, 2), (0, 1)),
])
def test_gradcheck(padding, stride, output_padding):
    rng = np.random.default_rng(2)
    x, weights, bias = rng.standard_normal((2, 3, 4, 2)), rng.standard_normal((2, 3, 3, 3)), rng.standard_normal(3)
    assert check_gradients(
        lambda x, w, b: conv_transpose2d(x, w, b, stride=stride, padding=padding, output_padding=output_padding),
        x, weights, bias)


@pytest.mark.parametrize("h, f, s, padding", [
    (5, 3, 2, "same"), (4, 4, 2, "same"), (3, 2, 3, "same"), (4, 1, 2, "same"), (6, 5, 1, "same"),
    (5, 3, 2, 1), (5, 3, 1, "valid"), (4, 4, 2, "valid"),
])
def test_is_the_adjoint_of_conv2d(h, f, s, padding):
    """<conv2d(X, w), x> = <X, conv_transpose2d(x, w)> for every X of the transposed output's
    shape: the transposed convolution is exactly the convolution's dJ/dx."""
    rng = np.random.default_rng(3)
    x = lamina.tensor(rng.standard_normal((2, h, h + 1, 4)), dtype=np.float64)
    weights = lamina.tensor(rng.standard_normal((4, f, f, 3)), dtype=np.float64)
    y = conv_transpose2d(x, weights, stride=s, padding=padding)
    if padding == "same":
        assert y.shape == (2, h * s, (h + 1) * s, 3)
    big = lamina.tensor(rng.standard_normal(y.shape), dtype=np.float64)
    v = conv2d(big, weights, stride=s, padding=padding)
    assert v.shape == x.shape
    np.testing.assert_allclose((v.numpy() * x.numpy()).sum(), (big.numpy() * y.numpy()).sum(), rtol=1e-12)


def test_output_size_formula_and_dtype():
    x = lamina.tensor(np.ones((1, 5, 7, 2), dtype=np.float32))
    w = lamina.tensor(np.ones((2, 3, 4, 6), dtype=np.float32))
    y = conv_transpose2d(x, w, stride=(2, 3), padding=(1, 2), output_padding=(1, 2))
    assert y.shape == (1, (5 - 1) * 2 - 2 + 3 + 1, (7 - 1) * 3 - 4 + 4 + 2, 6)
    assert y.dtype == np.float32


def test_errors_name_the_function_the_shapes_and_what_was_expected():
    x = lamina.tensor(np.zeros((1, 4, 4, 3)))
    with pytest.raises(lamina.ShapeError, match=r"conv_transpose2d: x of shape \(1, 4, 4, 3\) has C_in=3 .*"
                                                 r"\(2, 3, 3, 5\) expect C_in=2"):
        conv_transpose2d(x, np.zeros((2, 3, 3, 5)))
    with pytest.raises(lamina.ShapeError, match=r"conv_transpose2d: expected x of shape \(N, H, W, C_in\)"
                                                 r".*\(4, 4, 3\)"):
        conv_transpose2d(np.zeros((4, 4, 3)), np.zeros((3, 3, 3, 5)))
    with pytest.raises(lamina.ShapeError, match=r"bias of shape \(5,\)"):
        conv_transpose2d(x, np.zeros((3, 3, 3, 5)), np.zeros(3))
    with pytest.raises(ValueError, match=r"output_padding must be at least 0 and smaller than the "
                                         r"stride \(2, 2\) or the dilation \(1, 1\) along each axis, got 2"):
        conv_transpose2d(x, np.zeros((3, 3, 3, 5)), stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"padding='same'.*output_padding must be 0"):
        conv_transpose2d(x, np.zeros((3, 3, 3, 5)), stride=2, padding="same", output_padding=1)
    with pytest.raises(lamina.ShapeError, match=r"crops the whole output.*\(1, 1, 1, 3\).*would be \(0, 0\)"):
        conv_transpose2d(lamina.tensor(np.zeros((1, 1, 1, 3))), np.zeros((3, 2, 2, 5)), padding=1)
