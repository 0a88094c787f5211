"""Dynamic mode decomposition: eigenvalues and modes of a known linear system, the frequencies and
growth rates of travelling waves, rank truncation (energy, Gavish-Donoho optimal hard threshold),
reconstruction and forecasts, time-delay (Hankel) DMD and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.data import traveling_wave_field
from lamina.errors import ShapeError
from lamina.models import DMD, HankelDMD, optimal_svht_coefficient, svd_rank


def _linear_system(seed=0):
    rng = np.random.default_rng(seed)
    eigenvalues = np.array([0.9 * np.exp(0.3j), 0.9 * np.exp(-0.3j), 0.7, -0.5])
    basis = rng.standard_normal((4, 4))
    rotation = np.array([[1, 1j], [1, -1j]]) / np.sqrt(2)               # a real A with a complex pair
    vectors = basis.astype(complex)
    vectors[:, :2] = basis[:, :2] @ rotation.T
    a = (vectors @ np.diag(eigenvalues) @ np.linalg.inv(vectors)).real
    x = [rng.standard_normal(4)]
    for _ in range(29):
        x.append(a @ x[-1])
    return a, np.array(x), eigenvalues


def test_recovers_the_eigenvalues_and_modes_of_a_linear_system():
    a, x, eigenvalues = _linear_system()
    dmd = DMD(svd_rank=-1).fit(x[:20])
    np.testing.assert_allclose(np.sort_complex(dmd.eigenvalues), np.sort_complex(eigenvalues), atol=1e-8)
    np.testing.assert_allclose(a @ dmd.modes, dmd.modes * dmd.eigenvalues, atol=1e-8)    # exact modes: A phi = l phi
    np.testing.assert_allclose(dmd.reconstruct().real, x[:20], atol=1e-8)
    np.testing.assert_allclose(dmd.forecast(10).real, x[20:], atol=1e-8)
    np.testing.assert_allclose(np.abs(dmd.reconstruct().imag).max(), 0, atol=1e-8)
    projected = DMD(svd_rank=4, exact=False).fit(x[:20])
    np.testing.assert_allclose(np.sort_complex(projected.eigenvalues), np.sort_complex(eigenvalues), atol=1e-8)
    np.testing.assert_allclose(dmd.modes, projected.modes * projected.eigenvalues, atol=1e-10)   # Phi = A U W


def test_frequencies_and_growth_rates_of_two_travelling_waves():
    dt = 0.05
    grid, t = np.linspace(0, 2 * np.pi, 64, endpoint=False), dt * np.arange(120)
    field = traveling_wave_field(grid, t, wavenumbers=(1, 3), frequencies=(2.0, 5.0), growth_rates=(0.0, -0.1))
    dmd = DMD(svd_rank=4, dt=dt).fit(field)
    order = np.argsort(np.abs(dmd.frequencies))
    np.testing.assert_allclose(np.abs(dmd.frequencies[order]), np.array([2, 2, 5, 5]) / (2 * np.pi), atol=1e-8)
    np.testing.assert_allclose(dmd.growth_rates[order], [0, 0, -0.1, -0.1], atol=1e-8)
    np.testing.assert_allclose(dmd.reconstruct().real, field, atol=1e-8)
    future = traveling_wave_field(grid, dt * np.arange(120, 140), (1, 3), (2.0, 5.0), growth_rates=(0.0, -0.1))
    np.testing.assert_allclose(dmd.forecast(20).real, future, atol=1e-7)
    assert DMD(svd_rank=0, dt=dt).fit(field).rank == 4                   # the hard threshold finds the 4 modes


def test_optimal_hard_threshold_is_the_gavish_donoho_formula():
    for beta in (0.1, 0.5, 1.0):
        assert optimal_svht_coefficient(beta) == pytest.approx(0.56 * beta ** 3 - 0.95 * beta ** 2 + 1.82 * beta + 1.43)
    assert optimal_svht_coefficient(1.0) == pytest.approx(2.858, abs=3e-3)    # their exact omega(1), approximated
    rng = np.random.default_rng(5)
    low_rank = rng.standard_normal((200, 3)) @ rng.standard_normal((3, 60)) * 3
    noisy = low_rank + 0.1 * rng.standard_normal((200, 60))
    s = np.linalg.svd(noisy, compute_uv=False)
    tau = optimal_svht_coefficient(60 / 200) * np.median(s)
    assert svd_rank(s, noisy.shape, 0) == np.sum(s > tau) == 3
    energy = np.cumsum(s ** 2) / np.sum(s ** 2)
    assert svd_rank(s, noisy.shape, 0.999) == np.argmax(energy > 0.999) + 1
    assert svd_rank(s, noisy.shape, -1) == 60 and svd_rank(s, noisy.shape, 7) == 7


def test_hankel_dmd_finds_two_frequencies_in_a_scalar_signal():
    dt = 0.1
    t = dt * np.arange(200)
    signal = (np.cos(1.5 * t) + 0.5 * np.sin(4.0 * t))[:, None]
    dmd = HankelDMD(delays=6, svd_rank=4, dt=dt).fit(signal)
    np.testing.assert_allclose(np.sort(np.abs(dmd.continuous_eigenvalues.imag)), [1.5, 1.5, 4.0, 4.0], atol=1e-8)
    np.testing.assert_allclose(dmd.reconstruct().real, signal, atol=1e-8)
    np.testing.assert_allclose(dmd.forecast(5).real[:, 0], np.cos(1.5 * (t[-1] + dt * np.arange(1, 6)))
                               + 0.5 * np.sin(4.0 * (t[-1] + dt * np.arange(1, 6))), atol=1e-7)


def test_clear_errors():
    _, x, _ = _linear_system()
    with pytest.raises(ValueError, match="larger than the data allows"):
        DMD(svd_rank=12).fit(x[:10])
    with pytest.raises(ValueError, match="numerical rank"):
        DMD(svd_rank=4).fit(np.tile(x[:10, :1], (1, 4)))
    with pytest.raises(ShapeError, match="n_snapshots"):
        DMD().fit(np.zeros(10))
    with pytest.raises(ValueError, match="rank must be"):
        DMD(svd_rank=-3).fit(x)
    with pytest.raises(RuntimeError, match="call fit first"):
        DMD().forecast(3)
