"""Decay schedules: step, exponential, linear, cosine and polynomial decay over a run,
inverse square root and inverse time decay."""

from __future__ import annotations

import bisect
import math
import numbers
from collections.abc import Sequence
from typing import Any

from lamina.optim.schedules.base import Schedule, _check


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
