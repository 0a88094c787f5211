"""PiecewiseConstant, LambdaSchedule, MultiplicativeSchedule, CyclicLR, ConstantFactor, LinearFactor,
SequentialSchedule and ChainedSchedule: torch's schedulers step for step, Keras' formula, resuming, errors,
and a Trainer stepping a CyclicLR per iteration."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from test_schedules import _optimizer, _our_lrs, _torch_lrs

import lamina
from lamina import nn, optim
from lamina.optim import CosineDecay, ExponentialDecay, LinearDecay, ReduceOnPlateau, StepDecay, Warmup
from lamina.optim.schedules.more import (
    ChainedSchedule,
    ConstantFactor,
    CyclicLR,
    LambdaSchedule,
    LinearFactor,
    MultiplicativeSchedule,
    PiecewiseConstant,
    SequentialSchedule,
)
from lamina.train import Trainer

lrs = torch.optim.lr_scheduler
STEPS = 50


def lambda_factor(t):
    return (1 + t) ** -0.5 * (1.5 + math.cos(t))


def multiplicative_factor(t):
    return 1.1 if t % 4 == 0 else 0.93


# (id, lamina schedule, the torch scheduler on optimizer o whose initial lr is 0.1)
CASES = [
    ("multistep-as-StepDecay",
     lambda: StepDecay(0.1, step_size=[30, 8, 8, 20], gamma=0.5),
     lambda o: lrs.MultiStepLR(o, milestones=[30, 8, 8, 20], gamma=0.5)),
    ("piecewise-as-multistep",
     lambda: PiecewiseConstant([4, 9, 19], [0.1, 0.05, 0.025, 0.0125]),
     lambda o: lrs.MultiStepLR(o, milestones=[5, 10, 20], gamma=0.5)),
    ("lambda",
     lambda: LambdaSchedule(0.1, lambda_factor),
     lambda o: lrs.LambdaLR(o, lambda_factor)),
    ("multiplicative",
     lambda: MultiplicativeSchedule(0.1, multiplicative_factor),
     lambda o: lrs.MultiplicativeLR(o, multiplicative_factor)),
    ("cyclic-triangular",
     lambda: CyclicLR(0.01, 0.1, step_size_up=4, step_size_down=7),
     lambda o: lrs.CyclicLR(o, 0.01, 0.1, step_size_up=4, step_size_down=7, cycle_momentum=False)),
    ("cyclic-triangular2",
     lambda: CyclicLR(0.02, 0.1, step_size_up=5, mode="triangular2"),
     lambda o: lrs.CyclicLR(o, 0.02, 0.1, step_size_up=5, mode="triangular2", cycle_momentum=False)),
    ("cyclic-exp-range",
     lambda: CyclicLR(0.001, 0.1, step_size_up=3, step_size_down=6, mode="exp_range", gamma=0.97),
     lambda o: lrs.CyclicLR(o, 0.001, 0.1, step_size_up=3, step_size_down=6, mode="exp_range", gamma=0.97,
                            cycle_momentum=False)),
    ("cyclic-sawtooth",
     lambda: CyclicLR(0.01, 0.1, step_size_up=6, step_size_down=0),
     lambda o: lrs.CyclicLR(o, 0.01, 0.1, step_size_up=6, step_size_down=0, cycle_momentum=False)),
    ("constant-factor",
     lambda: ConstantFactor(0.1, factor=0.25, total_steps=7),
     lambda o: lrs.ConstantLR(o, factor=0.25, total_iters=7)),
    ("linear-factor",
     lambda: LinearFactor(0.1, start_factor=0.2, end_factor=0.9, total_steps=12),
     lambda o: lrs.LinearLR(o, start_factor=0.2, end_factor=0.9, total_iters=12)),
    ("sequential-warmup-exponential",
     lambda: SequentialSchedule([LinearFactor(0.1, 0.1, 1.0, 5), ExponentialDecay(0.1, k=-math.log(0.9))], [5]),
     lambda o: lrs.SequentialLR(o, [lrs.LinearLR(o, 0.1, 1.0, total_iters=5), lrs.ExponentialLR(o, 0.9)], [5])),
    ("sequential-three",
     lambda: SequentialSchedule([ConstantFactor(0.1, 0.5, 3), StepDecay(0.1, 4, gamma=0.5, per="iteration"),
                                 CosineDecay(0.1, 30, final_lr=0.01)], [6, 20]),
     lambda o: lrs.SequentialLR(o, [lrs.ConstantLR(o, 0.5, total_iters=3), lrs.StepLR(o, 4, gamma=0.5),
                                    lrs.CosineAnnealingLR(o, T_max=30, eta_min=0.01)], [6, 20])),
    ("chained-constant-exponential",
     lambda: ChainedSchedule([ConstantFactor(0.1, 0.5, 4), ExponentialDecay(0.1, k=-math.log(0.95))]),
     lambda o: lrs.ChainedScheduler([lrs.ConstantLR(o, 0.5, total_iters=4), lrs.ExponentialLR(o, 0.95)])),
    ("chained-three",
     lambda: ChainedSchedule([LinearFactor(0.1, 0.1, 1.0, 10), StepDecay(0.1, 15, gamma=0.5, per="iteration"),
                              MultiplicativeSchedule(0.1, multiplicative_factor)]),
     lambda o: lrs.ChainedScheduler([lrs.LinearLR(o, 0.1, 1.0, total_iters=10), lrs.StepLR(o, 15, gamma=0.5),
                                     lrs.MultiplicativeLR(o, multiplicative_factor)])),
]
IDS = [case[0] for case in CASES]


@pytest.mark.parametrize("_id,make,make_torch", CASES, ids=IDS)
def test_matches_torch_step_for_step(_id, make, make_torch):
    np.testing.assert_allclose(_our_lrs(make(), STEPS), _torch_lrs(make_torch, STEPS, 0.1), rtol=1e-12, atol=1e-15)


@pytest.mark.parametrize("_id,make,make_torch", CASES, ids=IDS)
def test_resume_from_state_dict_equals_an_uninterrupted_run(_id, make, make_torch):
    whole = _our_lrs(make(), STEPS)
    first = make()
    before = _our_lrs(first, 20)
    saved = json.loads(json.dumps(first.state_dict()))
    resumed = make()
    opt = _optimizer(lr=7.0)
    resumed.attach(opt)
    resumed.load_state_dict(saved)
    assert opt.lr == before[-1]
    after = [resumed.step() for _ in range(STEPS - 20)]
    assert before + after == whole


# -- PiecewiseConstant ------------------------------------------------------------------
def keras_piecewise_constant(step, boundaries, values):
    """Keras' PiecewiseConstantDecay: values[i] for boundaries[i-1] < step <= boundaries[i]."""
    for boundary, value in zip(boundaries, values):
        if step <= boundary:
            return value
    return values[-1]


