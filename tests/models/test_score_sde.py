"""Score-based SDEs (Song et al. 2021): the VP, sub-VP and VE SDEs' marginals against closed forms,
against the moment ODEs of a linear SDE and against a Monte-Carlo simulation of the forward SDE;
the denoising score-matching loss against a float64 torch rewrite and by finite differences; the
score network's shapes, save/load and a learning test on a 2-D Gaussian mixture."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.integrate import quad, solve_ivp
from scipy.stats import multivariate_normal

import lamina
from helpers import check_gradients, compare_with_torch, randn, run_readme_section
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models import (
    VESDE,
    VPSDE,
    ScoreSDEMLP,
    make_sde,
    ode_log_likelihood,
    ode_sample,
    pc_sample,
    score_sde_loss,
    subVPSDE,
)
from lamina.optim import Adam

SDES = {"vp": lambda: VPSDE(0.1, 20.0), "subvp": lambda: subVPSDE(0.1, 20.0), "ve": lambda: VESDE(0.01, 5.0)}
TIMES = np.array([1e-4, 0.05, 0.3, 0.7, 1.0])


def beta(t):
    return 0.1 + t * 19.9


def test_marginals_are_the_closed_forms():
    for t in TIMES:
        integral = quad(beta, 0, t)[0]
        m, s = VPSDE().marginal_coefficients(t)
        np.testing.assert_allclose([m[0], s[0]], [np.exp(-integral / 2), np.sqrt(1 - np.exp(-integral))], rtol=1e-10)
        m, s = subVPSDE().marginal_coefficients(t)
        np.testing.assert_allclose([m[0], s[0]], [np.exp(-integral / 2), 1 - np.exp(-integral)], rtol=1e-10)
        m, s = VESDE(0.01, 5.0).marginal_coefficients(t)
        np.testing.assert_allclose([m[0], s[0]], [1.0, 0.01 * 500.0 ** t], rtol=1e-10)


@pytest.mark.parametrize("kind", sorted(SDES))
def test_marginals_solve_the_moment_odes_of_the_linear_sde(kind):
    # f = c(t) x is linear, so the kernel's mean coefficient and variance solve m' = c m and
    # v' = 2 c v + g^2 (v(0) = sigma_min^2 for VE: the kernel from the sigma_min-smoothed data)
    sde = SDES[kind]()
    m0, s0 = sde.marginal_coefficients(0.0)

    def moments(t, y):
        c = sde.drift(np.ones((1, 1)), t)[0, 0]
        return [c * y[0], 2 * c * y[1] + sde.diffusion(t)[0] ** 2]

    solution = solve_ivp(moments, (0.0, 1.0), [m0[0], s0[0] ** 2], t_eval=TIMES, rtol=1e-10, atol=1e-12)
    m, s = sde.marginal_coefficients(TIMES)
    np.testing.assert_allclose(solution.y[0], m, rtol=1e-6)
    np.testing.assert_allclose(np.sqrt(solution.y[1]), s, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("kind", sorted(SDES))
def test_marginals_match_a_simulation_of_the_forward_sde(kind):
    sde, n, steps = SDES[kind](), 20000, 1000
    rng = np.random.default_rng(0)
    x0 = np.array([[1.5, -0.5]])
    x = np.repeat(x0, n, axis=0) + (sde.sigma_min * rng.standard_normal((n, 2)) if kind == "ve" else 0.0)
    dt, checkpoints = 1.0 / steps, {300: 0.3, 1000: 1.0}
    for k in range(1, steps + 1):                     # Euler-Maruyama
        t = (k - 1) * dt
        x = x + sde.drift(x, t) * dt + sde.diffusion(t)[0] * np.sqrt(dt) * rng.standard_normal(x.shape)
        if k in checkpoints:
            mean, std = sde.marginal(x0, checkpoints[k])
            sem = std[0] / np.sqrt(n)
            np.testing.assert_allclose(x.mean(0), mean[0], atol=5 * sem)
            np.testing.assert_allclose(x.std(0), std[0], rtol=0.03)


@pytest.mark.parametrize("kind", sorted(SDES))
def test_prior_sampling_and_log_density(kind):
    sde = SDES[kind]()
    z = sde.prior_sample((20000, 3), seed=0)
    scale = 5.0 if kind == "ve" else 1.0
    np.testing.assert_allclose(z.std(0), scale, rtol=0.03)
    points = randn(4, 3)
    expected = multivariate_normal(np.zeros(3), scale ** 2 * np.eye(3)).logpdf(points)
    np.testing.assert_allclose(sde.prior_log_prob(points), expected, rtol=1e-12)
    # the marginal at T is (nearly) the prior: the kernel's std is the prior's, the data's mean
    # has vanished (VP) or is small beside it (VE)
    m, s = sde.marginal_coefficients(1.0)
    assert m[0] / s[0] < 0.01 or kind == "ve" and abs(s[0] - scale) < 1e-9


def test_reverse_drift_and_discretizations_by_hand():
    x, t, score = randn(3, 2), np.array([0.2, 0.5, 0.9]), randn(3, 2, seed=1)
    sde = VPSDE()
    b = beta(t)[:, None]
    np.testing.assert_allclose(sde.reverse_drift(x, t, score), -b / 2 * x - b * score)
    np.testing.assert_allclose(sde.reverse_drift(x, t, score, probability_flow=True), -b / 2 * x - b / 2 * score)
    f, g = sde.discretize(x, t, 0.01)
    np.testing.assert_allclose(f, (np.sqrt(1 - b * 0.01) - 1) * x)
    np.testing.assert_allclose(g, np.sqrt(beta(t) * 0.01))
    ve = VESDE(0.01, 5.0)
    f, g = ve.discretize(x, t, 0.1)
    np.testing.assert_allclose(f, 0.0)
    np.testing.assert_allclose(g, np.sqrt((0.01 * 500 ** t) ** 2 - (0.01 * 500 ** (t - 0.1)) ** 2))
    np.testing.assert_allclose(ve.reverse_drift(x, t, score), -(ve.diffusion(t) ** 2)[:, None] * score)


def test_sdes_report_bad_arguments():
    with pytest.raises(ValueError, match="VPSDE: need beta_min <= beta_max"):
        VPSDE(5.0, 1.0)
    with pytest.raises(ValueError, match="VESDE: sigma_max must be a positive number"):
        VESDE(0.01, -1.0)
    with pytest.raises(ValueError, match="unknown SDE 'cosine'"):
        make_sde("cosine")
    with pytest.raises(ValueError, match=r"VPSDE: t must be one time or 2 times in \[0, 1.0\], got shape \(2,\) "
                                         r"with values in \[0.5, 1.5\]"):
        VPSDE().marginal(np.zeros((2, 2)), [0.5, 1.5])
    with pytest.raises(ShapeError, match=r"VPSDE.drift: x must be a batch of samples \(n, ...\), got shape \(3,\)"):
        VPSDE().drift(np.zeros(3), 0.5)


# -- the loss ---------------------------------------------------------------------------------
def torch_loss(sde, x, w, b, t, z, weighting):
    """The published loss, lambda(t) / 2 ||s(x_t, t) + z / std||^2, with s = tanh(x_t w + b) * t."""
    m, s = (torch.tensor(v[:, None]) for v in sde.marginal_coefficients(t))
    xt = m * x + s * z
    score = torch.tanh(xt @ w + b) * torch.tensor(t[:, None])
    weight = s ** 2 if weighting == "sigma2" else torch.tensor(sde.diffusion(t)[:, None] ** 2)
    return (weight * (score + z / s) ** 2).sum(1).mul(0.5).mean()


def lamina_loss(sde, x, w, b, t, z, weighting):
    def score(xt, times):
        return F.tanh(xt @ w + b) * Tensor(times[:, None], dtype=xt.dtype)
    return score_sde_loss(score, sde, x, weighting=weighting, t=t, noise=z)


@pytest.mark.parametrize("weighting", ["sigma2", "likelihood"])
@pytest.mark.parametrize("kind", sorted(SDES))
def test_loss_matches_torch_and_finite_differences(kind, weighting):
    sde, t = SDES[kind](), np.array([0.01, 0.2, 0.5, 0.8, 1.0])
    z = randn(5, 3, seed=3)
    arrays = (randn(5, 3), randn(3, 3, seed=1, scale=0.5), randn(3, seed=2))
    compare_with_torch(lambda x, w, b: lamina_loss(sde, x, w, b, t, z, weighting),
                       lambda x, w, b: torch_loss(sde, x, w, b, t, torch.tensor(z), weighting),
                       *arrays, dtype=np.float64, rtol=1e-10)
    assert check_gradients(lambda x, w, b: lamina_loss(sde, x, w, b, t, z, weighting), *arrays)


def test_loss_draws_times_and_noise_from_its_seed():
    sde, x = VPSDE(), randn(6, 2)
    rng = np.random.default_rng(7)
    t, z = rng.uniform(1e-3, 1.0, 6), rng.standard_normal((6, 2))
    score = lambda xt, times: xt * -1.0  # noqa: E731
    got = score_sde_loss(score, sde, x, eps=1e-3, seed=7).item()
    assert got == pytest.approx(score_sde_loss(score, sde, x, t=t, noise=z).item(), rel=1e-12)
    with pytest.raises(ValueError, match="weighting must be one of"):
        score_sde_loss(score, sde, x, weighting="uniform")
    with pytest.raises(ShapeError, match=r"score_sde_loss: score_fn must return a score of x's shape \(6, 2\)"):
        score_sde_loss(lambda xt, times: xt[:, :1], sde, x)


# -- the score network ------------------------------------------------------------------------
def test_score_network_shapes_scaling_and_save_load(tmp_path):
    lamina.manual_seed(0)
    model = ScoreSDEMLP(3, hidden=(8, 8), time_dim=8, sde="subvp")
    x, t = randn(4, 3).astype(np.float32), np.array([0.1, 0.4, 0.6, 1.0])
    out = model(x, t).numpy()
    assert out.shape == (4, 3) and out.dtype == np.float32
    _, std = model.sde.marginal_coefficients(t)
    np.testing.assert_allclose(out, model.net(x, 999 * t).numpy() / std[:, None], rtol=1e-6)
    for p in model.parameters():
        p.data[...] = np.random.default_rng(1).standard_normal(p.shape) * 0.1
    expected = model(x, t).numpy()
    lamina.save(model, tmp_path / "score.safetensors")
    twin = lamina.load(tmp_path / "score.safetensors")
    assert type(twin.sde) is subVPSDE and twin.get_config() == model.get_config()
    np.testing.assert_array_equal(twin(x, t).numpy(), expected)
    assert model.loss(x, seed=0).item() == pytest.approx(score_sde_loss(model, model.sde, x, seed=0).item())
    with pytest.raises(ShapeError, match=r"x must have shape \(n, 3\), got \(4, 2\)"):
        model(x[:, :2], t)


def mixture(n, rng):
    centres = np.array([[1.0, 1.0], [-1.0, 1.0], [-1.0, -1.0], [1.0, -1.0]])
    return (centres[rng.integers(0, 4, n)] + 0.25 * rng.standard_normal((n, 2))).astype(np.float32)


def nearest_distance(samples, data):
    return np.sqrt(((samples[:, None] - data[None]) ** 2).sum(2)).min(1).mean()


@pytest.mark.parametrize("seed", [0])
def test_score_network_learns_a_gaussian_mixture(seed):
    # 4 Gaussians (std 0.25) at (+-1, +-1); VP SDE, 450 Adam steps
    rng = np.random.default_rng(100 + seed)
    train, held = mixture(2000, rng), mixture(200, rng)
    lamina.manual_seed(seed)
    model = ScoreSDEMLP(2, hidden=(64, 64))
    optimizer = Adam(model, lr=3e-3)
    for _ in range(450):
        loss = model.loss(train[rng.integers(0, 2000, 256)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    ode = ode_sample(model.sde, model, (300, 2), steps=50, seed=seed)
    pc = pc_sample(model.sde, model, (300, 2), steps=200, predictor="reverse_diffusion", seed=seed)
    prior = model.sde.prior_sample((300, 2), seed=seed)
    distances = [nearest_distance(s, held) for s in (ode, pc, prior)]
    log_likelihood = ode_log_likelihood(model.sde, model, held, steps=50)
    gaussian = multivariate_normal(np.zeros(2), np.eye(2)).logpdf(held)
    print(f"nearest-neighbour distance ODE {distances[0]:.3f}, PC {distances[1]:.3f}, prior {distances[2]:.3f}; "
          f"log-likelihood mean {log_likelihood.mean():.3f}, median {np.median(log_likelihood):.3f} vs N(0, I) "
          f"{gaussian.mean():.3f}, {np.median(gaussian):.3f}")
    # measured (seed 0, OpenBLAS's own and Haswell kernels alike): distances ODE 0.114, PC 0.093, prior 0.347
    # (training data 0.08); log-likelihood median -1.64 (N(0, I): about -2.88; the mixture's own -1.5),
    # mean -2.11 (N(0, I): -2.90; a few held-out tail points far below)
    assert distances[0] < 0.5 * distances[2] and distances[1] < 0.5 * distances[2]
    assert np.median(log_likelihood) > np.median(gaussian) + 0.8
    assert log_likelihood.mean() > gaussian.mean() + 0.1


def test_readme_example():
    printed, _ = run_readme_section("Score-based generative models through SDEs")
    numbers = [float(v) for v in printed.replace("[", " ").replace("]", " ").split()]
    assert len(numbers) == 5
    np.testing.assert_allclose(numbers[:4], 1.0, atol=0.15)     # both samplers' mean |x| at the modes
    assert -2.2 < numbers[4] < -1.0                              # median log-likelihood; N(0, I): -2.8
