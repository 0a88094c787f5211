"""Noise-conditional score network and annealed Langevin dynamics on Gaussians with known scores."""

import numpy as np
import pytest

import lamina
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models import NCSNMLP, annealed_langevin_sample, geometric_sigmas
from lamina.optim import Adam


def gaussian_smoothed_score(variance):
    """The score of N(0, variance I) smoothed by N(0, sigma^2 I)."""
    return lambda x, sigma: x * (-1.0 / (variance + sigma ** 2))


def test_geometric_sigmas():
    sigmas = geometric_sigmas(1.0, 0.01, 5)
    np.testing.assert_allclose(sigmas, [1.0, 10 ** -0.5, 0.1, 10 ** -1.5, 0.01])
    with pytest.raises(ValueError, match="sigma_min <= sigma_max"):
        geometric_sigmas(0.1, 1.0, 3)


def test_annealed_langevin_follows_the_update_step_by_step():
    sigmas, epsilon = np.array([1.0, 0.5]), 0.01
    score = gaussian_smoothed_score(0.2)
    x0 = np.random.default_rng(0).standard_normal((4, 2))
    got = annealed_langevin_sample(score, x0, sigmas, 3, epsilon, denoise=True, seed=5).numpy()
    draws, x = np.random.default_rng(5), x0.copy()
    for sigma in sigmas:
        alpha = epsilon * (sigma / sigmas[-1]) ** 2
        for _ in range(3):
            x = x + alpha / 2 * (-x / (0.2 + sigma ** 2)) + np.sqrt(alpha) * draws.standard_normal(x.shape)
    x = x + sigmas[-1] ** 2 * (-x / (0.2 + sigmas[-1] ** 2))
    np.testing.assert_allclose(got, x, rtol=1e-12, atol=1e-12)


def test_annealed_langevin_samples_the_smoothed_gaussian():
    # Without the final denoising step the chains end at N(0, (v + sigma_L^2) I).
    variance, sigmas = 0.09, geometric_sigmas(1.0, 0.05, 8)
    x0 = np.random.default_rng(0).uniform(-1, 1, (4000, 2))
    samples = annealed_langevin_sample(gaussian_smoothed_score(variance), x0, sigmas, 50, 2e-3, denoise=False,
                                       seed=1).numpy()
    print(f"annealed Langevin variance {samples.var(0)} vs {variance + sigmas[-1] ** 2}")
    np.testing.assert_allclose(samples.mean(0), 0.0, atol=0.03)
    np.testing.assert_allclose(samples.var(0), variance + sigmas[-1] ** 2, rtol=0.12)


def test_annealed_langevin_checks_its_inputs():
    with pytest.raises(ValueError, match="non-increasing"):
        annealed_langevin_sample(gaussian_smoothed_score(1.0), np.zeros((2, 2)), [0.1, 1.0])
    with pytest.raises(ShapeError, match="score of x's shape"):
        annealed_langevin_sample(lambda x, s: x[:, :1], np.zeros((2, 2)), [1.0], 1)


def test_ncsn_loss_is_the_sigma_weighted_denoising_loss():
    lamina.manual_seed(0)
    model = NCSNMLP(2, hidden=8, levels=4)
    x = np.random.default_rng(1).standard_normal((6, 2))
    loss = model.loss(Tensor(x, dtype=np.float64), seed=3).item()
    draws = np.random.default_rng(3)
    sigma = model.sigmas[draws.integers(0, 4, 6)]
    eps = draws.standard_normal((6, 2))
    scores = model(Tensor(x + sigma[:, None] * eps, dtype=np.float64), sigma).numpy()
    expected = 0.5 * ((sigma[:, None] * scores + eps) ** 2).sum(1).mean()
    assert abs(loss - expected) < 1e-10
    with pytest.raises(ShapeError, match=r"x must have shape \(n, 2\)"):
        model(Tensor(np.zeros((3, 5))), 1.0)


def test_ncsn_learns_the_smoothed_score_of_a_gaussian():
    rng = np.random.default_rng(0)
    x = (0.3 * rng.standard_normal((2000, 2))).astype(np.float32)
    lamina.manual_seed(0)
    model = NCSNMLP(2, hidden=32, sigma_max=1.0, sigma_min=0.2, levels=4)
    model(x[:1], 1.0)
    optimizer = Adam(model, lr=3e-3)
    for _ in range(500):
        loss = model.loss(x[rng.integers(0, 2000, 128)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    grid = np.array([[0.2, 0.1], [-0.3, 0.4], [0.1, -0.2]], dtype=np.float32)
    for sigma in model.sigmas[:3]:
        got = model(Tensor(grid), sigma).numpy()
        expected = gaussian_smoothed_score(0.09)(grid, sigma)
        error = np.abs(got - expected).max() / np.abs(expected).max()
        print(f"sigma {sigma:.3f}: relative score error {error:.3f}")
        assert error < 0.2
