"""OpenAI's evolution strategy (Salimans, Ho, Chen, Sidor and Sutskever, 2017)."""

from __future__ import annotations

import numpy

from lamina.optim.evolution.base import EvolutionStrategy, centered_ranks, check_positive
from lamina.optim.evolution.steppers import make_stepper

__all__ = ["OpenAIES", "es_gradient"]


def es_gradient(fitnesses, noise, sigma: float) -> numpy.ndarray:
    """The search-gradient estimate g = 1/(n sigma) sum_i F_i eps_i of grad E[F(theta + sigma eps)],
    eps ~ N(0, I), from n fitnesses F_i (n,) at theta + sigma eps_i and the noise eps (n, dim).
    With raw fitnesses it is unbiased; on a quadratic it is unbiased for grad F(theta) itself."""
    fitnesses, noise = numpy.asarray(fitnesses, dtype=numpy.float64), numpy.asarray(noise, dtype=numpy.float64)
    return fitnesses @ noise / (fitnesses.size * sigma)


class OpenAIES(EvolutionStrategy):
    """A fixed isotropic Gaussian N(theta, sigma^2 I) around the mean theta, moved along the
    estimate :func:`es_gradient` by a first-order optimizer.

    ``antithetic``: mirrored sampling, each eps drawn with its negative (popsize even).
    ``rank_shaping``: fitnesses replaced by centred ranks in [-0.5, 0.5] (:func:`centered_ranks`).
    ``weight_decay``: adds weight_decay * theta to the gradient (an L2 penalty on theta).
    ``optimizer``: 'adam' (the paper's), 'sgd' (with ``momentum``) or 'clipup'.
    Fitnesses are minimised.
    """

    def __init__(self, x0, sigma: float = 0.1, lr: float = 0.01, popsize: int = 50, antithetic: bool = True,
                 rank_shaping: bool = True, optimizer: str = "adam", weight_decay: float = 0.0,
                 momentum: float = 0.9, seed: int | None = None):
        super().__init__(x0, popsize, seed)
        check_positive(sigma, "sigma", "OpenAIES")
        check_positive(lr, "lr", "OpenAIES")
        if antithetic and popsize % 2:
            raise ValueError(f"OpenAIES: antithetic sampling needs an even popsize, got {popsize}")
        if weight_decay < 0:
            raise ValueError(f"OpenAIES: weight_decay must be >= 0, got {weight_decay}")
        self.sigma, self.lr, self.weight_decay = float(sigma), float(lr), float(weight_decay)
        self.antithetic, self.rank_shaping = antithetic, rank_shaping
        self.stepper = make_stepper(optimizer, self.lr, momentum, "OpenAIES")
        self.gradient: numpy.ndarray | None = None

    def _sample(self) -> numpy.ndarray:
        if self.antithetic:
            half = self.rng.standard_normal((self.popsize // 2, self.dim))
            noise = numpy.concatenate([half, -half])
        else:
            noise = self.rng.standard_normal((self.popsize, self.dim))
        return self.mean + self.sigma * noise

    def _update(self, solutions: numpy.ndarray, fitnesses: numpy.ndarray) -> None:
        noise = (solutions - self.mean) / self.sigma
        # Centred ranks give the best candidate +0.5: negate to keep F "lower is better".
        shaped = -centered_ranks(fitnesses) if self.rank_shaping else fitnesses
        self.gradient = es_gradient(shaped, noise, self.sigma) + self.weight_decay * self.mean
        self.mean = self.mean + self.stepper(self.gradient)
