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
