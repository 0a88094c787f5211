"""DPMSolverSinglestepScheduler: diffusers' order lists, whole loops against its single-step
formulas written here in NumPy (both algorithm types, both solver types, orders 1-3),
convergence orders with the exact denoiser of Gaussian data, and errors."""

from __future__ import annotations

import math

import numpy as np
import pytest

from lamina.models import DPMSolverSinglestepScheduler as Exported
from lamina.models.schedulers import SCHEDULERS, DPMSolverSinglestepScheduler, singlestep_orders

T, STEPS = 100, 8
ABAR = np.cumprod(1 - np.linspace(1e-3, 0.05, T))
CONFIG = {"num_train_timesteps": T, "beta_start": 1e-3, "beta_end": 0.05}


@pytest.mark.parametrize("n, p, lower, zero, expected", [
    (6, 3, True, True, [1, 2, 3, 1, 2, 1]), (7, 3, True, True, [1, 2, 3, 1, 2, 3, 1]),
    (8, 3, True, True, [1, 2, 3, 1, 2, 3, 1, 2][:-1] + [1]), (8, 3, True, False, [1, 2, 3, 1, 2, 3, 1, 2]),
    (6, 3, False, False, [1, 2, 3, 1, 2, 3]), (6, 2, True, False, [1, 2, 1, 2, 1, 1]),
    (5, 2, True, False, [1, 2, 1, 2, 1]), (4, 2, False, False, [1, 2, 1, 2]), (3, 1, True, True, [1, 1, 1])])
def test_order_list(n, p, lower, zero, expected):
    assert singlestep_orders(n, p, lower, zero) == expected


def fake_net(x, t):
    return np.sin(1.3 * x + 0.01 * np.asarray(t)) - 0.2 * x


def reference(x, order, algorithm, solver_type, kind):
    """Each block of k steps restarts from its first sample; its last step is the k-th order
    single-step update from that sample."""
    final = 0.0 if algorithm == "dpmsolver++" else math.sqrt((1 - ABAR[0]) / ABAR[0])
    timesteps = np.linspace(0, T - 1, STEPS + 1).round()[::-1][:-1].astype(int)
    sigmas = np.append(np.sqrt((1 - ABAR[timesteps]) / ABAR[timesteps]), final)
    al = 1 / np.sqrt(sigmas ** 2 + 1)
    sg = sigmas * al
    with np.errstate(divide="ignore"):
        lam = np.log(al) - np.log(sg)
    orders = singlestep_orders(STEPS, order, True, algorithm == "dpmsolver++")
    ms = []
    start = x
    for i, t in enumerate(timesteps):
        out = fake_net(x, t)
        if kind == "epsilon":
            x0, eps = (x - sg[i] * out) / al[i], out
        else:
            x0, eps = al[i] * x - sg[i] * out, al[i] * out + sg[i] * x
        ms.append(x0 if algorithm == "dpmsolver++" else eps)
        k = orders[i]
        if k == 1:
            start = x
        b = i + 1 - k
        h = lam[i + 1] - lam[b]
        with np.errstate(invalid="ignore", divide="ignore"):
            if algorithm == "dpmsolver++":
                e = math.expm1(-h) if np.isfinite(h) else -1.0
                base = sg[i + 1] / sg[b] * start - al[i + 1] * e * ms[-k]
                p2 = e / h + 1
                p3 = (e + h) / h ** 2 - 0.5
                c = al[i + 1]
            else:
                e = math.expm1(h)
                base = al[i + 1] / al[b] * start - sg[i + 1] * e * ms[-k]
                p2 = e / h - 1
                p3 = -((e - h) / h ** 2 - 0.5)
                c = -sg[i + 1]
        if k == 1:
            x = base
        elif k == 2:
            r0 = (lam[i] - lam[b]) / h
            d1 = (ms[-1] - ms[-2]) / r0
            if solver_type == "midpoint":
                x = base - 0.5 * (al[i + 1] * e if algorithm == "dpmsolver++" else sg[i + 1] * e) * d1
            else:
                x = base + c * p2 * d1
        else:
            r0, r1 = (lam[i] - lam[b]) / h, (lam[i - 1] - lam[b]) / h
            d10, d11 = (ms[-2] - ms[-3]) / r1, (ms[-1] - ms[-3]) / r0
            if solver_type == "midpoint":
                x = base + c * p2 * d11
            else:
                d1 = (r0 * d10 - r1 * d11) / (r0 - r1)
                d2 = 2 * (d11 - d10) / (r0 - r1)
                x = base + c * p2 * d1 - c * p3 * d2
    return x


