"""The relaxed one-hot categorical (Concrete, or Gumbel-softmax) distribution: a continuous
stand-in for a one-hot draw that has a reparameterized sample; and its two-category form, the
relaxed Bernoulli (binary Concrete) on (0, 1).

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
from lamina.distributions.discrete import Categorical, _BinaryProbsOrLogits, _clamped
from lamina.distributions.distribution import Distribution, as_tensor, broadcast_parameters
from lamina.distributions.transformed import TransformedDistribution
from lamina.distributions.transforms import SigmoidTransform
from lamina.functional import exp, log, log1p, logsumexp, softplus


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


class LogitRelaxedBernoulli(_BinaryProbsOrLogits):
    """The logit of a relaxed Bernoulli draw: x = (logit p + log u - log(1 - u)) / T for
    u ~ U(0, 1) (logistic noise) and temperature T; log p(x) = log T + d - 2 log(1 + e^d),
    d = logits - T x."""

    arg_constraints = {"probs": constraints.unit_interval, "logits": constraints.real}
    support = constraints.real
    has_rsample = True

    def __init__(self, temperature, probs=None, logits=None, validate_args: bool | None = None):
        self._set_probs_or_logits(probs, logits)
        self.temperature = as_tensor(temperature, self._param.dtype)
        super().__init__(self._param.shape, validate_args=validate_args)

    def rsample(self, sample_shape=()):
        info = numpy.finfo(self.dtype)
        u = numpy.clip(self._noise("random", sample_shape), info.eps, 1.0 - info.eps)
        p = _clamped(self.probs)
        return (numpy.log(u) - numpy.log1p(-u) + log(p) - log1p(-p)) / self.temperature

    def log_prob(self, value):
        value = self._value(value, "log_prob")
        d = self.logits - value * self.temperature
        return log(self.temperature) + d - softplus(d, threshold=math.inf) * 2.0


class RelaxedBernoulli(TransformedDistribution):
    """A continuous relaxation of Bernoulli(p) on (0, 1): the sigmoid of a
    :class:`LogitRelaxedBernoulli` draw of temperature ``temperature``; as T -> 0 draws tend to
    0 or 1, with P(1) = p. Reparameterized draws; log-density by the change of variables."""

    arg_constraints = {"probs": constraints.unit_interval, "logits": constraints.real}
    support = constraints.unit_interval
    has_rsample = True

    def __init__(self, temperature, probs=None, logits=None, validate_args: bool | None = None):
        base = LogitRelaxedBernoulli(temperature, probs, logits, validate_args=validate_args)
        super().__init__(base, SigmoidTransform(), validate_args=validate_args)

    @property
    def temperature(self):
        return self.base_dist.temperature

    @property
    def probs(self):
        return self.base_dist.probs

    @property
    def logits(self):
        return self.base_dist.logits
