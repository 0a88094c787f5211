"""Calibration: ECE and MCE against a direct per-sample computation and against torchmetrics'
definition (written here, torchmetrics is not a dependency), the reliability diagram and its
PNG, and temperature scaling (a known temperature recovered, an over-confident digits model
made better calibrated on held-out data)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from lamina import functional as F
from lamina import nn, optim
from lamina.data import load_digits, train_val_test_split
from lamina.train import Trainer
from lamina.train.calibration import (
    TemperatureScaling,
    expected_calibration_error,
    maximum_calibration_error,
    negative_log_likelihood,
    plot_reliability_diagram,
    reliability_diagram,
)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def random_predictions(n=500, classes=5, seed=0, sharpness=3.0):
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, classes)) * sharpness
    labels = np.where(rng.random(n) < 0.7, logits.argmax(axis=1), rng.integers(0, classes, n))
    return softmax(logits), labels


def torchmetrics_calibration_error(probs, labels, n_bins, norm):
    """torchmetrics' multiclass calibration_error: bins from torch.bucketize(right=True) - 1 over
    linspace(0, 1, n_bins + 1), per-bin accuracy and confidence by scatter_add."""
    probs, labels = torch.tensor(probs), torch.tensor(labels)
    confidences, predictions = probs.max(dim=1)
    accuracies = (predictions == labels).to(confidences.dtype)
    boundaries = torch.linspace(0, 1, n_bins + 1, dtype=confidences.dtype)
    indices = torch.bucketize(confidences, boundaries, right=True) - 1
    count = torch.zeros(n_bins + 1, dtype=confidences.dtype).scatter_add_(0, indices, torch.ones_like(confidences))
    conf = torch.zeros_like(count).scatter_add_(0, indices, confidences)
    acc = torch.zeros_like(count).scatter_add_(0, indices, accuracies)
    conf, acc = torch.nan_to_num(conf / count), torch.nan_to_num(acc / count)
    if norm == "l1":
        return float(torch.sum(torch.abs(acc - conf) * count / count.sum()))
    return float(torch.max(torch.abs(acc - conf)))


@pytest.mark.parametrize("n_bins", [1, 10, 15])
@pytest.mark.parametrize("seed", [0, 1])
def test_ece_and_mce_equal_torchmetrics_definition(n_bins, seed):
    probs, labels = random_predictions(seed=seed)
    assert probs.max() < 1.0                  # torchmetrics gives a confidence of exactly 1 a bin of its own
    assert expected_calibration_error(probs, labels, n_bins) == pytest.approx(
        torchmetrics_calibration_error(probs, labels, n_bins, "l1"), abs=1e-12)
    assert maximum_calibration_error(probs, labels, n_bins) == pytest.approx(
        torchmetrics_calibration_error(probs, labels, n_bins, "max"), abs=1e-12)


def test_ece_equals_a_direct_per_sample_computation():
    probs, labels = random_predictions(n=300, seed=3)
    confidence, correct = probs.max(axis=1), probs.argmax(axis=1) == labels
    n_bins, total = 7, 0.0
    for b in range(n_bins):
        lo, hi = b / n_bins, (b + 1) / n_bins
        members = (confidence >= lo) & ((confidence < hi) if b < n_bins - 1 else (confidence <= hi))
        if members.any():
            total += members.mean() * abs(correct[members].mean() - confidence[members].mean())
    assert expected_calibration_error(probs, labels, n_bins) == pytest.approx(total, abs=1e-12)
    diagram = reliability_diagram(probs, labels, n_bins)
    assert diagram.counts.sum() == 300 and len(diagram.edges) == n_bins + 1


def test_perfectly_confident_and_right_is_calibrated_and_binary_probabilities_work():
    labels = np.array([0, 1, 2, 1])
    assert expected_calibration_error(np.eye(3)[labels], labels) == 0.0        # confidence 1 in the last bin
    p = np.array([0.9, 0.2, 0.6, 0.4])                                          # class 1's probability
    y = np.array([1, 0, 0, 1])                                                  # right, right, wrong, wrong
    assert expected_calibration_error(p, y, n_bins=10) == pytest.approx(       # confidences 0.9, 0.8, 0.6, 0.6
        (abs(1 - 0.9) + abs(1 - 0.8) + 2 * abs(0 - 0.6)) / 4)


def test_reliability_diagram_png_is_written(tmp_path):
    probs, labels = random_predictions(seed=4)
    path = plot_reliability_diagram(probs, labels, tmp_path / "reliability.png", n_bins=10)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reliability.png"]     # no temporary file left


def test_temperature_scaling_recovers_a_known_temperature():
    rng = np.random.default_rng(5)
    true_logits = rng.standard_normal((4000, 6)) * 2
    labels = np.array([rng.choice(6, p=p) for p in softmax(true_logits)])       # calibrated at T = 1
    scaling = TemperatureScaling().fit(true_logits * 2.5, labels)              # over-confident by 2.5
    assert scaling.temperature == pytest.approx(2.5, rel=0.06)
    assert scaling.nll_after < scaling.nll_before
    assert negative_log_likelihood(true_logits * 2.5, labels, scaling.temperature) == pytest.approx(scaling.nll_after)
    grid = np.linspace(1.5, 4, 251)                                            # the search found the minimum
    assert scaling.nll_after <= min(negative_log_likelihood(true_logits * 2.5, labels, t) for t in grid) + 1e-9


def test_temperature_scaling_calibrates_an_over_confident_digits_model():
    x, y = load_digits(size=8)
    x = x.astype(np.float32) / 255
    (x_train, y_train), (x_val, y_val), (x_test, y_test) = train_val_test_split(x, y, val=0.3, test=0.3, seed=0)
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Dense(128, activation="relu"), nn.Dense(10))
    trainer = Trainer(model, lambda out, labels: F.categorical_cross_entropy(out, labels, from_logits=True),
                      optim.Adam(model, lr=1e-2), metrics=(), verbose=0)
    trainer.fit((x_train[:300], y_train[:300]), epochs=60, batch_size=32, seed=0)     # over-fits a small set
    model.eval()
    with lamina.no_grad():
        val_logits, test_logits = model(x_val).numpy(), model(x_test).numpy()
    scaling = TemperatureScaling().fit(val_logits, y_val)
    assert scaling.temperature > 1.2                                           # over-confident: T > 1
    before, after = softmax(test_logits.astype(np.float64)), scaling.predict_proba(test_logits)
    assert negative_log_likelihood(scaling.transform(test_logits), y_test) < negative_log_likelihood(test_logits,
                                                                                                      y_test)
    assert expected_calibration_error(after, y_test) < expected_calibration_error(before, y_test)
    np.testing.assert_array_equal(after.argmax(axis=1), before.argmax(axis=1))    # the predictions stay


def test_bad_inputs_give_named_errors():
    probs, labels = random_predictions(n=10)
    with pytest.raises(ValueError, match="reliability_diagram: n_bins must be a positive int"):
        reliability_diagram(probs, labels, 0)
    with pytest.raises(ValueError, match="probs must be probabilities"):
        expected_calibration_error(probs * 3, labels)
    with pytest.raises(ValueError, match=r"expected probs of shape \(N, C\)"):
        expected_calibration_error(probs, labels[:5])
    with pytest.raises(RuntimeError, match="TemperatureScaling.transform: call fit"):
        TemperatureScaling().transform(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="TemperatureScaling.fit: labels must be class indices"):
        TemperatureScaling().fit(np.zeros((2, 3)), np.array([0, 3]))