@pytest.mark.parametrize("order, algorithm, solver_type, kind", [
    (1, "dpmsolver++", "midpoint", "epsilon"), (2, "dpmsolver++", "midpoint", "epsilon"),
    (2, "dpmsolver++", "heun", "v_prediction"), (3, "dpmsolver++", "midpoint", "epsilon"),
    (3, "dpmsolver++", "heun", "v_prediction"), (2, "dpmsolver", "midpoint", "epsilon"),
    (3, "dpmsolver", "heun", "epsilon"), (3, "dpmsolver", "midpoint", "v_prediction")])
def test_singlestep_loop_matches_the_reference(order, algorithm, solver_type, kind):
    x = np.random.default_rng(11).standard_normal((3, 4))
    final = "zero" if algorithm == "dpmsolver++" else "sigma_min"
    scheduler = DPMSolverSinglestepScheduler(solver_order=order, algorithm_type=algorithm, solver_type=solver_type,
                                             prediction_type=kind, final_sigmas_type=final, **CONFIG)
    scheduler.set_timesteps(STEPS)
    ours = x
    for t in scheduler.timesteps:
        ours = scheduler.step(fake_net(ours, t), t, ours).prev_sample
    assert np.all(np.isfinite(ours))
    np.testing.assert_allclose(ours, reference(x, order, algorithm, solver_type, kind), rtol=1e-10, atol=1e-12)


MU, S = 0.5, 0.3


def block_end_error(scheduler, n, p):
    """The largest error at the end of the last full block before the final step, against the
    exact probability-flow solution of data N(MU, S^2) ((z - MU) / sqrt(S^2 + sigma^2) is
    constant along it, z = x_t / sqrt(abar))."""
    scheduler.set_timesteps(n)
    x = np.linspace(-2.5, 2.5, 11)[:, None]
    z_start = x * np.sqrt(1 + scheduler.sigmas[0] ** 2)
    for t in scheduler.timesteps[:n - p]:
        abar = 1 / (1 + scheduler.sigmas[scheduler.step_index or 0] ** 2)
        eps = np.sqrt(1 - abar) * (x - np.sqrt(abar) * MU) / (abar * S ** 2 + 1 - abar)
        x = scheduler.step(eps, t, x).prev_sample
    start, end = scheduler.sigmas[0], scheduler.sigmas[scheduler.step_index]
    exact = MU + np.sqrt(S ** 2 + end ** 2) / np.sqrt(S ** 2 + start ** 2) * (z_start - MU)
    return np.abs(x * np.sqrt(1 + end ** 2) - exact).max()


@pytest.mark.parametrize("options, expected_ratio, steps", [
    ({"solver_order": 1}, 2, (20, 40, 80)), ({"solver_order": 2}, 4, (20, 40, 80)),
    ({"solver_order": 2, "solver_type": "heun"}, 4, (20, 40, 80)),
    ({"solver_order": 3, "solver_type": "heun"}, 8, (30, 60, 120))])
def test_singlestep_converges_with_its_order(options, expected_ratio, steps):
    p = options["solver_order"]
    errors = [block_end_error(DPMSolverSinglestepScheduler(use_karras_sigmas=True, **options), n, p)
              for n in steps]
    ratios = [a / b for a, b in zip(errors, errors[1:])]
    assert all(0.75 * expected_ratio < r < 1.4 * expected_ratio for r in ratios), (errors, ratios)


def test_singlestep_registration_and_errors():
    assert SCHEDULERS["DPMSolverSinglestepScheduler"] is DPMSolverSinglestepScheduler is Exported
    with pytest.raises(ValueError, match="DPMSolverSinglestepScheduler: solver_order must be 1, 2 or 3, got 0"):
        DPMSolverSinglestepScheduler(solver_order=0)
    with pytest.raises(ValueError, match=r"solver_type must be one of \('midpoint', 'heun'\), got 'bh2'"):
        DPMSolverSinglestepScheduler(solver_type="bh2")
    with pytest.raises(ValueError, match="algorithm_type='dpmsolver' cannot step to sigma = 0"):
        DPMSolverSinglestepScheduler(algorithm_type="dpmsolver")
    with pytest.raises(RuntimeError, match="DPMSolverSinglestepScheduler.step: call set_timesteps"):
        DPMSolverSinglestepScheduler().step(np.zeros((1, 2)), 999, np.zeros((1, 2)))
