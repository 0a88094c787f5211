"""lamina.data.pde: Gaussian random fields, the exact heat solution operator and the
pseudo-spectral Burgers solver checked against exact solutions and conservation laws."""

import numpy as np
import pytest

from lamina.data import burgers_dataset, burgers_solve, gaussian_random_field_1d, heat_dataset, heat_solve


def grid(n: int) -> np.ndarray:
    return np.arange(n) / n


def cole_hopf(x, t, viscosity, c):
    """Burgers' exact solution u = -2 nu phi_x / phi for phi = c + e^{-4 pi^2 nu t} cos(2 pi x),
    which solves phi_t = nu phi_xx (Cole-Hopf transform), c > 1."""
    e = np.exp(-4 * np.pi ** 2 * viscosity * t)
    return 4 * np.pi * viscosity * e * np.sin(2 * np.pi * x) / (c + e * np.cos(2 * np.pi * x))


@pytest.mark.parametrize("n", [64, 128])
@pytest.mark.parametrize("viscosity, c", [(0.02, 1.1), (0.1, 2.0)])
def test_burgers_matches_the_cole_hopf_solution(n, viscosity, c):
    x = grid(n)
    u_t = burgers_solve(cole_hopf(x, 0.0, viscosity, c), viscosity, 0.5)
    exact = cole_hopf(x, 0.5, viscosity, c)
    assert np.abs(u_t - exact).max() < 1e-6 * np.abs(exact).max()


def test_burgers_solver_converges_with_the_grid():
    """The spectral error falls by orders of magnitude from 32 to 64 points."""
    errors = []
    for n in (32, 64):
        x = grid(n)
        u_t = burgers_solve(cole_hopf(x, 0.0, 0.02, 1.1), 0.02, 0.5)
        errors.append(np.abs(u_t - cole_hopf(x, 0.5, 0.02, 1.1)).max())
    assert errors[1] < errors[0] / 20


def test_burgers_conserves_the_mean_and_dissipates_energy():
    u0 = gaussian_random_field_1d(4, 128, seed=3) + np.array([[0.0], [0.3], [-0.5], [1.0]])
    u_t = burgers_solve(u0, 0.05, 0.3)
    np.testing.assert_allclose(u_t.mean(axis=1), u0.mean(axis=1), atol=1e-12)
    fluctuation = lambda u: ((u - u.mean(axis=1, keepdims=True)) ** 2).sum(axis=1)  # noqa: E731
    assert np.all(fluctuation(u_t) < fluctuation(u0))
    assert np.abs(u_t).max() <= np.abs(u0).max() + 1e-9            # the maximum principle


def test_burgers_of_a_constant_is_the_constant_and_time_zero_is_the_identity():
    u0 = np.full((2, 16), 0.7)
    np.testing.assert_allclose(burgers_solve(u0, 0.1, 1.0), u0, atol=1e-12)
    field = gaussian_random_field_1d(2, 32, seed=1)
    np.testing.assert_allclose(burgers_solve(field, 0.1, 0.0), field, atol=1e-12)


def test_heat_solution_of_a_sine_and_semigroup():
    x = grid(32)
    u0 = np.sin(2 * np.pi * 3 * x) + 0.25
    np.testing.assert_allclose(heat_solve(u0, 0.01, 2.0),
                               np.exp(-0.01 * (6 * np.pi) ** 2 * 2.0) * np.sin(6 * np.pi * x) + 0.25, atol=1e-12)
    field = gaussian_random_field_1d(3, 64, seed=4)
    np.testing.assert_allclose(heat_solve(heat_solve(field, 0.02, 0.3), 0.02, 0.7), heat_solve(field, 0.02, 1.0),
                               atol=1e-12)


def test_heat_and_burgers_agree_when_the_nonlinearity_is_negligible():
    """For a tiny field the u u_x term is second order: Burgers ~ heat."""
    field = 1e-4 * gaussian_random_field_1d(2, 64, seed=5)
    burgers, heat = burgers_solve(field, 0.05, 0.5), heat_solve(field, 0.05, 0.5)
    assert np.abs(burgers - heat).max() < 1e-3 * np.abs(heat).max()


def test_random_field_statistics():
    """Zero mean; the variance of every Fourier coefficient follows sigma^2 ((2 pi k)^2 + tau^2)^-alpha."""
    alpha, tau, sigma, n = 2.0, 5.0, 25.0, 32
    fields = gaussian_random_field_1d(4000, n, alpha, tau, sigma, seed=0)
    coefficients = np.fft.rfft(fields, axis=1) / n
    np.testing.assert_allclose(coefficients[:, 0], 0.0, atol=1e-12)
    k = 2 * np.pi * np.arange(1, 6)
    expected = sigma ** 2 * (k ** 2 + tau ** 2) ** -alpha
    np.testing.assert_allclose((np.abs(coefficients[:, 1:6]) ** 2).mean(axis=0), expected, rtol=0.1)
    np.testing.assert_array_equal(fields, gaussian_random_field_1d(4000, n, alpha, tau, sigma, seed=0))
    assert not np.array_equal(fields[:2], gaussian_random_field_1d(2, n, alpha, tau, sigma, seed=1))


def test_datasets_are_seeded_float32_pairs_at_the_chosen_resolution():
    u0, u_t = burgers_dataset(3, 32, viscosity=0.1, time=0.2, solver_resolution=64, seed=2)
    assert u0.shape == u_t.shape == (3, 32, 1) and u0.dtype == u_t.dtype == np.float32
    fine = gaussian_random_field_1d(3, 64, seed=2)
    np.testing.assert_allclose(u0[..., 0], fine[:, ::2], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(u_t[..., 0], burgers_solve(fine, 0.1, 0.2)[:, ::2], rtol=1e-5, atol=1e-6)
    again = burgers_dataset(3, 32, viscosity=0.1, time=0.2, solver_resolution=64, seed=2)
    np.testing.assert_array_equal(again[1], u_t)
    h0, h_t = heat_dataset(5, 16, seed=0)
    assert h0.shape == h_t.shape == (5, 16, 1) and h_t.dtype == np.float32
    np.testing.assert_allclose(h_t[..., 0], heat_solve(h0[..., 0].astype(np.float64), 0.01, 1.0), atol=1e-6)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="burgers_dataset: solver_resolution"):
        burgers_dataset(2, 24, solver_resolution=64)
    with pytest.raises(ValueError, match="burgers_solve: viscosity"):
        burgers_solve(np.zeros(8), 0.0, 1.0)
    with pytest.raises(ValueError, match="heat_solve"):
        heat_solve(np.zeros(()), 0.1, 1.0)
    with pytest.raises(ValueError, match="max_steps"):
        burgers_solve(np.sin(2 * np.pi * grid(64)) * 100, 0.01, 10.0, max_steps=100)
