"""Bernoulli, categorical, one-hot categorical and Poisson distributions.

The two-parameter families take ``probs=`` or ``logits=`` (exactly one); the other is derived
when asked for, as in PyTorch: logits from probabilities clamped to [eps, 1 - eps], so that
log-probabilities stay finite.
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.distributions import constraints
from lamina.distributions.distribution import Distribution, as_tensor, broadcast_parameters
from lamina.errors import ShapeError
from lamina.functional import (
    argmax,
    broadcast_to,
    clip,
    gather,
    lgamma,
    log,
    log1p,
    logsumexp,
    sigmoid,
    softmax,
    softplus,
    xlogy,
)


def _one_of(name: str, probs, logits):
    if (probs is None) == (logits is None):
        raise ValueError(f"{name}: give exactly one of probs= and logits=, got "
                         f"{'both' if probs is not None else 'neither'}")


def _clamped(p: Tensor) -> Tensor:
    eps = float(numpy.finfo(p.dtype).eps)
    return clip(p, eps, 1.0 - eps)


def _softplus(z):
    return softplus(z, threshold=math.inf)


class _ProbsOrLogits(Distribution):
    """A family given by ``probs`` or by ``logits``: the other is derived on first use."""

    def __getattr__(self, name):
        given = self.__dict__
        if name == "probs" and "logits" in given:
            self.probs = self._probs_from_logits(given["logits"])
            return self.probs
        if name == "logits" and "probs" in given:
            self.logits = self._logits_from_probs(given["probs"])
            return self.logits
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")


class _BinaryProbsOrLogits(_ProbsOrLogits):
    """A family of one success probability p per entry, given as ``probs`` or as ``logits``
    log(p / (1 - p)) (derived from p clamped to [eps, 1 - eps])."""

    def _set_probs_or_logits(self, probs, logits, *others) -> list[Tensor]:
        """Store whichever of probs and logits is given, broadcast with ``others`` (returned)."""
        _one_of(type(self).__name__, probs, logits)
        *others, param = broadcast_parameters(*others, probs if probs is not None else logits)
        self.__dict__["probs" if probs is not None else "logits"] = param
        return others

    @property
    def _param(self) -> Tensor:
        return self.__dict__["probs"] if "probs" in self.__dict__ else self.__dict__["logits"]

    def _probs_from_logits(self, logits):
        return sigmoid(logits)

    def _logits_from_probs(self, probs):
        p = _clamped(probs)
        return log(p) - log1p(-p)


class Bernoulli(_BinaryProbsOrLogits):
    """P(x = 1) = p = sigma(logits): log P(x) = x logits - log(1 + e^logits); mean p, variance
    p (1 - p), entropy log(1 + e^logits) - p logits."""

    arg_constraints = {"probs": constraints.unit_interval, "logits": constraints.real}
    support = constraints.boolean
    has_enumerate_support = True

    def __init__(self, probs=None, logits=None, validate_args: bool | None = None):
        self._set_probs_or_logits(probs, logits)
        super().__init__(self._param.shape, validate_args=validate_args)

    @property
    def mean(self):
        return self.probs

    @property
    def variance(self):
        return self.probs * (1.0 - self.probs)

    def sample(self, sample_shape=()):
        draw = self._noise("random", sample_shape) < self.probs.data     # a NumPy scalar when 0-d
        return Tensor._wrap(backend.xp.asarray(draw, dtype=self.dtype))

    def log_prob(self, value):
        value = self._value(value, "log_prob")
        return value * self.logits - _softplus(self.logits)

    def enumerate_support(self, expand=True):
        """0 and 1 along a new leading axis."""
        return self._enumerated(backend.xp.arange(2, dtype=self.dtype), expand)

    def entropy(self):
        return _softplus(self.logits) - self.probs * self.logits

    @property
    def mode(self) -> Tensor:
        """1 where p > 1/2, 0 where p < 1/2, NaN at p = 1/2 (two modes), as torch."""
        p = self.probs.data
        return Tensor._wrap(backend.xp.where(p == 0.5, backend.xp.nan, p > 0.5).astype(p.dtype))


class _Weights(constraints.Constraint):
    """Probabilities before normalizing: entries >= 0 with a positive, finite sum (last axis)."""

    description = "a vector of weights >= 0 with a positive, finite sum (normalized to probabilities)"
    event_dim = 1

    def check(self, x):
        total = x.sum(axis=-1)
        return (x >= 0).all(axis=-1) & (total > 0) & backend.xp.isfinite(total)


class Categorical(_ProbsOrLogits):
    """P(x = k) = p_k over k = 0..K-1 (the last axis of probs or logits); probs (weights >= 0,
    not all 0) are normalized to sum to 1, as in PyTorch, and logits to log-probabilities
    (logits - logsumexp(logits)). entropy -sum_k p_k log p_k. Values are category indices; mean
    and variance are NaN, as in PyTorch."""

    arg_constraints = {"probs": constraints.simplex, "logits": constraints.real_vector}
    has_enumerate_support = True

    def __init__(self, probs=None, logits=None, validate_args: bool | None = None):
        _one_of(type(self).__name__, probs, logits)
        given = as_tensor(probs if probs is not None else logits, backend.get_default_dtype())
        (given,) = broadcast_parameters(given)
        if given.ndim < 1:
            raise ShapeError(f"{type(self).__name__}: {'probs' if probs is not None else 'logits'} needs at least "
                             f"one axis (the categories), got shape {tuple(given.shape)}")
        if probs is not None:
            self.probs = given
        else:
            self.logits = given
        super().__init__(given.shape[:-1], validate_args=validate_args)
        self._num_events = given.shape[-1]
        if probs is not None:
            self.probs = given / given.sum(axis=-1, keepdims=True)
        else:
            self.logits = given - logsumexp(given, axis=-1, keepdims=True)

    def _check_argument(self, name, value, constraint):
        # probs are checked as given, before they are normalized onto the simplex
        super()._check_argument(name, value, _Weights() if name == "probs" else constraint)

    def _probs_from_logits(self, logits):
        return softmax(logits, axis=-1)

    def _logits_from_probs(self, probs):
        return log(_clamped(probs))

    @property
    def num_events(self) -> int:
        return self._num_events

    @property
    def support(self):
        return constraints.IntegerInterval(0, self._num_events - 1)

    @property
    def mean(self):
        return Tensor._wrap(backend.xp.full(self.batch_shape, numpy.nan, dtype=self.dtype))

    @property
    def variance(self):
        return self.mean

    def _indices(self, sample_shape=()):
        """Category draws by inverting the cumulative probabilities at uniform noise."""
        if isinstance(sample_shape, int):
            sample_shape = (sample_shape,)
        cumulative = numpy.cumsum(backend.to_numpy(self.probs.data), axis=-1)
        u = backend.rng().random(tuple(sample_shape) + self.batch_shape + (1,))
        index = (u >= cumulative).sum(axis=-1)
        return numpy.minimum(index, self._num_events - 1)

    def sample(self, sample_shape=()):
        return Tensor._wrap(backend.xp.asarray(self._indices(sample_shape).astype(numpy.int64)))

    def log_prob(self, value):
        value = self._value(value, "log_prob")
        index = backend.xp.asarray(value.data).astype(numpy.int64)
        shape = numpy.broadcast_shapes(index.shape, self.batch_shape)
        logits = self.logits
        if tuple(logits.shape[:-1]) != shape:
            logits = broadcast_to(logits, shape + (self._num_events,))
        picked = gather(logits, -1, backend.xp.broadcast_to(index, shape)[..., None])
        return picked.reshape(shape)

    def entropy(self):
        smallest = float(numpy.finfo(self.dtype).min)
        return -(clip(self.logits, smallest, None) * self.probs).sum(axis=-1)

    def enumerate_support(self, expand=True):
        """The category indices 0..K-1 (int64) along a new leading axis."""
        return self._enumerated(backend.xp.arange(self._num_events, dtype=numpy.int64), expand)

    @property
    def mode(self) -> Tensor:
        """The most probable category (the first of a tie), as int64."""
        return Tensor._wrap(backend.xp.argmax(self.probs.data, axis=-1).astype(backend.xp.int64))


class OneHotCategorical(Distribution):
    """A categorical distribution whose values are one-hot vectors of length K (event shape
    (K,)); mean p, variance p (1 - p)."""

    arg_constraints = {"probs": constraints.simplex, "logits": constraints.real_vector}
    support = constraints.one_hot
    has_enumerate_support = True

    def __init__(self, probs=None, logits=None, validate_args: bool | None = None):
        self._categorical = Categorical(probs, logits, validate_args=validate_args)
        super().__init__(self._categorical.batch_shape, (self._categorical.num_events,), validate_args=False)
        self._validate_args = self._categorical._validate_args
        self._dtype = self._categorical.dtype

    @property
    def probs(self):
        return self._categorical.probs

    @property
    def logits(self):
        return self._categorical.logits

    @property
    def mean(self):
        return self.probs

    @property
    def variance(self):
        return self.probs * (1.0 - self.probs)

    def sample(self, sample_shape=()):
        index = self._categorical._indices(sample_shape)
        one_hot = numpy.eye(self.event_shape[0], dtype=self.dtype)[index]
        return Tensor._wrap(backend.xp.asarray(one_hot))

    def log_prob(self, value):
        value = self._value(value, "log_prob")
        return self._categorical.log_prob(argmax(value, axis=-1))

    def entropy(self):
        return self._categorical.entropy()

    def enumerate_support(self, expand=True):
        """The K one-hot vectors along a new leading axis."""
        return self._enumerated(backend.xp.eye(self.event_shape[0], dtype=self.dtype), expand)

    @property
    def mode(self) -> Tensor:
        """The one-hot vector of the most probable category."""
        probs = self._categorical.probs.data
        hot = backend.xp.argmax(probs, axis=-1)[..., None] == backend.xp.arange(probs.shape[-1])
        return Tensor._wrap(hot.astype(probs.dtype))


class Poisson(Distribution):
    """P(x = k) = rate^k e^(-rate) / k!: log P(k) = k log rate - rate - log Gamma(k + 1); mean and
    variance rate."""

    arg_constraints = {"rate": constraints.nonnegative}
    support = constraints.nonnegative_integer

    def __init__(self, rate, validate_args: bool | None = None):
        (self.rate,) = broadcast_parameters(rate)
        super().__init__(self.rate.shape, validate_args=validate_args)

    @property
    def mean(self):
        return self.rate

    @property
    def variance(self):
        return self.rate

    def sample(self, sample_shape=()):
        rate = numpy.broadcast_to(backend.to_numpy(self.rate.data), self._extended_shape(sample_shape))
        draw = backend.rng().poisson(rate)              # a Python int for a 0-d rate
        return Tensor._wrap(backend.xp.asarray(numpy.asarray(draw, dtype=self.dtype)))

    def log_prob(self, value):
        value = self._value(value, "log_prob")
        return xlogy(value, self.rate) - self.rate - lgamma(value + 1.0)

    @property
    def mode(self) -> Tensor:
        """floor(rate)."""
        return Tensor._wrap(backend.xp.floor(self.rate.data))
