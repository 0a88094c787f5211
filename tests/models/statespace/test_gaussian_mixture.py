"""GaussianMixture against scikit-learn's GaussianMixture (one EM step and the converged fit
from the same start, every covariance type), densities against a direct evaluation, BIC on
well-separated data, sampling and errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.exceptions import ConvergenceWarning
from sklearn.mixture import GaussianMixture as SklearnGaussianMixture

from helpers import assert_close
from lamina.errors import ShapeError
from lamina.models import GaussianMixture

TYPES = ["full", "tied", "diag", "spherical"]
CENTRES = np.array([[0.0, 0.0], [6.0, 1.0], [1.0, 7.0]])


def blobs(n=300, seed=0, centres=CENTRES):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, len(centres), n)
    scales = np.array([[1.0, 0.5], [0.6, 1.2], [0.8, 0.8]])[labels % 3]
    return centres[labels] + rng.standard_normal((n, 2)) * scales, labels


def start(covariance_type):
    """A deliberately poor common start: weights, means and precisions."""
    weights = np.array([0.5, 0.3, 0.2])
    means = np.array([[1.0, 1.0], [4.0, 0.0], [0.0, 4.0]])
    precisions = {"full": np.stack([np.eye(2), [[2.0, 0.3], [0.3, 1.0]], np.eye(2) * 0.5]),
                  "tied": np.array([[1.5, -0.2], [-0.2, 0.7]]),
                  "diag": np.array([[1.0, 2.0], [0.5, 0.5], [3.0, 1.0]]),
                  "spherical": np.array([1.0, 0.4, 2.0])}[covariance_type]
    return {"weights_init": weights, "means_init": means, "precisions_init": precisions}


def sklearn_fit(x, covariance_type, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        return SklearnGaussianMixture(3, covariance_type=covariance_type, **start(covariance_type), **options).fit(x)


@pytest.mark.parametrize("covariance_type", TYPES)
def test_one_em_step_equals_sklearn(covariance_type):
    x, _ = blobs()
    theirs = sklearn_fit(x, covariance_type, max_iter=1)
    ours = GaussianMixture(3, covariance_type, max_iter=1, **start(covariance_type)).fit(x)
    assert_close(ours.weights_, theirs.weights_, 1e-8, "weights")
    assert_close(ours.means_, theirs.means_, 1e-8, "means")
    assert_close(ours.covariances_, theirs.covariances_, 1e-8, "covariances")
    assert_close(ours.precisions_cholesky_ @ np.swapaxes(ours.precisions_cholesky_, -1, -2)
                 if covariance_type in ("full", "tied") else ours.precisions_cholesky_ ** 2,
                 theirs.precisions_, 1e-8, "precisions")
    assert abs(ours.lower_bound_ - theirs.lower_bound_) < 1e-10


@pytest.mark.parametrize("covariance_type", TYPES)
def test_converged_fit_matches_sklearn_from_the_same_start(covariance_type):
    x, _ = blobs(seed=1)
    theirs = sklearn_fit(x, covariance_type, tol=1e-8, max_iter=500)
    ours = GaussianMixture(3, covariance_type, tol=1e-8, max_iter=500, **start(covariance_type)).fit(x)
    assert ours.converged_ and ours.n_iter_ == theirs.n_iter_
    assert abs(ours.score(x) - theirs.score(x)) < 1e-8
    assert_close(ours.score_samples(x), theirs.score_samples(x), 1e-8)
    assert_close(ours.predict_proba(x), theirs.predict_proba(x), 1e-6)
    assert (ours.predict(x) == theirs.predict(x)).all()


def test_score_samples_equals_the_mixture_density():
    x, _ = blobs(n=200, seed=2)
    model = GaussianMixture(3, "full", seed=0).fit(x)
    density = np.zeros(len(x))
    for w, mu, cov in zip(model.weights_, model.means_, model.covariances_):
        centred = x - mu
        mahalanobis = np.einsum("ni,ij,nj->n", centred, np.linalg.inv(cov), centred)
        density += w * np.exp(-0.5 * mahalanobis) / np.sqrt(np.linalg.det(2 * np.pi * cov))
    assert_close(model.score_samples(x), np.log(density), 1e-10)
    assert_close(model.predict_proba(x).sum(axis=1), np.ones(len(x)), 1e-12)


def test_kmeans_start_finds_the_clusters_and_bic_picks_their_number():
    x, labels = blobs(n=400, seed=3)
    fits = {k: GaussianMixture(k, "full", seed=0).fit(x) for k in range(1, 6)}
    bics = {k: model.bic(x) for k, model in fits.items()}
    assert min(bics, key=bics.get) == 3
    assert min({k: model.aic(x) for k, model in fits.items()}.items(), key=lambda kv: kv[1])[0] >= 3
    table = np.bincount(fits[3].predict(x) * 3 + labels, minlength=9).reshape(3, 3)   # (component, label)
    assert sorted(table.argmax(axis=1)) == [0, 1, 2] and table.max(axis=1).sum() > 0.97 * len(x)
    sklearn_score = SklearnGaussianMixture(3, random_state=0).fit(x).score(x)
    assert abs(fits[3].score(x) - sklearn_score) < 1e-3


def test_parameter_counts():
    x, _ = blobs(n=100)
    counts = {t: GaussianMixture(3, t, max_iter=2).fit(x).n_parameters() for t in TYPES}
    assert counts == {"full": 17, "tied": 11, "diag": 14, "spherical": 11}   # 2 + 6 + covariances


@pytest.mark.parametrize("covariance_type", TYPES)
def test_sample_follows_the_fitted_mixture(covariance_type):
    x, _ = blobs(n=300, seed=4)
    model = GaussianMixture(3, covariance_type, seed=0).fit(x)
    drawn, labels = model.sample(6000, seed=1)
    assert drawn.shape == (6000, 2)
    assert np.abs(np.bincount(labels, minlength=3) / 6000 - model.weights_).max() < 0.03
    # mean of each component's draws: standard error below 0.03 with over 1000 draws of sd <= 1.3
    for j in range(3):
        assert np.abs(drawn[labels == j].mean(axis=0) - model.means_[j]).max() < 0.15


def test_errors_are_clear():
    x, _ = blobs(n=50)
    with pytest.raises(ValueError, match="covariance_type must be one of"):
        GaussianMixture(2, "banded")
    with pytest.raises(ValueError, match="precisions_init must be symmetric positive definite"):
        GaussianMixture(3, "full", means_init=start("full")["means_init"],
                        precisions_init=-start("full")["precisions_init"]).fit(x)
    with pytest.raises(ShapeError, match=r"means_init must have shape \(3, 2\)"):
        GaussianMixture(3, means_init=np.zeros((2, 2))).fit(x)
    with pytest.raises(ValueError, match="must sum to 1"):
        GaussianMixture(3, weights_init=[0.5, 0.5, 0.5]).fit(x)
    with pytest.raises(ValueError, match="not positive definite"):
        GaussianMixture(2, "full", reg_covar=0.0).fit(np.repeat(x[:1], 10, axis=0))
    with pytest.raises(RuntimeError, match="not fitted"):
        GaussianMixture(2).predict(x)
    with pytest.raises(ShapeError, match="X has 3 features"):
        GaussianMixture(2, max_iter=2).fit(x).score(np.zeros((4, 3)))


def test_several_starts_keep_the_best():
    x, _ = blobs(n=200, seed=5, centres=CENTRES[:2])
    one = GaussianMixture(4, "diag", seed=3).fit(x)
    several = GaussianMixture(4, "diag", seed=3, n_init=3).fit(x)
    assert several.lower_bound_ >= one.lower_bound_       # the first of the starts is the same one
