"""sharpen, consistency_loss, fixmatch_unlabeled_loss (values, masks and gradients against the
formulas written with torch ops, float64 gradient checks), the ramp-ups and FlexMatch's class
thresholds against NumPy references, and the errors for bad input."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

import lamina
import lamina.functional as F
from helpers import check_gradients, compare_with_torch, randn


def _probs(n: int, c: int, seed: int) -> np.ndarray:
    e = np.exp(randn(n, c, seed=seed, scale=2.0))
    return e / e.sum(axis=1, keepdims=True)


@pytest.mark.parametrize("temperature", [0.5, 1.0, 2.0])
def test_sharpen_matches_torch_and_gradcheck(temperature):
    p = _probs(5, 4, seed=1)

    def reference(t):
        powered = t ** (1.0 / temperature)
        return powered / powered.sum(dim=-1, keepdim=True)

    compare_with_torch(lambda t: F.sharpen(t, temperature), reference, p, dtype=np.float64)
    assert check_gradients(lambda t: F.sharpen(t, temperature), p)


def test_sharpen_with_small_temperature_approaches_one_hot():
    p = np.array([[0.2, 0.5, 0.3]])
    np.testing.assert_allclose(F.sharpen(p, 0.01).numpy(), [[0.0, 1.0, 0.0]], atol=1e-6)
    np.testing.assert_allclose(F.sharpen(p, 1.0).numpy(), p, rtol=1e-6)


def test_rampups_match_the_formulas():
    for step, length in [(0, 10), (3, 10), (10, 10), (25, 10), (-2, 10), (4, 0)]:
        t = min(max(step / length, 0.0), 1.0) if length else 1.0
        assert F.sigmoid_rampup(step, length) == pytest.approx(math.exp(-5.0 * (1.0 - t) ** 2))
        assert F.linear_rampup(step, length) == pytest.approx(t)
    assert F.sigmoid_rampup(0, 10) == pytest.approx(math.exp(-5.0))


@pytest.mark.parametrize("kind", ["mse", "ce"])
@pytest.mark.parametrize("masked", [False, True])
def test_consistency_loss_matches_torch(kind, masked):
    logits, targets = randn(6, 4, seed=2), _probs(6, 4, seed=3)
    mask = (np.arange(6) % 2).astype(np.float64) if masked else None

    def reference(z):
        if kind == "mse":
            per_sample = ((torch.softmax(z, -1) - torch.tensor(targets)) ** 2).mean(-1)
        else:
            per_sample = -(torch.tensor(targets) * torch.log_softmax(z, -1)).sum(-1)
        return (per_sample * (1.0 if mask is None else torch.tensor(mask))).mean()

    compare_with_torch(lambda z: F.consistency_loss(z, targets, kind, mask), reference, logits, dtype=np.float64)
    assert check_gradients(lambda z: F.consistency_loss(z, targets, kind, mask), logits)


def test_consistency_loss_takes_labels_as_one_hot():
    logits, labels = randn(5, 3, seed=4), np.array([0, 2, 1, 1, 0])
    expected = F.consistency_loss(logits, np.eye(3)[labels], "ce").item()
    assert F.consistency_loss(logits, labels, "ce").item() == pytest.approx(expected)


@pytest.mark.parametrize("threshold", [0.5, 0.8, 1.0])
def test_fixmatch_unlabeled_loss_and_mask_match_torch(threshold):
    weak = randn(8, 3, seed=5, scale=3.0)
    weak[0] = [60.0, 0.0, 0.0]  # probability 1 in float64: kept even at threshold 1
    strong = randn(8, 3, seed=6)
    probs = torch.softmax(torch.tensor(weak), -1)
    confidence, pseudo = probs.max(-1)
    expected_mask = (confidence >= threshold).double()

    def reference(s):
        return (torch.nn.functional.cross_entropy(s, pseudo, reduction="none") * expected_mask).mean()

    compare_with_torch(lambda s: F.fixmatch_unlabeled_loss(weak, s, threshold)[0], reference, strong,
                       dtype=np.float64)
    _, mask = F.fixmatch_unlabeled_loss(lamina.tensor(weak, dtype=np.float64), strong, threshold)
    np.testing.assert_array_equal(mask, expected_mask.numpy())
    assert mask[0] == 1.0


def test_fixmatch_loss_sends_no_gradient_to_the_weak_view():
    weak = lamina.tensor(randn(4, 3, seed=7, scale=3.0), requires_grad=True, dtype=np.float64)
    strong = lamina.tensor(randn(4, 3, seed=8), requires_grad=True, dtype=np.float64)
    loss, _ = F.fixmatch_unlabeled_loss(weak, strong, 0.5)
    loss.backward()
    assert weak.grad is None or not np.any(weak.grad)
    assert np.any(strong.grad)


def _usb_style_thresholds(predicted: np.ndarray, num_classes: int, tau: float, warmup: bool) -> np.ndarray:
    """The learning effects counted as the unified benchmark's FlexMatch does: a counter over
    every unlabelled sample's last confident class, -1 standing for none."""
    counter = Counter(predicted.tolist())
    effect = np.zeros(num_classes)
    if max(counter.values()) < len(predicted):
        normaliser = max(counter.values()) if warmup else max(v for k, v in counter.items() if k != -1)
        effect = np.array([counter[c] / normaliser for c in range(num_classes)])
    return tau * effect / (2.0 - effect)


