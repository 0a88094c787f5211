"""FID, KID, Inception Score and precision/recall/density/coverage against direct computations."""

import warnings

import numpy as np
import pytest
import scipy.linalg
import torch

from helpers import run_readme_section
from lamina import nn
from lamina.analysis import (
    FID,
    KID,
    extract_features,
    feature_statistics,
    fid,
    frechet_distance,
    generative_metrics,
    inception_score,
    kid,
    polynomial_mmd2,
    precision_recall_density_coverage,
)
from lamina.errors import ShapeError


def gaussian(rng, n, d, shift=0.0, scale=None):
    scale = np.ones(d) if scale is None else scale
    return rng.standard_normal((n, d)) * scale + shift


def fid_by_formula(x, y):
    mu1, mu2 = x.mean(0), y.mean(0)
    s1, s2 = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    root = scipy.linalg.sqrtm(s1 @ s2).real
    return np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * root)


def test_fid_equals_the_scipy_formula_and_torch_eigenvalues():
    rng = np.random.default_rng(0)
    x = gaussian(rng, 60, 5)
    y = gaussian(rng, 80, 5, shift=0.3, scale=np.linspace(0.5, 2, 5)) @ rng.standard_normal((5, 5))
    value = fid(x, y)
    assert value == pytest.approx(fid_by_formula(x, y), rel=1e-10)
    # Tr (S1 S2)^(1/2) is the sum of the square roots of the (real, >= 0) eigenvalues of S1 S2
    s1, s2 = torch.tensor(np.cov(x, rowvar=False)), torch.tensor(np.cov(y, rowvar=False))
    root_trace = torch.linalg.eigvals(s1 @ s2).real.clamp(min=0).sqrt().sum()
    mean_term = ((torch.tensor(x).mean(0) - torch.tensor(y).mean(0)) ** 2).sum()
    expected = mean_term + torch.trace(s1) + torch.trace(s2) - 2 * root_trace
    assert value == pytest.approx(float(expected), rel=1e-8)


def test_frechet_distance_of_diagonal_gaussians_has_a_closed_form():
    rng = np.random.default_rng(1)
    mu1, mu2 = rng.standard_normal(6), rng.standard_normal(6)
    a, b = rng.uniform(0.1, 3, 6), rng.uniform(0.1, 3, 6)
    expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
    assert frechet_distance(mu1, np.diag(a), mu2, np.diag(b)) == pytest.approx(expected, rel=1e-10)


def test_fid_of_a_set_with_itself_is_zero_and_grows_with_a_mean_shift():
    rng = np.random.default_rng(2)
    x = gaussian(rng, 100, 4)
    assert abs(fid(x, x)) < 1e-8
    direction = rng.standard_normal(4)
    shifted = [fid(x, x + s * direction) for s in (0.1, 0.5, 1.0, 2.0)]
    assert np.all(np.diff(shifted) > 0)
    # the same covariance: only the mean term is left
    assert shifted[-1] == pytest.approx(4 * direction @ direction, rel=1e-7)


def test_fid_of_rank_deficient_covariances_is_the_eigenvalue_formula():
    rng = np.random.default_rng(3)
    x, y = gaussian(rng, 4, 8), gaussian(rng, 5, 8, shift=1.0)   # fewer samples than dims: rank-deficient
    (mu1, s1), (mu2, s2) = feature_statistics(x), feature_statistics(y)
    root_trace = np.sqrt(np.clip(np.linalg.eigvals(s1 @ s2).real, 0, None)).sum()
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2) - 2 * root_trace
    assert fid(x, y) == pytest.approx(expected, rel=1e-7)


