"""The last-layer Laplace approximation of a softmax classifier (Daxberger et al. 2021,
"Laplace Redux"; the ``laplace-torch`` library's ``LLLaplace`` for classification).

Only the last Dense layer's weights theta = [W; b] (its (d + 1, C) matrix, flattened row by
row: P = (d + 1) C values) are treated as random; the layers below give features phi(x)
and, with phi_e = [phi; 1], the logits f(x) = phi_e^T [W; b], whose Jacobian in theta is
J(x) = phi_e^T (x) I_C (a Kronecker product). Around the trained weights theta_MAP the
posterior is Gaussian, N(theta_MAP, Sigma), Sigma = (H + lambda I)^{-1}, with lambda the
precision of the prior N(0, lambda^{-1} I) and H the curvature of the summed cross-entropy:

    "ggn": H = sum_n J_n^T (diag(p_n) - p_n p_n^T) J_n      (the Gauss-Newton matrix, equal to
           the Fisher and, f being linear in theta, to the Hessian)
    "ef":  H = sum_n g_n g_n^T, g_n = phi_e,n (x) (p_n - y_n)   (the empirical Fisher)

kept ``"full"`` or ``"diag"`` (its diagonal only). The log marginal likelihood of lambda is

    log p(D | lambda) ~ -sum_n CE_n(theta_MAP) - 1/2 (log det(H + lambda I) - P log lambda
                        + lambda ||theta_MAP||^2),

a function with one maximum in lambda: :meth:`LastLayerLaplace.optimize_prior_precision`
finds it by golden-section search over log lambda (or picks lambda by the validation
log-likelihood). Predictions use the Gaussian of the
logits, f ~ N(f_mu, J Sigma J^T): ``"probit"`` gives softmax(f_mu / sqrt(1 + pi/8 diag(var)))
(per class), ``"mc"`` the mean softmax of sampled logits.
"""

from __future__ import annotations

import math

import numpy as np

from lamina.autograd import Tensor, no_grad
from lamina.backend import rng as lamina_rng
from lamina.nn import Dense
from lamina.nn.module import Module, evaluation_mode
from lamina.train.calibration import golden_section_minimum
from lamina.train.uncertainty import model_input

__all__ = ["LastLayerLaplace"]

STRUCTURES = ("full", "diag")
CURVATURES = ("ggn", "ef")
LINKS = ("probit", "mc")


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return shifted / shifted.sum(axis=-1, keepdims=True)


def _probit(mean: np.ndarray, covariance: np.ndarray) -> np.ndarray:
    """softmax(f_mu / sqrt(1 + pi/8 var)), var the diagonal of the logits' covariance."""
    variance = np.diagonal(covariance, axis1=1, axis2=2)
    return _softmax(mean / np.sqrt(1.0 + math.pi / 8.0 * variance))


