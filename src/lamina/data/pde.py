"""Data for operator learning: random initial conditions and the solutions of two periodic
1-D partial differential equations on x in [0, 1), sampled at the grid x_i = i / n.

* :func:`gaussian_random_field_1d`: periodic Gaussian random fields with covariance
  sigma^2 (-d^2/dx^2 + tau^2)^(-alpha), drawn through their Fourier series:
  u(x) = sum_k sqrt(lambda_k) xi_k e^{2 pi i k x}, lambda_k = sigma^2 ((2 pi k)^2 + tau^2)^(-alpha),
  xi_k standard complex normal (xi_{-k} = conj(xi_k)); the mean (k = 0) is 0.
* :func:`heat_solve`: the heat equation u_t = kappa u_xx solved exactly,
  u_hat_k(T) = exp(-kappa (2 pi k)^2 T) u_hat_k(0).
* :func:`burgers_solve`: viscous Burgers u_t + (u^2 / 2)_x = nu u_xx, pseudo-spectrally.
  The stiff linear part is integrated exactly by the integrating factor e^{nu k^2 t}
  (k = 2 pi m) and the rest, N(u_hat) = -(i k / 2) FFT(u^2), by the classical Runge-Kutta
  method (IF-RK4), with the 2/3 rule removing aliasing. The step obeys dt <= cfl dx / max|u_0|;
  max|u| never grows (maximum principle), so it stays stable for the whole run.
* :func:`heat_dataset`, :func:`burgers_dataset`: (u_0, u_T) pairs from random fields, float32
  arrays of shape (n_samples, resolution, 1) (the channel axis that FNO1D reads). Burgers is
  solved on a finer grid (``solver_resolution``) and subsampled.

Both equations conserve the mean of u (the k = 0 coefficient never changes).
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["burgers_dataset", "burgers_solve", "gaussian_random_field_1d", "heat_dataset", "heat_solve"]


def _positive(value: float, what: str) -> float:
    value = float(value)
    if not value > 0:
        raise ValueError(f"{what} must be positive, got {value!r}")
    return value


def _resolution(value: int, what: str, least: int = 2) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < least:
        raise ValueError(f"{what} must be an int >= {least}, got {value!r}")
    return int(value)


def _grid_values(u0, who: str) -> np.ndarray:
    u0 = np.asarray(u0, dtype=np.float64)
    if u0.ndim < 1 or u0.shape[-1] < 2:
        raise ValueError(f"{who}: expected u0 sampled on a periodic grid along its last axis (at least 2 points), "
                         f"got shape {u0.shape}")
    return u0


def _wavenumbers(n: int) -> np.ndarray:
    """k = 2 pi m for the rfft coefficients m = 0 .. n // 2 of a grid on [0, 1)."""
    return 2.0 * np.pi * np.arange(n // 2 + 1)


def gaussian_random_field_1d(n_samples: int, resolution: int, alpha: float = 2.0, tau: float = 5.0,
                             sigma: float = 25.0, seed: int = 0) -> np.ndarray:
    """``n_samples`` periodic Gaussian random fields on x_i = i / resolution, float64 array
    (n_samples, resolution): covariance sigma^2 (-Delta + tau^2)^(-alpha), zero mean (see the
    module docstring). The defaults are Li et al.'s Burgers initial conditions
    N(0, 625 (-Delta + 25 I)^(-2))."""
    n_samples = _resolution(n_samples, "gaussian_random_field_1d: n_samples", least=1)
    n = _resolution(resolution, "gaussian_random_field_1d: resolution")
    alpha = _positive(alpha, "gaussian_random_field_1d: alpha")
    tau, sigma = float(tau), _positive(sigma, "gaussian_random_field_1d: sigma")
    k = _wavenumbers(n)
    scale = sigma * (k ** 2 + tau ** 2) ** (-alpha / 2)
    scale[0] = 0.0
    rng = np.random.default_rng(seed)
    xi = (rng.standard_normal((n_samples, k.size)) + 1j * rng.standard_normal((n_samples, k.size))) / math.sqrt(2)
    if n % 2 == 0:
        xi[:, -1] = xi[:, -1].real * math.sqrt(2)      # the Nyquist coefficient is real
    # irfft divides by n; the field's Fourier coefficients are scale * xi
    return np.fft.irfft(n * scale * xi, n=n, axis=-1)


def heat_solve(u0, diffusivity: float, time: float) -> np.ndarray:
    """The exact solution at t = ``time`` of u_t = diffusivity u_xx on [0, 1) periodic, from
    ``u0`` sampled on x_i = i / n along its last axis (float64, u0's shape)."""
    u0 = _grid_values(u0, "heat_solve")
    kappa, time = _positive(diffusivity, "heat_solve: diffusivity"), float(time)
    n = u0.shape[-1]
    decay = np.exp(-kappa * _wavenumbers(n) ** 2 * time)
    return np.fft.irfft(np.fft.rfft(u0, axis=-1) * decay, n=n, axis=-1)


def burgers_solve(u0, viscosity: float, time: float, cfl: float = 0.4, max_steps: int = 100_000) -> np.ndarray:
    """u(·, ``time``) of viscous Burgers u_t + u u_x = viscosity u_xx on [0, 1) periodic, from
    ``u0`` sampled on x_i = i / n along its last axis (float64, u0's shape), by the
    integrating-factor RK4 pseudo-spectral scheme of the module docstring with
    dt <= cfl / (n max|u0|)."""
    u0 = _grid_values(u0, "burgers_solve")
    nu, time = _positive(viscosity, "burgers_solve: viscosity"), float(time)
    if time < 0:
        raise ValueError(f"burgers_solve: time must be >= 0, got {time}")
    n = u0.shape[-1]
    top = float(np.max(np.abs(u0))) if u0.size else 0.0
    steps = max(1, math.ceil(time * n * top / _positive(cfl, "burgers_solve: cfl")))
    if steps > max_steps:
        raise ValueError(f"burgers_solve: {steps} time steps needed (n={n}, max|u0|={top:.3g}, time={time}); "
                         f"more than max_steps={max_steps}")
    dt = time / steps
    k = _wavenumbers(n)
    keep = np.arange(k.size) < (n // 2 + 1) * 2 / 3       # 2/3 dealiasing
    half, full = np.exp(-nu * k ** 2 * dt / 2), np.exp(-nu * k ** 2 * dt)

    def nonlinear(v_hat):
        u = np.fft.irfft(v_hat, n=n, axis=-1)
        return -0.5j * k * np.fft.rfft(u * u, axis=-1) * keep

    v = np.fft.rfft(u0, axis=-1)
    for _ in range(steps):
        a = dt * nonlinear(v)
        b = dt * nonlinear(half * (v + a / 2))
        c = dt * nonlinear(half * v + b / 2)
        d = dt * nonlinear(full * v + half * c)
        v = full * v + (full * a + 2 * half * (b + c) + d) / 6
    return np.fft.irfft(v, n=n, axis=-1)


def _pairs(u0: np.ndarray, u_t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return u0[..., None].astype(np.float32), u_t[..., None].astype(np.float32)


def heat_dataset(n_samples: int, resolution: int, diffusivity: float = 0.01, time: float = 1.0,
                 alpha: float = 2.0, tau: float = 3.0, sigma: float = 10.0,
                 seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(u_0, u_T) pairs of the heat equation u_t = diffusivity u_xx, float32 arrays
    (n_samples, resolution, 1): u_0 a random field (:func:`gaussian_random_field_1d` with
    ``alpha``, ``tau``, ``sigma``), u_T its exact solution at t = ``time``."""
    u0 = gaussian_random_field_1d(n_samples, resolution, alpha, tau, sigma, seed)
    return _pairs(u0, heat_solve(u0, diffusivity, time))


def burgers_dataset(n_samples: int, resolution: int, viscosity: float = 0.1, time: float = 1.0,
                    solver_resolution: int | None = None, alpha: float = 2.0, tau: float = 5.0,
                    sigma: float = 25.0, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(u_0, u_T) pairs of viscous Burgers, float32 arrays (n_samples, resolution, 1): u_0 a
    random field (Li et al.'s by default), u_T = :func:`burgers_solve` at t = ``time``, both
    computed on ``solver_resolution`` points (default: ``resolution`` times the least power
    of 2 reaching 256) and subsampled to every ``solver_resolution / resolution``-th point."""
    resolution = _resolution(resolution, "burgers_dataset: resolution")
    if solver_resolution is None:
        solver_resolution = resolution
        while solver_resolution < 256:
            solver_resolution *= 2
    solver_resolution = _resolution(solver_resolution, "burgers_dataset: solver_resolution")
    if solver_resolution % resolution:
        raise ValueError(f"burgers_dataset: solver_resolution {solver_resolution} must be a multiple of "
                         f"resolution {resolution}")
    stride = solver_resolution // resolution
    u0 = gaussian_random_field_1d(n_samples, solver_resolution, alpha, tau, sigma, seed)
    u_t = burgers_solve(u0, viscosity, time)
    return _pairs(u0[:, ::stride], u_t[:, ::stride])
