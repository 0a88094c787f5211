"""Adamax, NAdam, Adadelta and RAdam follow torch.optim step for step (float64), save and restore their state."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_optimizers import (
    TOL,
    X,
    Y,
    _only_plain_types,
    _run,
    _step_both,
    _to_json,
    initial_arrays,
    lamina_params,
    torch_loss,
)

import lamina
from helpers import assert_close
from lamina.nn import Parameter
from lamina.optim import Adadelta, Adam, Adamax, NAdam, RAdam

CASES = [
    ("adamax", Adamax, torch.optim.Adamax, {}),
    ("adamax-lr", Adamax, torch.optim.Adamax, {"lr": 0.02}),
    ("adamax-wd", Adamax, torch.optim.Adamax, {"lr": 0.02, "weight_decay": 0.05}),
    ("adamax-all", Adamax, torch.optim.Adamax, {"lr": 0.05, "betas": (0.8, 0.95), "eps": 0.1,
                                                "weight_decay": 0.05}),
    ("nadam", NAdam, torch.optim.NAdam, {}),
    ("nadam-wd", NAdam, torch.optim.NAdam, {"lr": 0.01, "weight_decay": 0.05}),
    ("nadam-all", NAdam, torch.optim.NAdam, {"lr": 0.02, "betas": (0.8, 0.95), "eps": 0.1, "weight_decay": 0.05,
                                             "momentum_decay": 0.1}),
    ("nadam-no-momentum-decay", NAdam, torch.optim.NAdam, {"lr": 0.01, "momentum_decay": 0.0}),
    ("adadelta", Adadelta, torch.optim.Adadelta, {}),
    ("adadelta-wd", Adadelta, torch.optim.Adadelta, {"weight_decay": 0.05}),
    ("adadelta-all", Adadelta, torch.optim.Adadelta, {"lr": 0.5, "rho": 0.8, "eps": 1e-3, "weight_decay": 0.05}),
    ("radam", RAdam, torch.optim.RAdam, {}),
    ("radam-wd", RAdam, torch.optim.RAdam, {"lr": 0.01, "weight_decay": 0.05}),
    ("radam-all", RAdam, torch.optim.RAdam, {"lr": 0.02, "betas": (0.8, 0.95), "eps": 0.1, "weight_decay": 0.05}),
    ("radam-never-rectified", RAdam, torch.optim.RAdam, {"lr": 0.01, "betas": (0.9, 0.5)}),
]
IDS = [c[0] for c in CASES]


@pytest.fixture(autouse=True)
def _torch_scalars_in_float64():
    """torch keeps its step counts and NAdam's running product mu_product in scalars of the
    default dtype (float32): float64 ones, like lamina's Python floats, for tight comparisons."""
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    yield
    torch.set_default_dtype(before)


@pytest.mark.parametrize("name,ours,theirs,kwargs", CASES, ids=IDS)
def test_matches_torch_step_for_step(name, ours, theirs, kwargs):
    arrays = initial_arrays()
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    lparams = lamina_params(arrays)
    topt = theirs(tparams, **kwargs)
    lopt = ours(lparams, **kwargs)
    for step in range(20):
        topt.zero_grad()
        torch_loss(tparams).backward()
        grads_before = []
        for lp, tp in zip(lparams, tparams):
            lp.grad = tp.grad.numpy().copy()
            grads_before.append(lp.grad.copy())
        data_ids = [id(lp.data) for lp in lparams]
        topt.step()
        lopt.step()
        for k, (lp, tp) in enumerate(zip(lparams, tparams)):
            assert_close(lp.data, tp.detach().numpy(), TOL, f"{name} step {step} parameter {k}")
            assert id(lp.data) == data_ids[k]   # in place
            np.testing.assert_array_equal(lp.grad, grads_before[k])   # the gradient is never written
    assert lopt.step_count == 20
    for k, (lp, tp) in enumerate(zip(lparams, tparams)):
        assert not np.allclose(lp.data, arrays[k])   # the run did train
        tstate = topt.state[tp]
        for key, value in lopt.state[k].items():
            expected = tstate[key].item() if key in ("step", "mu_product") else tstate[key].numpy()
            assert_close(value, expected, TOL, f"{name} state {key!r} of parameter {k}")


@pytest.mark.parametrize("name,ours,theirs,kwargs", CASES, ids=IDS)
def test_gradients_computed_by_lamina(name, ours, theirs, kwargs):
    """Same trajectory when lamina's own backward computes the gradients."""
    arrays = initial_arrays(1)
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    lparams = lamina_params(arrays)
    topt, lopt = theirs(tparams, **kwargs), ours(lparams, **kwargs)
    x = lamina.tensor(X, dtype=np.float64)
    y = lamina.tensor(Y, dtype=np.float64)
    for _ in range(20):
        topt.zero_grad()
        torch_loss(tparams).backward()
        topt.step()
        lopt.zero_grad()
        w1, b1, w2, b2 = lparams
        out = (x @ w1.T + b1).tanh() @ w2.T + b2
        ((out - y) ** 2).mean().backward()
        lopt.step()
    for lp, tp in zip(lparams, tparams):
        assert_close(lp.data, tp.detach().numpy(), 1e-9, name)