def _positive(value, who: str, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0 < value < math.inf:
        raise ValueError(f"{who}: {what} must be a positive number, got {value!r}")
    return float(value)


class LastLayerLaplace:
    """The Laplace approximation over ``model``'s last Dense layer (``last_layer``, by default
    the last :class:`~lamina.nn.Dense` among its modules, without activation: its outputs are
    the logits). ``hessian_structure``: ``"full"`` or ``"diag"``; ``backend``: ``"ggn"`` or
    ``"ef"``; ``prior_precision``: lambda > 0, or ``"marglik"`` to choose it in :meth:`fit` by
    the marginal likelihood. See the module's docstring for the formulas.
    """

    def __init__(self, model: Module, hessian_structure: str = "full", backend: str = "ggn",
                 prior_precision: float | str = 1.0, last_layer: Dense | None = None):
        who = "LastLayerLaplace"
        if not isinstance(model, Module):
            raise TypeError(f"{who}: model must be a lamina Module, got {type(model).__name__}")
        if hessian_structure not in STRUCTURES:
            raise ValueError(f"{who}: hessian_structure must be one of {STRUCTURES}, got {hessian_structure!r}")
        if backend not in CURVATURES:
            raise ValueError(f"{who}: backend must be one of {CURVATURES}, got {backend!r}")
        if last_layer is None:
            last_layer = next((m for m in reversed(list(model.modules())) if isinstance(m, Dense)), None)
        if not isinstance(last_layer, Dense):
            raise ValueError(f"{who}: the model has no Dense layer to treat as random; pass last_layer=")
        if last_layer.activation is not None:
            raise ValueError(f"{who}: the last Dense layer must output logits (no activation), got activation "
                             f"{last_layer.activation!r}")
        self.optimize_prior = prior_precision == "marglik"
        self.prior_precision = 1.0 if self.optimize_prior else _positive(prior_precision, who, "prior_precision")
        self.model, self.last_layer = model, last_layer
        self.hessian_structure, self.backend = hessian_structure, backend
        self.hessian: np.ndarray | None = None
        self.loss: float | None = None
        self.n_data = 0

    # -- features and weights ------------------------------------------------------------
    def features(self, x) -> np.ndarray:
        """phi_e(x) = [phi(x); 1], the last layer's inputs (and a 1 for the bias), float64."""
        captured = []
        handle = self.last_layer.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
        try:
            with no_grad(), evaluation_mode(self.model):
                self.model(model_input(self.model, x))
        finally:
            handle.remove()
        if not captured:
            raise RuntimeError("LastLayerLaplace: the model's forward pass did not call its last Dense layer")
        phi = captured[-1]
        phi = np.asarray(phi.numpy() if isinstance(phi, Tensor) else phi, dtype=np.float64)
        phi = phi.reshape(len(phi), -1)
        if self.last_layer.use_bias:
            phi = np.concatenate([phi, np.ones((len(phi), 1))], axis=1)
        return phi

    @property
    def weights(self) -> np.ndarray:
        """theta_MAP as the (d + 1, C) matrix [W; b] (d rows without a bias)."""
        rows = [np.asarray(self.last_layer.weight.data, dtype=np.float64)]
        if self.last_layer.use_bias:
            rows.append(np.asarray(self.last_layer.bias.data, dtype=np.float64)[None, :])
        return np.concatenate(rows, axis=0)

    # -- fitting ---------------------------------------------------------------------------
    def fit(self, x, y) -> LastLayerLaplace:
        """Accumulate H and the summed cross-entropy over the training data (x, y) (integer
        labels); with ``prior_precision="marglik"``, then choose lambda."""
        phi = self.features(x)
        theta = self.weights
        classes = theta.shape[1]
        labels = np.asarray(y.numpy() if isinstance(y, Tensor) else y)
        if labels.shape != (len(phi),) or labels.dtype.kind not in "iu":
            raise ValueError(f"LastLayerLaplace.fit: labels must be {len(phi)} integer class indices, got shape "
                             f"{labels.shape} and dtype {labels.dtype}")
        if labels.min() < 0 or labels.max() >= classes:
            raise ValueError(f"LastLayerLaplace.fit: labels must lie in [0, {classes - 1}], got "
                             f"[{labels.min()}, {labels.max()}]")
        logits = phi @ theta
        probs = _softmax(logits)
        log_norm = logits.max(axis=1) + np.log(np.exp(logits - logits.max(axis=1, keepdims=True)).sum(axis=1))
        self.loss = float(np.sum(log_norm - logits[np.arange(len(labels)), labels]))
        self.n_data = len(labels)
        self.hessian = self._curvature(phi, probs, np.eye(classes)[labels])
        if self.hessian_structure == "full":
            # H = V diag(e) V^T once, so that (H + lambda I)^{-1} and its log det cost little for any lambda
            eigenvalues, self._eigenvectors = np.linalg.eigh(self.hessian)
            self._eigenvalues = np.maximum(eigenvalues, 0.0)
        if self.optimize_prior:
            self.optimize_prior_precision()
        return self

    def _curvature(self, phi: np.ndarray, probs: np.ndarray, onehot: np.ndarray) -> np.ndarray:
        """H (P, P) for "full", its diagonal as a (d + 1, C) array for "diag"."""
        n, width = phi.shape
        classes = probs.shape[1]
        if self.backend == "ef":
            gradients = (phi[:, :, None] * (probs - onehot)[:, None, :]).reshape(n, width * classes)
            return gradients.T @ gradients if self.hessian_structure == "full" else (
                np.sum(gradients ** 2, axis=0).reshape(width, classes))
        if self.hessian_structure == "diag":
            return (phi ** 2).T @ (probs * (1 - probs))
        output_curvature = probs[:, :, None] * np.eye(classes) - probs[:, :, None] * probs[:, None, :]
        outer = (phi[:, :, None] * phi[:, None, :]).reshape(n, width * width)
        blocks = (outer.T @ output_curvature.reshape(n, classes * classes)).reshape(width, width, classes, classes)
        return blocks.transpose(0, 2, 1, 3).reshape(width * classes, width * classes)

    def _check_fitted(self, who: str) -> None:
        if self.hessian is None:
            raise RuntimeError(f"LastLayerLaplace.{who}: call fit(x, y) on the training data first")

    # -- the posterior and the marginal likelihood ------------------------------------------
    def posterior_precision(self, prior_precision: float | None = None) -> np.ndarray:
        """H + lambda I (full) or the diagonal H + lambda as a (d + 1, C) array (diag)."""
        self._check_fitted("posterior_precision")
        prior = self.prior_precision if prior_precision is None else prior_precision
        if self.hessian_structure == "diag":
            return self.hessian + prior
        return self.hessian + prior * np.eye(len(self.hessian))

    def posterior_covariance(self) -> np.ndarray:
        """Sigma: (H + lambda I)^{-1}, or its diagonal 1 / (H + lambda) as a (d + 1, C) array."""
        if self.hessian_structure == "diag":
            return 1.0 / self.posterior_precision()
        return (self._eigenvectors / (self._eigenvalues + self.prior_precision)) @ self._eigenvectors.T

    def log_marginal_likelihood(self, prior_precision: float | None = None) -> float:
        """The Laplace estimate of log p(D | lambda) of the module's docstring."""
        self._check_fitted("log_marginal_likelihood")
        prior = self.prior_precision if prior_precision is None else prior_precision
        if self.hessian_structure == "diag":
            log_det = float(np.sum(np.log(self.posterior_precision(prior))))
        else:
            log_det = float(np.sum(np.log(self._eigenvalues + prior)))
        theta = self.weights
        log_det_ratio = log_det - theta.size * math.log(prior)
        return -self.loss - 0.5 * (log_det_ratio + prior * float(np.sum(theta ** 2)))

    def optimize_prior_precision(self, method: str = "marglik", x_val=None, y_val=None, low: float = 1e-4,
                                 high: float = 1e4, grid_size: int = 41, tol: float = 1e-8) -> float:
        """Choose lambda in [low, high], set it and return it.

        ``"marglik"``: the maximiser of the log marginal likelihood (golden-section search over
        log lambda; the likelihood has a single maximum). ``"gridsearch"``: the lambda among
        ``grid_size`` log-spaced values with the smallest negative log-likelihood of the probit
        predictive on validation data (``x_val``, ``y_val``), as laplace-torch's grid search.
        """
        self._check_fitted("optimize_prior_precision")
        if method == "gridsearch":
            return self._grid_search(x_val, y_val, np.geomspace(low, high, grid_size))
        if method != "marglik":
            raise ValueError(f"LastLayerLaplace.optimize_prior_precision: method must be 'marglik' or 'gridsearch', "
                             f"got {method!r}")
        cost = lambda log_prior: -self.log_marginal_likelihood(math.exp(log_prior))   # noqa: E731
        self.prior_precision = math.exp(golden_section_minimum(cost, math.log(low), math.log(high), tol))
        return self.prior_precision

    def _grid_search(self, x_val, y_val, grid: np.ndarray) -> float:
        if x_val is None or y_val is None:
            raise ValueError("LastLayerLaplace.optimize_prior_precision: method='gridsearch' needs x_val and y_val")
        phi = self.features(x_val)
        labels = np.asarray(y_val.numpy() if isinstance(y_val, Tensor) else y_val).astype(np.int64)
        mean, projected = phi @ self.weights, self._projected(phi)
        costs = []
        for prior in grid:
            probs = _probit(mean, self._logit_covariance(projected, prior))
            costs.append(-np.mean(np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-300))))
        self.prior_precision = float(grid[int(np.argmin(costs))])
        return self.prior_precision

    # -- predictions -------------------------------------------------------------------------
    def logit_distribution(self, x) -> tuple[np.ndarray, np.ndarray]:
        """f_mu (N, C) and the covariance J Sigma J^T of the logits (N, C, C)."""
        self._check_fitted("logit_distribution")
        phi = self.features(x)
        return phi @ self.weights, self._logit_covariance(self._projected(phi), self.prior_precision)

    def _projected(self, phi: np.ndarray) -> np.ndarray:
        """J V (N, C, P) with V the eigenvectors of H (full); phi itself (diag)."""
        if self.hessian_structure == "diag":
            return phi
        width, classes = self.weights.shape
        return np.einsum("ni,iak->nak", phi, self._eigenvectors.reshape(width, classes, -1), optimize=True)

    def _logit_covariance(self, projected: np.ndarray, prior: float) -> np.ndarray:
        """J Sigma J^T = (J V) diag(1 / (e + lambda)) (J V)^T, or diagonal from phi^2 and 1 / (h + lambda)."""
        if self.hessian_structure == "diag":
            variance = (projected ** 2) @ (1.0 / self.posterior_precision(prior))
            return variance[:, :, None] * np.eye(variance.shape[1])
        return np.matmul(projected / (self._eigenvalues + prior), projected.transpose(0, 2, 1))

    def predict(self, x, link_approx: str = "probit", n_samples: int = 100,
                rng: np.random.Generator | None = None) -> np.ndarray:
        """The predictive class probabilities (N, C): ``"probit"`` or ``"mc"`` (``n_samples``
        draws of the logits from ``rng``, by default :func:`lamina.backend.rng`)."""
        if link_approx not in LINKS:
            raise ValueError(f"LastLayerLaplace.predict: link_approx must be one of {LINKS}, got {link_approx!r}")
        mean, covariance = self.logit_distribution(x)
        if link_approx == "probit":
            return _probit(mean, covariance)
        rng = lamina_rng() if rng is None else rng
        classes = mean.shape[1]
        factor = np.linalg.cholesky(covariance + 1e-10 * np.eye(classes))
        noise = rng.standard_normal((n_samples, len(mean), classes))
        logits = mean[None] + np.einsum("nab,snb->sna", factor, noise)
        return _softmax(logits).mean(axis=0)
