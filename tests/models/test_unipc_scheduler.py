"""UniPCMultistepScheduler: whole sampling loops against diffusers' UniP / UniC formulas written
here in NumPy (bh1/bh2, orders 1-3, x_0 and noise forms, disabled corrector steps), the
convergence order with the exact denoiser of Gaussian data, and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lamina.models import UniPCMultistepScheduler as ExportedUniPC
from lamina.models.schedulers import SCHEDULERS, UniPCMultistepScheduler

T, STEPS = 100, 7
ABAR = np.cumprod(1 - np.linspace(1e-3, 0.05, T))
CONFIG = {"num_train_timesteps": T, "beta_start": 1e-3, "beta_end": 0.05}


def fake_net(x, t):
    return np.sin(1.3 * x + 0.01 * np.asarray(t)) - 0.2 * x


def reference(x, order, variant, kind, predict_x0=True, disable=(), final_sigma=0.0):
    """diffusers' UniPC loop: convert, correct the previous step (UniC), predict (UniP)."""
    timesteps = np.linspace(0, T - 1, STEPS + 1).round()[::-1][:-1].astype(int)
    sigmas = np.append(np.sqrt((1 - ABAR[timesteps]) / ABAR[timesteps]), final_sigma)
    alphas = 1 / np.sqrt(sigmas ** 2 + 1)
    sigs = sigmas * alphas
    with np.errstate(divide="ignore"):
        lams = np.log(alphas) - np.log(sigs)

    def solve(models, x_s, s, t, p, model_t=None):
        # models: newest last, models[-1 - k] made at index s - k
        h = lams[t] - lams[s]
        hh = -h if predict_x0 else h
        rks = [(lams[s - k] - lams[s]) / h for k in range(1, p)] + [1.0]
        d1s = [(models[-1 - k] - models[-1]) / rks[k - 1] for k in range(1, p)]
        b_h = hh if variant == "bh1" else math.expm1(hh)
        phi = math.expm1(hh) / hh - 1
        R, b, fact = [], [], 1
        for i in range(1, p + 1):
            R.append([r ** (i - 1) for r in rks])
            b.append(phi * fact / b_h)
            fact *= i + 1
            phi = phi / hh - 1 / fact
        R, b = np.array(R), np.array(b)
        if model_t is None:
            rho = [0.5] if p == 2 else (list(np.linalg.solve(R[:-1, :-1], b[:-1])) if p == 3 else [])
            res = sum((r * d for r, d in zip(rho, d1s)), np.zeros_like(x_s))
            b_h = b_h if p > 1 else 0.0
        else:
            rho = [0.5] if p == 1 else list(np.linalg.solve(R, b))
            res = sum((r * d for r, d in zip(rho[:-1], d1s)), np.zeros_like(x_s)) + rho[-1] * (model_t - models[-1])
        if predict_x0:
            return sigs[t] / sigs[s] * x_s - alphas[t] * math.expm1(hh) * models[-1] - alphas[t] * b_h * res
        return alphas[t] / alphas[s] * x_s - sigs[t] * math.expm1(hh) * models[-1] - sigs[t] * b_h * res

    models, last, last_order = [], None, 1
    for i, t in enumerate(timesteps):
        a2 = alphas[i] ** 2
        out = fake_net(x, t)
        if kind == "epsilon":
            x0, eps = (x - np.sqrt(1 - a2) * out) / np.sqrt(a2), out
        else:
            x0 = np.sqrt(a2) * x - np.sqrt(1 - a2) * out
            eps = np.sqrt(a2) * out + np.sqrt(1 - a2) * x
        m = x0 if predict_x0 else eps
        if i > 0 and i - 1 not in disable:
            x = solve(models, last, i - 1, i, last_order, m)
        models = (models + [m])[-order:]
        last_order = min(order, STEPS - i, len(models))
        last = x
        x = solve(models, x, i, i + 1, last_order)
    return x


@pytest.mark.parametrize("order, variant, kind, predict_x0, disable", [
    (1, "bh2", "epsilon", True, ()), (2, "bh1", "epsilon", True, ()), (2, "bh2", "v_prediction", True, (2,)),
    (3, "bh2", "epsilon", True, ()), (3, "bh1", "v_prediction", True, (0, 3)), (3, "bh2", "epsilon", False, ()),
    (2, "bh1", "epsilon", False, (1,))])
