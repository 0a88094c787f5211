"""Optimizers follow torch.optim step for step (float64), save and restore their state."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina.nn import Module, Parameter
from lamina.optim import (
    SGD,
    Adadelta,
    Adagrad,
    Adam,
    Adamax,
    AdamW,
    NAdam,
    Optimizer,
    RAdam,
    RMSProp,
    RMSprop,
    StepDecay,
)

SHAPES = [(4, 3), (4,), (2, 4), (2,)]
_rng = np.random.default_rng(1234)
X = _rng.standard_normal((6, 3))
Y = _rng.standard_normal((6, 2))
TOL = 1e-10  # float64 throughout; the brief asks 1e-6, the formulas agree far closer

CASES = [
    ("sgd", SGD, torch.optim.SGD, {"lr": 0.1}),
    ("sgd-wd", SGD, torch.optim.SGD, {"lr": 0.1, "weight_decay": 0.05}),
    ("sgd-momentum", SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "weight_decay": 0.01}),
    ("sgd-dampening", SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "dampening": 0.5,
                                             "weight_decay": 0.01}),
    ("sgd-nesterov", SGD, torch.optim.SGD, {"lr": 0.05, "momentum": 0.9, "nesterov": True,
                                            "weight_decay": 0.01}),
    ("adagrad", Adagrad, torch.optim.Adagrad, {"lr": 0.1}),
    ("adagrad-all", Adagrad, torch.optim.Adagrad, {"lr": 0.1, "eps": 0.1, "weight_decay": 0.05,
                                                   "initial_accumulator_value": 0.2, "lr_decay": 0.05}),
    ("rmsprop", RMSProp, torch.optim.RMSprop, {"lr": 0.01}),
    ("rmsprop-wd-eps", RMSProp, torch.optim.RMSprop, {"lr": 0.01, "alpha": 0.9, "eps": 0.1,
                                                      "weight_decay": 0.05}),
    ("rmsprop-momentum", RMSprop, torch.optim.RMSprop, {"lr": 0.01, "momentum": 0.9, "weight_decay": 0.01}),
    ("rmsprop-centered", RMSProp, torch.optim.RMSprop, {"lr": 0.01, "momentum": 0.5, "centered": True,
                                                        "weight_decay": 0.01}),
    ("adam", Adam, torch.optim.Adam, {"lr": 0.01}),
    ("adam-wd-eps", Adam, torch.optim.Adam, {"lr": 0.01, "betas": (0.8, 0.95), "eps": 0.1,
                                             "weight_decay": 0.05}),
    ("adam-amsgrad", Adam, torch.optim.Adam, {"lr": 0.01, "amsgrad": True, "weight_decay": 0.01}),
    ("adamw", AdamW, torch.optim.AdamW, {"lr": 0.01}),
    ("adamw-wd-amsgrad", AdamW, torch.optim.AdamW, {"lr": 0.02, "betas": (0.8, 0.95), "eps": 0.1,
                                                    "weight_decay": 0.3, "amsgrad": True}),
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


def initial_arrays(seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s) for s in SHAPES]


def torch_loss(params):
    w1, b1, w2, b2 = params
    h = torch.tanh(torch.from_numpy(X) @ w1.T + b1)
    out = h @ w2.T + b2
    return ((out - torch.from_numpy(Y)) ** 2).mean()


def numpy_grads(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """Gradients of the tiny MLP's cost at ``arrays`` (computed by torch)."""
    tp = [torch.tensor(a, requires_grad=True) for a in arrays]
    torch_loss(tp).backward()
    return [p.grad.numpy().copy() for p in tp]


def lamina_params(arrays) -> list[Parameter]:
    return [Parameter(a.copy(), dtype=np.float64) for a in arrays]


@pytest.mark.parametrize("name,ours,theirs,kwargs", CASES, ids=[c[0] for c in CASES])
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
            # the update is in place and leaves the gradient the user sees untouched
            assert id(lp.data) == data_ids[k]
            np.testing.assert_array_equal(lp.grad, grads_before[k])
    assert lopt.step_count == 20
    for k, (lp, tp) in enumerate(zip(lparams, tparams)):
        assert not np.allclose(lp.data, arrays[k])   # the run did train
        tstate = topt.state[tp]
        for key, value in lopt.state[k].items():     # the entries both name alike
            if key in tstate and key != "step":
                expected = tstate[key].item() if tstate[key].ndim == 0 else tstate[key].numpy()
                assert_close(value, expected, TOL, f"{name} state {key!r} of parameter {k}")


