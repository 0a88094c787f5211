"""The diffusers-style schedulers: timesteps and sigmas of each spacing (hand-computed small
cases), add_noise against q(x_t | x_0), every step against the diffusers formulas written
here in NumPy, convergence orders with the exact denoiser of Gaussian data, the ancestral
samplers' moments, sampling a trained DiffusionModel with them, and errors."""

from __future__ import annotations

import math
import time

import numpy as np
import pytest
from scipy import integrate

import lamina
from lamina.models import DenoisingMLP, DiffusionModel, NoiseSchedule
from lamina.models.schedulers import (
    SCHEDULERS,
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerAncestralDiscreteScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    LMSDiscreteScheduler,
    PNDMScheduler,
    karras_sigmas,
    make_betas,
)
from lamina.optim import Adam

# -- betas, timesteps, sigmas ------------------------------------------------------------------


def test_betas_of_each_schedule():
    np.testing.assert_allclose(make_betas("linear", 5, 0.1, 0.5), [0.1, 0.2, 0.3, 0.4, 0.5])
    root = np.linspace(0.1 ** 0.5, 0.5 ** 0.5, 5)
    np.testing.assert_allclose(make_betas("scaled_linear", 5, 0.1, 0.5), root ** 2)
    f = [math.cos((u / 4 + 0.008) / 1.008 * math.pi / 2) ** 2 for u in range(5)]
    expected = [min(1 - f[i + 1] / f[i], 0.999) for i in range(4)]
    np.testing.assert_allclose(make_betas("squaredcos_cap_v2", 4, 0, 0), expected, rtol=1e-12)
    # the cosine betas of lamina's own schedule are the same
    np.testing.assert_allclose(make_betas("squaredcos_cap_v2", 50, 0, 0), NoiseSchedule.cosine(50).betas, rtol=1e-12)


@pytest.mark.parametrize("cls, spacing, offset, expected", [
    (DDIMScheduler, "linspace", 0, [9, 4, 0]),           # round(linspace(0, 9, 3)), 4.5 rounds to even
    (DDIMScheduler, "leading", 1, [7, 4, 1]),            # k (10 // 3) + 1
    (DDIMScheduler, "trailing", 0, [9, 6, 2]),           # round(10, 6.67, 3.33) - 1
    (DDPMScheduler, "leading", 0, [6, 3, 0]),
    (PNDMScheduler, "leading", 0, [6, 3, 3, 0]),         # the second-to-last repeated
    (DPMSolverMultistepScheduler, "linspace", 0, [9, 6, 3]),   # linspace(0, 9, 4) without the 0
    (DPMSolverMultistepScheduler, "leading", 1, [7, 5, 3]),    # k (10 // 4) + 1
    (DPMSolverMultistepScheduler, "trailing", 0, [9, 6, 2]),
])
def test_discrete_timesteps(cls, spacing, offset, expected):
    scheduler = cls(num_train_timesteps=10, timestep_spacing=spacing, steps_offset=offset)
    scheduler.set_timesteps(3)
    np.testing.assert_array_equal(scheduler.timesteps, expected)
    assert scheduler.timesteps.dtype == np.int64


@pytest.mark.parametrize("spacing, n, expected", [
    ("linspace", 4, [9.0, 6.0, 3.0, 0.0]),
    ("linspace", 3, [9.0, 4.5, 0.0]),                    # not rounded: sigmas are interpolated
    ("leading", 4, [6.0, 4.0, 2.0, 0.0]),
    ("trailing", 4, [9.0, 7.0, 4.0, 1.0]),               # round(10, 7.5, 5, 2.5) - 1
])
def test_sigma_timesteps_and_sigmas(spacing, n, expected):
    scheduler = EulerDiscreteScheduler(num_train_timesteps=10, beta_start=0.01, beta_end=0.2,
                                       timestep_spacing=spacing)
    scheduler.set_timesteps(n)
    np.testing.assert_array_equal(scheduler.timesteps, expected)
    abar = np.cumprod(1 - np.linspace(0.01, 0.2, 10))
    train = np.sqrt((1 - abar) / abar)
    fractional = [train[int(t)] if t == int(t) else (train[int(t)] + train[int(t) + 1]) / 2 for t in expected]
    np.testing.assert_allclose(scheduler.sigmas, [*fractional, 0.0], rtol=1e-12)
    top = scheduler.sigmas[0]
    expected_init = top if spacing != "leading" else math.sqrt(top ** 2 + 1)
    assert scheduler.init_noise_sigma == pytest.approx(expected_init)


