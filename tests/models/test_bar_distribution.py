"""The bar (Riemann) distribution of prior-fitted networks: log-density, mean and quantiles
against NumPy hand computations, the log-density and mean against a float64 torch rewrite
(values and gradients), float64 gradient checks, the normalization of the density with tails,
the borders from samples and the errors."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.special import ndtri

import lamina
from helpers import check_gradients, randn
from lamina.errors import ShapeError
from lamina.models import BarPrediction, bar_borders, bar_log_density, bar_mean, bar_quantiles, bar_tail_scales

BORDERS = np.array([-2.0, -1.0, -0.2, 0.5, 1.5, 3.0])            # 5 buckets of unequal widths


def _softmax(logits):
    e = np.exp(logits - logits.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def numpy_density(logits, borders, y, tails):
    """p(y) written case by case from the definition (probabilities (..., K), y (...))."""
    shape = np.broadcast_shapes(y.shape, logits.shape[:-1])
    p, y = np.broadcast_to(_softmax(logits), shape + logits.shape[-1:]), np.broadcast_to(y, shape)
    k = len(borders) - 1
    s0, s1 = (borders[1] - borders[0]) / ndtri(0.75), (borders[-1] - borders[-2]) / ndtri(0.75)
    bucket = np.clip(np.searchsorted(borders, y, side="right") - 1, 0, k - 1)
    inner = np.take_along_axis(p, bucket[..., None], -1)[..., 0] / np.diff(borders)[bucket]
    inner = np.where((y < borders[0]) | (y > borders[-1]), 0.0, inner)
    if not tails:
        return inner
    left = p[..., 0] * 2 / (s0 * math.sqrt(2 * math.pi)) * np.exp(-(borders[1] - y) ** 2 / (2 * s0 ** 2))
    right = p[..., -1] * 2 / (s1 * math.sqrt(2 * math.pi)) * np.exp(-(y - borders[-2]) ** 2 / (2 * s1 ** 2))
    return np.where(y < borders[1], left, np.where(y >= borders[-2], right, inner))


def torch_log_density(logits, y, borders, tails=True):
    """The float64 torch rewrite: log_softmax gathered at y's bucket, plus -log width or the tail term."""
    b = torch.tensor(borders)
    k = len(borders) - 1
    bucket = (torch.searchsorted(b, y.detach(), right=True) - 1).clamp(0, k - 1)
    log_p = torch.log_softmax(logits, -1).gather(-1, bucket[..., None])[..., 0]
    widths = b[1:] - b[:-1]
    inner = log_p - torch.log(widths[bucket])
    if not tails:
        return inner
    s0, s1 = widths[0] / ndtri(0.75), widths[-1] / ndtri(0.75)
    left = log_p + torch.distributions.HalfNormal(s0, validate_args=False).log_prob(b[1] - y)
    right = log_p + torch.distributions.HalfNormal(s1, validate_args=False).log_prob(y - b[-2])
    return torch.where(bucket == 0, left, torch.where(bucket == k - 1, right, inner))


def torch_mean(logits, borders, tails=True):
    b = torch.tensor(borders)
    mids = (b[1:] + b[:-1]) / 2
    if tails:
        widths = b[1:] - b[:-1]
        mids = mids.clone()
        mids[0] = b[1] - widths[0] / ndtri(0.75) * math.sqrt(2 / math.pi)
        mids[-1] = b[-2] + widths[-1] / ndtri(0.75) * math.sqrt(2 / math.pi)
    return (torch.softmax(logits, -1) * mids).sum(-1)


# y in every bucket, in both tails and, without tails, outside the support
Y = np.array([[-3.1, -1.7, -0.6, 0.1], [0.9, 2.2, 4.0, -0.21]])


@pytest.mark.parametrize("tails", [True, False])
def test_log_density_matches_the_definition(float64, tails):
    logits = randn(2, 4, 5, seed=1)
    ours = bar_log_density(lamina.tensor(logits), BORDERS, Y, tails=tails).numpy()
    with np.errstate(divide="ignore"):
        np.testing.assert_allclose(ours, np.log(numpy_density(logits, BORDERS, Y, tails)), rtol=1e-12)
    if not tails:
        assert np.isneginf(ours[0, 0]) and np.isneginf(ours[1, 2])


@pytest.mark.parametrize("tails", [True, False])
def test_the_density_integrates_to_one_and_its_mean_is_the_bar_mean(float64, tails):
    logits = randn(3, 5, seed=2)
    grid = np.linspace(-30.0, 30.0, 600_001)
    density = numpy_density(logits[:, None], BORDERS, grid, tails)
    step = grid[1] - grid[0]
    np.testing.assert_allclose(density.sum(-1) * step, 1.0, atol=1e-4)
    mean = bar_mean(lamina.tensor(logits), BORDERS, tails=tails).numpy()
    np.testing.assert_allclose(mean, (density * grid).sum(-1) * step, atol=1e-4)
    np.testing.assert_allclose(BarPrediction(logits, BORDERS, tails).mean, mean, rtol=1e-12)


def test_mean_by_hand_without_tails(float64):
    logits = np.log(np.array([0.1, 0.2, 0.3, 0.25, 0.15]))
    mids = np.array([-1.5, -0.6, 0.15, 1.0, 2.25])
    by_hand = 0.1 * mids[0] + 0.2 * mids[1] + 0.3 * mids[2] + 0.25 * mids[3] + 0.15 * mids[4]
    assert bar_mean(lamina.tensor(logits), BORDERS, tails=False).numpy() == pytest.approx(by_hand, rel=1e-12)


