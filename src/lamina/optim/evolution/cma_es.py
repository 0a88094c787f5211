"""The covariance matrix adaptation evolution strategy, as Hansen's tutorial "The CMA
Evolution Strategy" (2016, arXiv:1604.00772) states it: Table 1's defaults, active (negative)
recombination weights for the rank-mu update, cumulative step-size adaptation, and the
stopping criteria of its Appendix B."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

import numpy

from lamina.optim.evolution.base import EvolutionStrategy, check_positive

__all__ = ["CMAES", "CMAParameters", "cma_parameters"]


@dataclass(frozen=True)
class CMAParameters:
    """The strategy parameters of CMA-ES for dimension n and population size lambda."""

    popsize: int
    mu: int
    weights: numpy.ndarray
    mu_eff: float
    c_sigma: float
    d_sigma: float
    c_c: float
    c_1: float
    c_mu: float
    chi_n: float


def cma_parameters(n: int, popsize: int | None = None) -> CMAParameters:
    """The tutorial's Table 1 defaults, with alpha_cov = 2::

        lambda = 4 + floor(3 ln n),  mu = floor(lambda / 2),  w'_i = ln((lambda + 1) / 2) - ln i
        mu_eff = (sum_{i<=mu} w'_i)^2 / sum_{i<=mu} w'_i^2   (mu_eff^-: the same over i > mu)
        c_1 = 2 / ((n + 1.3)^2 + mu_eff)
        c_mu = min(1 - c_1, 2 (1/4 + mu_eff + 1/mu_eff - 2) / ((n + 2)^2 + mu_eff))
        c_c = (4 + mu_eff / n) / (n + 4 + 2 mu_eff / n)
        c_sigma = (mu_eff + 2) / (n + mu_eff + 5)
        d_sigma = 1 + 2 max(0, sqrt((mu_eff - 1) / (n + 1)) - 1) + c_sigma
        w_i = w'_i / sum_{w'_j > 0} w'_j                         for w'_i >= 0
        w_i = min(1 + c_1 / c_mu, 1 + 2 mu_eff^- / (mu_eff + 2),
                  (1 - c_1 - c_mu) / (n c_mu)) w'_i / sum_{w'_j < 0} |w'_j|   for w'_i < 0

    and chi_n = E||N(0, I)|| ~ sqrt(n) (1 - 1/(4n) + 1/(21 n^2)).
    """
    lam = 4 + int(math.floor(3 * math.log(n))) if popsize is None else int(popsize)
    if lam < 2:
        raise ValueError(f"cma_parameters: popsize must be >= 2, got {lam}")
    mu = lam // 2
    raw = math.log((lam + 1) / 2) - numpy.log(numpy.arange(1, lam + 1))
    positive, negative = raw[:mu], raw[mu:]
    mu_eff = positive.sum() ** 2 / (positive**2).sum()
    mu_eff_minus = negative.sum() ** 2 / (negative**2).sum() if numpy.any(negative != 0) else 0.0
    alpha_cov = 2.0
    c_1 = alpha_cov / ((n + 1.3) ** 2 + mu_eff)
    c_mu = min(1 - c_1, alpha_cov * (0.25 + mu_eff + 1 / mu_eff - 2) / ((n + 2) ** 2 + alpha_cov * mu_eff / 2))
    c_c = (4 + mu_eff / n) / (n + 4 + 2 * mu_eff / n)
    c_sigma = (mu_eff + 2) / (n + mu_eff + 5)
    d_sigma = 1 + 2 * max(0.0, math.sqrt((mu_eff - 1) / (n + 1)) - 1) + c_sigma
    weights = numpy.where(raw >= 0, raw / raw[raw > 0].sum(), 0.0)
    if numpy.any(raw < 0):
        alpha = min(1 + c_1 / c_mu, 1 + 2 * mu_eff_minus / (mu_eff + 2), (1 - c_1 - c_mu) / (n * c_mu))
        weights = numpy.where(raw < 0, alpha * raw / -raw[raw < 0].sum(), weights)
    chi_n = math.sqrt(n) * (1 - 1 / (4 * n) + 1 / (21 * n**2))
    return CMAParameters(lam, mu, weights, mu_eff, c_sigma, d_sigma, c_c, c_1, c_mu, chi_n)


class CMAES(EvolutionStrategy):
    """CMA-ES: candidates x_k = m + sigma B D z_k, z_k ~ N(0, I), with C = B D^2 B^T.

    ``tell`` ranks the candidates by fitness (lower is better), takes y_i = (x_{i:lambda} - m) / sigma
    and <y>_w = sum_{i<=mu} w_i y_i, then, g being the generation counted from 0::

        m <- m + c_m sigma <y>_w                                  (c_m = 1)
        p_sigma <- (1 - c_sigma) p_sigma + sqrt(c_sigma (2 - c_sigma) mu_eff) C^-1/2 <y>_w
        sigma <- sigma exp(c_sigma / d_sigma (||p_sigma|| / chi_n - 1))
        h_sigma = [||p_sigma|| / sqrt(1 - (1 - c_sigma)^(2 (g + 1))) < (1.4 + 2 / (n + 1)) chi_n]
        p_c <- (1 - c_c) p_c + h_sigma sqrt(c_c (2 - c_c) mu_eff) <y>_w
        w°_i = w_i (1 if w_i >= 0 else n / ||C^-1/2 y_i||^2)
        C <- (1 + c_1 delta(h_sigma) - c_1 - c_mu sum_j w_j) C + c_1 p_c p_c^T + c_mu sum_i w°_i y_i y_i^T

    with delta(h_sigma) = (1 - h_sigma) c_c (2 - c_c). B and D are refreshed by an eigen-
    decomposition of C once more than lambda / (c_1 + c_mu) / n / 10 generations have passed.
    ``stop()`` reports the tutorial's termination criteria (tolfun, tolx, noeffectaxis,
    noeffectcoord, conditioncov, equalfunvalues, tolxup).
    """

    def __init__(self, x0, sigma0: float, popsize: int | None = None, seed: int | None = None,
                 tolfun: float = 1e-12, tolx: float | None = None):
        check_positive(sigma0, "sigma0", "CMAES")
        n = numpy.asarray(x0).size
        self.params = cma_parameters(max(n, 1), popsize)
        super().__init__(x0, self.params.popsize, seed)
        self.sigma0 = self.sigma = float(sigma0)
        self.c_m = 1.0
        self.p_sigma, self.p_c = numpy.zeros(self.dim), numpy.zeros(self.dim)
        self.C, self.B, self.D = numpy.eye(self.dim), numpy.eye(self.dim), numpy.ones(self.dim)
        self._eigen_generation = 0
        self.tolfun, self.tolx = tolfun, 1e-12 * self.sigma0 if tolx is None else tolx
        self._history = deque(maxlen=10 + math.ceil(30 * self.dim / self.popsize))
        self._last_fitnesses = numpy.full(self.popsize, numpy.inf)
        self._initial_spread = self.sigma * self.D.max()

    @property
    def inverse_sqrt_C(self) -> numpy.ndarray:
        """C^-1/2 = B D^-1 B^T (from the last eigendecomposition)."""
        return (self.B / self.D) @ self.B.T

    def _sample(self) -> numpy.ndarray:
        z = self.rng.standard_normal((self.popsize, self.dim))
        return self.mean + self.sigma * (z * self.D) @ self.B.T

    def _update(self, solutions: numpy.ndarray, fitnesses: numpy.ndarray) -> None:
        p, n = self.params, self.dim
        order = numpy.argsort(fitnesses, kind="stable")
        y = (solutions[order] - self.mean) / self.sigma
        y_w = p.weights[:p.mu] @ y[:p.mu]
        inv_sqrt = self.inverse_sqrt_C
        self.mean = self.mean + self.c_m * self.sigma * y_w

        self.p_sigma = (1 - p.c_sigma) * self.p_sigma + math.sqrt(p.c_sigma * (2 - p.c_sigma) * p.mu_eff) * (
            inv_sqrt @ y_w)
        norm = numpy.linalg.norm(self.p_sigma)
        self.sigma *= math.exp(p.c_sigma / p.d_sigma * (norm / p.chi_n - 1))
        h_sigma = float(norm / math.sqrt(1 - (1 - p.c_sigma) ** (2 * (self.generation + 1)))
                        < (1.4 + 2 / (n + 1)) * p.chi_n)
        self.p_c = (1 - p.c_c) * self.p_c + h_sigma * math.sqrt(p.c_c * (2 - p.c_c) * p.mu_eff) * y_w

        w_circ = p.weights.copy()
        negative = p.weights < 0
        w_circ[negative] *= n / numpy.sum((y[negative] @ inv_sqrt.T) ** 2, axis=1)
        delta = (1 - h_sigma) * p.c_c * (2 - p.c_c)
        self.C = ((1 + p.c_1 * delta - p.c_1 - p.c_mu * p.weights.sum()) * self.C
                  + p.c_1 * numpy.outer(self.p_c, self.p_c) + p.c_mu * (w_circ * y.T) @ y)

        if self.generation + 1 - self._eigen_generation > p.popsize / (p.c_1 + p.c_mu) / n / 10:
            self._decompose()
        self._history.append(float(fitnesses[order[0]]))
        self._last_fitnesses = fitnesses

    def _decompose(self) -> None:
        self.C = numpy.triu(self.C) + numpy.triu(self.C, 1).T
        eigenvalues, self.B = numpy.linalg.eigh(self.C)
        self.D = numpy.sqrt(numpy.maximum(eigenvalues, 1e-300))
        self._eigen_generation = self.generation + 1

    def stop(self) -> dict[str, float]:
        found: dict[str, float] = {}
        if not self.generation:
            return found
        history = numpy.array(self._history)
        full = len(history) == self._history.maxlen
        spread = max(numpy.ptp(history), numpy.ptp(self._last_fitnesses))
        if full and spread < self.tolfun:
            found["tolfun"] = self.tolfun
        if full and numpy.ptp(history) == 0:
            found["equalfunvalues"] = 0.0
        if numpy.all(self.sigma * numpy.abs(self.p_c) < self.tolx) and numpy.all(
                self.sigma * numpy.sqrt(numpy.diag(self.C)) < self.tolx):
            found["tolx"] = self.tolx
        axis = self.generation % self.dim
        if numpy.all(self.mean == self.mean + 0.1 * self.sigma * self.D[axis] * self.B[:, axis]):
            found["noeffectaxis"] = 0.1
        if numpy.any(self.mean == self.mean + 0.2 * self.sigma * numpy.sqrt(numpy.diag(self.C))):
            found["noeffectcoord"] = 0.2
        if self.D.max() ** 2 > 1e14 * self.D.min() ** 2:
            found["conditioncov"] = 1e14
        if self.sigma * self.D.max() > 1e4 * self._initial_spread:
            found["tolxup"] = 1e4
        return found