def test_karras_sigmas():
    np.testing.assert_allclose(karras_sigmas(3, 1.0, 16.0, rho=2), [16.0, 6.25, 1.0])
    sigmas = karras_sigmas(18, 0.002, 80.0)
    ramp = np.arange(18) / 17
    np.testing.assert_allclose(sigmas, (80 ** (1 / 7) + ramp * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7)
    scheduler = EulerDiscreteScheduler(use_karras_sigmas=True)
    scheduler.set_timesteps(10)
    train = scheduler.train_sigmas
    np.testing.assert_allclose(scheduler.sigmas[:-1], karras_sigmas(10, train[0], train[-1]), rtol=1e-12)
    # each timestep is where log sigma, interpolated linearly in t, reaches the Karras sigma
    t = scheduler.timesteps
    low = np.floor(t).astype(int)
    w = t - low
    high = np.minimum(low + 1, 999)
    logs = (1 - w) * np.log(train[low]) + w * np.log(train[high])
    np.testing.assert_allclose(logs, np.log(scheduler.sigmas[:-1]), rtol=1e-10, atol=1e-12)


def test_add_noise_is_a_draw_of_q():
    rng = np.random.default_rng(0)
    x0, eps = rng.standard_normal((4, 3, 2)), rng.standard_normal((4, 3, 2))
    t = np.array([0, 10, 500, 999])
    schedule = NoiseSchedule.linear(1000)
    expected = schedule.q_sample(lamina.tensor(x0, dtype=np.float64), t, lamina.tensor(eps, dtype=np.float64)).numpy()
    for cls in SCHEDULERS.values():
        np.testing.assert_allclose(cls().add_noise(x0, eps, t), expected, rtol=1e-12)
    scaled = DDPMScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012)
    abar = np.cumprod(1 - np.linspace(0.00085 ** 0.5, 0.012 ** 0.5, 1000) ** 2)[t].reshape(-1, 1, 1)
    np.testing.assert_allclose(scaled.add_noise(x0, eps, t), np.sqrt(abar) * x0 + np.sqrt(1 - abar) * eps)


# -- each step against the formulas -----------------------------------------------------------
T, STEPS = 100, 6
ABAR = np.cumprod(1 - np.linspace(1e-3, 0.05, T))
TRAIN_SIGMAS = np.sqrt((1 - ABAR) / ABAR)
CONFIG = {"num_train_timesteps": T, "beta_start": 1e-3, "beta_end": 0.05}


def fake_net(x, t):
    """A smooth stand-in for a denoiser's output."""
    return np.sin(1.3 * x + 0.01 * np.asarray(t)) - 0.2 * x


def run(scheduler, x, n=STEPS, noises=None, **step_options):
    scheduler.set_timesteps(n)
    x = x * scheduler.init_noise_sigma
    for k, t in enumerate(scheduler.timesteps):
        extra = {} if noises is None else {"noise": noises[k]}
        x = scheduler.step(fake_net(scheduler.scale_model_input(x, t), t), t, x, **extra, **step_options).prev_sample
    return x


def start_and_noises(shape=(3, 4)):
    rng = np.random.default_rng(7)
    return rng.standard_normal(shape), [rng.standard_normal(shape) for _ in range(2 * STEPS)]


def x0_eps(out, x, abar, kind):
    a, b = np.sqrt(abar), np.sqrt(1 - abar)
    if kind == "epsilon":
        return (x - b * out) / a, out
    if kind == "sample":
        return out, (x - a * out) / b
    return a * x - b * out, a * out + b * x


