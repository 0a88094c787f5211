"""Gaussian mixture models fitted by expectation-maximization (as scikit-learn's
GaussianMixture, same parametrization and update formulas).

The density p(x) = sum_k w_k N(x; mu_k, Sigma_k). Each component is kept through the Cholesky
factor W_k of its precision (W_k W_k^T = Sigma_k^-1), so that

    log N(x; mu_k, Sigma_k) = -1/2 (D log 2 pi + |(x - mu_k)^T W_k|^2) + sum_i log W_k[i, i].

EM alternates the responsibilities r_nk = w_k N(x_n; mu_k, Sigma_k) / p(x_n) (E-step) and,
with N_k = sum_n r_nk, the weighted estimates (M-step)

    w_k = N_k / N,   mu_k = sum_n r_nk x_n / N_k,   Sigma_k = sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T / N_k + reg I

with Sigma_k restricted by ``covariance_type``: 'full' (one matrix per component), 'tied'
(one matrix shared: sum_k N_k Sigma_k / N), 'diag' (the diagonal only) or 'spherical' (one
variance per component, the mean of the diagonal). It stops when the mean log-likelihood
rises by less than ``tol``. The responsibilities start from k-means (k-means++ seeds, then
Lloyd's iterations) unless the weights, means and precisions are given.

BIC = -2 log L + p log N and AIC = -2 log L + 2 p count the free parameters p: K - 1 weights,
K D means and the covariances' entries (K D (D + 1) / 2 full, D (D + 1) / 2 tied, K D diag,
K spherical).
"""

from __future__ import annotations

import math

import numpy
from scipy.linalg import solve_triangular
from scipy.special import logsumexp

from lamina.errors import ShapeError
from lamina.models.statespace._checks import as_float_array, check_positive, check_shape, check_stochastic
from lamina.models.statespace._kmeans import kmeans_labels

COVARIANCE_TYPES = ("full", "tied", "diag", "spherical")
_NAME = "GaussianMixture"


def _precision_cholesky(covariances: numpy.ndarray, covariance_type: str) -> numpy.ndarray:
    """W with W W^T = Sigma^-1 (W = L^-T for Sigma = L L^T); 1 / sqrt(variance) for the
    diagonal kinds. A matrix that is not positive definite raises a ValueError."""
    if covariance_type in ("diag", "spherical"):
        if (covariances <= 0).any():
            raise ValueError(f"{_NAME}: a component's variance is not positive (min {covariances.min():.3g}); "
                             "lower n_components or raise reg_covar")
        return 1.0 / numpy.sqrt(covariances)
    matrices = covariances[None] if covariance_type == "tied" else covariances
    factors = numpy.empty_like(matrices)
    for j, matrix in enumerate(matrices):
        try:
            lower = numpy.linalg.cholesky(matrix)
        except numpy.linalg.LinAlgError:
            raise ValueError(f"{_NAME}: the covariance of component {j} is not positive definite (smallest "
                             f"eigenvalue {numpy.linalg.eigvalsh(matrix).min():.3g}); lower n_components or "
                             "raise reg_covar") from None
        factors[j] = solve_triangular(lower, numpy.eye(len(matrix)), lower=True).T
    return factors[0] if covariance_type == "tied" else factors


def _covariances_from_precision_cholesky(factors: numpy.ndarray, covariance_type: str) -> numpy.ndarray:
    if covariance_type in ("diag", "spherical"):
        return 1.0 / factors ** 2
    if covariance_type == "tied":
        return numpy.linalg.inv(factors @ factors.T)
    return numpy.linalg.inv(factors @ numpy.swapaxes(factors, 1, 2))


