"""The Schedule protocol: a formula alpha_t bound to an optimizer and stepped per iteration or per
epoch, with its state for checkpoints."""

from __future__ import annotations

import math
import numbers
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
        """Take back the position t and set an attached optimizer's rate to the rate at t (a
        training checkpoint then loads the optimizer's saved state, whose rate wins)."""
        kind = state.get("schedule", type(self).__name__)
        if kind != type(self).__name__:
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state dict is from a {kind}")
        self.t = int(state["t"])
        if self.optimizer is not None:
            self.optimizer.lr = self(self.t)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(lr0={self.lr0}, per={self.per!r}, t={self.t})"
