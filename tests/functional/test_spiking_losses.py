"""Losses on spike records (T, batch, C) against their formulas written in PyTorch."""

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import functional as F

TARGETS = np.array([0, 3, 1, 3, 2])


def _record(seed=0):
    """Spike-like values in [0, 1] (T=6, batch 5, C=4); a float record exercises the same formula."""
    return np.random.default_rng(seed).random((6, 5, 4))


def torch_ce_rate(spk):
    steps = spk.shape[0]
    return sum(torch.nn.functional.cross_entropy(spk[t], torch.tensor(TARGETS)) for t in range(steps)) / steps


def torch_ce_count(spk):
    return torch.nn.functional.cross_entropy(spk.sum(0), torch.tensor(TARGETS))


def torch_mse_count(spk, correct_rate, incorrect_rate):
    steps, _, classes = spk.shape
    goal = torch.full((len(TARGETS), classes), float(int(steps * incorrect_rate)), dtype=spk.dtype)
    goal[torch.arange(len(TARGETS)), torch.tensor(TARGETS)] = float(int(steps * correct_rate))
    return torch.nn.functional.mse_loss(spk.sum(0), goal) / steps


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_cross_entropy_losses_match_torch(dtype):
    compare_with_torch(lambda s: F.ce_rate_loss(s, TARGETS), torch_ce_rate, _record(), dtype=dtype)
    compare_with_torch(lambda s: F.ce_count_loss(s, TARGETS), torch_ce_count, _record(1), dtype=dtype)


@pytest.mark.parametrize("rates", [(1.0, 0.0), (0.8, 0.25)])
def test_mse_count_loss_matches_torch(rates):
    compare_with_torch(lambda s: F.mse_count_loss(s, TARGETS, *rates), lambda s: torch_mse_count(s, *rates),
                       _record(2), dtype=np.float64)


def test_gradients_pass_a_gradient_check():
    assert check_gradients(lambda s: F.ce_rate_loss(s, TARGETS) + F.ce_count_loss(s, TARGETS)
                           + F.mse_count_loss(s, TARGETS, 0.9, 0.1), randn(6, 5, 4, seed=3))


def test_perfect_counts_cost_nothing():
    steps = 4
    spk = np.zeros((steps, 3, 2))
    spk[:, np.arange(3), [1, 0, 1]] = 1
    assert F.mse_count_loss(spk, np.array([1, 0, 1])).item() == 0.0


def test_bad_records_and_targets_are_refused():
    with pytest.raises(lamina.ShapeError, match=r"ce_rate_loss: expected a spike record of shape \(time, batch, "
                                                r"classes\), time first, got shape \(5, 4\)"):
        F.ce_rate_loss(np.zeros((5, 4)), TARGETS)
    with pytest.raises(lamina.ShapeError, match=r"ce_count_loss: targets must be class indices .* \(5,\), got float64"):
        F.ce_count_loss(_record(), TARGETS.astype(float))
    with pytest.raises(ValueError, match=r"mse_count_loss: targets must lie in \[0, 4\)"):
        F.mse_count_loss(_record(), TARGETS + 1)
    with pytest.raises(ValueError, match=r"mse_count_loss: correct_rate must be a firing rate in \[0, 1\], got 2"):
        F.mse_count_loss(_record(), TARGETS, correct_rate=2)