def estimate_gaussian_parameters(x: numpy.ndarray, resp: numpy.ndarray, reg_covar: float, covariance_type: str):
    """The M-step: (weights, means, covariances) from responsibilities ``resp`` (N, K)."""
    counts = resp.sum(axis=0) + 10 * numpy.finfo(resp.dtype).eps
    means = resp.T @ x / counts[:, None]
    d = x.shape[1]
    if covariance_type == "full":
        covariances = numpy.empty((len(counts), d, d))
        for j in range(len(counts)):
            centred = x - means[j]
            covariances[j] = (resp[:, j, None] * centred).T @ centred / counts[j]
            covariances[j].flat[::d + 1] += reg_covar
    elif covariance_type == "tied":
        covariances = (x.T @ x - (counts[:, None] * means).T @ means) / counts.sum()
        covariances.flat[::d + 1] += reg_covar
    else:
        second = resp.T @ (x * x) / counts[:, None]
        covariances = second - 2 * means * (resp.T @ x) / counts[:, None] + means ** 2 + reg_covar
        if covariance_type == "spherical":
            covariances = covariances.mean(axis=1)
    return counts / counts.sum(), means, covariances


def log_gaussian_densities(x, means, precision_cholesky, covariance_type: str) -> numpy.ndarray:
    """log N(x_n; mu_k, Sigma_k) (N, K)."""
    n, d = x.shape
    k = len(means)
    if covariance_type == "full":
        squared = numpy.empty((n, k))
        for j in range(k):
            squared[:, j] = (((x - means[j]) @ precision_cholesky[j]) ** 2).sum(axis=1)
        log_det = numpy.log(numpy.diagonal(precision_cholesky, axis1=1, axis2=2)).sum(axis=1)
    elif covariance_type == "tied":
        squared = numpy.stack([(((x - mu) @ precision_cholesky) ** 2).sum(axis=1) for mu in means], axis=1)
        log_det = numpy.full(k, numpy.log(numpy.diag(precision_cholesky)).sum())
    elif covariance_type == "diag":
        precisions = precision_cholesky ** 2
        squared = ((x[:, None, :] - means[None]) ** 2 * precisions[None]).sum(axis=2)
        log_det = numpy.log(precision_cholesky).sum(axis=1)
    else:
        squared = ((x[:, None, :] - means[None]) ** 2).sum(axis=2) * precision_cholesky[None] ** 2
        log_det = d * numpy.log(precision_cholesky)
    return -0.5 * (d * math.log(2 * math.pi) + squared) + log_det[None]


