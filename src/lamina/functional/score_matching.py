"""Losses for energy-based models and score models, which learn an unnormalised density.

A score model s(x) estimates grad_x log p(x) (for an energy model, s = -grad_x E). Each loss
below is a scalar on the graph of the model's weights; x is a batch (n, d) of data rows.

* :func:`score_matching_loss` (Hyvarinen 2005), exact, for low d (one backward pass per
  dimension for the trace of the Jacobian):

      J = mean_i [ tr(ds(x_i)/dx_i) + 1/2 ||s(x_i)||^2 ]

* :func:`sliced_score_matching_loss` (Song, Garg, Shi & Ermon 2019), the trace replaced by
  random projections v ~ N(0, I), one Hessian-vector product (v^T ds/dx, by a double backward)
  per projection:

      SSM    = mean_{i,v} [ v^T (ds(x_i)/dx_i) v + 1/2 (v^T s(x_i))^2 ]
      SSM-VR = mean_{i,v} [ v^T (ds(x_i)/dx_i) v + 1/2 ||s(x_i)||^2 ]     (variance reduced)

* :func:`denoising_score_matching_loss` (Vincent 2011): x~ = x + sigma eps, eps ~ N(0, I),
  the score of the Gaussian smoothing kernel -(x~ - x)/sigma^2 = -eps/sigma as target:

      J = 1/2 mean_i || s(x~_i) + eps_i / sigma ||^2

  Its minimiser is the score of the smoothed density p_sigma = p * N(0, sigma^2 I).

* :func:`nce_loss` (Gutmann & Hyvarinen 2010): logistic discrimination of the data from nu
  times as many noise samples y of a known density p_n, with G(u) = log p_m(u) - log p_n(u)
  and p_m unnormalised (a learned log-normaliser c inside it makes it normalise):

      J = -(1/T_d) [ sum_t log sigma(G(x_t) - log nu) + sum_t log sigma(-(G(y_t) - log nu)) ]

* :func:`contrastive_divergence_loss` (Du & Mordatch 2019): the energies E+ of data and E- of
  model samples (SGLD), E+ - E- + alpha (E+^2 + E-^2) averaged over the batch; the squared
  energies keep them near zero.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina.autograd import Tensor, enable_grad, grad
from lamina.errors import ShapeError
from lamina.functional.activation_extra import log_sigmoid

__all__ = [
    "contrastive_divergence_loss",
    "denoising_score_matching_loss",
    "nce_loss",
    "score_matching_loss",
    "sliced_score_matching_loss",
]


def _batch(x, who: str) -> Tensor:
    x = x if isinstance(x, Tensor) else Tensor(x)
    if x.ndim != 2:
        raise ShapeError(f"{who}: x must be a batch of vectors (n, d), got shape {tuple(x.shape)}")
    return x


def _scores(score_fn, x: Tensor, who: str) -> Tensor:
    scores = score_fn(x)
    if not isinstance(scores, Tensor) or scores.shape != x.shape:
        shape = getattr(scores, "shape", type(scores).__name__)
        raise ShapeError(f"{who}: score_fn must return one score per input, of x's shape {tuple(x.shape)}; "
                         f"it returned {shape}")
    return scores


def _differentiable_input(x: Tensor) -> Tensor:
    """x itself when it is on the graph, else a leaf copy that requires grad (for d/dx)."""
    return x if x.requires_grad else Tensor(x.data, requires_grad=True, dtype=x.dtype)


def _positive(value, name: str, who: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
        raise ValueError(f"{who}: {name} must be a positive number, got {value!r}")
    return float(value)


def _noise_like(noise, shape: tuple, dtype, who: str, what: str):
    if noise is None:
        return backend.xp.asarray(backend.rng().standard_normal(shape), dtype=dtype)
    noise = noise.data if isinstance(noise, Tensor) else backend.xp.asarray(noise)
    if tuple(noise.shape) != tuple(shape):
        raise ShapeError(f"{who}: {what} must have shape {tuple(shape)}, got {tuple(noise.shape)}")
    return noise.astype(dtype, copy=False)


def score_matching_loss(score_fn, x) -> Tensor:
    """Hyvarinen's exact score matching loss mean_i [tr(ds/dx) + ||s||^2 / 2] (module notes) for
    the score model ``score_fn`` ((n, d) -> (n, d)) at the data ``x`` (n, d). The Jacobian's
    diagonal takes d backward passes (each with ``create_graph``): for low dimensions."""
    who = "score_matching_loss"
    x = _differentiable_input(_batch(x, who))
    with enable_grad():
        scores = _scores(score_fn, x, who)
        trace = 0.0
        for k in range(x.shape[1]):
            (row_gradient,) = grad(scores[:, k].sum(), x, create_graph=True)
            trace = trace + row_gradient[:, k]
        return (trace + 0.5 * (scores * scores).sum(axis=1)).mean()


def sliced_score_matching_loss(score_fn, x, n_projections: int = 1, variance_reduction: bool = False,
                               projections=None) -> Tensor:
    """Sliced score matching (SSM, or SSM-VR with ``variance_reduction``; module notes) for the
    score model ``score_fn`` at the data ``x`` (n, d), averaged over ``n_projections`` random
    directions per sample. ``projections`` (n_projections, n, d) fixes the directions; by
    default they are N(0, I) draws from lamina's generator. Each projection costs one
    Hessian-vector product: v^T ds/dx = d(v . s)/dx by a backward pass with ``create_graph``."""
    who = "sliced_score_matching_loss"
    if isinstance(n_projections, bool) or not isinstance(n_projections, int) or n_projections < 1:
        raise ValueError(f"{who}: n_projections must be a positive int, got {n_projections!r}")
    x = _differentiable_input(_batch(x, who))
    directions = _noise_like(projections, (n_projections, *x.shape), x.dtype, who, "projections")
    with enable_grad():
        scores = _scores(score_fn, x, who)
        half_norm = 0.5 * (scores * scores).sum(axis=1) if variance_reduction else None
        total = 0.0
        for p in range(n_projections):
            v = Tensor(directions[p], dtype=x.dtype)
            projected = (scores * v).sum(axis=1)
            (vjp,) = grad(projected.sum(), x, create_graph=True)     # v^T ds/dx for every sample
            curvature = (vjp * v).sum(axis=1)
            total = total + curvature + (half_norm if variance_reduction else 0.5 * projected * projected)
        return (total / n_projections).mean()


def denoising_score_matching_loss(score_fn, x, sigma: float, noise=None) -> Tensor:
    """Vincent's denoising score matching 1/2 mean_i ||s(x_i + sigma eps_i) + eps_i / sigma||^2
    for the score model ``score_fn`` at the data ``x`` (n, d) and noise level ``sigma`` > 0.
    ``noise`` (n, d) fixes eps; by default N(0, I) draws from lamina's generator."""
    who = "denoising_score_matching_loss"
    sigma = _positive(sigma, "sigma", who)
    x = _batch(x, who)
    eps = Tensor(_noise_like(noise, x.shape, x.dtype, who, "noise"), dtype=x.dtype)
    scores = _scores(score_fn, x + sigma * eps, who)
    residual = scores + eps * (1.0 / sigma)
    return 0.5 * (residual * residual).sum(axis=1).mean()


