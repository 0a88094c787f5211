"""Priors over datasets for prior-fitted networks (Müller et al. 2022, "Transformers can do
Bayesian inference"; :class:`lamina.models.PFN`).

A prior here samples whole datasets D = {(x_i, y_i)}: first a latent function (hyperparameters
and weights), then the points. A PFN is trained on many such draws to predict y at held-out x
from the rest of the dataset, which makes its output an approximation of the posterior
predictive distribution p(y | x, D_train) under the prior.

* :class:`GPPrior`: regression. Per dataset a lengthscale l and a noise standard deviation
  sigma_n are drawn log-uniformly from their ranges, x ~ U(x_range)^d and

      y ~ N(0, K + sigma_n^2 I),   K_ij = s^2 exp(-|x_i - x_j|^2 / (2 l^2))   (s: outputscale)

* :class:`MLPClassPrior`: classification. Per dataset a random MLP f (``hidden_layers``
  tanh layers of ``hidden`` units, weights N(0, 1 / fan_in); ``hidden_layers=0`` is a random
  linear map), x ~ N(0, I_d) and y = argmax_c (f(x)_c - mean_D f_c + noise * eps_c); the
  centring over the dataset's points keeps every class represented.

``prior.sample(batch_size, n_points, rng)`` gives a :class:`PriorBatch`: x (B, n, d) and y
(B, n) (float for regression, int64 class ids for classification), plus the per-dataset
hyperparameters (``lengthscale`` and ``noise`` for the GP prior).
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = ["GPPrior", "MLPClassPrior", "PriorBatch", "rbf_covariance"]


class PriorBatch(NamedTuple):
    """Datasets drawn from a prior: x (B, n, d), y (B, n), and the GP prior's per-dataset
    ``lengthscale`` and ``noise`` (B,) (None for other priors)."""

    x: np.ndarray
    y: np.ndarray
    lengthscale: np.ndarray | None = None
    noise: np.ndarray | None = None


def _positive_int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{what} must be a positive int, got {value!r}")
    return int(value)


def _range(value, what: str, positive: bool = True) -> tuple[float, float]:
    try:
        low, high = (float(v) for v in value)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be a pair (low, high), got {value!r}") from None
    if not low <= high or (positive and not low > 0):
        raise ValueError(f"{what} must have {'0 < ' if positive else ''}low <= high, got {value!r}")
    return low, high


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float], size: int) -> np.ndarray:
    return np.exp(rng.uniform(np.log(bounds[0]), np.log(bounds[1]), size))


def rbf_covariance(x1: np.ndarray, x2: np.ndarray, lengthscale: float, outputscale: float = 1.0) -> np.ndarray:
    """k(x, x') = s^2 exp(-|x - x'|^2 / (2 l^2)) between the rows of x1 (n, d) and x2 (m, d)."""
    distances = ((x1[:, None, :] - x2[None, :, :]) ** 2).sum(-1)
    return outputscale ** 2 * np.exp(-0.5 * distances / lengthscale ** 2)


class GPPrior:
    """Regression datasets from a GP with an RBF kernel, its lengthscale and noise drawn per
    dataset (module docstring)."""

    def __init__(self, n_features: int = 1, lengthscale: tuple[float, float] = (0.3, 1.0),
                 noise: tuple[float, float] = (0.05, 0.3), outputscale: float = 1.0,
                 x_range: tuple[float, float] = (-2.0, 2.0)):
        self.n_features = _positive_int(n_features, "GPPrior: n_features")
        self.lengthscale = _range(lengthscale, "GPPrior: lengthscale")
        self.noise = _range(noise, "GPPrior: noise")
        self.x_range = _range(x_range, "GPPrior: x_range", positive=False)
        if not outputscale > 0:
            raise ValueError(f"GPPrior: outputscale must be positive, got {outputscale!r}")
        self.outputscale = float(outputscale)
        self.task = "regression"

    def sample(self, batch_size: int, n_points: int, rng: np.random.Generator | int | None = None) -> PriorBatch:
        """``batch_size`` datasets of ``n_points`` points each."""
        batch_size = _positive_int(batch_size, "GPPrior.sample: batch_size")
        n_points = _positive_int(n_points, "GPPrior.sample: n_points")
        rng = np.random.default_rng(rng)
        x = rng.uniform(*self.x_range, (batch_size, n_points, self.n_features))
        lengthscale = _log_uniform(rng, self.lengthscale, batch_size)
        noise = _log_uniform(rng, self.noise, batch_size)
        y = np.empty((batch_size, n_points))
        for b in range(batch_size):
            covariance = rbf_covariance(x[b], x[b], lengthscale[b], self.outputscale)
            covariance[np.diag_indices(n_points)] += noise[b] ** 2
            y[b] = np.linalg.cholesky(covariance) @ rng.standard_normal(n_points)
        return PriorBatch(x, y, lengthscale, noise)

    def __repr__(self) -> str:
        return (f"GPPrior(n_features={self.n_features}, lengthscale={self.lengthscale}, noise={self.noise}, "
                f"outputscale={self.outputscale}, x_range={self.x_range})")


class MLPClassPrior:
    """Classification datasets labelled by a random MLP (or linear map), drawn per dataset
    (module docstring)."""

    def __init__(self, n_features: int = 2, n_classes: int = 2, hidden: int = 16, hidden_layers: int = 1,
                 noise: float = 0.1):
        self.n_features = _positive_int(n_features, "MLPClassPrior: n_features")
        self.n_classes = _positive_int(n_classes, "MLPClassPrior: n_classes")
        if self.n_classes < 2:
            raise ValueError(f"MLPClassPrior: n_classes must be at least 2, got {n_classes!r}")
        self.hidden = _positive_int(hidden, "MLPClassPrior: hidden")
        if isinstance(hidden_layers, bool) or not isinstance(hidden_layers, int) or hidden_layers < 0:
            raise ValueError(f"MLPClassPrior: hidden_layers must be an int >= 0, got {hidden_layers!r}")
        if not noise >= 0:
            raise ValueError(f"MLPClassPrior: noise must be >= 0, got {noise!r}")
        self.hidden_layers, self.noise = hidden_layers, float(noise)
        self.task = "classification"

    def _scores(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """f(x) (n, n_classes) of one random network."""
        h = x
        for _ in range(self.hidden_layers):
            h = np.tanh(h @ (rng.standard_normal((h.shape[-1], self.hidden)) / np.sqrt(h.shape[-1]))
                        + 0.5 * rng.standard_normal(self.hidden))
        h = h @ (rng.standard_normal((h.shape[-1], self.n_classes)) / np.sqrt(h.shape[-1]))
        return h

    def sample(self, batch_size: int, n_points: int, rng: np.random.Generator | int | None = None) -> PriorBatch:
        """``batch_size`` datasets of ``n_points`` points each; y holds int64 class ids."""
        batch_size = _positive_int(batch_size, "MLPClassPrior.sample: batch_size")
        n_points = _positive_int(n_points, "MLPClassPrior.sample: n_points")
        rng = np.random.default_rng(rng)
        x = rng.standard_normal((batch_size, n_points, self.n_features))
        y = np.empty((batch_size, n_points), dtype=np.int64)
        for b in range(batch_size):
            scores = self._scores(x[b], rng)
            scores = scores - scores.mean(axis=0)
            y[b] = np.argmax(scores + self.noise * rng.standard_normal(scores.shape), axis=-1)
        return PriorBatch(x, y)

    def __repr__(self) -> str:
        return (f"MLPClassPrior(n_features={self.n_features}, n_classes={self.n_classes}, hidden={self.hidden}, "
                f"hidden_layers={self.hidden_layers}, noise={self.noise})")