@pytest.mark.parametrize("boundaries,values", [
    ([10, 20], [1.0, 0.5, 0.1]),
    ([0, 3, 4, 17], [0.3, 0.2, 0.4, 0.05, 0.07]),   # a boundary at 0, rises as well as falls
    ([], [0.25]),
])
def test_piecewise_constant_is_keras_formula(boundaries, values):
    sched = PiecewiseConstant(boundaries, values)
    assert [sched(t) for t in range(30)] == [keras_piecewise_constant(t, boundaries, values) for t in range(30)]
    assert sched.lr0 == values[0] and sched.per == "iteration"


# -- LambdaSchedule, MultiplicativeSchedule ----------------------------------------------
def test_lambda_schedule_state_dict_saves_t_not_the_function():
    sched = LambdaSchedule(0.5, lambda t: 0.9**t, optimizer=_optimizer())
    for _ in range(6):
        sched.step()
    state = sched.state_dict()
    assert json.loads(json.dumps(state)) == {"schedule": "LambdaSchedule", "t": 6}
    assert sched.optimizer.lr == pytest.approx(0.5 * 0.9**6, rel=1e-14)
    assert repr(sched) == "LambdaSchedule(lr0=0.5, fn=<lambda>, per='iteration', t=6)"


def test_multiplicative_schedule_is_the_running_product_in_any_order():
    calls = []

    def factor(t):
        calls.append(t)
        return 0.8 + 0.05 * (t % 5)

    def product(t):
        return 0.2 * math.prod(0.8 + 0.05 * (s % 5) for s in range(1, t + 1))

    sched = MultiplicativeSchedule(0.2, factor, optimizer=_optimizer())
    for _ in range(STEPS):
        sched.step()
    assert len(calls) == STEPS                         # one factor per step, not a product from scratch each time
    assert sched.lr == pytest.approx(product(STEPS), rel=1e-13)
    assert [sched(t) for t in (9, 3, 40, 0, 12)] == pytest.approx([product(t) for t in (9, 3, 40, 0, 12)],
                                                                   rel=1e-13)


