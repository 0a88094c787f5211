"""Trajectories of dynamical systems: each against its equations (a closed form where one exists,
otherwise the right-hand side at the samples against a fine finite-difference derivative)."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.data import (
    damped_oscillator_trajectory,
    lorenz_trajectory,
    slow_manifold_trajectory,
    traveling_wave_field,
    van_der_pol_trajectory,
)


def test_lorenz_and_van_der_pol_follow_their_equations():
    t = np.arange(0, 1, 1e-3)
    x, y, z = lorenz_trajectory(t, x0=(1.0, 2.0, 20.0)).T
    rhs = np.stack([10 * (y - x), x * (28 - z) - y, x * y - 8 / 3 * z], axis=1)
    derivative = np.gradient(np.stack([x, y, z], axis=1), t, axis=0, edge_order=2)
    np.testing.assert_allclose(derivative[1:-1], rhs[1:-1], atol=0.05)
    u, v = van_der_pol_trajectory(t, mu=2.0).T
    derivative = np.gradient(np.stack([u, v], axis=1), t, axis=0, edge_order=2)
    np.testing.assert_allclose(derivative[1:-1], np.stack([v, 2.0 * (1 - u ** 2) * v - u], axis=1)[1:-1], atol=1e-3)


def test_damped_oscillator_matches_its_closed_form():
    t = np.linspace(0, 10, 200)
    omega, zeta = 2.0, 0.1
    damped = omega * np.sqrt(1 - zeta ** 2)
    expected = np.exp(-zeta * omega * t) * (np.cos(damped * t) + zeta * omega / damped * np.sin(damped * t))
    np.testing.assert_allclose(damped_oscillator_trajectory(t, omega=omega, zeta=zeta)[:, 0], expected, atol=1e-8)
    forced = damped_oscillator_trajectory(np.linspace(0, 60, 50), x0=(0, 0), omega=1.0, zeta=0.2, force=1.0,
                                          force_frequency=1.0)
    assert abs(np.abs(forced[-10:, 0]).max() - 1 / (2 * 0.2)) < 0.05            # resonance amplitude F / (2 zeta)


def test_slow_manifold_closed_form_solves_the_equations():
    from scipy.integrate import solve_ivp

    t = np.linspace(0, 5, 40)
    closed = slow_manifold_trajectory(t, (0.8, -0.4), mu=-0.1, lam=-2.0)
    numeric = solve_ivp(lambda _, s: [-0.1 * s[0], -2.0 * (s[1] - s[0] ** 2)], (0, 5), [0.8, -0.4], t_eval=t,
                        rtol=1e-11, atol=1e-12).y.T
    np.testing.assert_allclose(closed, numeric, atol=1e-8)


def test_traveling_wave_field_and_errors():
    grid, t = np.linspace(0, 1, 5), np.linspace(0, 1, 4)
    field = traveling_wave_field(grid, t, wavenumbers=(2.0,), frequencies=(3.0,), amplitudes=(0.5,),
                                 growth_rates=(0.1,))
    np.testing.assert_allclose(field, 0.5 * np.cos(2 * grid - 3 * t[:, None]) * np.exp(0.1 * t[:, None]))
    with pytest.raises(ValueError, match="1-D increasing"):
        lorenz_trajectory(np.array([0.0, 0.0, 1.0]))
    with pytest.raises(ValueError, match="x0 must have shape"):
        lorenz_trajectory(np.linspace(0, 1, 3), x0=(1.0, 2.0))
    with pytest.raises(ValueError, match="one length"):
        traveling_wave_field(grid, t, wavenumbers=(1.0, 2.0), frequencies=(1.0,))
