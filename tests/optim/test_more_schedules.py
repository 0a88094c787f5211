"""PolynomialDecay, CosineDecayRestarts and OneCycle: their formulas, torch's schedulers, state."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from test_schedules import TS, _optimizer, _our_lrs, _torch_lrs

import lamina
from lamina.optim import (
    CosineDecay,
    CosineDecayRestarts,
    LinearDecay,
    OneCycle,
    PolynomialDecay,
    Schedule,
    Warmup,
    schedules,
)


def keras_cosine_decay_restarts(lr0, first, t_mul, m_mul, alpha, step):
    """Keras' CosineDecayRestarts, transcribed (its closed form with logarithms)."""
    fraction = step / first
    if t_mul == 1.0:
        i = math.floor(fraction)
        fraction -= i
    else:
        i = math.floor(math.log(1.0 - fraction * (1.0 - t_mul)) / math.log(t_mul))
        done = (1.0 - t_mul**i) / (1.0 - t_mul)
        fraction = (fraction - done) / t_mul**i
    cosine = 0.5 * m_mul**i * (1.0 + math.cos(math.pi * fraction))
    return lr0 * ((1.0 - alpha) * cosine + alpha)


def one_cycle(t, max_lr, total, pct, div, final_div, anneal):
    """torch's OneCycleLR (two phases), written out."""
    a, b = max_lr / div, max_lr
    c = a / final_div
    peak = pct * total - 1

    def f(x, y, frac):
        if anneal == "cos":
            return y + (x - y) / 2 * (math.cos(math.pi * frac) + 1)
        return (y - x) * frac + x

    if t <= peak:
        return f(a, b, t / peak)
    return f(b, c, (t - peak) / (total - 1 - peak))


# -- formulas --------------------------------------------------------------------------
@pytest.mark.parametrize("schedule,formula", [
    (PolynomialDecay(0.1, total_steps=20), lambda t: 0.1 * (1 - min(t, 20) / 20)),
    (PolynomialDecay(0.1, total_steps=20, power=2.0), lambda t: 0.1 * (1 - min(t, 20) / 20) ** 2),
    (PolynomialDecay(0.1, total_steps=10, final_lr=0.02, power=0.5),
     lambda t: (0.1 - 0.02) * (1 - min(t, 10) / 10) ** 0.5 + 0.02),
    (CosineDecayRestarts(0.1, first_period=4),
     lambda t: 0.5 * 0.1 * (1 + math.cos(math.pi * (t % 4) / 4))),
    (CosineDecayRestarts(0.1, first_period=3, t_mult=2, min_lr=0.01),
     lambda t: keras_cosine_decay_restarts(0.1, 3, 2.0, 1.0, 0.1, t)),
    (CosineDecayRestarts(0.2, first_period=5, t_mult=1.5, m_mul=0.5, min_lr=0.02),
     lambda t: keras_cosine_decay_restarts(0.2, 5, 1.5, 0.5, 0.1, t)),
    (CosineDecayRestarts(0.2, first_period=4, m_mul=0.8),
     lambda t: keras_cosine_decay_restarts(0.2, 4, 1.0, 0.8, 0.0, t)),
    (OneCycle(0.1, total_steps=60), lambda t: one_cycle(min(t, 59), 0.1, 60, 0.3, 25.0, 1e4, "cos")),
    (OneCycle(0.5, total_steps=40, pct_start=0.25, div_factor=10, final_div_factor=100, anneal="linear"),
     lambda t: one_cycle(min(t, 39), 0.5, 40, 0.25, 10, 100, "linear")),
], ids=["poly-linear", "poly-square", "poly-sqrt-final", "restarts", "restarts-tmult2", "restarts-tmult1.5-mmul",
        "restarts-mmul", "onecycle-cos", "onecycle-linear"])
def test_formula(schedule, formula):
    for t in [*TS, 3, 4, 11, 14, 21, 33, 39]:
        assert schedule(t) == pytest.approx(formula(t), rel=1e-12, abs=1e-15), t


def test_polynomial_values():
    poly = PolynomialDecay(1.0, total_steps=10, final_lr=0.1, power=2.0)
    assert poly(0) == 1.0 and poly(5) == pytest.approx(0.1 + 0.9 * 0.25)
    assert poly(10) == pytest.approx(0.1) and poly(25) == pytest.approx(0.1)   # constant at final_lr after T
    linear = LinearDecay(0.3, 12, final_lr=0.03)
    assert [PolynomialDecay(0.3, 12, final_lr=0.03)(t) for t in range(15)] == pytest.approx(
        [linear(t) for t in range(15)], rel=1e-14)


