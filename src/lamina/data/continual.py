"""Sequences of tasks for continual learning, built from one labelled data set (course notes:
catastrophic forgetting). Each function returns a list of ``(x, y)`` pairs, one per task, in
the order they are learnt.

- :func:`permuted_tasks` (Permuted MNIST, Goodfellow et al. 2013; Kirkpatrick et al. 2017):
  every task shows the same images with their pixels reordered by a fixed random permutation
  of its own. The label set stays the same (domain-incremental learning).
- :func:`split_tasks` (Split MNIST, Zenke et al. 2017): the classes are dealt out in groups
  (0/1, 2/3, ...), one group per task. With the original labels a single classifier must
  tell all classes seen so far apart (class-incremental); with ``relabel=True`` each task's
  labels are 0 .. k-1 inside the group (task- or domain-incremental with a shared head).
- :func:`rotated_tasks` (Rotated MNIST, Lopez-Paz and Ranzato 2017): every task shows the
  images turned by an angle of its own.

Apply the same function with the same arguments to the training and the test split to get
matching tasks (the permutations depend only on ``seed`` and the image size).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from lamina.data.image_ops import rotate
from lamina.errors import ShapeError

__all__ = ["permuted_tasks", "rotated_tasks", "split_tasks"]


def _check_pair(x, y, who: str) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim < 2 or y.ndim != 1 or len(x) != len(y):
        raise ShapeError(f"{who}: expected x of shape (n, ...) and labels y of shape (n,), got {x.shape} and {y.shape}")
    return x, y


def _check_count(value, who: str, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{who}: {name} must be a positive integer, got {value!r}")
    return int(value)


def permuted_tasks(x, y, n_tasks: int, seed: int = 0, keep_first: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """``n_tasks`` copies of (x, y) whose features (everything after the sample axis, taken
    in row-major order) are shuffled by one permutation per task, drawn from ``seed``.
    ``keep_first``: task 0 keeps the original order (the permutations of the later tasks
    are unchanged)."""
    who = "permuted_tasks"
    x, y = _check_pair(x, y, who)
    n_tasks = _check_count(n_tasks, who, "n_tasks")
    flat = x.reshape(len(x), -1)
    rng = np.random.default_rng(seed)
    tasks = []
    for t in range(n_tasks):
        order = rng.permutation(flat.shape[1])
        if keep_first and t == 0:
            order = np.arange(flat.shape[1])
        tasks.append((flat[:, order].reshape(x.shape), y.copy()))
    return tasks


def split_tasks(x, y, classes_per_task: int, classes: Sequence[int] | None = None,
                relabel: bool = False) -> list[tuple[np.ndarray, np.ndarray]]:
    """One task per group of ``classes_per_task`` consecutive classes of ``classes`` (by
    default the sorted labels present in y; a last group may be smaller). A task holds the
    samples of its classes in their original order; ``relabel``: labels become the class's
    position in its group (0 .. classes_per_task - 1) instead of the original label."""
    who = "split_tasks"
    x, y = _check_pair(x, y, who)
    size = _check_count(classes_per_task, who, "classes_per_task")
    order = np.unique(y) if classes is None else np.asarray(classes)
    if len(np.unique(order)) != len(order):
        raise ValueError(f"{who}: classes must not repeat, got {order.tolist()}")
    tasks = []
    for start in range(0, len(order), size):
        group = order[start:start + size]
        keep = np.isin(y, group)
        if not keep.any():
            raise ValueError(f"{who}: no sample has any of the classes {group.tolist()}")
        labels = y[keep]
        if relabel:
            labels = np.argmax(labels[:, None] == group[None, :], axis=1)
        tasks.append((x[keep], labels.astype(y.dtype, copy=False)))
    return tasks


def rotated_tasks(x, y, angles: Sequence[float]) -> list[tuple[np.ndarray, np.ndarray]]:
    """One task per angle (degrees, counterclockwise): every NHWC image of x turned about
    its centre (:func:`lamina.data.image_ops.rotate`, nearest neighbour, corners filled with
    zeros)."""
    who = "rotated_tasks"
    x, y = _check_pair(x, y, who)
    if x.ndim != 4:
        raise ShapeError(f"{who}: expected NHWC images (n, h, w, c), got shape {x.shape}")
    if len(angles) == 0:
        raise ValueError(f"{who}: angles must hold at least one angle")
    return [(np.stack([rotate(image, float(angle)) for image in x]) if angle % 360 else x.copy(), y.copy())
            for angle in angles]
