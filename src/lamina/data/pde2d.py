"""Data for operator learning in two dimensions: random fields, Darcy flow and the
incompressible Navier-Stokes equations, the two 2-D benchmarks of Li et al. (2021).

* :func:`gaussian_random_field_2d`: periodic Gaussian random fields on the unit torus with
  covariance sigma^2 (-Delta + tau^2)^(-alpha): every Fourier coefficient u_hat_k, k in Z^2,
  has E|u_hat_k|^2 = sigma^2 (4 pi^2 |k|^2 + tau^2)^(-alpha), the mean (k = 0) is 0. Drawn as
  u = Re sum_k sqrt(2 lambda_k) xi_k e^{2 pi i k.x}, xi_k standard complex normal, which gives
  each coefficient that variance.
* :func:`darcy_solve`: -div(a grad u) = f on [0, 1]^2, u = 0 on the boundary, on the nodes
  x_i = i h, h = 1 / (s - 1), by the 5-point finite-volume scheme
      (1 / h^2) sum_faces a_face (u_P - u_neighbour) = f_P,
  a_face the harmonic mean 2 a_P a_Q / (a_P + a_Q) of the two nodes' values. The matrix
  (:func:`darcy_matrix`) is symmetric positive definite and the scheme second-order accurate
  for smooth a; the harmonic mean keeps the flux right across jumps of a.
* :func:`darcy_flow_dataset`: Li et al.'s Darcy data: a(x) = 12 where a random field
  (alpha = 2, tau = 3) is >= 0 and 3 elsewhere, f = 1, solved on a fine grid and subsampled.
* :func:`navier_stokes_2d_solve`: the vorticity form on the periodic unit torus,
      w_t + u . grad w = nu Delta w + f,   u = (psi_y, -psi_x),   -Delta psi = w,
  pseudo-spectrally: the nonlinear term u . grad w is formed on the grid from spectral
  derivatives, its spectrum cut by the 2/3 rule, and stepped explicitly (forward Euler); the
  diffusion by Crank-Nicolson,
      w_hat <- ((1 - dt nu |k|^2 / 2) w_hat + dt (f_hat - N_hat)) / (1 + dt nu |k|^2 / 2),
  |k|^2 = 4 pi^2 (k_1^2 + k_2^2), as Li et al.'s data generator. The mean vorticity never
  changes (the nonlinear term has zero mean; give a forcing of zero mean to keep it).
* :func:`navier_stokes_dataset`: (w_0, w_T) pairs or (w_0, w(t_1) .. w(t_m)) sequences from
  random initial vorticity (alpha = 2.5, tau = 7) under Li et al.'s forcing
  (:func:`navier_stokes_forcing`).

Fields are float64 arrays (..., s, s) indexed [i, j] = value at (x_i, y_j); the datasets give
float32 channels-last arrays (n_samples, s, s, channels), what FNO2D reads.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from lamina.data.pde import _positive, _resolution

if TYPE_CHECKING:
    import scipy.sparse

__all__ = [
    "darcy_flow_dataset", "darcy_matrix", "darcy_solve", "gaussian_random_field_2d", "navier_stokes_2d_solve",
    "navier_stokes_dataset", "navier_stokes_forcing",
]


# -- random fields ------------------------------------------------------------------------------
def gaussian_random_field_2d(n_samples: int, resolution: int, alpha: float = 2.0, tau: float = 3.0,
                             sigma: float | None = None, seed: int = 0) -> np.ndarray:
    """``n_samples`` periodic Gaussian random fields on the grid (i / s, j / s), s =
    ``resolution``: float64 array (n_samples, s, s), covariance sigma^2 (-Delta + tau^2)^(-alpha)
    (see the module docstring). ``sigma`` defaults to Li et al.'s tau^(alpha - 1)."""
    who = "gaussian_random_field_2d"
    n_samples = _resolution(n_samples, f"{who}: n_samples", least=1)
    s = _resolution(resolution, f"{who}: resolution")
    alpha, tau = _positive(alpha, f"{who}: alpha"), float(tau)
    sigma = tau ** (alpha - 1) if sigma is None else _positive(sigma, f"{who}: sigma")
    k = np.fft.fftfreq(s, d=1.0 / s)
    squared = 4 * np.pi ** 2 * (k[:, None] ** 2 + k[None, :] ** 2)
    scale = math.sqrt(2.0) * sigma * (squared + tau ** 2) ** (-alpha / 2)
    scale[0, 0] = 0.0
    normals = np.random.default_rng(seed).standard_normal((n_samples, 2, s, s))    # sample by sample
    xi = (normals[:, 0] + 1j * normals[:, 1]) / math.sqrt(2)
    # ifft2 divides by s^2; the complex field's coefficients are sqrt(2 lambda_k) xi_k
    return np.fft.ifft2(s * s * scale * xi).real


