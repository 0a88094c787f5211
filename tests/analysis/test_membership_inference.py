"""Membership-inference scores, LiRA, the attack report and the DP audit against their formulas,
NumPy/SciPy references and scikit-learn's ROC."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import beta, norm
from sklearn.metrics import roc_auc_score, roc_curve

from lamina.analysis import (
    attack_report,
    best_threshold,
    clopper_pearson_interval,
    confidence_attack,
    empirical_epsilon,
    entropy_attack,
    lira,
    lira_confidence,
    loss_threshold_attack,
    membership_roc,
    plot_roc,
)
from lamina.errors import ShapeError

PROBS = np.array([[0.7, 0.2, 0.1], [0.1, 0.85, 0.05], [0.3, 0.3, 0.4], [0.05, 0.9, 0.05]])
LABELS = np.array([0, 2, 2, 1])


def test_loss_confidence_and_entropy_scores_equal_their_formulas():
    p_true = np.array([0.7, 0.05, 0.4, 0.9])
    np.testing.assert_allclose(loss_threshold_attack(PROBS, LABELS).scores, np.log(p_true))
    np.testing.assert_allclose(confidence_attack(PROBS, LABELS).scores, p_true)
    entropy = np.array([-sum(v * math.log(v) for v in row) for row in PROBS])
    np.testing.assert_allclose(entropy_attack(PROBS, LABELS).scores, -entropy)


def test_modified_entropy_equals_song_and_mittal():
    # Mentr(p, y) = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i), written out per record
    expected = []
    for row, y in zip(PROBS, LABELS):
        mentr = -(1 - row[y]) * math.log(row[y])
        mentr -= sum(row[i] * math.log(1 - row[i]) for i in range(len(row)) if i != y)
        expected.append(-mentr)
    scores = entropy_attack(PROBS, LABELS, modified=True).scores
    np.testing.assert_allclose(scores, expected)
    # unlike the entropy, a confident wrong prediction (record 1) scores lowest
    assert scores.argmin() == 1
    assert entropy_attack(PROBS, LABELS).scores.argmin() == 2


def test_threshold_is_given_or_chosen_on_reference_records():
    given = loss_threshold_attack(PROBS, LABELS, threshold=math.log(0.5))
    np.testing.assert_array_equal(given.is_member, [True, False, False, True])
    assert loss_threshold_attack(PROBS, LABELS).is_member is None
    reference = (PROBS, LABELS, np.array([1, 0, 0, 1]))
    chosen = confidence_attack(PROBS, LABELS, reference=reference)
    assert chosen.threshold == pytest.approx(0.7)          # the lowest member confidence separates all
    np.testing.assert_array_equal(chosen.is_member, [True, False, False, True])
    assert best_threshold([0.1, 0.9, 0.5, 0.4], [0, 1, 1, 0]) == pytest.approx(0.5)


def test_bad_inputs_are_named():
    with pytest.raises(ShapeError, match="loss_threshold_attack: labels"):
        loss_threshold_attack(PROBS, LABELS[:3])
    with pytest.raises(ValueError, match="probabilities"):
        confidence_attack(PROBS * 2, LABELS)
    with pytest.raises(ValueError, match="not both"):
        entropy_attack(PROBS, LABELS, threshold=0.0, reference=(PROBS, LABELS, [1, 0, 0, 1]))
    with pytest.raises(ValueError, match="both members and non-members"):
        best_threshold([0.1, 0.2], [1, 1])


def test_lira_confidence_is_the_logit_of_the_true_class_probability():
    p_true = np.array([0.7, 0.05, 0.4, 0.9])
    np.testing.assert_allclose(lira_confidence(PROBS, LABELS), np.log(p_true / (1 - p_true)))
    # near-certain outputs keep their information (no 1 - p cancellation)
    sure = np.array([[1 - 1e-20, 1e-20]])
    assert lira_confidence(sure, np.array([0])) == pytest.approx(20 * math.log(10), rel=1e-6)


def _lira_problem(seed=0, models=8, records=12):
    rng = np.random.default_rng(seed)
    inside = np.zeros((models, records), dtype=bool)
    for m in range(0, models, 2):
        half = rng.permutation(records)[:records // 2]
        inside[m, half] = True
        inside[m + 1] = ~inside[m]
    reference = rng.normal(size=(models, records)) + 2.0 * inside
    return rng.normal(size=records) + 1.0, reference, inside


def _fit(values, mask):
    """Per-record mean and (ddof 0) standard deviation over the masked reference models."""
    return (np.array([values[mask[:, j], j].mean() for j in range(values.shape[1])]),
            np.array([values[mask[:, j], j].std() for j in range(values.shape[1])]))


def test_online_lira_equals_a_scipy_reference():
    phi, reference, inside = _lira_problem()
    mu_in, sd_in = _fit(reference, inside)
    mu_out, sd_out = _fit(reference, ~inside)
    expected = norm.logpdf(phi, mu_in, sd_in) - norm.logpdf(phi, mu_out, sd_out)
    np.testing.assert_allclose(lira(phi, reference, inside), expected, rtol=1e-10)


def test_fixed_variance_lira_pools_the_residuals():
    phi, reference, inside = _lira_problem(seed=1)
    mu_in, _ = _fit(reference, inside)
    mu_out, _ = _fit(reference, ~inside)
    sd_in = np.sqrt(np.mean((reference - mu_in)[inside] ** 2))
    sd_out = np.sqrt(np.mean((reference - mu_out)[~inside] ** 2))
    expected = norm.logpdf(phi, mu_in, sd_in) - norm.logpdf(phi, mu_out, sd_out)
    np.testing.assert_allclose(lira(phi, reference, inside, fixed_variance=True), expected, rtol=1e-10)


def test_offline_lira_is_the_one_sided_test_on_the_out_models():
    phi, reference, inside = _lira_problem(seed=2)
    mu_out, sd_out = _fit(reference, ~inside)
    scores = lira(phi, reference, inside, online=False)
    np.testing.assert_allclose(scores, -np.log(norm.sf(phi, mu_out, sd_out)), rtol=1e-8)
    order = np.argsort(scores)
    np.testing.assert_array_equal(order, np.argsort(norm.cdf(phi, mu_out, sd_out)))


def test_lira_rejects_records_never_out_or_never_in():
    phi, reference, inside = _lira_problem()
    inside[:, 0] = True
    with pytest.raises(ValueError, match="did not train on it"):
        lira(phi, reference, inside)
    inside[:, 0] = False
    with pytest.raises(ValueError, match="online=False"):
        lira(phi, reference, inside)
    assert np.isfinite(lira(phi, reference, inside, online=False)).all()
    with pytest.raises(ShapeError, match="lira"):
        lira(phi[:3], reference, inside)


def _sklearn_tpr_at(scores, member, fpr_max):
    fpr, tpr, _ = roc_curve(member, scores)
    return tpr[fpr <= fpr_max].max()


@pytest.mark.parametrize("seed", [0, 1])
def test_report_equals_sklearn_roc_computations(seed):
    rng = np.random.default_rng(seed)
    member = rng.random(3000) < 0.5
    scores = rng.normal(size=3000) + 0.8 * member
    scores[:200] = np.round(scores[:200], 1)                # ties among some scores
    report = attack_report(scores, member)
    assert report.auc == pytest.approx(roc_auc_score(member, scores), abs=1e-12)
    fpr, tpr, _ = roc_curve(member, scores, drop_intermediate=False)
    assert report.balanced_accuracy == pytest.approx(np.max((tpr + 1 - fpr) / 2))
    for low in (1e-3, 1e-2):
        assert report.tpr_at_fpr[low] == pytest.approx(_sklearn_tpr_at(scores, member, low))
    ours_fpr, ours_tpr, thresholds = membership_roc(scores, member)
    np.testing.assert_allclose(ours_fpr, fpr)
    np.testing.assert_allclose(ours_tpr, tpr)
    assert np.all(np.diff(thresholds) < 0)


def test_report_draws_the_log_scale_roc(tmp_path):
    rng = np.random.default_rng(0)
    member = np.r_[np.ones(200, bool), np.zeros(200, bool)]
    report = attack_report(rng.normal(size=400) + member, member, path=tmp_path / "roc.png")
    assert (tmp_path / "roc.png").read_bytes()[:4] == b"\x89PNG"
    out = plot_roc({"a": report, "b": attack_report(rng.normal(size=400), member)}, tmp_path / "two.png")
    assert out.stat().st_size > 1000
    assert sorted(p.name for p in tmp_path.iterdir()) == ["roc.png", "two.png"]      # no temporary left


def _cp_upper(k, n, alpha):
    return 1.0 if k == n else beta.ppf(1 - alpha / 2, k + 1, n - k)


@pytest.mark.parametrize("tp,fp,positives,negatives,delta", [(950, 20, 1000, 1000, 0.0), (480, 5, 500, 800, 1e-5),
                                                                (300, 250, 500, 500, 0.0)])
def test_empirical_epsilon_equals_the_formula_with_clopper_pearson_bounds(tp, fp, positives, negatives, delta):
    alpha = 0.05
    audit = empirical_epsilon(tp, fp, positives, negatives, delta=delta, alpha=alpha)
    fpr, fnr = fp / negatives, 1 - tp / positives
    fpr_hi, fnr_hi = _cp_upper(fp, negatives, alpha), _cp_upper(positives - tp, positives, alpha)
    expected = max(0.0, math.log((1 - delta - fpr_hi) / fnr_hi), math.log((1 - delta - fnr_hi) / fpr_hi))
    assert audit.epsilon_lower == pytest.approx(expected, rel=1e-10)
    point = max(0.0, math.log((1 - delta - fpr) / fnr), math.log((1 - delta - fnr) / fpr))
    assert audit.epsilon_point == pytest.approx(point)
    assert 0 <= audit.epsilon_lower <= audit.epsilon_point
    assert audit.fpr_interval[0] <= fpr <= audit.fpr_interval[1] == pytest.approx(fpr_hi)


def test_clopper_pearson_interval_ends_and_errors():
    low, high = clopper_pearson_interval(3, 10, alpha=0.1)
    assert low == pytest.approx(beta.ppf(0.05, 3, 8)) and high == pytest.approx(beta.ppf(0.95, 4, 7))
    assert clopper_pearson_interval(0, 10)[0] == 0.0 and clopper_pearson_interval(10, 10)[1] == 1.0
    # a perfect attack over 10 trials each way proves only a modest epsilon
    audit = empirical_epsilon(10, 0, 10, 10)
    assert audit.epsilon_point == math.inf
    assert 0 < audit.epsilon_lower < 4
    with pytest.raises(ValueError, match="empirical_epsilon: true_positives"):
        empirical_epsilon(11, 0, 10, 10)