class GaussianMixture:
    """A mixture of ``n_components`` Gaussians fitted by EM (see the module docstring).

    Fitted attributes (scikit-learn's names): ``weights_`` (K,), ``means_`` (K, D),
    ``covariances_`` and ``precisions_cholesky_`` (shapes by ``covariance_type``: full (K, D, D),
    tied (D, D), diag (K, D), spherical (K,)), ``converged_``, ``n_iter_``, ``lower_bound_``
    (the last mean log-likelihood). ``weights_init``, ``means_init`` and ``precisions_init``
    (precisions, the inverse covariances, shaped as the covariances) replace the k-means start.
    With ``n_init`` > 1 the best of several starts is kept."""

    def __init__(self, n_components: int = 1, covariance_type: str = "full", *, tol: float = 1e-3,
                 reg_covar: float = 1e-6, max_iter: int = 100, n_init: int = 1, weights_init=None,
                 means_init=None, precisions_init=None, seed: int | None = 0):
        if int(n_components) != n_components or n_components < 1:
            raise ValueError(f"{_NAME}: n_components must be a positive integer; got {n_components!r}")
        if covariance_type not in COVARIANCE_TYPES:
            raise ValueError(f"{_NAME}: covariance_type must be one of {COVARIANCE_TYPES}; got {covariance_type!r}")
        if reg_covar < 0 or max_iter < 1 or n_init < 1:
            raise ValueError(f"{_NAME}: need reg_covar >= 0, max_iter >= 1, n_init >= 1; got {reg_covar}, "
                             f"{max_iter}, {n_init}")
        self.n_components, self.covariance_type = int(n_components), covariance_type
        self.tol, self.reg_covar, self.max_iter, self.n_init, self.seed = tol, reg_covar, max_iter, n_init, seed
        self.weights_init, self.means_init, self.precisions_init = weights_init, means_init, precisions_init
        self.weights_ = self.means_ = self.covariances_ = self.precisions_cholesky_ = None

    # -- shapes and checks ------------------------------------------------------------
    def _data(self, x, what: str) -> numpy.ndarray:
        x = as_float_array("X", x, (1, 2), f"{_NAME}.{what}")
        x = x[:, None] if x.ndim == 1 else x
        if self.means_ is not None and what != "fit" and x.shape[1] != self.means_.shape[1]:
            raise ShapeError(f"{_NAME}.{what}: X has {x.shape[1]} features; the model was fitted on "
                             f"{self.means_.shape[1]}")
        return x

    def _covariance_shape(self, d: int) -> tuple[int, ...]:
        k = self.n_components
        return {"full": (k, d, d), "tied": (d, d), "diag": (k, d), "spherical": (k,)}[self.covariance_type]

    def _given_start(self, d: int):
        k = self.n_components
        weights = means = factors = None
        if self.weights_init is not None:
            weights = as_float_array("weights_init", self.weights_init, 1, _NAME)
            check_shape("weights_init", weights, (k,), _NAME)
            check_stochastic("weights_init", weights, _NAME)
        if self.means_init is not None:
            means = as_float_array("means_init", self.means_init, 2, _NAME)
            check_shape("means_init", means, (k, d), _NAME)
        if self.precisions_init is not None:
            precisions = as_float_array("precisions_init", self.precisions_init, (1, 2, 3), _NAME)
            check_shape("precisions_init", precisions, self._covariance_shape(d), _NAME)
            if self.covariance_type in ("diag", "spherical"):
                check_positive("precisions_init", precisions, _NAME)
                factors = numpy.sqrt(precisions)
            else:
                stack = precisions[None] if self.covariance_type == "tied" else precisions
                try:
                    factors = numpy.linalg.cholesky(stack)
                except numpy.linalg.LinAlgError:
                    raise ValueError(f"{_NAME}: precisions_init must be symmetric positive definite") from None
                factors = factors[0] if self.covariance_type == "tied" else factors
        return weights, means, factors

    def _require_fitted(self, what: str) -> None:
        if self.means_ is None:
            raise RuntimeError(f"{_NAME}.{what}: the model is not fitted; call fit first")

    # -- EM -------------------------------------------------------------------------------
    def _start(self, x: numpy.ndarray, rng: numpy.random.Generator) -> None:
        n, k = len(x), self.n_components
        weights, means, factors = self._given_start(x.shape[1])
        if weights is None or means is None or factors is None:
            resp = numpy.zeros((n, k))
            resp[numpy.arange(n), kmeans_labels(x, k, rng)] = 1.0
            w, mu, cov = estimate_gaussian_parameters(x, resp, self.reg_covar, self.covariance_type)
            weights = w if weights is None else weights
            means = mu if means is None else means
            factors = _precision_cholesky(cov, self.covariance_type) if factors is None else factors
        self.weights_, self.means_, self.precisions_cholesky_ = weights, means, factors
        self.covariances_ = _covariances_from_precision_cholesky(factors, self.covariance_type)

    def _e_step(self, x: numpy.ndarray) -> tuple[float, numpy.ndarray]:
        weighted = self._weighted_log_densities(x)
        norm = logsumexp(weighted, axis=1)
        return float(norm.mean()), weighted - norm[:, None]

    def _m_step(self, x: numpy.ndarray, log_resp: numpy.ndarray) -> None:
        weights, means, covariances = estimate_gaussian_parameters(x, numpy.exp(log_resp), self.reg_covar,
                                                                   self.covariance_type)
        self.precisions_cholesky_ = _precision_cholesky(covariances, self.covariance_type)
        self.weights_, self.means_, self.covariances_ = weights, means, covariances

    def _weighted_log_densities(self, x: numpy.ndarray) -> numpy.ndarray:
        densities = log_gaussian_densities(x, self.means_, self.precisions_cholesky_, self.covariance_type)
        with numpy.errstate(divide="ignore"):
            return densities + numpy.log(self.weights_)[None]

    def fit(self, x) -> GaussianMixture:
        """EM from k-means (or the given start) until the mean log-likelihood changes by less
        than ``tol``; the best of ``n_init`` starts is kept."""
        x = self._data(x, "fit")
        if len(x) < self.n_components:
            raise ValueError(f"{_NAME}.fit: {len(x)} samples cannot fit {self.n_components} components")
        rng = numpy.random.default_rng(self.seed)
        best = None
        for _ in range(self.n_init):
            self._start(x, rng)
            lower_bound, converged, iterations = -math.inf, False, 0
            while iterations < self.max_iter and not converged:
                iterations += 1
                previous = lower_bound
                lower_bound, log_resp = self._e_step(x)
                self._m_step(x, log_resp)
                converged = abs(lower_bound - previous) < self.tol
            if best is None or lower_bound > best[0]:
                best = (lower_bound, converged, iterations, self.weights_, self.means_, self.covariances_,
                        self.precisions_cholesky_)
        (self.lower_bound_, self.converged_, self.n_iter_, self.weights_, self.means_, self.covariances_,
         self.precisions_cholesky_) = best
        return self

    # -- inference ------------------------------------------------------------------------
    def score_samples(self, x) -> numpy.ndarray:
        """log p(x_n) (N,)."""
        self._require_fitted("score_samples")
        return logsumexp(self._weighted_log_densities(self._data(x, "score_samples")), axis=1)

    def score(self, x) -> float:
        """The mean log-likelihood of the rows of x."""
        return float(self.score_samples(x).mean())

    def predict_proba(self, x) -> numpy.ndarray:
        """The responsibilities p(k | x_n) (N, K)."""
        self._require_fitted("predict_proba")
        return numpy.exp(self._e_step(self._data(x, "predict_proba"))[1])

    def predict(self, x) -> numpy.ndarray:
        """The most probable component of each row (N,)."""
        return self.predict_proba(x).argmax(axis=1)

    def n_parameters(self) -> int:
        """The number of free parameters p."""
        self._require_fitted("n_parameters")
        k, d = self.means_.shape
        covariance = {"full": k * d * (d + 1) // 2, "tied": d * (d + 1) // 2, "diag": k * d,
                      "spherical": k}[self.covariance_type]
        return covariance + k * d + k - 1

    def bic(self, x) -> float:
        """The Bayesian information criterion -2 log L + p log N (lower is better)."""
        x = self._data(x, "bic")
        return -2 * self.score(x) * len(x) + self.n_parameters() * math.log(len(x))

    def aic(self, x) -> float:
        """The Akaike information criterion -2 log L + 2 p (lower is better)."""
        x = self._data(x, "aic")
        return -2 * self.score(x) * len(x) + 2 * self.n_parameters()

    def sample(self, n_samples: int, seed: int | None = None) -> tuple[numpy.ndarray, numpy.ndarray]:
        """(X (n, D), component labels (n,)) drawn from the fitted mixture."""
        self._require_fitted("sample")
        rng = numpy.random.default_rng(seed)
        k, d = self.means_.shape
        labels = rng.choice(k, size=n_samples, p=self.weights_ / self.weights_.sum())
        noise = rng.standard_normal((n_samples, d))
        covariances = self.covariances_
        if self.covariance_type == "full":
            scaled = numpy.einsum("nij,nj->ni", numpy.linalg.cholesky(covariances)[labels], noise)
        elif self.covariance_type == "tied":
            scaled = noise @ numpy.linalg.cholesky(covariances).T
        elif self.covariance_type == "diag":
            scaled = noise * numpy.sqrt(covariances[labels])
        else:
            scaled = noise * numpy.sqrt(covariances[labels])[:, None]
        return self.means_[labels] + scaled, labels