# -- Darcy flow ---------------------------------------------------------------------------------
def _square_fields(values, who: str, what: str, least: int = 3) -> np.ndarray:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim < 2 or values.shape[-1] != values.shape[-2] or values.shape[-1] < least:
        raise ValueError(f"{who}: expected {what} on an s x s grid along the last two axes (s >= {least}), "
                         f"got shape {values.shape}")
    return values


def _harmonic_mean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return 2.0 * a * b / (a + b)


def darcy_matrix(a) -> scipy.sparse.csr_matrix:
    """The matrix of the 5-point scheme for -div(a grad u) at the (s - 2)^2 interior nodes,
    numbered row-major (node (i, j), 1 <= i, j <= s - 2, is row (i - 1)(s - 2) + j - 1), from the
    permeability ``a`` (s, s) at every node (positive). Symmetric positive definite."""
    import scipy.sparse  # SciPy loads on first use, not with lamina

    a = _square_fields(a, "darcy_matrix", "the permeability a")
    if a.ndim != 2:
        raise ValueError(f"darcy_matrix: expected one permeability field (s, s), got shape {a.shape}")
    if not np.all(a > 0):
        raise ValueError(f"darcy_matrix: the permeability must be positive everywhere, its least value is "
                         f"{a.min():.4g}")
    s = a.shape[0]
    m, h = s - 2, 1.0 / (s - 1)
    down = _harmonic_mean(a[:-1], a[1:])               # the face between (i, j) and (i + 1, j), (s - 1, s)
    right = _harmonic_mean(a[:, :-1], a[:, 1:])        # the face between (i, j) and (i, j + 1), (s, s - 1)
    inner = slice(1, s - 1)
    diagonal = down[:-1, inner] + down[1:, inner] + right[inner, :-1] + right[inner, 1:]
    along_rows = down[1:s - 2, inner].ravel()          # (i, j) -- (i + 1, j), both interior
    along_columns = right[inner, inner].copy()         # (i, j) -- (i, j + 1); none past the last column
    along_columns[:, -1] = 0.0
    along_columns = along_columns.ravel()[:-1]
    matrix = scipy.sparse.diags([diagonal.ravel(), -along_columns, -along_columns, -along_rows, -along_rows],
                                [0, 1, -1, m, -m], shape=(m * m, m * m), format="csr")
    return matrix / (h * h)


def darcy_solve(a, f=1.0) -> np.ndarray:
    """u solving -div(a grad u) = f on [0, 1]^2 with u = 0 on the boundary, by the scheme of the
    module docstring on the nodes (i h, j h), h = 1 / (s - 1). ``a``: the permeability at the
    nodes, (s, s) or a batch (..., s, s); ``f``: a number or values at the nodes broadcastable
    to ``a``. Returns u at every node (boundary zeros included), float64, ``a``'s shape."""
    import scipy.sparse.linalg

    a = _square_fields(a, "darcy_solve", "the permeability a")
    try:
        f = np.broadcast_to(np.asarray(f, dtype=np.float64), a.shape)
    except ValueError:
        raise ValueError(f"darcy_solve: f of shape {np.shape(f)} does not broadcast to a's shape {a.shape}") from None
    s = a.shape[-1]
    fields, sources = a.reshape(-1, s, s), f.reshape(-1, s, s)
    u = np.zeros_like(fields)
    for field, source, out in zip(fields, sources, u):
        interior = scipy.sparse.linalg.spsolve(darcy_matrix(field).tocsc(), source[1:-1, 1:-1].ravel(),
                                                  permc_spec="MMD_AT_PLUS_A")  # a symmetric pattern
        out[1:-1, 1:-1] = interior.reshape(s - 2, s - 2)
    return u.reshape(a.shape)


