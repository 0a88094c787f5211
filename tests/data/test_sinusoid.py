"""SinusoidTasks: the MAML paper's regression tasks, y = A sin(x - phi), seeded."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.data import SinusoidTasks


def test_tasks_follow_their_sinusoid_within_the_ranges():
    tasks = SinusoidTasks(k_shot=5, q_queries=7, num_tasks=50, seed=0)
    amplitudes, phases = [], []
    for (xs, ys), (xq, yq) in tasks:
        assert xs.shape == ys.shape == (5, 1) and xq.shape == yq.shape == (7, 1) and xs.dtype == np.float32
        assert np.all(np.abs(np.concatenate([xs, xq])) <= 5.0)
    for task in tasks:
        amplitudes.append(task.amplitude)
        phases.append(task.phase)
        x = np.concatenate([task.support[0], task.query[0]]).astype(np.float64)
        y = np.concatenate([task.support[1], task.query[1]])
        np.testing.assert_allclose(y, task.amplitude * np.sin(x - task.phase), atol=1e-5)
    assert 0.1 <= min(amplitudes) and max(amplitudes) <= 5.0 and max(amplitudes) - min(amplitudes) > 3.0
    assert 0.0 <= min(phases) and max(phases) <= np.pi and max(phases) - min(phases) > 2.0


def test_the_seed_fixes_the_tasks():
    a, b, c = SinusoidTasks(seed=4), SinusoidTasks(seed=4), SinusoidTasks(seed=5)
    np.testing.assert_array_equal(a[10].support[0], b[10].support[0])
    assert a[10].amplitude == b[10].amplitude and a[10].amplitude != c[10].amplitude
    assert SinusoidTasks(dtype=np.float64, seed=1)[0].query[1].dtype == np.float64


def test_errors_are_clear():
    with pytest.raises(ValueError, match="SinusoidTasks: k_shot must be an integer >= 1, got 0"):
        SinusoidTasks(k_shot=0)
    with pytest.raises(ValueError, match=r"SinusoidTasks: amplitude must have low <= high, got \(5, 1\)"):
        SinusoidTasks(amplitude=(5, 1))
    with pytest.raises(IndexError, match="SinusoidTasks: task 2 out of range for 2 tasks"):
        SinusoidTasks(num_tasks=2)[2]
