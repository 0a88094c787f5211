"""Symplectic integrators: one step equals the hand-written update; leapfrog keeps the energy of
a harmonic oscillator within O(dt^2) (error ratio ~4 when dt halves) and bounded over long times,
symplectic Euler within O(dt), while explicit Euler drifts; the one-step map of the pendulum
preserves area; any field (arrays or tensors); errors."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina.models import leapfrog, stormer_verlet, symplectic_euler


def oscillator(state):
    return np.concatenate([state[..., 1:], -state[..., :1]], axis=-1)


def pendulum(state):
    return np.concatenate([state[..., 1:], -np.sin(state[..., :1])], axis=-1)


def energy(trajectory):
    return 0.5 * (trajectory[..., 0] ** 2 + trajectory[..., 1] ** 2)


def test_one_step_equals_the_hand_written_update():
    q, p, dt = 0.7, -0.3, 0.2
    p_half = p - dt / 2 * np.sin(q)
    q1 = q + dt * p_half
    p1 = p_half - dt / 2 * np.sin(q1)
    np.testing.assert_allclose(leapfrog(pendulum, [q, p], dt, 1)[1], [q1, p1], rtol=1e-15)
    p1 = p - dt * np.sin(q)
    np.testing.assert_allclose(symplectic_euler(pendulum, [q, p], dt, 1)[1], [q + dt * p1, p1], rtol=1e-15)
    assert stormer_verlet is leapfrog


def test_leapfrog_energy_error_is_second_order_and_bounded():
    start = np.array([[1.0, 0.0], [0.3, -0.8]])
    errors = []
    for dt in (0.2, 0.1):
        trajectory = leapfrog(oscillator, start, dt, int(round(200 / dt)))
        error = np.abs(energy(trajectory) - energy(start))
        quarter = len(error) // 4
        assert error[-quarter:].max() < 1.05 * error[:quarter].max()     # no drift over 30 periods
        assert error.max() < 0.5 * dt ** 2 * energy(start).max()
        errors.append(error.max())
    assert 3.5 < errors[0] / errors[1] < 4.5


def test_symplectic_euler_is_first_order_and_explicit_euler_drifts():
    start = np.array([1.0, 0.0])
    dt, steps = 0.05, 4000
    symplectic = np.abs(energy(symplectic_euler(oscillator, start, dt, steps)) - 0.5)
    assert symplectic.max() < dt                                        # bounded, O(dt)
    assert abs(energy(symplectic_euler(oscillator, start, dt / 2, 2 * steps)) - 0.5).max() < 0.6 * symplectic.max()
    euler = [start]
    for _ in range(steps):
        euler.append(euler[-1] + dt * oscillator(euler[-1]))
    assert energy(np.array(euler))[-1] - 0.5 > 100 * symplectic.max()  # grows by (1 + dt^2)^steps


def test_one_step_map_preserves_area():
    h, dt = 1e-6, 0.3
    for method in (leapfrog, symplectic_euler):
        base = np.array([0.9, 0.4])
        columns = [(method(pendulum, base + h * e, dt, 1)[1] - method(pendulum, base - h * e, dt, 1)[1]) / (2 * h)
                   for e in np.eye(2)]
        assert abs(np.linalg.det(np.stack(columns, axis=1)) - 1) < 1e-8


def test_fields_returning_tensors():
    def field(state):
        x = lamina.tensor(state, dtype=np.float64)
        return lamina.functional.concat([x[:, 1:], -x[:, :1]], axis=1)
    start = np.array([[1.0, 0.5]])
    np.testing.assert_allclose(leapfrog(field, start, 0.1, 5), leapfrog(oscillator, start, 0.1, 5), rtol=1e-14)


def test_errors():
    with pytest.raises(ValueError, match="even size"):
        leapfrog(oscillator, np.zeros(3), 0.1, 2)
    with pytest.raises(ValueError, match="dt must be positive"):
        symplectic_euler(oscillator, np.zeros(2), 0.0, 2)
    with pytest.raises(ValueError, match="steps"):
        leapfrog(oscillator, np.zeros(2), 0.1, 0)
    with pytest.raises(ValueError, match="state's shape"):
        leapfrog(lambda s: s[..., :1], np.zeros(2), 0.1, 1)
