"""Reduce the learning rate when a monitored value stops improving."""

from __future__ import annotations

import math
import numbers
from typing import Any

from lamina.optim.schedules.base import _check

HIGHER_IS_BETTER = ("acc", "f1", "precision", "recall", "auc", "r2")
"""Parts of a logged quantity's name that make ``mode='auto'`` maximise it (losses and
errors are minimised)."""


def higher_is_better(name: str) -> bool:
    """Whether ``mode='auto'`` maximises the logged quantity ``name`` ('val_accuracy',
    'f1', ...) rather than minimising it ('val_loss', 'top1_error', ...)."""
    return any(part in name for part in HIGHER_IS_BETTER) and "error" not in name and "loss" not in name


class ReduceOnPlateau:
    r"""Reduce the learning rate once progress plateaus (``torch``'s ``ReduceLROnPlateau``).

    Call ``step(metric)`` once per epoch with the monitored value (validation loss for
    ``mode='min'``, accuracy for ``'max'``). Given as ``Trainer(schedule=...)``, it is stepped
    by ``fit`` with the logged quantity named ``monitor`` ('val_loss', 'val_accuracy',
    'f1', ...; None: 'val_loss' when validating, else 'loss'), skipping the epochs that
    ``validation_freq`` leaves unvalidated; ``mode='auto'`` minimises or maximises it as
    its name says (:func:`higher_is_better`). A value is an improvement when it beats the
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
                 cooldown: int = 0, eps: float = 1e-8, monitor: str | None = None):
        if monitor is not None and not isinstance(monitor, str):
            raise TypeError(f"ReduceOnPlateau: monitor must be the name of a logged quantity or None, "
                            f"got {type(monitor).__name__}")
        if mode == "auto":
            mode = "max" if monitor is not None and higher_is_better(monitor) else "min"
        if mode not in ("min", "max"):
            raise ValueError(f"ReduceOnPlateau: invalid mode {mode!r} (must be 'min', 'max' or 'auto')")
        if threshold_mode not in ("rel", "abs"):
            raise ValueError(f"ReduceOnPlateau: invalid threshold_mode {threshold_mode!r} (must be 'rel' or 'abs')")
        if not (isinstance(factor, numbers.Real) and 0.0 <= factor < 1.0):
            raise ValueError(f"ReduceOnPlateau: invalid factor {factor!r} (must be in [0, 1))")
        _check("ReduceOnPlateau", "patience", patience)
        _check("ReduceOnPlateau", "threshold", threshold)
        _check("ReduceOnPlateau", "min_lr", min_lr)
        _check("ReduceOnPlateau", "cooldown", cooldown)
        self.mode, self.threshold_mode, self.monitor = mode, threshold_mode, monitor
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
        return (f"ReduceOnPlateau(monitor={self.monitor!r}, mode={self.mode!r}, factor={self.factor}, "
                f"patience={self.patience}, best={self.best}, t={self.t})")
