"""The bootstrap particle filter (Gordon, Salmond & Smith 1993) with multinomial, stratified
and systematic resampling (Douc, Cappe & Moulines 2005).

N particles x^i with normalized weights w^i stand for the filtering distribution p(x_t | y_0..y_t).
Each step moves the particles by the transition (the proposal is the prior, "bootstrap"),
weights them by the observation's likelihood and normalizes:

    x_t^i ~ p(x_t | x_{t-1}^i),   w_t^i  proportional to  w_{t-1}^i p(y_t | x_t^i),

and the increments give an unbiased estimate of the likelihood,
log p(y) ~ sum_t log sum_i w_{t-1}^i p(y_t | x_t^i). When the effective sample size
ESS = 1 / sum_i (w^i)^2 falls below ``ess_threshold`` N the particles are resampled (indices drawn
with probabilities w, then uniform weights) before they move. Resampling draws the N indices by
inverting the weights' cumulative sum at N points u_1..u_N of (0, 1): independent uniforms
(multinomial), one uniform in each stratum [(i - 1) / N, i / N) (stratified), or a single
uniform shifted by i / N (systematic; each particle is then copied floor(N w^i) or
ceil(N w^i) times).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import numpy
from scipy.special import logsumexp

from lamina.errors import ShapeError

_NAME = "ParticleFilter"


def _check_weights(weights, owner: str) -> numpy.ndarray:
    weights = numpy.asarray(weights, dtype=numpy.float64)
    if weights.ndim != 1 or weights.size == 0:
        raise ShapeError(f"{owner}: weights must be a non-empty vector; got shape {weights.shape}")
    if (weights < 0).any() or not numpy.isfinite(weights).all() or weights.sum() <= 0:
        raise ValueError(f"{owner}: weights must be finite, non-negative and not all zero")
    return weights / weights.sum()


def _invert(weights: numpy.ndarray, points: numpy.ndarray) -> numpy.ndarray:
    """The index i with cumsum(w)[i-1] <= u < cumsum(w)[i] for every point u."""
    edges = numpy.cumsum(weights)
    edges[-1] = 1.0
    return numpy.minimum(numpy.searchsorted(edges, points, side="right"), len(weights) - 1)


def multinomial_resample(weights, rng: numpy.random.Generator, n: int | None = None) -> numpy.ndarray:
    """``n`` (default len(weights)) indices drawn independently with probabilities ``weights``."""
    weights = _check_weights(weights, "multinomial_resample")
    n = len(weights) if n is None else n
    return _invert(weights, numpy.sort(rng.random(n)))


def stratified_resample(weights, rng: numpy.random.Generator, n: int | None = None) -> numpy.ndarray:
    """Indices at u_i = (i + U_i) / n, one independent uniform U_i per stratum."""
    weights = _check_weights(weights, "stratified_resample")
    n = len(weights) if n is None else n
    return _invert(weights, (numpy.arange(n) + rng.random(n)) / n)


def systematic_resample(weights, rng: numpy.random.Generator, n: int | None = None) -> numpy.ndarray:
    """Indices at u_i = (i + U) / n with a single uniform U."""
    weights = _check_weights(weights, "systematic_resample")
    n = len(weights) if n is None else n
    return _invert(weights, (numpy.arange(n) + rng.random()) / n)


RESAMPLERS = {"multinomial": multinomial_resample, "stratified": stratified_resample,
              "systematic": systematic_resample}


@dataclasses.dataclass
class ParticleFilterResult:
    """What :meth:`ParticleFilter.filter` returns: the weighted means (T, ...) and variances
    (T, ...) of the particles after each observation, the log-likelihood estimate, the ESS
    after each weighting (T,) and whether the particles were resampled before each step (T,);
    ``particles`` and ``weights`` are the last step's."""

    means: numpy.ndarray
    variances: numpy.ndarray
    log_likelihood: float
    ess: numpy.ndarray
    resampled: numpy.ndarray
    particles: numpy.ndarray
    weights: numpy.ndarray


