"""The tree-structured Parzen estimator (TPE, Bergstra et al., 2011), as Optuna's default sampler
in its basic, independent form.

Where Bayesian optimization models p(score | config), TPE models p(config | good) and
p(config | bad). The trials so far are sorted by score; the best n_good = min(ceil(gamma n), 25)
are "good", the rest (failed trials among them, as the worst) "bad". For each hyperparameter on
its own, a Parzen estimator (a weighted mixture of kernels) is fitted to the good values, l(x),
and one to the bad values, g(x); ``n_ei_candidates`` values are drawn from l(x) and the one with
the largest l(x) / g(x) is taken (this ratio orders candidates as expected improvement does).

A numeric hyperparameter is modelled in its own space: u = ln x for ``LogUniform``, x for
``Uniform``, x on [low - 1/2, high + 1/2] for ``IntUniform`` (an integer owns the unit cell
around it; draws are rounded). The kernels are Gaussians truncated to [a, b], the space's range,

    p(u) = sum_k w_k N(u; mu_k, sigma_k) / (Phi((b - mu_k) / sigma_k) - Phi((a - mu_k) / sigma_k)),

one at each observed value and a prior kernel at (a + b) / 2 with sigma = b - a. Each observed
kernel's sigma is the larger distance to its neighbours among the sorted centres (the prior's
included; the two outermost use their only neighbour), clipped to
[(b - a) / min(100, 1 + number of kernels), b - a]. For an integer the density of a value is the
mass of its cell, so the probabilities of low..high sum to 1.

A ``Choice`` of K options has the probabilities p(c) = sum over observations equal to c of w_i
plus w_prior / K. The weights: ``prior_weight`` for the prior kernel and, for n observations
in the order they ran, 1 each when n < 25, else a ramp from 1/n up to 1 over the oldest n - 25
and 1 for the newest 25; all divided by their sum.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy.special import ndtr, ndtri

from lamina.train.search import SearchResult, Trial, _check, _finish, _run
from lamina.train.search_space import (
    Choice,
    IntUniform,
    LogUniform,
    Uniform,
    as_distribution,
    check_space,
    sample_config,
)

__all__ = ["ParzenEstimator", "tpe_search"]

NEWEST_AT_FULL_WEIGHT = 25


def observation_weights(n: int) -> np.ndarray:
    """The weights of n observations in the order they ran (module docstring), not normalized."""
    if n < NEWEST_AT_FULL_WEIGHT:
        return np.ones(n)
    return np.concatenate([np.linspace(1.0 / n, 1.0, n - NEWEST_AT_FULL_WEIGHT), np.ones(NEWEST_AT_FULL_WEIGHT)])


class ParzenEstimator:
    """The Parzen estimator of one hyperparameter (module docstring) fitted to ``values``
    (observed in that order). ``sample(rng, n)`` draws n values of the hyperparameter,
    ``log_pdf(values)`` gives their log densities (in the distribution's own space: ln x for
    ``LogUniform``; a probability for ``IntUniform`` and ``Choice``)."""

    def __init__(self, distribution, values, prior_weight: float = 1.0):
        self.distribution = distribution
        values = list(values)
        weights = np.append(observation_weights(len(values)), prior_weight)
        self.weights = weights / weights.sum()
        if isinstance(distribution, Choice):
            self.probabilities = np.full(len(distribution.options), self.weights[-1] / len(distribution.options))
            for value, weight in zip(values, self.weights[:-1], strict=True):
                self.probabilities[distribution.options.index(value)] += weight
            return
        self.low, self.high = self._range()
        width = self.high - self.low
        centres = np.append(self.to_space(np.asarray(values, dtype=np.float64)), (self.low + self.high) / 2)
        order = np.argsort(centres, kind="stable")
        ordered = centres[order]
        gaps = np.diff(ordered)
        left = np.concatenate([[np.nan], gaps])
        right = np.concatenate([gaps, [np.nan]])
        spread = np.fmax(left, right) if len(ordered) > 1 else np.array([width])
        sigmas = np.empty_like(centres)
        sigmas[order] = spread
        sigmas[-1] = width  # the prior kernel
        self.mus = centres
        self.sigmas = np.clip(sigmas, width / min(100.0, 1.0 + len(centres)), width)

    def _range(self) -> tuple[float, float]:
        d = self.distribution
        if isinstance(d, LogUniform):
            return math.log(d.low), math.log(d.high)
        if isinstance(d, IntUniform):
            return d.low - 0.5, d.high + 0.5
        return float(d.low), float(d.high)

    def to_space(self, values: np.ndarray) -> np.ndarray:
        return np.log(values) if isinstance(self.distribution, LogUniform) else values

    def _from_space(self, u: np.ndarray) -> list:
        d = self.distribution
        if isinstance(d, LogUniform):
            return [float(min(max(math.exp(v), d.low), d.high)) for v in u]
        if isinstance(d, IntUniform):
            return [int(min(max(round(v), d.low), d.high)) for v in u]
        return [float(min(max(v, d.low), d.high)) for v in u]

    def _mass(self, a: np.ndarray, b: np.ndarray) -> np.ndarray:
        """The mixture's probability of [a, b] (per value), from the truncated normal cdfs."""
        lo = ndtr((self.low - self.mus) / self.sigmas)
        total = ndtr((self.high - self.mus) / self.sigmas) - lo
        inside = ndtr((b[:, None] - self.mus) / self.sigmas) - ndtr((a[:, None] - self.mus) / self.sigmas)
        return (inside / total) @ self.weights

    def log_pdf(self, values) -> np.ndarray:
        d = self.distribution
        if isinstance(d, Choice):
            return np.log([self.probabilities[d.options.index(v)] for v in values])
        u = self.to_space(np.asarray(values, dtype=np.float64))
        if isinstance(d, IntUniform):
            return np.log(self._mass(u - 0.5, u + 0.5))
        z = (u[:, None] - self.mus) / self.sigmas
        total = ndtr((self.high - self.mus) / self.sigmas) - ndtr((self.low - self.mus) / self.sigmas)
        density = np.exp(-0.5 * z * z) / (math.sqrt(2 * math.pi) * self.sigmas * total)
        return np.log(density @ self.weights)

    def sample(self, rng: np.random.Generator, n: int) -> list:
        d = self.distribution
        if isinstance(d, Choice):
            return [d.options[i] for i in rng.choice(len(d.options), size=n, p=self.probabilities)]
        k = rng.choice(len(self.mus), size=n, p=self.weights)
        mu, sigma = self.mus[k], self.sigmas[k]
        lo, hi = ndtr((self.low - mu) / sigma), ndtr((self.high - mu) / sigma)
        quantile = np.clip(lo + rng.uniform(size=n) * (hi - lo), 1e-300, 1 - 1e-16)
        return self._from_space(np.clip(mu + sigma * ndtri(quantile), self.low, self.high))


