"""Exact GP regression: the predictive variance of y (with the likelihood's noise) against
scikit-learn, and hyperparameters learned from data drawn from a known GP."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.gaussian_process import GaussianProcessRegressor as SklearnGP
from sklearn.gaussian_process import kernels as sk

from lamina.models import GaussianProcessRegressor, kernels

RNG = np.random.default_rng(0)
X = RNG.uniform(0, 5, (15, 1))
Y = np.sin(X[:, 0]) + 0.1 * RNG.standard_normal(15)
X_NEW = np.linspace(-1, 6, 8)[:, None]


def test_predictive_variance_with_noise_matches_sklearn():
    gp = GaussianProcessRegressor(kernels.ScaleKernel(kernels.Matern(0.9, nu=2.5), 1.4), noise=0.03)
    gp.fit(X, Y, optimizer=None)
    # scikit-learn's WhiteKernel adds the noise to the prior variance at new points as well
    reference = SklearnGP(sk.ConstantKernel(1.4) * sk.Matern(0.9, nu=2.5) + sk.WhiteKernel(0.03), alpha=1e-300,
                          optimizer=None).fit(X, Y)
    mean, std = gp.predict(X_NEW, return_std=True, include_noise=True)
    ref_mean, ref_std = reference.predict(X_NEW, return_std=True)
    np.testing.assert_allclose(mean, ref_mean, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(std, ref_std, rtol=1e-8)
    _, cov = gp.predict(X_NEW, return_cov=True, include_noise=True)
    np.testing.assert_allclose(cov, reference.predict(X_NEW, return_cov=True)[1], rtol=1e-8, atol=1e-10)
    latent_std = gp.predict(X_NEW, return_std=True)[1]
    np.testing.assert_allclose(std ** 2, latent_std ** 2 + 0.03, rtol=1e-12)


@pytest.mark.parametrize("seed", [0, 1])
def test_learning_recovers_the_hyperparameters_of_a_known_gp(seed):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 10, (200, 1))
    length, outputscale, noise = 0.7, 1.5, 0.04
    k = outputscale * np.exp(-0.5 * (x - x.T) ** 2 / length ** 2) + noise * np.eye(200)
    y = np.linalg.cholesky(k) @ rng.standard_normal(200)
    gp = GaussianProcessRegressor(kernels.ScaleKernel(kernels.RBF()), noise=0.1).fit(x, y, steps=100)
    learned = gp.kernel.hyperparameters()
    # measured (seeds 0, 1, 2, 3): length scale 0.676, 0.792, 0.725, 0.688; noise 0.0443, 0.0325, 0.0453, 0.0395
    assert abs(learned["base.length_scale"] - length) < 0.2 * length
    assert abs(gp.noise.item() - noise) < 0.3 * noise
    reference = SklearnGP(sk.ConstantKernel() * sk.RBF() + sk.WhiteKernel(0.1), random_state=0).fit(x, y)
    np.testing.assert_allclose(gp.log_marginal_likelihood().item(), reference.log_marginal_likelihood_value_,
                               rtol=1e-7)
