"""Learning-rate schedules: course-notes formulas, torch's schedulers, optimizer binding."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from lamina.nn import Parameter
from lamina.optim import (
    SGD,
    CosineDecay,
    ExponentialDecay,
    InverseSqrtDecay,
    InverseTimeDecay,
    LinearDecay,
    ReduceOnPlateau,
    StepDecay,
    Warmup,
    schedules,
)

TS = [0, 1, 2, 5, 9, 10, 17, 50]


def _optimizer(lr: float = 0.1) -> SGD:
    return SGD([Parameter(np.ones(2), dtype=np.float64)], lr=lr)


def _torch_lrs(make, steps: int, lr: float) -> list[float]:
    opt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=lr)
    sched = make(opt)
    lrs = [opt.param_groups[0]["lr"]]
    for _ in range(steps):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    return lrs


def _our_lrs(schedule, steps: int) -> list[float]:
    """The lr an optimizer driven by ``schedule`` uses at each of ``steps`` + 1 steps (as _torch_lrs)."""
    opt = _optimizer(lr=123.0)
    schedule.attach(opt)
    lrs = [opt.lr]
    for _ in range(steps):
        opt.step()
        schedule.step()
        lrs.append(opt.lr)
    return lrs


@pytest.mark.parametrize("schedule,formula", [
    (ExponentialDecay(0.1, k=0.05), lambda t: 0.1 * math.exp(-0.05 * t)),
    (LinearDecay(0.1, total_steps=20), lambda t: 0.1 * (1 - min(t, 20) / 20)),
    (CosineDecay(0.1, total_steps=20), lambda t: 0.5 * 0.1 * (1 + math.cos(math.pi * min(t, 20) / 20))),
    (InverseSqrtDecay(0.1), lambda t: 0.1 / math.sqrt(max(t, 1))),
    (InverseTimeDecay(0.1, k=0.5), lambda t: 0.1 / (1 + 0.5 * t)),
    (StepDecay(0.1, step_size=5, gamma=0.5), lambda t: 0.1 * 0.5 ** (t // 5)),
    (StepDecay(0.1, step_size=[3, 10], gamma=0.1), lambda t: 0.1 * 0.1 ** ((t >= 3) + (t >= 10))),
    (LinearDecay(0.1, total_steps=10, final_lr=0.02), lambda t: 0.02 + 0.08 * (1 - min(t, 10) / 10)),
])
def test_formula(schedule, formula):
    for t in TS:
        assert schedule(t) == pytest.approx(formula(t), rel=1e-12, abs=1e-15)


def test_course_notes_values():
    assert CosineDecay(1.0, 10)(10) == pytest.approx(0.0, abs=1e-15)
    assert CosineDecay(1.0, 10)(5) == pytest.approx(0.5)
    assert LinearDecay(1.0, 10)(15) == 0.0  # clamped after T
    assert InverseSqrtDecay(1.0)(0) == 1.0 and InverseSqrtDecay(1.0)(4) == 0.5


@pytest.mark.parametrize("ours,make_torch", [
    (StepDecay(0.1, step_size=3, gamma=0.5), lambda o: torch.optim.lr_scheduler.StepLR(o, 3, gamma=0.5)),
    (StepDecay(0.1, step_size=[2, 7], gamma=0.3),
     lambda o: torch.optim.lr_scheduler.MultiStepLR(o, [2, 7], gamma=0.3)),
    (ExponentialDecay(0.1, k=0.2),
     lambda o: torch.optim.lr_scheduler.ExponentialLR(o, gamma=math.exp(-0.2))),
    (CosineDecay(0.1, total_steps=12, final_lr=0.01),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=12, eta_min=0.01)),
    (LinearDecay(0.1, total_steps=12),
     lambda o: torch.optim.lr_scheduler.LinearLR(o, start_factor=1.0, end_factor=0.0, total_iters=12)),
    (InverseTimeDecay(0.1, k=0.3),
     lambda o: torch.optim.lr_scheduler.LambdaLR(o, lambda t: 1 / (1 + 0.3 * t))),
])
def test_bound_schedule_matches_torch(ours, make_torch):
    np.testing.assert_allclose(_our_lrs(ours, 12), _torch_lrs(make_torch, 12, 0.1), rtol=1e-9, atol=1e-15)


def test_optimizer_argument_and_state_dict():
    opt = _optimizer()
    sched = CosineDecay(0.2, total_steps=10, optimizer=opt)
    assert opt.lr == 0.2 and sched.per == "iteration"
    for _ in range(4):
        sched.step()
    assert opt.lr == pytest.approx(sched(4)) and sched.lr == opt.lr
    saved = json.loads(json.dumps(sched.state_dict()))
    opt2 = _optimizer()
    resumed = CosineDecay(0.2, total_steps=10, optimizer=opt2)
    resumed.load_state_dict(saved)
    assert resumed.t == 4 and opt2.lr == opt.lr
    assert sched.step() == resumed.step()
    with pytest.raises(ValueError, match="StepDecay"):
        StepDecay(0.1, 2).load_state_dict(saved)


def test_unbound_step_returns_lr():
    sched = InverseTimeDecay(1.0, k=1.0)
    assert [sched.step() for _ in range(3)] == [0.5, 1 / 3, 0.25]


def test_per_attribute():
    assert StepDecay(0.1, 5).per == "epoch"
    assert LinearDecay(0.1, 100).per == "iteration"
    assert ExponentialDecay(0.1, 0.1, per="epoch").per == "epoch"
    assert ReduceOnPlateau(_optimizer()).per == "epoch"
    with pytest.raises(ValueError, match="per"):
        LinearDecay(0.1, 100, per="batch")


def test_param_groups_keep_their_ratio():
    a, b = Parameter(np.ones(2), dtype=np.float64), Parameter(np.ones(2), dtype=np.float64)
    opt = SGD([{"params": [a]}, {"params": [b], "lr": 0.01}], lr=0.1)
    StepDecay(0.1, step_size=1, gamma=0.5, optimizer=opt).step()
    assert opt.param_groups[0]["lr"] == pytest.approx(0.05)
    assert opt.param_groups[1]["lr"] == pytest.approx(0.005)


@pytest.mark.parametrize("kwargs", [
    {"mode": "min", "factor": 0.5, "patience": 2},
    {"mode": "max", "factor": 0.2, "patience": 1, "threshold": 0.05},
    {"mode": "min", "factor": 0.5, "patience": 1, "threshold_mode": "abs", "threshold": 0.1, "cooldown": 2,
     "min_lr": 0.01},
])
def test_reduce_on_plateau_matches_torch(kwargs):
    rng = np.random.default_rng(0)
    metrics = list(np.concatenate([np.linspace(1.0, 0.5, 5), 0.5 + 0.05 * rng.standard_normal(25)]))
    topt = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=0.1)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kwargs)
    opt = _optimizer(0.1)
    sched = ReduceOnPlateau(opt, **kwargs)
    for m in metrics:
        tsched.step(m)
        assert sched.step(m) == pytest.approx(topt.param_groups[0]["lr"], rel=1e-12)
    assert opt.lr < 0.1  # the plateau did trigger reductions


def _two_groups(make, lrs=(1.0, 0.1)):
    a, b = (make(np.zeros(1)) for _ in range(2))
    return [{"params": [a]}, {"params": [b], "lr": lrs[1]}], lrs[0]


@pytest.mark.parametrize("kwargs", [
    {"factor": 0.1, "patience": 0, "min_lr": 0.05},
    {"factor": 0.5, "patience": 0, "min_lr": [0.3, 0.001]},
    {"factor": 0.5, "patience": 1, "min_lr": [0.0, 0.02], "eps": 0.02, "cooldown": 1},
])
def test_reduce_on_plateau_floors_each_group_as_torch(kwargs):
    groups, lr = _two_groups(lambda a: Parameter(a, dtype=np.float64))
    opt = SGD(groups, lr=lr)
    sched = ReduceOnPlateau(opt, **kwargs)
    tgroups, _ = _two_groups(lambda a: torch.tensor(a, requires_grad=True))
    topt = torch.optim.SGD(tgroups, lr=lr)
    tsched = torch.optim.lr_scheduler.ReduceLROnPlateau(topt, **kwargs)
    for m in [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0]:
        sched.step(m)
        tsched.step(m)
        assert [g["lr"] for g in opt.param_groups] == pytest.approx([g["lr"] for g in topt.param_groups], rel=1e-12)
    opt.lr = opt.lr                          # the groups' scales hold their floors
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([g["lr"] for g in topt.param_groups], rel=1e-12)


def test_reduce_on_plateau_restores_the_groups_floors_and_checks_min_lr_lists():
    groups, lr = _two_groups(lambda a: Parameter(a, dtype=np.float64))
    sched = ReduceOnPlateau(SGD(groups, lr=lr), factor=0.1, patience=0, min_lr=0.05)
    for m in [1.0, 2.0, 3.0]:
        sched.step(m)
    saved = json.loads(json.dumps(sched.state_dict()))
    groups, lr = _two_groups(lambda a: Parameter(a, dtype=np.float64))
    opt = SGD(groups, lr=lr)
    ReduceOnPlateau(opt, factor=0.1, patience=0, min_lr=0.05).load_state_dict(saved)
    assert [g["lr"] for g in opt.param_groups] == pytest.approx([0.05, 0.05], rel=1e-12)
    with pytest.raises(ValueError, match="min_lr lists 3 values but the optimizer has 2 parameter groups"):
        ReduceOnPlateau(opt, min_lr=[0.1, 0.1, 0.1])


def test_reduce_on_plateau_state_dict():
    opt = _optimizer(0.1)
    sched = ReduceOnPlateau(opt, patience=0, factor=0.5)
    for m in [1.0, 1.0, 1.0]:
        sched.step(m)
    saved = sched.state_dict()
    opt2 = _optimizer(0.1)
    other = ReduceOnPlateau(opt2, patience=0, factor=0.5)
    other.load_state_dict(saved)
    assert opt2.lr == opt.lr == 0.025 and other.best == 1.0
    assert other(7) == opt2.lr


@pytest.mark.parametrize("make", [
    lambda: StepDecay(0.1, step_size=0),
    lambda: ExponentialDecay(-0.1, k=0.1),
    lambda: ExponentialDecay(0.1, k=-1.0),
    lambda: CosineDecay(0.1, total_steps=0),
    lambda: ReduceOnPlateau(_optimizer(), factor=1.0),
    lambda: ReduceOnPlateau(_optimizer(), mode="up"),
])
def test_bad_arguments(make):
    with pytest.raises(ValueError):
        make()


def test_negative_t():
    with pytest.raises(ValueError, match="t must be >= 0"):
        schedules.LinearDecay(0.1, 10)(-1)


def test_warmup_matches_torch_sequential_lr():
    """LinearLR from 0.1 of the peak over 5 steps, then cosine annealing over 10 (up to
    t = 15: after T, torch's cosine rises again while lamina's stays at final_lr)."""
    def make_torch(o):
        ramp = torch.optim.lr_scheduler.LinearLR(o, start_factor=0.1, end_factor=1.0, total_iters=5)
        cosine = torch.optim.lr_scheduler.CosineAnnealingLR(o, T_max=10, eta_min=0.01)
        return torch.optim.lr_scheduler.SequentialLR(o, [ramp, cosine], milestones=[5])
    warm = Warmup(CosineDecay(0.1, total_steps=10, final_lr=0.01), warmup_steps=5, start_lr=0.01)
    np.testing.assert_allclose(_our_lrs(warm, 15), _torch_lrs(make_torch, 15, 0.1), rtol=1e-9, atol=1e-15)
    assert warm(40) == 0.01


def test_warmup_formula_per_and_state():
    warm = Warmup(StepDecay(0.2, step_size=2, gamma=0.5), warmup_steps=4)
    assert [warm(t) for t in range(9)] == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2, 0.2, 0.1, 0.1, 0.05])
    assert warm.per == "epoch" and warm.lr0 == 0.2                     # StepDecay's period and peak
    opt = _optimizer()
    warm.attach(opt)
    for _ in range(3):
        warm.step()
    saved = json.loads(json.dumps(warm.state_dict()))
    again = Warmup(StepDecay(0.2, step_size=2, gamma=0.5), warmup_steps=4, optimizer=_optimizer())
    again.load_state_dict(saved)
    assert again.t == 3 and again.optimizer.lr == opt.lr == pytest.approx(0.15)
    assert [again.step() for _ in range(3)] == [warm.step() for _ in range(3)]


def test_warmup_bad_arguments():
    with pytest.raises(TypeError, match="Warmup: expected a Schedule"):
        Warmup(0.1, warmup_steps=5)
    with pytest.raises(ValueError, match="Warmup: CosineDecay is already attached"):
        Warmup(CosineDecay(0.1, 10, optimizer=_optimizer()), warmup_steps=5)
    with pytest.raises(ValueError, match="Warmup: invalid warmup_steps 0"):
        Warmup(CosineDecay(0.1, 10), warmup_steps=0)
    with pytest.raises(ValueError, match="Warmup: invalid start_lr -1"):
        Warmup(CosineDecay(0.1, 10), warmup_steps=2, start_lr=-1)