@pytest.mark.parametrize("name,ours,theirs,kwargs", CASES, ids=[c[0] for c in CASES])
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


def _to_json(obj):
    def default(o):
        if isinstance(o, np.ndarray):
            return o.tolist()
        raise TypeError(f"not serialisable: {type(o).__name__}")

    return json.loads(json.dumps(obj, default=default))


def _only_plain_types(obj) -> bool:
    if isinstance(obj, dict):
        return all(isinstance(k, (int, str)) and _only_plain_types(v) for k, v in obj.items())
    if isinstance(obj, list):
        return all(_only_plain_types(v) for v in obj)
    return isinstance(obj, (np.ndarray, int, float, str, bool)) or obj is None


def _run(opt: Optimizer, params: list[Parameter], steps: int) -> None:
    for _ in range(steps):
        for p, g in zip(params, numpy_grads([p.data for p in params])):
            p.grad = g
        opt.step()


@pytest.mark.parametrize("name,ours,theirs,kwargs", CASES, ids=[c[0] for c in CASES])
def test_state_dict_round_trip(name, ours, theirs, kwargs):
    arrays = initial_arrays(2)
    straight = lamina_params(arrays)
    _run(ours(straight, **kwargs), straight, 20)

    resumed = lamina_params(arrays)
    first = ours(resumed, **kwargs)
    _run(first, resumed, 10)
    saved = first.state_dict()
    assert _only_plain_types(saved)
    snapshot = _to_json(saved)  # as a checkpoint written to JSON would come back
    _run(first, resumed, 1)
    assert _to_json(saved) == snapshot  # the saved arrays are copies: later steps leave them be
    again = lamina_params(arrays)
    _run(ours(again, **kwargs), again, 10)
    fresh = ours(again, **kwargs)
    fresh.load_state_dict(snapshot)
    assert fresh.step_count == 10
    assert fresh.param_groups[0]["lr"] == first.param_groups[0]["lr"]
    for key, value in saved["state"][0].items():      # numbers come back as the same type
        restored = fresh.state[0][key]
        assert type(restored) is type(value) if not isinstance(value, np.ndarray) else restored.shape == value.shape
    _run(fresh, again, 10)
    for a, b in zip(straight, again):
        np.testing.assert_allclose(b.data, a.data, rtol=1e-13, atol=1e-15)


def test_state_dict_restores_hyperparameters_and_checks_shapes():
    params = lamina_params(initial_arrays())
    opt = Adam(params, lr=0.02, betas=(0.8, 0.9))
    _run(opt, params, 3)
    saved = opt.state_dict()
    other = Adam(lamina_params(initial_arrays()), lr=0.5)
    other.load_state_dict(saved)
    assert other.lr == 0.02 and other.param_groups[0]["betas"] == (0.8, 0.9)
    with pytest.raises(ValueError, match="from a Adam optimizer"):
        SGD(lamina_params(initial_arrays()), lr=0.1).load_state_dict(saved)
    wrong = lamina_params([np.zeros((3, 3)), np.zeros(4), np.zeros((2, 4)), np.zeros(2)])
    with pytest.raises(ValueError, match="shape"):
        Adam(wrong).load_state_dict(saved)
    with pytest.raises(ValueError, match="parameters in the state dict"):
        Adam(lamina_params(initial_arrays())[:2]).load_state_dict(saved)


def test_skips_frozen_and_gradless_parameters():
    frozen = Parameter(np.ones((2, 2)), dtype=np.float64)
    frozen.freeze()
    frozen.grad = np.ones((2, 2))  # a stale gradient must not move a frozen parameter
    gradless = Parameter(np.ones(3), dtype=np.float64)
    live = Parameter(np.ones(3), dtype=np.float64)
    live.grad = np.full(3, 0.5)
    opt = Adam([frozen, gradless, live], lr=0.1)
    opt.step()
    np.testing.assert_array_equal(frozen.data, 1.0)
    np.testing.assert_array_equal(gradless.data, 1.0)
    assert not np.allclose(live.data, 1.0)
    assert set(opt.state) == {2}
    gradless.grad = np.full(3, 0.5)
    opt.step()
    assert opt.state[1]["step"] == 1 and opt.state[2]["step"] == 2


