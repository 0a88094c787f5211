"""Supports and parameter domains: each constraint checks an array element-wise (or per event,
for constraints on vectors) and says in words what it expects, for the error messages."""

from __future__ import annotations

from lamina import backend

SIMPLEX_TOLERANCE = 1e-6
"""How far a probability vector's sum may be from 1 (PyTorch's tolerance)."""


class Constraint:
    """A set of values: ``check(x)`` is a boolean array, one entry per value (per vector of the
    last ``event_dim`` axes when those form one value)."""

    description = "any value"
    event_dim = 0
    is_discrete = False

    def check(self, x):
        return backend.xp.ones(x.shape, dtype=bool)

    def __repr__(self) -> str:
        return self.description


class _Real(Constraint):
    description = "a real number (not NaN)"

    def check(self, x):
        return x == x


class _GreaterThan(Constraint):
    def __init__(self, lower: float, strict: bool = True):
        self.lower, self.strict = lower, strict
        self.description = f"{'>' if strict else '>='} {lower:g}"

    def check(self, x):
        return x > self.lower if self.strict else x >= self.lower


class Interval(Constraint):
    """low <= x <= high (the bounds may be arrays, as a Uniform's)."""

    def __init__(self, low, high, description: str | None = None):
        self.low, self.high = low, high
        self.description = description or f"in [{low:g}, {high:g}]"

    def check(self, x):
        return (x >= self.low) & (x <= self.high)


class _Boolean(Constraint):
    description = "0 or 1"
    is_discrete = True

    def check(self, x):
        return (x == 0) | (x == 1)


class _NonNegativeInteger(Constraint):
    description = "a whole number >= 0"
    is_discrete = True

    def check(self, x):
        return (x >= 0) & (x == backend.xp.floor(x))


class IntegerInterval(Constraint):
    """A whole number in [low, high] (a category index)."""

    is_discrete = True

    def __init__(self, low: int, high: int):
        self.low, self.high = low, high
        self.description = f"a whole number in [{low}, {high}]"

    def check(self, x):
        return (x >= self.low) & (x <= self.high) & (x == backend.xp.floor(x))


class _Simplex(Constraint):
    description = "a probability vector (entries >= 0 summing to 1 along the last axis)"
    event_dim = 1

    def check(self, x):
        return (x >= 0).all(axis=-1) & (backend.xp.abs(x.sum(axis=-1) - 1) < SIMPLEX_TOLERANCE)


class _OneHot(Constraint):
    description = "a one-hot vector (0s and a single 1 along the last axis)"
    event_dim = 1
    is_discrete = True

    def check(self, x):
        return ((x == 0) | (x == 1)).all(axis=-1) & (x.sum(axis=-1) == 1)


class IndependentConstraint(Constraint):
    """``base`` holding for every value of the last ``extra_dims`` axes taken together."""

    def __init__(self, base: Constraint, extra_dims: int):
        self.base, self.extra_dims = base, extra_dims
        self.event_dim = base.event_dim + extra_dims
        self.is_discrete = base.is_discrete
        self.description = base.description

    def check(self, x):
        ok = self.base.check(x)
        return ok.all(axis=tuple(range(-self.extra_dims, 0))) if self.extra_dims else ok


real = _Real()
positive = _GreaterThan(0.0)
nonnegative = _GreaterThan(0.0, strict=False)
unit_interval = Interval(0.0, 1.0)
boolean = _Boolean()
nonnegative_integer = _NonNegativeInteger()
simplex = _Simplex()
one_hot = _OneHot()
real_vector = IndependentConstraint(real, 1)
