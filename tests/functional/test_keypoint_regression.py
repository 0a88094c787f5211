"""soft_argmax_2d and keypoint_mse_loss: values and gradients against torch rewrites (NHWC
here, NCHW in torch), float64 gradient checks and errors."""

import numpy as np
import pytest
import torch

from helpers import check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina import functional as F


def _torch_soft_argmax(heatmaps, beta):
    """Sun et al.'s integral regression on NCHW maps: softmax over H W, expected (x, y)."""
    nchw = heatmaps.permute(0, 3, 1, 2)
    n, k, h, w = nchw.shape
    p = torch.softmax(beta * nchw.reshape(n, k, h * w), dim=-1).reshape(n, k, h, w)
    xs = torch.arange(w, dtype=heatmaps.dtype)
    ys = torch.arange(h, dtype=heatmaps.dtype)
    return torch.stack([(p.sum(2) * xs).sum(-1), (p.sum(3) * ys).sum(-1)], dim=-1)


def _torch_mse(pred, target, weights):
    loss = torch.nn.functional.mse_loss(pred.permute(0, 3, 1, 2), target.permute(0, 3, 1, 2), reduction="none")
    return (loss * weights[:, :, None, None]).mean()


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_soft_argmax_matches_torch(dtype):
    compare_with_torch(lambda h: F.soft_argmax_2d(h, beta=2.5), lambda h: _torch_soft_argmax(h, 2.5),
                       randn(2, 5, 7, 3, seed=1), dtype=dtype)


def test_soft_argmax_gradients_and_a_peaked_map():
    assert check_gradients(lambda h: F.soft_argmax_2d(h, beta=1.5), randn(1, 4, 5, 2, seed=2))
    assert check_second_derivatives(lambda h: F.soft_argmax_2d(h, beta=1.5), randn(1, 3, 4, 2, seed=7))
    heatmaps = np.full((1, 6, 8, 1), -1e3)
    heatmaps[0, 4, 2, 0] = 0.0
    np.testing.assert_allclose(F.soft_argmax_2d(heatmaps).numpy(), [[[2.0, 4.0]]])


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_keypoint_mse_loss_matches_torch(dtype):
    weights = np.array([[1.0, 0.0, 0.5], [1.0, 1.0, 0.0]])
    compare_with_torch(lambda p, t, w: F.keypoint_mse_loss(p, t, w), _torch_mse, randn(2, 4, 5, 3, seed=3),
                       randn(2, 4, 5, 3, seed=4), weights, dtype=dtype, grad=[True, False, False])
    assert check_gradients(lambda p: F.keypoint_mse_loss(p, randn(2, 4, 5, 3, seed=4), weights),
                           randn(2, 4, 5, 3, seed=3))


def test_keypoint_mse_loss_without_weights_is_the_plain_mean():
    p, t = randn(2, 3, 3, 2, seed=5), randn(2, 3, 3, 2, seed=6)
    assert F.keypoint_mse_loss(p, t).numpy() == pytest.approx(((p - t) ** 2).mean(), rel=1e-6)


def test_errors_name_the_shapes():
    with pytest.raises(Exception, match="predicted heatmaps \\(1, 4, 4, 2\\) and targets \\(1, 8, 8, 2\\)"):
        F.keypoint_mse_loss(np.zeros((1, 4, 4, 2)), np.zeros((1, 8, 8, 2)))
    with pytest.raises(Exception, match="target weights need shape \\(1, 2\\)"):
        F.keypoint_mse_loss(np.zeros((1, 4, 4, 2)), np.zeros((1, 4, 4, 2)), np.ones((1, 3)))
    with pytest.raises(Exception, match="soft_argmax_2d: heatmaps need shape"):
        F.soft_argmax_2d(np.zeros((4, 4, 2)))
