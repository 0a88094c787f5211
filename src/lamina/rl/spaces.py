"""Observation and action spaces with Gymnasium's interface: ``sample()``, ``contains(x)`` and
``seed(seed)``, each space drawing from its own NumPy generator."""

from __future__ import annotations

import numpy

from lamina import backend


def seeded_generator(seed: int | None) -> numpy.random.Generator:
    """A generator seeded with ``seed``, or from lamina's generator when ``seed`` is None (so that
    ``lamina.manual_seed`` makes unseeded runs reproducible)."""
    if seed is None:
        seed = int(backend.rng().integers(2**63))
    return numpy.random.default_rng(seed)


class Space:
    """A set of values an environment accepts or returns."""

    shape: tuple[int, ...]
    dtype: numpy.dtype

    def __init__(self):
        self._rng: numpy.random.Generator | None = None

    @property
    def np_random(self) -> numpy.random.Generator:
        if self._rng is None:
            self._rng = seeded_generator(None)
        return self._rng

    def seed(self, seed: int | None = None) -> None:
        """Restart the space's generator from ``seed``."""
        self._rng = seeded_generator(seed)

    def sample(self):
        raise NotImplementedError

    def contains(self, x) -> bool:
        raise NotImplementedError

    def __contains__(self, x) -> bool:
        return self.contains(x)


class Discrete(Space):
    """The integers ``start, start + 1, ..., start + n - 1``."""

    def __init__(self, n: int, start: int = 0):
        super().__init__()
        if isinstance(n, bool) or not isinstance(n, (int, numpy.integer)) or n < 1:
            raise ValueError(f"Discrete: n must be a positive int, got {n!r}")
        self.n, self.start = int(n), int(start)
        self.shape, self.dtype = (), numpy.dtype(numpy.int64)

    def sample(self) -> int:
        return self.start + int(self.np_random.integers(self.n))

    def contains(self, x) -> bool:
        if isinstance(x, numpy.ndarray):
            if x.shape != () or x.dtype.kind not in "iu":
                return False
            x = int(x)
        return isinstance(x, (int, numpy.integer)) and self.start <= x < self.start + self.n

    def __repr__(self) -> str:
        return f"Discrete({self.n})" if self.start == 0 else f"Discrete({self.n}, start={self.start})"


class Box(Space):
    """The box ``low <= x <= high`` of arrays of one shape; bounds may be infinite.

    ``sample`` draws uniformly on bounded axes, from N(0, 1) on unbounded ones and from a shifted
    exponential on axes bounded on one side (as Gymnasium does)."""

    def __init__(self, low, high, shape: tuple[int, ...] | None = None, dtype=numpy.float32):
        super().__init__()
        self.dtype = numpy.dtype(dtype)
        if shape is None:
            shape = numpy.broadcast_shapes(numpy.shape(low), numpy.shape(high))
        self.shape = tuple(int(s) for s in shape)
        self.low = numpy.broadcast_to(numpy.asarray(low, dtype=self.dtype), self.shape).copy()
        self.high = numpy.broadcast_to(numpy.asarray(high, dtype=self.dtype), self.shape).copy()
        if numpy.any(self.low > self.high):
            raise ValueError(f"Box: low {self.low} exceeds high {self.high} somewhere")

    def sample(self) -> numpy.ndarray:
        rng = self.np_random
        low, high = self.low.astype(numpy.float64), self.high.astype(numpy.float64)
        below, above = numpy.isfinite(low), numpy.isfinite(high)
        out = rng.standard_normal(self.shape)
        both = below & above
        out[both] = rng.uniform(low[both], high[both])
        only_low = below & ~above
        out[only_low] = low[only_low] + rng.exponential(size=int(only_low.sum()))
        only_high = above & ~below
        out[only_high] = high[only_high] - rng.exponential(size=int(only_high.sum()))
        return out.astype(self.dtype)

    def contains(self, x) -> bool:
        x = numpy.asarray(x)
        return x.shape == self.shape and bool(numpy.all((x >= self.low) & (x <= self.high)))

    def __repr__(self) -> str:
        return f"Box({self.low.min()}, {self.high.max()}, {self.shape}, {self.dtype})"
