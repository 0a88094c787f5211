"""Dynamic mode decomposition (Schmid 2010; exact DMD, Tu et al. 2014).

Snapshots x_0 .. x_m (rows of ``data``, time first) taken every ``dt``; X = [x_0 .. x_{m-1}],
Y = [x_1 .. x_m] (columns). DMD fits the best linear map Y ~= A X through a rank-r SVD
X ~= U_r S_r V_r^*:

    A~ = U_r^* Y V_r S_r^-1   (r x r),    A~ W = W Lambda
    Phi = Y V_r S_r^-1 W      (exact modes; U_r W are the projected ones)
    b   = argmin ||Phi b - x_0||       (amplitudes)
    x_k ~= Phi diag(b) lambda^k,        omega = log(lambda) / dt

Re(omega) is the growth rate and Im(omega) / (2 pi) the frequency (cycles per unit time).

Rank: ``svd_rank`` an int r >= 1 keeps r singular values; a float in (0, 1) the fewest holding
that fraction of the energy sum s^2; 0 the optimal hard threshold of Gavish & Donoho (2014) for
unknown noise, tau = omega(beta) median(s) with beta the aspect ratio of X and
omega(beta) ~= 0.56 beta^3 - 0.95 beta^2 + 1.82 beta + 1.43 (never below the numerical rank's
cut s_1 max(shape) eps, for noiseless data); -1 keeps all.
:class:`HankelDMD` runs DMD on time-delay embeddings [x_k; x_{k+1}; ..; x_{k+d-1}].
"""

from __future__ import annotations

import numpy

from lamina.errors import ShapeError

__all__ = ["DMD", "HankelDMD", "optimal_svht_coefficient", "svd_rank"]


def optimal_svht_coefficient(beta: float) -> float:
    """omega(beta) of Gavish & Donoho for unknown noise (their polynomial approximation)."""
    if not 0 < beta <= 1:
        raise ValueError(f"optimal_svht_coefficient: beta (aspect ratio) must be in (0, 1], got {beta!r}")
    return 0.56 * beta ** 3 - 0.95 * beta ** 2 + 1.82 * beta + 1.43


def svd_rank(singular_values, shape: tuple[int, int], rank) -> int:
    """The number of singular values kept for ``rank`` (module docstring) of a matrix of ``shape``."""
    s = numpy.asarray(singular_values, dtype=numpy.float64)
    if isinstance(rank, bool) or not isinstance(rank, (int, float, numpy.integer, numpy.floating)):
        raise TypeError(f"svd_rank: rank must be an int or a float, got {rank!r}")
    if rank == -1:
        return s.size
    if rank == 0:
        beta = min(shape) / max(shape)
        tau = optimal_svht_coefficient(beta) * numpy.median(s)
        tau = max(tau, s[0] * max(shape) * numpy.finfo(numpy.float64).eps)   # noiseless data: numerical rank
        return max(int(numpy.sum(s > tau)), 1)
    if isinstance(rank, (float, numpy.floating)) and 0 < rank < 1:
        energy = numpy.cumsum(s ** 2) / numpy.sum(s ** 2)
        return int(numpy.searchsorted(energy, rank) + 1)
    if float(rank).is_integer() and rank >= 1:
        if rank > s.size:
            raise ValueError(f"svd_rank: rank {int(rank)} is larger than the data allows: the snapshot matrix "
                             f"{shape} has only {s.size} singular values")
        return int(rank)
    raise ValueError(f"svd_rank: rank must be -1, 0, a float in (0, 1) or an int >= 1, got {rank!r}")


def _snapshots(data, who: str, minimum: int = 2) -> numpy.ndarray:
    data = numpy.asarray(data)
    if data.ndim != 2 or data.shape[0] < minimum:
        raise ShapeError(f"{who}: expected snapshots of shape (n_snapshots >= {minimum}, n_features), "
                         f"got {data.shape}")
    return data.astype(numpy.complex128 if numpy.iscomplexobj(data) else numpy.float64)


