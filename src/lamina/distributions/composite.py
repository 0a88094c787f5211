"""Distributions built from others: ``Independent`` (batch axes read as event axes) and
``MixtureSameFamily`` (a categorical mixture of components of one family)."""

from __future__ import annotations

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.distributions import constraints
from lamina.distributions.discrete import Categorical
from lamina.distributions.distribution import Distribution, as_tensor
from lamina.errors import ShapeError
from lamina.functional import expand_dims, log_softmax, logsumexp


def _sum_last(t: Tensor, n: int) -> Tensor:
    return t.sum(axis=tuple(range(-n, 0))) if n else t


class Independent(Distribution):
    """``base`` with its last ``reinterpreted_batch_ndims`` batch axes taken as event axes: the
    log-probability and entropy of an event are sums over those axes (a diagonal Gaussian is
    ``Independent(Normal(loc, scale), 1)``)."""

    def __init__(self, base_distribution: Distribution, reinterpreted_batch_ndims: int,
                 validate_args: bool | None = None):
        n = reinterpreted_batch_ndims
        batch = base_distribution.batch_shape
        if isinstance(n, bool) or not isinstance(n, int) or not 0 <= n <= len(batch):
            raise ValueError(f"Independent: reinterpreted_batch_ndims must be a whole number in [0, {len(batch)}] "
                             f"(the base's batch_shape is {batch}), got {n!r}")
        self.base_dist = base_distribution
        self.reinterpreted_batch_ndims = n
        cut = len(batch) - n
        super().__init__(batch[:cut], batch[cut:] + base_distribution.event_shape, validate_args)
        self._dtype = base_distribution.dtype

    @property
    def has_rsample(self):
        return self.base_dist.has_rsample

    @property
    def support(self):
        return constraints.IndependentConstraint(self.base_dist.support, self.reinterpreted_batch_ndims)

    @property
    def mean(self):
        return self.base_dist.mean

    @property
    def variance(self):
        return self.base_dist.variance

    def sample(self, sample_shape=()):
        return self.base_dist.sample(sample_shape)

    def rsample(self, sample_shape=()):
        return self.base_dist.rsample(sample_shape)

    def log_prob(self, value):
        value = self._value(value, "log_prob")
        return _sum_last(self.base_dist.log_prob(value), self.reinterpreted_batch_ndims)

    def entropy(self):
        return _sum_last(self.base_dist.entropy(), self.reinterpreted_batch_ndims)

    def __repr__(self) -> str:
        return f"Independent({self.base_dist!r}, {self.reinterpreted_batch_ndims})"

    @property
    def mode(self) -> Tensor:
        """The base distribution's mode."""
        return self.base_dist.mode


class MixtureSameFamily(Distribution):
    """p(x) = sum_k pi_k p_k(x): ``mixture_distribution`` a Categorical over K components with
    batch shape B, ``component_distribution`` one distribution of batch shape B + (K,).
    log p(x) = logsumexp_k (log pi_k + log p_k(x)); mean sum_k pi_k mu_k; variance by the law of
    total variance, sum_k pi_k sigma_k^2 + sum_k pi_k (mu_k - mu)^2."""

    def __init__(self, mixture_distribution: Categorical, component_distribution: Distribution,
                 validate_args: bool | None = None):
        if not isinstance(mixture_distribution, Categorical):
            raise TypeError(f"MixtureSameFamily: mixture_distribution must be a Categorical, got "
                            f"{type(mixture_distribution).__name__}")
        if not isinstance(component_distribution, Distribution):
            raise TypeError(f"MixtureSameFamily: component_distribution must be a Distribution, got "
                            f"{type(component_distribution).__name__}")
        k = mixture_distribution.num_events
        batch = mixture_distribution.batch_shape
        if component_distribution.batch_shape != batch + (k,):
            raise ShapeError(f"MixtureSameFamily: component_distribution has batch_shape "
                             f"{component_distribution.batch_shape}; expected the mixture's batch_shape {batch} "
                             f"followed by its {k} components, {batch + (k,)}")
        self.mixture_distribution = mixture_distribution
        self.component_distribution = component_distribution
        super().__init__(batch, component_distribution.event_shape, validate_args)
        self._dtype = component_distribution.dtype

    @property
    def support(self):
        return self.component_distribution.support

    def _component_axis(self) -> int:
        return -1 - len(self.event_shape)

    def _weights(self) -> Tensor:
        """The mixture probabilities shaped to multiply a component statistic (B, K, event)."""
        probs = self.mixture_distribution.probs
        return probs.reshape(probs.shape + (1,) * len(self.event_shape))

    @property
    def mean(self):
        return (self._weights() * self.component_distribution.mean).sum(axis=self._component_axis())

    @property
    def variance(self):
        axis = self._component_axis()
        weights, means = self._weights(), self.component_distribution.mean
        spread = means - expand_dims(self.mean, axis)
        return ((weights * self.component_distribution.variance).sum(axis=axis)
                + (weights * spread * spread).sum(axis=axis))

    def _per_component(self, value, method: str) -> Tensor:
        value = self._value(value, method)
        return expand_dims(value, self._component_axis())

    def log_prob(self, value):
        log_components = self.component_distribution.log_prob(self._per_component(value, "log_prob"))
        log_weights = log_softmax(self.mixture_distribution.logits, axis=-1)
        return logsumexp(log_components + log_weights, axis=-1)

    def cdf(self, value):
        cdfs = self.component_distribution.cdf(self._per_component(value, "cdf"))
        return (cdfs * self.mixture_distribution.probs).sum(axis=-1)

    def sample(self, sample_shape=()):
        if isinstance(sample_shape, int):
            sample_shape = (sample_shape,)
        which = backend.to_numpy(self.mixture_distribution.sample(sample_shape).data)
        draws = backend.to_numpy(self.component_distribution.sample(sample_shape).data)
        axis = len(sample_shape) + len(self.batch_shape)
        index = which.reshape(which.shape + (1,) * (1 + len(self.event_shape)))
        index = numpy.broadcast_to(index, which.shape + (1,) + self.event_shape)
        picked = numpy.take_along_axis(draws, index, axis=axis)
        return as_tensor(backend.xp.asarray(numpy.squeeze(picked, axis=axis)), self.dtype)
