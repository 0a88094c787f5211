"""Consistency models (Song et al. 2023; Song and Dhariwal 2023): the parameterisation and its
exact boundary condition, the Karras times and the curricula against the papers' formulas, the
CT and CD losses and their gradients against float64 torch rewrites, the mixture denoiser
against Tweedie's formula, and the samplers."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import compare_with_torch, randn
from lamina import functional as F
from lamina.errors import ShapeError
from lamina.models import (
    ConsistencyModel,
    EDMPrecond,
    consistency_coefficients,
    consistency_times,
    ct_discretization_steps,
    ct_target_decay,
    gaussian_mixture_denoiser,
    ict_discretization_steps,
    lognormal_step_probabilities,
    pseudo_huber_distance,
)
from lamina.nn import Module

EPS, T, SD = 0.002, 80.0, 0.5


class TanhNet(Module):
    """F(x, c_noise) = tanh(x W + c_noise) for a given weight tensor W."""

    def __init__(self, weight):
        super().__init__()
        self.weight = weight

    def forward(self, x, c_noise):
        shift = lamina.tensor(np.asarray(c_noise, dtype=x.dtype).reshape(-1, 1), dtype=x.dtype)
        return F.tanh(F.matmul(x, self.weight) + shift)


class ParameterTanhNet(TanhNet):
    """TanhNet with W a float64 parameter of the net (sampling takes its dtype)."""

    def __init__(self, weight: np.ndarray):
        Module.__init__(self)
        self.add_parameter("weight", weight.astype(np.float64))


def torch_f(x, t, w, sd=SD, eps=EPS):
    """f(x, t) of the paper in torch (t a float64 array of N times)."""
    t = torch.tensor(t, dtype=torch.float64).reshape(-1, 1)
    c_skip = sd ** 2 / ((t - eps) ** 2 + sd ** 2)
    c_out = sd * (t - eps) / torch.sqrt(sd ** 2 + t ** 2)
    c_in = 1 / torch.sqrt(sd ** 2 + t ** 2)
    return c_skip * x + c_out * torch.tanh((c_in * x) @ w + torch.log(t) / 4)


def test_coefficients_and_the_exact_boundary_condition():
    t = np.array([EPS, 0.01, 0.3, 1.0, 10.0, T])
    c = consistency_coefficients(t, SD, EPS)
    np.testing.assert_allclose(c["c_skip"], SD ** 2 / ((t - EPS) ** 2 + SD ** 2), rtol=1e-14)
    np.testing.assert_allclose(c["c_out"], SD * (t - EPS) / np.sqrt(SD ** 2 + t ** 2), rtol=1e-14)
    np.testing.assert_allclose(c["c_in"], 1 / np.sqrt(SD ** 2 + t ** 2), rtol=1e-14)
    assert c["c_skip"][0] == 1.0 and c["c_out"][0] == 0.0
    x = randn(5, 3, scale=3.0)
    model = ConsistencyModel(TanhNet(lamina.tensor(randn(3, 3, seed=1), dtype=np.float64)), SD, EPS, T)
    at_eps = model(lamina.tensor(x, dtype=np.float64), EPS).numpy()
    assert at_eps.dtype == np.float64 and np.array_equal(at_eps, x)       # f(x, eps) = x exactly
    later = model(lamina.tensor(x, dtype=np.float64), 0.5).numpy()
    np.testing.assert_allclose(later, torch_f(torch.tensor(x), np.full(5, 0.5), torch.tensor(randn(3, 3, seed=1)))
                               .numpy(), rtol=1e-12)
    assert not np.allclose(later, x)


def test_karras_times_and_curricula_follow_the_formulas():
    for n, rho in ((2, 7.0), (11, 7.0), (18, 3.0)):
        i = np.arange(1, n + 1)
        expected = (EPS ** (1 / rho) + (i - 1) / (n - 1) * (T ** (1 / rho) - EPS ** (1 / rho))) ** rho
        np.testing.assert_allclose(consistency_times(n, EPS, T, rho), expected, rtol=1e-12)
    # improved: K' = floor(1000 / (log2(1280 / 10) + 1)) = 125 steps per doubling
    assert [ict_discretization_steps(k, 1000) for k in (0, 124, 125, 250, 874, 875, 999)] == \
        [11, 11, 21, 41, 641, 1281, 1281]
    for k in (0, 1, 17, 500, 999, 1000):
        expected = math.ceil(math.sqrt(k / 1000 * (151 ** 2 - 4) + 4) - 1) + 1
        assert ct_discretization_steps(k, 1000) == expected
    assert ct_discretization_steps(0, 1000) == 2 and ct_discretization_steps(1000, 1000) == 151
    assert ct_target_decay(2) == pytest.approx(0.9) and ct_target_decay(10) == pytest.approx(0.9 ** 0.2)


def test_lognormal_step_probabilities():
    times = consistency_times(41, EPS, T)
    p = lognormal_step_probabilities(times)
    cdf = torch.special.erf((torch.log(torch.tensor(times)) + 1.1) / (math.sqrt(2) * 2.0)).numpy()
    np.testing.assert_allclose(p, np.diff(cdf) / np.diff(cdf).sum(), rtol=1e-10)
    assert p.sum() == pytest.approx(1.0) and np.all(p > 0)
    peak = p / np.diff(np.log(times))         # density in log t peaks near ln t = P_mean
    assert abs(np.log(times[peak.argmax()]) + 1.1) < 0.6


def test_pseudo_huber_distance():
    x, y = randn(4, 2, 3), randn(4, 2, 3, seed=1)
    c = 0.00054 * math.sqrt(6)
    expected = np.sqrt(((x - y) ** 2).sum(axis=(1, 2)) + c ** 2) - c
    np.testing.assert_allclose(pseudo_huber_distance(lamina.tensor(x, dtype=np.float64), y).numpy(), expected,
                               rtol=1e-12)
    compare_with_torch(lambda a, b: pseudo_huber_distance(a, b, c=0.1),
                       lambda a, b: torch.sqrt(((a - b) ** 2).sum(dim=(1, 2)) + 0.01) - 0.1, x, y, dtype=np.float64)


INDICES = np.array([0, 3, 7, 2, 9])


def torch_distance(a, b, metric):
    if metric == "l2":
        return ((a - b) ** 2).sum(dim=1)
    c = 0.00054 * math.sqrt(a.shape[1])
    return torch.sqrt(((a - b) ** 2).sum(dim=1) + c * c) - c


@pytest.mark.parametrize("metric,weighting", [("pseudo_huber", "ict"), ("l2", "uniform")])
def test_ct_loss_and_gradients_equal_a_torch_rewrite(metric, weighting):
    x0, z, w = randn(5, 3), randn(5, 3, seed=2), randn(3, 3, seed=1)
    times = consistency_times(11, EPS, T)
    low, high = times[INDICES], times[INDICES + 1]

    def ours(x0, w):
        model = ConsistencyModel(TanhNet(w), SD, EPS, T)
        return model.ct_loss(x0, 11, metric=metric, weighting=weighting, indices=INDICES, noise=z)

    def theirs(x0, w):
        zt = torch.tensor(z)
        online = torch_f(x0 + torch.tensor(high).reshape(-1, 1) * zt, high, w)
        target = torch_f(x0 + torch.tensor(low).reshape(-1, 1) * zt, low, w).detach()   # stop-gradient
        weight = 1 / torch.tensor(high - low) if weighting == "ict" else torch.ones(5, dtype=torch.float64)
        return (weight * torch_distance(online, target, metric)).mean()

    compare_with_torch(ours, theirs, x0, w, dtype=np.float64, grad=[False, True])


def test_ct_loss_with_a_target_network_differentiates_the_online_one_only():
    x0, z, w, w_target = randn(5, 3), randn(5, 3, seed=2), randn(3, 3, seed=1), randn(3, 3, seed=5)
    times = consistency_times(11, EPS, T)
    low, high = times[INDICES], times[INDICES + 1]
    target = ConsistencyModel(TanhNet(lamina.tensor(w_target, dtype=np.float64)), SD, EPS, T)

    def ours(w):
        model = ConsistencyModel(TanhNet(w), SD, EPS, T)
        return model.ct_loss(lamina.tensor(x0, dtype=np.float64), 11, target=target, indices=INDICES, noise=z)

    def theirs(w):
        zt, x = torch.tensor(z), torch.tensor(x0)
        online = torch_f(x + torch.tensor(high).reshape(-1, 1) * zt, high, w)
        wanted = torch_f(x + torch.tensor(low).reshape(-1, 1) * zt, low, torch.tensor(w_target))
        return (torch_distance(online, wanted, "pseudo_huber") / torch.tensor(high - low)).mean()

    compare_with_torch(ours, theirs, w, dtype=np.float64)


MEANS = np.array([[1.0, 0.0], [-0.5, 0.8], [0.0, -1.0]])
WEIGHTS = np.array([0.5, 0.2, 0.3])


def test_mixture_denoiser_satisfies_tweedie():
    x, sigma = randn(6, 2, scale=1.5), np.array([0.01, 0.1, 0.5, 1.0, 3.0, 20.0])
    denoise = gaussian_mixture_denoiser(MEANS, 0.1, WEIGHTS)
    xt = torch.tensor(x, requires_grad=True)
    variance = torch.tensor(0.1 ** 2 + sigma ** 2).reshape(-1, 1)
    log_p = torch.logsumexp(torch.log(torch.tensor(WEIGHTS)) - ((xt[:, None] - torch.tensor(MEANS)) ** 2).sum(-1)
                            / (2 * variance) - torch.log(variance), dim=1)
    score, = torch.autograd.grad(log_p.sum(), xt)
    expected = x + sigma[:, None] ** 2 * score.numpy()      # E[x0 | x] = x + sigma^2 grad log p_sigma(x)
    np.testing.assert_allclose(denoise(x, sigma), expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("solver", ["heun", "euler"])
def test_cd_loss_equals_a_torch_rewrite(solver):
    x0, z, w = randn(5, 2), randn(5, 2, seed=2), randn(2, 2, seed=1)
    denoise = gaussian_mixture_denoiser(MEANS, 0.1, WEIGHTS)
    times = consistency_times(18, EPS, T)
    low, high = times[INDICES], times[INDICES + 1]

    def ours(w):
        model = ConsistencyModel(TanhNet(w), SD, EPS, T)
        return model.cd_loss(lamina.tensor(x0, dtype=np.float64), denoise, 18, solver=solver, indices=INDICES,
                             noise=z)

    def theirs(w):
        hi, lo = high[:, None], low[:, None]
        x = x0 + hi * z
        slope = (x - denoise(x, high)) / hi
        x_low = x + (lo - hi) * slope
        if solver == "heun":
            x_low = x + (lo - hi) * 0.5 * (slope + (x_low - denoise(x_low, low)) / lo)
        online = torch_f(torch.tensor(x), high, w)
        wanted = torch_f(torch.tensor(x_low), low, w).detach()
        return (torch_distance(online, wanted, "pseudo_huber") / torch.tensor(high - low)).mean()

    compare_with_torch(ours, theirs, w, dtype=np.float64)


def test_cd_loss_distils_an_edm_denoiser_module():
    edm = EDMPrecond(ParameterTanhNet(randn(2, 2, seed=6)), sigma_data=0.5)
    model = ConsistencyModel(ParameterTanhNet(randn(2, 2, seed=1)), SD, EPS, T)
    x0, z = lamina.tensor(randn(5, 2), dtype=np.float64), randn(5, 2, seed=2)
    as_module = model.cd_loss(x0, edm, 18, indices=INDICES, noise=z)
    as_function = model.cd_loss(x0, lambda x, sigma: edm(lamina.tensor(x, dtype=np.float64), sigma).numpy(), 18,
                                indices=INDICES, noise=z)
    assert as_module.item() == pytest.approx(as_function.item(), rel=1e-12)
    as_module.backward()
    assert all(p.grad is not None for p in model.parameters()) and all(p.grad is None for p in edm.parameters())


def test_sampling_one_and_several_steps():
    model = ConsistencyModel(ParameterTanhNet(randn(2, 2, seed=1)), SD, EPS, T)
    z = randn(4, 2, seed=3)
    model(lamina.tensor(z, dtype=np.float64), T)
    one = model.sample(4, start=z)
    np.testing.assert_array_equal(one, model(lamina.tensor(T * z, dtype=np.float64), T).numpy())
    np.testing.assert_allclose(model.sampling_times(3), consistency_times(4, EPS, T)[1:3][::-1], rtol=1e-14)
    assert model.sampling_times(1).size == 0
    two = model.sample(4, times=[0.8], start=z, generator=7)
    noisy = one + math.sqrt(0.8 ** 2 - EPS ** 2) * np.random.default_rng(7).standard_normal((4, 2))
    np.testing.assert_allclose(two, model(lamina.tensor(noisy, dtype=np.float64), 0.8).numpy(), rtol=1e-12)


def test_errors_are_clear():
    net = TanhNet(lamina.tensor(randn(2, 2), dtype=np.float64))
    with pytest.raises(ValueError, match="eps < T"):
        ConsistencyModel(net, eps=1.0, T=0.5)
    with pytest.raises(TypeError, match="net must be a Module"):
        ConsistencyModel(lambda x, t: x)
    model = ConsistencyModel(net)
    x = lamina.tensor(randn(3, 2), dtype=np.float64)
    with pytest.raises(ValueError, match=r"t must be one number or 3 of them in \[eps, T\]"):
        model(x, 100.0)
    with pytest.raises(ValueError, match="metric must be one of"):
        model.ct_loss(x, 10, metric="lpips")
    with pytest.raises(ShapeError, match="noise of"):
        model.ct_loss(x, 10, noise=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="indices must be 3 ints"):
        model.ct_loss(x, 10, indices=np.array([0, 1, 9]))
    with pytest.raises(ValueError, match="num_steps must be an int >= 2"):
        consistency_times(1)
    with pytest.raises(ValueError, match="times must decrease strictly"):
        model.sample(2, times=[0.5, 1.0])
    with pytest.raises(TypeError, match="denoiser must be"):
        model.cd_loss(x, "edm", 10)
