"""Counting distributions built on repeated trials: binomial, geometric, negative binomial and
multinomial. The success probability is given as ``probs=`` or ``logits=`` (exactly one), as
for the Bernoulli distribution."""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.distributions import constraints
from lamina.distributions.discrete import Categorical, _BinaryProbsOrLogits
from lamina.distributions.distribution import Distribution, as_tensor
from lamina.functional import exp, lgamma, log, log1p, log_sigmoid, sigmoid, softplus, where
from lamina.functional import sum as total


def _softplus(z):
    return softplus(z, threshold=math.inf)


class _CountUpTo(constraints.Constraint):
    """A whole number in [0, total_count], the total count varying per entry."""

    description = "a whole number in [0, total_count]"
    is_discrete = True

    def __init__(self, total_count):
        self.total_count = total_count

    def check(self, x):
        return (x >= 0) & (x <= self.total_count) & (x == backend.xp.floor(x))


class _CountVector(constraints.Constraint):
    """Vectors of whole numbers >= 0 summing to at most total_count (along the last axis)."""

    event_dim = 1
    is_discrete = True

    def __init__(self, total_count: int):
        self.total_count = total_count
        self.description = f"a vector of whole numbers >= 0 summing to at most {total_count}"

    def check(self, x):
        whole = ((x >= 0) & (x == backend.xp.floor(x))).all(axis=-1)
        return whole & (x.sum(axis=-1) <= self.total_count)


class _BelowOne(constraints.Constraint):
    """0 <= p < 1: a success probability that leaves room for the failures counted to occur."""

    description = "in [0, 1)"

    def check(self, x):
        return (x >= 0.0) & (x < 1.0)


class Binomial(_BinaryProbsOrLogits):
    """The number of successes in n = ``total_count`` trials of probability p:
    log P(k) = log C(n, k) + k logits - n log(1 + e^logits); mean n p, variance n p (1 - p);
    entropy by summing over the support (a total count shared by the whole batch)."""

    arg_constraints = {"total_count": constraints.nonnegative_integer, "probs": constraints.unit_interval,
                       "logits": constraints.real}
    has_enumerate_support = True

    def __init__(self, total_count=1, probs=None, logits=None, validate_args: bool | None = None):
        (self.total_count,) = self._set_probs_or_logits(probs, logits, total_count)
        super().__init__(self._param.shape, validate_args=validate_args)

    @property
    def support(self):
        return _CountUpTo(self.total_count.data)

    @property
    def mean(self):
        return self.total_count * self.probs

    @property
    def variance(self):
        return self.total_count * self.probs * (1.0 - self.probs)

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        n = numpy.broadcast_to(backend.to_numpy(self.total_count.data), shape).astype(numpy.int64)
        p = numpy.broadcast_to(backend.to_numpy(self.probs.data), shape).astype(numpy.float64)
        draws = backend.rng().binomial(n, p)            # a Python int for 0-d parameters
        return Tensor._wrap(backend.xp.asarray(numpy.asarray(draws, dtype=self.dtype)))

    def log_prob(self, value):
        k = self._value(value, "log_prob")
        n = self.total_count
        log_choose = lgamma(n + 1.0) - lgamma(k + 1.0) - lgamma(n - k + 1.0)
        return log_choose + k * self.logits - n * _softplus(self.logits)

    def _shared_total(self, method: str) -> int:
        counts = backend.to_numpy(self.total_count.data)
        if counts.size and counts.min() != counts.max():
            raise NotImplementedError(f"Binomial.{method} needs one total_count for the whole batch; got values "
                                      f"from {counts.min():g} to {counts.max():g}")
        return int(counts.max()) if counts.size else 0

    def _support_values(self, method: str, expand: bool) -> Tensor:
        n = self._shared_total(method)
        return self._enumerated(backend.xp.arange(n + 1, dtype=self.dtype), expand)

    def enumerate_support(self, expand=True):
        """0, 1, ..., total_count along a new leading axis (one total count for the batch)."""
        return self._support_values("enumerate_support", expand)

    def entropy(self):
        """-sum_k P(k) log P(k) over k = 0..n."""
        log_p = self.log_prob(self._support_values("entropy", expand=False))
        return -total(exp(log_p) * log_p, axis=0)

    @property
    def mode(self) -> Tensor:
        """min(floor((n + 1) p), n)."""
        n = self.total_count.data if isinstance(self.total_count, Tensor) else self.total_count
        return Tensor._wrap(backend.xp.minimum(backend.xp.floor((n + 1) * self.probs.data), n).astype(self.probs.dtype))


