r"""More schedules, the ones PyTorch and Keras users reach for beyond the course notes:
piecewise-constant values (Keras' ``PiecewiseConstantDecay``), a function of t given by the
user, applied to :math:`\alpha_0` or multiplied in step by step (``LambdaLR``,
``MultiplicativeLR``), cyclical learning rates (``CyclicLR``), a constant or linearly
changing factor of :math:`\alpha_0` (``ConstantLR``, ``LinearLR``), and schedules run one
after another or multiplied together (``SequentialLR``, ``ChainedScheduler``).

``torch``'s ``MultiStepLR`` is :class:`~lamina.optim.schedules.StepDecay` given a list of
milestones. Like every :class:`Schedule` these are formulas of t: resuming from
``state_dict()`` (which saves t) gives the same learning rates as a run never interrupted.
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

from lamina.optim.schedules.base import Schedule, _check


def _finite_factor(cls: str, fn_name: str, t: int, value: Any) -> float:
    """``value`` (what ``fn(t)`` returned) as a float, or a ValueError naming ``cls``."""
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value) and value >= 0
    if not ok:
        raise ValueError(f"{cls}: {fn_name}({t}) returned {value!r} (must be a finite number >= 0)")
    return float(value)


def _callable(cls: str, fn: Any) -> Callable[[int], float]:
    if not callable(fn):
        raise TypeError(f"{cls}: fn must be a callable fn(t) -> factor, got {type(fn).__name__}")
    return fn


class PiecewiseConstant(Schedule):
    r"""Constant learning rates between boundaries (Keras' ``PiecewiseConstantDecay``).
    With boundaries :math:`b_0 < b_1 < \dots < b_{n-1}` and values :math:`v_0, \dots, v_n`::

        alpha_t = v_0    for t <= b_0
        alpha_t = v_i    for b_{i-1} < t <= b_i
        alpha_t = v_n    for t > b_{n-1}

    so step :math:`b_i` still runs at :math:`v_i` and the new value starts at
    :math:`b_i + 1` (``MultiStepLR`` with milestones :math:`b_i + 1` when the values fall
    by a constant factor). :math:`\alpha_0` is :math:`v_0`; the values need not decrease.
    """

    def __init__(self, boundaries: Sequence[int], values: Sequence[float], per: str | None = None,
                 optimizer: Any = None):
        boundaries, values = list(boundaries), list(values)
        for b in boundaries:
            if isinstance(b, bool) or not isinstance(b, numbers.Integral) or b < 0:
                raise ValueError(f"PiecewiseConstant: invalid boundary {b!r} (boundaries are steps: integers >= 0)")
        if any(later <= earlier for earlier, later in zip(boundaries, boundaries[1:])):
            raise ValueError(f"PiecewiseConstant: boundaries {boundaries} must be strictly increasing")
        if len(values) != len(boundaries) + 1:
            raise ValueError(f"PiecewiseConstant: {len(boundaries)} boundaries need {len(boundaries) + 1} values, "
                             f"got {len(values)}")
        for v in values:
            _check("PiecewiseConstant", "value", v)
        self.boundaries = [int(b) for b in boundaries]
        self.values = [float(v) for v in values]
        super().__init__(self.values[0], per, optimizer)

    def __call__(self, t: int) -> float:
        return self.values[bisect.bisect_left(self.boundaries, self._t(t))]

    def __repr__(self) -> str:
        return (f"PiecewiseConstant(boundaries={self.boundaries}, values={self.values}, per={self.per!r}, "
                f"t={self.t})")


class LambdaSchedule(Schedule):
    r""":math:`\alpha_t = \alpha_0 \, f(t)` for a function ``fn`` = f of the step t
    (``torch``'s ``LambdaLR``); f(t) must be a finite number >= 0.

    ``fn`` is code, not data: :meth:`state_dict` saves t only, so a resumed run builds the
    schedule again with the same ``fn`` before ``load_state_dict``. ``fn`` should depend
    on t alone (the same t gives the same factor).
    """

    def __init__(self, lr0: float, fn: Callable[[int], float], per: str | None = None, optimizer: Any = None):
        self.fn = _callable("LambdaSchedule", fn)
        super().__init__(lr0, per, optimizer)

    def __call__(self, t: int) -> float:
        t = self._t(t)
        return self.lr0 * _finite_factor("LambdaSchedule", "fn", t, self.fn(t))

    def __repr__(self) -> str:
        name = getattr(self.fn, "__name__", type(self.fn).__name__)
        return f"LambdaSchedule(lr0={self.lr0}, fn={name}, per={self.per!r}, t={self.t})"


class MultiplicativeSchedule(Schedule):
    r"""Each step multiplies the learning rate by f(t) (``torch``'s ``MultiplicativeLR``)::

        alpha_t = alpha_{t-1} f(t) = alpha_0 f(1) f(2) ... f(t)

    f(t) must be a finite number >= 0 and depend on t alone. The running product is kept,
    so stepping through t costs one call of ``fn`` per step; going back to an earlier t
    recomputes it from t = 0. ``state_dict`` saves t only (see :class:`LambdaSchedule`).
    """

    def __init__(self, lr0: float, fn: Callable[[int], float], per: str | None = None, optimizer: Any = None):
        self.fn = _callable("MultiplicativeSchedule", fn)
        _check("MultiplicativeSchedule", "lr0", lr0)
        self._last = (0, float(lr0))  # (t, alpha_t) of the latest call: where the product goes on from
        super().__init__(lr0, per, optimizer)

    def __call__(self, t: int) -> float:
        t = self._t(t)
        s, lr = self._last if self._last[0] <= t else (0, self.lr0)
        while s < t:
            s += 1
            lr *= _finite_factor("MultiplicativeSchedule", "fn", s, self.fn(s))
        self._last = (t, lr)
        return lr

    def __repr__(self) -> str:
        name = getattr(self.fn, "__name__", type(self.fn).__name__)
        return f"MultiplicativeSchedule(lr0={self.lr0}, fn={name}, per={self.per!r}, t={self.t})"


class CyclicLR(Schedule):
    r"""Cyclical learning rates (Smith, "Cyclical Learning Rates for Training Neural
    Networks", 2017): the learning rate climbs linearly from ``base_lr`` to ``max_lr`` over
    U = ``step_size_up`` steps, falls back over D = ``step_size_down`` steps (default U),
    and starts again. With T = U + D, c = floor(t / T) the cycle (from 0) and s = t - cT
    the step within it::

        x(t)    = s / U              for s <= U       (the rise: 0 -> 1)
        x(t)    = (T - s) / D        for s > U        (the fall: 1 -> 0)
        alpha_t = base_lr + (max_lr - base_lr) x(t) a(t)

    where the amplitude a(t) is 1 (``mode='triangular'``), halves every cycle, 2^-c
    (``'triangular2'``), or decays every step, gamma^t (``'exp_range'``; ``gamma`` is used
    by this mode only). This is ``torch``'s ``CyclicLR`` with ``cycle_momentum=False``:
    only the learning rate cycles, the optimizer's momentum stays as it is; its custom
    ``scale_fn`` is not offered (:class:`ChainedSchedule` multiplies in any other factor).
    Stepped per iteration by default; Smith suggests U of 2 to 10 epochs' iterations.
    """

    MODES = ("triangular", "triangular2", "exp_range")

    def __init__(self, base_lr: float, max_lr: float, step_size_up: float, step_size_down: float | None = None,
                 mode: str = "triangular", gamma: float = 1.0, per: str | None = None, optimizer: Any = None):
        _check("CyclicLR", "base_lr", base_lr)
        _check("CyclicLR", "max_lr", max_lr)
        if max_lr < base_lr:
            raise ValueError(f"CyclicLR: max_lr {max_lr!r} is below base_lr {base_lr!r}")
        _check("CyclicLR", "step_size_up", step_size_up, strict=True)
        step_size_down = step_size_up if step_size_down is None else step_size_down
        _check("CyclicLR", "step_size_down", step_size_down)
        if mode not in self.MODES:
            raise ValueError(f"CyclicLR: invalid mode {mode!r} (must be 'triangular', 'triangular2' or 'exp_range')")
        _check("CyclicLR", "gamma", gamma, strict=True)
        if gamma > 1:
            raise ValueError(f"CyclicLR: invalid gamma {gamma!r} (must be in (0, 1])")
        self.base_lr, self.max_lr = float(base_lr), float(max_lr)
        self.step_size_up, self.step_size_down = step_size_up, step_size_down
        self.mode, self.gamma = mode, float(gamma)
        super().__init__(base_lr, per, optimizer)

    def position(self, t: int) -> tuple[int, float]:
        """(c, x): the cycle that step t falls in and how far up the triangle it is (0 to 1)."""
        t = self._t(t)
        up, period = self.step_size_up, self.step_size_up + self.step_size_down
        cycle = int(t // period)
        s = t - cycle * period
        return cycle, (s / up if s <= up else (period - s) / self.step_size_down)

    def __call__(self, t: int) -> float:
        cycle, x = self.position(t)
        if self.mode == "triangular2":
            amplitude = 0.5**cycle
        elif self.mode == "exp_range":
            amplitude = self.gamma**t
        else:
            amplitude = 1.0
        return self.base_lr + (self.max_lr - self.base_lr) * x * amplitude

    def __repr__(self) -> str:
        return (f"CyclicLR(base_lr={self.base_lr}, max_lr={self.max_lr}, step_size_up={self.step_size_up}, "
                f"step_size_down={self.step_size_down}, mode={self.mode!r}, per={self.per!r}, t={self.t})")


class ConstantFactor(Schedule):
    r""":math:`\alpha_0` times ``factor`` for the first T = ``total_steps`` steps, then
    :math:`\alpha_0` (``torch``'s ``ConstantLR``)::

        alpha_t = alpha_0 * factor     for t < T
        alpha_t = alpha_0              for t >= T

    :math:`\alpha_0` is the base rate, not the rate at t = 0: in a :class:`ChainedSchedule`
    this schedule contributes the factor alone.
    """

    def __init__(self, lr0: float, factor: float, total_steps: int, per: str | None = None,
                 optimizer: Any = None):
        _check("ConstantFactor", "factor", factor)
        _check("ConstantFactor", "total_steps", total_steps, strict=True)
        self.factor = float(factor)
        self.total_steps = int(total_steps)
        super().__init__(lr0, per, optimizer)

    def __call__(self, t: int) -> float:
        return self.lr0 * (self.factor if self._t(t) < self.total_steps else 1.0)


class LinearFactor(Schedule):
    r""":math:`\alpha_0` times a factor going linearly from ``start_factor`` to
    ``end_factor`` over T = ``total_steps`` steps, then constant (``torch``'s ``LinearLR``)::

        alpha_t = alpha_0 * (start_factor + (end_factor - start_factor) * min(t, T) / T)

    The same rates as ``LinearDecay(alpha_0 * start_factor, T, final_lr=alpha_0 * end_factor)``,
    but :math:`\alpha_0` stays the base rate: in a :class:`ChainedSchedule` this schedule
    contributes the factor alone, and a :class:`SequentialSchedule` of it and another
    schedule with the same :math:`\alpha_0` is ``torch``'s warm-up idiom (``LinearLR`` then
    the schedule, in ``SequentialLR``; :class:`~lamina.optim.schedules.Warmup` does the same).
    """

    def __init__(self, lr0: float, start_factor: float, end_factor: float, total_steps: int,
                 per: str | None = None, optimizer: Any = None):
        _check("LinearFactor", "start_factor", start_factor)
        _check("LinearFactor", "end_factor", end_factor)
        _check("LinearFactor", "total_steps", total_steps, strict=True)
        self.start_factor, self.end_factor = float(start_factor), float(end_factor)
        self.total_steps = int(total_steps)
        super().__init__(lr0, per, optimizer)

    def __call__(self, t: int) -> float:
        frac = min(self._t(t), self.total_steps) / self.total_steps
        return self.lr0 * (self.start_factor + (self.end_factor - self.start_factor) * frac)


def _parts(cls: str, schedules: Any) -> list[Schedule]:
    """The schedules a composite is made of, checked: a non-empty sequence of unattached
    :class:`Schedule` objects stepped per the same period."""
    if isinstance(schedules, Schedule) or not isinstance(schedules, Sequence) or len(schedules) == 0:
        raise TypeError(f"{cls}: expected a non-empty list of schedules, got {schedules!r}")
    for i, part in enumerate(schedules):
        if not isinstance(part, Schedule):
            raise TypeError(f"{cls}: schedule {i} is a {type(part).__name__}, not a Schedule (ReduceOnPlateau "
                            "depends on the metrics, not on t, and cannot be composed)")
        if part.optimizer is not None:
            raise ValueError(f"{cls}: schedule {i} ({type(part).__name__}) is already attached to an optimizer; "
                             f"attach the {cls} instead")
    pers = {part.per for part in schedules}
    if len(pers) > 1:
        listed = ", ".join(f"{type(p).__name__}: {p.per!r}" for p in schedules)
        raise ValueError(f"{cls}: the schedules are stepped per different periods ({listed}); give them the same per=")
    return list(schedules)


class _Composite(Schedule):
    """A schedule made of others: its state also names them, to catch a resume into a different one."""

    parts: list[Schedule]

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "schedules": [type(p).__name__ for p in self.parts]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        names = [type(p).__name__ for p in self.parts]
        saved = state.get("schedules", names)
        if state.get("schedule", type(self).__name__) == type(self).__name__ and list(saved) != names:
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state dict is from one of {list(saved)}, "
                             f"this one is of {names}")
        super().load_state_dict(state)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.parts!r}, t={self.t})"


class SequentialSchedule(_Composite):
    r"""Schedules one after another (``torch``'s ``SequentialLR``): schedule i runs from
    milestone :math:`m_i` (:math:`m_0 = 0`) until the next, counting its own steps from 0::

        alpha_t = s_i(t - m_i)     for m_i <= t < m_{i+1}

    ``milestones`` (:math:`m_1 < m_2 < \dots`) has one entry fewer than ``schedules``.
    The schedules keep their own :math:`\alpha_0` (give them the same one for a rate that
    carries on); the sequence's :math:`\alpha_0` is the first one's. A
    :class:`MultiplicativeSchedule` restarts from its :math:`\alpha_0` at its milestone
    where ``torch``'s ``MultiplicativeLR`` goes on from the rate it finds. All schedules
    must have the same ``per``, which is the sequence's; attach the sequence, not them.
    """

    def __init__(self, schedules: Sequence[Schedule], milestones: Sequence[int], optimizer: Any = None):
        self.parts = _parts("SequentialSchedule", schedules)
        milestones = list(milestones)
        if len(milestones) != len(self.parts) - 1:
            raise ValueError(f"SequentialSchedule: {len(self.parts)} schedules need {len(self.parts) - 1} "
                             f"milestones, got {len(milestones)}")
        for m in milestones:
            if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
                raise ValueError(f"SequentialSchedule: invalid milestone {m!r} (milestones are steps: integers >= 1)")
        if any(later <= earlier for earlier, later in zip(milestones, milestones[1:])):
            raise ValueError(f"SequentialSchedule: milestones {milestones} must be strictly increasing")
        self.milestones = [int(m) for m in milestones]
        super().__init__(self.parts[0].lr0, self.parts[0].per, optimizer)

    def __call__(self, t: int) -> float:
        t = self._t(t)
        i = bisect.bisect_right(self.milestones, t)
        return self.parts[i](t - (self.milestones[i - 1] if i > 0 else 0))

    def __repr__(self) -> str:
        return f"SequentialSchedule({self.parts!r}, milestones={self.milestones}, t={self.t})"


class ChainedSchedule(_Composite):
    r"""Schedules multiplied together (``torch``'s ``ChainedScheduler``): each contributes
    its factor :math:`s_i(t) / \alpha_{0,i}`, the first one's :math:`\alpha_0` sets the
    scale::

        alpha_t = s_0(t) * s_1(t) / alpha_{0,1} * ... * s_{n-1}(t) / alpha_{0,n-1}

    With a common :math:`\alpha_0` (the usual case) this is :math:`\alpha_0 \prod_i
    s_i(t)/\alpha_0`, which is what ``ChainedScheduler`` gives when its schedulers are
    multiplicative ones, whose step scales the rate it finds (``StepLR``, ``MultiStepLR``,
    ``ExponentialLR``, ``ConstantLR``, ``LinearLR`` and ``MultiplicativeLR``). The others
    (``LambdaLR``, which sets ``base_lr * f(t)``, ``CyclicLR``, ``OneCycleLR``) set the rate
    from their base rate whatever they find: in torch's chain each one overwrites what the
    schedulers before it did, and the result depends on the order. lamina still multiplies:
    a :class:`LambdaSchedule` contributes its factor f(t) wherever it stands in the chain.
    The schedules after the first need :math:`\alpha_0 > 0`. All must have the same
    ``per``, which is the chain's; attach the chain, not them.
    """

    def __init__(self, schedules: Sequence[Schedule], optimizer: Any = None):
        self.parts = _parts("ChainedSchedule", schedules)
        for i, part in enumerate(self.parts[1:], start=1):
            if part.lr0 <= 0:
                raise ValueError(f"ChainedSchedule: schedule {i} ({type(part).__name__}) has lr0 {part.lr0!r}; its "
                                 "factor schedule(t) / lr0 needs lr0 > 0")
        super().__init__(self.parts[0].lr0, self.parts[0].per, optimizer)

    def __call__(self, t: int) -> float:
        t = self._t(t)
        lr = self.parts[0](t)
        for part in self.parts[1:]:
            lr *= part(t) / part.lr0
        return lr