class DMD:
    """Dynamic mode decomposition (module docstring). After :meth:`fit`: ``modes`` (n, r),
    ``eigenvalues`` (r,), ``amplitudes`` (r,), ``rank``, ``singular_values``, ``atilde``."""

    def __init__(self, svd_rank: int | float = 0, exact: bool = True, dt: float = 1.0):
        if not dt > 0:
            raise ValueError(f"DMD: dt must be positive, got {dt!r}")
        self.svd_rank, self.exact, self.dt = svd_rank, bool(exact), float(dt)
        self.modes = None

    def fit(self, data) -> DMD:
        """Fit to snapshots (n_snapshots, n_features), one row per time step."""
        data = _snapshots(data, f"{type(self).__name__}.fit")
        x, y = data[:-1].T, data[1:].T
        u, s, vh = numpy.linalg.svd(x, full_matrices=False)
        r = svd_rank(s, x.shape, self.svd_rank)
        u, s, v = u[:, :r], s[:r], vh[:r].conj().T
        if s[-1] <= s[0] * 1e-13:
            raise ValueError(f"{type(self).__name__}.fit: rank {r} is larger than the data's numerical rank "
                             f"(singular value {s[-1]:.3g} against {s[0]:.3g}); lower svd_rank")
        self.rank, self.singular_values = r, s
        self.atilde = u.conj().T @ y @ v / s
        self.eigenvalues, w = numpy.linalg.eig(self.atilde)
        self.modes = (y @ v / s) @ w if self.exact else u @ w
        self.amplitudes = numpy.linalg.lstsq(self.modes, data[0], rcond=None)[0]
        self.n_snapshots = data.shape[0]
        return self

    def _check_fitted(self, who: str) -> None:
        if self.modes is None:
            raise RuntimeError(f"{type(self).__name__}.{who}: call fit first")

    @property
    def continuous_eigenvalues(self) -> numpy.ndarray:
        """omega = log(lambda) / dt."""
        self._check_fitted("continuous_eigenvalues")
        return numpy.log(self.eigenvalues.astype(numpy.complex128)) / self.dt

    @property
    def frequencies(self) -> numpy.ndarray:
        """Im(omega) / (2 pi): cycles per unit time."""
        return self.continuous_eigenvalues.imag / (2 * numpy.pi)

    @property
    def growth_rates(self) -> numpy.ndarray:
        """Re(omega)."""
        return self.continuous_eigenvalues.real

    def dynamics(self, steps) -> numpy.ndarray:
        """b_i lambda_i^k for the steps k (len(steps), r)."""
        self._check_fitted("dynamics")
        k = numpy.asarray(steps, dtype=numpy.float64)
        return self.amplitudes * numpy.power(self.eigenvalues.astype(numpy.complex128), k[:, None])

    def predict(self, steps) -> numpy.ndarray:
        """x_k ~= Phi diag(b) lambda^k at the steps k (any, past the data to forecast), rows."""
        return self.dynamics(steps) @ self.modes.T

    def reconstruct(self) -> numpy.ndarray:
        """The fitted snapshots (n_snapshots, n_features), complex."""
        self._check_fitted("reconstruct")
        return self.predict(numpy.arange(self.n_snapshots))

    def forecast(self, n_steps: int) -> numpy.ndarray:
        """The ``n_steps`` snapshots after the data."""
        self._check_fitted("forecast")
        return self.predict(self.n_snapshots + numpy.arange(n_steps))


class HankelDMD(DMD):
    """DMD on time-delay embeddings of ``delays`` consecutive snapshots (a scalar signal
    gains 2 modes per oscillation). :meth:`reconstruct` and :meth:`forecast` return the
    original features (the first block of the embedding)."""

    def __init__(self, delays: int = 2, svd_rank: int | float = 0, exact: bool = True, dt: float = 1.0):
        if isinstance(delays, bool) or not isinstance(delays, int) or delays < 1:
            raise ValueError(f"HankelDMD: delays must be a positive int, got {delays!r}")
        super().__init__(svd_rank, exact, dt)
        self.delays = delays

    def fit(self, data) -> HankelDMD:
        data = _snapshots(data, "HankelDMD.fit", minimum=self.delays + 1)
        self.n_features = data.shape[1]
        m = data.shape[0] - self.delays + 1
        embedded = numpy.concatenate([data[j:j + m] for j in range(self.delays)], axis=1)
        super().fit(embedded)
        self.n_snapshots = data.shape[0]
        return self

    def predict(self, steps) -> numpy.ndarray:
        return super().predict(steps)[:, :self.n_features]