def _log_densities(fn, u, who: str, what: str) -> Tensor:
    values = fn(u)
    n = u.shape[0]
    if not isinstance(values, Tensor) or values.shape not in ((n,), (n, 1)):
        shape = getattr(values, "shape", type(values).__name__)
        raise ShapeError(f"{who}: {what} must return one log density per row, (n,) or (n, 1) with n = {n}; "
                         f"it returned {shape}")
    return values.reshape(n)


def nce_loss(log_model, x, noise_samples, log_noise) -> Tensor:
    """Noise-contrastive estimation (module notes) of the unnormalised log density ``log_model``
    (rows -> (n,), with its learned log-normaliser inside) from the data ``x`` (T_d, ...) and
    ``noise_samples`` (T_n, ...) of the noise whose normalised log density is ``log_noise``;
    nu = T_n / T_d. At the optimum log_model is the normalised log density of the data."""
    who = "nce_loss"
    x = x if isinstance(x, Tensor) else Tensor(x)
    noise_samples = noise_samples if isinstance(noise_samples, Tensor) else Tensor(noise_samples)
    if x.ndim < 1 or noise_samples.ndim < 1 or x.shape[0] == 0 or noise_samples.shape[0] == 0:
        raise ShapeError(f"{who}: x and noise_samples must be non-empty batches, got shapes {tuple(x.shape)} and "
                         f"{tuple(noise_samples.shape)}")
    if x.shape[1:] != noise_samples.shape[1:]:
        raise ShapeError(f"{who}: data rows {tuple(x.shape[1:])} and noise rows {tuple(noise_samples.shape[1:])} "
                         f"differ")
    log_nu = math.log(noise_samples.shape[0] / x.shape[0])
    g_data = _log_densities(log_model, x, who, "log_model") - _log_densities(log_noise, x, who, "log_noise")
    g_noise = (_log_densities(log_model, noise_samples, who, "log_model")
               - _log_densities(log_noise, noise_samples, who, "log_noise"))
    total = log_sigmoid(g_data - log_nu).sum() + log_sigmoid(log_nu - g_noise).sum()
    return -total / x.shape[0]


def contrastive_divergence_loss(energy_data, energy_samples, alpha: float = 1.0) -> Tensor:
    """mean E(x+) - mean E(x-) + alpha (mean E(x+)^2 + mean E(x-)^2) for the energies of a batch
    of data (``energy_data``) and of model samples (``energy_samples``), alpha >= 0."""
    who = "contrastive_divergence_loss"
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha >= 0:
        raise ValueError(f"{who}: alpha must be a number >= 0, got {alpha!r}")
    positive = energy_data if isinstance(energy_data, Tensor) else Tensor(energy_data)
    negative = energy_samples if isinstance(energy_samples, Tensor) else Tensor(energy_samples)
    for name, e in (("energy_data", positive), ("energy_samples", negative)):
        if e.ndim not in (1, 2) or (e.ndim == 2 and e.shape[1] != 1) or e.shape[0] == 0:
            raise ShapeError(f"{who}: {name} must hold one energy per sample, (n,) or (n, 1); got "
                             f"{tuple(e.shape)}")
    loss = positive.mean() - negative.mean()
    if alpha:
        loss = loss + alpha * ((positive * positive).mean() + (negative * negative).mean())
    return loss
