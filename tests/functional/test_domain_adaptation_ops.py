"""gradient_reversal, mmd_loss and coral_loss: values, gradients and second derivatives
against PyTorch (a custom autograd.Function for the reversal, the formulas written with
torch ops for the losses), float64 gradient checks and the errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
import lamina.functional as F
from helpers import (
    check_gradients,
    check_second_derivatives,
    compare_double_backward_with_torch,
    compare_with_torch,
    randn,
)
from lamina.errors import ShapeError
from torch_gradient_reversal import TorchReversal


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("lambda_", [1.0, 0.3, 0.0])
def test_gradient_reversal_matches_torch(dtype, lambda_):
    compare_with_torch(lambda x: F.gradient_reversal(x, lambda_) * x,
                       lambda x: TorchReversal.apply(x, lambda_) * x, randn(3, 4), dtype=dtype)


def test_gradient_reversal_flips_and_scales_the_gradient():
    x = lamina.tensor(randn(2, 3), requires_grad=True)
    y = F.gradient_reversal(x, 0.5)
    np.testing.assert_array_equal(y.numpy(), x.numpy())
    (y * 2.0).sum().backward()
    np.testing.assert_allclose(x.grad, np.full((2, 3), -1.0))


def test_gradient_reversal_second_derivatives_match_torch():
    compare_double_backward_with_torch(lambda x: F.gradient_reversal(x * x * x, 0.7).sin(),
                                       lambda x: TorchReversal.apply(x * x * x, 0.7).sin(), randn(3, 2))


def test_gradient_reversal_gradcheck_with_minus_one():
    # lambda = -1 makes the backward the true derivative, so the numerical gradient applies
    fn = lambda x: F.gradient_reversal(x.tanh(), -1.0) * x  # noqa: E731
    assert check_gradients(fn, randn(3, 3))
    assert check_second_derivatives(fn, randn(3, 3))


def test_gradient_reversal_rejects_a_bad_lambda():
    with pytest.raises(ValueError, match="gradient_reversal"):
        F.gradient_reversal(lamina.tensor(randn(2)), "1")


def torch_mmd(s, t, bandwidths):
    z = torch.cat([s, t])
    d = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    k = sum(torch.exp(-d / g) for g in bandwidths)
    n = s.shape[0]
    return k[:n, :n].mean() + k[n:, n:].mean() - 2 * k[:n, n:].mean()


def default_bandwidths(s, t, mul=2.0, num=5):
    z = np.concatenate([s, t])
    d = ((z[:, None, :] - z[None, :, :]) ** 2).sum(-1)
    base = d.sum() / (len(z) ** 2 - len(z))
    return [base * mul ** (u - num // 2) for u in range(num)]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_mmd_matches_torch_with_given_bandwidths(dtype):
    s, t = randn(5, 3, seed=1), randn(4, 3, seed=2) + 0.5
    compare_with_torch(lambda a, b: F.mmd_loss(a, b, bandwidths=[0.5, 2.0, 8.0]),
                       lambda a, b: torch_mmd(a, b, [0.5, 2.0, 8.0]), s, t, dtype=dtype)


def test_mmd_default_bandwidths_are_constants_around_the_mean_distance():
    s, t = randn(6, 2, seed=3), randn(5, 2, seed=4) * 2.0
    bandwidths = default_bandwidths(s, t)
    compare_with_torch(F.mmd_loss, lambda a, b: torch_mmd(a, b, bandwidths), s, t, dtype=np.float64)
    assert check_gradients(lambda a, b: F.mmd_loss(a, b, bandwidths=bandwidths), s, t)


def test_mmd_is_near_zero_for_one_distribution_and_grows_with_a_shift():
    rng = np.random.default_rng(0)
    same = F.mmd_loss(rng.standard_normal((200, 2)), rng.standard_normal((200, 2))).item()
    shifted = F.mmd_loss(rng.standard_normal((200, 2)), rng.standard_normal((200, 2)) + 1.5).item()
    assert abs(same) < 0.05 < 0.5 < shifted


def torch_coral(s, t):
    def cov(x):
        c = x - x.mean(0, keepdim=True)
        return c.T @ c / (x.shape[0] - 1)
    d = s.shape[1]
    return ((cov(s) - cov(t)) ** 2).sum() / (4 * d * d)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_coral_matches_torch(dtype):
    compare_with_torch(F.coral_loss, torch_coral, randn(6, 3, seed=5), randn(4, 3, seed=6) * 1.7, dtype=dtype)


def test_coral_equals_torch_cov_formula_and_gradchecks():
    s, t = randn(7, 4, seed=7), randn(5, 4, seed=8)
    d = 4
    expected = ((np.cov(s, rowvar=False) - np.cov(t, rowvar=False)) ** 2).sum() / (4 * d * d)
    value = F.coral_loss(lamina.tensor(s, dtype=np.float64), lamina.tensor(t, dtype=np.float64)).item()
    assert abs(value - expected) < 1e-12
    assert check_gradients(F.coral_loss, s, t)
    compare_double_backward_with_torch(F.coral_loss, torch_coral, s, t)


@pytest.mark.parametrize("fn", [F.mmd_loss, F.coral_loss])
def test_domain_losses_reject_mismatched_features(fn):
    with pytest.raises(ShapeError, match="features"):
        fn(randn(4, 3), randn(4, 2))
    with pytest.raises(ShapeError, match=r"\(samples, features\)"):
        fn(randn(4), randn(4))


def test_coral_needs_two_samples_and_mmd_positive_bandwidths():
    with pytest.raises(ShapeError, match="at least 2"):
        F.coral_loss(randn(1, 3), randn(4, 3))
    with pytest.raises(ValueError, match="bandwidths"):
        F.mmd_loss(randn(3, 2), randn(3, 2), bandwidths=[1.0, 0.0])
