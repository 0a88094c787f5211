"""Attributions from a weighted linear model fitted to the scores of perturbed inputs: Kernel
SHAP and LIME (as SHAP's KernelExplainer and Captum's KernelShap and Lime).

A perturbed input is a 0/1 vector z over the M feature groups (1: the group keeps x's
values, 0: it is removed, :mod:`lamina.analysis.perturbation`). Both methods fit
g(z) = phi_0 + sum_j phi_j z_j to the scores S of such inputs by weighted least squares
and return phi (each group's phi_j on all its values).

* Kernel SHAP (Lundberg & Lee, 2017): a removed group takes the values of a background row
  and v(z) is the mean score over the background set (B rows); the weight of a coalition
  of size s is Shapley's kernel pi(s) = (M - 1) / (C(M, s) s (M - s)), and g must match
  v exactly at z = 0 and z = 1 (phi_0 = E[S(background)], sum_j phi_j = S(x) - phi_0,
  the efficiency constraint). Fitted on all 2^M - 2 proper coalitions the solution is the
  Shapley values exactly; with ``n_samples``, coalition sizes are drawn in proportion to
  their total kernel weight (M - 1) / (s (M - s)) and the fit is unweighted. On a linear
  model, phi_j = sum_(i in j) w_i (x_i - E[background_i]).
* LIME (Ribeiro et al., 2016): each group kept with probability 1/2; a removed group takes
  the ``baselines``' values; a perturbed input x' weighs exp(-d(x, x')^2 / (2 width^2)), d
  the cosine distance 1 - cos(x, x') or the euclidean distance |x - x'|; g is fitted with
  an intercept and the ridge penalty ``alpha`` |phi|^2 (0: plain least squares).
"""

from __future__ import annotations

import itertools
import math

import numpy as np

from lamina import backend
from lamina.analysis.deeplift import background_rows
from lamina.analysis.perturbation import (
    Scorer,
    _positive_int,
    _prepare,
    compose,
    feature_groups,
    prediction_function,
    spread,
)
from lamina.analysis.saliency import as_input_batch

__all__ = ["kernel_shap", "lime"]

#: Kernel SHAP enumerates every coalition when there are at most this many feature groups.
EXACT_GROUPS = 12
DISTANCES = ("cosine", "euclidean")


def all_coalitions(groups: int):
    """Every proper coalition (none and all left out) with its Shapley kernel weight."""
    rows, weights = [], []
    for size in range(1, groups):
        weight = (groups - 1) / (math.comb(groups, size) * size * (groups - size))
        for members in itertools.combinations(range(groups), size):
            row = np.zeros(groups, dtype=np.int8)
            row[list(members)] = 1
            rows.append(row)
            weights.append(weight)
    return np.array(rows).reshape(-1, groups), np.array(weights)


def sampled_coalitions(groups: int, count: int, rng):
    """``count`` coalitions: sizes drawn with probability ~ (M - 1) / (s (M - s)), members uniform."""
    sizes = np.arange(1, groups)
    mass = (groups - 1) / (sizes * (groups - sizes))
    drawn = rng.choice(sizes, size=count, p=mass / mass.sum())
    rows = np.zeros((count, groups), dtype=np.int8)
    for row, size in zip(rows, drawn):
        row[rng.choice(groups, size=size, replace=False)] = 1
    return rows, np.ones(count)


def constrained_fit(coalitions, values, weights, empty: float, full: float):
    """phi minimising sum_k w_k (values_k - empty - z_k . phi)^2 subject to
    sum_j phi_j = full - empty, by writing phi_M = full - empty - sum_(j<M) phi_j."""
    z = coalitions.astype(np.float64)
    total = full - empty
    if z.shape[1] == 1:
        return np.array([total])
    design = z[:, :-1] - z[:, -1:]
    response = values - empty - z[:, -1] * total
    root = np.sqrt(weights)[:, None]
    head = np.linalg.lstsq(design * root, response * root[:, 0], rcond=None)[0]
    return np.append(head, total - head.sum())