class Geometric(_BinaryProbsOrLogits):
    """The number of failures before the first success, each trial succeeding with probability
    p > 0: log P(k) = k log(1 - p) + log p; mean 1/p - 1, variance (1 - p) / p^2, entropy
    (log(1 + e^logits) - p logits) / p."""

    arg_constraints = {"probs": constraints.unit_interval, "logits": constraints.real}
    support = constraints.nonnegative_integer

    def __init__(self, probs=None, logits=None, validate_args: bool | None = None):
        self._set_probs_or_logits(probs, logits)
        super().__init__(self._param.shape, validate_args=validate_args)
        if self._validate_args and probs is not None:
            self._check_argument("probs", self.probs, constraints.positive)

    @property
    def mean(self):
        return 1.0 / self.probs - 1.0

    @property
    def variance(self):
        return (1.0 / self.probs - 1.0) / self.probs

    def sample(self, sample_shape=()):
        """floor(log u / log(1 - p)), u ~ U(tiny, 1): the inverse of the CDF 1 - (1 - p)^(k + 1)."""
        tiny = numpy.finfo(self.dtype).tiny
        u = numpy.maximum(self._noise("random", sample_shape), tiny)
        with numpy.errstate(divide="ignore"):
            draws = numpy.floor(numpy.log(u) / numpy.log1p(-backend.to_numpy(self.probs.data)))
        return Tensor._wrap(backend.xp.asarray(draws.astype(self.dtype)))

    def log_prob(self, value):
        k = self._value(value, "log_prob")
        p = self.probs
        certain = (p.data == 1) & (k.data == 0)       # 0 log 0 = 0: P(0) = 1 when p = 1
        failures = k * log1p(-where(certain, 0.0, p)) if bool(numpy.any(certain)) else k * log1p(-p)
        return failures + log(p)

    def entropy(self):
        return (_softplus(self.logits) - self.probs * self.logits) / self.probs

    @property
    def mode(self) -> Tensor:
        """The most probable number of failures: 0."""
        return Tensor._wrap(backend.xp.zeros(self.probs.shape, dtype=self.probs.dtype))


class NegativeBinomial(_BinaryProbsOrLogits):
    """The number of successes (probability p each) before ``total_count`` r failures (r > 0
    real): log P(k) = log Gamma(r + k) - log Gamma(k + 1) - log Gamma(r) + r log(1 - p) +
    k log p; mean r p / (1 - p), variance mean / (1 - p). Draws are Poisson(G) with
    G ~ Gamma(r, rate (1 - p) / p)."""

    arg_constraints = {"total_count": constraints.nonnegative, "probs": _BelowOne(),
                       "logits": constraints.real}
    support = constraints.nonnegative_integer

    def __init__(self, total_count, probs=None, logits=None, validate_args: bool | None = None):
        (self.total_count,) = self._set_probs_or_logits(probs, logits, total_count)
        super().__init__(self._param.shape, validate_args=validate_args)

    @property
    def mean(self):
        return self.total_count * exp(self.logits)

    @property
    def variance(self):
        return self.mean / sigmoid(-self.logits)

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        r = numpy.broadcast_to(backend.to_numpy(self.total_count.data), shape).astype(numpy.float64)
        odds = numpy.broadcast_to(numpy.exp(backend.to_numpy(self.logits.data)), shape).astype(numpy.float64)
        rates = backend.rng().gamma(r, odds)
        draws = backend.rng().poisson(rates)            # a Python int for 0-d parameters
        return Tensor._wrap(backend.xp.asarray(numpy.asarray(draws, dtype=self.dtype)))

    def log_prob(self, value):
        k = self._value(value, "log_prob")
        r = self.total_count
        weights = r * log_sigmoid(-self.logits) + k * log_sigmoid(self.logits)
        certain = (r.data + k.data) == 0                 # r = 0 puts all the mass on k = 0
        if bool(numpy.any(certain)):
            r_safe = where(certain, 1.0, r)
            return weights - where(certain, 0.0, lgamma(r_safe) + lgamma(k + 1.0) - lgamma(r_safe + k))
        return weights - (lgamma(r) + lgamma(k + 1.0) - lgamma(r + k))

    @property
    def mode(self) -> Tensor:
        """max(floor((r - 1) p / (1 - p)), 0), as torch."""
        r = self.total_count.data if isinstance(self.total_count, Tensor) else self.total_count
        p = self.probs.data
        return Tensor._wrap(backend.xp.maximum(backend.xp.floor((r - 1) * (p / (1 - p))), 0).astype(p.dtype))


