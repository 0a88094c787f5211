"""The relaxed one-hot categorical (Concrete, or Gumbel-softmax) distribution: a continuous
stand-in for a one-hot draw that has a reparameterized sample.

A draw is y = softmax((logits + g) / T) for Gumbel noise g = -log(-log u), u ~ U(0, 1), and
temperature T; as T -> 0 it tends to a one-hot draw of Categorical(logits). Its density on the
simplex (Maddison et al., 2017), with x = log y and K categories, is

    log p(y) = log Gamma(K) + (K - 1) log T + sum_k (s_k - logsumexp(s)) - sum_k x_k,
    s_k = logits_k - T x_k.
"""

from __future__ import annotations

import math

import numpy

from lamina.distributions import constraints
from lamina.distributions.discrete import Categorical
from lamina.distributions.distribution import Distribution, broadcast_parameters
from lamina.functional import exp, log, logsumexp


class RelaxedOneHotCategorical(Distribution):
    """Relaxed one-hot draws of temperature ``temperature`` (a number or one per batch entry)
    over the categories of ``probs=`` or ``logits=`` (the last axis); event shape (K,)."""

    arg_constraints = {"temperature": constraints.positive}
    support = constraints.simplex
    has_rsample = True

    def __init__(self, temperature, probs=None, logits=None, validate_args: bool | None = None):
        self._categorical = Categorical(probs, logits, validate_args=validate_args)
        (self.temperature,) = broadcast_parameters(temperature)
        super().__init__(self._categorical.batch_shape, (self._categorical.num_events,), validate_args)

    @property
    def probs(self):
        return self._categorical.probs

    @property
    def logits(self):
        return self._categorical.logits

    def _per_event(self, t):
        return t.reshape(t.shape + (1,)) if t.ndim else t

    def rsample(self, sample_shape=()):
        eps = numpy.finfo(self.dtype).eps
        u = numpy.clip(self._noise("random", sample_shape), eps, 1.0 - eps)
        gumbel = -numpy.log(-numpy.log(u))
        scores = (self.logits + gumbel) / self._per_event(self.temperature)
        return exp(scores - logsumexp(scores, axis=-1, keepdims=True))

    def log_prob(self, value):
        x = log(self._value(value, "log_prob"))
        k = self.event_shape[0]
        t = self.temperature
        scores = self.logits - x * self._per_event(t)
        normalized = (scores - logsumexp(scores, axis=-1, keepdims=True)).sum(axis=-1)
        return normalized + math.lgamma(k) + log(t) * (k - 1.0) - x.sum(axis=-1)