@pytest.mark.parametrize("kind", ["epsilon", "v_prediction", "sample"])
def test_ddpm_step(kind):
    x, noises = start_and_noises()
    ours = run(DDPMScheduler(prediction_type=kind, clip_sample=False, **CONFIG), x, noises=noises)
    steps = [80, 64, 48, 32, 16, 0]                        # leading: k (100 // 6)
    for k, t in enumerate(steps):
        a, a_prev = ABAR[t], ABAR[steps[k + 1]] if k + 1 < len(steps) else 1.0
        beta = 1 - a / a_prev
        x0 = x0_eps(fake_net(x, t), x, a, kind)[0]
        mean = np.sqrt(a_prev) * beta / (1 - a) * x0 + np.sqrt(1 - beta) * (1 - a_prev) / (1 - a) * x
        x = mean + (np.sqrt((1 - a_prev) / (1 - a) * beta) * noises[k] if t > 0 else 0)
    np.testing.assert_allclose(ours, x, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("eta, kind", [(0.0, "epsilon"), (0.6, "v_prediction"), (1.0, "sample")])
def test_ddim_step(eta, kind):
    x, noises = start_and_noises()
    ours = run(DDIMScheduler(prediction_type=kind, clip_sample=False, **CONFIG), x, noises=noises, eta=eta)
    for k, t in enumerate([80, 64, 48, 32, 16, 0]):
        a, a_prev = ABAR[t], ABAR[t - 16] if t >= 16 else 1.0
        x0, eps = x0_eps(fake_net(x, t), x, a, kind)
        std = eta * np.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
        x = np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev - std ** 2) * eps + std * noises[k]
    np.testing.assert_allclose(ours, x, rtol=1e-10, atol=1e-12)


def test_clip_sample_and_thresholding():
    x = np.random.default_rng(1).standard_normal((2, 5)) * 3
    out = np.zeros_like(x)
    for scheduler, bound in ((DDIMScheduler(clip_sample=True, clip_sample_range=0.5, **CONFIG), 0.5),
                             (DDIMScheduler(clip_sample=False, thresholding=True, sample_max_value=2.0, **CONFIG),
                              None)):
        scheduler.set_timesteps(4)
        x0 = scheduler.step(out, scheduler.timesteps[0], x).pred_original_sample
        raw = x / np.sqrt(ABAR[scheduler.timesteps[0]])
        if bound is not None:
            np.testing.assert_allclose(x0, np.clip(raw, -bound, bound))
        else:
            s = np.clip(np.quantile(np.abs(raw), 0.995, axis=1, keepdims=True), 1, 2.0)
            np.testing.assert_allclose(x0, np.clip(raw, -s, s) / s)


def reference_denoised(out, z, sigma, kind):
    if kind == "epsilon":
        return z - sigma * out
    if kind == "v_prediction":
        return out * (-sigma / np.sqrt(sigma ** 2 + 1)) + z / (sigma ** 2 + 1)
    return out


def karras_or_linspace(karras):
    timesteps = np.linspace(0, T - 1, STEPS)[::-1]
    sigmas = np.interp(timesteps, np.arange(T), TRAIN_SIGMAS)
    if karras:
        sigmas = karras_sigmas(STEPS, sigmas[-1], sigmas[0])
        timesteps = np.interp(np.log(sigmas), np.log(TRAIN_SIGMAS), np.arange(T))
    return timesteps, np.append(sigmas, 0.0)


@pytest.mark.parametrize("kind, karras", [("epsilon", False), ("v_prediction", True), ("sample", False)])
def test_euler_step(kind, karras):
    x, _ = start_and_noises()
    ours = run(EulerDiscreteScheduler(prediction_type=kind, use_karras_sigmas=karras, **CONFIG), x)
    timesteps, sigmas = karras_or_linspace(karras)
    z = x * sigmas[0]
    for i, t in enumerate(timesteps):
        x0 = reference_denoised(fake_net(z / np.sqrt(sigmas[i] ** 2 + 1), t), z, sigmas[i], kind)
        z = z + (z - x0) / sigmas[i] * (sigmas[i + 1] - sigmas[i])
    np.testing.assert_allclose(ours, z, rtol=1e-10, atol=1e-12)


