"""Bayesian optimization of hyperparameters: a Gaussian process models the score as a
function of the configuration, and each new trial goes where the model expects the most.

Random search spends every trial blind; when a trial is expensive (a whole training run), the
trials already done say where the next one should go. Each hyperparameter of the space is
mapped to [0, 1] (``LogUniform`` through log10, ``IntUniform`` by cells of width
1 / (high - low + 1) around each integer, ``Choice`` as a one-hot block, constants left out),
and a GP with a Matern 5/2 kernel (one length scale per coordinate) plus learned noise is fitted
to the scores seen so far, normalized to mean 0 and variance 1, by maximizing its marginal
likelihood (:class:`lamina.models.GaussianProcessRegressor`). At a point u the GP predicts a
mean mu(u) and a standard deviation sigma(u) of the score; with f* the best score so far
(larger is better: minimized scores are negated),

    expected improvement  EI(u) = (mu - f* - xi) Phi(z) + sigma phi(z),  z = (mu - f* - xi) / sigma
                                  (max(mu - f* - xi, 0) where sigma = 0),
    upper confidence bound UCB(u) = mu + kappa sigma,

Phi and phi the standard normal cdf and density (Jones, Schonlau & Welch, 1998; Srinivas et
al., 2010). The next trial is the best of many candidates: configurations drawn from the space
and Gaussian steps around the best trial so far. The first ``initial`` trials are random draws,
so the GP has something to fit. A failed trial counts as the worst score seen, so the search
moves away from it.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
from scipy.special import ndtr

from lamina.models import GaussianProcessRegressor, kernels
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

__all__ = ["UnitCube", "bayesian_search", "expected_improvement", "gp_surrogate", "upper_confidence_bound"]

ACQUISITIONS = ("ei", "ucb")


def expected_improvement(mean, std, best: float, xi: float = 0.01) -> np.ndarray:
    """EI = (mu - f* - xi) Phi(z) + sigma phi(z), z = (mu - f* - xi) / sigma, for maximizing;
    max(mu - f* - xi, 0) where sigma = 0 (module docstring)."""
    mean, std = np.asarray(mean, dtype=np.float64), np.asarray(std, dtype=np.float64)
    gain = mean - best - xi
    positive = std > 0
    z = np.where(positive, gain / np.where(positive, std, 1.0), 0.0)
    density = np.exp(-0.5 * z * z) / math.sqrt(2 * math.pi)
    return np.where(positive, gain * ndtr(z) + std * density, np.maximum(gain, 0.0))


def upper_confidence_bound(mean, std, kappa: float = 2.0) -> np.ndarray:
    """UCB = mu + kappa sigma."""
    return np.asarray(mean, dtype=np.float64) + kappa * np.asarray(std, dtype=np.float64)


class UnitCube:
    """The search space's configurations as points of [0, 1]^d and back (module docstring)."""

    def __init__(self, space: Mapping[str, Any], who: str = "UnitCube"):
        check_space(who, space)
        self.space = dict(space)
        self.axes: list[tuple[str, Any, int]] = []  # (name, distribution, first coordinate)
        width = 0
        for name, value in self.space.items():
            distribution = as_distribution(value)
            if distribution is None:
                continue
            if not isinstance(distribution, (LogUniform, Uniform, IntUniform, Choice)):
                raise ValueError(f"{who}: {name}={value!r} is a {type(distribution).__name__}; expected "
                                 "LogUniform, Uniform, IntUniform, Choice, a list or a constant")
            self.axes.append((name, distribution, width))
            width += len(distribution.options) if isinstance(distribution, Choice) else 1
        if width == 0:
            raise ValueError(f"{who}: the space {self.space} has nothing to search (only constants)")
        self.dims = width

    def encode(self, config: Mapping[str, Any]) -> np.ndarray:
        """The point u in [0, 1]^d of a configuration."""
        u = np.zeros(self.dims)
        for name, d, at in self.axes:
            value = config[name]
            if isinstance(d, Choice):
                u[at + d.options.index(value)] = 1.0
            elif isinstance(d, LogUniform):
                u[at] = (math.log10(value) - math.log10(d.low)) / (math.log10(d.high) - math.log10(d.low))
            elif isinstance(d, Uniform):
                u[at] = (value - d.low) / (d.high - d.low)
            else:
                u[at] = (value - d.low + 0.5) / (d.high - d.low + 1)
        return u

    def decode(self, u: np.ndarray) -> dict[str, Any]:
        """The configuration at a point (coordinates clipped to [0, 1]; a one-hot block read by
        its largest entry, an integer by the cell the coordinate falls in)."""
        u = np.clip(u, 0.0, 1.0)
        config = dict(self.space)
        for name, d, at in self.axes:
            if isinstance(d, Choice):
                config[name] = d.options[int(np.argmax(u[at:at + len(d.options)]))]
            elif isinstance(d, LogUniform):
                exponent = math.log10(d.low) + u[at] * (math.log10(d.high) - math.log10(d.low))
                config[name] = float(min(max(10.0**exponent, d.low), d.high))
            elif isinstance(d, Uniform):
                config[name] = float(d.low + u[at] * (d.high - d.low))
            else:
                config[name] = int(min(d.low + math.floor(u[at] * (d.high - d.low + 1)), d.high))
        return config