def test_restart_points_and_peaks():
    """t_mult = 2, first period 3: restarts at t = 3, 9, 21, 45; peaks shrink by m_mul each time."""
    sched = CosineDecayRestarts(1.0, first_period=3, t_mult=2, m_mul=0.5, min_lr=0.1)
    assert [sched.restart(t) for t in (0, 2, 3, 8, 9, 20, 21, 45)] == [
        (0, 0, 3), (0, 2, 3), (1, 0, 6), (1, 5, 6), (2, 0, 12), (2, 11, 12), (3, 0, 24), (4, 0, 48)]
    assert sched(0) == 1.0
    assert sched(3) == pytest.approx(0.1 + 0.9 * 0.5) and sched(9) == pytest.approx(0.1 + 0.9 * 0.25)
    assert sched(21) == pytest.approx(0.1 + 0.9 * 0.125)
    assert min(sched(t) for t in range(100)) >= 0.1
    same = CosineDecayRestarts(0.4, first_period=5)
    assert [same(t) for t in (0, 5, 10, 1000)] == [0.4] * 4 and same(1003) == pytest.approx(same(3))
    fractional = CosineDecayRestarts(1.0, first_period=2, t_mult=1.5)   # periods 2, 3, 4.5, 6.75: restarts at 2, 5, 9.5
    assert fractional.restart(9) == (2, 4, 4.5) and fractional.restart(10) == (3, 0.5, 6.75)


def test_one_cycle_shape():
    sched = OneCycle(0.1, total_steps=100, pct_start=0.3)
    lrs = [sched(t) for t in range(120)]
    assert sched.lr0 == pytest.approx(lrs[0]) and lrs[0] == pytest.approx(0.1 / 25)   # max_lr / div_factor
    assert max(lrs) == pytest.approx(0.1) and int(np.argmax(lrs)) == 29   # peak at pct_start * T - 1
    assert lrs[99] == pytest.approx(0.1 / 25 / 1e4)                       # the end at T - 1...
    assert lrs[99:] == [lrs[99]] * 21                                     # ...and constant after
    assert all(a < b for a, b in zip(lrs[:29], lrs[1:30]))
    assert all(a > b for a, b in zip(lrs[29:99], lrs[30:100]))


def test_one_cycle_short_runs():
    """pct_start * T - 1 <= 0: no climb (torch divides by zero when it is exactly 0)."""
    assert OneCycle(1.0, total_steps=10, pct_start=0.1)(0) == 1.0   # the peak is t = 0
    tiny = OneCycle(1.0, total_steps=1)
    assert tiny(0) == pytest.approx(1e-4 / 25) and tiny(5) == tiny(0)
    flat = OneCycle(1.0, total_steps=10, pct_start=1.0, anneal="linear")
    assert flat(9) == 1.0 and flat(50) == 1.0


# -- against torch ----------------------------------------------------------------------
@pytest.mark.parametrize("ours,make_torch,steps", [
    (PolynomialDecay(0.1, total_steps=12),
     lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=12, power=1.0), 16),
    (PolynomialDecay(0.1, total_steps=12, power=2.5),
     lambda o: torch.optim.lr_scheduler.PolynomialLR(o, total_iters=12, power=2.5), 16),
    (CosineDecayRestarts(0.1, first_period=5),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=5), 40),
    (CosineDecayRestarts(0.1, first_period=3, t_mult=2, min_lr=0.01),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=3, T_mult=2, eta_min=0.01), 60),
    (CosineDecayRestarts(0.1, first_period=2, t_mult=3, min_lr=0.001),
     lambda o: torch.optim.lr_scheduler.CosineAnnealingWarmRestarts(o, T_0=2, T_mult=3, eta_min=0.001), 60),
    (OneCycle(0.1, total_steps=50),
     lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=50, cycle_momentum=False), 49),
    (OneCycle(0.1, total_steps=50, anneal="linear"),
     lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.1, total_steps=50, anneal_strategy="linear",
                                                   cycle_momentum=False), 49),
    (OneCycle(0.3, total_steps=37, pct_start=0.45, div_factor=10, final_div_factor=50),
     lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.3, total_steps=37, pct_start=0.45, div_factor=10,
                                                   final_div_factor=50, cycle_momentum=False), 36),
    (OneCycle(0.3, total_steps=37, pct_start=0.2, div_factor=5, final_div_factor=1e3, anneal="linear"),
     lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.3, total_steps=37, pct_start=0.2, div_factor=5,
                                                   final_div_factor=1e3, anneal_strategy="linear",
                                                   cycle_momentum=False), 36),
    (OneCycle(0.2, total_steps=5),
     lambda o: torch.optim.lr_scheduler.OneCycleLR(o, max_lr=0.2, total_steps=5, cycle_momentum=False), 4),
], ids=["poly", "poly-2.5", "restarts", "restarts-tmult2", "restarts-tmult3", "onecycle-cos", "onecycle-linear",
        "onecycle-cos-args", "onecycle-linear-args", "onecycle-short"])
def test_bound_schedule_matches_torch(ours, make_torch, steps):
    """The learning rate of every step of the run (OneCycle: all total_steps of them)."""
    np.testing.assert_allclose(_our_lrs(ours, steps), _torch_lrs(make_torch, steps, 0.1), rtol=1e-9, atol=1e-15)