def test_euler_churn_step():
    x, noises = start_and_noises()
    ours = run(EulerDiscreteScheduler(**CONFIG), x, noises=noises, s_churn=1.0, s_tmin=1.0, s_tmax=50.0)
    _, sigmas = karras_or_linspace(False)
    z = x * sigmas[0]
    timesteps = np.linspace(0, T - 1, STEPS)[::-1]
    for i, t in enumerate(timesteps):
        gamma = min(1.0 / STEPS, 2 ** 0.5 - 1) if 1.0 <= sigmas[i] <= 50.0 else 0.0
        hat = sigmas[i] * (1 + gamma)
        out = fake_net(z / np.sqrt(sigmas[i] ** 2 + 1), t)      # the net sees the sample before the churn
        if gamma > 0:
            z = z + noises[i] * np.sqrt(hat ** 2 - sigmas[i] ** 2)
        x0 = z - hat * out
        z = z + (z - x0) / hat * (sigmas[i + 1] - hat)
    np.testing.assert_allclose(ours, z, rtol=1e-10, atol=1e-12)


def test_euler_ancestral_step():
    x, noises = start_and_noises()
    ours = run(EulerAncestralDiscreteScheduler(**CONFIG), x, noises=noises)
    timesteps, sigmas = karras_or_linspace(False)
    z = x * sigmas[0]
    for i, t in enumerate(timesteps):
        s, s_next = sigmas[i], sigmas[i + 1]
        x0 = z - s * fake_net(z / np.sqrt(s ** 2 + 1), t)
        up = np.sqrt(s_next ** 2 * (s ** 2 - s_next ** 2) / s ** 2)
        down = np.sqrt(s_next ** 2 - up ** 2)
        z = z + (z - x0) / s * (down - s) + up * noises[i]
    np.testing.assert_allclose(ours, z, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("karras", [False, True])
def test_heun_step(karras):
    x, _ = start_and_noises()
    scheduler = HeunDiscreteScheduler(use_karras_sigmas=karras, **CONFIG)
    ours = run(scheduler, x)
    assert len(scheduler.timesteps) == 2 * STEPS - 1
    timesteps, sigmas = karras_or_linspace(karras)
    z = x * sigmas[0]

    def slope(z, i):
        sigma = sigmas[i]
        return fake_net(z / np.sqrt(sigma ** 2 + 1), timesteps[i]) if sigma > 0 else 0.0

    for i in range(STEPS):
        d = slope(z, i)                                    # (z - x0) / sigma = eps
        trial = z + d * (sigmas[i + 1] - sigmas[i])
        z = trial if sigmas[i + 1] == 0 else z + (d + slope(trial, i + 1)) / 2 * (sigmas[i + 1] - sigmas[i])
    np.testing.assert_allclose(ours, z, rtol=1e-10, atol=1e-12)


def test_lms_step():
    x, _ = start_and_noises()
    ours = run(LMSDiscreteScheduler(**CONFIG), x, order=3)
    timesteps, sigmas = karras_or_linspace(False)
    z, slopes = x * sigmas[0], []
    for i, t in enumerate(timesteps):
        slopes.append(fake_net(z / np.sqrt(sigmas[i] ** 2 + 1), t))
        order = min(i + 1, 3)

        def basis(tau, j, i=i, order=order):
            return np.prod([(tau - sigmas[i - k]) / (sigmas[i - j] - sigmas[i - k]) for k in range(order) if k != j])

        coefficients = [integrate.quad(basis, sigmas[i], sigmas[i + 1], args=(j,), epsrel=1e-12)[0]
                        for j in range(order)]
        z = z + sum(c * slopes[-1 - j] for j, c in enumerate(coefficients))
    np.testing.assert_allclose(ours, z, rtol=1e-8, atol=1e-10)


def test_pndm_step():
    x, _ = start_and_noises()
    ours = run(PNDMScheduler(**CONFIG), x)
    grid = [80, 64, 48, 32, 16, 0]

    def transfer(x, t, t_prev, eps):
        a, a_prev = ABAR[t], ABAR[t_prev] if t_prev >= 0 else ABAR[0]
        return np.sqrt(a_prev) * (x - np.sqrt(1 - a) * eps) / np.sqrt(a) + np.sqrt(1 - a_prev) * eps

    e0 = fake_net(x, 80)
    trial = transfer(x, 80, 64, e0)
    e1 = fake_net(trial, 64)
    x = transfer(x, 80, 64, (e0 + e1) / 2)                # the first step: the mean of the two outputs
    history = [e0]                                         # e1 is not kept
    weights = {2: ([3, -1], 2), 3: ([23, -16, 5], 12), 4: ([55, -59, 37, -9], 24)}
    for t in grid[1:]:
        history = [*history, fake_net(x, t)][-4:]
        coefficients, scale = weights[len(history)]
        eps = sum(c * e for c, e in zip(coefficients, reversed(history))) / scale
        x = transfer(x, t, t - 16, eps)
    np.testing.assert_allclose(ours, x, rtol=1e-10, atol=1e-12)


def _dpm_reference(x, order, solver_type, kind="epsilon", lower_order_final=True):
    timesteps = np.linspace(0, T - 1, STEPS + 1).round()[::-1][:-1].astype(int)
    sigmas = np.append(TRAIN_SIGMAS[timesteps], 0.0)
    alpha = 1 / np.sqrt(sigmas ** 2 + 1)
    sig = sigmas * alpha
    with np.errstate(divide="ignore"):
        lam = np.log(alpha) - np.log(sig)
    outputs = []
    for i, t in enumerate(timesteps):
        outputs.append(x0_eps(fake_net(x, t), x, alpha[i] ** 2, kind)[0])
        h = lam[i + 1] - lam[i]
        use = min(order, i + 1)
        if i == STEPS - 1 or (lower_order_final and i == STEPS - 2 and order == 3):
            use = 1 if i == STEPS - 1 else min(use, 2)
        base = sig[i + 1] / sig[i] * x - alpha[i + 1] * np.expm1(-h) * outputs[-1] if i < STEPS - 1 else outputs[-1]
        if use == 1:
            x = base
            continue
        r0 = (lam[i] - lam[i - 1]) / h
        d1_0 = (outputs[-1] - outputs[-2]) / r0
        if use == 2 and solver_type == "midpoint":       # DPM-Solver++(2M), the paper's form
            x = sig[i + 1] / sig[i] * x - alpha[i + 1] * np.expm1(-h) * (
                (1 + 1 / (2 * r0)) * outputs[-1] - 1 / (2 * r0) * outputs[-2])
        elif use == 2:
            x = base + alpha[i + 1] * (np.expm1(-h) / h + 1) * d1_0
        else:
            r1 = (lam[i - 1] - lam[i - 2]) / h
            d1_1 = (outputs[-2] - outputs[-3]) / r1
            d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
            d2 = (d1_0 - d1_1) / (r0 + r1)
            x = base + alpha[i + 1] * (np.expm1(-h) / h + 1) * d1 - alpha[i + 1] * (
                (np.expm1(-h) + h) / h ** 2 - 0.5) * d2
    return x


@pytest.mark.parametrize("order, solver_type, kind", [(1, "midpoint", "epsilon"), (2, "midpoint", "epsilon"),
                                                      (2, "heun", "v_prediction"), (3, "midpoint", "sample")])
def test_dpm_solver_step(order, solver_type, kind):
    x, _ = start_and_noises()
    scheduler = DPMSolverMultistepScheduler(solver_order=order, solver_type=solver_type, prediction_type=kind,
                                            **CONFIG)
    np.testing.assert_allclose(run(scheduler, x), _dpm_reference(x, order, solver_type, kind),
                               rtol=1e-10, atol=1e-12)


# -- convergence with the exact denoiser of Gaussian data -----------------------------------------
MU, S = 0.5, 0.3


def oracle_eps(scheduler, x_t, t):
    """E[eps | x_t] for data N(MU, S^2) at the scheduler's noise level."""
    if hasattr(scheduler, "sigmas"):
        sigma = scheduler.sigmas[scheduler.step_index or 0]
    else:
        sigma = scheduler.train_sigmas[int(t)]
    abar = 1 / (1 + sigma ** 2)
    return np.sqrt(1 - abar) * (x_t - np.sqrt(abar) * MU) / (abar * S ** 2 + 1 - abar)


def ode_error(scheduler, n):
    """The largest error, before the last step (to sigma = 0, where the ODE is singular), of
    the deterministic sampler against the exact probability-flow ODE solution, in which
    (z - MU) / sqrt(S^2 + sigma^2) stays constant (z = x_t / sqrt(abar))."""
    scheduler.set_timesteps(n)
    x = np.linspace(-2.5, 2.5, 11)[:, None] * scheduler.init_noise_sigma
    in_z = isinstance(scheduler, (EulerDiscreteScheduler, HeunDiscreteScheduler, LMSDiscreteScheduler))

    def noise_level():
        if hasattr(scheduler, "sigmas"):
            return scheduler.sigmas[scheduler.step_index or 0]
        return scheduler.train_sigmas[int(scheduler.timesteps[scheduler.step_index or 0])]

    sigma_start = noise_level()
    z_start = x if in_z else x * np.sqrt(1 + sigma_start ** 2)
    for t in scheduler.timesteps[:-1]:
        x = scheduler.step(oracle_eps(scheduler, scheduler.scale_model_input(x, t), t), t, x).prev_sample
    sigma_end = noise_level()
    z_end = x if in_z else x * np.sqrt(1 + sigma_end ** 2)
    exact = MU + np.sqrt(S ** 2 + sigma_end ** 2) / np.sqrt(S ** 2 + sigma_start ** 2) * (z_start - MU)
    return np.abs(z_end - exact).max()


@pytest.mark.parametrize("make, expected_ratio, steps", [
    (lambda: DDIMScheduler(clip_sample=False), 2, (10, 20, 40)),
    (lambda: EulerDiscreteScheduler(use_karras_sigmas=True), 2, (10, 20, 40)),
    (lambda: DPMSolverMultistepScheduler(solver_order=1, use_karras_sigmas=True), 2, (10, 20, 40)),
    (lambda: HeunDiscreteScheduler(), 4, (10, 20, 40)),
    (lambda: HeunDiscreteScheduler(use_karras_sigmas=True), 4, (10, 20, 40)),
    (lambda: DPMSolverMultistepScheduler(use_karras_sigmas=True), 4, (20, 40, 80)),
    (lambda: DPMSolverMultistepScheduler(solver_type="heun", use_karras_sigmas=True), 4, (20, 40, 80)),
])
def test_deterministic_samplers_converge_with_their_order(make, expected_ratio, steps):
    errors = [ode_error(make(), n) for n in steps]
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    assert all(0.8 * expected_ratio < r < 1.35 * expected_ratio for r in ratios), (errors, ratios)
    assert errors[-1] < 0.1


@pytest.mark.parametrize("make", [lambda: LMSDiscreteScheduler(use_karras_sigmas=True), lambda: PNDMScheduler(),
                                  lambda: DPMSolverMultistepScheduler(solver_order=3, use_karras_sigmas=True)])
def test_higher_order_samplers_converge_faster(make):
    errors = [ode_error(make(), n) for n in (10, 40)]
    assert errors[1] < errors[0] / 30 and errors[1] < 5e-3, errors


@pytest.mark.parametrize("make, options", [(lambda: DDPMScheduler(clip_sample=False), {}),
                                           (lambda: DDIMScheduler(clip_sample=False), {"eta": 1.0}),
                                           (lambda: EulerAncestralDiscreteScheduler(), {})])
def test_ancestral_samplers_give_the_data_moments(make, options):
    """With all 1000 steps (fewer lose variance: each step puts the mean of x_0 given x_t for the
    unknown x_0, about 16% of the standard deviation lost on 50 steps)."""
    scheduler = make()
    scheduler.set_timesteps(1000)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((10000, 1)) * scheduler.init_noise_sigma
    for t in scheduler.timesteps:
        out = oracle_eps(scheduler, scheduler.scale_model_input(x, t), t)
        x = scheduler.step(out, t, x, generator=rng, **options).prev_sample
    assert abs(x.mean() - MU) < 0.01 and abs(x.std() / S - 1) < 0.02, (x.mean(), x.std())


def test_repeated_first_timestep_runs_every_step():
    """Karras sigmas on the cosine betas round several timesteps to T-1; the first call of
    step still starts at index 0 and every sigma is visited."""
    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=100, beta_schedule="squaredcos_cap_v2",
                                            use_karras_sigmas=True)
    scheduler.set_timesteps(10)
    assert scheduler.timesteps[0] == scheduler.timesteps[1] == 99
    x = np.ones((2, 2))
    for t in scheduler.timesteps:
        x = scheduler.step(np.zeros_like(x), t, x).prev_sample
    assert scheduler.step_index == 10


