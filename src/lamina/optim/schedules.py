r"""Learning-rate schedules: decay/annealing of :math:`\alpha` over training.

Course notes, "Learning rate schedules" (t counts steps of the schedule, from 0)::

    Step decay:          reduce the learning rate at fixed points
    Exponential decay:   alpha_t = alpha_0 * e^(-k t)
    Linear decay:        alpha_t = alpha_0 * (1 - t/T)          T: total iterations
    Cosine decay:        alpha_t = 1/2 * alpha_0 * (1 + cos(pi t/T))
    Inverse sqrt decay:  alpha_t = alpha_0 / sqrt(t)
    1/t decay:           alpha_t = alpha_0 / (1 + k t)

and "Generally, want to reduce learning rate once progress plateau":
:class:`ReduceOnPlateau`. :class:`Warmup` puts a linear ramp before any of them.
Beyond the notes: :class:`PolynomialDecay` (linear decay raised to a power),
:class:`CosineDecayRestarts` (SGDR's cosine cycles) and :class:`OneCycle` (the 1cycle
policy's climb and anneal).

Every schedule is a pure formula ``schedule(t) -> lr``. Bound to an optimizer (the
``optimizer=`` argument or :meth:`Schedule.attach`) it sets ``optimizer.lr`` to
``schedule(0)`` at once, and each :meth:`Schedule.step` advances t by one and sets
``optimizer.lr = schedule(t)`` (the order of ``torch.optim.lr_scheduler``: step the
schedule after the optimizer). ``per`` (``'iteration'`` or ``'epoch'``) tells a
trainer when to call ``step()``. ``state_dict()``/``load_state_dict()`` save t.
"""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Sequence
from typing import Any

PERIODS = ("iteration", "epoch")


def _check(cls: str, name: str, value: Any, low: float = 0.0, strict: bool = False) -> None:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if ok:
        ok = value > low if strict else value >= low
    if not ok:
        raise ValueError(f"{cls}: invalid {name} {value!r} (must be {'>' if strict else '>='} {low:g})")


class Schedule:
    """Base class: ``__call__(t)`` is the formula; ``attach``/``step`` drive an optimizer."""

    default_per = "iteration"

    def __init__(self, lr0: float, per: str | None = None, optimizer: Any = None):
        _check(type(self).__name__, "lr0", lr0)
        per = self.default_per if per is None else per
        if per not in PERIODS:
            raise ValueError(f"{type(self).__name__}: invalid per {per!r} (must be 'iteration' or 'epoch')")
        self.lr0 = float(lr0)
        self.per = per
        self.t = 0
        self.optimizer = None
        if optimizer is not None:
            self.attach(optimizer)

    def __call__(self, t: int) -> float:
        raise NotImplementedError

    def _t(self, t: int) -> int:
        if t < 0:
            raise ValueError(f"{type(self).__name__}: t must be >= 0, got {t}")
        return t

    @property
    def lr(self) -> float:
        """The learning rate at the current position t."""
        return self(self.t)

    def attach(self, optimizer: Any) -> Schedule:
        """Drive ``optimizer.lr`` from now on; sets it to the lr at the current t."""
        self.optimizer = optimizer
        optimizer.lr = self(self.t)
        return self

    def step(self) -> float:
        """Advance t by one; set (and return) the new learning rate."""
        self.t += 1
        lr = self(self.t)
        if self.optimizer is not None:
            self.optimizer.lr = lr
        return lr

    def state_dict(self) -> dict[str, Any]:
        return {"schedule": type(self).__name__, "t": self.t}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        kind = state.get("schedule", type(self).__name__)
        if kind != type(self).__name__:
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state dict is from a {kind}")
        self.t = int(state["t"])
        if self.optimizer is not None:
            self.optimizer.lr = self(self.t)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr0={self.lr0}, per={self.per!r}, t={self.t})"


class StepDecay(Schedule):
    r"""Step decay: :math:`\alpha_t = \alpha_0 \gamma^{\lfloor t / s \rfloor}` (``torch``'s
    ``StepLR``), or with a list of milestones, :math:`\alpha_0 \gamma^{n}` with n the
    number of milestones :math:`\le t` (``MultiStepLR``). Stepped per epoch by default."""

    default_per = "epoch"

    def __init__(self, lr0: float, step_size: int | Sequence[int], gamma: float = 0.1, per: str | None = None,
                 optimizer: Any = None):
        if isinstance(step_size, numbers.Integral):
            if step_size < 1:
                raise ValueError(f"StepDecay: invalid step_size {step_size!r} (must be >= 1)")
            self.milestones: list[int] | None = None
        else:
            self.milestones = sorted(int(m) for m in step_size)
        self.step_size = step_size
        _check("StepDecay", "gamma", gamma)
        self.gamma = float(gamma)
        super().__init__(lr0, per, optimizer)

    def __call__(self, t: int) -> float:
        t = self._t(t)
        n = bisect.bisect_right(self.milestones, t) if self.milestones is not None else t // self.step_size
        return self.lr0 * self.gamma**n


