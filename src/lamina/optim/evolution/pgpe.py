"""Policy gradients with parameter-based exploration (Sehnke, Osendorfer, Rückstieß, Graves,
Peters and Schmidhuber, 2010) with symmetric sampling, as evotorch runs it: centred-rank
shaping and a ClipUp (Toklu et al. 2020), Adam or SGD step for the centre."""

from __future__ import annotations

import numpy

from lamina.optim.evolution.base import EvolutionStrategy, centered_ranks, check_positive
from lamina.optim.evolution.steppers import make_stepper

__all__ = ["PGPE"]


class PGPE(EvolutionStrategy):
    """N(mu, diag(sigma^2)) sampled in mirrored pairs x+_k = mu + eps_k, x-_k = mu - eps_k
    (``ask`` returns the popsize/2 "+" rows, then their "-" rows in the same order; ``tell``
    expects that layout). With utilities r (centred ranks of the fitnesses, best +0.5, or
    minus the raw fitnesses) and b their mean::

        grad_mu = mean_k eps_k (r+_k - r-_k) / 2
        grad_sigma = mean_k ((r+_k + r-_k) / 2 - b) (eps_k^2 - sigma^2) / sigma

    mu climbs grad_mu with ``optimizer`` ('clipup', 'adam' or 'sgd') at rate ``lr``; sigma
    becomes sigma + sigma_lr grad_sigma, kept within a factor 1 +- ``max_sigma_change`` of
    its old value."""

    def __init__(self, x0, sigma=0.1, lr: float = 0.1, popsize: int = 20, sigma_lr: float = 0.1,
                 optimizer: str = "clipup", max_sigma_change: float = 0.2, rank_shaping: bool = True,
                 momentum: float = 0.9, seed: int | None = None):
        super().__init__(x0, popsize, seed)
        check_positive(sigma, "sigma", "PGPE")
        check_positive(lr, "lr", "PGPE")
        if popsize % 2:
            raise ValueError(f"PGPE: symmetric sampling needs an even popsize, got {popsize}")
        self.sigma = numpy.broadcast_to(numpy.asarray(sigma, dtype=numpy.float64), (self.dim,)).copy()
        self.sigma_lr, self.max_sigma_change, self.rank_shaping = sigma_lr, max_sigma_change, rank_shaping
        self.stepper = make_stepper(optimizer, lr, momentum, "PGPE")

    def _sample(self) -> numpy.ndarray:
        eps = self.sigma * self.rng.standard_normal((self.popsize // 2, self.dim))
        return numpy.concatenate([self.mean + eps, self.mean - eps])

    def _update(self, solutions: numpy.ndarray, fitnesses: numpy.ndarray) -> None:
        half = self.popsize // 2
        eps = solutions[:half] - self.mean
        r = centered_ranks(fitnesses) if self.rank_shaping else -fitnesses
        r_plus, r_minus = r[:half], r[half:]
        grad_mu = (r_plus - r_minus) / 2 @ eps / half
        grad_sigma = ((r_plus + r_minus) / 2 - r.mean()) @ ((eps**2 - self.sigma**2) / self.sigma) / half
        self.mean = self.mean + self.stepper(-grad_mu)
        new_sigma = self.sigma + self.sigma_lr * grad_sigma
        low, high = self.sigma * (1 - self.max_sigma_change), self.sigma * (1 + self.max_sigma_change)
        self.sigma = numpy.clip(new_sigma, low, high)
