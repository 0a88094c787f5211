"""Pre-, in- and post-processing mitigations: exact properties, NumPy and scikit-learn
references, and their effect on a synthetic biased task."""

import numpy as np
import pytest

from lamina.analysis import fairness as fair
from lamina.analysis.fairness.reductions import _Constraints


@pytest.fixture(scope="module")
def biased():
    return fair.make_biased_classification(600, seed=0)


def _expected_rates(prob, y, a, group):
    rows = a == group
    return prob[rows & (y == 1)].mean(), prob[rows & (y == 0)].mean(), prob[rows].mean()


def test_reweighing_weights_and_equal_label_rates():
    y = np.array([1, 1, 0, 0, 1, 0, 1, 0, 0, 1])
    a = np.array(["a"] * 4 + ["b"] * 6)
    w = fair.reweighing(y, a)
    # P(a) = 0.4, P(y=1) = 0.5, P(a, y=1) = 0.2 -> 1.0; group b: P(b) = 0.6, P(b, y=1) = 0.3 -> 1.0
    y2, a2 = np.array([1, 1, 1, 0, 1, 0, 0, 0]), np.array([0, 0, 0, 0, 1, 1, 1, 1])
    w2 = fair.reweighing(y2, a2)  # P(0) = P(y=1) = 1/2, P(0, y=1) = 3/8 -> 2/3; P(0, y=0) = 1/8 -> 2
    np.testing.assert_allclose(w2, [2 / 3] * 3 + [2, 2] + [2 / 3] * 3)
    np.testing.assert_allclose(w, np.ones(10))
    x, labels, group = fair.make_biased_classification(300, seed=1)
    base = np.random.default_rng(0).uniform(0.5, 2.0, 300)
    for weights in (fair.reweighing(labels, group), fair.reweighing(labels, group, sample_weight=base)):
        overall = np.sum(weights * labels) / weights.sum()
        for g in (0, 1):
            rows = group == g
            assert np.sum(weights[rows] * labels[rows]) / weights[rows].sum() == pytest.approx(overall, abs=1e-12)
    assert fair.reweighing(labels, group, sample_weight=base).sum() == pytest.approx(base.sum())


def test_correlation_remover():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(200, 2))
    x = np.hstack([s @ [[1.0], [2.0]] + rng.normal(size=(200, 1)), rng.normal(size=(200, 2)) + 3 * s[:, :1]])
    removed = fair.CorrelationRemover(alpha=1.0).fit_transform(x, s)
    centred = removed - removed.mean(0)
    np.testing.assert_allclose((s - s.mean(0)).T @ centred / len(s), 0, atol=1e-10)
    np.testing.assert_allclose(removed.mean(0), x.mean(0), atol=1e-10)
    np.testing.assert_allclose(fair.CorrelationRemover(alpha=0.0).fit_transform(x, s), x)
    half = fair.CorrelationRemover(alpha=0.5).fit_transform(x, s)
    np.testing.assert_allclose(half, (x + removed) / 2)
    with pytest.raises(ValueError, match=r"alpha must be in \[0, 1\]"):
        fair.CorrelationRemover(alpha=2)
    with pytest.raises(ValueError, match=r"X has 200.*sensitive has 5"):
        fair.CorrelationRemover().fit(x, s[:5])


