"""EER, minDCF, score normalisation and PLDA against hand computation and NumPy rewrites."""

import numpy as np
import pytest
from scipy.interpolate import interp1d
from scipy.optimize import brentq
from sklearn.metrics import roc_curve

from lamina.errors import ShapeError
from lamina.train.plda import LDA, PLDA, class_scatter
from lamina.train.speaker_metrics import as_norm, cosine_scores, detection_error_curve, eer, min_dcf, s_norm


def test_eer_on_hand_made_lists():
    # ROC points (P_fa, P_miss): (0, 1) (0, .5) (1/3, .5) (1/3, 0) ...: crosses P_miss = P_fa on the
    # vertical segment at P_fa = 1/3, a third of the way from threshold .8 to .7
    rate, threshold = eer([0.9, 0.8, 0.7, 0.6, 0.5], [1, 0, 1, 0, 0])
    assert rate == pytest.approx(1 / 3) and threshold == pytest.approx(0.8 - 0.1 / 3)
    # tied scores: the segment from (0, .5) to (.5, 0) crosses the diagonal at .25, halfway
    rate, threshold = eer([0.9, 0.5, 0.5, 0.1], [1, 1, 0, 0])
    assert rate == pytest.approx(0.25) and threshold == pytest.approx(0.7)
    # a vertex on the diagonal
    assert eer([0.9, 0.8, 0.7, 0.3], [1, 0, 1, 0]) == pytest.approx((0.5, 0.8))


def test_eer_is_zero_for_separable_scores():
    rate, threshold = eer([0.2, 0.95, -0.3, 0.6, 0.1], [0, 1, 0, 1, 0])
    assert rate == 0.0 and threshold == 0.6                     # the lowest target score still accepts all targets


def test_eer_equals_interpolated_roc_crossing_of_the_usual_scripts():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 300)
    scores = rng.standard_normal(300) + 1.2 * labels
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    reference = brentq(lambda x: 1.0 - x - interp1d(fpr, tpr)(x), 0.0, 1.0)
    assert eer(scores, labels)[0] == pytest.approx(reference, abs=1e-9)
    p_fa, p_miss, thresholds = detection_error_curve(scores, labels)
    np.testing.assert_allclose(p_fa, fpr)
    np.testing.assert_allclose(p_miss, 1 - tpr)


def test_min_dcf_on_hand_made_lists():
    scores, labels = [0.9, 0.8, 0.7, 0.3], [1, 0, 1, 0]
    # thresholds +inf, .9, .8, .7, .3 cost (p = .5) .5, .25, .5, .25, .5; C_default = .5
    assert min_dcf(scores, labels, p_target=0.5) == pytest.approx((0.5, 0.9))
    # p = .01: .01, .005, .005 + .495, .495, .99; C_default = .01
    assert min_dcf(scores, labels, p_target=0.01) == pytest.approx((0.5, 0.9))
    # c_miss = 10, p = .5: 5, 2.5, 2.75, .25, .5; C_default = .5
    assert min_dcf(scores, labels, p_target=0.5, c_miss=10.0) == pytest.approx((0.5, 0.7))


def test_min_dcf_equals_brute_force_over_thresholds():
    rng = np.random.default_rng(1)
    labels = rng.integers(0, 2, 200)
    scores = rng.standard_normal(200) + labels
    costs = []
    for t in np.r_[np.inf, scores]:
        miss = np.mean(scores[labels == 1] < t)
        fa = np.mean(scores[labels == 0] >= t)
        costs.append((2.0 * miss * 0.05 + 1.0 * fa * 0.95) / min(2.0 * 0.05, 0.95))
    assert min_dcf(scores, labels, p_target=0.05, c_miss=2.0)[0] == pytest.approx(min(costs), rel=1e-12)


def test_score_normalisation_by_hand():
    rng = np.random.default_rng(2)
    enrol, test, cohort = rng.standard_normal((4, 5)), rng.standard_normal((4, 5)), rng.standard_normal((9, 5))
    unit = lambda v: v / np.linalg.norm(v, axis=-1, keepdims=True)  # noqa: E731
    raw = np.array([unit(e) @ unit(t) for e, t in zip(enrol, test)])
    np.testing.assert_allclose(cosine_scores(enrol, test), raw)
    e_cohort, t_cohort = unit(enrol) @ unit(cohort).T, unit(test) @ unit(cohort).T
    expected = 0.5 * ((raw - e_cohort.mean(1)) / e_cohort.std(1) + (raw - t_cohort.mean(1)) / t_cohort.std(1))
    np.testing.assert_allclose(s_norm(enrol, test, cohort), expected)
    np.testing.assert_allclose(as_norm(enrol, test, cohort, top_k=100), expected)     # k capped at the cohort
    top3 = lambda s: np.sort(s, axis=1)[:, -3:]  # noqa: E731
    e3, t3 = top3(e_cohort), top3(t_cohort)
    adaptive = 0.5 * ((raw - e3.mean(1)) / e3.std(1) + (raw - t3.mean(1)) / t3.std(1))
    np.testing.assert_allclose(as_norm(enrol, test, cohort, top_k=3), adaptive)