def kernel_shap(model, x, background, target=None, feature_mask=None, n_samples: int | None = None,
                seed: int | None = None, batch_size: int = 1024):
    """Kernel SHAP values (module docstring), the shape of ``x``: per sample,
    sum_j phi_j = S(x) - mean S(background). ``background``: (B, *sample shape) rows that
    removed groups take their values from; ``n_samples``: None for the exact values from
    every coalition when M <= 12 (else 2 M + 2048 sampled coalitions), or the number of
    coalitions to sample; ``seed`` None draws from lamina's generator."""
    fn = "kernel_shap"
    x = as_input_batch(x, fn)
    background = background_rows(background, x, fn)
    labels, groups = feature_groups(feature_mask, x, fn)
    scorer = Scorer(prediction_function(model, fn), x, target, batch_size, fn)
    if n_samples is None and groups <= EXACT_GROUPS:
        coalitions, weights = all_coalitions(groups)
    else:
        count = 2 * groups + 2048 if n_samples is None else _positive_int(n_samples, "n_samples", fn)
        rng = backend.rng() if seed is None else np.random.default_rng(seed)
        coalitions, weights = sampled_coalitions(groups, count, rng) if groups > 1 else all_coalitions(groups)
    xp = backend.xp
    b = len(background)
    out = xp.empty_like(x)
    for i in range(len(x)):
        empty = float(backend.to_numpy(scorer.scores(background, i)).mean())
        values = np.zeros(len(coalitions))
        for row in background if len(coalitions) else ():
            values += backend.to_numpy(scorer.scores(compose(coalitions, labels, x[i], row), i))
        phi = constrained_fit(coalitions, values / b, weights, empty, float(scorer.clean[i]))
        out[i] = spread(phi, labels, x.dtype)
    return out


def similarity(sample, perturbed, distance: str, kernel_width: float):
    """exp(-d^2 / (2 width^2)) between ``sample`` and each row of ``perturbed``."""
    a = np.asarray(backend.to_numpy(sample), dtype=np.float64).reshape(-1)
    rows = np.asarray(backend.to_numpy(perturbed), dtype=np.float64).reshape(len(perturbed), -1)
    if distance == "cosine":
        norms = np.linalg.norm(rows, axis=1) * np.linalg.norm(a)
        cosine = np.where(norms > 0, rows @ a / np.where(norms > 0, norms, 1), 0.0)
        d = 1 - cosine
    else:
        d = np.linalg.norm(rows - a, axis=1)
    return np.exp(-d * d / (2 * kernel_width ** 2))


def weighted_ridge(design, response, weights, alpha: float):
    """(intercept, coefficients) minimising sum_k w_k (y_k - b - z_k . c)^2 + alpha |c|^2."""
    w = weights / weights.sum()
    mean_z, mean_y = w @ design, w @ response
    centred, centred_y = design - mean_z, response - mean_y
    gram = centred.T @ (centred * w[:, None]) + alpha * np.eye(design.shape[1])
    coef = np.linalg.lstsq(gram, centred.T @ (w * centred_y), rcond=None)[0]
    return mean_y - mean_z @ coef, coef


def lime(model, x, target=None, baselines=None, feature_mask=None, n_samples: int = 50, distance: str = "cosine",
         kernel_width: float = 1.0, alpha: float = 0.0, seed: int | None = None, batch_size: int = 1024):
    """LIME coefficients (module docstring), the shape of ``x``. ``baselines``: the values
    of removed groups (zeros for None, or anything that broadcasts to x); ``distance``:
    'cosine' or 'euclidean'; ``kernel_width``: the width of the exponential kernel;
    ``alpha``: the ridge penalty; ``seed`` None draws from lamina's generator."""
    fn = "lime"
    n_samples = _positive_int(n_samples, "n_samples", fn)
    if distance not in DISTANCES:
        raise ValueError(f"{fn}: distance must be one of {DISTANCES}, got {distance!r}")
    if not (isinstance(kernel_width, (int, float)) and math.isfinite(kernel_width) and kernel_width > 0):
        raise ValueError(f"{fn}: kernel_width must be a finite number > 0, got {kernel_width!r}")
    if not (isinstance(alpha, (int, float)) and math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"{fn}: alpha must be a finite number >= 0, got {alpha!r}")
    x, reference, labels, groups, scorer = _prepare(model, x, target, baselines, feature_mask, batch_size, fn)
    rng = backend.rng() if seed is None else np.random.default_rng(seed)
    xp = backend.xp
    out = xp.empty_like(x)
    for i in range(len(x)):
        coalitions = rng.integers(0, 2, size=(n_samples, groups)).astype(np.int8)
        perturbed = compose(coalitions, labels, x[i], reference[i])
        values = backend.to_numpy(scorer.scores(perturbed, i))
        weights = similarity(x[i], perturbed, distance, kernel_width)
        _, coef = weighted_ridge(coalitions.astype(np.float64), values, weights, alpha)
        out[i] = spread(coef, labels, x.dtype)
    return out
