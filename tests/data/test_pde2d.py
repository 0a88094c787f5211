"""lamina.data.pde2d: 2-D random fields, the Darcy flow solver (second-order convergence on a
manufactured solution, a symmetric positive definite matrix) and the pseudo-spectral
Navier-Stokes solver (the exact decay of a Taylor-Green vortex, conservation of the mean
vorticity, convergence in time) and the datasets built on them."""

import numpy as np
import pytest
import scipy.sparse

from lamina.data import (
    darcy_flow_dataset,
    darcy_matrix,
    darcy_solve,
    gaussian_random_field_2d,
    navier_stokes_2d_solve,
    navier_stokes_dataset,
    navier_stokes_forcing,
)


def nodes(s: int):
    """The node grid (i h, j h), h = 1 / (s - 1), indexed [i, j]."""
    x = np.linspace(0.0, 1.0, s)
    return np.meshgrid(x, x, indexing="ij")


def periodic(s: int):
    x = np.arange(s) / s
    return np.meshgrid(x, x, indexing="ij")


# -- random fields ------------------------------------------------------------------------------
def test_random_field_spectrum_and_statistics():
    """E|u_hat_k|^2 = sigma^2 (4 pi^2 |k|^2 + tau^2)^-alpha at every k (the self-conjugate ones
    and those of the first row and column included), zero mean, seeded."""
    alpha, tau, sigma, s = 2.0, 3.0, 2.0, 8
    fields = gaussian_random_field_2d(3000, s, alpha, tau, sigma, seed=0)
    assert fields.shape == (3000, s, s) and fields.dtype == np.float64
    coefficients = np.fft.fft2(fields) / s ** 2
    np.testing.assert_allclose(coefficients[:, 0, 0], 0.0, atol=1e-12)
    k = np.fft.fftfreq(s, d=1.0 / s)
    expected = sigma ** 2 * (4 * np.pi ** 2 * (k[:, None] ** 2 + k[None, :] ** 2) + tau ** 2) ** -alpha
    measured = (np.abs(coefficients) ** 2).mean(axis=0)
    for index in [(0, 1), (1, 0), (1, 1), (2, 3), (s // 2, 0), (s // 2, s // 2), (3, s - 2)]:
        assert measured[index] == pytest.approx(expected[index], rel=0.1), index
    # the pointwise variance is the sum of the spectrum
    assert fields.var(axis=0).mean() == pytest.approx(expected.sum() - expected[0, 0], rel=0.05)
    np.testing.assert_array_equal(fields[:3], gaussian_random_field_2d(3, s, alpha, tau, sigma, seed=0)[:3])
    assert not np.array_equal(fields[:2], gaussian_random_field_2d(2, s, alpha, tau, sigma, seed=1))


def test_random_field_default_scale_is_tau_to_the_alpha_minus_one():
    a = gaussian_random_field_2d(2, 16, alpha=2.5, tau=7.0, seed=3)
    b = gaussian_random_field_2d(2, 16, alpha=2.5, tau=7.0, sigma=7.0 ** 1.5, seed=3)
    np.testing.assert_allclose(a, b, rtol=1e-12)


# -- Darcy flow ---------------------------------------------------------------------------------
def manufactured(s: int):
    """a smooth and positive, u vanishing on the boundary, f = -div(a grad u) exactly."""
    x, y = nodes(s)
    pi = np.pi
    a = 1 + 0.5 * np.sin(2 * pi * x + 1) * np.cos(pi * y)
    a_x, a_y = pi * np.cos(2 * pi * x + 1) * np.cos(pi * y), -0.5 * pi * np.sin(2 * pi * x + 1) * np.sin(pi * y)
    u = np.exp(x) * np.sin(pi * x) * np.sin(2 * pi * y)
    u_x = np.exp(x) * (np.sin(pi * x) + pi * np.cos(pi * x)) * np.sin(2 * pi * y)
    u_xx = np.exp(x) * ((1 - pi ** 2) * np.sin(pi * x) + 2 * pi * np.cos(pi * x)) * np.sin(2 * pi * y)
    u_y, u_yy = 2 * pi * np.exp(x) * np.sin(pi * x) * np.cos(2 * pi * y), -4 * pi ** 2 * u
    return a, -(a_x * u_x + a_y * u_y + a * (u_xx + u_yy)), u


def test_darcy_solver_converges_at_second_order():
    errors = []
    for s in (17, 33, 65):
        a, f, exact = manufactured(s)
        errors.append(np.abs(darcy_solve(a, f) - exact).max())
    orders = np.log2(np.array(errors[:-1]) / np.array(errors[1:]))
    print(f"Darcy max errors {errors}, orders {orders}")
    assert np.all(orders > 1.9) and errors[-1] < 2e-3


def test_darcy_matrix_is_symmetric_positive_definite_with_harmonic_face_weights():
    a = np.where(gaussian_random_field_2d(1, 9, seed=4)[0] >= 0, 12.0, 3.0)
    matrix = darcy_matrix(a)
    assert scipy.sparse.issparse(matrix) and matrix.shape == (49, 49)
    dense = matrix.toarray()
    np.testing.assert_allclose(dense, dense.T, rtol=0, atol=1e-12)
    assert np.linalg.eigvalsh(dense).min() > 0
    # 5 points: each row couples a node to its (at most 4) neighbours with negative weights
    assert np.all((dense != 0).sum(axis=1) <= 5) and np.all(dense - np.diag(np.diag(dense)) <= 0)
    # each face weighs the harmonic mean of its two nodes' permeabilities
    a = np.random.default_rng(0).uniform(1.0, 10.0, (9, 9))
    dense, h2 = darcy_matrix(a).toarray(), (1 / 8) ** 2

    def face(p, q):
        return 2 * a[p] * a[q] / (a[p] + a[q])

    assert dense[0, 1] * h2 == pytest.approx(-face((1, 1), (1, 2)))
    assert dense[0, 7] * h2 == pytest.approx(-face((1, 1), (2, 1)))
    assert dense[8, 8] * h2 == pytest.approx(face((2, 2), (1, 2)) + face((2, 2), (3, 2)) + face((2, 2), (2, 1))
                                             + face((2, 2), (2, 3)))
    assert dense[6, 7] == 0                                  # (1, 7) and (2, 1) are not neighbours
    # a constant permeability gives the 5-point Laplacian: the solution of -Delta u = f
    laplacian = darcy_matrix(np.full((5, 5), 2.0)).toarray() * (1 / 4) ** 2 / 2
    np.testing.assert_allclose(np.diag(laplacian), 4.0)


def test_darcy_solve_batches_and_scales():
    a = np.where(gaussian_random_field_2d(3, 12, seed=5) >= 0, 12.0, 3.0)
    a = np.pad(a, ((0, 0), (0, 1), (0, 1)), mode="wrap")
    u = darcy_solve(a)
    assert u.shape == (3, 13, 13)
    assert np.all(u[:, 0] == 0) and np.all(u[:, -1] == 0) and np.all(u[:, :, 0] == 0) and np.all(u[:, :, -1] == 0)
    assert np.all(u[:, 1:-1, 1:-1] > 0)                       # the maximum principle: f > 0 gives u > 0
    np.testing.assert_allclose(u[1], darcy_solve(a[1]), rtol=1e-12)
    np.testing.assert_allclose(darcy_solve(2 * a, 3.0), 1.5 * u, rtol=1e-10)   # linear in f, 1/a


def test_darcy_dataset_thresholds_a_field_and_subsamples_the_fine_solution():
    a, u = darcy_flow_dataset(4, 9, solver_resolution=17, seed=2)
    assert a.shape == u.shape == (4, 9, 9, 1) and a.dtype == u.dtype == np.float32
    assert set(np.unique(a)) <= {3.0, 12.0} and 0.2 < (a == 12).mean() < 0.8
    field = gaussian_random_field_2d(4, 16, seed=2)
    fine_a = np.where(np.pad(field, ((0, 0), (0, 1), (0, 1)), mode="wrap") >= 0, 12.0, 3.0)
    np.testing.assert_array_equal(a[..., 0], fine_a[:, ::2, ::2])
    np.testing.assert_allclose(u[..., 0], darcy_solve(fine_a)[:, ::2, ::2], rtol=1e-5)
    assert darcy_flow_dataset(2, 16)[0].shape == (2, 16, 16, 1)         # refined to 61 nodes by default


def test_darcy_bad_arguments_are_named():
    with pytest.raises(ValueError, match="darcy_solve.*s x s"):
        darcy_solve(np.ones((4, 5)))
    with pytest.raises(ValueError, match="darcy_matrix.*positive"):
        darcy_solve(np.zeros((5, 5)))
    with pytest.raises(ValueError, match="darcy_solve: f"):
        darcy_solve(np.ones((5, 5)), np.ones(3))
    with pytest.raises(ValueError, match="darcy_flow_dataset: solver_resolution"):
        darcy_flow_dataset(2, 9, solver_resolution=20)


# -- Navier-Stokes ------------------------------------------------------------------------------
def taylor_green(s: int):
    """w = sin(2 pi x) sin(2 pi y): the nonlinear term vanishes, so w(t) = e^{-8 pi^2 nu t} w(0)."""
    x, y = periodic(s)
    return np.sin(2 * np.pi * x) * np.sin(2 * np.pi * y)


def test_taylor_green_vortex_decays_exactly_at_second_order_in_time():
    w0, nu, time = taylor_green(16), 0.02, 1.0
    exact = np.exp(-8 * np.pi ** 2 * nu * time) * w0
    errors = [np.abs(navier_stokes_2d_solve(w0, nu, time, dt=dt) - exact).max() / np.abs(exact).max()
              for dt in (0.1, 0.05)]
    assert errors[1] < 1e-3 and errors[0] / errors[1] == pytest.approx(4.0, rel=0.05)


def test_mean_vorticity_is_conserved_and_shifts_commute():
    fields = gaussian_random_field_2d(3, 32, alpha=2.5, tau=7.0, seed=1) + np.array([0.0, 0.5, -1.0])[:, None, None]
    forcing = navier_stokes_forcing(32)
    assert abs(forcing.mean()) < 1e-12
    w = navier_stokes_2d_solve(fields, 1e-3, 1.0, forcing, dt=0.025, record_steps=4)
    assert w.shape == (3, 4, 32, 32)
    np.testing.assert_allclose(w.mean(axis=(-2, -1)), np.broadcast_to(fields.mean(axis=(1, 2))[:, None], (3, 4)),
                               atol=1e-12)
    assert np.abs(w[:, -1] - fields).max() > 0.05 * np.abs(fields).max()         # the flow moved
    # the recorded trajectory ends where a single run ends; a shifted start gives the shifted flow
    np.testing.assert_allclose(w[:, -1], navier_stokes_2d_solve(fields, 1e-3, 1.0, forcing, dt=0.025), atol=1e-12)
    shifted = navier_stokes_2d_solve(np.roll(fields[:1], (5, 3), axis=(1, 2)), 1e-3, 1.0,
                                     np.roll(forcing, (5, 3), axis=(0, 1)), dt=0.025)
    np.testing.assert_allclose(shifted, np.roll(w[:1, -1], (5, 3), axis=(1, 2)), atol=1e-10)


def test_navier_stokes_converges_in_time_and_agrees_across_grids():
    """The explicit nonlinear step makes the scheme first order in dt; a smooth field gives the
    same flow on 32 and 64 points (spectral accuracy)."""
    w0 = gaussian_random_field_2d(1, 64, alpha=2.5, tau=7.0, seed=2)[0]
    run = lambda field, dt: navier_stokes_2d_solve(field, 1e-2, 0.5, dt=dt)  # noqa: E731
    reference = run(w0, 0.0025)
    errors = [np.abs(run(w0, dt) - reference).max() for dt in (0.02, 0.01)]
    assert 2.0 < errors[0] / errors[1] < 4.0
    np.testing.assert_allclose(run(w0[::2, ::2], 0.01), run(w0, 0.01)[::2, ::2], atol=1e-3 * np.abs(w0).max())


def test_navier_stokes_dataset_pairs_and_sequences():
    w0, w_t = navier_stokes_dataset(2, 16, time=0.5, dt=0.05, solver_resolution=32, seed=3)
    assert w0.shape == w_t.shape == (2, 16, 16, 1) and w_t.dtype == np.float32
    fine = gaussian_random_field_2d(2, 32, alpha=2.5, tau=7.0, seed=3)
    np.testing.assert_allclose(w0[..., 0], fine[:, ::2, ::2], rtol=1e-6, atol=1e-6)
    solved = navier_stokes_2d_solve(fine, 1e-3, 0.5, navier_stokes_forcing(32), dt=0.05)
    np.testing.assert_allclose(w_t[..., 0], solved[:, ::2, ::2], rtol=1e-5, atol=1e-5)
    _, trajectory = navier_stokes_dataset(2, 16, time=0.5, record_steps=5, dt=0.05, solver_resolution=32, seed=3)
    assert trajectory.shape == (2, 16, 16, 5)
    np.testing.assert_allclose(trajectory[..., -1], w_t[..., 0], atol=1e-5)


def test_navier_stokes_bad_arguments_are_named():
    with pytest.raises(ValueError, match="navier_stokes_2d_solve: viscosity"):
        navier_stokes_2d_solve(np.zeros((8, 8)), 0.0, 1.0)
    with pytest.raises(ValueError, match="max_steps"):
        navier_stokes_2d_solve(np.zeros((8, 8)), 1e-3, 10.0, dt=1e-3, max_steps=100)
    with pytest.raises(FloatingPointError, match="smaller dt"):
        navier_stokes_2d_solve(1e3 * gaussian_random_field_2d(1, 16, seed=0), 1e-4, 100.0, dt=0.5)
    with pytest.raises(ValueError, match="navier_stokes_dataset: solver_resolution"):
        navier_stokes_dataset(1, 16, solver_resolution=24)