def test_a_singular_product_falls_back_to_an_offset(monkeypatch):
    rng = np.random.default_rng(3)
    x, y = gaussian(rng, 20, 3), gaussian(rng, 20, 3, shift=1.0)
    (mu1, s1), (mu2, s2) = feature_statistics(x), feature_statistics(y)
    offset = np.eye(3) * 1e-6
    root = scipy.linalg.sqrtm((s1 + offset) @ (s2 + offset)).real
    expected = np.sum((mu1 - mu2) ** 2) + np.trace(s1 + s2 - 2 * root)
    plain_sqrtm, calls = scipy.linalg.sqrtm, []

    def sqrtm_failing_once(matrix):                 # as scipy does on a product it finds singular
        calls.append(matrix)
        if len(calls) == 1:
            warnings.warn("Matrix is singular", scipy.linalg.LinAlgWarning, stacklevel=2)
        return plain_sqrtm(matrix)

    monkeypatch.setattr(generative_metrics.scipy.linalg, "sqrtm", sqrtm_failing_once)
    assert frechet_distance(mu1, s1, mu2, s2) == pytest.approx(expected, rel=1e-12)
    assert len(calls) == 2


def test_frechet_distance_refuses_a_large_imaginary_root():
    with pytest.raises(ValueError, match="imaginary"):
        frechet_distance(np.zeros(2), np.diag([-1.0, 1.0]), np.zeros(2), np.eye(2))


def test_running_fid_equals_one_shot_fid_over_uneven_batches():
    rng = np.random.default_rng(4)
    x = gaussian(rng, 97, 6, shift=3.0)
    y = gaussian(rng, 83, 6, shift=3.5, scale=np.linspace(0.5, 1.5, 6))
    metric = FID()
    for lo, hi in ((0, 1), (1, 30), (30, 31), (31, 97)):
        metric.update(real=x[lo:hi])
    for lo, hi in ((0, 50), (50, 53), (53, 83)):
        metric.update(fake=y[lo:hi])
    assert metric.compute() == pytest.approx(fid(x, y), abs=1e-8)
    metric.reset()
    with pytest.raises(ValueError, match="at least 2 real"):
        metric.compute()

    kept = FID(reset_real=False)
    kept.update(real=x, fake=y[:10])
    kept.reset()
    kept.update(fake=y)
    assert kept.result() == pytest.approx(fid(x, y), abs=1e-8)


