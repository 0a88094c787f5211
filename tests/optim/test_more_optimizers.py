"""Adamax, NAdam, Adadelta and RAdam: what sets each apart (their step-for-step runs against
torch.optim and their saved state are in test_optimizers.py)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_optimizers import (
    TOL,
    _run,
    _step_both,
    _to_json,
    initial_arrays,
    lamina_params,
)

from helpers import assert_close
from lamina.nn import Parameter
from lamina.optim import Adadelta, Adam, Adamax, NAdam, RAdam


def test_nadam_mu_product_is_saved_as_a_float():
    """The running product of the momentum coefficients is a real number in (0, 1): a load that
    rounded it like a step count would make the next step divide by 1 - 0."""
    params = lamina_params(initial_arrays())
    opt = NAdam(params, lr=0.01)
    _run(opt, params, 3)
    beta1, psi = 0.9, 0.004
    expected = math.prod(beta1 * (1 - 0.5 * 0.96 ** (t * psi)) for t in (1, 2, 3))
    assert opt.state[0]["mu_product"] == pytest.approx(expected, rel=1e-15)
    other = NAdam(lamina_params(initial_arrays()), lr=0.01)
    other.load_state_dict(_to_json(opt.state_dict()))
    assert other.state[0]["mu_product"] == opt.state[0]["mu_product"]
    with pytest.raises(ValueError, match="from a NAdam optimizer"):
        RAdam(lamina_params(initial_arrays())).load_state_dict(opt.state_dict())


def test_adamax_eps_is_inside_the_maximum():
    """u = max(beta2 u, |g| + eps): a zero gradient leaves u = eps and the weight where it is."""
    p = Parameter(np.array([1.0, 2.0]), dtype=np.float64)
    opt = Adamax([p], lr=0.1, eps=1e-3)
    p.grad = np.array([0.0, 0.5])
    opt.step()
    np.testing.assert_allclose(opt.state[0]["exp_inf"], [1e-3, 0.5 + 1e-3], rtol=1e-15)
    # first step: m = (1 - beta1) g, bias-corrected to g: w = w - lr g / (|g| + eps)
    np.testing.assert_allclose(p.data, [1.0, 2.0 - 0.1 * 0.5 / 0.501], rtol=1e-15)


def test_radam_takes_plain_momentum_steps_until_rho_exceeds_5():
    """beta2 = 0.999: rho_t = 1.0, 1.999, ..., > 5 from step 6; the first five steps are
    lr * m / (1 - beta1**t), whatever the scale of the gradients."""
    beta1, beta2 = 0.9, 0.999
    rho_inf = 2 / (1 - beta2) - 1
    rho = [rho_inf - 2 * t * beta2**t / (1 - beta2**t) for t in range(1, 8)]
    assert max(rho[:5]) <= 5 < min(rho[5:])
    p = Parameter(np.zeros(2), dtype=np.float64)
    opt = RAdam([p], lr=0.1)
    grads = [np.array([1.0, 100.0]) * (k + 1) for k in range(6)]
    m, w = np.zeros(2), np.zeros(2)
    for t, g in enumerate(grads, start=1):
        p.grad = g
        opt.step()
        m = beta1 * m + (1 - beta1) * g
        if t <= 5:
            w = w - 0.1 * m / (1 - beta1**t)
            np.testing.assert_allclose(p.data, w, rtol=1e-13)
    v = sum((1 - beta2) * beta2 ** (6 - k) * g * g for k, g in enumerate(grads, start=1))
    r = math.sqrt((rho[5] - 4) * (rho[5] - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho[5]))
    w = w - 0.1 * r * (m / (1 - beta1**6)) * math.sqrt(1 - beta2**6) / (np.sqrt(v) + 1e-8)
    np.testing.assert_allclose(p.data, w, rtol=1e-12)


def test_adadelta_first_step():
    """From delta_sq = 0: delta = sqrt(eps) / sqrt((1-rho) g^2 + eps) * g."""
    p = Parameter(np.array([1.0, -1.0]), dtype=np.float64)
    opt = Adadelta([p], rho=0.9, eps=1e-6)
    g = np.array([0.5, -2.0])
    p.grad = g
    opt.step()
    delta = math.sqrt(1e-6) / np.sqrt(0.1 * g * g + 1e-6) * g
    np.testing.assert_allclose(p.data, np.array([1.0, -1.0]) - delta, rtol=1e-14)
    np.testing.assert_allclose(opt.state[0]["acc_delta"], 0.1 * delta * delta, rtol=1e-14)


@pytest.mark.parametrize("ours,theirs", [(Adamax, torch.optim.Adamax), (NAdam, torch.optim.NAdam),
                                         (Adadelta, torch.optim.Adadelta), (RAdam, torch.optim.RAdam)],
                         ids=["adamax", "nadam", "adadelta", "radam"])
def test_param_groups_and_a_changed_lr_match_torch(ours, theirs):
    """Two groups with their own hyperparameters; a schedule halves the base lr half-way."""
    arrays = initial_arrays()
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    lparams = lamina_params(arrays)
    base = 0.5 if ours is Adadelta else 0.02
    topt = theirs([{"params": tparams[:2]}, {"params": tparams[2:], "lr": base / 10, "weight_decay": 0.1}],
                  lr=base)
    lopt = ours([{"params": lparams[:2]}, {"params": lparams[2:], "lr": base / 10, "weight_decay": 0.1}], lr=base)
    for step in range(12):
        if step == 6:
            lopt.lr = base / 2
            topt.param_groups[0]["lr"], topt.param_groups[1]["lr"] = base / 2, base / 20
        _step_both(topt, lopt, tparams, lparams)
    assert lopt.param_groups[1]["lr"] == pytest.approx(base / 20)
    for lp, tp in zip(lparams, tparams):
        assert_close(lp.data, tp.detach().numpy(), TOL, f"{ours.__name__} param groups")


@pytest.mark.parametrize("kind", [Adamax, NAdam, Adadelta, RAdam], ids=lambda k: k.__name__)
def test_float32_parameters_stay_float32(kind):
    p = Parameter(np.ones((3, 2), dtype=np.float32))
    opt = kind([p], weight_decay=0.1)
    for _ in range(3):
        p.grad = np.full((3, 2), 0.25, dtype=np.float32)
        opt.step()
    assert p.data.dtype == np.float32 and np.isfinite(p.data).all() and not np.allclose(p.data, 1.0)
    for key in kind._state_arrays:
        assert opt.state[0][key].dtype == np.float32, key


def test_defaults_are_torchs():
    params = lamina_params(initial_arrays())
    for ours, theirs in [(Adamax, torch.optim.Adamax), (NAdam, torch.optim.NAdam),
                         (Adadelta, torch.optim.Adadelta), (RAdam, torch.optim.RAdam)]:
        tdefaults = theirs([torch.zeros(1, requires_grad=True)]).defaults
        for key, value in ours(params).defaults.items():
            assert tdefaults[key] == value, (ours.__name__, key)


def test_adam_checks_are_unchanged():
    """The betas/eps checks are shared with Adam: its messages stay as they were."""
    with pytest.raises(ValueError, match=r"Adam: invalid beta1 1.0 \(must be in \[0, 1\)\)"):
        Adam(lamina_params(initial_arrays()), betas=(1.0, 0.999))
    with pytest.raises(ValueError, match=r"Adam: invalid betas 0.9 \(must be a pair"):
        Adam(lamina_params(initial_arrays()), betas=0.9)