@pytest.mark.parametrize("cls", [LambdaSchedule, MultiplicativeSchedule])
def test_function_schedules_check_the_function(cls):
    name = cls.__name__
    with pytest.raises(TypeError, match=f"{name}: fn must be a callable"):
        cls(0.1, 0.5)
    bad = cls(0.1, lambda t: -0.5 if t == 3 else 1.0)
    assert bad(2) == pytest.approx(0.1)
    with pytest.raises(ValueError, match=rf"{name}: fn\(3\) returned -0.5 \(must be a finite number >= 0\)"):
        bad(3)
    with pytest.raises(ValueError, match=rf"{name}: fn\(1\) returned nan"):
        cls(0.1, lambda t: math.nan if t == 1 else 1.0, optimizer=_optimizer()).step()
    with pytest.raises(ValueError, match=rf"{name}: fn\(1\) returned 'x'"):
        cls(0.1, lambda t: "x")(1)


# -- CyclicLR ---------------------------------------------------------------------------
def test_cyclic_shape():
    """up 4, down 2: peaks at t = 4, 10, 16, ..., troughs at 0, 6, 12, ...; triangular2 halves
    each peak's height, exp_range shrinks it by gamma per step."""
    flat = CyclicLR(0.1, 0.5, step_size_up=4, step_size_down=2)
    assert [flat(t) for t in range(13)] == pytest.approx(
        [0.1, 0.2, 0.3, 0.4, 0.5, 0.3, 0.1, 0.2, 0.3, 0.4, 0.5, 0.3, 0.1], rel=1e-14)
    halving = CyclicLR(0.1, 0.5, step_size_up=4, step_size_down=2, mode="triangular2")
    assert [halving(4 + 6 * c) - 0.1 for c in range(4)] == pytest.approx([0.4, 0.2, 0.1, 0.05], rel=1e-13)
    assert [halving(6 * c) for c in range(4)] == pytest.approx([0.1] * 4, rel=1e-14)
    shrinking = CyclicLR(0.1, 0.5, step_size_up=4, step_size_down=2, mode="exp_range", gamma=0.9)
    assert [shrinking(t) for t in (4, 10, 5)] == pytest.approx([0.1 + 0.4 * 0.9**4, 0.1 + 0.4 * 0.9**10,
                                                               0.1 + 0.2 * 0.9**5], rel=1e-13)
    assert flat.position(17) == (2, 0.5) and flat.lr0 == 0.1 and flat.per == "iteration"


# -- ConstantFactor, LinearFactor -------------------------------------------------------
def test_factors_are_relative_to_lr0():
    constant = ConstantFactor(0.2, factor=0.1, total_steps=3)
    assert [constant(t) for t in range(6)] == pytest.approx([0.02, 0.02, 0.02, 0.2, 0.2, 0.2], rel=1e-14)
    linear = LinearFactor(0.1, start_factor=0.2, end_factor=0.9, total_steps=12)
    same = LinearDecay(0.1 * 0.2, 12, final_lr=0.1 * 0.9)
    assert [linear(t) for t in range(20)] == pytest.approx([same(t) for t in range(20)], rel=1e-13)
    assert linear.lr0 == 0.1 and same.lr0 == pytest.approx(0.02)   # the difference that matters when chained
    rising = LinearFactor(0.1, start_factor=0.0, end_factor=2.0, total_steps=4)
    assert [rising(t) for t in range(6)] == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2, 0.2], rel=1e-14)


# -- SequentialSchedule, ChainedSchedule -------------------------------------------------
def test_sequential_schedule_of_a_ramp_is_warmup():
    seq = SequentialSchedule([LinearDecay(0.01, 5, final_lr=0.1), CosineDecay(0.1, 10)], [5])
    warm = Warmup(CosineDecay(0.1, 10), warmup_steps=5, start_lr=0.01)
    assert [seq(t) for t in range(25)] == pytest.approx([warm(t) for t in range(25)], rel=1e-13, abs=1e-16)