def test_step_seeding():
    a, b = DDPMScheduler(**CONFIG), DDPMScheduler(**CONFIG)
    x = np.ones((2, 3))
    for scheduler in (a, b):
        scheduler.set_timesteps(4)
    first = a.step(x, a.timesteps[0], x, generator=5).prev_sample
    np.testing.assert_array_equal(first, b.step(x, b.timesteps[0], x, generator=5).prev_sample)


# -- a trained model ----------------------------------------------------------------------------
CENTERS = np.array([[-2.0, 0.0], [2.0, 0.0], [0.0, 2.0]])


def energy_distance(a, b):
    """The energy distance 2 E|a - b| - E|a - a'| - E|b - b'| between two samples."""
    def mean_distance(p, q):
        return np.linalg.norm(p[:, None] - q[None], axis=2).mean()

    return 2 * mean_distance(a, b) - mean_distance(a, a) - mean_distance(b, b)


def test_dpm_solver_samples_a_trained_model_in_few_steps():
    """DPM-Solver++ in 15 steps samples a 2-D model trained for 500 steps about as well as DDPM's
    ancestral sampling over all 100 steps (the energy distance to fresh data)."""
    rng = np.random.default_rng(0)
    data = (CENTERS[rng.integers(0, 3, 2000)] + 0.3 * rng.standard_normal((2000, 2))).astype(np.float32)
    model = DiffusionModel(DenoisingMLP(hidden=(48, 48), time_dim=16), schedule="linear", num_timesteps=100)
    model(data[:1], np.zeros(1, dtype=np.int64))
    optimizer = Adam(model, lr=5e-3)
    for step in range(500):
        if step == 350:
            optimizer.lr = 1e-3
        loss = model.loss(data[rng.integers(0, len(data), 128)])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    fresh = CENTERS[rng.integers(0, 3, 500)] + 0.3 * rng.standard_normal((500, 2))
    start = time.perf_counter()
    ddpm = model.sample(500)
    ddpm_time = time.perf_counter() - start
    start = time.perf_counter()
    dpm = model.sample(500, steps=15, scheduler="DPMSolverMultistepScheduler")
    dpm_time = time.perf_counter() - start
    noise = np.random.default_rng(1).standard_normal((500, 2))
    distances = {"ddpm 100": energy_distance(ddpm, fresh), "dpm++ 15": energy_distance(dpm, fresh),
                 "noise": energy_distance(noise, fresh)}
    print(f"energy distances {distances}, ddpm {ddpm_time:.2f} s, dpm++ {dpm_time:.2f} s")
    assert distances["dpm++ 15"] < max(2 * distances["ddpm 100"], 0.05) < distances["noise"] / 5, distances


