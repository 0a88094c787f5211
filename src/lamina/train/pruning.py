"""Stopping unpromising training runs early: the median rule (Optuna's ``MedianPruner``).

A trial reports an intermediate value (a validation score) after every step (epoch). At step
s, once ``n_startup_trials`` trials have completed and s >= ``n_warmup_steps``, the trial is
pruned if its best value so far is worse than the median of the values the completed trials
reported at step s (completed trials only: pruned ones stopped early and are not a fair
reference). A trial with no reference at step s, or with only NaN so far (pruned at once),
goes on or stops as Optuna's does.
"""

from __future__ import annotations

import math
from collections.abc import Hashable

import numpy as np

from lamina.train.callbacks import Callback

__all__ = ["MedianPruner", "PruningCallback", "TrialPruned"]


class TrialPruned(Exception):
    """Raised by an objective whose run was stopped by a pruner: the trial is recorded as
    stopped (``Trial.error`` says where and why), not as a result."""


def _count(who: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 0:
        raise ValueError(f"{who}: {name} must be an integer >= 0, got {value!r}")
    return int(value)


class MedianPruner:
    """The median stopping rule (module docstring). Trials are named by any hashable key;
    ``direction`` is "maximize" (an accuracy) or "minimize" (a loss)."""

    def __init__(self, n_startup_trials: int = 5, n_warmup_steps: int = 0, direction: str = "maximize"):
        self.n_startup_trials = _count("MedianPruner", "n_startup_trials", n_startup_trials)
        self.n_warmup_steps = _count("MedianPruner", "n_warmup_steps", n_warmup_steps)
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"MedianPruner: direction must be 'maximize' or 'minimize', got {direction!r}")
        self.direction = direction
        self.curves: dict[Hashable, dict[int, float]] = {}
        self.completed: list[Hashable] = []

    def report(self, trial: Hashable, step: int, value: float) -> None:
        """Record ``trial``'s intermediate ``value`` at ``step``."""
        self.curves.setdefault(trial, {})[int(step)] = float(value)

    def complete(self, trial: Hashable) -> None:
        """Mark ``trial`` as finished: its curve is a reference for the trials after it."""
        if trial not in self.completed:
            self.completed.append(trial)

    def median_at(self, step: int, excluding: Hashable = None) -> float:
        """The median of the completed trials' values at ``step`` (NaN if none reported one)."""
        values = [self.curves[t][step] for t in self.completed
                  if t != excluding and step in self.curves.get(t, {})]
        return float(np.median(values)) if values else math.nan

    def best_so_far(self, trial: Hashable) -> float:
        values = [v for v in self.curves.get(trial, {}).values() if not math.isnan(v)]
        if not values:
            return math.nan
        return max(values) if self.direction == "maximize" else min(values)

    def should_prune(self, trial: Hashable, step: int) -> bool:
        """Whether ``trial`` should stop at ``step`` (module docstring)."""
        if len(self.completed) < self.n_startup_trials or step < self.n_warmup_steps:
            return False
        best = self.best_so_far(trial)
        if math.isnan(best):
            return True
        median = self.median_at(step, excluding=trial)
        if math.isnan(median):
            return False
        return best < median if self.direction == "maximize" else best > median


class PruningCallback(Callback):
    """Reports ``logs[monitor]`` of every epoch (step = the epoch index, from 0) to ``pruner``
    under the key ``trial`` and stops training when the pruner says so (``pruned_at`` is then
    the epoch); a run that trains to the end is marked complete."""

    def __init__(self, pruner: MedianPruner, trial: Hashable, monitor: str = "val_accuracy"):
        self.pruner, self.trial, self.monitor = pruner, trial, monitor
        self.pruned_at: int | None = None

    def on_epoch_end(self, epoch: int, logs: dict) -> None:
        if self.monitor not in logs:
            return
        self.pruner.report(self.trial, epoch, logs[self.monitor])
        if self.pruner.should_prune(self.trial, epoch):
            self.pruned_at = epoch
            self.trainer.stop_training = True

    def on_train_end(self, logs: dict) -> None:
        if self.pruned_at is None:
            self.pruner.complete(self.trial)

    def message(self) -> str:
        """Why the run was pruned, for the trial's record."""
        value = self.pruner.curves[self.trial][self.pruned_at]
        median = self.pruner.median_at(self.pruned_at, excluding=self.trial)
        return (f"pruned at epoch {self.pruned_at + 1}: {self.monitor} {value:.4g}, best so far "
                f"{self.pruner.best_so_far(self.trial):.4g}, median of completed trials {median:.4g}")
