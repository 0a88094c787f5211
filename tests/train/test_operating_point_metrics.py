"""Keras's metrics FBetaScore, PrecisionAtRecall, RecallAtPrecision, SensitivityAtSpecificity,
SpecificityAtSensitivity, cosine similarity and log-cosh error, against scikit-learn, torch
or the formula."""

import numpy as np
import pytest
import torch
from sklearn.metrics import fbeta_score, precision_recall_curve, roc_curve

import lamina
from lamina import nn, optim
from lamina.train import (
    FBetaScore,
    PrecisionAtRecall,
    RecallAtPrecision,
    SensitivityAtSpecificity,
    SpecificityAtSensitivity,
    Trainer,
    cosine_similarity,
    log_cosh_error,
)


def binary_scores(n=120, seed=0):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, n)
    return np.round(rng.standard_normal(n) + 1.2 * labels, 1), labels      # rounded: tied scores too


@pytest.mark.parametrize("average", ("macro", "micro", "weighted"))
@pytest.mark.parametrize("beta", (0.5, 2.0))
def test_fbeta_equals_sklearn_with_and_without_weights(beta, average):
    rng = np.random.default_rng(1)
    labels, scores, weights = rng.integers(0, 3, 50), rng.standard_normal((50, 3)), rng.uniform(0, 2, 50)
    for w in (None, weights):
        metric = FBetaScore(beta, average)
        metric.update(scores[:20], labels[:20], None if w is None else w[:20])
        metric.update(scores[20:], labels[20:], None if w is None else w[20:])
        expected = fbeta_score(labels, scores.argmax(axis=1), beta=beta, average=average, sample_weight=w,
                               zero_division=0)
        assert metric.result() == pytest.approx(expected, rel=1e-12)


def sklearn_at_constraint(kind, target, scores, labels, weights=None):
    precision, recall, _ = precision_recall_curve(labels, scores, sample_weight=weights)
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False, sample_weight=weights)
    best, given = {"precision_at_recall": (precision, recall), "recall_at_precision": (recall, precision),
                   "sensitivity_at_specificity": (tpr, 1 - fpr),
                   "specificity_at_sensitivity": (1 - fpr, tpr)}[kind]
    feasible = given >= target
    return best[feasible].max() if feasible.any() else 0.0


@pytest.mark.parametrize("metric_class", [PrecisionAtRecall, RecallAtPrecision, SensitivityAtSpecificity,
                                          SpecificityAtSensitivity])
@pytest.mark.parametrize("target", (0.3, 0.8, 0.95))
def test_rates_at_a_constraint_equal_sklearn_curves(metric_class, target):
    scores, labels = binary_scores()
    metric = metric_class(target)
    for batch in np.array_split(np.arange(len(labels)), 3):
        metric.update(scores[batch], labels[batch])
    expected = sklearn_at_constraint(metric_class.name, target, scores, labels)
    assert metric.result() == pytest.approx(expected, rel=1e-12)
    metric.reset()
    metric.update(scores[:, None], labels[:, None])          # (samples, 1) shapes alike
    assert metric.result() == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("metric_class", [PrecisionAtRecall, RecallAtPrecision, SensitivityAtSpecificity,
                                          SpecificityAtSensitivity])
@pytest.mark.parametrize("target", (0.75, 0.9))
def test_sample_weights_weigh_the_counts_as_sklearn(metric_class, target):
    scores, labels = binary_scores(seed=4)
    weights = np.random.default_rng(5).uniform(0.0, 3.0, len(labels))
    metric = metric_class(target)
    for batch in np.array_split(np.arange(len(labels)), 3):
        metric.update(scores[batch], labels[batch], weights[batch])
    expected = sklearn_at_constraint(metric_class.name, target, scores, labels, weights)
    assert metric.result() == pytest.approx(expected, rel=1e-12)
    assert expected != pytest.approx(sklearn_at_constraint(metric_class.name, target, scores, labels), rel=1e-6)


def test_an_unreachable_target_gives_0_and_two_class_softmax_outputs_rank_by_class_1():
    scores, labels = binary_scores()
    probabilities = np.stack([1 / (1 + np.exp(scores)), 1 / (1 + np.exp(-scores))], axis=1)
    metric = SensitivityAtSpecificity(0.9)
    metric.update(probabilities, labels)
    assert metric.result() == pytest.approx(sklearn_at_constraint(metric.name, 0.9, scores, labels))
    exact = PrecisionAtRecall(0.5)                              # a threshold meets the target exactly
    exact.update(np.array([0.9, 0.8, 0.7, 0.1]), np.array([1, 0, 1, 0]))
    assert exact.result() == 1.0 == sklearn_at_constraint(exact.name, 0.5, np.array([0.9, 0.8, 0.7, 0.1]),
                                                          np.array([1, 0, 1, 0]))
    never = RecallAtPrecision(1.0)
    never.update(np.array([0.9, 0.8]), np.array([0, 1]))
    assert never.result() == 0.0
    with pytest.raises(ValueError, match="must be a number in"):
        PrecisionAtRecall(1.5)


def test_cosine_similarity_and_log_cosh_error_match_torch_and_the_formula():
    rng = np.random.default_rng(2)
    a, y = rng.standard_normal((6, 4)), rng.standard_normal((6, 4))
    expected = torch.nn.functional.cosine_similarity(torch.from_numpy(a), torch.from_numpy(y), dim=-1).mean()
    assert cosine_similarity(a, y) == pytest.approx(float(expected), rel=1e-12)
    assert log_cosh_error(a, y) == pytest.approx(float(np.log(np.cosh(a - y)).mean()), rel=1e-12)
    big = np.array([[800.0]])                                   # cosh overflows; log cosh d = d - log 2
    assert log_cosh_error(big, np.zeros((1, 1))) == pytest.approx(800.0 - np.log(2.0))
    assert cosine_similarity(np.zeros((1, 3)), np.ones((1, 3))) == 0.0


def test_the_new_metrics_work_in_fit_and_weighted_metrics_by_name():
    rng = np.random.default_rng(3)
    x = rng.standard_normal((24, 3)).astype(np.float32)
    y = (x @ np.array([[1.0], [-0.5], [0.25]])).astype(np.float32)
    w = rng.uniform(0, 2, 24)
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(1))
    model.build((None, 3))
    trainer = Trainer(model, "mse", optim.SGD(model, lr=0.0), metrics=("logcosh", "cosine_similarity"),
                      weighted_metrics=("logcosh",), verbose=0)
    history = trainer.fit((x, y), epochs=1, batch_size=8, sample_weight=w, shuffle=False)
    predicted = trainer.predict(x).astype(np.float64)
    per_sample = np.log(np.cosh(predicted - y))[:, 0]
    assert history["logcosh"][0] == pytest.approx(per_sample.mean(), rel=1e-6)
    assert history["weighted_logcosh"][0] == pytest.approx((w * per_sample).sum() / w.sum(), rel=1e-6)
    assert history["cosine_similarity"][0] == pytest.approx(np.sign(predicted[:, 0] * y[:, 0]).mean(), rel=1e-6)
