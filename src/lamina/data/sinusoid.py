"""The sinusoid regression tasks of the MAML paper (Finn et al. 2017, section 5.1).

Each task is a function y = A sin(x - phi), amplitude A uniform in [0.1, 5] and phase phi uniform
in [0, pi]; its points x are uniform in [-5, 5]. With K = 10 support points a model must find
A and phi, which one model trained on all tasks at once cannot: averaged over phases its
best answer is close to y = 0.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterator

import numpy as np

from lamina.data.few_shot import FewShotTask, task_seed

__all__ = ["SinusoidTasks"]


def _interval(value, name: str) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"SinusoidTasks: {name} must be a pair (low, high) of numbers, got {value!r}") from None
    if not low <= high:
        raise ValueError(f"SinusoidTasks: {name} must have low <= high, got {value!r}")
    return low, high


class SinusoidTasks:
    """``num_tasks`` sinusoid regression tasks: ``for support, query in tasks``, or ``tasks[i]``.

    Support ``(x, y)`` holds ``k_shot`` points and query ``(x, y)`` ``q_queries`` points, each of
    shape ``(n, 1)`` in ``dtype``; ``task.amplitude`` and ``task.phase`` are the task's A and phi.
    Task ``i`` comes from a generator seeded by (seed, i).
    """

    def __init__(self, k_shot: int = 10, q_queries: int = 10, num_tasks: int = 1000,
                 amplitude: tuple[float, float] = (0.1, 5.0), phase: tuple[float, float] = (0.0, math.pi),
                 x_range: tuple[float, float] = (-5.0, 5.0), seed: int | None = None, dtype=np.float32):
        for name, value in (("k_shot", k_shot), ("q_queries", q_queries), ("num_tasks", num_tasks)):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
                raise ValueError(f"SinusoidTasks: {name} must be an integer >= 1, got {value!r}")
        self.k_shot, self.q_queries, self.num_tasks = int(k_shot), int(q_queries), int(num_tasks)
        self.amplitude = _interval(amplitude, "amplitude")
        self.phase = _interval(phase, "phase")
        self.x_range = _interval(x_range, "x_range")
        self.seed = task_seed(seed, "SinusoidTasks")
        self.dtype = np.dtype(dtype)

    def __len__(self) -> int:
        return self.num_tasks

    def __getitem__(self, index: int) -> FewShotTask:
        if isinstance(index, bool) or not isinstance(index, numbers.Integral):
            raise TypeError(f"SinusoidTasks: a task index is an integer, got {type(index).__name__}")
        if not -self.num_tasks <= index < self.num_tasks:
            raise IndexError(f"SinusoidTasks: task {index} out of range for {self.num_tasks} tasks")
        rng = np.random.default_rng([self.seed, int(index) % self.num_tasks])
        amplitude = float(rng.uniform(*self.amplitude))
        phase = float(rng.uniform(*self.phase))
        x = rng.uniform(*self.x_range, size=(self.k_shot + self.q_queries, 1))
        y = amplitude * np.sin(x - phase)
        x, y = x.astype(self.dtype), y.astype(self.dtype)
        k = self.k_shot
        return FewShotTask((x[:k], y[:k]), (x[k:], y[k:]), amplitude=amplitude, phase=phase)

    def __iter__(self) -> Iterator[FewShotTask]:
        for i in range(self.num_tasks):
            yield self[i]

    def __repr__(self) -> str:
        return (f"SinusoidTasks({self.k_shot}-shot, {self.q_queries} queries, {self.num_tasks} tasks, "
                f"amplitude={self.amplitude}, phase={self.phase}, seed={self.seed})")
