"""Sparse identification of nonlinear dynamics (SINDy; Brunton, Proctor & Kutz 2016).

Given states X (m samples, n) and their time derivatives X', find a sparse Xi with

    X' ~= Theta(X) Xi^T,      Xi: (n, p) one row of coefficients per equation

where Theta is a library of p candidate terms (:mod:`lamina.models.sindy_library`).

Derivatives: :func:`finite_difference` (second order: central differences inside, second-order
one-sided at the ends, exact on quadratics; any increasing t) or :func:`savgol_derivative`
(Savitzky-Golay: differentiate a local least-squares polynomial, exact on polynomials of degree
<= ``polyorder``; uniform t).

:class:`STLSQ` (sequentially thresholded least squares): ridge regression
    xi = argmin ||y - Theta xi||^2 + alpha ||xi||^2,
zero every |xi_k| < threshold, refit on the kept terms, repeat until the kept set stops
changing; then (``unbias``) an ordinary least-squares fit on the kept terms.

:class:`SR3` (sparse relaxed regularized regression; Zheng, Askham, Brunton, Kutz & Aravkin 2019)
relaxes the sparse problem with an auxiliary W:

    min_{xi, w}  1/2 ||y - Theta xi||^2 + lambda R(w) + 1/(2 nu) ||xi - w||^2

alternating xi = (Theta^T Theta + I / nu)^-1 (Theta^T y + w / nu) and w = prox(xi), from the
least-squares xi. As in pysindy, ``threshold`` is where the prox cuts: R = ||w||_0 ('l0') with
weight threshold^2 / (2 nu) is a hard threshold at ``threshold``, R = ||w||_1 ('l1') with weight
threshold / nu a soft one. The sparse w are the coefficients.
"""

from __future__ import annotations

import numpy

from lamina.errors import ShapeError
from lamina.models.sindy_library import FeatureLibrary, PolynomialLibrary, default_names

__all__ = ["SINDy", "SR3", "STLSQ", "finite_difference", "savgol_derivative"]


def _states(x, who: str) -> numpy.ndarray:
    x = numpy.asarray(x, dtype=numpy.float64)
    if x.ndim == 1:
        x = x[:, None]
    if x.ndim != 2:
        raise ShapeError(f"{who}: expected states of shape (n_samples, n_features), got {x.shape}")
    return x


def _time_grid(t, n: int, who: str) -> numpy.ndarray:
    """``t`` as n sample times (a scalar is a uniform step)."""
    if numpy.ndim(t) == 0:
        if not float(t) > 0:
            raise ValueError(f"{who}: the time step must be positive, got {t!r}")
        return float(t) * numpy.arange(n)
    t = numpy.asarray(t, dtype=numpy.float64)
    if t.ndim != 1 or t.shape[0] != n:
        raise ShapeError(f"{who}: x has {n} samples but t has shape {t.shape}; they must match")
    if not numpy.all(numpy.diff(t) > 0):
        raise ValueError(f"{who}: t must be strictly increasing")
    return t


def finite_difference(x, t) -> numpy.ndarray:
    """dx/dt of samples x (m, n) at times ``t`` (array or uniform step), second-order accurate:
    the three-point central formula inside (for non-uniform steps too) and three-point
    one-sided formulas at both ends. Needs m >= 3."""
    x = _states(x, "finite_difference")
    if x.shape[0] < 3:
        raise ShapeError(f"finite_difference: need at least 3 samples, got {x.shape[0]}")
    t = _time_grid(t, x.shape[0], "finite_difference")
    return numpy.gradient(x, t, axis=0, edge_order=2)