@pytest.mark.parametrize("name,ours,theirs,kwargs", CASES, ids=IDS)
def test_state_dict_round_trip(name, ours, theirs, kwargs):
    """Saved after 10 steps (through JSON, as a checkpoint) and restored into a fresh
    optimizer, the run goes on exactly as one that was never interrupted."""
    arrays = initial_arrays(2)
    straight = lamina_params(arrays)
    _run(ours(straight, **kwargs), straight, 20)

    resumed = lamina_params(arrays)
    first = ours(resumed, **kwargs)
    _run(first, resumed, 10)
    saved = first.state_dict()
    assert _only_plain_types(saved)
    snapshot = _to_json(saved)
    _run(first, resumed, 1)
    assert _to_json(saved) == snapshot  # the saved arrays are copies: later steps leave them be
    again = lamina_params(arrays)
    _run(ours(again, **kwargs), again, 10)
    fresh = ours(again, **kwargs)
    fresh.load_state_dict(snapshot)
    assert fresh.step_count == 10
    assert fresh.param_groups[0]["lr"] == first.param_groups[0]["lr"]
    for key, value in saved["state"][0].items():
        restored = fresh.state[0][key]
        assert type(restored) is type(value) if not isinstance(value, np.ndarray) else restored.shape == value.shape
    _run(fresh, again, 10)
    for a, b in zip(straight, again):
        np.testing.assert_allclose(b.data, a.data, rtol=1e-13, atol=1e-15)


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


@pytest.mark.parametrize("make,words", [
    (lambda ps: Adamax(ps, lr=-0.1), ["Adamax", "lr", "-0.1"]),
    (lambda ps: Adamax(ps, betas=(1.0, 0.999)), ["Adamax", "beta1", "1.0"]),
    (lambda ps: Adamax(ps, betas=(0.9, 1.5)), ["Adamax", "beta2", "1.5"]),
    (lambda ps: Adamax(ps, betas=0.9), ["Adamax", "betas", "0.9"]),
    (lambda ps: Adamax(ps, eps=-1e-8), ["Adamax", "eps", "-1e-08"]),
    (lambda ps: Adamax(ps, weight_decay=-0.5), ["Adamax", "weight_decay", "-0.5"]),
    (lambda ps: NAdam(ps, lr=float("nan")), ["NAdam", "lr", "nan"]),
    (lambda ps: NAdam(ps, betas=(-0.1, 0.999)), ["NAdam", "beta1", "-0.1"]),
    (lambda ps: NAdam(ps, momentum_decay=-0.004), ["NAdam", "momentum_decay", "-0.004"]),
    (lambda ps: NAdam(ps, eps=float("inf")), ["NAdam", "eps", "inf"]),
    (lambda ps: Adadelta(ps, rho=1.5), ["Adadelta", "rho", "1.5"]),
    (lambda ps: Adadelta(ps, rho=-0.1), ["Adadelta", "rho", "-0.1"]),
    (lambda ps: Adadelta(ps, eps=-1.0), ["Adadelta", "eps", "-1.0"]),
    (lambda ps: Adadelta(ps, lr=-1.0), ["Adadelta", "lr", "-1.0"]),
    (lambda ps: RAdam(ps, betas=(0.9, 1.0)), ["RAdam", "beta2", "1.0"]),
    (lambda ps: RAdam(ps, weight_decay=-0.1), ["RAdam", "weight_decay", "-0.1"]),
    (lambda ps: RAdam([{"params": ps, "amsgrad": True}]), ["RAdam", "amsgrad"]),
    (lambda ps: NAdam([{"params": ps, "momentum_decay": -1.0}]), ["NAdam", "momentum_decay", "-1.0"]),
])
def test_bad_hyperparameters_raise(make, words):
    params = lamina_params(initial_arrays())
    with pytest.raises(ValueError) as info:
        make(params)
    for word in words:
        assert word in str(info.value)


def test_adam_checks_are_unchanged():
    """The betas/eps checks are shared with Adam: its messages stay as they were."""
    with pytest.raises(ValueError, match=r"Adam: invalid beta1 1.0 \(must be in \[0, 1\)\)"):
        Adam(lamina_params(initial_arrays()), betas=(1.0, 0.999))
    with pytest.raises(ValueError, match=r"Adam: invalid betas 0.9 \(must be a pair"):
        Adam(lamina_params(initial_arrays()), betas=0.9)