def _refined(resolution: int, solver_resolution: int | None, least: int, who: str) -> tuple[int, int]:
    """(solver_resolution, stride) for node grids: (solver - 1) a multiple of (resolution - 1)."""
    if solver_resolution is None:
        solver_resolution = resolution
        while solver_resolution < least:
            solver_resolution = 2 * (solver_resolution - 1) + 1
    solver_resolution = _resolution(solver_resolution, f"{who}: solver_resolution", least=3)
    if (solver_resolution - 1) % (resolution - 1):
        raise ValueError(f"{who}: solver_resolution - 1 = {solver_resolution - 1} must be a multiple of "
                         f"resolution - 1 = {resolution - 1} (the coarse nodes are every k-th fine node)")
    return solver_resolution, (solver_resolution - 1) // (resolution - 1)


def darcy_flow_dataset(n_samples: int, resolution: int, solver_resolution: int | None = None, high: float = 12.0,
                       low: float = 3.0, forcing: float = 1.0, alpha: float = 2.0, tau: float = 3.0,
                       seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(a, u) pairs of Darcy flow, float32 arrays (n_samples, resolution, resolution, 1) on the
    nodes (i h, j h), h = 1 / (resolution - 1): a = ``high`` where a periodic random field
    (:func:`gaussian_random_field_2d` with ``alpha``, ``tau``, sampled on the nodes) is >= 0 and
    ``low`` elsewhere; u = :func:`darcy_solve` (a, ``forcing``). Both are computed on
    ``solver_resolution`` nodes (default: ``resolution`` refined by 2 until at least 61 nodes)
    and subsampled."""
    who = "darcy_flow_dataset"
    resolution = _resolution(resolution, f"{who}: resolution", least=3)
    fine, stride = _refined(resolution, solver_resolution, 61, who)
    if not (low > 0 and high > 0):
        raise ValueError(f"{who}: the permeabilities must be positive, got high={high!r}, low={low!r}")
    # a periodic field on the fine - 1 cells, its first node repeated at x = 1
    field = gaussian_random_field_2d(n_samples, fine - 1, alpha, tau, seed=seed)
    field = np.pad(field, ((0, 0), (0, 1), (0, 1)), mode="wrap")
    a = np.where(field >= 0, float(high), float(low))
    u = darcy_solve(a, forcing)
    coarse = (slice(None), slice(None, None, stride), slice(None, None, stride))
    return a[coarse][..., None].astype(np.float32), u[coarse][..., None].astype(np.float32)


# -- Navier-Stokes ------------------------------------------------------------------------------
def navier_stokes_forcing(resolution: int, amplitude: float = 0.1) -> np.ndarray:
    """Li et al.'s forcing f(x, y) = amplitude (sin(2 pi (x + y)) + cos(2 pi (x + y))) on the
    periodic grid (i / s, j / s): float64 (s, s), zero mean."""
    s = _resolution(resolution, "navier_stokes_forcing: resolution")
    x = np.arange(s) / s
    phase = 2 * np.pi * (x[:, None] + x[None, :])
    return float(amplitude) * (np.sin(phase) + np.cos(phase))


def navier_stokes_2d_solve(w0, viscosity: float, time: float, forcing=None, dt: float = 1e-3,
                           record_steps: int | None = None, max_steps: int = 1_000_000) -> np.ndarray:
    """The vorticity at t = ``time`` of 2-D incompressible flow on the periodic unit torus (see
    the module docstring), from ``w0`` (..., s, s) on the grid (i / s, j / s). ``forcing``: None
    or values on the grid broadcastable to ``w0``; ``dt``: the largest time step (it is shortened
    to divide each interval evenly). With ``record_steps`` = m, returns the vorticity at
    t_j = j time / m, j = 1 .. m, as (..., m, s, s); otherwise w(time), ``w0``'s shape."""
    who = "navier_stokes_2d_solve"
    w0 = _square_fields(w0, who, "the vorticity w0", least=2)
    nu, time, dt = _positive(viscosity, f"{who}: viscosity"), float(time), _positive(dt, f"{who}: dt")
    if time < 0:
        raise ValueError(f"{who}: time must be >= 0, got {time}")
    records = 1 if record_steps is None else _resolution(record_steps, f"{who}: record_steps", least=1)
    per_record = max(1, math.ceil(time / records / dt * (1 - 1e-12)))     # no extra step from rounding
    if per_record * records > max_steps:
        raise ValueError(f"{who}: {per_record * records} time steps needed (time={time}, dt={dt}); more than "
                         f"max_steps={max_steps}")
    step = time / records / per_record
    s = w0.shape[-1]
    forcing_hat = 0.0 if forcing is None else np.fft.rfft2(np.broadcast_to(np.asarray(forcing, np.float64),
                                                                           w0.shape))
    m1, m2 = np.fft.fftfreq(s, d=1.0 / s)[:, None], np.fft.rfftfreq(s, d=1.0 / s)[None, :]
    laplacian = 4 * np.pi ** 2 * (m1 ** 2 + m2 ** 2)                  # the symbol of -Delta
    # first derivatives drop the Nyquist frequency s / 2 (its derivative is not real), which
    # keeps the scheme exactly equivariant under shifts of the grid
    k1, k2 = (2 * np.pi * np.where(np.abs(m) == s / 2, 0.0, m) for m in (m1, m2))
    inverse_laplacian = np.divide(1.0, laplacian, out=np.zeros_like(laplacian), where=laplacian > 0)
    cutoff = 2.0 / 3.0 * (s / 2)
    dealias = (np.abs(m1) <= cutoff) & (np.abs(m2) <= cutoff)
    explicit, implicit = 1.0 - 0.5 * step * nu * laplacian, 1.0 + 0.5 * step * nu * laplacian

    def grid(spectrum):
        return np.fft.irfft2(spectrum, s=(s, s))

    w_hat = np.fft.rfft2(w0)
    out = []
    for _ in range(records):
        with np.errstate(over="ignore", invalid="ignore"):            # a blow-up is reported below
            for _ in range(per_record):
                psi_hat = w_hat * inverse_laplacian
                u, v = grid(1j * k2 * psi_hat), grid(-1j * k1 * psi_hat)
                advection = u * grid(1j * k1 * w_hat) + v * grid(1j * k2 * w_hat)
                nonlinear_hat = np.fft.rfft2(advection) * dealias
                w_hat = (explicit * w_hat + step * (forcing_hat - nonlinear_hat)) / implicit
        if not np.all(np.isfinite(w_hat)):
            raise FloatingPointError(f"{who}: the solution blew up (time step {step:.3g} too long for the flow's "
                                     f"speed on {s} points); give a smaller dt")
        out.append(grid(w_hat))
    return out[0] if record_steps is None else np.stack(out, axis=-3)


def navier_stokes_dataset(n_samples: int, resolution: int, viscosity: float = 1e-3, time: float = 1.0,
                          record_steps: int | None = None, solver_resolution: int | None = None,
                          dt: float = 1e-3, forcing_amplitude: float = 0.1, alpha: float = 2.5, tau: float = 7.0,
                          seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Vorticity data of 2-D Navier-Stokes on the torus, float32 channels-last arrays: w_0 a
    random field (:func:`gaussian_random_field_2d` with ``alpha``, ``tau``; Li et al.'s by
    default) under :func:`navier_stokes_forcing` (``forcing_amplitude``), solved by
    :func:`navier_stokes_2d_solve` on ``solver_resolution`` points (default ``resolution``; a
    multiple of it) and subsampled. Returns (w_0, w_T), both (n_samples, s, s, 1), or with
    ``record_steps`` = m, (w_0, trajectory) with trajectory (n_samples, s, s, m) holding
    w(j time / m), j = 1 .. m, along the channels (the layout of Li et al.'s FNO-2D in time)."""
    who = "navier_stokes_dataset"
    resolution = _resolution(resolution, f"{who}: resolution")
    fine = resolution if solver_resolution is None else _resolution(solver_resolution, f"{who}: solver_resolution")
    if fine % resolution:
        raise ValueError(f"{who}: solver_resolution {fine} must be a multiple of resolution {resolution}")
    stride = fine // resolution
    w0 = gaussian_random_field_2d(n_samples, fine, alpha, tau, seed=seed)
    forcing = navier_stokes_forcing(fine, forcing_amplitude) if forcing_amplitude else None
    w = navier_stokes_2d_solve(w0, viscosity, time, forcing, dt=dt, record_steps=record_steps)
    coarse = (Ellipsis, slice(None, None, stride), slice(None, None, stride))
    w0 = w0[coarse][..., None].astype(np.float32)
    if record_steps is None:
        return w0, w[coarse][..., None].astype(np.float32)
    return w0, np.moveaxis(w[coarse], -3, -1).astype(np.float32)