def test_sample_with_every_scheduler_and_checks():
    model = DiffusionModel(DenoisingMLP(hidden=(8,)), schedule="cosine", num_timesteps=30, prediction="v",
                           sample_shape=(2,))
    for name in SCHEDULERS:
        out = model.sample(3, steps=5, scheduler=name)
        assert out.shape == (3, 2) and out.dtype == np.float32 and np.all(np.isfinite(out))
    # an instance made for the model equals the name; DDIM with eta and no noise equals method='ddim'
    scheduler = model.make_scheduler("DDIMScheduler", timestep_spacing="trailing")
    start = np.random.default_rng(0).standard_normal((3, 2))
    ours = model.sample(3, steps=5, scheduler=scheduler, start=start)
    timesteps = scheduler.timesteps
    x = start.astype(np.float32)
    for t in timesteps:
        x0, eps = model.predict_x0_eps(x, int(t), None)
        previous = int(t) - 30 // 5
        x = model.schedule.ddim_step(x0, eps, int(t), max(previous, -1)).numpy()
    np.testing.assert_allclose(ours, x, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="prediction_type='v_prediction'"):
        model.sample(2, scheduler=DDIMScheduler(num_train_timesteps=30))
    with pytest.raises(ValueError, match="training betas differ"):
        model.sample(2, scheduler=DDIMScheduler(num_train_timesteps=30, prediction_type="v_prediction"))
    with pytest.raises(ValueError, match="eta is DDIM's noise scale"):
        model.sample(2, scheduler="EulerDiscreteScheduler", eta=0.5)
    with pytest.raises(ValueError, match="name must be one of"):
        model.sample(2, scheduler="KarrasVeScheduler")


