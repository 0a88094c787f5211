"""The base of every distribution: shapes, argument checks, and the shared helpers that turn
parameters into tensors and draw noise from lamina's generator.

Shapes follow PyTorch: a sample has shape ``sample_shape + batch_shape + event_shape``, where
``batch_shape`` indexes independent (not identically distributed) distributions and
``event_shape`` is the shape of one draw (() for scalar distributions); ``log_prob`` gives one
value per event.
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.distributions import constraints
from lamina.errors import ShapeError
from lamina.functional import broadcast_to, sqrt

VALIDATE_ARGS = True
"""Whether distributions check their parameters and the values given to them by default."""


def set_default_validate_args(value: bool) -> None:
    """Turn argument checking of new distributions on or off (on by default, as PyTorch)."""
    global VALIDATE_ARGS
    VALIDATE_ARGS = bool(value)


def _float_dtype(values):
    for v in values:
        if isinstance(v, Tensor) and v.dtype.kind == "f":
            return v.dtype
    for v in values:
        if isinstance(v, numpy.ndarray) and v.dtype.kind == "f":
            return v.dtype
    return backend.get_default_dtype()


def as_tensor(value, dtype) -> Tensor:
    """``value`` as a tensor: a tensor stays itself (on the graph); numbers and arrays become
    constants of ``dtype``."""
    if isinstance(value, Tensor):
        return value
    return Tensor._wrap(backend.xp.asarray(value, dtype=dtype))


def broadcast_parameters(*values) -> list[Tensor]:
    """The parameters as tensors of one floating dtype, broadcast to their common shape (by the
    broadcast_to op, so gradients reach each parameter summed over the broadcast axes)."""
    dtype = _float_dtype(values)
    tensors = [as_tensor(v, dtype) for v in values]
    tensors = [t if t.dtype.kind == "f" else Tensor._wrap(t.data.astype(dtype)) for t in tensors]
    try:
        shape = numpy.broadcast_shapes(*(t.shape for t in tensors))
    except ValueError:
        shapes = " and ".join(str(tuple(t.shape)) for t in tensors)
        raise ShapeError(f"distribution parameters of shapes {shapes} cannot be broadcast together") from None
    return [t if t.shape == shape else broadcast_to(t, shape) for t in tensors]


def _offending(x, ok, limit: int = 5) -> str:
    """The first few values of ``x`` where ``ok`` is False, with their positions."""
    x, ok = backend.to_numpy(x), backend.to_numpy(ok)
    bad = numpy.argwhere(~ok)                  # ok has fewer axes than x for a constraint on vectors
    shown = []
    for index in bad[:limit]:
        index = tuple(int(i) for i in index)
        values = numpy.ravel(x[index]).tolist()
        listed = ", ".join(f"{v:.6g}" for v in values)
        shown.append(f"{listed if x[index].ndim == 0 else '[' + listed + ']'} at {index}")
    more = f" and {len(bad) - limit} more" if len(bad) > limit else ""
    return ", ".join(shown) + more


class Distribution:
    """A batch of probability distributions of one family.

    Subclasses set ``arg_constraints`` (parameter name -> constraint), ``support`` and
    ``has_rsample``, and implement what they have in closed form among ``rsample``,
    ``log_prob``, ``entropy``, ``mean``, ``variance``, ``cdf`` and ``icdf``."""

    arg_constraints: dict = {}
    support: constraints.Constraint = constraints.real
    has_rsample = False
    has_enumerate_support = False

    def __init__(self, batch_shape=(), event_shape=(), validate_args: bool | None = None):
        self._batch_shape = tuple(batch_shape)
        self._event_shape = tuple(event_shape)
        self._validate_args = VALIDATE_ARGS if validate_args is None else bool(validate_args)
        given = [self.__dict__[name] for name in self.arg_constraints if name in self.__dict__]
        self._dtype = _float_dtype(given)
        if self._validate_args:
            for name, constraint in self.arg_constraints.items():
                if name in self.__dict__:        # only the parameters given (probs or logits)
                    self._check_argument(name, self.__dict__[name], constraint)

    # -- shapes ------------------------------------------------------------------------
    @property
    def batch_shape(self) -> tuple[int, ...]:
        return self._batch_shape

    @property
    def event_shape(self) -> tuple[int, ...]:
        return self._event_shape

    def _extended_shape(self, sample_shape=()) -> tuple[int, ...]:
        if isinstance(sample_shape, int):
            sample_shape = (sample_shape,)
        return tuple(sample_shape) + self._batch_shape + self._event_shape

    @property
    def dtype(self):
        """The floating dtype of the parameters, and of draws and log-probabilities."""
        return self._dtype

    def expand(self, batch_shape) -> Distribution:
        """The same distribution broadcast to the batch shape ``batch_shape`` (new axes on the
        left, axes of size 1 stretched), as PyTorch's ``expand``: every parameter tensor whose
        leading axes are the batch axes, and every inner distribution, is broadcast by the
        broadcast_to op, so gradients still reach the original parameters."""
        batch_shape = (batch_shape,) if isinstance(batch_shape, int) else tuple(batch_shape)
        try:
            fits = numpy.broadcast_shapes(self._batch_shape, batch_shape) == batch_shape
        except ValueError:
            fits = False
        if not fits:
            raise ShapeError(f"{type(self).__name__}.expand: batch_shape {self._batch_shape} cannot be broadcast "
                             f"to {batch_shape}")
        new = object.__new__(type(self))
        new.__dict__.update(self.__dict__)
        cut = len(self._batch_shape)
        for name, value in self.__dict__.items():
            if isinstance(value, Tensor) and tuple(value.shape[:cut]) == self._batch_shape:
                shape = batch_shape + tuple(value.shape[cut:])
                new.__dict__[name] = value if tuple(value.shape) == shape else broadcast_to(value, shape)
            elif isinstance(value, Distribution) and value.batch_shape[:cut] == self._batch_shape:
                new.__dict__[name] = value.expand(batch_shape + value.batch_shape[cut:])
        new._batch_shape = batch_shape
        return new

    def enumerate_support(self, expand: bool = True) -> Tensor:
        """Every value of a discrete support, along a new leading axis (shape (n,) + (1,) *
        len(batch_shape) + event_shape, or broadcast to (n,) + batch_shape + event_shape when
        ``expand``)."""
        raise NotImplementedError(f"{type(self).__name__} has no enumerable support (has_enumerate_support is "
                                  "False)")

    def _enumerated(self, values, expand: bool) -> Tensor:
        """``values`` (n,) + event_shape laid along a new leading axis in front of the batch axes."""
        n = values.shape[0]
        shaped = values.reshape((n,) + (1,) * len(self._batch_shape) + tuple(values.shape[1:]))
        if expand:
            shaped = backend.xp.ascontiguousarray(
                backend.xp.broadcast_to(shaped, (n,) + self._batch_shape + tuple(values.shape[1:])))
        return Tensor._wrap(shaped)

    # -- sampling ----------------------------------------------------------------------
    def sample(self, sample_shape=()) -> Tensor:
        """A draw of shape ``sample_shape + batch_shape + event_shape``, off the graph."""
        with no_grad():
            return self.rsample(sample_shape).detach()

    def rsample(self, sample_shape=()) -> Tensor:
        """A reparameterized draw: a differentiable function of the parameters and of noise
        from lamina's generator, so gradients flow to the parameters."""
        raise NotImplementedError(f"{type(self).__name__} has no reparameterized sample (rsample); "
                                  "use sample(), which gives no gradient")

    def _noise(self, kind: str, sample_shape=(), **kwargs):
        """An array of ``kind`` noise ('standard_normal', 'random', ...) from lamina's generator,
        shaped like a draw, in the distribution's dtype."""
        values = getattr(backend.rng(), kind)(size=self._extended_shape(sample_shape), **kwargs)
        return backend.xp.asarray(numpy.asarray(values, dtype=self.dtype))

    # -- statistics ----------------------------------------------------------------------
    def _missing(self, what: str):
        return NotImplementedError(f"{type(self).__name__}.{what} is not implemented (no closed form)")

    def log_prob(self, value) -> Tensor:
        raise self._missing("log_prob")

    def entropy(self) -> Tensor:
        raise self._missing("entropy")

    def cdf(self, value) -> Tensor:
        raise self._missing("cdf")

    def icdf(self, value) -> Tensor:
        raise self._missing("icdf")

    @property
    def mean(self) -> Tensor:
        raise self._missing("mean")

    @property
    def variance(self) -> Tensor:
        raise self._missing("variance")

    @property
    def stddev(self) -> Tensor:
        return sqrt(self.variance)

    def perplexity(self) -> Tensor:
        return self.entropy().exp()

    # -- argument checks ---------------------------------------------------------------
    def _check_argument(self, name: str, value, constraint) -> None:
        data = value.data if isinstance(value, Tensor) else backend.xp.asarray(value)
        ok = constraint.check(data)
        if not bool(ok.all()):
            raise ValueError(f"{type(self).__name__}: argument {name} must be {constraint.description}; got "
                             f"{_offending(data, ok)} ({name} of shape {tuple(data.shape)})")

    def _value(self, value, method: str, support=None) -> Tensor:
        """``value`` as a tensor in the distribution's dtype, checked (when validating) to
        broadcast with the batch and event shapes and to lie in the support."""
        value = as_tensor(value, self.dtype)
        if not self._validate_args:
            return value
        expected = self._batch_shape + self._event_shape
        try:
            numpy.broadcast_shapes(tuple(value.shape), expected)
        except ValueError:
            raise ShapeError(f"{type(self).__name__}.{method}: value of shape {tuple(value.shape)} does not "
                             f"broadcast with batch_shape + event_shape = {expected}") from None
        event_dims = len(self._event_shape)
        if event_dims and tuple(value.shape[value.ndim - event_dims:]) != self._event_shape:
            raise ShapeError(f"{type(self).__name__}.{method}: value of shape {tuple(value.shape)} must end with "
                             f"the event shape {self._event_shape}")
        support = self.support if support is None else support
        ok = support.check(value.data)
        if not bool(ok.all()):
            raise ValueError(f"{type(self).__name__}.{method}: value must be {support.description} (the "
                             f"support); got {_offending(value.data, ok)} (value of shape {tuple(value.shape)})")
        return value

    def _probability(self, value, method: str) -> Tensor:
        return self._value(value, method, support=constraints.unit_interval)

    def __repr__(self) -> str:
        shown = ", ".join(f"{name}: shape {tuple(getattr(self, name).shape)}" for name in self.arg_constraints
                          if name in self.__dict__)
        return f"{type(self).__name__}({shown})"

    @property
    def mode(self) -> Tensor:
        """The most probable value (the argmax of the density), as torch's ``mode``."""
        raise self._missing("mode")


class _LocationScale(Distribution):
    """A family with a real location ``loc`` and a positive ``scale`` (broadcast together, the
    batch shape theirs) on the reals, with reparameterized samples."""

    arg_constraints = {"loc": constraints.real, "scale": constraints.positive}
    support = constraints.real
    has_rsample = True

    def __init__(self, loc, scale, validate_args: bool | None = None):
        self.loc, self.scale = broadcast_parameters(loc, scale)
        super().__init__(self.loc.shape, validate_args=validate_args)

    @property
    def mode(self) -> Tensor:
        """The most probable value: ``loc``."""
        return self.loc


class _HalfScale(Distribution):
    """A law of |X| for X centred at 0 with a positive ``scale`` (the batch shape its), on
    [0, inf), with reparameterized samples."""

    arg_constraints = {"scale": constraints.positive}
    support = constraints.nonnegative
    has_rsample = True

    def __init__(self, scale, validate_args: bool | None = None):
        (self.scale,) = broadcast_parameters(scale)
        super().__init__(self.scale.shape, validate_args=validate_args)

    @property
    def mode(self) -> Tensor:
        """The most probable value: 0."""
        return Tensor._wrap(backend.xp.zeros(self.scale.shape, dtype=self.scale.dtype))
