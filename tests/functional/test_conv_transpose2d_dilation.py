"""conv_transpose2d with dilation and groups (PyTorch's argument order): outputs and
gradients against torch over dilation x stride x padding x output_padding x groups, float64
gradient checks, second derivatives, 'same' padding and the errors."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch.nn.functional as TF

from helpers import check_gradients, compare_double_backward_with_torch, compare_with_torch, randn
from lamina import ShapeError
from lamina import functional as F


def _last(t):
    return t.movedim(-1, 1)


def _first(t):
    return t.movedim(1, -1)


def _grid():
    """Every (q, s, p, e, g) of the grid that PyTorch accepts: e < max(s, q)."""
    for q, s, p, e, g in itertools.product((1, 2, 3), (1, 2), (0, 2), (0, 1), (1, 2)):
        if e < max(s, q):
            yield q, s, p, e, g


@pytest.mark.parametrize("q, s, p, e, g", list(_grid()))
def test_matches_torch_over_the_options(q, s, p, e, g):
    ys = compare_with_torch(lambda x, w, b: F.conv_transpose2d(x, w, b, s, p, e, g, q),
                            lambda x, w, b: _first(TF.conv_transpose2d(_last(x), _last(w), b, s, p, e, g, q)),
                            randn(2, 3, 4, 4), randn(4, 3, 2, 2, seed=1), randn(2 * g, seed=2), dtype=np.float64)
    expected = tuple((n - 1) * s - 2 * p + q * (f - 1) + e + 1 for n, f in ((3, 3), (4, 2)))
    assert ys[0].shape == (2, *expected, 2 * g)


def test_per_axis_options_match_torch():
    s, p, e, g, q = (2, 1), (1, 0), (1, 0), 2, (1, 3)
    compare_with_torch(lambda x, w, b: F.conv_transpose2d(x, w, b, s, p, e, g, q),
                       lambda x, w, b: _first(TF.conv_transpose2d(_last(x), _last(w), b, s, p, e, g, q)),
                       randn(1, 4, 3, 2), randn(2, 3, 2, 3, seed=1), randn(6, seed=2), dtype=np.float64)


@pytest.mark.parametrize("q, s, p, e, g", [(2, 1, 1, 0, 1), (2, 2, 1, 1, 2), (3, 1, 0, 2, 1)])
def test_gradcheck(q, s, p, e, g):
    assert check_gradients(lambda x, w, b: F.conv_transpose2d(x, w, b, s, p, e, g, q),
                           randn(1, 3, 2, 2), randn(2, 2, 3, 2, seed=1), randn(2 * g, seed=2))


def test_second_derivatives_match_torch():
    compare_double_backward_with_torch(
        lambda x, w, b: F.conv_transpose2d(x, w, b, 2, 1, 1, 2, 2),
        lambda x, w, b: _first(TF.conv_transpose2d(_last(x), _last(w), b, 2, 1, 1, 2, 2)),
        randn(1, 3, 2, 4), randn(4, 2, 2, 1, seed=1), randn(2, seed=2))


def test_same_padding_with_dilation_gives_h_s():
    x, w = randn(2, 3, 5, 2), randn(2, 3, 3, 4, seed=1)
    y = F.conv_transpose2d(x, w, stride=2, padding="same", dilation=2)
    assert y.shape == (2, 6, 10, 4)
    # stride 1: the adjoint of a 'same' convolution of extent 5 pads 2 on each side
    np.testing.assert_allclose(F.conv_transpose2d(x, w, padding="same", dilation=2).numpy(),
                               F.conv_transpose2d(x, w, padding=2, dilation=2).numpy(), rtol=1e-6, atol=1e-6)


def test_without_dilation_and_groups_both_paths_agree():
    x, w, b = randn(2, 3, 4, 2), randn(2, 3, 2, 3, seed=1), randn(3, seed=2)
    fused = F.conv_transpose2d(x, w, b, 2, 1, 1).numpy()
    grouped_once = F.conv_transpose2d(np.concatenate([x, x], -1), np.concatenate([w, w]), np.concatenate([b, b]),
                                      2, 1, 1, groups=2).numpy()
    np.testing.assert_allclose(grouped_once, np.concatenate([fused, fused], -1), rtol=1e-5, atol=1e-5)


def test_errors():
    x, w = randn(1, 3, 3, 4), randn(4, 3, 3, 2, seed=1)
    with pytest.raises(ValueError, match=r"output_padding .*smaller than the stride \(2, 2\) or the dilation"):
        F.conv_transpose2d(x, w, stride=2, output_padding=2, dilation=2)
    with pytest.raises(ValueError, match="output_padding"):
        F.conv_transpose2d(x, w, output_padding=1)
    F.conv_transpose2d(x, w, output_padding=1, dilation=2)            # smaller than the dilation: allowed
    with pytest.raises(ValueError, match="dilation must be positive"):
        F.conv_transpose2d(x, w, dilation=0)
    with pytest.raises(ValueError, match="groups must be a positive int"):
        F.conv_transpose2d(x, w, groups=0)
    with pytest.raises(ShapeError, match="groups=3 must divide C_in=4"):
        F.conv_transpose2d(x, w, groups=3)
    with pytest.raises(ShapeError, match=r"bias of shape \(4,\) .* groups=2"):
        F.conv_transpose2d(x, w, randn(2), groups=2)
    with pytest.raises(ShapeError, match="crops the whole output"):
        F.conv_transpose2d(x, w, padding=4, dilation=1)
