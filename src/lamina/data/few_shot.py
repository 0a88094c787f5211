"""N-way K-shot classification tasks for few-shot and meta-learning: :class:`FewShotTasks`.

A task draws ``n_way`` classes from a labelled dataset and, from each, ``k_shot`` support and
``q_queries`` query samples (all distinct). Its classes are renamed 0 .. n_way-1 in the order
drawn, so a model sees labels that mean nothing across tasks and must learn from the support
set alone. Task ``i`` comes from a generator seeded by (seed, i): the same seed gives the same
tasks in any order of access, and a held-out set of classes (``classes=``) gives meta-test
tasks on classes never seen in meta-training.
"""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from lamina import backend
from lamina.data.collate import default_collate
from lamina.data.dataset import take

__all__ = ["FewShotTask", "FewShotTasks"]


class FewShotTask(tuple):
    """``(support, query)``, each a pair ``(x, y)``, so ``support, query = task`` unpacks it;
    facts about the task (``classes`` for classification, ``amplitude`` and ``phase`` for a
    sinusoid) are attributes."""

    def __new__(cls, support: tuple, query: tuple, **info: Any) -> FewShotTask:
        task = super().__new__(cls, (support, query))
        task.__dict__.update(info)
        return task

    @property
    def support(self) -> tuple:
        return self[0]

    @property
    def query(self) -> tuple:
        return self[1]


def _count(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise ValueError(f"FewShotTasks: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def task_seed(seed: int | None, who: str) -> int:
    """``seed``, or one drawn from :func:`lamina.backend.rng` (so ``lamina.manual_seed`` fixes it)."""
    if seed is None:
        return int(backend.rng().integers(2**63))
    if isinstance(seed, bool) or not isinstance(seed, numbers.Integral) or seed < 0:
        raise ValueError(f"{who}: seed must be a non-negative integer or None, got {seed!r}")
    return int(seed)


def _arrays(dataset) -> tuple[Any, np.ndarray, Any]:
    """(samples, labels, a function taking sample indices to a batch) for (x, y) arrays, a
    dataset with ``x`` and ``y`` arrays (:class:`ArrayDataset`), or any dataset of (x, y) items."""
    if isinstance(dataset, (tuple, list)) and len(dataset) == 2:
        x, y = dataset
        x = x if isinstance(x, tuple) else np.asarray(x)
        return x, np.asarray(y), lambda idx: take(x, idx)
    if getattr(dataset, "y", None) is not None and hasattr(dataset, "x"):
        return dataset.x, np.asarray(dataset.y), lambda idx: take(dataset.x, idx)
    if hasattr(dataset, "__getitem__") and hasattr(dataset, "__len__"):
        labels = np.asarray([dataset[i][1] for i in range(len(dataset))])
        return dataset, labels, lambda idx: default_collate([dataset[int(i)][0] for i in idx])
    raise TypeError(f"FewShotTasks: expected (x, y) arrays or a dataset of (x, y) samples, got "
                    f"{type(dataset).__name__}")


class FewShotTasks:
    """``num_tasks`` N-way K-shot tasks from ``dataset``: ``for support, query in tasks``, or
    ``tasks[i]``.

    ``dataset`` is ``(x, y)`` (arrays, y integer class labels), an
    :class:`~lamina.data.ArrayDataset`, or any dataset whose items are ``(x, y)``. ``classes``
    restricts the tasks to those labels (a meta-train or meta-test split of the classes).
    Each task is a :class:`FewShotTask`: support ``(x, y)`` with ``n_way * k_shot`` samples and
    query ``(x, y)`` with ``n_way * q_queries``, class by class (``y`` is
    ``[0]*k + [1]*k + ...``); ``task.classes`` holds the original label of each new one.
    """

    def __init__(self, dataset, n_way: int, k_shot: int, q_queries: int = 1, num_tasks: int = 1000,
                 classes: Sequence[int] | None = None, seed: int | None = None):
        self.n_way = _count(n_way, "n_way", 1)
        self.k_shot = _count(k_shot, "k_shot", 1)
        self.q_queries = _count(q_queries, "q_queries", 1)
        self.num_tasks = _count(num_tasks, "num_tasks", 1)
        self.seed = task_seed(seed, "FewShotTasks")
        samples, labels, self._gather = _arrays(dataset)
        if labels.ndim != 1 or labels.dtype.kind not in "iub":
            raise ValueError(f"FewShotTasks: labels must be one integer class per sample, got an array of "
                             f"shape {labels.shape} and dtype {labels.dtype}")
        present = np.unique(labels)
        if classes is None:
            chosen = present
        else:
            chosen = np.unique(np.asarray(classes))
            absent = sorted(set(chosen.tolist()) - set(present.tolist()))
            if absent:
                raise ValueError(f"FewShotTasks: classes {absent} have no samples in the dataset; its labels are "
                                 f"{present.tolist()}")
        if self.n_way > len(chosen):
            raise ValueError(f"FewShotTasks: n_way={self.n_way} is more than the {len(chosen)} classes available "
                             f"({chosen.tolist()})")
        per_class = self.k_shot + self.q_queries
        self._members = {int(c): np.flatnonzero(labels == c) for c in chosen}
        short = {c: len(m) for c, m in self._members.items() if len(m) < per_class}
        if short:
            raise ValueError(f"FewShotTasks: k_shot + q_queries = {per_class} samples are needed from each class, "
                             f"but these classes have fewer (class: count): {short}")
        self.classes = np.asarray(sorted(self._members), dtype=np.int64)

    def __len__(self) -> int:
        return self.num_tasks

    def __getitem__(self, index: int) -> FewShotTask:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(f"FewShotTasks: a task index is an integer, got {type(index).__name__}")
        if not -self.num_tasks <= index < self.num_tasks:
            raise IndexError(f"FewShotTasks: task {index} out of range for {self.num_tasks} tasks")
        rng = np.random.default_rng([self.seed, int(index) % self.num_tasks])
        drawn = rng.choice(self.classes, self.n_way, replace=False)
        support, query = [], []
        for c in drawn:
            picked = rng.choice(self._members[int(c)], self.k_shot + self.q_queries, replace=False)
            support.append(picked[:self.k_shot])
            query.append(picked[self.k_shot:])
        new_labels = np.arange(self.n_way, dtype=np.int64)
        support_y = np.repeat(new_labels, self.k_shot)
        query_y = np.repeat(new_labels, self.q_queries)
        return FewShotTask((self._gather(np.concatenate(support)), support_y),
                           (self._gather(np.concatenate(query)), query_y), classes=drawn.astype(np.int64))

    def __iter__(self) -> Iterator[FewShotTask]:
        for i in range(self.num_tasks):
            yield self[i]

    def __repr__(self) -> str:
        return (f"FewShotTasks({self.n_way}-way {self.k_shot}-shot, {self.q_queries} queries per class, "
                f"{self.num_tasks} tasks from {len(self.classes)} classes, seed={self.seed})")