def savgol_derivative(x, t, window_length: int = 9, polyorder: int = 3) -> numpy.ndarray:
    """dx/dt from Savitzky-Golay filters: the derivative of the least-squares polynomial of degree
    ``polyorder`` through each window of ``window_length`` (odd) samples. Uniform t only."""
    from scipy.signal import savgol_filter

    x = _states(x, "savgol_derivative")
    t = _time_grid(t, x.shape[0], "savgol_derivative")
    steps = numpy.diff(t)
    if not numpy.allclose(steps, steps[0], rtol=1e-8, atol=0):
        raise ValueError("savgol_derivative: t must be uniformly spaced (Savitzky-Golay filters assume a fixed "
                         f"step); steps range from {steps.min():.6g} to {steps.max():.6g}")
    if window_length % 2 == 0 or not polyorder < window_length <= x.shape[0]:
        raise ValueError(f"savgol_derivative: window_length must be odd, > polyorder ({polyorder}) and <= the "
                         f"number of samples ({x.shape[0]}), got {window_length}")
    return savgol_filter(x, window_length, polyorder, deriv=1, delta=steps[0], axis=0, mode="interp")


def ridge(theta: numpy.ndarray, y: numpy.ndarray, alpha: float) -> numpy.ndarray:
    """argmin ||y - theta w||^2 + alpha ||w||^2 (w: theta's columns x y's columns)."""
    gram = theta.T @ theta + alpha * numpy.eye(theta.shape[1])
    return numpy.linalg.solve(gram, theta.T @ y)


class STLSQ:
    """Sequentially thresholded least squares (module docstring). ``coef_`` after :meth:`fit`
    is (n_targets, n_features); ``history_`` the coefficients after each iteration."""

    def __init__(self, threshold: float = 0.1, alpha: float = 0.05, max_iter: int = 20, unbias: bool = True):
        if not threshold >= 0:
            raise ValueError(f"STLSQ: threshold must be >= 0, got {threshold!r}")
        if not alpha >= 0:
            raise ValueError(f"STLSQ: alpha must be >= 0, got {alpha!r}")
        if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter < 1:
            raise ValueError(f"STLSQ: max_iter must be a positive int, got {max_iter!r}")
        self.threshold, self.alpha, self.max_iter, self.unbias = float(threshold), float(alpha), max_iter, unbias

    def fit(self, theta, y) -> STLSQ:
        theta, y = _states(theta, "STLSQ.fit"), _states(y, "STLSQ.fit")
        if theta.shape[0] != y.shape[0]:
            raise ShapeError(f"STLSQ.fit: theta has {theta.shape[0]} rows but y has {y.shape[0]}")
        n_targets, n_features = y.shape[1], theta.shape[1]
        keep = numpy.ones((n_targets, n_features), dtype=bool)
        coef = numpy.zeros((n_targets, n_features))
        self.history_ = []
        for _ in range(self.max_iter):
            for i in range(n_targets):
                coef[i] = 0.0
                if keep[i].any():
                    coef[i, keep[i]] = ridge(theta[:, keep[i]], y[:, i], self.alpha)
            new_keep = numpy.abs(coef) >= self.threshold
            coef[~new_keep] = 0.0
            self.history_.append(coef.copy())
            if numpy.array_equal(new_keep, keep):
                break
            keep = new_keep
        if self.unbias:
            for i in range(n_targets):
                if keep[i].any():
                    coef[i, keep[i]] = numpy.linalg.lstsq(theta[:, keep[i]], y[:, i], rcond=None)[0]
        self.coef_ = coef
        return self