def test_warmup_into_one_cycle_is_continuous():
    """lr0 is OneCycle's first learning rate: a warm-up climbs to it, then the cycle goes on from there."""
    warm = Warmup(OneCycle(0.1, total_steps=50), warmup_steps=10)
    lrs = [warm(t) for t in range(60)]
    assert lrs[10] == pytest.approx(0.1 / 25) and lrs[9] < lrs[10] < lrs[11]
    assert max(lrs) == pytest.approx(0.1)


# -- binding, state, arguments ----------------------------------------------------------
@pytest.mark.parametrize("make", [
    lambda opt=None: PolynomialDecay(0.2, total_steps=12, final_lr=0.01, power=2.0, optimizer=opt),
    lambda opt=None: CosineDecayRestarts(0.2, first_period=3, t_mult=2, m_mul=0.7, min_lr=0.01, optimizer=opt),
    lambda opt=None: OneCycle(0.2, total_steps=15, pct_start=0.4, anneal="linear", optimizer=opt),
], ids=["polynomial", "restarts", "onecycle"])
def test_optimizer_argument_and_state_dict(make):
    opt = _optimizer()
    sched = make(opt)
    assert isinstance(sched, Schedule) and sched.per == "iteration"
    assert opt.lr == sched(0) == sched.lr0
    for _ in range(7):
        sched.step()
    assert opt.lr == pytest.approx(sched(7)) and sched.lr == opt.lr
    saved = json.loads(json.dumps(sched.state_dict()))
    opt2 = _optimizer()
    resumed = make(opt2)
    resumed.load_state_dict(saved)
    assert resumed.t == 7 and opt2.lr == opt.lr
    assert [resumed.step() for _ in range(10)] == [sched.step() for _ in range(10)]
    with pytest.raises(ValueError, match="CosineDecay.load_state_dict: the state dict is from a"):
        CosineDecay(0.1, 10).load_state_dict(saved)


def test_per_epoch_and_repr():
    assert OneCycle(0.1, 10, per="epoch").per == "epoch"
    assert CosineDecayRestarts(0.1, 10).per == "iteration"
    assert repr(PolynomialDecay(0.1, 10)) == "PolynomialDecay(lr0=0.1, per='iteration', t=0)"
    assert repr(OneCycle(0.1, 10)) == "OneCycle(max_lr=0.1, total_steps=10, pct_start=0.3, anneal='cos', " \
                                      "per='iteration', t=0)"


def test_exported():
    for name in ("PolynomialDecay", "CosineDecayRestarts", "OneCycle"):
        assert getattr(lamina.optim, name) is getattr(schedules, name)
        assert name in lamina.optim.__all__


@pytest.mark.parametrize("make,message", [
    (lambda: PolynomialDecay(0.1, total_steps=0), "PolynomialDecay: invalid total_steps 0"),
    (lambda: PolynomialDecay(0.1, total_steps=10, power=0.0), "PolynomialDecay: invalid power 0.0"),
    (lambda: PolynomialDecay(0.1, total_steps=10, final_lr=-0.1), "PolynomialDecay: invalid final_lr -0.1"),
    (lambda: PolynomialDecay(-0.1, total_steps=10), "PolynomialDecay: invalid lr0 -0.1"),
    (lambda: CosineDecayRestarts(0.1, first_period=0), "CosineDecayRestarts: invalid first_period 0"),
    (lambda: CosineDecayRestarts(0.1, 10, t_mult=0.5), r"CosineDecayRestarts: invalid t_mult 0.5 \(must be >= 1\)"),
    (lambda: CosineDecayRestarts(0.1, 10, m_mul=-1.0), "CosineDecayRestarts: invalid m_mul -1.0"),
    (lambda: CosineDecayRestarts(0.1, 10, min_lr=float("nan")), "CosineDecayRestarts: invalid min_lr nan"),
    (lambda: OneCycle(-0.1, 10), "OneCycle: invalid max_lr -0.1"),
    (lambda: OneCycle(0.1, 0), "OneCycle: invalid total_steps 0"),
    (lambda: OneCycle(0.1, 10, pct_start=1.5), r"OneCycle: invalid pct_start 1.5 \(must be in \[0, 1\]\)"),
    (lambda: OneCycle(0.1, 10, pct_start=-0.1), "OneCycle: invalid pct_start -0.1"),
    (lambda: OneCycle(0.1, 10, div_factor=0), "OneCycle: invalid div_factor 0"),
    (lambda: OneCycle(0.1, 10, final_div_factor=-1.0), "OneCycle: invalid final_div_factor -1.0"),
    (lambda: OneCycle(0.1, 10, anneal="exp"), "OneCycle: invalid anneal 'exp'"),
])
def test_bad_arguments(make, message):
    with pytest.raises(ValueError, match=message):
        make()


def test_negative_t():
    for sched in (PolynomialDecay(0.1, 10), CosineDecayRestarts(0.1, 10, t_mult=2), OneCycle(0.1, 10)):
        with pytest.raises(ValueError, match="t must be >= 0"):
            sched(-1)
