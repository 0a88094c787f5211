"""Schedules that climb as well as fall: cosine decay with warm restarts, the one-cycle
policy, and a linear warm-up in front of any schedule."""

from __future__ import annotations

import math
import numbers
from typing import Any

from lamina.optim.schedules.base import Schedule, _check


class CosineDecayRestarts(Schedule):
    r"""Cosine decay with warm restarts (SGDR: Loshchilov and Hutter, "SGDR: Stochastic
    Gradient Descent with Warm Restarts"). The learning rate follows a cosine from its
    peak down to ``min_lr`` over a period, then jumps back up and starts again; each
    period is ``t_mult`` times the one before (the first: ``first_period`` steps), each
    peak ``m_mul`` times the one before. With :math:`T_i` = ``first_period * t_mult**i``
    the length of period i (from 0), :math:`t_i` the steps taken since it began::

        alpha_t = min_lr + (alpha_0 - min_lr) * m_mul**i * (1 + cos(pi t_i / T_i)) / 2

    With ``m_mul=1`` and an integer ``t_mult`` this is ``torch``'s
    ``CosineAnnealingWarmRestarts`` (``T_0`` = ``first_period``, ``T_mult`` = ``t_mult``,
    ``eta_min`` = ``min_lr``); with ``min_lr = alpha * alpha_0`` it is Keras'
    ``CosineDecayRestarts`` (``first_decay_steps``, ``t_mul``, ``m_mul``, ``alpha``).
    """

    def __init__(self, lr0: float, first_period: int, t_mult: float = 1.0, m_mul: float = 1.0,
                 min_lr: float = 0.0, per: str | None = None, optimizer: Any = None):
        _check("CosineDecayRestarts", "first_period", first_period, strict=True)
        _check("CosineDecayRestarts", "t_mult", t_mult, low=1.0)
        _check("CosineDecayRestarts", "m_mul", m_mul)
        _check("CosineDecayRestarts", "min_lr", min_lr)
        self.first_period = first_period if isinstance(first_period, numbers.Integral) else float(first_period)
        self.t_mult = t_mult if isinstance(t_mult, numbers.Integral) else float(t_mult)
        self.m_mul = float(m_mul)
        self.min_lr = float(min_lr)
        super().__init__(lr0, per, optimizer)

    def restart(self, t: int) -> tuple[int, float, float]:
        """(i, t_i, T_i): the period that step t falls in, the steps since it began, its length."""
        t = self._t(t)
        period = self.first_period
        if self.t_mult == 1:
            i = int(t // period)
            return i, t - i * period, period
        i, start = 0, 0
        while t >= start + period:  # the periods grow geometrically: a few dozen at most
            start += period
            period *= self.t_mult
            i += 1
        return i, t - start, period

    def __call__(self, t: int) -> float:
        i, since, period = self.restart(t)
        peak = (self.lr0 - self.min_lr) * self.m_mul**i
        return self.min_lr + 0.5 * peak * (1.0 + math.cos(math.pi * since / period))


class OneCycle(Schedule):
    r"""The 1cycle policy (Smith and Topin, "Super-Convergence"): the learning rate climbs
    from ``max_lr / div_factor`` to ``max_lr`` over the first ``pct_start`` of the
    T = ``total_steps`` steps, then anneals to ``max_lr / (div_factor * final_div_factor)``
    at step T - 1; constant after that. With a = ``max_lr / div_factor``, b = ``max_lr``,
    c = ``a / final_div_factor`` and P = ``pct_start * T - 1`` (the step of the peak)::

        alpha_t = anneal(a, b, t / P)                       for t <= P
        alpha_t = anneal(b, c, (t - P) / (T - 1 - P))       for P < t <= T - 1
        anneal(x, y, f) = y + (x - y) * (1 + cos(pi f)) / 2     anneal='cos'
        anneal(x, y, f) = x + (y - x) * f                       anneal='linear'

    This is the learning rate of ``torch``'s ``OneCycleLR`` (two phases, the same
    arguments; ``anneal`` is its ``anneal_strategy``), which refuses to step past T where
    lamina stays at c. Only the learning rate cycles: ``OneCycleLR``'s inverse cycling of
    the momentum (``cycle_momentum``) is not done, the optimizer's momentum or betas stay
    as they are. ``lr0`` (the learning rate at t = 0, what :class:`Warmup` climbs to) is
    ``max_lr / div_factor``.
    """

    ANNEALS = ("cos", "linear")

    def __init__(self, max_lr: float, total_steps: int, pct_start: float = 0.3, div_factor: float = 25.0,
                 final_div_factor: float = 1e4, anneal: str = "cos", per: str | None = None,
                 optimizer: Any = None):
        _check("OneCycle", "max_lr", max_lr)
        _check("OneCycle", "total_steps", total_steps, strict=True)
        _check("OneCycle", "pct_start", pct_start)
        if pct_start > 1:
            raise ValueError(f"OneCycle: invalid pct_start {pct_start!r} (must be in [0, 1])")
        _check("OneCycle", "div_factor", div_factor, strict=True)
        _check("OneCycle", "final_div_factor", final_div_factor, strict=True)
        if anneal not in self.ANNEALS:
            raise ValueError(f"OneCycle: invalid anneal {anneal!r} (must be 'cos' or 'linear')")
        self.max_lr = float(max_lr)
        self.total_steps = int(total_steps)
        self.pct_start = float(pct_start)
        self.div_factor = float(div_factor)
        self.final_div_factor = float(final_div_factor)
        self.anneal = anneal
        self.initial_lr = self.max_lr / self.div_factor
        self.final_lr = self.initial_lr / self.final_div_factor
        self.peak_step = self.pct_start * self.total_steps - 1.0
        super().__init__(self.initial_lr, per, optimizer)

    def _anneal(self, start: float, end: float, frac: float) -> float:
        if self.anneal == "cos":
            return end + 0.5 * (start - end) * (1.0 + math.cos(math.pi * frac))
        return start + (end - start) * frac

    def __call__(self, t: int) -> float:
        t = min(self._t(t), self.total_steps - 1)
        peak, last = self.peak_step, self.total_steps - 1
        if t <= peak:  # peak = 0: the climb is over at t = 0
            return self._anneal(self.initial_lr, self.max_lr, t / peak if peak > 0 else 1.0)
        return self._anneal(self.max_lr, self.final_lr, (t - peak) / (last - peak))

    def __repr__(self) -> str:
        return (f"OneCycle(max_lr={self.max_lr}, total_steps={self.total_steps}, pct_start={self.pct_start}, "
                f"anneal={self.anneal!r}, per={self.per!r}, t={self.t})")


class Warmup(Schedule):
    r"""A linear warm-up before another schedule: for the first W = ``warmup_steps`` steps
    the learning rate climbs from ``start_lr`` to the schedule's :math:`\alpha_0`, then
    the schedule runs from its own t = 0::

        alpha_t = start_lr + (alpha_0 - start_lr) t / W     for t < W
        alpha_t = schedule(t - W)                           for t >= W

    (PyTorch: ``SequentialLR`` of ``LinearLR`` and the schedule; Keras: ``warmup_steps``.)
    Large learning rates, large batches and Adam's first steps, whose second-moment
    estimate rests on few gradients, are gentler this way. ``per`` is the schedule's;
    attach the warm-up, not the schedule it wraps.
    """

    def __init__(self, schedule: Schedule, warmup_steps: int, start_lr: float = 0.0, optimizer: Any = None):
        if not isinstance(schedule, Schedule):
            raise TypeError(f"Warmup: expected a Schedule to warm up into, got {type(schedule).__name__}")
        if schedule.optimizer is not None:
            raise ValueError(f"Warmup: {type(schedule).__name__} is already attached to an optimizer; attach "
                             "the warm-up instead")
        _check("Warmup", "warmup_steps", warmup_steps, strict=True)
        _check("Warmup", "start_lr", start_lr)
        self.schedule = schedule
        self.warmup_steps = int(warmup_steps)
        self.start_lr = float(start_lr)
        super().__init__(schedule.lr0, schedule.per, optimizer)

    def __call__(self, t: int) -> float:
        t = self._t(t)
        if t < self.warmup_steps:
            return self.start_lr + (self.lr0 - self.start_lr) * t / self.warmup_steps
        return self.schedule(t - self.warmup_steps)

    def __repr__(self) -> str:
        return f"Warmup({self.schedule!r}, warmup_steps={self.warmup_steps}, start_lr={self.start_lr}, t={self.t})"
