r"""Summaries of an accuracy matrix R (T, T), R[i, j] the test accuracy on task j after
training on tasks 0 .. i, as Lopez-Paz and Ranzato (2017, GEM) define them:

    ACC = (1/T) sum_j R[T-1, j]                                    (average accuracy at the end)
    BWT = 1/(T-1) sum_(j < T-1) (R[T-1, j] - R[j, j])              (backward transfer; < 0: forgetting)
    FWT = 1/(T-1) sum_(j >= 1) (R[j-1, j] - b_j)                   (forward transfer)

b_j the accuracy on task j of the model before any training (its random initialisation).
"""

from __future__ import annotations

import numpy as np

from lamina.errors import ShapeError

__all__ = ["average_accuracy", "backward_transfer", "forward_transfer"]


def _matrix(accuracy, who: str) -> np.ndarray:
    r = np.asarray(accuracy, dtype=np.float64)
    if r.ndim != 2 or r.shape[0] != r.shape[1] or r.shape[0] < 1:
        raise ShapeError(f"{who}: the accuracy matrix must be square (tasks, tasks), got shape {r.shape}")
    return r


def average_accuracy(accuracy) -> float:
    """ACC = the mean of the last row of R."""
    return float(_matrix(accuracy, "average_accuracy")[-1].mean())


def backward_transfer(accuracy) -> float:
    """BWT = the mean over the tasks but the last of R[T-1, j] - R[j, j] (0 for one task)."""
    r = _matrix(accuracy, "backward_transfer")
    t = len(r)
    return float(np.mean(r[-1, :-1] - np.diag(r)[:-1])) if t > 1 else 0.0


def forward_transfer(accuracy, baseline) -> float:
    """FWT = the mean over the tasks but the first of R[j-1, j] - b_j (0 for one task);
    ``baseline`` b holds the untrained model's accuracy on every task."""
    r = _matrix(accuracy, "forward_transfer")
    b = np.asarray(baseline, dtype=np.float64)
    if b.shape != (len(r),):
        raise ShapeError(f"forward_transfer: baseline must hold one accuracy per task ({len(r)}), got shape {b.shape}")
    t = len(r)
    return float(np.mean(np.diag(r, k=1) - b[1:])) if t > 1 else 0.0
