"""D-Adaptation Adam against its update equations (Defazio and Mishchenko 2023, as the dadaptation
package computes them) written here in torch; state dict, checks and learning."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_optimizers import TOL, _run, _to_json, initial_arrays, lamina_params, numpy_grads
from test_rprop_lion_lookahead import accuracy
from test_schedule_free import _digits_run

from helpers import assert_close
from lamina.optim import DAdaptAdam

DEFAULTS = {"lr": 1.0, "betas": (0.9, 0.999), "eps": 1e-8, "weight_decay": 0.0, "decouple": False,
            "use_bias_correction": False, "d0": 1e-6, "growth_rate": math.inf}


def torch_dadapt_adam(arrays, shared: dict, groups: list[dict], steps: int):
    """D-adapted Adam over the tiny MLP's cost: the step size d lr sits in the first moment,
    d grows to r / ((1 - sqrt(beta2)) |s|_1). Returns the weights after each step and d."""
    w = [torch.tensor(a) for a in arrays]
    m, v, s = ([torch.zeros_like(t) for t in w] for _ in range(3))
    beta1, beta2 = shared["betas"]
    b = beta2**0.5
    d, r = shared["d0"], 0.0
    trajectory = []
    for k in range(steps):
        lr = max(g["lr"] for g in groups)
        grads = [torch.tensor(g) for g in numpy_grads([t.numpy() for t in w])]
        eta = d * lr
        if shared["use_bias_correction"]:
            eta *= (1 - beta2 ** (k + 1)) ** 0.5 / (1 - beta1 ** (k + 1))
        numerator, l1 = 0.0, 0.0
        for hp in groups:
            if hp["lr"] == 0:
                continue
            for j in hp["params"]:
                g = grads[j] if shared["decouple"] else grads[j] + hp["weight_decay"] * w[j]
                numerator += eta * float(torch.sum(g * s[j] / (v[j].sqrt() + hp["eps"])))
                m[j] = beta1 * m[j] + eta * (1 - beta1) * g
                v[j] = beta2 * v[j] + (1 - beta2) * g * g
                s[j] = b * s[j] + eta * (1 - b) * g
                l1 += float(s[j].abs().sum())
        r = b * r + (1 - b) * numerator
        d = max(d, min(r / ((1 - b) * l1), d * shared["growth_rate"]))
        for hp in groups:
            for j in hp["params"]:
                if shared["decouple"]:
                    w[j] = w[j] * (1 - hp["weight_decay"] * eta)
                w[j] = w[j] - m[j] / (v[j].sqrt() + hp["eps"])
        trajectory.append([t.numpy().copy() for t in w])
    return trajectory, d


CASES = {
    "defaults": ({}, {}),
    "coupled-decay-groups-growth": ({"weight_decay": 0.05, "growth_rate": 2.0, "d0": 1e-3},
                                    {"weight_decay": 0.2}),
    "decoupled-bias-correction-eps": ({"weight_decay": 0.1, "decouple": True, "use_bias_correction": True,
                                       "betas": (0.8, 0.95)}, {"weight_decay": 0.0, "eps": 0.05}),
    "frozen-group": ({"d0": 1e-4}, {"lr": 0.0}),
}
STEPS = 15


@pytest.mark.parametrize("case", list(CASES))
def test_follows_the_update_equations(case):
    kwargs, second = CASES[case]
    shared = {**DEFAULTS, **kwargs}
    first = {key: shared[key] for key in ("lr", "weight_decay", "eps")}
    groups = [{**first, "params": [0, 1]}, {**first, **second, "params": [2, 3]}]
    arrays = initial_arrays()
    expected, d = torch_dadapt_adam(arrays, shared, groups, STEPS)
    params = lamina_params(arrays)
    opt = DAdaptAdam([{"params": params[:2]}, {"params": params[2:], **second}], **kwargs)
    for step, weights in enumerate(expected):
        grads = numpy_grads([p.data for p in params])
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        for j, (p, w) in enumerate(zip(params, weights)):
            assert_close(p.data, w, TOL, f"{case} parameter {j} at step {step}")
            np.testing.assert_array_equal(p.grad, grads[j])
    assert opt.estimate["d"] == pytest.approx(d, rel=1e-10) and d > 10 * shared["d0"]
    if case == "frozen-group":
        np.testing.assert_array_equal(params[2].data, arrays[2])


def test_state_dict_round_trip_continues_identically():
    arrays = initial_arrays(2)

    def make(params):
        return DAdaptAdam([{"params": params[:2]}, {"params": params[2:], "eps": 1e-4}], weight_decay=0.05)

    straight = lamina_params(arrays)
    _run(make(straight), straight, 12)
    resumed = lamina_params(arrays)
    first = make(resumed)
    _run(first, resumed, 6)
    again = lamina_params([p.data for p in resumed])
    fresh = make(again)
    fresh.load_state_dict(_to_json(first.state_dict()))
    assert fresh.estimate == first.estimate
    _run(fresh, again, 6)
    for a, b in zip(straight, again):
        np.testing.assert_allclose(b.data, a.data, rtol=1e-13, atol=1e-15)


@pytest.mark.parametrize("make,words", [
    (lambda ps: DAdaptAdam(ps, d0=0.0), ["DAdaptAdam", "d0", "0"]),
    (lambda ps: DAdaptAdam(ps, eps=0.0), ["DAdaptAdam", "eps", "0"]),
    (lambda ps: DAdaptAdam(ps, growth_rate=0.9), ["DAdaptAdam", "growth_rate", "0.9"]),
    (lambda ps: DAdaptAdam(ps, betas=(1.0, 0.9)), ["DAdaptAdam", "beta1", "1.0"]),
    (lambda ps: DAdaptAdam(ps, decouple=None), ["DAdaptAdam", "decouple", "None"]),
    (lambda ps: DAdaptAdam([{"params": ps[:2]}, {"params": ps[2:], "d0": 1e-3}]), ["DAdaptAdam", "d0", "shared"]),
])
def test_bad_hyperparameters_raise(make, words):
    with pytest.raises(ValueError) as info:
        make(lamina_params(initial_arrays()))
    for word in words:
        assert word in str(info.value)


def test_learns_digits_with_no_tuning():
    trainer, _, opt, (xte, yte) = _digits_run(lambda m: DAdaptAdam(m))
    assert accuracy(trainer, xte, yte) >= 0.89                       # 91.3% (95.1% after 10 epochs)
    assert 1e-3 < opt.estimate["d"] < 1.0                            # from 1e-6 to about 0.045