class ExponentialDecay(Schedule):
    r"""Exponential decay :math:`\alpha_t = \alpha_0 e^{-kt}` (``ExponentialLR`` with
    :math:`\gamma = e^{-k}`)."""

    def __init__(self, lr0: float, k: float, per: str | None = None, optimizer: Any = None):
        _check("ExponentialDecay", "k", k)
        self.k = float(k)
        super().__init__(lr0, per, optimizer)

    def __call__(self, t: int) -> float:
        return self.lr0 * math.exp(-self.k * self._t(t))


class LinearDecay(Schedule):
    r"""Linear decay :math:`\alpha_t = \alpha_0 (1 - t/T)`, T = ``total_steps``; generalised
    to end at ``final_lr``: :math:`\alpha_T + (\alpha_0 - \alpha_T)(1 - t/T)`, constant
    after T."""

    def __init__(self, lr0: float, total_steps: int, final_lr: float = 0.0, per: str | None = None,
                 optimizer: Any = None):
        _check("LinearDecay", "total_steps", total_steps, strict=True)
        _check("LinearDecay", "final_lr", final_lr)
        self.total_steps = int(total_steps)
        self.final_lr = float(final_lr)
        super().__init__(lr0, per, optimizer)

    def __call__(self, t: int) -> float:
        frac = min(self._t(t), self.total_steps) / self.total_steps
        return self.final_lr + (self.lr0 - self.final_lr) * (1.0 - frac)


class CosineDecay(Schedule):
    r"""Cosine decay :math:`\alpha_t = \frac12 \alpha_0 (1 + \cos(\pi t/T))`; generalised to
    end at ``final_lr``: :math:`\alpha_T + \frac12(\alpha_0 - \alpha_T)(1 + \cos(\pi t/T))`
    (``CosineAnnealingLR`` with ``eta_min`` = ``final_lr``), constant after T."""

    def __init__(self, lr0: float, total_steps: int, final_lr: float = 0.0, per: str | None = None,
                 optimizer: Any = None):
        _check("CosineDecay", "total_steps", total_steps, strict=True)
        _check("CosineDecay", "final_lr", final_lr)
        self.total_steps = int(total_steps)
        self.final_lr = float(final_lr)
        super().__init__(lr0, per, optimizer)

    def __call__(self, t: int) -> float:
        t = min(self._t(t), self.total_steps)
        return self.final_lr + 0.5 * (self.lr0 - self.final_lr) * (1.0 + math.cos(math.pi * t / self.total_steps))


class PolynomialDecay(Schedule):
    r"""Polynomial decay from :math:`\alpha_0` to ``final_lr`` over T = ``total_steps``
    (Keras' ``PolynomialDecay``; ``torch``'s ``PolynomialLR`` when ``final_lr=0``)::

        alpha_t = (alpha_0 - final_lr) * (1 - t/T)**power + final_lr     for t <= T
        alpha_t = final_lr                                               for t >= T

    ``power=1`` is :class:`LinearDecay`; ``power > 1`` drops fast at first and flattens
    out towards the end, ``power < 1`` stays high for longer and falls steeply at the end.
    """

    def __init__(self, lr0: float, total_steps: int, final_lr: float = 0.0, power: float = 1.0,
                 per: str | None = None, optimizer: Any = None):
        _check("PolynomialDecay", "total_steps", total_steps, strict=True)
        _check("PolynomialDecay", "final_lr", final_lr)
        _check("PolynomialDecay", "power", power, strict=True)
        self.total_steps = int(total_steps)
        self.final_lr = float(final_lr)
        self.power = float(power)
        super().__init__(lr0, per, optimizer)

    def __call__(self, t: int) -> float:
        frac = min(self._t(t), self.total_steps) / self.total_steps
        return self.final_lr + (self.lr0 - self.final_lr) * (1.0 - frac) ** self.power


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


class InverseSqrtDecay(Schedule):
    r"""Inverse square-root decay :math:`\alpha_t = \alpha_0 / \sqrt{t}` for :math:`t \ge 1`.
    The formula is undefined at t = 0; lamina uses :math:`\alpha_0` there (the value at
    t = 1), so the first two periods both run at :math:`\alpha_0`."""

    def __call__(self, t: int) -> float:
        return self.lr0 / math.sqrt(max(self._t(t), 1))


class InverseTimeDecay(Schedule):
    r"""1/t decay :math:`\alpha_t = \alpha_0 / (1 + kt)`."""

    def __init__(self, lr0: float, k: float, per: str | None = None, optimizer: Any = None):
        _check("InverseTimeDecay", "k", k)
        self.k = float(k)
        super().__init__(lr0, per, optimizer)

    def __call__(self, t: int) -> float:
        return self.lr0 / (1.0 + self.k * self._t(t))


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