def test_threshold_optimizer_equalized_odds(biased):
    x, y, a = biased
    scores = fair.WeightedLogisticRegression().fit(x, y).decision_function(x)
    optimizer = fair.ThresholdOptimizer("equalized_odds").fit(scores, y, a)
    prob = optimizer.predict_proba(scores, a)
    (tpr0, fpr0, _), (tpr1, fpr1, _) = (_expected_rates(prob, y, a, g) for g in (0, 1))
    assert abs(tpr0 - tpr1) < 1e-6 and abs(fpr0 - fpr1) < 1e-6
    accuracy = np.mean(prob * y + (1 - prob) * (1 - y))
    assert accuracy == pytest.approx(1 - optimizer.expected_error_)
    assert accuracy >= max(y.mean(), 1 - y.mean())
    unconstrained = fair.equalized_odds_difference(y, (scores > 0).astype(int), sensitive_features=a)
    drawn = optimizer.predict(scores, a, random_state=0)
    drawn_difference = fair.equalized_odds_difference(y, drawn, sensitive_features=a)
    print(f"\nThresholdOptimizer(equalized_odds): expected accuracy {accuracy:.3f}, EO difference of the "
          f"unconstrained rule {unconstrained:.3f}, of one draw {drawn_difference:.3f}")
    assert set(np.unique(drawn)) <= {0, 1}
    assert drawn_difference < unconstrained


def _upper_hull(xs, ys):
    """The vertices of the upper concave envelope of the points (xs increasing)."""
    hull = []
    for point in zip(xs, ys):
        while len(hull) >= 2 and (hull[-1][0] - hull[-2][0]) * (point[1] - hull[-2][1]) >= \
                (hull[-1][1] - hull[-2][1]) * (point[0] - hull[-2][0]):
            hull.pop()
        hull.append(point)
    return np.array(hull)


def _best_parity_error(scores, y, a):
    """A NumPy reference: a group selecting the share r of its samples at best gains the upper
    concave envelope of (k / n_g, TP_k - FP_k) over its top-k rules at r; the optimum of
    P - sum_g gain_g(r) over a common r lies at one of the envelopes' vertices."""
    hulls = []
    for g in np.unique(a):
        labels = y[a == g][np.argsort(-scores[a == g])]
        gain = np.concatenate([[0], np.cumsum(2 * labels - 1)])
        hulls.append(_upper_hull(np.arange(len(gain)) / len(labels), gain))
    rates = np.unique(np.concatenate([h[:, 0] for h in hulls]))
    gains = sum(np.interp(rates, h[:, 0], h[:, 1]) for h in hulls)
    return (y.sum() - gains.max()) / len(y)


def test_threshold_optimizer_demographic_parity_is_optimal():
    x, y, a = fair.make_biased_classification(200, seed=3)
    scores = x[:, 0] + x[:, 1]  # continuous: no ties
    optimizer = fair.ThresholdOptimizer("demographic_parity").fit(scores, y, a)
    prob = optimizer.predict_proba(scores, a)
    assert prob[a == 0].mean() == pytest.approx(prob[a == 1].mean(), abs=1e-7)
    assert optimizer.expected_error_ == pytest.approx(_best_parity_error(scores, y, a), abs=1e-7)