def test_adamw_decay_is_decoupled_from_the_gradient():
    """A weight whose gradient is zero: AdamW shrinks it by (1 - lr wd) a step, whatever the
    gradient's scale; Adam's L2 term goes through v1 / sqrt(v2) and moves it by about lr."""
    decoupled = Parameter(np.full(3, 2.0), dtype=np.float64)
    coupled = Parameter(np.full(3, 2.0), dtype=np.float64)
    adamw, adam = AdamW([decoupled], lr=0.1, weight_decay=0.05), Adam([coupled], lr=0.1, weight_decay=0.05)
    for _ in range(4):
        decoupled.grad, coupled.grad = np.zeros(3), np.zeros(3)
        adamw.step()
        adam.step()
    np.testing.assert_allclose(decoupled.data, 2.0 * (1 - 0.1 * 0.05) ** 4, rtol=1e-14)   # 1.96
    np.testing.assert_allclose(coupled.data, 2.0 - 4 * 0.1, rtol=2e-3)
    assert AdamW([decoupled]).param_groups[0]["weight_decay"] == 0.01   # PyTorch's default


def _step_both(topt, lopt, tparams, lparams) -> None:
    """One step of each optimizer, on torch's gradients of the tiny MLP's cost."""
    topt.zero_grad()
    torch_loss(tparams).backward()
    for lp, tp in zip(lparams, tparams):
        lp.grad = tp.grad.numpy().copy()
    topt.step()
    lopt.step()


def test_adamw_decay_follows_the_scheduled_lr():
    arrays = initial_arrays()
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    lparams = lamina_params(arrays)
    topt = torch.optim.AdamW(tparams, lr=0.05, weight_decay=0.2)
    lopt = AdamW(lparams, lr=0.05, weight_decay=0.2)
    for step in range(12):
        if step == 6:
            lopt.lr = 0.01
            topt.param_groups[0]["lr"] = 0.01
        _step_both(topt, lopt, tparams, lparams)
    for lp, tp in zip(lparams, tparams):
        assert_close(lp.data, tp.detach().numpy(), TOL, "AdamW with a changed lr")


def test_float32_parameters_stay_float32():
    p = Parameter(np.ones((3, 2), dtype=np.float32))
    opt = Adam([p], lr=0.1, weight_decay=0.1)
    for _ in range(3):
        p.grad = np.full((3, 2), 0.25, dtype=np.float32)
        opt.step()
    assert p.data.dtype == np.float32
    assert opt.state[0]["exp_avg"].dtype == np.float32


def test_param_groups_and_lr_setter_match_torch():
    arrays = initial_arrays()
    tparams = [torch.tensor(a.copy(), requires_grad=True) for a in arrays]
    lparams = lamina_params(arrays)
    topt = torch.optim.SGD([{"params": tparams[:2]}, {"params": tparams[2:], "lr": 0.01, "momentum": 0.9}],
                           lr=0.1)
    lopt = SGD([{"params": lparams[:2]}, {"params": lparams[2:], "lr": 0.01, "momentum": 0.9}], lr=0.1)
    for step in range(10):
        if step == 5:  # a schedule halves the base lr: the second group keeps its 1/10 ratio
            lopt.lr = 0.05
            topt.param_groups[0]["lr"], topt.param_groups[1]["lr"] = 0.05, 0.005
        _step_both(topt, lopt, tparams, lparams)
    assert lopt.param_groups[1]["lr"] == pytest.approx(0.005)
    for lp, tp in zip(lparams, tparams):
        assert_close(lp.data, tp.detach().numpy(), TOL, "param groups")