class ParticleFilter:
    """A bootstrap particle filter over any model given by three callables:

    * ``initial(n, rng)``: n particles (n, ...) drawn from p(x_0);
    * ``transition(particles, rng)``: the particles moved by p(x_t | x_{t-1}), same shape;
    * ``log_likelihood(particles, y)``: log p(y | x) for each particle, (n,).

    ``resampling`` is 'multinomial', 'stratified' or 'systematic'; the particles are
    resampled when ESS < ``ess_threshold`` * n_particles (1.0: at every step, 0.0: never)."""

    def __init__(self, transition: Callable, log_likelihood: Callable, initial: Callable, n_particles: int = 1000,
                 resampling: str = "systematic", ess_threshold: float = 0.5, seed: int | None = None):
        if resampling not in RESAMPLERS:
            raise ValueError(f"{_NAME}: resampling must be one of {tuple(RESAMPLERS)}; got {resampling!r}")
        if int(n_particles) != n_particles or n_particles < 1:
            raise ValueError(f"{_NAME}: n_particles must be a positive integer; got {n_particles!r}")
        if not 0.0 <= ess_threshold <= 1.0:
            raise ValueError(f"{_NAME}: ess_threshold must lie in [0, 1]; got {ess_threshold}")
        self.transition, self.log_likelihood, self.initial = transition, log_likelihood, initial
        self.n_particles, self.resampling, self.ess_threshold = int(n_particles), resampling, float(ess_threshold)
        self.seed = seed

    def _weigh(self, particles, y, log_weights: numpy.ndarray) -> tuple[numpy.ndarray, float]:
        scores = numpy.asarray(self.log_likelihood(particles, y), dtype=numpy.float64)
        if scores.shape != (self.n_particles,):
            raise ShapeError(f"{_NAME}: log_likelihood must return ({self.n_particles},) values, one per "
                             f"particle; got shape {scores.shape}")
        joint = log_weights + scores
        increment = float(logsumexp(joint))
        if not numpy.isfinite(increment):
            raise ValueError(f"{_NAME}: every particle has zero likelihood for an observation (log-likelihood "
                             f"{increment}); widen the transition or the likelihood, or add particles")
        return joint - increment, increment

    def filter(self, observations) -> ParticleFilterResult:
        """Run the filter over the observations (one per step along the first axis)."""
        rng = numpy.random.default_rng(self.seed)
        n, resample = self.n_particles, RESAMPLERS[self.resampling]
        particles = numpy.asarray(self.initial(n, rng), dtype=numpy.float64)
        if particles.shape[:1] != (n,):
            raise ShapeError(f"{_NAME}: initial(n, rng) must return {n} particles along the first axis; "
                             f"got shape {particles.shape}")
        log_weights = numpy.full(n, -numpy.log(n))
        steps = len(observations)
        means = numpy.empty((steps,) + particles.shape[1:])
        variances = numpy.empty_like(means)
        ess, resampled, total = numpy.empty(steps), numpy.zeros(steps, dtype=bool), 0.0
        for t in range(steps):
            if t:
                if 1.0 / numpy.exp(2 * log_weights).sum() < self.ess_threshold * n:
                    particles = particles[resample(numpy.exp(log_weights), rng)]
                    log_weights = numpy.full(n, -numpy.log(n))
                    resampled[t] = True
                particles = numpy.asarray(self.transition(particles, rng), dtype=numpy.float64)
            log_weights, increment = self._weigh(particles, observations[t], log_weights)
            total += increment
            weights = numpy.exp(log_weights)
            means[t] = numpy.tensordot(weights, particles, axes=1)
            variances[t] = numpy.tensordot(weights, (particles - means[t]) ** 2, axes=1)
            ess[t] = 1.0 / (weights ** 2).sum()
        return ParticleFilterResult(means, variances, total, ess, resampled, particles, numpy.exp(log_weights))
