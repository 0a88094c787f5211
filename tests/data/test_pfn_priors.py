"""The priors of prior-fitted networks: GP draws whitened by the covariance computed by hand are
standard normal, the hyperparameters stay in their ranges, the kernel matches scikit-learn's RBF,
the random linear prior's labels are linearly separable, the MLP prior's classes all occur, and
the errors."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.gaussian_process.kernels import RBF
from sklearn.svm import LinearSVC

from lamina.data import GPPrior, MLPClassPrior, rbf_covariance


def test_rbf_covariance_matches_scikit_learn():
    rng = np.random.default_rng(0)
    x1, x2 = rng.standard_normal((4, 3)), rng.standard_normal((5, 3))
    np.testing.assert_allclose(rbf_covariance(x1, x2, 0.7, outputscale=1.5), 2.25 * RBF(0.7)(x1, x2), rtol=1e-12)


def test_gp_draws_whitened_by_their_covariance_are_standard_normal():
    prior = GPPrior(2, lengthscale=(0.3, 1.0), noise=(0.05, 0.3), outputscale=1.3, x_range=(-1.0, 3.0))
    batch = prior.sample(200, 30, rng=0)
    assert batch.x.shape == (200, 30, 2) and batch.y.shape == (200, 30)
    assert batch.x.min() >= -1.0 and batch.x.max() <= 3.0
    assert np.all((batch.lengthscale >= 0.3) & (batch.lengthscale <= 1.0))
    assert np.all((batch.noise >= 0.05) & (batch.noise <= 0.3))
    # log-uniform: the median of the lengthscales near sqrt(0.3 * 1.0)
    assert abs(np.log(np.median(batch.lengthscale)) - 0.5 * np.log(0.3)) < 0.15
    white = []
    for x, y, length, noise in zip(batch.x, batch.y, batch.lengthscale, batch.noise):
        distances = ((x[:, None] - x[None]) ** 2).sum(-1)
        covariance = 1.3 ** 2 * np.exp(-distances / (2 * length ** 2)) + noise ** 2 * np.eye(30)
        white.append(np.linalg.solve(np.linalg.cholesky(covariance), y))
    white = np.concatenate(white)                                      # 6000 values, N(0, 1) if right
    assert abs(white.mean()) < 0.05 and abs(white.std() - 1.0) < 0.03
    # the raw values are correlated: their variance is the prior's s^2 + sigma_n^2, not 1
    assert abs(batch.y.var() - (1.3 ** 2 + np.mean(batch.noise ** 2))) < 0.3


def test_the_same_seed_gives_the_same_datasets():
    prior = GPPrior()
    first, second = prior.sample(3, 5, rng=4), prior.sample(3, 5, rng=4)
    np.testing.assert_array_equal(first.y, second.y)
    classes = MLPClassPrior(3, 3)
    np.testing.assert_array_equal(classes.sample(2, 6, rng=1).y, classes.sample(2, 6, rng=1).y)


def test_the_random_linear_prior_labels_are_linearly_separable():
    prior = MLPClassPrior(3, 2, hidden_layers=0, noise=0.0)
    batch = prior.sample(10, 60, rng=1)
    assert batch.y.dtype == np.int64 and batch.lengthscale is None
    for x, y in zip(batch.x, batch.y):
        assert set(np.unique(y)) == {0, 1}
        assert LinearSVC(C=1e4, max_iter=100_000).fit(x, y).score(x, y) == 1.0


def test_the_mlp_prior_uses_every_class():
    batch = MLPClassPrior(2, 3, hidden=16, hidden_layers=2, noise=0.1).sample(50, 100, rng=2)
    assert batch.x.shape == (50, 100, 2) and batch.y.min() == 0 and batch.y.max() == 2
    counts = np.stack([np.bincount(y, minlength=3) for y in batch.y])
    assert np.mean(counts.min(axis=1) >= 5) > 0.8                      # centred scores keep classes represented
    assert abs(counts.sum(0) / counts.sum() - 1 / 3).max() < 0.1


def test_errors():
    with pytest.raises(ValueError, match=r"GPPrior: lengthscale must have 0 < low <= high, got \(1.0, 0.5\)"):
        GPPrior(lengthscale=(1.0, 0.5))
    with pytest.raises(ValueError, match="GPPrior: n_features must be a positive int, got 0"):
        GPPrior(0)
    with pytest.raises(ValueError, match="MLPClassPrior: n_classes must be at least 2, got 1"):
        MLPClassPrior(2, 1)
    with pytest.raises(ValueError, match="MLPClassPrior.sample: n_points must be a positive int"):
        MLPClassPrior().sample(2, 0)