def test_errors():
    with pytest.raises(ValueError, match=r"beta_schedule must be one of \('linear', 'scaled_linear', "
                                         r"'squaredcos_cap_v2'\), got 'cosine'"):
        DDPMScheduler(beta_schedule="cosine")
    with pytest.raises(ValueError, match=r"prediction_type must be one of \('epsilon', 'v_prediction', "
                                         r"'sample'\), got 'eps'"):
        EulerDiscreteScheduler(prediction_type="eps")
    with pytest.raises(ValueError, match="timestep_spacing must be one of"):
        DDIMScheduler(timestep_spacing="uniform")
    with pytest.raises(TypeError, match=r"DDIMScheduler: unknown config \['solver_order'\]"):
        DDIMScheduler(solver_order=2)
    with pytest.raises(ValueError, match="solver_order must be 1, 2 or 3"):
        DPMSolverMultistepScheduler(solver_order=4)
    with pytest.raises(ValueError, match="trained_betas must be num_train_timesteps=10"):
        DDPMScheduler(num_train_timesteps=10, trained_betas=[0.1] * 9)
    for cls in SCHEDULERS.values():
        scheduler = cls()
        with pytest.raises(RuntimeError, match=rf"{cls.__name__}.step: call set_timesteps"):
            scheduler.step(np.zeros((1, 2)), 999, np.zeros((1, 2)))
        with pytest.raises(ValueError, match=r"num_inference_steps must be an int in \[1, 1000\]"):
            scheduler.set_timesteps(0)
    scheduler = EulerDiscreteScheduler()
    scheduler.set_timesteps(2)
    with pytest.raises(ValueError, match="timestep 5.0 is not one of"):
        scheduler.step(np.zeros((1, 2)), 5, np.zeros((1, 2)))
    for t in scheduler.timesteps:
        scheduler.step(np.zeros((1, 2)), t, np.ones((1, 2)))
    with pytest.raises(RuntimeError, match="all 2 timesteps are done"):
        scheduler.step(np.zeros((1, 2)), 0, np.ones((1, 2)))
    # from_config keeps what it knows and ignores another scheduler's settings, as diffusers
    ddim = DDIMScheduler(beta_schedule="scaled_linear", set_alpha_to_one=False)
    euler = EulerDiscreteScheduler.from_config(ddim.config, use_karras_sigmas=True)
    assert euler.config["beta_schedule"] == "scaled_linear" and euler.config["use_karras_sigmas"]
    np.testing.assert_array_equal(euler.betas, ddim.betas)
