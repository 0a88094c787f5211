"""Deterministic train / validation / test splits, optionally stratified by label."""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

__all__ = ["train_val_test_split"]

Split = tuple[np.ndarray, np.ndarray]


def _check_fraction(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"train_val_test_split: {name} must be a finite number; got {value!r}")
    if value < 0:
        raise ValueError(f"train_val_test_split: {name} must be >= 0; got {value!r}")
    return float(value)


def _round(value: float) -> int:
    """Round half up (Python's round() rounds half to even)."""
    return int(math.floor(value + 0.5))


def _apportion(total: int, weights: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Split the integer ``total`` across groups in proportion to ``weights``.

    Largest-remainder (Hamilton) apportionment: every group first gets the floor of its
    quota; the seats left go one by one to the largest fractional parts (ties to the
    lower group index), never giving a group more than its ``capacity``.
    """
    quota = total * weights / weights.sum()
    seats = np.minimum(np.floor(quota).astype(np.int64), capacity)
    remainder = quota - np.floor(quota)
    left = total - int(seats.sum())
    # Stable sort on -remainder: ties keep the lower index first.
    for g in np.argsort(-remainder, kind="stable").tolist():
        if left <= 0:
            break
        if seats[g] < capacity[g]:
            seats[g] += 1
            left -= 1
    # Still seats left only when the quotas hit the capacities; fill anywhere there is room.
    for g in range(len(seats)):
        take = min(left, int(capacity[g] - seats[g]))
        seats[g] += take
        left -= take
    return seats


def train_val_test_split(
    x: Any,
    y: Any,
    val: float = 0.1,
    test: float = 0.1,
    stratify: bool = True,
    seed: int | None = 0,
) -> tuple[Split, Split, Split]:
    """Split ``(x, y)`` into ``((x_train, y_train), (x_val, y_val), (x_test, y_test))``.

    ``val`` and ``test`` are fractions of the samples (each >= 0, ``val + test < 1``); the
    test set gets ``round(test * n)`` samples and the validation set ``round(val * n)``
    (half rounds up). With ``stratify=True`` each class is split in the same proportions:
    those totals are apportioned over the classes by the largest-remainder method, so
    every split's class histogram is as close to the overall one as integers allow. The
    samples are drawn, and each split's order shuffled, by a NumPy generator seeded with
    ``seed``: the same seed gives the same split. The three splits are disjoint and
    together hold every sample once.
    """
    val = _check_fraction("val", val)
    test = _check_fraction("test", test)
    if val + test >= 1:
        raise ValueError(
            f"train_val_test_split: val + test must be < 1 to leave training data; "
            f"got val={val} + test={test} = {val + test}"
        )
    x = np.asarray(x)
    y = np.asarray(y)
    if x.ndim == 0 or y.ndim == 0:
        raise ValueError("train_val_test_split: x and y must have a sample axis")
    n = len(x)
    if len(y) != n:
        raise ValueError(
            f"train_val_test_split: x and y must have the same number of samples; "
            f"len(x) = {n}, len(y) = {len(y)}"
        )
    rng = np.random.default_rng(seed)
    n_test = _round(test * n)
    n_val = _round(val * n)
    if stratify:
        if y.ndim != 1:
            raise ValueError(
                f"train_val_test_split: stratify=True needs 1-d class labels; got y of shape {y.shape}"
            )
        classes, inverse, counts = np.unique(y, return_inverse=True, return_counts=True)
        members = [np.flatnonzero(inverse == c) for c in range(len(classes))]
        test_per_class = _apportion(n_test, counts.astype(np.float64), counts)
        val_per_class = _apportion(n_val, counts.astype(np.float64), counts - test_per_class)
        parts: tuple[list[np.ndarray], list[np.ndarray], list[np.ndarray]] = ([], [], [])
        for idx, k_test, k_val in zip(members, test_per_class, val_per_class, strict=True):
            idx = rng.permutation(idx)
            parts[2].append(idx[:k_test])
            parts[1].append(idx[k_test:k_test + k_val])
            parts[0].append(idx[k_test + k_val:])
        train_idx, val_idx, test_idx = (rng.permutation(np.concatenate(p)) if p else np.arange(0)
                                        for p in parts)
    else:
        order = rng.permutation(n)
        test_idx = order[:n_test]
        val_idx = order[n_test:n_test + n_val]
        train_idx = order[n_test + n_val:]
    return (x[train_idx], y[train_idx]), (x[val_idx], y[val_idx]), (x[test_idx], y[test_idx])
