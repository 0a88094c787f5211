"""The Dirichlet distribution on the probability simplex, with reparameterized draws: a draw
is G / sum(G) for independent G_i ~ Gamma(alpha_i, 1), each differentiable in alpha_i by the
Gamma sampler's implicit gradient, and the normalization by the graph."""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.distributions import constraints
from lamina.distributions.distribution import Distribution, broadcast_parameters
from lamina.distributions.gamma import standard_gamma
from lamina.errors import ShapeError
from lamina.functional import clip, digamma, lgamma, where, xlogy
from lamina.functional import sum as total


class Dirichlet(Distribution):
    """Dir(alpha) over vectors of K probabilities (the last axis of ``concentration``), with
    alpha_0 = sum_i alpha_i: log p(x) = sum_i (alpha_i - 1) log x_i + log Gamma(alpha_0) -
    sum_i log Gamma(alpha_i); mean alpha / alpha_0, variance alpha_i (alpha_0 - alpha_i) /
    (alpha_0^2 (alpha_0 + 1)); entropy sum_i log Gamma(alpha_i) - log Gamma(alpha_0) +
    (alpha_0 - K) digamma(alpha_0) - sum_i (alpha_i - 1) digamma(alpha_i)."""

    arg_constraints = {"concentration": constraints.IndependentConstraint(constraints.positive, 1)}
    support = constraints.simplex
    has_rsample = True

    def __init__(self, concentration, validate_args: bool | None = None):
        (self.concentration,) = broadcast_parameters(concentration)
        shape = tuple(self.concentration.shape)
        if not shape:
            raise ShapeError("Dirichlet: concentration needs at least one axis (the categories), got shape ()")
        super().__init__(shape[:-1], shape[-1:], validate_args=validate_args)

    def _total(self, keepdims: bool = False):
        return total(self.concentration, axis=-1, keepdims=keepdims)

    @property
    def mean(self):
        return self.concentration / self._total(keepdims=True)

    @property
    def variance(self):
        a, a0 = self.concentration, self._total(keepdims=True)
        return a * (a0 - a) / (a0 * a0 * (a0 + 1.0))

    def rsample(self, sample_shape=()):
        draws = standard_gamma(self.concentration, self._noise("random", sample_shape))
        return draws / total(draws, axis=-1, keepdims=True)

    def log_prob(self, value):
        value = self._value(value, "log_prob")
        a = self.concentration
        return total(xlogy(a - 1.0, value), axis=-1) + lgamma(self._total()) - total(lgamma(a), axis=-1)

    def entropy(self):
        a, a0 = self.concentration, self._total()
        k = self.event_shape[0]
        return (total(lgamma(a), axis=-1) - lgamma(a0) + (a0 - k) * digamma(a0)
                - total((a - 1.0) * digamma(a), axis=-1))

    @property
    def mode(self) -> Tensor:
        """(alpha - 1)_+ / sum (alpha - 1)_+; when every alpha < 1 the density is unbounded at each
        vertex, and the first vertex is returned, as torch."""
        return dirichlet_mode(self.concentration)


def dirichlet_mode(concentration: Tensor) -> Tensor:
    """The mode of Dirichlet(alpha) over the last axis (see :attr:`Dirichlet.mode`)."""
    xp = backend.xp
    above = clip(concentration - 1.0, 0.0, None)
    sums = total(above, axis=-1, keepdims=True)
    all_below = xp.all(concentration.data < 1, axis=-1, keepdims=True)
    if not xp.any(all_below):
        return above / sums
    vertex = xp.arange(concentration.shape[-1]) == 0
    return where(all_below, Tensor._wrap(xp.broadcast_to(vertex, concentration.shape).astype(concentration.dtype)),
                 above / where(all_below, 1.0, sums))