class Multinomial(Distribution):
    """Counts of each of K categories in ``total_count`` n draws of Categorical(p) (event shape
    (K,)): log P(x) = log n! - sum_i log x_i! + sum_i x_i log p_i; mean n p, variance
    n p (1 - p); entropy n H(p) - log n! + sum_i E[log x_i!], x_i ~ Binomial(n, p_i)."""

    arg_constraints = {"probs": constraints.simplex, "logits": constraints.real_vector}

    def __init__(self, total_count: int = 1, probs=None, logits=None, validate_args: bool | None = None):
        if isinstance(total_count, bool) or not isinstance(total_count, (int, numpy.integer)) or total_count < 0:
            raise TypeError(f"Multinomial: total_count must be a whole number >= 0 shared by the batch (an int), "
                            f"got {total_count!r}")
        self.total_count = int(total_count)
        self._categorical = Categorical(probs, logits, validate_args=validate_args)
        super().__init__(self._categorical.batch_shape, (self._categorical.num_events,), validate_args=False)
        self._validate_args = self._categorical._validate_args
        self._dtype = self._categorical.dtype

    @property
    def support(self):
        return _CountVector(self.total_count)

    @property
    def probs(self):
        return self._categorical.probs

    @property
    def logits(self):
        return self._categorical.logits

    @property
    def mean(self):
        return self.probs * float(self.total_count)

    @property
    def variance(self):
        return self.probs * (1.0 - self.probs) * float(self.total_count)

    def sample(self, sample_shape=()):
        shape = self._extended_shape(sample_shape)
        probs = backend.to_numpy(self.probs.data).astype(numpy.float64)
        draws = backend.rng().multinomial(self.total_count, numpy.broadcast_to(probs, shape), size=shape[:-1])
        return Tensor._wrap(backend.xp.asarray(draws.astype(self.dtype)))

    def log_prob(self, value):
        x = self._value(value, "log_prob")
        logits = self.logits
        impossible = numpy.isneginf(backend.to_numpy(logits.data)) & (backend.to_numpy(x.data) == 0)
        powers = where(impossible, 0.0, logits * x) if bool(numpy.any(impossible)) else logits * x
        return lgamma(total(x, axis=-1) + 1.0) - total(lgamma(x + 1.0), axis=-1) + total(powers, axis=-1)

    def entropy(self):
        n = self.total_count
        cross = self._categorical.entropy() * float(n) - math.lgamma(n + 1.0)
        if n == 0:
            return cross
        k = as_tensor(numpy.arange(1, n + 1, dtype=self.dtype).reshape((n,) + (1,) * (len(self.batch_shape) + 1)),
                      self.dtype)
        p = self.probs
        log_binomial = (math.lgamma(n + 1.0) - lgamma(k + 1.0) - lgamma(-k + (n + 1.0))
                        + k * log(p) + self._failures(k, p))
        return cross + total(exp(log_binomial) * lgamma(k + 1.0), axis=(0, -1))

    def _failures(self, k: Tensor, p: Tensor) -> Tensor:
        """(n - k) log(1 - p), taking 0 log 0 = 0 where p = 1 and k = n (and -inf for k < n)."""
        failures = -k + float(self.total_count)
        sure = backend.to_numpy(p.data) == 1
        if not sure.any():
            return failures * log1p(-p)
        return where(sure & (backend.to_numpy(k.data) < self.total_count), -math.inf,
                     failures * log1p(-where(sure, 0.0, p)))