def test_scoring_errors():
    with pytest.raises(ShapeError, match="one length"):
        eer([0.1, 0.2, 0.3], [0, 1])
    with pytest.raises(ValueError, match=r"0 \(non-target\) or 1 \(target\), got values \[0, 1, 2\]"):
        eer([0.1, 0.2, 0.3], [0, 1, 2])
    with pytest.raises(ValueError, match="both target"):
        min_dcf([0.1, 0.2], [1, 1])
    with pytest.raises(ValueError, match="p_target"):
        min_dcf([0.1, 0.2], [0, 1], p_target=1.0)
    with pytest.raises(ShapeError, match="pair up"):
        cosine_scores(np.ones((3, 2)), np.ones((2, 2)))


# -- PLDA ------------------------------------------------------------------------------------


def gaussian_speakers(num_classes, per_class, dim, seed, between_scale=1.5):
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((dim, dim)) / np.sqrt(dim)
    centres = between_scale * rng.standard_normal((num_classes, dim)) @ mixing
    noise = rng.standard_normal((num_classes * per_class, dim)) * np.linspace(0.5, 1.5, dim)
    labels = np.repeat(np.arange(num_classes), per_class)
    return 0.3 + centres[labels] + noise, labels


def numpy_llr(x1, x2, mean, between, within):
    """log N([x1; x2]; [mu; mu], [[T, B], [B, T]]) - log N(x1; mu, T) - log N(x2; mu, T), T = B + W."""
    total = between + within

    def log_density(v, cov):
        _, logdet = np.linalg.slogdet(cov)
        return -0.5 * (logdet + v @ np.linalg.solve(cov, v) + len(v) * np.log(2 * np.pi))

    joint = np.block([[total, between], [between, total]])
    a, b = x1 - mean, x2 - mean
    return log_density(np.r_[a, b], joint) - log_density(a, total) - log_density(b, total)


def test_plda_llr_equals_numpy_rewrite_and_is_symmetric():
    x, labels = gaussian_speakers(12, 10, 4, seed=3)
    plda = PLDA(eps=0.0).fit(x, labels)
    probe, _ = gaussian_speakers(5, 2, 4, seed=4)
    first, second = probe[:5], probe[5:]
    llr = plda.score(first, second)
    expected = [numpy_llr(a, b, plda.mean_, plda.between_, plda.within_) for a, b in zip(first, second)]
    np.testing.assert_allclose(llr, expected, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(plda.score(second, first), llr, rtol=1e-12)
    u = plda.latent(x)
    _, within_u, between_u = class_scatter(u, labels)
    np.testing.assert_allclose(within_u, np.eye(4), atol=1e-9)
    np.testing.assert_allclose(between_u, np.diag(plda.psi_), atol=1e-9)


def test_plda_scores_same_class_pairs_higher():
    x, labels = gaussian_speakers(40, 8, 6, seed=5, between_scale=2.5)
    fit = labels < 30                                              # 10 held-out classes
    plda = PLDA().fit(x[fit], labels[fit])
    held_out, held_labels = x[~fit], labels[~fit]
    first, second = np.triu_indices(len(held_out), k=1)
    target = (held_labels[first] == held_labels[second]).astype(int)
    llr = plda.score(held_out[first], held_out[second])
    assert llr[target == 1].mean() > llr[target == 0].mean() + 2.0
    plda_eer = eer(llr, target)[0]
    centred = held_out - x[fit].mean(axis=0)
    cosine_eer = eer(cosine_scores(centred[first], centred[second]), target)[0]
    assert plda_eer < 0.1 and plda_eer < cosine_eer - 0.03, (plda_eer, cosine_eer)


def test_lda_whitens_the_within_class_covariance_and_feeds_plda():
    x, labels = gaussian_speakers(15, 6, 6, seed=7)
    lda = LDA(3).fit(x, labels)
    projected = lda.transform(x)
    _, within, between = class_scatter(projected, labels)
    np.testing.assert_allclose(within, np.eye(3), atol=1e-5)
    assert np.allclose(between, np.diag(np.diag(between)), atol=1e-5)
    assert np.all(np.diff(np.diag(between)) <= 1e-9)          # most discriminative direction first
    plda = PLDA(lda_dim=3).fit(x, labels)
    assert plda.score(x[:4], x[4:8]).shape == (4,)
    with pytest.raises(RuntimeError, match="fit"):
        PLDA().score(x[:2], x[2:4])
    with pytest.raises(ValueError, match="at least 2 classes"):
        PLDA().fit(x, np.zeros(len(x), dtype=int))