def _split(trials: list[Trial], direction: str, gamma: float) -> tuple[list[Trial], list[Trial]]:
    """The best min(ceil(gamma n), 25) trials and the others, each in the order they ran."""
    sign = -1.0 if direction == "maximize" else 1.0
    ranked = sorted(trials, key=lambda t: sign * t.score if t.ok else math.inf)
    good = {t.index for t in ranked[:min(math.ceil(gamma * len(trials)), 25)]}
    return [t for t in trials if t.index in good], [t for t in trials if t.index not in good]


def _suggest(space: Mapping, trials: list[Trial], direction: str, gamma: float, n_ei_candidates: int,
             prior_weight: float, rng: np.random.Generator) -> dict[str, Any]:
    good, bad = _split(trials, direction, gamma)
    config = dict(space)
    for name, value in space.items():
        distribution = as_distribution(value)
        if distribution is None:
            continue
        below = ParzenEstimator(distribution, [t.config[name] for t in good], prior_weight)
        above = ParzenEstimator(distribution, [t.config[name] for t in bad], prior_weight)
        candidates = below.sample(rng, n_ei_candidates)
        ratio = below.log_pdf(candidates) - above.log_pdf(candidates)
        config[name] = candidates[int(np.argmax(ratio))]
    return config


def tpe_search(objective: Callable[[dict], Any], space: Mapping[str, Any], trials: int, n_startup_trials: int = 10,
               n_ei_candidates: int = 24, gamma: float = 0.1, prior_weight: float = 1.0, seed: int = 0,
               direction: str = "maximize", callback: Callable[[Trial], None] | None = None,
               csv_path: str | os.PathLike | None = None) -> SearchResult:
    """Evaluate ``trials`` configurations of ``space``: the first ``n_startup_trials`` drawn at
    random, then each chosen by TPE (module docstring) from the trials so far. One generator
    seeded with ``seed`` makes every draw, so the same seed gives the same trials. Returns a
    :class:`SearchResult`, as :func:`~lamina.train.search.random_search`."""
    who = "tpe_search"
    _check(who, objective, trials, direction)
    check_space(who, space)
    for name, value, least in (("n_startup_trials", n_startup_trials, 1), ("n_ei_candidates", n_ei_candidates, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < least:
            raise ValueError(f"{who}: {name} must be an integer >= {least}, got {value!r}")
    if isinstance(gamma, bool) or not isinstance(gamma, (int, float)) or not 0 < gamma < 1:
        raise ValueError(f"{who}: gamma must be a fraction in (0, 1) (the share of trials called good), "
                         f"got {gamma!r}")
    if isinstance(prior_weight, bool) or not isinstance(prior_weight, (int, float)) \
            or not math.isfinite(prior_weight) or prior_weight <= 0:
        raise ValueError(f"{who}: prior_weight must be a finite number > 0, got {prior_weight!r}")
    for name, value in space.items():
        distribution = as_distribution(value)
        if distribution is not None and not isinstance(distribution, (LogUniform, Uniform, IntUniform, Choice)):
            raise ValueError(f"{who}: {name}={value!r} is a {type(distribution).__name__}; expected "
                             "LogUniform, Uniform, IntUniform, Choice, a list or a constant")
    rng = np.random.default_rng(seed)
    done: list[Trial] = []
    while len(done) < trials:
        config = sample_config(space, rng) if len(done) < n_startup_trials \
            else _suggest(space, done, direction, gamma, n_ei_candidates, prior_weight, rng)
        _run(objective, [config], 0, done, direction, callback, csv_path)
    return _finish(who, done, direction, [dict(space)])
