"""The law of y = f_n(... f_1(x)) for x drawn from a base distribution, by the change of
variables

    log p(y) = log p_base(x) - sum_i log |det J_i|,   x = f_1^-1(... f_n^-1(y)),

with J_i the Jacobian of f_i at its input. Draws push base draws through the transforms
(reparameterized when the base's are); for monotone scalar maps the CDF is the base's at
f^-1(y), reflected (1 - F) where the composition decreases.
"""

from __future__ import annotations

from lamina.autograd import no_grad
from lamina.distributions import constraints
from lamina.distributions.composite import Independent
from lamina.distributions.distribution import Distribution
from lamina.distributions.transforms import ComposeTransform, Transform, _sum_rightmost


class TransformedDistribution(Distribution):
    """``base_distribution`` pushed through ``transforms`` (one Transform or a list, applied in
    order). The event has the base's axes, or the transforms' when they act on more (the base is
    then read through :class:`Independent`); parameters of the transforms may broadcast the
    batch shape."""

    arg_constraints: dict = {}

    def __init__(self, base_distribution: Distribution, transforms, validate_args: bool | None = None):
        if isinstance(transforms, Transform):
            transforms = [transforms]
        if not isinstance(transforms, (list, tuple)) or not all(isinstance(t, Transform) for t in transforms):
            raise TypeError(f"{type(self).__name__}: transforms must be a Transform or a list of Transforms, "
                            f"got {transforms!r}")
        self.transforms = list(transforms)
        chain = ComposeTransform(self.transforms)
        base_event = len(base_distribution.event_shape)
        base_shape = base_distribution.batch_shape + base_distribution.event_shape
        if len(base_shape) < chain.event_dim:
            raise ValueError(f"{type(self).__name__}: the transforms act on events of {chain.event_dim} axes; the "
                             f"base distribution's values have shape {base_shape}")
        shape = chain.forward_shape(base_shape)
        if shape != base_shape:                    # the transforms' parameters broadcast the base
            base_distribution = base_distribution.expand(shape[:len(shape) - base_event])
        if chain.event_dim > base_event:
            base_distribution = Independent(base_distribution, chain.event_dim - base_event)
        self.base_dist = base_distribution
        event_dim = max(chain.event_dim, base_event)
        cut = len(shape) - event_dim
        super().__init__(shape[:cut], shape[cut:], validate_args)
        self._dtype = base_distribution.dtype

    @property
    def has_rsample(self):
        return self.base_dist.has_rsample

    @property
    def support(self):
        if not self.transforms:
            return self.base_dist.support
        codomain = self.transforms[-1].codomain
        extra = len(self.event_shape) - codomain.event_dim
        return constraints.IndependentConstraint(codomain, extra) if extra > 0 else codomain

    def _push(self, x):
        for transform in self.transforms:
            x = transform(x)
        return x

    def sample(self, sample_shape=()):
        with no_grad():
            return self._push(self.base_dist.sample(sample_shape)).detach()

    def rsample(self, sample_shape=()):
        return self._push(self.base_dist.rsample(sample_shape))

    def log_prob(self, value):
        y = self._value(value, "log_prob")
        event_dim = len(self.event_shape)
        log_det = None
        for transform in reversed(self.transforms):
            x = transform.inv(y)
            term = _sum_rightmost(transform.log_abs_det_jacobian(x, y), event_dim - transform.event_dim)
            log_det = term if log_det is None else log_det + term
            y = x
        base = _sum_rightmost(self.base_dist.log_prob(y), event_dim - len(self.base_dist.event_shape))
        return base if log_det is None else base - log_det

    def _sign(self):
        result = 1
        for transform in self.transforms:
            result = result * transform.sign
        return result

    def _monotonized(self, p):
        """p where the composition increases, 1 - p where it decreases."""
        sign = self._sign()
        if isinstance(sign, int):
            return p if sign == 1 else 1.0 - p
        return (p - 0.5) * sign + 0.5

    def cdf(self, value):
        x = self._value(value, "cdf")
        for transform in reversed(self.transforms):
            x = transform.inv(x)
        return self._monotonized(self.base_dist.cdf(x))

    def icdf(self, value):
        p = self._probability(value, "icdf")
        return self._push(self.base_dist.icdf(self._monotonized(p)))

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.base_dist!r}, {self.transforms!r})"