class SR3:
    """Sparse relaxed regularized regression (module docstring). ``coef_`` (n_targets,
    n_features) after :meth:`fit` are the sparse W; ``iterations_`` the iterations run."""

    def __init__(self, threshold: float = 0.1, nu: float = 1.0, regularizer: str = "l0", max_iter: int = 1000,
                 tol: float = 1e-8, unbias: bool = True):
        if not threshold >= 0:
            raise ValueError(f"SR3: threshold must be >= 0, got {threshold!r}")
        if not nu > 0:
            raise ValueError(f"SR3: nu must be positive, got {nu!r}")
        if regularizer not in ("l0", "l1"):
            raise ValueError(f"SR3: regularizer must be 'l0' or 'l1', got {regularizer!r}")
        self.threshold, self.nu, self.regularizer = float(threshold), float(nu), regularizer
        self.max_iter, self.tol, self.unbias = max_iter, float(tol), unbias

    def prox(self, xi: numpy.ndarray) -> numpy.ndarray:
        if self.regularizer == "l0":
            return numpy.where(numpy.abs(xi) > self.threshold, xi, 0.0)
        return numpy.sign(xi) * numpy.maximum(numpy.abs(xi) - self.threshold, 0.0)

    def fit(self, theta, y) -> SR3:
        theta, y = _states(theta, "SR3.fit"), _states(y, "SR3.fit")
        if theta.shape[0] != y.shape[0]:
            raise ShapeError(f"SR3.fit: theta has {theta.shape[0]} rows but y has {y.shape[0]}")
        system = theta.T @ theta + numpy.eye(theta.shape[1]) / self.nu
        right = theta.T @ y
        w = numpy.linalg.lstsq(theta, y, rcond=None)[0]
        xi = w
        for iteration in range(1, self.max_iter + 1):
            self.iterations_ = iteration
            xi_new = numpy.linalg.solve(system, right + w / self.nu)
            w_new = self.prox(xi_new)
            change = max(numpy.abs(xi_new - xi).max(), numpy.abs(w_new - w).max())
            xi, w = xi_new, w_new
            if change < self.tol:
                break
        coef = w.T.copy()
        if self.unbias:
            for i in range(coef.shape[0]):
                keep = coef[i] != 0
                if keep.any():
                    coef[i, keep] = numpy.linalg.lstsq(theta[:, keep], y[:, i], rcond=None)[0]
        self.coef_ = coef
        return self