def mmd2_loop(x, y, degree=3, gamma=None, coef=1.0):
    gamma = 1.0 / x.shape[1] if gamma is None else gamma
    m, n = len(x), len(y)

    def kernel(a, b):
        return (gamma * a @ b + coef) ** degree

    xx = sum(kernel(x[i], x[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    yy = sum(kernel(y[i], y[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    xy = sum(kernel(x[i], y[j]) for i in range(m) for j in range(n)) / (m * n)
    return xx + yy - 2 * xy


def test_polynomial_mmd_equals_a_loop_and_torch():
    rng = np.random.default_rng(5)
    x, y = gaussian(rng, 12, 3), gaussian(rng, 15, 3, shift=0.5)
    assert polynomial_mmd2(x, y) == pytest.approx(mmd2_loop(x, y), rel=1e-10)
    assert polynomial_mmd2(x, y, degree=2, gamma=0.7, coef=0.5) == pytest.approx(
        mmd2_loop(x, y, degree=2, gamma=0.7, coef=0.5), rel=1e-10)
    tx, ty = torch.tensor(x), torch.tensor(y)
    k_xx, k_yy, k_xy = ((a @ b.T / 3 + 1) ** 3 for a, b in ((tx, tx), (ty, ty), (tx, ty)))
    expected = ((k_xx.sum() - k_xx.diagonal().sum()) / (12 * 11) + (k_yy.sum() - k_yy.diagonal().sum()) / (15 * 14)
                - 2 * k_xy.mean())
    assert polynomial_mmd2(x, y) == pytest.approx(float(expected), rel=1e-10)


def test_kid_subsets_are_the_loop_estimator_on_seeded_draws():
    rng = np.random.default_rng(6)
    x, y = gaussian(rng, 20, 3), gaussian(rng, 25, 3, shift=0.4)
    draws = np.random.default_rng(11)
    expected = []
    for _ in range(3):
        rows_x, rows_y = draws.permutation(20)[:8], draws.permutation(25)[:8]
        expected.append(mmd2_loop(x[rows_x], y[rows_y]))
    mean, std = kid(x, y, subsets=3, subset_size=8, seed=11)
    assert mean == pytest.approx(np.mean(expected), rel=1e-10)
    assert std == pytest.approx(np.std(expected), rel=1e-8)
    # a subset of all rows is the whole set reordered: the estimator does not depend on the order
    assert kid(x[:20], y[:20], subsets=2, subset_size=20) == pytest.approx((mmd2_loop(x[:20], y[:20]), 0.0),
                                                                           rel=1e-10, abs=1e-12)


def test_kid_is_unbiased_for_one_distribution_and_positive_for_shifted_ones():
    rng = np.random.default_rng(7)
    same = np.array([polynomial_mmd2(gaussian(rng, 20, 4), gaussian(rng, 20, 4)) for _ in range(300)])
    assert abs(same.mean()) < 4 * same.std() / np.sqrt(len(same))
    x = gaussian(rng, 200, 4)
    mean_same, _ = kid(x, gaussian(rng, 200, 4), subsets=20, subset_size=100)
    mean_shifted, std_shifted = kid(x, gaussian(rng, 200, 4, shift=1.0), subsets=20, subset_size=100)
    assert mean_shifted > 3 * std_shifted > 0
    assert mean_shifted > 20 * abs(mean_same)


def test_running_kid_equals_kid_on_all_features():
    rng = np.random.default_rng(8)
    x, y = gaussian(rng, 40, 3), gaussian(rng, 30, 3, shift=0.5)
    metric = KID(subsets=5, subset_size=10, seed=3)
    metric.update(real=x[:13], fake=y[:7])
    metric.update(real=x[13:])
    metric.update(fake=y[7:])
    assert metric.compute() == kid(x, y, subsets=5, subset_size=10, seed=3)
    metric.reset()
    with pytest.raises(ValueError, match="needs real and generated"):
        metric.compute()


def test_inception_score_equals_the_mean_kl_by_hand():
    rng = np.random.default_rng(9)
    p = rng.dirichlet(np.ones(4) * 0.5, size=10)
    marginal = p.mean(axis=0)
    kl = [sum(p[i, c] * np.log(p[i, c] / marginal[c]) for c in range(4)) for i in range(10)]
    assert inception_score(p, splits=1) == pytest.approx((np.exp(np.mean(kl)), 0.0), rel=1e-12)
    halves = []
    for part in (p[:5], p[5:]):
        m = part.mean(axis=0)
        halves.append(np.exp(np.mean([np.sum(row * np.log(row / m)) for row in part])))
    assert inception_score(p, splits=2) == pytest.approx((np.mean(halves), np.std(halves)), rel=1e-12)


def test_inception_score_bounds_uniform_and_confident_balanced():
    assert inception_score(np.full((20, 5), 0.2), splits=2) == pytest.approx((1.0, 0.0))
    confident = np.eye(5)[np.tile(np.arange(5), 4)]                  # each class 4 times, probability 1
    assert inception_score(confident, splits=2) == pytest.approx((5.0, 0.0))
    with pytest.raises(ValueError, match="probabilities"):
        inception_score(np.full((4, 3), 0.5))


def prdc_loop(real, fake, k):
    def dist(a, b):
        return np.sqrt(np.sum((a - b) ** 2))

    def radius(points, i):
        return sorted(dist(points[i], points[j]) for j in range(len(points)))[k]

    r = [radius(real, i) for i in range(len(real))]
    s = [radius(fake, j) for j in range(len(fake))]
    inside = [[dist(real[i], fake[j]) < r[i] for i in range(len(real))] for j in range(len(fake))]
    precision = np.mean([any(row) for row in inside])
    recall = np.mean([any(dist(real[i], fake[j]) < s[j] for j in range(len(fake))) for i in range(len(real))])
    density = sum(sum(row) for row in inside) / (k * len(fake))
    coverage = np.mean([min(dist(real[i], fake[j]) for j in range(len(fake))) < r[i] for i in range(len(real))])
    return precision, recall, density, coverage


@pytest.mark.parametrize("chunk_size", [3, 1024])
def test_precision_recall_density_coverage_equal_a_brute_force_loop(chunk_size):
    rng = np.random.default_rng(10)
    real, fake = gaussian(rng, 30, 3), gaussian(rng, 25, 3, shift=0.6, scale=np.full(3, 0.7))
    scores = precision_recall_density_coverage(real, fake, k=3, chunk_size=chunk_size)
    assert tuple(scores) == pytest.approx(prdc_loop(real, fake, 3), abs=1e-12)
    assert 0 < scores.precision < 1 and 0 < scores.recall < 1


def test_balls_are_open_as_in_the_reference_code():
    real = np.arange(5.0)[:, None]                     # every k=1 radius is exactly 1
    fake = np.array([[2.0], [4.0]])                    # both k=1 radii are exactly 2
    scores = precision_recall_density_coverage(real, fake, k=1)
    # real 1 and 3 lie at distance 1 from the fake at 2, on their spheres: not inside their balls;
    # real 0 lies on the sphere of the fake at 2: not recalled
    assert tuple(scores) == pytest.approx((1.0, 0.8, 1.0, 0.4))


def test_collapsed_fakes_have_full_precision_and_low_recall():
    rng = np.random.default_rng(12)
    real = gaussian(rng, 100, 2)
    fake = real[0] + 1e-4 * rng.standard_normal((50, 2))
    scores = precision_recall_density_coverage(real, fake, k=5)
    assert scores.precision == 1.0
    assert scores.recall <= 0.02 and scores.coverage <= 0.1


def test_clear_errors_for_bad_features():
    rng = np.random.default_rng(13)
    x, y = gaussian(rng, 10, 3), gaussian(rng, 10, 4)
    for fn in (fid, kid, polynomial_mmd2, precision_recall_density_coverage):
        with pytest.raises(ShapeError, match="3 dims but generated ones 4"):
            fn(x, y)
    with pytest.raises(ValueError, match="at least 2 samples"):
        fid(x[:1], x)
    bad = x.copy()
    bad[2, 1] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fid(x, bad)
    with pytest.raises(ShapeError, match="2-D"):
        fid(x.ravel(), x)
    with pytest.raises(ValueError, match="subset_size 20"):
        kid(x, x, subset_size=20)
    with pytest.raises(ValueError, match="k must be"):
        precision_recall_density_coverage(x, x, k=10)
    metric = FID()
    metric.update(real=x)
    with pytest.raises(ShapeError, match="4 dims"):
        metric.update(fake=y)


def test_extract_features_gives_the_layer_outputs_for_scoring():
    rng = np.random.default_rng(14)
    images = rng.standard_normal((10, 4, 4, 1)).astype(np.float32)
    trunk = nn.Sequential(nn.Flatten(), nn.Dense(6, activation="relu"))
    model = nn.Sequential(trunk, nn.Dense(3))
    features = extract_features(model, images, layer=0, batch_size=3)
    assert isinstance(features, np.ndarray) and features.shape == (10, 6)
    np.testing.assert_allclose(features, trunk(images).data, rtol=1e-6)
    assert np.isfinite(fid(features, features + 1.0))


def test_readme_generative_metrics_example_runs():
    printed, names = run_readme_section("Scoring generated samples: FID, KID, Inception Score, precision/recall")
    assert names["fid_noisy"] > names["fid_clean"] > 0
    assert names["kid_noisy"][0] > names["kid_clean"][0]
    assert names["scores"].precision > 0.5
    assert "FID" in printed
