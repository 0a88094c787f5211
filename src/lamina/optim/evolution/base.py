"""The ask/tell interface every evolution strategy here shares (as pycma's and evotorch's).

A strategy keeps a search distribution over flat float64 vectors. ``ask()`` draws a population
(one candidate per row), the caller evaluates each, ``tell(solutions, fitnesses)`` moves the
distribution. Fitnesses are *minimised*: lower is better (negate a reward to maximise it)."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy

from lamina import backend

__all__ = [
    "EvolutionResult", "EvolutionStrategy", "as_start_point", "centered_ranks", "check_positive", "nes_utilities",
]


@dataclass
class EvolutionResult:
    """The best candidate evaluated so far, its fitness, and the work spent."""

    x: numpy.ndarray
    f: float
    evaluations: int
    generations: int


def as_start_point(x0, who: str) -> numpy.ndarray:
    """``x0`` as a fresh float64 vector, checked to be 1-D, non-empty and finite."""
    x = numpy.array(x0, dtype=numpy.float64)
    if x.ndim != 1 or x.size == 0:
        raise ValueError(f"{who}: x0 must be a non-empty 1-D vector, got shape {x.shape}")
    if not numpy.all(numpy.isfinite(x)):
        raise ValueError(f"{who}: x0 has non-finite entries")
    return x


def check_positive(value, name: str, who: str) -> None:
    """Raise unless every entry of ``value`` is a finite number > 0."""
    array = numpy.asarray(value, dtype=numpy.float64)
    if not numpy.all(numpy.isfinite(array)) or numpy.any(array <= 0):
        raise ValueError(f"{who}: {name} must be finite and > 0, got {value!r}")


class EvolutionStrategy:
    """The shared bookkeeping: population checks, the best candidate so far, counters, and
    the ``optimize`` loop. Subclasses implement ``_sample()`` and ``_update(solutions,
    fitnesses)`` and may add stopping criteria in ``stop()``."""

    def __init__(self, x0, popsize: int, seed: int | None):
        who = type(self).__name__
        self.mean = as_start_point(x0, who)
        self.dim = self.mean.size
        if int(popsize) != popsize or popsize < 2:
            raise ValueError(f"{who}: popsize must be an integer >= 2, got {popsize!r}")
        self.popsize = int(popsize)
        # Unseeded: a seed from lamina's generator, so lamina.manual_seed makes runs reproducible.
        self.rng = numpy.random.default_rng(int(backend.rng().integers(2**63)) if seed is None else seed)
        self.generation = 0
        self.evaluations = 0
        self._best_x = self.mean.copy()
        self._best_f = math.inf

    def ask(self) -> numpy.ndarray:
        """A new population: an array (popsize, dim) of candidates to evaluate."""
        return self._sample()

    def tell(self, solutions, fitnesses) -> None:
        """Update the distribution from the candidates ``solutions`` (popsize, dim) and their
        fitnesses (popsize,), lower being better."""
        who = f"{type(self).__name__}.tell"
        x = numpy.asarray(solutions, dtype=numpy.float64)
        f = numpy.asarray(fitnesses, dtype=numpy.float64).reshape(-1)
        if x.shape != (self.popsize, self.dim):
            raise ValueError(f"{who}: expected solutions of shape ({self.popsize}, {self.dim}) "
                             f"(popsize, dim), got {x.shape}")
        if f.shape != (self.popsize,):
            raise ValueError(f"{who}: expected {self.popsize} fitnesses (one per solution), got {f.size}")
        if not numpy.all(numpy.isfinite(f)):
            bad = numpy.flatnonzero(~numpy.isfinite(f)).tolist()
            raise ValueError(f"{who}: fitnesses must be finite; entries {bad} are {f[bad].tolist()}")
        best = int(numpy.argmin(f))
        if f[best] < self._best_f:
            self._best_f, self._best_x = float(f[best]), x[best].copy()
        self._update(x, f)
        self.evaluations += self.popsize
        self.generation += 1

    @property
    def result(self) -> EvolutionResult:
        return EvolutionResult(self._best_x.copy(), self._best_f, self.evaluations, self.generation)

    def stop(self) -> dict[str, float]:
        """The stopping criteria met now, by name (empty: keep going)."""
        return {}

    def optimize(self, f: Callable[[numpy.ndarray], float], iterations: int,
                 target: float | None = None) -> EvolutionResult:
        """Run ``iterations`` generations of ask, evaluate ``f`` on each candidate, tell;
        stop early when ``stop()`` fires or the best fitness reaches ``target``."""
        for _ in range(iterations):
            population = self.ask()
            self.tell(population, [f(x) for x in population])
            if self.stop() or (target is not None and self._best_f <= target):
                break
        return self.result

    def _sample(self) -> numpy.ndarray:
        raise NotImplementedError

    def _update(self, solutions: numpy.ndarray, fitnesses: numpy.ndarray) -> None:
        raise NotImplementedError


def _by_rank(fitnesses: numpy.ndarray, values_by_rank: numpy.ndarray) -> numpy.ndarray:
    """Give the k-th lowest fitness ``values_by_rank[k]``; tied fitnesses share the mean of
    their values (so equal fitnesses carry no spurious preference)."""
    order = numpy.argsort(fitnesses, kind="stable")
    _, group, counts = numpy.unique(fitnesses[order], return_inverse=True, return_counts=True)
    shared = numpy.bincount(group, weights=values_by_rank) / counts
    out = numpy.empty(fitnesses.size)
    out[order] = shared[group]
    return out


def centered_ranks(fitnesses: numpy.ndarray) -> numpy.ndarray:
    """Salimans et al.'s fitness shaping for minimisation: the lowest fitness gets +0.5, the
    highest -0.5, the others evenly between by rank (ties share their mean)."""
    n = fitnesses.size
    return _by_rank(fitnesses, 0.5 - numpy.arange(n) / (n - 1))


def nes_utilities(fitnesses: numpy.ndarray) -> numpy.ndarray:
    """The NES utilities (Wierstra et al. 2014), for minimisation: the k-th best of lambda
    gets u_k = max(0, ln(lambda/2 + 1) - ln k) / sum_j max(0, ln(lambda/2 + 1) - ln j) - 1/lambda
    (they add to 0; ties share their mean)."""
    n = fitnesses.size
    raw = numpy.maximum(0.0, math.log(n / 2 + 1) - numpy.log(numpy.arange(1, n + 1)))
    return _by_rank(fitnesses, raw / raw.sum() - 1.0 / n)
