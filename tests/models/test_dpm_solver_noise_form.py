"""DPMSolverMultistepScheduler with algorithm_type='dpmsolver' (the noise-prediction form):
whole loops against diffusers' formulas written here in NumPy, convergence orders with the
exact denoiser of Gaussian data, and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lamina.models.schedulers import DPMSolverMultistepScheduler

T, STEPS = 100, 7
ABAR = np.cumprod(1 - np.linspace(1e-3, 0.05, T))
CONFIG = {"num_train_timesteps": T, "beta_start": 1e-3, "beta_end": 0.05, "algorithm_type": "dpmsolver",
          "final_sigmas_type": "sigma_min"}


def fake_net(x, t):
    return np.sin(1.3 * x + 0.01 * np.asarray(t)) - 0.2 * x


def reference(x, order, solver_type, kind, lower_order_final):
    timesteps = np.linspace(0, T - 1, STEPS + 1).round()[::-1][:-1].astype(int)
    sigmas = np.append(np.sqrt((1 - ABAR[timesteps]) / ABAR[timesteps]), math.sqrt((1 - ABAR[0]) / ABAR[0]))
    alpha = 1 / np.sqrt(sigmas ** 2 + 1)
    sig = sigmas * alpha
    lam = np.log(alpha) - np.log(sig)
    eps_history = []
    for i, t in enumerate(timesteps):
        out = fake_net(x, t)
        eps = out if kind == "epsilon" else alpha[i] * out + sig[i] * x
        eps_history.append(eps)
        use = min(order, i + 1)
        if lower_order_final and i == STEPS - 1:
            use = 1
        if lower_order_final and i == STEPS - 2:
            use = min(use, 2)
        h = lam[i + 1] - lam[i]
        e = np.expm1(h)
        new = alpha[i + 1] / alpha[i] * x - sig[i + 1] * e * eps_history[-1]
        if use >= 2:
            r0 = (lam[i] - lam[i - 1]) / h
            d1_0 = (eps_history[-1] - eps_history[-2]) / r0
        if use == 2 and solver_type == "midpoint":
            new = new - 0.5 * sig[i + 1] * e * d1_0
        elif use == 2:
            new = new - sig[i + 1] * (e / h - 1) * d1_0
        elif use == 3:
            r1 = (lam[i - 1] - lam[i - 2]) / h
            d1_1 = (eps_history[-2] - eps_history[-3]) / r1
            d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            new = new - sig[i + 1] * (e / h - 1) * d1 - sig[i + 1] * ((e - h) / h ** 2 - 0.5) * d2
        x = new
    return x


@pytest.mark.parametrize("order, solver_type, kind, lower_order_final", [
    (1, "midpoint", "epsilon", True), (2, "midpoint", "epsilon", True), (2, "heun", "v_prediction", True),
    (3, "midpoint", "epsilon", True), (3, "heun", "v_prediction", False)])
def test_noise_form_loop_matches_the_reference(order, solver_type, kind, lower_order_final):
    x = np.random.default_rng(5).standard_normal((3, 4))
    scheduler = DPMSolverMultistepScheduler(solver_order=order, solver_type=solver_type, prediction_type=kind,
                                            lower_order_final=lower_order_final, **CONFIG)
    scheduler.set_timesteps(STEPS)
    ours = x
    for t in scheduler.timesteps:
        ours = scheduler.step(fake_net(ours, t), t, ours).prev_sample
    expected = reference(x, order, solver_type, kind, lower_order_final)
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-12)


MU, S = 0.5, 0.3


def ode_error(scheduler, n):
    """Largest error before the last step against the exact probability-flow solution of data
    N(MU, S^2) ((z - MU) / sqrt(S^2 + sigma^2) is constant along it, z = x_t / sqrt(abar))."""
    scheduler.set_timesteps(n)
    x = np.linspace(-2.5, 2.5, 11)[:, None]
    z_start = x * np.sqrt(1 + scheduler.sigmas[0] ** 2)
    for t in scheduler.timesteps[:-1]:
        abar = 1 / (1 + scheduler.sigmas[scheduler.step_index or 0] ** 2)
        eps = np.sqrt(1 - abar) * (x - np.sqrt(abar) * MU) / (abar * S ** 2 + 1 - abar)
        x = scheduler.step(eps, t, x).prev_sample
    start, end = scheduler.sigmas[0], scheduler.sigmas[scheduler.step_index]
    exact = MU + np.sqrt(S ** 2 + end ** 2) / np.sqrt(S ** 2 + start ** 2) * (z_start - MU)
    return np.abs(x * np.sqrt(1 + end ** 2) - exact).max()


@pytest.mark.parametrize("options, expected_ratio", [
    ({"solver_order": 1}, 2), ({"solver_order": 2}, 4), ({"solver_order": 2, "solver_type": "heun"}, 4)])
def test_noise_form_converges_with_its_order(options, expected_ratio):
    errors = [ode_error(DPMSolverMultistepScheduler(use_karras_sigmas=True, **CONFIG, **options), n)
              for n in (20, 40, 80)]
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    assert all(0.8 * expected_ratio < r < 1.35 * expected_ratio for r in ratios), (errors, ratios)


def test_noise_form_errors():
    with pytest.raises(ValueError, match="algorithm_type='dpmsolver' cannot step to sigma = 0"):
        DPMSolverMultistepScheduler(algorithm_type="dpmsolver")
    with pytest.raises(ValueError, match=r"algorithm_type must be one of \('dpmsolver\+\+', 'dpmsolver'\), got "
                                         r"'sde-dpmsolver\+\+'"):
        DPMSolverMultistepScheduler(algorithm_type="sde-dpmsolver++")
