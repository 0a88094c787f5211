"""The pinball (quantile) loss: values and gradients against a torch computation of
max(q r, (q - 1) r), float64 first and second derivatives, and its minimiser being a quantile."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina import functional as F


def torch_pinball(y_pred, y_true, q, reduction="mean"):
    residual = y_true - y_pred
    losses = torch.maximum(q * residual, (q - 1) * residual)
    if reduction == "none":
        return losses.reshape(len(losses), -1).mean(dim=1)
    return losses.mean() if reduction == "mean" else losses.sum()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_one_level_matches_torch(reduction):
    y_pred, y_true = randn(6, 3, seed=1), randn(6, 3, seed=2)
    compare_with_torch(lambda a, b: F.pinball_loss(a, b, 0.3, reduction=reduction),
                       lambda a, b: torch_pinball(a, b, 0.3, reduction), y_pred, y_true, dtype=np.float64)


def test_several_levels_share_the_target_and_match_torch():
    levels = [0.05, 0.5, 0.95]
    y_pred, y_true = randn(8, 3, seed=3), randn(8, seed=4)
    compare_with_torch(lambda a, b: F.pinball_loss(a, b, levels),
                       lambda a, b: torch_pinball(a, b[:, None], torch.tensor(levels, dtype=a.dtype)),
                       y_pred, y_true, dtype=np.float64)
    assert F.pinball_loss(y_pred, y_true[:, None], levels).item() == pytest.approx(
        F.pinball_loss(y_pred, np.repeat(y_true[:, None], 3, axis=1), levels).item())


def test_gradients_in_float64():
    y_pred, y_true = randn(5, 2, seed=5), randn(5, 2, seed=6)
    assert check_gradients(lambda a, b: F.pinball_loss(a, b, [0.2, 0.7]), y_pred, y_true)
    assert check_second_derivatives(lambda a, b: F.pinball_loss(a, b, 0.8) * F.pinball_loss(a, b, 0.8),
                                    y_pred, y_true)


def test_the_minimiser_of_the_mean_loss_is_the_quantile():
    values = np.random.default_rng(7).standard_normal(401)
    grid = np.linspace(-2.5, 2.5, 501)
    for q in (0.1, 0.5, 0.9):
        costs = [F.pinball_loss(np.full(401, c), values, q).item() for c in grid]
        assert grid[int(np.argmin(costs))] == pytest.approx(np.quantile(values, q), abs=0.02)


def test_clear_errors():
    with pytest.raises(ValueError, match="in \\(0, 1\\)"):
        F.pinball_loss(np.zeros(3), np.zeros(3), 1.0)
    with pytest.raises(ValueError, match="2 quantile levels"):
        F.pinball_loss(np.zeros((3, 3)), np.zeros(3), [0.1, 0.9])
