"""Reduce the learning rate when a monitored value stops improving."""

from __future__ import annotations

import math
import numbers
from collections.abc import Sequence
from typing import Any

from lamina.optim.schedules.base import _check

HIGHER_IS_BETTER = ("acc", "f1", "fbeta", "precision", "recall", "auc", "r2", "iou", "dice", "similarity")
"""Parts of a logged quantity's name that make ``mode='auto'`` maximise it: the accuracies,
F-scores, precision, recall, AUCs, R^2, mean IoU, Dice score and cosine similarity that
:func:`lamina.train.metrics.get_metric` logs (with their ``val_`` and ``weighted_`` forms).
Losses, errors and every other name (mae, mse, logcosh, ...) are minimised."""


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
    more than ``patience`` epochs without improvement each parameter group's learning rate
    becomes ``max(lr*factor, min_lr)`` (``min_lr`` is one floor for all groups or a list of
    one per group; a group whose change would be smaller than ``eps`` is left as it is), then
    ``cooldown`` epochs pass before bad epochs count again. The optimizer's base ``lr``
    follows the same rule (with the lowest floor), and a group that reached its floor gets
    the ``lr_scale`` that keeps its learning rate there.

    Unlike the formula schedules its learning rate depends on the metrics seen, so
    ``schedule(t)`` (and ``lr``) return the current learning rate whatever t is.
    """

    per = "epoch"

    def __init__(self, optimizer: Any = None, mode: str = "min", factor: float = 0.1, patience: int = 10,
                 threshold: float = 1e-4, min_lr: float | Sequence[float] = 0.0, threshold_mode: str = "rel",
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
        floors = list(min_lr) if isinstance(min_lr, (list, tuple)) else [min_lr]
        for floor in floors:
            _check("ReduceOnPlateau", "min_lr", floor)
        if not floors:
            raise ValueError("ReduceOnPlateau: min_lr is an empty list (give a number or one per parameter group)")
        _check("ReduceOnPlateau", "cooldown", cooldown)
        self.mode, self.threshold_mode, self.monitor = mode, threshold_mode, monitor
        self.factor, self.patience, self.threshold = float(factor), int(patience), float(threshold)
        self.min_lr = [float(f) for f in floors] if isinstance(min_lr, (list, tuple)) else float(min_lr)
        self.cooldown, self.eps = int(cooldown), float(eps)
        self.best = math.inf if mode == "min" else -math.inf
        self.num_bad_epochs = 0
        self.cooldown_counter = 0
        self.t = 0
        self.optimizer = None
        if optimizer is not None:
            self.attach(optimizer)

    def attach(self, optimizer: Any) -> ReduceOnPlateau:
        groups = getattr(optimizer, "param_groups", None)
        if groups:
            self._floors(len(groups))
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
            self._reduce()
            self.cooldown_counter = self.cooldown
            self.num_bad_epochs = 0
        return self.optimizer.lr

    def _floors(self, groups: int) -> list[float]:
        """The min_lr of each of ``groups`` parameter groups."""
        if not isinstance(self.min_lr, list):
            return [self.min_lr] * groups
        if len(self.min_lr) != groups:
            raise ValueError(f"ReduceOnPlateau: min_lr lists {len(self.min_lr)} values but the optimizer has "
                             f"{groups} parameter groups (give one per group, or one number for all)")
        return self.min_lr

    def _reduce(self) -> None:
        """lr = max(lr*factor, min_lr) for the base learning rate and for each group (PyTorch's
        rule, group by group), each left as it is when it would change by no more than eps."""
        optimizer = self.optimizer
        groups = list(getattr(optimizer, "param_groups", None) or [])
        floors = self._floors(len(groups)) if groups else []
        old_lrs = [group["lr"] for group in groups]
        old = optimizer.lr
        new = max(old * self.factor, min(self.min_lr) if isinstance(self.min_lr, list) else self.min_lr)
        if old - new > self.eps:
            optimizer.lr = new          # sets every group's lr too, by its lr_scale; redone below
        for group, lr, floor in zip(groups, old_lrs, floors):
            reduced = max(lr * self.factor, floor)
            _set_group_lr(group, reduced if lr - reduced > self.eps else lr, optimizer.lr)

    def state_dict(self) -> dict[str, Any]:
        return {"schedule": "ReduceOnPlateau", "t": self.t, "best": self.best,
                "num_bad_epochs": self.num_bad_epochs, "cooldown_counter": self.cooldown_counter,
                "lr": self.optimizer.lr if self.optimizer is not None else None,
                "group_lrs": [group["lr"] for group in getattr(self.optimizer, "param_groups", None) or []]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        kind = state.get("schedule", "ReduceOnPlateau")
        if kind != "ReduceOnPlateau":
            raise ValueError(f"ReduceOnPlateau.load_state_dict: the state dict is from a {kind}")
        self.t = int(state["t"])
        self.best = float(state["best"])
        self.num_bad_epochs = int(state["num_bad_epochs"])
        self.cooldown_counter = int(state["cooldown_counter"])
        if self.optimizer is not None and state.get("lr") is not None:
            base = float(state["lr"])
            if self.optimizer.lr != base:   # an optimizer restored first has it already (and refuses a base of 0
                self.optimizer.lr = base    # again while a group sits at a floor above 0)
            groups = getattr(self.optimizer, "param_groups", None) or []
            saved = state.get("group_lrs") or []
            if len(saved) == len(groups):           # the groups' own floors, reached after the base
                for group, lr in zip(groups, saved):
                    _set_group_lr(group, float(lr), base)

    def __repr__(self) -> str:
        return (f"ReduceOnPlateau(monitor={self.monitor!r}, mode={self.mode!r}, factor={self.factor}, "
                f"patience={self.patience}, best={self.best}, t={self.t})")


def _set_group_lr(group: dict, lr: float, base: float) -> None:
    """A parameter group's lr, and the ``lr_scale`` that keeps it there when the base changes."""
    group["lr"] = lr
    if "lr_scale" in group and base > 0:
        group["lr_scale"] = lr / base
