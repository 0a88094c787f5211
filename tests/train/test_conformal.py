"""Split conformal prediction: the marginal coverage guarantee over many random calibration /
test splits of a fixed model's outputs (every score, classification and regression), the sets
against a brute-force reference written here, RAPS with lambda = 0 being APS, CQR with a
pinball-loss model, jackknife+ / CV+, the metrics and the errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

import lamina
from lamina import functional as F
from lamina import nn, optim
from lamina.train import Trainer
from lamina.train.conformal import (
    ConformalClassifier,
    ConformalRegressor,
    conformal_quantile,
    coverage,
    cv_plus_intervals,
    interval_coverage,
    mean_set_size,
    mean_width,
    size_stratified_coverage,
)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def miscalibrated_classifier(n=2000, classes=6, seed=0):
    """Probabilities of an over-confident model and labels drawn from the true (softer) ones."""
    rng = np.random.default_rng(seed)
    logits = rng.standard_normal((n, classes)) * 2
    labels = np.array([rng.choice(classes, p=p) for p in softmax(logits)])
    return softmax(logits * 2.5), labels


def identity(p):
    return p


CLASSIFIERS = [dict(method="lac"), dict(method="aps"), dict(method="aps", randomized=True),
               dict(method="raps", k_reg=1, lam=0.05), dict(method="raps", k_reg=2, lam=0.2, randomized=True)]


@pytest.mark.parametrize("options", CLASSIFIERS, ids=lambda o: "-".join(map(str, o.values())))
def test_classification_coverage_holds_on_average_over_splits(options):
    probs, labels = miscalibrated_classifier()
    alpha, n_cal, splits = 0.1, 99, 300
    rng = np.random.default_rng(1)
    covered = []
    for split in range(splits):
        order = rng.permutation(len(labels))
        cal, test = order[:n_cal], order[n_cal:]
        conformal = ConformalClassifier(identity, outputs="probs", seed=split, **options)
        sets = conformal.calibrate(probs[cal], labels[cal]).predict_sets(probs[test], alpha)
        covered.append(coverage(sets, labels[test]))
    slack = 3 * np.std(covered) / math.sqrt(splits)
    assert 1 - alpha - slack <= np.mean(covered) <= 1 - alpha + 1 / (n_cal + 1) + slack


def brute_force_scores(probs, labels, method, k_reg=0, lam=0.0, u=None):
    """s(x, y) for every listed (x, y), one at a time, straight from the definitions."""
    scores = []
    for i, (p, y) in enumerate(zip(probs, labels)):
        if method == "lac":
            scores.append(1 - p[y])
            continue
        rank = 1 + sum(p[j] > p[y] for j in range(len(p)))
        score = sum(p[j] for j in range(len(p)) if p[j] >= p[y])
        if method == "raps":
            score += lam * max(0, rank - k_reg)
        if u is not None:
            score -= u[i] * (p[y] + (lam if method == "raps" and rank > k_reg else 0.0))
        scores.append(score)
    return np.array(scores)


@pytest.mark.parametrize("method, randomized", [("lac", False), ("aps", False), ("aps", True), ("raps", False),
                                                ("raps", True)])
def test_sets_equal_a_brute_force_reference(method, randomized):
    probs, labels = miscalibrated_classifier(n=40, classes=4, seed=2)
    cal, test = slice(0, 25), slice(25, 40)
    alpha, k_reg, lam = 0.2, 1, 0.1
    draws = np.random.default_rng(5)         # the generator the classifier seeds: calibration u first
    u_cal = draws.random(25) if randomized else None
    u_test = draws.random(15) if randomized else None
    cal_scores = brute_force_scores(probs[cal], labels[cal], method, k_reg, lam, u_cal)
    k = math.ceil((25 + 1) * (1 - alpha))
    q_hat = sorted(cal_scores)[k - 1]
    expected = np.zeros((15, 4), dtype=bool)
    for i, p in enumerate(probs[test]):
        for y in range(4):
            u = None if u_test is None else u_test[i:i + 1]
            expected[i, y] = brute_force_scores(p[None], [y], method, k_reg, lam, u)[0] <= q_hat
    conformal = ConformalClassifier(identity, method=method, outputs="probs", randomized=randomized,
                                    k_reg=k_reg, lam=lam, seed=5)
    sets = conformal.calibrate(probs[cal], labels[cal]).predict_sets(probs[test], alpha)
    assert conformal.threshold(alpha) == pytest.approx(q_hat)
    np.testing.assert_array_equal(sets, expected)


@pytest.mark.parametrize("randomized", [False, True])
def test_raps_with_lambda_zero_is_aps(randomized):
    probs, labels = miscalibrated_classifier(n=300, seed=3)
    sets = [ConformalClassifier(identity, method=method, outputs="probs", randomized=randomized, k_reg=2, lam=0.0,
                                seed=4).calibrate(probs[:150], labels[:150]).predict_sets(probs[150:], 0.1)
            for method in ("aps", "raps")]
    np.testing.assert_array_equal(sets[0], sets[1])
    bigger = ConformalClassifier(identity, method="raps", outputs="probs", k_reg=1, lam=0.5)
    assert mean_set_size(bigger.calibrate(probs[:150], labels[:150]).predict_sets(probs[150:], 0.1)) <= \
        mean_set_size(sets[0]) + 1e-12        # the penalty on long tails keeps sets small


def test_a_module_gives_logits_and_the_finite_sample_quantile():
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(5))
    x, y = np.random.default_rng(0).standard_normal((30, 3)).astype(np.float32), np.arange(30) % 5
    conformal = ConformalClassifier(model, method="lac").calibrate(x, y)
    with lamina.no_grad():
        probs = softmax(model(x).numpy().astype(np.float64))
    np.testing.assert_allclose(np.sort(conformal.scores), np.sort(1 - probs[np.arange(30), y]), rtol=1e-6)
    assert conformal.threshold(0.1) == np.sort(conformal.scores)[math.ceil(31 * 0.9) - 1]


def heteroscedastic(n, seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(-2, 2, n)
    return x, x + rng.standard_normal(n) * (0.2 + np.abs(x))


REGRESSION = {
    "absolute": dict(method="absolute", model_or_predict_fn=lambda x: 0.9 * x),
    "normalized": dict(method="normalized", model_or_predict_fn=lambda x: 0.9 * x,
                       scale_fn=lambda x: 0.3 + np.abs(x)),
    "cqr": dict(method="cqr", model_or_predict_fn=lambda x: np.stack([x - 1.2 * np.abs(x), x + np.abs(x)], axis=1)),
}


@pytest.mark.parametrize("name", sorted(REGRESSION))
def test_regression_coverage_holds_on_average_over_splits(name):
    x, y = heteroscedastic(2000, seed=4)
    alpha, n_cal, splits = 0.2, 49, 300
    rng = np.random.default_rng(6)
    covered = []
    for _ in range(splits):
        order = rng.permutation(len(y))
        cal, test = order[:n_cal], order[n_cal:]
        regressor = ConformalRegressor(**REGRESSION[name]).calibrate(x[cal], y[cal])
        covered.append(interval_coverage(*regressor.predict_intervals(x[test], alpha), y[test]))
    slack = 3 * np.std(covered) / math.sqrt(splits)
    assert 1 - alpha - slack <= np.mean(covered) <= 1 - alpha + 1 / (n_cal + 1) + slack


def test_cqr_with_a_pinball_loss_model_covers_and_adapts_its_width():
    alpha = 0.1
    x, y = heteroscedastic(1500, seed=7)
    features = np.stack([x, np.abs(x)], axis=1).astype(np.float32)
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(2))
    trainer = Trainer(model, lambda out, target: F.pinball_loss(out, target, [alpha / 2, 1 - alpha / 2]),
                      optim.Adam(model, lr=5e-2), metrics=(), verbose=0)
    trainer.fit((features[:700], y[:700].astype(np.float32)), epochs=25, batch_size=64, seed=0)
    regressor = ConformalRegressor(model, method="cqr").calibrate(features[700:1000], y[700:1000], alpha=alpha)
    lower, upper = regressor.predict_intervals(features[1000:], alpha)
    assert interval_coverage(lower, upper, y[1000:]) >= 1 - alpha - 0.04
    width = upper - lower
    near, far = np.abs(x[1000:]) < 0.5, np.abs(x[1000:]) > 1.5
    assert width[far].mean() > 2 * width[near].mean()      # wider where the noise is larger
    absolute = ConformalRegressor(lambda f: f[:, 0]).calibrate(features[700:1000], y[700:1000])
    assert mean_width(*absolute.predict_intervals(features[1000:], alpha)) > 0


def linear_fit(x, y):
    design = np.stack([x, np.ones_like(x)], axis=1)
    slope, intercept = np.linalg.lstsq(design, y, rcond=None)[0]
    return lambda x_new: slope * x_new + intercept


@pytest.mark.parametrize("folds", [None, 4])
def test_jackknife_plus_and_cv_plus_equal_their_definition(folds):
    x, y = heteroscedastic(20, seed=8)
    x_test = np.array([-1.5, 0.0, 0.7])
    alpha = 0.2
    lower, upper = cv_plus_intervals(linear_fit, x, y, x_test, alpha, folds=folds)
    k = 20 if folds is None else folds
    fold_of = np.arange(20) % k
    for j, point in enumerate(x_test):
        below, above = [], []
        for i in range(20):
            keep = fold_of != fold_of[i]
            predict = linear_fit(x[keep], y[keep])
            residual = abs(y[i] - predict(x[i]))
            below.append(predict(point) - residual)
            above.append(predict(point) + residual)
        assert lower[j] == pytest.approx(sorted(below)[math.floor(alpha * 21) - 1])
        assert upper[j] == pytest.approx(sorted(above)[math.ceil((1 - alpha) * 21) - 1])


def test_metrics_on_a_small_case():
    sets = np.array([[True, False, False], [True, True, False], [False, True, True], [True, True, True]])
    labels = np.array([0, 2, 1, 2])
    assert coverage(sets, labels) == 0.75
    assert mean_set_size(sets) == 2.0
    assert size_stratified_coverage(sets, labels) == {1: (1.0, 1), 2: (0.5, 2), 3: (1.0, 1)}
    assert interval_coverage([0, 0, 0], [1, 1, 1], [0.5, 1.0, 2.0]) == pytest.approx(2 / 3)
    assert mean_width([0, 1], [2, 2]) == 1.5


def test_clear_errors():
    probs, labels = miscalibrated_classifier(n=40, seed=9)
    conformal = ConformalClassifier(identity, outputs="probs").calibrate(probs, labels)
    for alpha in (0.0, 1.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="alpha .* must lie in \\(0, 1\\)"):
            conformal.predict_sets(probs, alpha)
    with pytest.raises(ValueError, match="40 calibration scores are too few .* needs n >= 1/alpha - 1 = 49"):
        conformal.predict_sets(probs, 0.02)
    with pytest.raises(ValueError, match="too few"):
        ConformalClassifier(identity, outputs="probs").calibrate(probs[:5], labels[:5], alpha=0.1)
    with pytest.raises(ValueError, match="labels must lie in \\[0, 5\\]"):
        ConformalClassifier(identity, outputs="probs").calibrate(probs, labels + 6)
    with pytest.raises(RuntimeError, match="calibrate"):
        ConformalClassifier(identity, outputs="probs").predict_sets(probs, 0.1)
    with pytest.raises(ValueError, match="method must be one of"):
        ConformalClassifier(identity, method="top-k")
    with pytest.raises(ValueError, match="scale_fn"):
        ConformalRegressor(identity, method="normalized")
    assert conformal_quantile(np.arange(1.0, 20.0), 0.1) == 18.0          # ceil(20 * 0.9) = 18th of 19