def test_a_base_lr_of_zero_refuses_a_schedule_that_would_lose_the_groups_own_lrs():
    a, b, c = (Parameter(np.zeros(2), dtype=np.float64) for _ in range(3))
    opt = SGD([{"params": [a], "lr": 0.2}, {"params": [b], "lr": 0.1}], lr=0.0)
    with pytest.raises(ValueError, match=r"SGD: cannot set lr to 0.5: the base lr is 0 but parameter group\(s\) "
                                         r"\[0, 1\] have their own lr \[0.2, 0.1\]"):
        StepDecay(0.5, 1, 0.5, optimizer=opt)
    assert [g["lr"] for g in opt.param_groups] == [0.2, 0.1]
    frozen = SGD([{"params": [a]}, {"params": [b]}], lr=0.0)          # groups that follow the base
    frozen.lr = 0.5
    assert [g["lr"] for g in frozen.param_groups] == [0.5, 0.5]
    scaled = SGD([{"params": [c], "lr": 0.1}], lr=0.2)
    scaled.lr = 0.0
    scaled.lr = 0.4                                  # the ratio, known from a nonzero base, is kept
    assert scaled.param_groups[0]["lr"] == pytest.approx(0.2)


class _Lazy(Module):
    def build(self, input_shape):
        self.w = Parameter(np.ones((input_shape[-1], 2)), dtype=np.float64)
        self.b = Parameter(np.zeros(2), dtype=np.float64)

    def forward(self, x):
        return x @ self.w + self.b


def test_accepts_a_module_built_after_the_optimizer():
    with pytest.raises(ValueError, match=r"SGD: got an empty parameter list .*pass the model itself"):
        SGD(_Lazy().parameters(), lr=0.5)
    model = _Lazy()
    opt = SGD(model, lr=0.5)
    with pytest.raises(RuntimeError, match="no parameters yet"):
        opt.step()
    x = lamina.tensor(np.ones((4, 3)), dtype=np.float64)
    model(x).sum().backward()
    opt.step()
    np.testing.assert_allclose(model.w.data, 1.0 - 0.5 * 4.0)
    np.testing.assert_allclose(model.b.data, -0.5 * 4.0)
    opt.zero_grad()
    assert model.w.grad is None


def test_zero_grad_in_place():
    p = Parameter(np.ones(3), dtype=np.float64)
    p.grad = np.ones(3)
    grad = p.grad
    SGD([p], lr=0.1).zero_grad(set_to_none=False)
    assert p.grad is grad and not grad.any()


@pytest.mark.parametrize("make,words", [
    (lambda ps: SGD(ps, lr=-0.1), ["SGD", "lr", "-0.1"]),
    (lambda ps: SGD(ps, lr=0.1, momentum=-0.5), ["SGD", "momentum", "-0.5"]),
    (lambda ps: SGD(ps, lr=0.1, nesterov=True), ["SGD", "nesterov"]),
    (lambda ps: SGD(ps, lr=0.1, weight_decay=-1.0), ["SGD", "weight_decay", "-1.0"]),
    (lambda ps: Adam(ps, betas=(1.0, 0.999)), ["Adam", "beta1", "1.0"]),
    (lambda ps: Adam(ps, betas=(0.9, -0.1)), ["Adam", "beta2", "-0.1"]),
    (lambda ps: Adam(ps, lr=float("nan")), ["Adam", "lr", "nan"]),
    (lambda ps: Adam(ps, eps=-1e-8), ["Adam", "eps", "-1e-08"]),
    (lambda ps: RMSProp(ps, alpha=1.5), ["RMSProp", "alpha", "1.5"]),
    (lambda ps: Adagrad(ps, lr=-0.01), ["Adagrad", "lr", "-0.01"]),
    (lambda ps: Adagrad(ps, initial_accumulator_value=-1.0), ["Adagrad", "initial_accumulator_value"]),
    (lambda ps: SGD([{"params": ps, "momentun": 0.9}], lr=0.1), ["SGD", "momentun"]),
    (lambda ps: SGD([], lr=0.1), ["SGD", "empty"]),
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


def test_lr_setter_rejects_negative():
    opt = SGD(lamina_params(initial_arrays()), lr=0.1)
    with pytest.raises(ValueError, match="SGD: invalid lr -1"):
        opt.lr = -1.0
