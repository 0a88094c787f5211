"""Natural evolution strategies: separable (SNES, Schaul, Glasmachers and Schmidhuber 2011)
and exponential (xNES, Glasmachers, Schaul, Sun, Wierstra and Schmidhuber 2010), both with
the NES utility shaping of :func:`nes_utilities` and their papers' default learning rates."""

from __future__ import annotations

import math

import numpy

from lamina.optim.evolution.base import EvolutionStrategy, check_positive, nes_utilities

__all__ = ["SNES", "XNES", "default_popsize"]


def default_popsize(dim: int) -> int:
    """lambda = 4 + floor(3 ln d), as CMA-ES and the NES papers."""
    return 4 + int(math.floor(3 * math.log(max(dim, 1))))


class SNES(EvolutionStrategy):
    """Separable NES: N(mu, diag(sigma^2)), candidates x_k = mu + sigma s_k, s_k ~ N(0, I), and
    with the utilities u_k (lower fitness, larger u)::

        mu <- mu + lr_mean sigma sum_k u_k s_k
        sigma <- sigma exp(lr_sigma / 2 sum_k u_k (s_k^2 - 1))

    Defaults lr_mean = 1, lr_sigma = (3 + ln d) / (5 sqrt d). ``sigma``: a scalar or one per
    coordinate."""

    def __init__(self, x0, sigma=1.0, popsize: int | None = None, lr_mean: float = 1.0,
                 lr_sigma: float | None = None, seed: int | None = None):
        dim = numpy.asarray(x0).size
        super().__init__(x0, default_popsize(dim) if popsize is None else popsize, seed)
        check_positive(sigma, "sigma", "SNES")
        self.sigma = numpy.broadcast_to(numpy.asarray(sigma, dtype=numpy.float64), (self.dim,)).copy()
        self.lr_mean = lr_mean
        self.lr_sigma = (3 + math.log(self.dim)) / (5 * math.sqrt(self.dim)) if lr_sigma is None else lr_sigma

    def _sample(self) -> numpy.ndarray:
        return self.mean + self.sigma * self.rng.standard_normal((self.popsize, self.dim))

    def _update(self, solutions: numpy.ndarray, fitnesses: numpy.ndarray) -> None:
        s = (solutions - self.mean) / self.sigma
        u = nes_utilities(fitnesses)
        self.mean = self.mean + self.lr_mean * self.sigma * (u @ s)
        self.sigma = self.sigma * numpy.exp(self.lr_sigma / 2 * (u @ (s**2 - 1)))


def _expm_symmetric(matrix: numpy.ndarray) -> numpy.ndarray:
    eigenvalues, vectors = numpy.linalg.eigh(matrix)
    return (vectors * numpy.exp(eigenvalues)) @ vectors.T


class XNES(EvolutionStrategy):
    """Exponential NES: N(mu, sigma^2 B B^T) with det B = 1, candidates x_k = mu + sigma B z_k,
    and with the utilities u_k::

        G_delta = sum_k u_k z_k,  G_M = sum_k u_k (z_k z_k^T - I)
        G_sigma = tr(G_M) / d,    G_B = G_M - G_sigma I
        mu <- mu + lr_mean sigma B G_delta
        sigma <- sigma exp(lr_sigma / 2 G_sigma),  B <- B expm(lr_B / 2 G_B)

    Defaults lr_mean = 1, lr_sigma = lr_B = 3 (3 + ln d) / (5 d sqrt d)."""

    def __init__(self, x0, sigma: float = 1.0, popsize: int | None = None, lr_mean: float = 1.0,
                 lr_sigma: float | None = None, lr_B: float | None = None, seed: int | None = None):
        dim = numpy.asarray(x0).size
        super().__init__(x0, default_popsize(dim) if popsize is None else popsize, seed)
        check_positive(sigma, "sigma", "XNES")
        self.sigma = float(sigma)
        self.B = numpy.eye(self.dim)
        default = 3 * (3 + math.log(self.dim)) / (5 * self.dim * math.sqrt(self.dim))
        self.lr_mean = lr_mean
        self.lr_sigma = default if lr_sigma is None else lr_sigma
        self.lr_B = default if lr_B is None else lr_B

    def _sample(self) -> numpy.ndarray:
        z = self.rng.standard_normal((self.popsize, self.dim))
        return self.mean + self.sigma * z @ self.B.T

    def _update(self, solutions: numpy.ndarray, fitnesses: numpy.ndarray) -> None:
        z = numpy.linalg.solve(self.B, ((solutions - self.mean) / self.sigma).T).T
        u = nes_utilities(fitnesses)
        g_delta = u @ z
        g_m = (u * z.T) @ z - u.sum() * numpy.eye(self.dim)
        g_sigma = numpy.trace(g_m) / self.dim
        g_b = g_m - g_sigma * numpy.eye(self.dim)
        self.mean = self.mean + self.lr_mean * self.sigma * self.B @ g_delta
        self.sigma *= math.exp(self.lr_sigma / 2 * g_sigma)
        self.B = self.B @ _expm_symmetric(self.lr_B / 2 * g_b)
