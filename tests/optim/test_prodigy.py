"""Prodigy against its update equations (Mishchenko and Defazio 2023, as the prodigyopt package
computes them) written here in torch; its shared D estimate, state dict, checks and learning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_optimizers import TOL, _run, _to_json, initial_arrays, lamina_params, numpy_grads
from test_rprop_lion_lookahead import accuracy
from test_schedule_free import _digits_run, digits_split

from helpers import assert_close
from lamina.optim import Prodigy

DEFAULTS = {"lr": 1.0, "betas": (0.9, 0.999), "beta3": None, "d0": 1e-6, "d_coef": 1.0, "weight_decay": 0.0,
            "decouple": True, "use_bias_correction": False, "safeguard_warmup": False, "growth_rate": math.inf,
            "eps": 1e-8}


def torch_prodigy(arrays, shared: dict, groups: list[dict], steps: int, lr_at=None):
    """Prodigy's D-adapted Adam over the tiny MLP's cost. ``shared``: the estimate's
    hyperparameters; ``groups``: the parameter indices and per-group lr, weight_decay, eps,
    safeguard_warmup. ``lr_at(step)``: the base lr of a step (a schedule), else fixed.
    Returns the weights after each step and the final d."""
    w = [torch.tensor(a) for a in arrays]
    w0 = [t.clone() for t in w]
    m = [torch.zeros_like(t) for t in w]
    v = [torch.zeros_like(t) for t in w]
    s = [torch.zeros_like(t) for t in w]
    beta1, beta2 = shared["betas"]
    beta3 = shared["beta3"] if shared["beta3"] is not None else beta2**0.5
    d0 = shared["d0"]
    d, d_max, r, k = d0, d0, 0.0, 0
    trajectory = []
    for step in range(steps):
        lrs = [g["lr"] * (lr_at(step) if lr_at else 1.0) for g in groups]
        lr = max(lrs)
        grads = [torch.tensor(g) for g in numpy_grads([t.numpy() for t in w])]
        for hp in groups:
            if not shared["decouple"]:
                for j in hp["params"]:
                    grads[j] = grads[j] + hp["weight_decay"] * w[j]
        eta = d * lr
        if shared["use_bias_correction"]:
            eta *= (1 - beta2 ** (k + 1)) ** 0.5 / (1 - beta1 ** (k + 1))
        r = beta3 * r
        for hp, group_lr in zip(groups, lrs):
            if group_lr == 0:
                continue
            for j in hp["params"]:
                g = grads[j]
                r += (d / d0) * eta * float(torch.sum(g * (w0[j] - w[j])))
                m[j] = beta1 * m[j] + d * (1 - beta1) * g
                v[j] = beta2 * v[j] + d * d * (1 - beta2) * g * g
                s[j] = beta3 * s[j] + (d / d0) * (d if hp["safeguard_warmup"] else eta) * g
        denominator = sum(float(s[j].abs().sum()) for hp, gl in zip(groups, lrs) if gl for j in hp["params"])
        d_hat = shared["d_coef"] * r / denominator
        d_new = max(d, d_hat) if d == d0 else d
        d_max = max(d_max, d_hat)
        d_new = min(d_max, d_new * shared["growth_rate"])
        for hp in groups:
            for j in hp["params"]:
                if shared["decouple"]:
                    w[j] = w[j] - hp["weight_decay"] * eta * w[j]
                w[j] = w[j] - eta * m[j] / (v[j].sqrt() + d_new * hp["eps"])
        d, k = d_new, k + 1
        trajectory.append([t.numpy().copy() for t in w])
    return trajectory, d


CASES = {
    "defaults": ({}, {}),
    "decay-growth-groups": ({"weight_decay": 0.05, "growth_rate": 1.5, "d_coef": 0.5, "d0": 1e-3},
                            {"weight_decay": 0.2, "eps": 1e-3}),
    "coupled-bias-correction-safeguard": ({"weight_decay": 0.05, "decouple": False, "use_bias_correction": True,
                                           "safeguard_warmup": True, "beta3": 0.9, "betas": (0.8, 0.95)},
                                          {"safeguard_warmup": False, "weight_decay": 0.0}),
    "no-first-moment": ({"betas": (0.0, 0.99), "lr": 0.5, "d0": 1e-2}, {}),
    "frozen-group": ({"weight_decay": 0.1}, {"lr": 0.0, "weight_decay": 0.0}),
}
STEPS = 15


def _setup(case: str):
    kwargs, second = CASES[case]
    shared = {**DEFAULTS, **kwargs}
    first_group = {key: shared[key] for key in ("lr", "weight_decay", "eps", "safeguard_warmup")}
    groups = [{**first_group, "params": [0, 1]}, {**first_group, **second, "params": [2, 3]}]
    return kwargs, second, shared, groups


@pytest.mark.parametrize("case", list(CASES))
def test_follows_the_update_equations(case):
    kwargs, second, shared, groups = _setup(case)
    arrays = initial_arrays()
    expected, d = torch_prodigy(arrays, shared, groups, STEPS)
    params = lamina_params(arrays)
    opt = Prodigy([{"params": params[:2]}, {"params": params[2:], **second}], **kwargs)
    for step, weights in enumerate(expected):
        grads = numpy_grads([p.data for p in params])
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        for j, (p, w) in enumerate(zip(params, weights)):
            assert_close(p.data, w, TOL, f"{case} parameter {j} at step {step}")
            np.testing.assert_array_equal(p.grad, grads[j])
    assert opt.estimate["d"] == pytest.approx(d, rel=1e-10) and opt.estimate["k"] == STEPS
    assert d > 10 * shared["d0"]                       # the estimate grew
    if case == "frozen-group":                         # lr 0: moved by the decoupled decay only (none here)
        np.testing.assert_array_equal(params[2].data, arrays[2])


def test_a_schedule_scales_every_group_alike():
    _, _, shared, groups = _setup("defaults")
    arrays = initial_arrays(1)
    expected, _ = torch_prodigy(arrays, shared, groups, 10, lr_at=lambda step: 1.0 if step < 5 else 0.3)
    params = lamina_params(arrays)
    opt = Prodigy([{"params": params[:2]}, {"params": params[2:]}])
    for step in range(10):
        if step == 5:
            opt.lr = 0.3
        _run(opt, params, 1)
    for j, (p, w) in enumerate(zip(params, expected[-1])):
        assert_close(p.data, w, TOL, f"scheduled lr, parameter {j}")


def test_a_first_step_with_zero_gradients_changes_nothing():
    """With every s still 0 there is no estimate to form: the package skips the step."""
    arrays = initial_arrays()
    params = lamina_params(arrays)
    opt = Prodigy(params)
    for p in params:
        p.grad = np.zeros_like(p.data)
    opt.step()
    assert opt.estimate["k"] == 0 and opt.estimate["d"] == 1e-6
    for p, w in zip(params, arrays):
        np.testing.assert_array_equal(p.data, w)
    _run(opt, params, 1)
    assert opt.estimate["k"] == 1 and not np.allclose(params[0].data, arrays[0])


def test_state_dict_round_trip_continues_identically():
    kwargs, second, _, _ = _setup("decay-growth-groups")
    arrays = initial_arrays(2)

    def make(params):
        return Prodigy([{"params": params[:2]}, {"params": params[2:], **second}], **kwargs)

    straight = lamina_params(arrays)
    _run(make(straight), straight, 12)
    resumed = lamina_params(arrays)
    first = make(resumed)
    _run(first, resumed, 6)
    saved = _to_json(first.state_dict())
    again = lamina_params([p.data for p in resumed])
    fresh = make(again)
    fresh.load_state_dict(saved)
    assert fresh.estimate == first.estimate
    _run(fresh, again, 6)
    for a, b in zip(straight, again):
        np.testing.assert_allclose(b.data, a.data, rtol=1e-13, atol=1e-15)
    with pytest.raises(ValueError, match="Prodigy.load_state_dict: 'estimate' must hold"):
        make(lamina_params(arrays)).load_state_dict({**saved, "estimate": {"d": 1.0}})


@pytest.mark.parametrize("make,words", [
    (lambda ps: Prodigy(ps, lr=-1.0), ["Prodigy", "lr", "-1.0"]),
    (lambda ps: Prodigy(ps, d0=0.0), ["Prodigy", "d0", "0"]),
    (lambda ps: Prodigy(ps, d0=-1e-6), ["Prodigy", "d0", "-1e-06"]),
    (lambda ps: Prodigy(ps, d_coef=-1.0), ["Prodigy", "d_coef", "-1.0"]),
    (lambda ps: Prodigy(ps, growth_rate=0.5), ["Prodigy", "growth_rate", "0.5"]),
    (lambda ps: Prodigy(ps, betas=(0.9, 1.0)), ["Prodigy", "beta2", "1.0"]),
    (lambda ps: Prodigy(ps, beta3=1.5), ["Prodigy", "beta3", "1.5"]),
    (lambda ps: Prodigy(ps, eps=-1e-8), ["Prodigy", "eps"]),
    (lambda ps: Prodigy(ps, decouple="yes"), ["Prodigy", "decouple", "yes"]),
    (lambda ps: Prodigy(ps, use_bias_correction=1), ["Prodigy", "use_bias_correction"]),
    (lambda ps: Prodigy([{"params": ps[:2]}, {"params": ps[2:], "d_coef": 2.0}]),
     ["Prodigy", "d_coef", "shared by every parameter group"]),
    (lambda ps: Prodigy([{"params": ps[:2]}, {"params": ps[2:], "betas": (0.5, 0.9)}]),
     ["Prodigy", "betas", "shared"]),
])
def test_bad_hyperparameters_raise(make, words):
    with pytest.raises(ValueError) as info:
        make(lamina_params(initial_arrays()))
    for word in words:
        assert word in str(info.value)


def test_groups_with_different_nonzero_lrs_are_refused_at_the_step():
    params = lamina_params(initial_arrays())
    opt = Prodigy([{"params": params[:2]}, {"params": params[2:], "lr": 0.5}])
    with pytest.raises(ValueError, match=r"Prodigy: every parameter group's lr must be the largest one \(1.0\) or 0"):
        _run(opt, params, 1)


def test_learns_digits_with_no_tuning():
    trainer, _, opt, (xte, yte) = _digits_run(lambda m: Prodigy(m))
    assert accuracy(trainer, xte, yte) >= 0.93                     # 96.9%
    assert 1e-3 < opt.estimate["d"] < 1.0                          # d grew from 1e-6 (to about 0.016)
    assert digits_split()[2].shape == xte.shape
