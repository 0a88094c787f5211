"""conv_transpose1d/3d, pad1d/3d, glu, rrelu, rms_norm, lp_pool1d/2d and adaptive_avg/max_pool3d against
torch.nn.functional (channel-last layouts converted at the boundary), first and second
derivatives included."""

from __future__ import annotations

import numpy as np
import pytest
import torch.nn.functional as TF

from helpers import compare_double_backward_with_torch, compare_with_torch, positive, randn
from lamina import ShapeError
from lamina import functional as F


def _last(t):
    return t.movedim(-1, 1)


def _first(t):
    return t.movedim(1, -1)


@pytest.mark.parametrize("s, p, e, g, q", [(1, 0, 0, 1, 1), (2, 1, 1, 1, 1), (3, 2, 0, 2, 2), (2, 0, 1, 2, 3),
                                           (1, 3, 0, 1, 1)])
def test_conv_transpose1d_matches_torch(s, p, e, g, q):
    compare_with_torch(lambda x, w, b: F.conv_transpose1d(x, w, b, s, p, e, g, q),
                       lambda x, w, b: _first(TF.conv_transpose1d(_last(x), _last(w), b, s, p, e, g, q)),
                       randn(2, 5, 4), randn(4, 3, 3, seed=1), randn(3 * g, seed=2), dtype=np.float64)


@pytest.mark.parametrize("s, p, e, g, q", [((1, 2, 2), (0, 1, 1), (0, 1, 0), 2, (1, 1, 2)), (2, 0, 1, 1, 1)])
def test_conv_transpose3d_matches_torch(s, p, e, g, q):
    compare_with_torch(lambda x, w, b: F.conv_transpose3d(x, w, b, s, p, e, g, q),
                       lambda x, w, b: _first(TF.conv_transpose3d(_last(x), _last(w), b, s, p, e, g, q)),
                       randn(2, 3, 4, 2, 4), randn(4, 2, 3, 2, 3, seed=1), randn(3 * g, seed=2))


def test_conv_transpose_second_derivatives_match_torch():
    compare_double_backward_with_torch(
        lambda x, w, b: F.conv_transpose1d(x, w, b, 2, 1, 1, 2, 1),
        lambda x, w, b: _first(TF.conv_transpose1d(_last(x), _last(w), b, 2, 1, 1, 2, 1)),
        randn(2, 5, 4), randn(4, 3, 3, seed=1), randn(6, seed=2))
    compare_double_backward_with_torch(
        lambda x, w: F.conv_transpose3d(x, w, None, 2, 1, 1, 1, 1),
        lambda x, w: _first(TF.conv_transpose3d(_last(x), _last(w), None, 2, 1, 1, 1, 1)),
        randn(1, 2, 2, 2, 2), randn(2, 2, 2, 3, 1, seed=1))


@pytest.mark.parametrize("mode", ["constant", "reflect", "replicate", "circular"])
def test_pad1d_and_pad3d_match_torch(mode):
    compare_with_torch(lambda x: F.pad1d(x, (2, 1), mode), lambda x: _first(TF.pad(_last(x), (2, 1), mode)),
                       randn(2, 4, 3), dtype=np.float64)
    compare_with_torch(lambda x: F.pad3d(x, (1, 2, 0, 1, 2, 1), mode),
                       lambda x: _first(TF.pad(_last(x), (2, 1, 0, 1, 1, 2), mode)),
                       randn(2, 3, 3, 4, 2), dtype=np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_glu_rms_norm_lp_pool_and_rrelu_match_torch(dtype):
    compare_with_torch(lambda x: F.glu(x, 1), lambda x: TF.glu(x, 1), randn(2, 4, 3), dtype=dtype)
    compare_with_torch(lambda x, w: F.rms_norm(x, (3, 4), w), lambda x, w: TF.rms_norm(x, (3, 4), w),
                       randn(2, 3, 4), randn(3, 4, seed=1), dtype=dtype)
    compare_with_torch(lambda x: F.lp_pool2d(x, 3, (2, 3), (1, 2), True),
                       lambda x: _first(TF.lp_pool2d(_last(x), 3, (2, 3), (1, 2), True)), positive(2, 5, 7, 3),
                       dtype=dtype)
    compare_with_torch(lambda x: F.lp_pool1d(x, 2, 3, 2, True), lambda x: _first(TF.lp_pool1d(_last(x), 2, 3, 2, True)),
                       positive(2, 8, 3), dtype=dtype)
    compare_with_torch(lambda x: F.rrelu(x, 0.1, 0.3), lambda x: TF.rrelu(x, 0.1, 0.3), randn(3, 4), dtype=dtype)


def test_glu_rms_norm_and_lp_pool_second_derivatives_match_torch():
    compare_double_backward_with_torch(lambda x: F.glu(x, -1), lambda x: TF.glu(x, -1), randn(2, 6))
    compare_double_backward_with_torch(lambda x, w: F.rms_norm(x, 4, w, 1e-3),
                                       lambda x, w: TF.rms_norm(x, (4,), w, 1e-3), randn(3, 4), randn(4, seed=1))
    compare_double_backward_with_torch(lambda x: F.lp_pool2d(x, 2, 2),
                                       lambda x: _first(TF.lp_pool2d(_last(x), 2, 2)), positive(1, 4, 4, 2))


def test_errors_name_the_op_and_the_shapes():
    with pytest.raises(ShapeError, match=r"conv_transpose1d: x of shape \(1, 3, 2\) has C_in=2"):
        F.conv_transpose1d(randn(1, 3, 2), randn(4, 3, 1))
    with pytest.raises(ValueError, match="conv_transpose3d: output_padding"):
        F.conv_transpose3d(randn(1, 2, 2, 2, 1), randn(1, 2, 2, 2, 1), output_padding=1)
    with pytest.raises(ShapeError, match="pad3d: reflect padding"):
        F.pad3d(randn(1, 2, 2, 2, 1), 2, mode="reflect")
    with pytest.raises(ShapeError, match=r"glu: x of shape \(2, 3\)"):
        F.glu(randn(2, 3))
    with pytest.raises(ShapeError, match=r"rms_norm: x of shape \(2, 3\) does not end with"):
        F.rms_norm(randn(2, 3), 4)


@pytest.mark.parametrize("output_size", [(2, 3, None), 3, 1])
def test_adaptive_pool3d_matches_torch(output_size):
    x = randn(2, 5, 7, 4, 3)
    compare_with_torch(lambda x: F.adaptive_avg_pool3d(x, output_size),
                       lambda x: _first(TF.adaptive_avg_pool3d(_last(x), output_size)), x, dtype=np.float64)
    compare_with_torch(lambda x: F.adaptive_max_pool3d(x, output_size),
                       lambda x: _first(TF.adaptive_max_pool3d(_last(x), output_size)), x, dtype=np.float64)