@pytest.mark.parametrize("warmup", [True, False])
@pytest.mark.parametrize("unassigned", [0, 5, 40])
def test_flexmatch_class_thresholds_match_a_counter_reference(warmup, unassigned):
    rng = np.random.default_rng(unassigned)
    predicted = np.concatenate([rng.integers(0, 4, 30), np.full(unassigned, -1)])
    counts = np.bincount(predicted[predicted >= 0], minlength=5)
    thresholds = F.flexmatch_class_thresholds(counts, len(predicted), 0.9, warmup=warmup)
    np.testing.assert_allclose(thresholds, _usb_style_thresholds(predicted, 5, 0.9, warmup), rtol=1e-12)
    assert thresholds[4] == 0.0


def test_flexmatch_thresholds_by_hand():
    # sigma = (6, 3, 0), N = 20: beta = sigma / max(6, 11) with warm-up, sigma / 6 without.
    beta = np.array([6, 3, 0]) / 11
    np.testing.assert_allclose(F.flexmatch_class_thresholds([6, 3, 0], 20, 0.95), 0.95 * beta / (2 - beta))
    np.testing.assert_allclose(F.flexmatch_class_thresholds([6, 3, 0], 20, 0.95, warmup=False, mapping="linear"),
                               0.95 * np.array([1.0, 0.5, 0.0]))
    np.testing.assert_array_equal(F.flexmatch_class_thresholds([0, 0], 10, 0.95), [0.0, 0.0])


def test_errors_name_the_function_and_the_value():
    with pytest.raises(ValueError, match=r"fixmatch_unlabeled_loss: threshold must lie in \(0, 1\].*1.5"):
        F.fixmatch_unlabeled_loss(randn(2, 3), randn(2, 3), 1.5)
    with pytest.raises(ValueError, match="threshold must lie in"):
        F.fixmatch_unlabeled_loss(randn(2, 3), randn(2, 3), 0.0)
    with pytest.raises(ValueError, match="sharpen: temperature T must be > 0, got 0"):
        F.sharpen(_probs(2, 3, 0), 0)
    with pytest.raises(ValueError, match="sharpen: temperature"):
        F.sharpen(_probs(2, 3, 0), -1.0)
    with pytest.raises(ValueError, match="flexmatch_class_thresholds: threshold"):
        F.flexmatch_class_thresholds([1, 2], 10, 1.2)
    with pytest.raises(ValueError, match="num_unlabeled must be an integer >= the total count 3"):
        F.flexmatch_class_thresholds([1, 2], 2)
    with pytest.raises(ValueError, match="mapping must be one of"):
        F.flexmatch_class_thresholds([1, 2], 10, mapping="concave")
    with pytest.raises(ValueError, match="consistency_loss: kind"):
        F.consistency_loss(randn(2, 3), _probs(2, 3, 0), kind="kl")
    with pytest.raises(lamina.errors.ShapeError, match=r"targets of shape \(2, 4\)"):
        F.consistency_loss(randn(2, 3), _probs(2, 4, 0))
    with pytest.raises(ValueError, match="sigmoid_rampup: length must be >= 0"):
        F.sigmoid_rampup(1, -1)
