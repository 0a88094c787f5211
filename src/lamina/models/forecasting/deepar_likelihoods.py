"""The likelihoods of DeepAR (Salinas et al., 2020): log-densities, the map from network outputs
o to scaled parameters, and draws from a NumPy generator.

For an item scale nu > 0 (see :func:`item_scale`) and network outputs o (..., k):

    Gaussian:           mu = nu o_1,  sigma = nu softplus(o_2)
        log p(z) = -log sigma - log(2 pi) / 2 - (z - mu)^2 / (2 sigma^2)
    Student-t:          mu = nu o_1,  sigma = nu softplus(o_2),  dof = 2 + softplus(o_3)
        log p(z) = log Gamma((dof + 1) / 2) - log Gamma(dof / 2) - log(dof pi) / 2 - log sigma
                   - (dof + 1) / 2 log(1 + ((z - mu) / sigma)^2 / dof)
    negative binomial:  mu = nu softplus(o_1),  alpha = softplus(o_2) / sqrt(nu)
        log p(z) = log Gamma(z + 1/alpha) - log Gamma(z + 1) - log Gamma(1/alpha)
                   - (1/alpha) log(1 + alpha mu) + z log(alpha mu / (1 + alpha mu))

(mean mu, variance mu + alpha mu^2 for the negative binomial). dof > 2 keeps the Student-t's
variance finite.
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.forecasting._common import constant_tensor

__all__ = ["LIKELIHOODS", "gaussian_log_prob", "item_scale", "likelihood_log_prob", "likelihood_parameters",
           "negative_binomial_log_prob", "sample_likelihood", "student_t_log_prob"]

LIKELIHOODS = {"gaussian": 2, "student_t": 3, "negative_binomial": 2}
_HALF_LOG_2PI = 0.5 * float(np.log(2.0 * np.pi))


def check_likelihood(name, who: str) -> str:
    if name not in LIKELIHOODS:
        raise ValueError(f"{who}: likelihood must be one of {sorted(LIKELIHOODS)}, got {name!r}")
    return name


def item_scale(z, context_length: int | None = None):
    """nu = 1 + mean_t |z_t| over the first ``context_length`` steps of each row of z (batch, T)
    (all steps when None), shape (batch, 1). The paper writes 1 + mean z for its non-negative
    data; the absolute value keeps nu >= 1 for signed series."""
    z = np.asarray(z.numpy() if isinstance(z, Tensor) else z, dtype=np.float64)
    if z.ndim != 2 or z.shape[1] < 1:
        raise ShapeError(f"item_scale: expected series (batch, steps), got shape {z.shape}")
    window = z if context_length is None else z[:, :context_length]
    return 1.0 + np.mean(np.abs(window), axis=1, keepdims=True)


def gaussian_log_prob(z, mu, sigma) -> Tensor:
    """log N(z; mu, sigma^2), elementwise."""
    r = (z - mu) / sigma
    return -F.log(sigma) - _HALF_LOG_2PI - 0.5 * r * r


def student_t_log_prob(z, mu, sigma, dof) -> Tensor:
    """The log-density of the Student-t with ``dof`` degrees of freedom, location mu, scale sigma."""
    r = (z - mu) / sigma
    half = 0.5 * (dof + 1.0)
    return (F.lgamma(half) - F.lgamma(0.5 * dof) - 0.5 * F.log(dof * np.pi) - F.log(sigma)
            - half * F.log1p(r * r / dof))


def negative_binomial_log_prob(z, mu, alpha) -> Tensor:
    """log NB(z; mu, alpha) of the counts z >= 0 with mean mu and shape alpha (variance mu + alpha mu^2)."""
    r = 1.0 / alpha
    alpha_mu = alpha * mu
    log_1p = F.log1p(alpha_mu)
    return (F.lgamma(z + r) - F.lgamma(z + 1.0) - F.lgamma(r) - r * log_1p
            + z * (F.log(alpha_mu) - log_1p))


def likelihood_parameters(outputs: Tensor, scale, likelihood: str) -> list[Tensor]:
    """The scaled parameters of ``likelihood`` from the network outputs (..., k) and the item
    scale ``scale`` (broadcast against outputs[..., 0]): [mu, sigma] (Gaussian), [mu, sigma, dof]
    (Student-t) or [mu, alpha] (negative binomial)."""
    k = LIKELIHOODS[check_likelihood(likelihood, "likelihood_parameters")]
    if outputs.shape[-1] != k:
        raise ShapeError(f"likelihood_parameters: the {likelihood} likelihood needs {k} outputs on the last axis, "
                         f"got shape {tuple(outputs.shape)}")
    nu = constant_tensor(np.asarray(scale, dtype=np.float64), outputs.data.dtype)
    if likelihood == "negative_binomial":
        return [nu * F.softplus(outputs[..., 0]), F.softplus(outputs[..., 1]) / F.sqrt(nu)]
    params = [nu * outputs[..., 0], nu * F.softplus(outputs[..., 1])]
    if likelihood == "student_t":
        params.append(2.0 + F.softplus(outputs[..., 2]))
    return params


def likelihood_log_prob(z, params: list, likelihood: str) -> Tensor:
    """log p(z | params) of ``likelihood``, elementwise."""
    if likelihood == "gaussian":
        return gaussian_log_prob(z, *params)
    if likelihood == "student_t":
        return student_t_log_prob(z, *params)
    return negative_binomial_log_prob(z, *params)


def sample_likelihood(params: list, likelihood: str, rng: np.random.Generator) -> np.ndarray:
    """One draw per entry from NumPy arrays of parameters, in a fixed order of calls on ``rng``:
    mu + sigma rng.standard_normal (Gaussian), mu + sigma rng.standard_t(dof) (Student-t), or
    rng.poisson(rng.gamma(1/alpha, alpha mu)) (negative binomial as a Gamma-Poisson mixture)."""
    params = [np.asarray(p, dtype=np.float64) for p in params]
    if likelihood == "gaussian":
        mu, sigma = params
        return mu + sigma * rng.standard_normal(mu.shape)
    if likelihood == "student_t":
        mu, sigma, dof = params
        return mu + sigma * rng.standard_t(dof)
    mu, alpha = params
    return rng.poisson(rng.gamma(1.0 / alpha, alpha * mu)).astype(np.float64)
