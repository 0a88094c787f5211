"""unfold/fold (channels-last im2col and col2im) against torch.nn.functional.unfold/fold."""

import numpy as np
import pytest
import torch
from tests.helpers import assert_close, check_gradients, compare_with_torch, randn

import lamina
from lamina import functional as F
from lamina import nn
from lamina.errors import ShapeError

GEOMETRIES = [
    dict(kernel_size=3),
    dict(kernel_size=(2, 3), stride=2),
    dict(kernel_size=3, padding=1, stride=2),
    dict(kernel_size=(3, 2), dilation=(2, 1), padding=(2, 1)),
    dict(kernel_size=1),
    dict(kernel_size=2, stride=3, dilation=2, padding=1),
]


def _rows_to_torch(cols, kernel, c):
    """lamina's (N, L, f_h f_w C) rows in torch's (N, C f_h f_w, L) layout."""
    n, num, _ = cols.shape
    fh, fw = kernel
    return cols.reshape(n, num, fh, fw, c).permute(0, 4, 2, 3, 1).reshape(n, c * fh * fw, num)


def _rows_from_torch(cols, kernel, c):
    n, _, num = cols.shape
    fh, fw = kernel
    return cols.reshape(n, c, fh, fw, num).permute(0, 4, 2, 3, 1).reshape(n, num, fh * fw * c)


def _kernel(g):
    k = g["kernel_size"]
    return (k, k) if isinstance(k, int) else k


@pytest.mark.parametrize("g", GEOMETRIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_unfold_matches_torch(g, dtype):
    x = randn(2, 7, 6, 3, seed=1)
    def theirs(t):
        return _rows_from_torch(torch.nn.functional.unfold(t.permute(0, 3, 1, 2), **g), _kernel(g), 3)

    compare_with_torch(lambda t: F.unfold(t, **g), theirs, x, dtype=dtype)


@pytest.mark.parametrize("g", GEOMETRIES)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fold_matches_torch(g, dtype):
    size = (7, 6)
    rows = F.unfold(np.zeros((1, *size, 3)), **g).shape
    cols = randn(2, rows[1], rows[2], seed=2)
    def theirs(t):
        return torch.nn.functional.fold(_rows_to_torch(t, _kernel(g), 3), size, **g).permute(0, 2, 3, 1)

    compare_with_torch(lambda t: F.fold(t, size, **g), theirs, cols, dtype=dtype)


@pytest.mark.parametrize("g", GEOMETRIES[:4])
def test_gradients_are_exact(g):
    x = randn(2, 6, 5, 2, seed=3)
    assert check_gradients(lambda t: F.unfold(t, **g), x)
    rows = F.unfold(np.zeros((1, 6, 5, 2)), **g).shape
    assert check_gradients(lambda t: F.fold(t, (6, 5), **g), randn(2, rows[1], rows[2], seed=4))


def test_convolution_is_unfold_times_the_flattened_weights():
    x, w = randn(2, 9, 8, 3, seed=5), randn(4, 3, 3, 3, seed=6)
    via_rows = F.unfold(lamina.tensor(x, dtype=np.float64), 3, padding=1, stride=2).numpy() @ w.reshape(4, -1).T
    conv = F.conv2d(lamina.tensor(x, dtype=np.float64), lamina.tensor(w, dtype=np.float64), stride=2, padding=1).numpy()
    assert_close(via_rows.reshape(conv.shape), conv, 1e-12)


def test_fold_of_unfold_counts_the_windows_covering_each_pixel():
    x = randn(1, 5, 5, 2, seed=7)
    back = F.fold(F.unfold(lamina.tensor(x, dtype=np.float64), 3, padding=1), (5, 5), 3, padding=1).numpy()
    counts = F.fold(F.unfold(np.ones((1, 5, 5, 1)), 3, padding=1), (5, 5), 3, padding=1).numpy()
    assert counts[0, 0, 0, 0] == 4 and counts[0, 2, 2, 0] == 9
    assert_close(back, x * counts, 1e-12)


def test_layers_and_config_round_trip():
    x = randn(2, 8, 8, 3, seed=8).astype(np.float32)
    unfold, fold = nn.Unfold(2, stride=2), nn.Fold((8, 8), 2, stride=2)
    rows = unfold(x)
    assert rows.shape == (2, 16, 12)
    assert_close(fold(rows).numpy(), x, 0)   # non-overlapping windows: fold inverts unfold
    for layer in (unfold, fold):
        copy = nn.layer_from_config(nn.layer_to_config(layer))
        assert type(copy) is type(layer) and repr(copy) == repr(layer)
    assert "output_size=(8, 8)" in repr(fold)


def test_bad_input_names_the_op_and_shapes():
    with pytest.raises(ShapeError, match=r"unfold: expected x of shape \(N, H, W, C\).*\(2, 8, 8\)"):
        F.unfold(np.zeros((2, 8, 8)), 2)
    with pytest.raises(ShapeError, match=r"unfold: a window of \(5, 5\).*\(3, 3\)"):
        F.unfold(np.zeros((1, 3, 3, 1)), 5)
    with pytest.raises(ShapeError, match=r"fold: rows of shape \(1, 5, 4\).*expected \(N, 16, a multiple of 4\)"):
        F.fold(np.zeros((1, 5, 4)), (8, 8), 2, stride=2)
    with pytest.raises(ValueError, match="unfold: stride must be positive"):
        F.unfold(np.zeros((1, 3, 3, 1)), 2, stride=0)


def test_layers_infer_their_output_shapes_so_later_layers_build():
    model = nn.Sequential(nn.Upsample(scale_factor=1.5, mode="bilinear"), nn.Unfold(3, stride=3), nn.Dense(4))
    model.build((None, 6, 6, 2))
    assert model[2].built and model[2].weight.shape == (18, 4)
    assert nn.Upsample(size=(5, 7)).compute_output_shape((2, 3, 3, 1)) == (2, 5, 7, 1)
    assert nn.Upsample(scale_factor=(2, 0.5)).compute_output_shape((None, 3, None, 4)) == (None, 6, None, 4)
    assert nn.Fold((6, 6), 2, stride=2).compute_output_shape((None, 9, 12)) == (None, 6, 6, 3)
    x = np.zeros((1, 6, 6, 2), np.float32)
    assert model(x).shape == (1, 9, 4)
