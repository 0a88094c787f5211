"""Mixture density networks (Bishop, 1994): a network's outputs parameterize a mixture of K
diagonal Gaussians over a D-dimensional target, so that it can model a conditional density
with several modes (an inverse problem, where one x has several y) instead of the single
conditional mean that least squares gives.

With mixing weights pi = softmax(pi_logits), means mu_k and standard deviations sigma_k,

    p(y | x) = sum_k pi_k prod_d N(y_d; mu_kd, sigma_kd^2),
    -log p(y | x) = -logsumexp_k [log pi_k + sum_d (-(y_d - mu_kd)^2 / (2 sigma_kd^2)
                                   - log sigma_kd - log(2 pi) / 2)],

the loss of :func:`mdn_loss`, computed with log_softmax and logsumexp so that no density
underflows. Shapes: ``pi_logits`` (N, K), ``mu`` and ``sigma`` (N, K, D), ``y`` (N, D).
"""

from __future__ import annotations

import math

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import log_softmax, softmax
from lamina.functional.elementwise import log
from lamina.functional.loss import _check_reduction, _reduce
from lamina.functional.reduce_more import logsumexp

__all__ = ["mdn_log_prob", "mdn_loss", "mdn_mean", "mdn_mode", "mdn_sample"]


def _tensor(value) -> Tensor:
    return value if isinstance(value, Tensor) else Tensor(value)


def _check_mixture(fn: str, pi_logits, mu, sigma=None) -> None:
    if pi_logits.ndim != 2 or mu.ndim != 3 or tuple(mu.shape[:2]) != tuple(pi_logits.shape):
        raise ShapeError(f"{fn}: expected pi_logits (N, K) and mu (N, K, D) with the same N and K, got shapes "
                         f"{tuple(pi_logits.shape)} and {tuple(mu.shape)}")
    if sigma is not None and tuple(sigma.shape) != tuple(mu.shape):
        raise ShapeError(f"{fn}: sigma must have mu's shape {tuple(mu.shape)} (N, K, D), got {tuple(sigma.shape)}")


def mdn_log_prob(pi_logits, mu, sigma, y) -> Tensor:
    """log p(y | x) of each sample (module notes): a (N,) tensor. ``y``: (N, D), or (N,) when D = 1."""
    fn = "mdn_log_prob"
    pi_logits, mu, sigma, y = _tensor(pi_logits), _tensor(mu), _tensor(sigma), _tensor(y)
    _check_mixture(fn, pi_logits, mu, sigma)
    n, _, d = mu.shape
    if y.ndim == 1 and d == 1:
        y = y.reshape((n, 1))
    if tuple(y.shape) != (n, d):
        raise ShapeError(f"{fn}: y must have shape (N, D) = {(n, d)} to match mu {tuple(mu.shape)}, "
                         f"got {tuple(y.shape)}")
    z = (y.reshape((n, 1, d)) - mu) / sigma
    component = (z * z * -0.5 - log(sigma)).sum(axis=-1) - d * 0.5 * math.log(2.0 * math.pi)
    return logsumexp(log_softmax(pi_logits, axis=-1) + component, axis=-1)


def mdn_loss(pi_logits, mu, sigma, y, reduction: str = "mean") -> Tensor:
    """The negative log-likelihood -log p(y | x) of the mixture (module notes), averaged over
    the batch (``reduction='mean'``), summed (``'sum'``) or per sample (``'none'``)."""
    _check_reduction(reduction, "mdn_loss")
    return _reduce(-mdn_log_prob(pi_logits, mu, sigma, y), reduction)


def mdn_mean(pi_logits, mu) -> Tensor:
    """The mixture's mean E[y | x] = sum_k pi_k mu_k: (N, D), differentiable."""
    pi_logits, mu = _tensor(pi_logits), _tensor(mu)
    _check_mixture("mdn_mean", pi_logits, mu)
    weights = softmax(pi_logits, axis=-1)
    return (weights.reshape(tuple(weights.shape) + (1,)) * mu).sum(axis=1)


def _arrays(*values) -> list[np.ndarray]:
    return [np.asarray(backend.to_numpy(v.data if isinstance(v, Tensor) else v), dtype=np.float64) for v in values]


def mdn_mode(pi_logits, mu, sigma) -> np.ndarray:
    """Bishop's approximation of the most probable y: the mean of the component with the
    highest peak density pi_k / prod_d sigma_kd, per sample: a (N, D) array."""
    logits, mu, sigma = _arrays(pi_logits, mu, sigma)
    _check_mixture("mdn_mode", logits, mu, sigma)
    log_pi = logits - logits.max(axis=-1, keepdims=True)
    best = np.argmax(log_pi - np.log(sigma).sum(axis=-1), axis=-1)
    return mu[np.arange(len(best)), best]


def mdn_sample(pi_logits, mu, sigma, num_samples: int = 1, rng: np.random.Generator | None = None) -> np.ndarray:
    """Draws from the mixture, per sample: a component k ~ pi, then y ~ N(mu_k, diag sigma_k^2);
    a (num_samples, N, D) array. ``rng``: a NumPy generator (lamina's global one if None)."""
    logits, mu, sigma = _arrays(pi_logits, mu, sigma)
    _check_mixture("mdn_sample", logits, mu, sigma)
    if isinstance(num_samples, bool) or not isinstance(num_samples, int) or num_samples < 1:
        raise ValueError(f"mdn_sample: num_samples must be a positive int, got {num_samples!r}")
    rng = backend.rng() if rng is None else rng
    weights = np.exp(logits - logits.max(axis=-1, keepdims=True))
    cumulative = np.cumsum(weights / weights.sum(axis=-1, keepdims=True), axis=-1)
    u = rng.random((num_samples, logits.shape[0], 1))
    chosen = np.minimum((u > cumulative[None]).sum(axis=-1), logits.shape[1] - 1)  # (S, N)
    rows = np.arange(logits.shape[0])[None]
    noise = rng.standard_normal((num_samples, *mu.shape[::2]))
    return mu[rows, chosen] + sigma[rows, chosen] * noise