def _check_count(who: str, name: str, value, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{who}: {name} must be an integer >= {minimum}, got {value!r}")


def gp_surrogate(points: np.ndarray, values: np.ndarray):
    """A GP (Matern 5/2 with one length scale per coordinate, learned noise) fitted to the
    scores, normalized to mean 0 and variance 1."""
    kernel = kernels.ScaleKernel(kernels.Matern(length_scale=0.3, nu=2.5, ard=True))
    gp = GaussianProcessRegressor(kernel, noise=1e-3, normalize_y=True)
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # the line search may overshoot
        return gp.fit(points, values, steps=50, optimizer="lbfgs")


def _candidates(cube: UnitCube, best: np.ndarray, rng: np.random.Generator, count: int, local: int) -> np.ndarray:
    """``count`` configurations drawn from the space and ``local`` Gaussian steps (scale 0.05
    and 0.15 of the unit range) around ``best``, as points of the cube."""
    drawn = [cube.encode(sample_config(cube.space, rng)) for _ in range(count)]
    scales = np.where(np.arange(local) % 2 == 0, 0.05, 0.15)[:, None]
    steps = best + scales * rng.standard_normal((local, cube.dims))
    near = [cube.encode(cube.decode(u)) for u in steps]  # snapped to valid configurations
    return np.array(drawn + near)


def bayesian_search(objective: Callable[[dict], Any], space: Mapping[str, Any], trials: int, initial: int = 5,
                    acquisition: str = "ei", seed: int = 0, direction: str = "maximize", xi: float = 0.01,
                    kappa: float = 2.0, candidates: int = 2000, callback: Callable[[Trial], None] | None = None,
                    csv_path: str | os.PathLike | None = None) -> SearchResult:
    """Evaluate ``trials`` configurations of ``space`` chosen by Bayesian optimization (module
    docstring): ``initial`` random draws, then each trial at the candidate that maximizes the
    ``acquisition`` ('ei': expected improvement with margin ``xi`` times the spread of the
    scores seen; 'ucb': mu + ``kappa``
    sigma) under a GP fitted to the trials so far. ``candidates`` random configurations plus
    ``candidates // 10`` steps around the best are scored per trial. The same ``seed`` gives
    the same trials. Returns a :class:`SearchResult`, as :func:`random_search`; ``callback``
    and ``csv_path`` as there."""
    who = "bayesian_search"
    _check(who, objective, trials, direction)
    _check_count(who, "initial", initial, 1)
    _check_count(who, "candidates", candidates, 1)
    if acquisition not in ACQUISITIONS:
        raise ValueError(f"{who}: acquisition must be one of {ACQUISITIONS}, got {acquisition!r}")
    for name, value in (("xi", xi), ("kappa", kappa)):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise ValueError(f"{who}: {name} must be a finite number >= 0, got {value!r}")
    cube = UnitCube(space, who)
    rng = np.random.default_rng(seed)
    sign = 1.0 if direction == "maximize" else -1.0
    done: list[Trial] = []
    _run(objective, (sample_config(space, rng) for _ in range(min(initial, trials))), 0, done, direction, callback,
         csv_path)
    while len(done) < trials:
        scores = np.array([sign * t.score for t in done])
        succeeded = np.isfinite(scores)
        if not succeeded.any():
            config = sample_config(space, rng)
        else:
            scores[~succeeded] = scores[succeeded].min()
            points = np.array([cube.encode(t.config) for t in done])
            gp = gp_surrogate(points, scores)
            pool = _candidates(cube, points[np.argmax(scores)], rng, candidates, max(candidates // 10, 1))
            mean, std = (np.asarray(a, dtype=np.float64) for a in gp.predict(pool, return_std=True))
            value = expected_improvement(mean, std, scores.max(), xi * scores.std()) if acquisition == "ei" \
                else upper_confidence_bound(mean, std, kappa)
            finite = np.isfinite(value)
            config = cube.decode(pool[int(np.argmax(np.where(finite, value, -np.inf)))]) if finite.any() \
                else sample_config(space, rng)
        _run(objective, [config], 0, done, direction, callback, csv_path)
    return _finish(who, done, direction, [dict(space)])