@pytest.mark.parametrize("tails", [True, False])
def test_quantiles_invert_the_cdf(tails):
    probs = _softmax(randn(2, 5, seed=3))
    levels = np.array([0.01, 0.1, 0.37, 0.5, 0.8, 0.99])
    ours = bar_quantiles(probs, BORDERS, levels, tails=tails)
    assert ours.shape == (2, 6) and np.all(np.diff(ours, axis=-1) > 0)
    grid = np.linspace(-30.0, 30.0, 600_001)
    density = numpy_density(np.log(probs)[:, None], BORDERS, grid, tails)
    cdf = np.cumsum(density, axis=-1) * (grid[1] - grid[0])
    for row in range(2):
        np.testing.assert_allclose(np.interp(ours[row], grid, cdf[row]), levels, atol=2e-4)


def test_quantiles_by_hand():
    borders = np.array([0.0, 1.0, 2.0, 4.0])
    probs = np.array([0.2, 0.5, 0.3])
    # without tails: the CDF is linear within buckets; 0.45 is half-way through the middle one
    np.testing.assert_allclose(bar_quantiles(probs, borders, [0.1, 0.45, 0.85], tails=False), [0.5, 1.5, 3.0])
    assert BarPrediction(np.log(probs), borders, tails=False).median == pytest.approx(1.6, rel=1e-12)
    # with tails: the left tail holds 0.2 below b_1 = 1, half of it within the old bucket [0, 1]
    np.testing.assert_allclose(bar_quantiles(probs, borders, [0.1, 0.45], tails=True), [0.0, 1.5], atol=1e-12)
    right = bar_quantiles(probs, borders, [0.85], tails=True)[0]
    np.testing.assert_allclose(right, 2.0 + 2.0 / ndtri(0.75) * ndtri(0.5 + 0.5 * 0.5), rtol=1e-12)
    np.testing.assert_allclose(right, 4.0, rtol=1e-12)


@pytest.mark.parametrize("tails", [True, False])
def test_log_density_and_mean_match_the_torch_rewrite(float64, tails):
    logits, y = randn(2, 4, 5, seed=4), Y.copy()
    if not tails:
        y = np.clip(y, BORDERS[0], BORDERS[-1] - 1e-9)
    ours_logits, ours_y = lamina.tensor(logits, requires_grad=True), lamina.tensor(y, requires_grad=True)
    theirs_logits, theirs_y = torch.tensor(logits, requires_grad=True), torch.tensor(y, requires_grad=True)
    ours = bar_log_density(ours_logits, BORDERS, ours_y, tails=tails)
    theirs = torch_log_density(theirs_logits, theirs_y, BORDERS, tails)
    np.testing.assert_allclose(ours.numpy(), theirs.detach().numpy(), rtol=1e-12)
    up = randn(2, 4, seed=5)
    (ours * lamina.tensor(up)).sum().backward()
    (theirs * torch.tensor(up)).sum().backward()
    np.testing.assert_allclose(ours_logits.grad, theirs_logits.grad.numpy(), rtol=1e-10, atol=1e-14)
    if tails:                                       # y moves the density in the tails only
        np.testing.assert_allclose(ours_y.grad, theirs_y.grad.numpy(), rtol=1e-10, atol=1e-14)
        assert np.count_nonzero(ours_y.grad) == 4
    else:
        assert theirs_y.grad is None and (ours_y.grad is None or not np.any(ours_y.grad))
    ours_logits.grad = None
    theirs_logits.grad = None
    ours_mean = bar_mean(ours_logits, BORDERS, tails=tails)
    theirs_mean = torch_mean(theirs_logits, BORDERS, tails)
    np.testing.assert_allclose(ours_mean.numpy(), theirs_mean.detach().numpy(), rtol=1e-12)
    (ours_mean * lamina.tensor(up)).sum().backward()
    (theirs_mean * torch.tensor(up)).sum().backward()
    np.testing.assert_allclose(ours_logits.grad, theirs_logits.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_gradients(float64):
    logits = randn(2, 4, 5, seed=6)
    assert check_gradients(lambda z, y: bar_log_density(z, BORDERS, y), logits, Y)
    assert check_gradients(lambda z: bar_log_density(z, BORDERS, Y, tails=False), np.clip(logits, -3, 3))
    assert check_gradients(lambda z: bar_mean(z, BORDERS), logits)


def test_borders_from_samples_hold_equal_counts():
    samples = np.random.default_rng(0).standard_normal(10_000)
    borders = bar_borders(samples, 8)
    assert borders.shape == (9,) and borders[0] == samples.min() and borders[-1] == samples.max()
    counts = np.histogram(samples, borders)[0]
    assert counts.min() >= 1249 and counts.max() <= 1251
    np.testing.assert_allclose(bar_tail_scales(borders), np.diff(borders)[[0, -1]] / ndtri(0.75))


def test_errors():
    with pytest.raises(ShapeError, match=r"bar_log_density: got logits of shape \(2, 4\); expected \(..., 5\)"):
        bar_log_density(np.zeros((2, 4)), BORDERS, np.zeros(2))
    with pytest.raises(ShapeError, match=r"got y of shape \(3,\).*expected y of shape \(2,\)"):
        bar_log_density(np.zeros((2, 5)), BORDERS, np.zeros(3))
    with pytest.raises(ValueError, match="increasing"):
        bar_mean(np.zeros(3), [0.0, 2.0, 1.0, 3.0])
    with pytest.raises(ValueError, match="repeated borders"):
        bar_borders(np.repeat([0.0, 1.0], 50), 4)
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        bar_quantiles(np.full(5, 0.2), BORDERS, [0.0, 0.5])