def test_threshold_optimizer_errors():
    with pytest.raises(ValueError, match=r"unknown constraints 'equal_odds'"):
        fair.ThresholdOptimizer("equal_odds")
    with pytest.raises(ValueError, match=r"group 1 has no negative samples"):
        fair.ThresholdOptimizer().fit(np.arange(4.0), [0, 1, 1, 1], [0, 0, 1, 1])
    optimizer = fair.ThresholdOptimizer("true_positive_rate_parity").fit(np.arange(6.0), [0, 1, 1, 0, 1, 1],
                                                                         [0, 0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match=r"group 7 was not seen in fit"):
        optimizer.predict_proba([1.0], [7])


def test_weighted_logistic_regression_matches_scikit_learn():
    from sklearn.linear_model import LogisticRegression

    x, y, _ = fair.make_biased_classification(200, seed=2)
    w = np.random.default_rng(0).uniform(0.2, 3.0, 200)
    ours = fair.WeightedLogisticRegression(l2=0.05, max_iter=500).fit(x, y, sample_weight=w)
    reference = LogisticRegression(C=1 / (0.05 * w.sum()), tol=1e-10, max_iter=1000).fit(x, y, sample_weight=w)
    np.testing.assert_allclose(ours.coef_, reference.coef_[0], atol=1e-4)
    assert ours.intercept_ == pytest.approx(reference.intercept_[0], abs=1e-4)


def test_best_response_costs_are_the_lagrangian():
    """L(h, lambda) = err(h) + sum lambda gamma(h) is affine in h with slopes c_i."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 30).astype(float)
    keys = list(rng.integers(0, 3, 30))
    w = rng.uniform(0.5, 2, 30)
    for moment in (fair.DemographicParity(), fair.EqualizedOdds()):
        constraints = _Constraints(moment, y, keys, w, "test")
        lam = rng.normal(size=len(constraints.cells))
        costs = constraints.cost_of_positive(y, lam)

        def lagrangian(h, lam=lam, constraints=constraints):
            return w @ np.abs(h - y) / w.sum() + lam @ constraints.gamma(h)

        zero = lagrangian(np.zeros(30))
        for _ in range(3):
            h = rng.integers(0, 2, 30).astype(float)
            assert lagrangian(h) == pytest.approx(zero + costs @ h, abs=1e-12)


def test_exponentiated_gradient_reduces_disparity(biased):
    x, y, a = biased
    plain = fair.WeightedLogisticRegression().fit(x, y).predict(x)
    plain_dp = fair.demographic_parity_difference(y, plain, sensitive_features=a)
    plain_accuracy = fair.accuracy(y, plain)
    mitigated = fair.ExponentiatedGradient(constraints="demographic_parity", eps=0.02, max_iter=20).fit(x, y, a)
    prob = mitigated.predict_proba(x)
    fair_dp = abs(prob[a == 0].mean() - prob[a == 1].mean())
    fair_accuracy = np.mean(prob * y + (1 - prob) * (1 - y))
    print(f"\nExponentiatedGradient(DP, eps 0.02): DP difference {plain_dp:.3f} -> {fair_dp:.3f}, "
          f"accuracy {plain_accuracy:.3f} -> {fair_accuracy:.3f}, {mitigated.n_iter_} rounds, "
          f"{len(mitigated.predictors_)} classifiers mixed")
    assert mitigated.weights_.sum() == pytest.approx(1.0) and (mitigated.weights_ > 0).all()
    assert fair_dp <= 2 * 0.02 + 1e-6 and plain_dp > 0.25
    assert fair_accuracy > max(y.mean(), 1 - y.mean()) + 0.04  # better than any constant
    assert plain_accuracy - fair_accuracy < 0.15
    odds = fair.ExponentiatedGradient(constraints=fair.EqualizedOdds(), eps=0.02, max_iter=15).fit(x, y, a)
    drawn = odds.predict(x, random_state=0)
    eo_before = fair.equalized_odds_difference(y, plain, sensitive_features=a)
    eo_after = fair.equalized_odds_difference(y, drawn, sensitive_features=a)
    print(f"ExponentiatedGradient(EO): EO difference {eo_before:.3f} -> {eo_after:.3f} (one draw)")
    assert eo_after < eo_before - 0.08


def test_exponentiated_gradient_errors():
    with pytest.raises(ValueError, match=r"unknown constraints 'parity'"):
        fair.ExponentiatedGradient(constraints="parity")
    with pytest.raises(ValueError, match=r"group 1 has no samples in event 1"):
        fair.ExponentiatedGradient(constraints="equalized_odds").fit(np.ones((4, 1)), [0, 1, 0, 0], [0, 0, 1, 1])


def test_biased_datasets():
    x, y, a = fair.make_biased_classification(2000, seed=0)
    assert x.shape == (2000, 4) and set(np.unique(y)) == {0, 1} and set(np.unique(a)) == {0, 1}
    assert y[a == 1].mean() - y[a == 0].mean() > 0.2  # the proxy shift and the flipped positives
    assert np.corrcoef(x[:, 0], a)[0, 1] > 0.2
    x, y, a = fair.breast_cancer_with_group()
    assert x.shape == (569, 30) and len(y) == len(a) == 569
    assert np.corrcoef(x[:, 0], a)[0, 1] > 0.5