def test_unipc_loop_matches_the_reference(order, variant, kind, predict_x0, disable):
    x = np.random.default_rng(3).standard_normal((3, 4))
    final = "zero" if predict_x0 else "sigma_min"
    scheduler = UniPCMultistepScheduler(solver_order=order, solver_type=variant, prediction_type=kind,
                                        predict_x0=predict_x0, disable_corrector=list(disable),
                                        final_sigmas_type=final, **CONFIG)
    scheduler.set_timesteps(STEPS)
    ours = x
    for t in scheduler.timesteps:
        ours = scheduler.step(fake_net(ours, t), t, ours).prev_sample
    final_sigma = 0.0 if predict_x0 else math.sqrt((1 - ABAR[0]) / ABAR[0])
    expected = reference(x, order, variant, kind, predict_x0, disable, final_sigma)
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours, expected, rtol=1e-10, atol=1e-12)


MU, S = 0.5, 0.3


def ode_error(scheduler, n):
    """Largest error before the last step against the exact probability-flow solution of data
    N(MU, S^2), in which (z - MU) / sqrt(S^2 + sigma^2) is constant (z = x_t / sqrt(abar))."""
    scheduler.set_timesteps(n)
    x = np.linspace(-2.5, 2.5, 11)[:, None]
    start = scheduler.sigmas[0]
    z_start = x * np.sqrt(1 + start ** 2)
    for t in scheduler.timesteps[:-1]:
        sigma = scheduler.sigmas[scheduler.step_index or 0]
        abar = 1 / (1 + sigma ** 2)
        eps = np.sqrt(1 - abar) * (x - np.sqrt(abar) * MU) / (abar * S ** 2 + 1 - abar)
        x = scheduler.step(eps, t, x).prev_sample
    end = scheduler.sigmas[scheduler.step_index]
    exact = MU + np.sqrt(S ** 2 + end ** 2) / np.sqrt(S ** 2 + start ** 2) * (z_start - MU)
    return np.abs(x * np.sqrt(1 + end ** 2) - exact).max()


NO_CORRECTOR = list(range(80))


@pytest.mark.parametrize("options, expected_ratio, steps", [
    ({"solver_order": 1}, 4, (20, 40, 80)), ({"solver_order": 1, "disable_corrector": NO_CORRECTOR}, 2, (20, 40, 80)),
    ({"solver_order": 2, "disable_corrector": NO_CORRECTOR}, 4, (20, 40, 80)), ({"solver_order": 2}, 8, (20, 40, 80)),
    ({"solver_order": 2, "solver_type": "bh1"}, 8, (40, 80, 160)), ({"solver_order": 3}, 16, (40, 80, 160))])
def test_unipc_converges_with_its_order(options, expected_ratio, steps):
    """The corrector raises the predictor's order by one."""
    errors = [ode_error(UniPCMultistepScheduler(use_karras_sigmas=True, **options), n) for n in steps]
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    assert all(0.75 * expected_ratio < r < 1.4 * expected_ratio for r in ratios), (errors, ratios)


def test_unipc_registration_and_errors():
    assert SCHEDULERS["UniPCMultistepScheduler"] is UniPCMultistepScheduler is ExportedUniPC
    with pytest.raises(ValueError, match="UniPCMultistepScheduler: solver_order must be 1, 2 or 3, got 4"):
        UniPCMultistepScheduler(solver_order=4)
    with pytest.raises(ValueError, match=r"solver_type must be one of \('bh1', 'bh2'\), got 'midpoint'"):
        UniPCMultistepScheduler(solver_type="midpoint")
    with pytest.raises(ValueError, match="predict_x0=False cannot step to sigma = 0"):
        UniPCMultistepScheduler(predict_x0=False)
    with pytest.raises(ValueError, match="final_sigmas_type must be one of"):
        UniPCMultistepScheduler(final_sigmas_type="one")
    scheduler = UniPCMultistepScheduler()
    with pytest.raises(RuntimeError, match="UniPCMultistepScheduler.step: call set_timesteps"):
        scheduler.step(np.zeros((1, 2)), 999, np.zeros((1, 2)))