class SINDy:
    """X' = Theta(X) Xi^T with a ``library`` (default: polynomials up to degree 2) and an
    ``optimizer`` (default :class:`STLSQ`). ``differentiation``: 'finite_difference' or
    'savgol' (used when ``fit`` is not given ``x_dot``).

    Example::

        model = SINDy(PolynomialLibrary(2), STLSQ(threshold=0.5)).fit(x, t)
        model.print(["x", "y", "z"])           # x' = -10.000 x + 10.000 y ...
        x_sim = model.simulate(x[0], t)
    """

    def __init__(self, library: FeatureLibrary | None = None, optimizer=None,
                 differentiation: str = "finite_difference", feature_names: list[str] | None = None):
        if differentiation not in ("finite_difference", "savgol"):
            raise ValueError(f"SINDy: differentiation must be 'finite_difference' or 'savgol', got {differentiation!r}")
        self.library = PolynomialLibrary(2) if library is None else library
        self.optimizer = STLSQ() if optimizer is None else optimizer
        self.differentiation = differentiation
        self.input_names = feature_names
        self.coefficients_ = None

    def differentiate(self, x, t) -> numpy.ndarray:
        return finite_difference(x, t) if self.differentiation == "finite_difference" else savgol_derivative(x, t)

    def fit(self, x, t, x_dot=None) -> SINDy:
        """Fit to samples x (m, n) at times ``t`` (array of m times or the uniform step). Several
        trajectories: lists for x, t (or one step for all) and x_dot; their rows are stacked."""
        many = isinstance(x, (list, tuple))
        trajectories = list(x) if many else [x]
        times = list(t) if many and isinstance(t, (list, tuple)) else [t] * len(trajectories)
        derivatives = list(x_dot) if many and x_dot is not None else [x_dot] * len(trajectories)
        if not len(times) == len(derivatives) == len(trajectories):
            raise ValueError(f"SINDy.fit: {len(trajectories)} trajectories but {len(times)} time arrays "
                             f"and {len(derivatives)} derivative arrays")
        thetas, targets = [], []
        for states, when, rates in zip(trajectories, times, derivatives):
            states = _states(states, "SINDy.fit")
            _time_grid(when, states.shape[0], "SINDy.fit")
            rates = self.differentiate(states, when) if rates is None else _states(rates, "SINDy.fit")
            if rates.shape != states.shape or states.shape[1] != _states(trajectories[0], "SINDy.fit").shape[1]:
                raise ShapeError(f"SINDy.fit: x_dot has shape {rates.shape} but x has {states.shape} (every "
                                 "trajectory needs the same number of states)")
            thetas.append(self.library.transform(states))
            targets.append(rates)
        self.n_inputs = targets[0].shape[1]
        if self.input_names is None:
            self.input_names = default_names(self.n_inputs)
        self.coefficients_ = self.optimizer.fit(numpy.concatenate(thetas), numpy.concatenate(targets)).coef_
        return self

    def _check_fitted(self, who: str) -> None:
        if self.coefficients_ is None:
            raise RuntimeError(f"SINDy.{who}: call fit first")

    def feature_names(self) -> list[str]:
        self._check_fitted("feature_names")
        return self.library.feature_names(self.input_names)

    def equations(self, names: list[str] | None = None, precision: int = 3) -> list[str]:
        """One right-hand side per state, e.g. '-10.000 x0 + 10.000 x1' (zero terms left out)."""
        self._check_fitted("equations")
        terms = self.library.feature_names(names or self.input_names)
        out = []
        for row in self.coefficients_:
            parts = [f"{c:.{precision}f}" + ("" if name == "1" else f" {name}")
                     for c, name in zip(row, terms) if c != 0]
            out.append(" + ".join(parts) if parts else f"{0:.{precision}f}")
        return out

    def print(self, names: list[str] | None = None, precision: int = 3) -> None:
        """Print "x0' = -10.000 x0 + 10.000 x1" per state."""
        names = names or self.input_names
        for name, rhs in zip(names, self.equations(names, precision)):
            print(f"{name}' = {rhs}")

    def predict(self, x) -> numpy.ndarray:
        """The model's X' at the states x (m, n)."""
        self._check_fitted("predict")
        x = _states(x, "SINDy.predict")
        if x.shape[1] != self.n_inputs:
            raise ShapeError(f"SINDy.predict: the model has {self.n_inputs} states, x has shape {x.shape}")
        return self.library.transform(x) @ self.coefficients_.T

    def simulate(self, x0, t, rtol: float = 1e-9, atol: float = 1e-9) -> numpy.ndarray:
        """Integrate the identified system from ``x0`` (SciPy's solve_ivp, RK45) and sample at ``t``."""
        from scipy.integrate import solve_ivp

        self._check_fitted("simulate")
        t = numpy.asarray(t, dtype=numpy.float64)
        x0 = numpy.asarray(x0, dtype=numpy.float64).reshape(-1)
        if x0.shape[0] != self.n_inputs:
            raise ShapeError(f"SINDy.simulate: x0 has {x0.shape[0]} states, the model has {self.n_inputs}")
        solution = solve_ivp(lambda _, s: self.predict(s[None])[0], (t[0], t[-1]), x0, t_eval=t, rtol=rtol, atol=atol)
        if not solution.success:
            raise RuntimeError(f"SINDy.simulate: integration failed: {solution.message}")
        return solution.y.T

    def score(self, x, t, x_dot=None) -> float:
        """R^2 of the predicted derivatives against ``x_dot`` (default: estimated from x, t),
        averaged over the states: 1 - sum (x' - pred)^2 / sum (x' - mean x')^2."""
        x = _states(x, "SINDy.score")
        _time_grid(t, x.shape[0], "SINDy.score")
        x_dot = self.differentiate(x, t) if x_dot is None else _states(x_dot, "SINDy.score")
        residual = ((x_dot - self.predict(x)) ** 2).sum(axis=0)
        total = ((x_dot - x_dot.mean(axis=0)) ** 2).sum(axis=0)
        return float(numpy.mean(1.0 - residual / total))