def test_sequential_restarts_each_schedules_count_and_nests():
    inner = SequentialSchedule([ConstantFactor(1.0, 0.5, 2), StepDecay(1.0, 1, gamma=0.5, per="iteration")], [3])
    outer = SequentialSchedule([inner, PiecewiseConstant([1], [7.0, 3.0])], [6])
    assert [outer(t) for t in range(10)] == pytest.approx([0.5, 0.5, 1.0, 1.0, 0.5, 0.25, 7.0, 7.0, 3.0, 3.0])
    assert outer.lr0 == 1.0 and outer.per == "iteration"


def test_chained_schedule_multiplies_factors():
    cyclic = CyclicLR(0.01, 0.1, step_size_up=5)
    step = StepDecay(2.0, 8, gamma=0.5, per="iteration")        # lr0 2: contributes step(t) / 2
    chain = ChainedSchedule([cyclic, step])
    assert [chain(t) for t in range(30)] == pytest.approx([cyclic(t) * 0.5 ** (t // 8) for t in range(30)],
                                                          rel=1e-14)
    assert chain.lr0 == 0.01
    epochs = ChainedSchedule([StepDecay(0.1, 2), ExponentialDecay(0.1, 0.1, per="epoch")])
    assert epochs.per == "epoch"


def test_composites_refuse_a_state_dict_of_other_schedules():
    chain = ChainedSchedule([ConstantFactor(0.1, 0.5, 4), LinearFactor(0.1, 0.5, 1.0, 4)])
    chain.step()
    state = json.loads(json.dumps(chain.state_dict()))
    assert state == {"schedule": "ChainedSchedule", "t": 1, "schedules": ["ConstantFactor", "LinearFactor"]}
    other = ChainedSchedule([ConstantFactor(0.1, 0.5, 4), ExponentialDecay(0.1, 0.1)])
    with pytest.raises(ValueError, match="ChainedSchedule.load_state_dict: the state dict is from one of"):
        other.load_state_dict(state)
    with pytest.raises(ValueError, match="SequentialSchedule.load_state_dict: the state dict is from a Chained"):
        SequentialSchedule([ConstantFactor(0.1, 0.5, 4), LinearFactor(0.1, 0.5, 1.0, 4)], [3]).load_state_dict(state)


# -- arguments ----------------------------------------------------------------------------
@pytest.mark.parametrize("make,error,message", [
    (lambda: PiecewiseConstant([5, 5], [1.0, 0.5, 0.1]), ValueError,
     r"PiecewiseConstant: boundaries \[5, 5\] must be strictly increasing"),
    (lambda: PiecewiseConstant([5, 10], [1.0, 0.5]), ValueError,
     "PiecewiseConstant: 2 boundaries need 3 values, got 2"),
    (lambda: PiecewiseConstant([-1], [1.0, 0.5]), ValueError, "PiecewiseConstant: invalid boundary -1"),
    (lambda: PiecewiseConstant([2.5], [1.0, 0.5]), ValueError, "PiecewiseConstant: invalid boundary 2.5"),
    (lambda: PiecewiseConstant([3], [1.0, -0.5]), ValueError, "PiecewiseConstant: invalid value -0.5"),
    (lambda: LambdaSchedule(-0.1, abs), ValueError, "LambdaSchedule: invalid lr0 -0.1"),
    (lambda: MultiplicativeSchedule(math.inf, abs), ValueError, "MultiplicativeSchedule: invalid lr0 inf"),
    (lambda: CyclicLR(-0.1, 0.1, 4), ValueError, "CyclicLR: invalid base_lr -0.1"),
    (lambda: CyclicLR(0.2, 0.1, 4), ValueError, "CyclicLR: max_lr 0.1 is below base_lr 0.2"),
    (lambda: CyclicLR(0.01, 0.1, 0), ValueError, r"CyclicLR: invalid step_size_up 0 \(must be > 0\)"),
    (lambda: CyclicLR(0.01, 0.1, 4, step_size_down=-2), ValueError, "CyclicLR: invalid step_size_down -2"),
    (lambda: CyclicLR(0.01, 0.1, 4, mode="triangle"), ValueError, "CyclicLR: invalid mode 'triangle'"),
    (lambda: CyclicLR(0.01, 0.1, 4, mode="exp_range", gamma=1.5), ValueError,
     r"CyclicLR: invalid gamma 1.5 \(must be in \(0, 1\]\)"),
    (lambda: CyclicLR(0.01, 0.1, 4, gamma=0.0), ValueError, "CyclicLR: invalid gamma 0.0"),
    (lambda: ConstantFactor(0.1, -0.5, 3), ValueError, "ConstantFactor: invalid factor -0.5"),
    (lambda: ConstantFactor(0.1, 0.5, 0), ValueError, "ConstantFactor: invalid total_steps 0"),
    (lambda: LinearFactor(0.1, -1.0, 1.0, 5), ValueError, "LinearFactor: invalid start_factor -1.0"),
    (lambda: LinearFactor(0.1, 0.1, math.nan, 5), ValueError, "LinearFactor: invalid end_factor nan"),
    (lambda: LinearFactor(0.1, 0.1, 1.0, -5), ValueError, "LinearFactor: invalid total_steps -5"),
    (lambda: SequentialSchedule(CosineDecay(0.1, 5), []), TypeError,
     "SequentialSchedule: expected a non-empty list of schedules"),
    (lambda: SequentialSchedule([], []), TypeError, "SequentialSchedule: expected a non-empty list"),
    (lambda: SequentialSchedule([CosineDecay(0.1, 5), 0.1], [3]), TypeError,
     "SequentialSchedule: schedule 1 is a float, not a Schedule"),
    (lambda: SequentialSchedule([CosineDecay(0.1, 5), CosineDecay(0.1, 5)], []), ValueError,
     "SequentialSchedule: 2 schedules need 1 milestones, got 0"),
    (lambda: SequentialSchedule([CosineDecay(0.1, 5), CosineDecay(0.1, 5)], [0]), ValueError,
     "SequentialSchedule: invalid milestone 0"),
    (lambda: SequentialSchedule([CosineDecay(0.1, 5)] * 3, [4, 4]), ValueError,
     r"SequentialSchedule: milestones \[4, 4\] must be strictly increasing"),
    (lambda: SequentialSchedule([CosineDecay(0.1, 5), StepDecay(0.1, 2)], [3]), ValueError,
     r"SequentialSchedule: the schedules are stepped per different periods \(CosineDecay: 'iteration', "
     r"StepDecay: 'epoch'\)"),
    (lambda: ChainedSchedule([CosineDecay(0.1, 5), ReduceOnPlateau(_optimizer())]), TypeError,
     "ChainedSchedule: schedule 1 is a ReduceOnPlateau, not a Schedule"),
    (lambda: ChainedSchedule([CosineDecay(0.1, 5, optimizer=_optimizer())]), ValueError,
     "ChainedSchedule: schedule 0 \\(CosineDecay\\) is already attached to an optimizer"),
    (lambda: ChainedSchedule([CosineDecay(0.1, 5), LinearFactor(0.0, 0.5, 1.0, 5)]), ValueError,
     r"ChainedSchedule: schedule 1 \(LinearFactor\) has lr0 0.0; its factor schedule\(t\) / lr0 needs lr0 > 0"),
])
def test_bad_arguments(make, error, message):
    with pytest.raises(error, match=message):
        make()


def test_negative_t():
    for _id, make, _ in CASES:
        with pytest.raises(ValueError, match="t must be >= 0"):
            make()(-1)


# -- in a Trainer ------------------------------------------------------------------------
class RecordingSGD(optim.SGD):
    """SGD that records the learning rate each of its steps uses."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.used: list[float] = []

    def step(self, closure=None):
        self.used.append(self.param_groups[0]["lr"])
        return super().step(closure)


def test_trainer_steps_a_cyclic_schedule_every_iteration():
    """48 samples in batches of 8 for 3 epochs: 18 updates along a triangle up 4 steps, down 2."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((48, 5)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64) + (x[:, 1] > 0)
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(3, activation="softmax"))
    opt = RecordingSGD(model, lr=1.0)
    schedule = CyclicLR(0.01, 0.05, step_size_up=4, step_size_down=2, optimizer=opt)
    history = Trainer(model, "categorical_cross_entropy", opt, metrics=(), schedule=schedule, verbose=0).fit(
        (x, y), epochs=3, batch_size=8, seed=0)
    triangle = [0.01 + 0.04 * ((t % 6) / 4 if t % 6 <= 4 else (6 - t % 6) / 2) for t in range(18)]
    assert opt.used == pytest.approx(triangle, rel=1e-12)
    assert schedule.t == 18 and opt.lr == pytest.approx(0.01)          # the next step would start a new cycle
    assert len(history.iteration["loss"]) == 18 and np.isfinite(history.iteration["loss"]).all()
