"""EDM (Karras et al. 2022): the preconditioning coefficients and the properties they are
chosen for, the preconditioned denoiser, the loss and its gradients against torch (float64)
and by finite differences, and the Heun sampler with the ideal denoiser of Gaussian data."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import functional as F
from lamina.errors import ShapeError
from lamina.models.schedulers import EDMPrecond, edm_coefficients, edm_loss, edm_sampler, karras_sigmas
from lamina.nn import Module
from lamina.nn.module import as_tensor

SIGMAS = np.array([0.002, 0.05, 0.5, 1.0, 7.0, 80.0])


@pytest.mark.parametrize("sd", [0.5, 1.3])
def test_coefficients_are_the_papers(sd):
    c = edm_coefficients(SIGMAS, sd)
    np.testing.assert_allclose(c["c_skip"], sd ** 2 / (SIGMAS ** 2 + sd ** 2))
    np.testing.assert_allclose(c["c_out"], SIGMAS * sd / np.sqrt(SIGMAS ** 2 + sd ** 2))
    np.testing.assert_allclose(c["c_in"], 1 / np.sqrt(SIGMAS ** 2 + sd ** 2))
    np.testing.assert_allclose(c["c_noise"], np.log(SIGMAS) / 4)
    # what they are chosen for: unit-variance net input and training target, c_out smallest
    np.testing.assert_allclose(c["c_in"] ** 2 * (sd ** 2 + SIGMAS ** 2), 1)
    target_variance = ((1 - c["c_skip"]) ** 2 * sd ** 2 + c["c_skip"] ** 2 * SIGMAS ** 2) / c["c_out"] ** 2
    np.testing.assert_allclose(target_variance, 1)
    skips = c["c_skip"][:, None] + np.linspace(-0.05, 0.05, 11)[None]
    spread = (1 - skips) ** 2 * sd ** 2 + skips ** 2 * SIGMAS[:, None] ** 2
    assert np.all(spread.argmin(axis=1) == 5)


class TanhNet(Module):
    """F(x, c_noise) = tanh(x W + c_noise) for a given weight tensor W."""

    def __init__(self, weight):
        super().__init__()
        self.weight = weight
        self.seen = []

    def forward(self, x, c_noise):
        self.seen.append((np.asarray(x.numpy()), np.asarray(c_noise)))
        shift = lamina.tensor(np.asarray(c_noise, dtype=x.dtype).reshape(-1, 1), dtype=x.dtype)
        return F.tanh(F.matmul(x, self.weight) + shift)


def test_preconditioned_denoiser():
    x, w = randn(4, 3), randn(3, 3, seed=1)
    net = TanhNet(lamina.tensor(w, dtype=np.float64))
    model = EDMPrecond(net, sigma_data=0.7)
    sigma = np.array([0.1, 1.0, 3.0, 20.0])
    out = model(lamina.tensor(x, dtype=np.float64), sigma).numpy()
    c = {k: v[:, None] for k, v in edm_coefficients(sigma, 0.7).items()}
    np.testing.assert_allclose(out, c["c_skip"] * x + c["c_out"] * np.tanh(c["c_in"] * x @ w + c["c_noise"]),
                               rtol=1e-12)
    np.testing.assert_allclose(net.seen[0][0], c["c_in"] * x, rtol=1e-12)
    np.testing.assert_allclose(net.seen[0][1], np.log(sigma) / 4, rtol=1e-12)
    assert model(as_tensor(x), 2.0).shape == (4, 3)
    with pytest.raises(ShapeError, match="sigma must be one positive number or 4 of them"):
        model(as_tensor(x), np.ones(3))
    with pytest.raises(ValueError, match="sigma_data must be a positive number"):
        EDMPrecond(net, sigma_data=0)


SIGMA = np.array([0.03, 0.4, 1.1, 9.0, 2.5])
NOISE = randn(5, 3, seed=4)


def _lamina_loss(x, w):
    return edm_loss(EDMPrecond(TanhNet(w), sigma_data=0.6), x, sigma=SIGMA, noise=NOISE)


def _torch_loss(x, w):
    sd, sigma = 0.6, torch.tensor(SIGMA)[:, None]
    y = x + sigma * torch.tensor(NOISE)
    c_skip, c_out = sd ** 2 / (sigma ** 2 + sd ** 2), sigma * sd / (sigma ** 2 + sd ** 2).sqrt()
    denoised = c_skip * y + c_out * torch.tanh(y / (sigma ** 2 + sd ** 2).sqrt() @ w + torch.log(sigma) / 4)
    weight = (sigma ** 2 + sd ** 2) / (sigma * sd) ** 2
    return (weight * (denoised - x) ** 2).mean()


def test_loss_against_torch_and_gradcheck():
    x, w = randn(5, 3, seed=2), randn(3, 3, seed=3, scale=0.5)
    compare_with_torch(_lamina_loss, _torch_loss, x, w, dtype=np.float64)
    assert check_gradients(_lamina_loss, x, w)


def test_loss_draws_log_normal_sigmas():
    rng = np.random.default_rng(0)
    lamina.manual_seed(3)
    seen = []
    model = EDMPrecond(TanhNet(as_tensor(np.eye(2))))
    model.net.forward = lambda x, c_noise: seen.append(np.asarray(c_noise)) or x
    edm_loss(model, rng.standard_normal((4000, 2)))
    log_sigma = 4 * seen[0]
    assert abs(log_sigma.mean() + 1.2) < 0.06 and abs(log_sigma.std() - 1.2) < 0.05
    with pytest.raises(TypeError, match="model must be an EDMPrecond"):
        edm_loss(TanhNet(None), np.zeros((2, 2)))


MU, S = 0.4, 0.3


def ideal_denoiser(x, sigma):
    """E[x_0 | x] for data N(MU, S^2) seen with noise of level sigma."""
    return MU + S ** 2 / (S ** 2 + sigma ** 2) * (x - MU)


class IdealNet(Module):
    """The net whose preconditioned denoiser is the ideal one (undoes c_skip, c_out, c_in)."""

    def __init__(self, sd):
        super().__init__()
        self.sd = sd

    def forward(self, inner, c_noise):
        sigma = np.exp(4 * np.asarray(c_noise))[:, None]
        total = sigma ** 2 + self.sd ** 2
        x = inner.numpy() * np.sqrt(total)
        c_skip, c_out = self.sd ** 2 / total, sigma * self.sd / np.sqrt(total)
        return as_tensor((ideal_denoiser(x, sigma) - c_skip * x) / c_out)


@pytest.mark.parametrize("steps, options, tolerance", [
    (36, {}, 0.02),
    (72, {"S_churn": 40, "S_min": 0.05, "S_max": 50}, 0.04),   # churn's extra error decays slowly
])
def test_heun_sampler_reproduces_gaussian_data(steps, options, tolerance):
    """(The paper's 18 steps give a standard deviation 6% high here: the Karras levels leave few
    steps near sigma ~ S = 0.3, where this data's denoiser changes fastest.)"""
    latents = np.random.default_rng(0).standard_normal((20000, 1))
    samples = edm_sampler(ideal_denoiser, latents, num_steps=steps, generator=1, **options)
    assert abs(samples.mean() - MU) < 0.01 and abs(samples.std() / S - 1) < tolerance, (samples.mean(),
                                                                                       samples.std())


def test_heun_sampler_is_algorithm_2():
    """With the ideal denoiser as an EDMPrecond, equal to the algorithm written out here."""
    latents = randn(6, 2, seed=5)
    ours = edm_sampler(EDMPrecond(IdealNet(0.5), sigma_data=0.5), latents.astype(np.float32), num_steps=5,
                       S_churn=2.0, S_min=0.1, S_max=10.0, generator=np.random.default_rng(9))
    rng = np.random.default_rng(9)
    t = np.append(karras_sigmas(5, 0.002, 80.0), 0)
    x = latents * t[0]
    for i in range(5):
        gamma = min(2.0 / 5, np.sqrt(2) - 1) if 0.1 <= t[i] <= 10.0 else 0
        t_hat = t[i] + gamma * t[i]
        x_hat = x + np.sqrt(t_hat ** 2 - t[i] ** 2) * rng.standard_normal(x.shape) if gamma else x
        d = (x_hat - ideal_denoiser(x_hat, t_hat)) / t_hat
        x = x_hat + (t[i + 1] - t_hat) * d
        if i < 4:
            x = x_hat + (t[i + 1] - t_hat) * (d / 2 + (x - ideal_denoiser(x, t[i + 1])) / t[i + 1] / 2)
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, x, rtol=1e-4, atol=1e-5)
