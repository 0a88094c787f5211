"""The Kalman filter, the Rauch-Tung-Striebel smoother and the linear-Gaussian state-space
model's log-likelihood (as pykalman's and filterpy's KalmanFilter).

The model, for t = 0 .. T-1:

    x_0 ~ N(x0, P0),   x_{t+1} = F x_t + w_t,  w_t ~ N(0, Q),   y_t = H x_t + v_t,  v_t ~ N(0, R).

The filter alternates a prediction and an update (m, P the mean and covariance of x_t):

    predict:  m <- F m,   P <- F P F^T + Q
    update:   S = H P H^T + R,   K = P H^T S^-1,   m <- m + K (y_t - H m),   P <- P - K S K^T

and the log-likelihood is the sum of the innovations' log-densities,
log p(y) = sum_t log N(y_t; H m_{t|t-1}, S_t). The RTS smoother runs backwards from the last
filtered estimate with G_t = P_{t|t} F^T P_{t+1|t}^-1:

    m_{t|T} = m_{t|t} + G_t (m_{t+1|T} - m_{t+1|t}),   P_{t|T} = P_{t|t} + G_t (P_{t+1|T} - P_{t+1|t}) G_t^T.

:func:`kalman_log_likelihood` computes log p(y) with lamina ops (Cholesky factors and
triangular solves), so F, H, Q, R, x0 and P0 may be tensors learned by gradient;
:meth:`KalmanFilter.em` learns Q and R by expectation-maximization instead.
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.linalg import cholesky, cholesky_solve, solve_triangular
from lamina.functional.linalg_structure import diagonal
from lamina.functional.shape import swapaxes
from lamina.models.statespace._checks import as_float_array, check_shape, cholesky_factors

_NAME = "KalmanFilter"


def _mT(a: Tensor) -> Tensor:
    return swapaxes(a, -1, -2)


def _as_tensor(a) -> Tensor:
    if isinstance(a, Tensor):
        return a
    array = backend.xp.asarray(a)
    return Tensor._wrap(array if array.dtype.kind == "f" else array.astype(numpy.float64))


def kalman_log_likelihood(observations, F, H, Q, R, x0, P0) -> Tensor:
    """log p(y_0 .. y_{T-1}) of the linear-Gaussian model, as differentiable ops.

    ``observations`` (T, k) gives a scalar; (N, T, k) (N sequences of the same model) gives
    (N,). F (d, d), H (k, d), Q (d, d), R (k, k), x0 (d,), P0 (d, d): arrays or tensors."""
    y, F, H, Q, R, x0, P0 = (_as_tensor(a) for a in (observations, F, H, Q, R, x0, P0))
    d, k = F.shape[0], H.shape[0]
    expected = {"F": (d, d), "H": (k, d), "Q": (d, d), "R": (k, k), "x0": (d,), "P0": (d, d)}
    for name, value in zip(expected, (F, H, Q, R, x0, P0)):
        if tuple(value.shape) != expected[name]:
            raise ShapeError(f"kalman_log_likelihood: {name} must have shape {expected[name]} (state size {d}, "
                             f"observation size {k}); got {value.shape}")
    if y.ndim not in (2, 3) or y.shape[-1] != k:
        raise ShapeError(f"kalman_log_likelihood: observations must be (T, {k}) or (N, T, {k}); got {y.shape}")
    Q, R, P0 = (0.5 * (a + a.T) for a in (Q, R, P0))     # symmetric parameters get symmetric gradients
    single = y.ndim == 2
    if single:
        y = y.reshape(1, *y.shape)
    batch, steps = y.shape[:2]
    mean = x0.reshape(1, d, 1)
    cov = P0
    total = None
    constant = 0.5 * k * math.log(2 * math.pi)
    for t in range(steps):
        if t:
            mean = F @ mean
            cov = F @ cov @ F.T + Q
        projected = H @ cov                                     # H P, (..., k, d)
        innovation_cov = projected @ H.T + R
        innovation_cov = 0.5 * (innovation_cov + _mT(innovation_cov))
        factor = cholesky(innovation_cov)
        innovation = y[:, t].reshape(batch, k, 1) - H @ mean
        whitened = solve_triangular(factor, innovation, upper=False)
        term = -0.5 * (whitened * whitened).sum(axis=(1, 2)) - diagonal(factor).log().sum(axis=-1) - constant
        total = term if total is None else total + term
        gain_t = cholesky_solve(projected, factor)                # S^-1 H P = K^T
        mean = mean + _mT(gain_t) @ innovation
        cov = cov - _mT(projected) @ gain_t
        cov = 0.5 * (cov + _mT(cov))
    return total.reshape(()) if single else total


class KalmanFilter:
    """A linear-Gaussian state-space model (see the module docstring) with filtering,
    smoothing, log-likelihood and prediction on NumPy arrays in float64.

    Args: F (d, d) transition, H (k, d) observation matrix, Q (d, d) and R (k, k) the process
    and observation noise covariances, x0 (d,) and P0 (d, d) the mean and covariance of the
    first state x_0 (the state at the first observation). Observations are (T, k)."""

    def __init__(self, F, H, Q, R, x0, P0):
        self.F = as_float_array("F", F, 2, _NAME)
        d = self.F.shape[0]
        check_shape("F", self.F, (d, d), _NAME)
        self.H = as_float_array("H", H, 2, _NAME)
        k = self.H.shape[0]
        check_shape("H", self.H, (k, d), _NAME)
        self.Q = as_float_array("Q", Q, 2, _NAME)
        self.R = as_float_array("R", R, 2, _NAME)
        self.x0 = as_float_array("x0", x0, 1, _NAME)
        self.P0 = as_float_array("P0", P0, 2, _NAME)
        check_shape("Q", self.Q, (d, d), _NAME)
        check_shape("R", self.R, (k, k), _NAME)
        check_shape("x0", self.x0, (d,), _NAME)
        check_shape("P0", self.P0, (d, d), _NAME)
        cholesky_factors("R (the observation noise covariance)", self.R, _NAME)
        cholesky_factors("P0 (the initial state covariance)", self.P0, _NAME)
        if not numpy.allclose(self.Q, self.Q.T) or numpy.linalg.eigvalsh(self.Q).min() < -1e-12:
            raise ValueError(f"{_NAME}: Q (the process noise covariance) must be symmetric positive "
                             f"semi-definite; smallest eigenvalue {numpy.linalg.eigvalsh(self.Q).min():.3g}")

    @property
    def state_size(self) -> int:
        return self.F.shape[0]

    def _observations(self, y) -> numpy.ndarray:
        y = as_float_array("observations", y, (1, 2), _NAME)
        if y.ndim == 1:
            y = y[:, None]
        if y.shape[1] != self.H.shape[0]:
            raise ShapeError(f"{_NAME}: observations must be (T, {self.H.shape[0]}); got {y.shape}")
        return y

    def _run(self, y: numpy.ndarray):
        """Filtered means and covariances, the one-step predictions and log p(y)."""
        steps, d = len(y), self.state_size
        means, covs = numpy.empty((steps, d)), numpy.empty((steps, d, d))
        predicted_means, predicted_covs = numpy.empty((steps, d)), numpy.empty((steps, d, d))
        mean, cov, total = self.x0, self.P0, 0.0
        for t in range(steps):
            if t:
                mean, cov = self.F @ mean, self.F @ cov @ self.F.T + self.Q
            predicted_means[t], predicted_covs[t] = mean, cov
            projected = self.H @ cov
            innovation_cov = projected @ self.H.T + self.R
            try:
                factor = numpy.linalg.cholesky(innovation_cov)
            except numpy.linalg.LinAlgError:
                raise ValueError(f"{_NAME}: the innovation covariance H P H^T + R at step {t} is not positive "
                                 "definite") from None
            innovation = y[t] - self.H @ mean
            whitened = numpy.linalg.solve(factor, innovation)
            total -= 0.5 * whitened @ whitened + numpy.log(numpy.diag(factor)).sum() + 0.5 * len(innovation) * \
                math.log(2 * math.pi)
            gain_t = numpy.linalg.solve(innovation_cov, projected)
            mean = mean + gain_t.T @ innovation
            cov = cov - projected.T @ gain_t
            cov = 0.5 * (cov + cov.T)
            means[t], covs[t] = mean, cov
        return means, covs, predicted_means, predicted_covs, total

    def filter(self, y) -> tuple[numpy.ndarray, numpy.ndarray]:
        """The filtered means (T, d) and covariances (T, d, d) of x_t given y_0 .. y_t."""
        means, covs, *_ = self._run(self._observations(y))
        return means, covs

    def _smooth(self, y: numpy.ndarray):
        """Smoothed means, covariances, the lag-one covariances Cov(x_{t+1}, x_t | y) (T-1, d, d)
        and log p(y)."""
        means, covs, predicted_means, predicted_covs, total = self._run(y)
        smoothed_means, smoothed_covs = means.copy(), covs.copy()
        lagged = numpy.empty((max(len(means) - 1, 0),) + covs.shape[1:])
        for t in range(len(means) - 2, -1, -1):
            gain = numpy.linalg.solve(predicted_covs[t + 1], self.F @ covs[t]).T     # P_t F^T P_{t+1|t}^-1
            smoothed_means[t] = means[t] + gain @ (smoothed_means[t + 1] - predicted_means[t + 1])
            cov = covs[t] + gain @ (smoothed_covs[t + 1] - predicted_covs[t + 1]) @ gain.T
            smoothed_covs[t] = 0.5 * (cov + cov.T)
            lagged[t] = smoothed_covs[t + 1] @ gain.T
        return smoothed_means, smoothed_covs, lagged, total

    def smooth(self, y) -> tuple[numpy.ndarray, numpy.ndarray]:
        """The RTS-smoothed means (T, d) and covariances (T, d, d) of x_t given all of y."""
        smoothed_means, smoothed_covs, _, _ = self._smooth(self._observations(y))
        return smoothed_means, smoothed_covs

    def em(self, y, n_iter: int = 20, learn: tuple[str, ...] = ("Q", "R"), tol: float = 0.0) -> list[float]:
        """EM for the noise covariances (Shumway & Stoffer 1982) with F and H fixed: from the
        smoothed moments E[x_t], E[x_t x_t^T] and E[x_{t+1} x_t^T],

            R = 1/T sum_t (y_t - H m_{t|T})(y_t - H m_{t|T})^T + H P_{t|T} H^T,
            Q = 1/(T-1) sum_{t>0} E[(x_t - F x_{t-1})(x_t - F x_{t-1})^T | y].

        Updates ``learn`` (a subset of 'Q', 'R') in place for ``n_iter`` steps (or until log p(y)
        rises by less than ``tol``) and returns log p(y) before each step (never decreasing)."""
        unknown = set(learn) - {"Q", "R"}
        if unknown:
            raise ValueError(f"{_NAME}.em: learn must be a subset of ('Q', 'R'); got {tuple(learn)}")
        y = self._observations(y)
        if len(y) < 2:
            raise ValueError(f"{_NAME}.em: needs at least 2 observations; got {len(y)}")
        history = []
        for _ in range(n_iter):
            means, covs, lagged, total = self._smooth(y)
            if history and total - history[-1] < tol:
                history.append(total)
                break
            history.append(total)
            if "R" in learn:
                residual = y - means @ self.H.T
                spread = residual.T @ residual + numpy.einsum("ij,tjk,lk->il", self.H, covs, self.H)
                self.R = 0.5 * (spread + spread.T) / len(y)
            if "Q" in learn:
                second = covs + numpy.einsum("ti,tj->tij", means, means)            # E[x_t x_t^T]
                cross = lagged + numpy.einsum("ti,tj->tij", means[1:], means[:-1])   # E[x_{t+1} x_t^T]
                current, previous, cross = second[1:].sum(0), second[:-1].sum(0), cross.sum(0)
                spread = current - self.F @ cross.T - cross @ self.F.T + self.F @ previous @ self.F.T
                self.Q = 0.5 * (spread + spread.T) / (len(y) - 1)
        return history

    def log_likelihood(self, y) -> float:
        """log p(y_0 .. y_{T-1}) (:func:`kalman_log_likelihood` gives it as differentiable ops)."""
        return self._run(self._observations(y))[-1]

    def predict(self, y, n_steps: int = 1) -> tuple[numpy.ndarray, numpy.ndarray]:
        """Means (n_steps, k) and covariances (n_steps, k, k) of the next ``n_steps``
        observations y_T .. y_{T+n-1} given y_0 .. y_{T-1} (with no data, of y_0 ..)."""
        y = self._observations(y)
        if len(y):
            means, covs, *_ = self._run(y)
            mean, cov = self.F @ means[-1], self.F @ covs[-1] @ self.F.T + self.Q
        else:
            mean, cov = self.x0, self.P0
        k = self.H.shape[0]
        out_means, out_covs = numpy.empty((n_steps, k)), numpy.empty((n_steps, k, k))
        for step in range(n_steps):
            if step:
                mean, cov = self.F @ mean, self.F @ cov @ self.F.T + self.Q
            out_means[step], out_covs[step] = self.H @ mean, self.H @ cov @ self.H.T + self.R
        return out_means, out_covs

    def sample(self, n_steps: int, seed: int | None = None) -> tuple[numpy.ndarray, numpy.ndarray]:
        """(states (T, d), observations (T, k)) drawn from the model."""
        rng = numpy.random.default_rng(seed)
        d, k = self.state_size, self.H.shape[0]
        states, observations = numpy.empty((n_steps, d)), numpy.empty((n_steps, k))
        state = rng.multivariate_normal(self.x0, self.P0)
        for t in range(n_steps):
            if t:
                state = self.F @ state + rng.multivariate_normal(numpy.zeros(d), self.Q)
            states[t] = state
            observations[t] = self.H @ state + rng.multivariate_normal(numpy.zeros(k), self.R)
        return states, observations

    def log_likelihood_tensor(self, y, **parameters) -> Tensor:
        """log p(y) as differentiable ops, with any of F, H, Q, R, x0, P0 replaced by the tensors
        given as keywords (the others are this model's)."""
        unknown = set(parameters) - {"F", "H", "Q", "R", "x0", "P0"}
        if unknown:
            raise TypeError(f"{_NAME}.log_likelihood_tensor: unknown parameters {sorted(unknown)}")
        values = {name: parameters.get(name, getattr(self, name)) for name in ("F", "H", "Q", "R", "x0", "P0")}
        return kalman_log_likelihood(y, **values)
