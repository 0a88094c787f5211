"""Trajectories of small dynamical systems for data-driven dynamics (SINDy, DMD, Koopman
autoencoders). Each ``*_trajectory`` integrates its system with SciPy's ``solve_ivp``
(RK45, tight tolerances) and returns the states at the times ``t``, shape (len(t), n).

* Lorenz (1963): x' = sigma (y - x), y' = x (rho - z) - y, z' = x y - beta z
  (sigma 10, rho 28, beta 8/3: the chaotic attractor).
* Van der Pol: x' = v, v' = mu (1 - x^2) v - x.
* Damped, optionally forced, oscillator: x' = v, v' = -2 zeta omega v - omega^2 x + F cos(Omega t).
* Slow manifold (Lusch et al. 2018): x1' = mu x1, x2' = lambda (x2 - x1^2), whose Koopman
  observables (x1, x2, x1^2) evolve linearly with eigenvalues mu, lambda and 2 mu.
* :func:`traveling_wave_field`: a sum of waves a_j cos(k_j x - omega_j t) e^(gamma_j t) on a grid,
  the textbook snapshot matrix for DMD (one mode pair per wave).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy

__all__ = ["damped_oscillator_trajectory", "lorenz_trajectory", "slow_manifold_trajectory",
           "traveling_wave_field", "van_der_pol_trajectory"]


def _times(t, who: str) -> numpy.ndarray:
    t = numpy.asarray(t, dtype=numpy.float64)
    if t.ndim != 1 or t.size < 2 or not numpy.all(numpy.diff(t) > 0):
        raise ValueError(f"{who}: t must be a 1-D increasing array of at least 2 times, got shape {t.shape}")
    return t


def _integrate(rhs: Callable, x0, t, who: str, n: int, rtol: float = 1e-10, atol: float = 1e-10) -> numpy.ndarray:
    from scipy.integrate import solve_ivp

    t = _times(t, who)
    x0 = numpy.asarray(x0, dtype=numpy.float64)
    if x0.shape != (n,):
        raise ValueError(f"{who}: x0 must have shape ({n},), got {x0.shape}")
    solution = solve_ivp(rhs, (t[0], t[-1]), x0, t_eval=t, rtol=rtol, atol=atol)
    if not solution.success:
        raise RuntimeError(f"{who}: integration failed: {solution.message}")
    return solution.y.T


def lorenz_trajectory(t, x0: Sequence[float] = (-8.0, 8.0, 27.0), sigma: float = 10.0, rho: float = 28.0,
                      beta: float = 8.0 / 3.0) -> numpy.ndarray:
    """The Lorenz system from ``x0`` sampled at ``t``: (len(t), 3)."""
    def rhs(_, s):
        x, y, z = s
        return [sigma * (y - x), x * (rho - z) - y, x * y - beta * z]
    return _integrate(rhs, x0, t, "lorenz_trajectory", 3)


def van_der_pol_trajectory(t, x0: Sequence[float] = (2.0, 0.0), mu: float = 1.0) -> numpy.ndarray:
    """The Van der Pol oscillator from ``x0`` sampled at ``t``: (len(t), 2) columns x, v."""
    def rhs(_, s):
        return [s[1], mu * (1.0 - s[0] ** 2) * s[1] - s[0]]
    return _integrate(rhs, x0, t, "van_der_pol_trajectory", 2)


def damped_oscillator_trajectory(t, x0: Sequence[float] = (1.0, 0.0), omega: float = 1.0, zeta: float = 0.1,
                                 force: float = 0.0, force_frequency: float = 1.0) -> numpy.ndarray:
    """A damped harmonic oscillator (forced by ``force`` cos(``force_frequency`` t)) from ``x0``
    sampled at ``t``: (len(t), 2) columns x, v."""
    if omega <= 0 or zeta < 0:
        raise ValueError(f"damped_oscillator_trajectory: need omega > 0 and zeta >= 0, got {omega}, {zeta}")

    def rhs(time, s):
        return [s[1], -2.0 * zeta * omega * s[1] - omega ** 2 * s[0] + force * numpy.cos(force_frequency * time)]
    return _integrate(rhs, x0, t, "damped_oscillator_trajectory", 2)


def slow_manifold_trajectory(t, x0: Sequence[float] = (1.0, 1.0), mu: float = -0.05,
                             lam: float = -1.0) -> numpy.ndarray:
    """x1' = mu x1, x2' = lam (x2 - x1^2) from ``x0`` sampled at ``t``, in closed form:
    x1 = a e^(mu t), x2 = c x1^2 + (b - c a^2) e^(lam t) with c = lam / (lam - 2 mu)."""
    t = _times(t, "slow_manifold_trajectory")
    if lam == 2 * mu:
        raise ValueError(f"slow_manifold_trajectory: lam must differ from 2 mu (got lam={lam}, mu={mu})")
    a, b = (float(v) for v in x0)
    x1 = a * numpy.exp(mu * (t - t[0]))
    c = lam / (lam - 2.0 * mu)
    x2 = c * x1 ** 2 + (b - c * a ** 2) * numpy.exp(lam * (t - t[0]))
    return numpy.stack([x1, x2], axis=1)


def traveling_wave_field(x, t, wavenumbers: Sequence[float] = (1.0, 3.0), frequencies: Sequence[float] = (2.0, 5.0),
                         amplitudes: Sequence[float] | None = None,
                         growth_rates: Sequence[float] | None = None) -> numpy.ndarray:
    """Snapshots (len(t), len(x)) of sum_j a_j cos(k_j x - omega_j t) e^(gamma_j t). Each wave is
    two DMD modes with continuous-time eigenvalues gamma_j +- i omega_j."""
    x = numpy.asarray(x, dtype=numpy.float64)
    t = _times(t, "traveling_wave_field")
    k, w = numpy.asarray(wavenumbers, float), numpy.asarray(frequencies, float)
    a = numpy.ones_like(k) if amplitudes is None else numpy.asarray(amplitudes, float)
    g = numpy.zeros_like(k) if growth_rates is None else numpy.asarray(growth_rates, float)
    if not k.shape == w.shape == a.shape == g.shape or k.ndim != 1:
        raise ValueError("traveling_wave_field: wavenumbers, frequencies, amplitudes and growth_rates must be "
                         f"1-D of one length, got {k.shape}, {w.shape}, {a.shape}, {g.shape}")
    phase = k[:, None, None] * x[None, None, :] - w[:, None, None] * t[None, :, None]
    return numpy.sum(a[:, None, None] * numpy.cos(phase) * numpy.exp(g[:, None, None] * t[None, :, None]), axis=0)