class ReduceOnPlateau:
    r"""Reduce the learning rate once progress plateaus (``torch``'s ``ReduceLROnPlateau``).

    Call ``step(metric)`` once per epoch with the monitored value (validation loss for
    ``mode='min'``, accuracy for ``'max'``). A value is an improvement when it beats the
    best so far by more than ``threshold`` (relative: ``best*(1 - threshold)`` in min mode,
    ``best*(1 + threshold)`` in max mode; absolute with ``threshold_mode='abs'``). After
    more than ``patience`` epochs without improvement the learning rate becomes
    ``max(lr*factor, min_lr)`` (changes smaller than ``eps`` are skipped), then
    ``cooldown`` epochs pass before bad epochs count again.

    Unlike the formula schedules its learning rate depends on the metrics seen, so
    ``schedule(t)`` (and ``lr``) return the current learning rate whatever t is.
    """

    per = "epoch"

    def __init__(self, optimizer: Any = None, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, min_lr: float = 0.0, threshold_mode: str = "rel",
                 cooldown: int = 0, eps: float = 1e-8):
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceOnPlateau: invalid mode {mode!r} (must be 'min' or 'max')")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"ReduceOnPlateau: invalid threshold_mode {threshold_mode!r} (must be 'rel' or 'abs')")
        if not (isinstance(factor, numbers.Real) and 0.0 <= factor < 1.0):
            raise ValueError(f"ReduceOnPlateau: invalid factor {factor!r} (must be in [0, 1))")
        _check("ReduceOnPlateau", "patience", patience)
        _check("ReduceOnPlateau", "threshold", threshold)
        _check("ReduceOnPlateau", "min_lr", min_lr)
        _check("ReduceOnPlateau", "cooldown", cooldown)
        self.mode, self.threshold_mode = mode, threshold_mode
        self.factor, self.patience, self.threshold = float(factor), int(patience), float(threshold)
        self.min_lr, self.cooldown, self.eps = float(min_lr), int(cooldown), float(eps)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.t = 0
        self.optimizer = None
        if optimizer is not None:
            self.attach(optimizer)

    def attach(self, optimizer: Any) -> ReduceOnPlateau:
        self.optimizer = optimizer
        return self

    @property
    def lr(self) -> float:
        if self.optimizer is None:
            raise RuntimeError("ReduceOnPlateau: no optimizer attached")
        return self.optimizer.lr

    def __call__(self, t: int | None = None) -> float:
        return self.lr

    def is_better(self, value: float) -> bool:
        if self.mode == "min":
            bar = self.best * (1.0 - self.threshold) if self.threshold_mode == "rel" else self.best - self.threshold
            return value < bar
        bar = self.best * (1.0 + self.threshold) if self.threshold_mode == "rel" else self.best + self.threshold
        return value > bar

    def step(self, metric: float) -> float:
        """Record one epoch's ``metric``; reduce the learning rate if it has plateaued.
        Returns the learning rate for the next epoch."""
        if self.optimizer is None:
            raise RuntimeError("ReduceOnPlateau.step: no optimizer attached (pass optimizer= or call attach)")
        value = float(metric)
        self.t += 1
        if self.is_better(value):
            self.best = value
            self.num_bad_epochs = 0
        else:
            self.num_bad_epochs += 1
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.num_bad_epochs = 0
        if self.num_bad_epochs > self.patience:
            old = self.optimizer.lr
            new = max(old * self.factor, self.min_lr)
            if old - new > self.eps:
                self.optimizer.lr = new
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        return self.optimizer.lr

    def state_dict(self) -> dict[str, Any]:
        return {"schedule": "ReduceOnPlateau", "t": self.t, "best": self.best,
                "num_bad_epochs": self.num_bad_epochs, "cooldown_counter": self.cooldown_counter,
                "lr": self.optimizer.lr if self.optimizer is not None else None}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        kind = state.get("schedule", "ReduceOnPlateau")
        if kind != "ReduceOnPlateau":
            raise ValueError(f"ReduceOnPlateau.load_state_dict: the state dict is from a {kind}")
        self.t = int(state["t"])
        self.best = float(state["best"])
        self.num_bad_epochs = int(state["num_bad_epochs"])
        self.cooldown_counter = int(state["cooldown_counter"])
        if self.optimizer is not None and state.get("lr") is not None:
            self.optimizer.lr = float(state["lr"])

    def __repr__(self) -> str:
        return (f"ReduceOnPlateau(mode={self.mode!r}, factor={self.factor}, patience={self.patience}, "
                f"best={self.best}, t={self.t})")
