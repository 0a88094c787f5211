"""Spike functions with surrogate gradients, for training spiking networks by backpropagation.

A spiking neuron fires when its membrane potential U crosses the threshold: the spike is the
Heaviside step S = H(U) of the shifted potential U = mem - threshold (S = 1 where U > 0, else
0, as snnTorch). Its true derivative is 0 almost everywhere, which would stop every gradient,
so the backward pass uses the derivative of a smooth stand-in instead (the surrogate):

    forward   S = H(U)
    backward  dJ/dU = dJ/dS * g(U)

with g one of

- fast sigmoid (Zenke and Ganguli's SuperSpike; snnTorch ``fast_sigmoid``, slope k = 25):
  g(U) = 1 / (k |U| + 1)^2
- arctan (SpikingJelly's ``ATan``; snnTorch's default neuron surrogate, alpha = 2):
  g(U) = (alpha / 2) / (1 + (pi/2 alpha U)^2)
- sigmoid (slope k = 25): g(U) = k sigma(k U) (1 - sigma(k U))
- straight-through: g(U) = 1 (the gradient passes unchanged)
- triangular (width w = 1): g(U) = max(0, 1 - |U| / w) / w, a triangle of area 1 (Bellec et
  al.'s pseudo-derivative; snnTorch's ``Triangular`` is a different, sign-flipping rule)

Second derivatives: each backward is recorded with tensor ops when a graph of the gradient is
asked for (``grad(..., create_graph=True)``), so the derivative of a gradient through a spike
is the derivative of the surrogate's backward dJ/dS g(U): dg/dU times dJ/dS with respect to U,
and g(U) with respect to dJ/dS. It is that of the surrogate, not of the step (whose second
derivative is 0 almost everywhere as well).

Each surrogate is a Function with a snake_case wrapper (``spike_atan(u, alpha=2.0)``), and
:func:`surrogate` makes a callable ``u -> spikes`` with its options bound, which the neuron
layers of :mod:`lamina.nn.spiking` take as ``spike_grad`` (snnTorch's
``surrogate.fast_sigmoid(slope=25)``).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.functional.activation import sigmoid, stable_sigmoid
from lamina.functional.elementwise import abs as tensor_abs
from lamina.functional.elementwise import clip

__all__ = [
    "SURROGATES", "Surrogate", "spike_atan", "spike_fast_sigmoid", "spike_sigmoid", "spike_straight_through",
    "spike_triangular", "surrogate",
]


class SurrogateSpike(Function):
    """S = H(U) (1 where U > 0) forward; dJ/dU = dJ/dS g(U) backward, g given by a subclass
    twice: :meth:`slope` on arrays (the backward) and :meth:`slope_graph` on tensors (the
    recorded backward, for second derivatives)."""

    def forward(self, u):
        self.u = u
        return (u > 0).astype(u.dtype)

    def backward(self, dy):
        g = self.slope(self.u)
        g *= dy
        return (g,)

    def backward_graph(self, dy: Tensor) -> tuple:
        return (dy * self.slope_graph(self.inputs[0]),)

    def slope(self, u):
        raise NotImplementedError

    def slope_graph(self, u: Tensor) -> Tensor:
        raise NotImplementedError


class FastSigmoidSpike(SurrogateSpike):
    """g(U) = 1 / (k |U| + 1)^2, k = ``slope``: the derivative of the fast sigmoid U / (1 + k |U|)."""

    def slope(self, u):
        g = backend.xp.abs(u)
        g *= self.k
        g += 1
        g *= g
        return backend.xp.reciprocal(g, out=g)

    def slope_graph(self, u):
        root = tensor_abs(u) * self.k + 1
        return 1 / (root * root)


class ATanSpike(SurrogateSpike):
    """g(U) = (alpha / 2) / (1 + (pi/2 alpha U)^2): the derivative of arctan(pi/2 alpha U) / pi + 1/2."""

    def slope(self, u):
        z = u * (math.pi / 2 * self.alpha)
        z *= z
        z += 1
        return backend.xp.divide(self.alpha / 2, z, out=z)

    def slope_graph(self, u):
        z = u * (math.pi / 2 * self.alpha)
        return (self.alpha / 2) / (z * z + 1)


class SigmoidSpike(SurrogateSpike):
    """g(U) = k sigma(k U) (1 - sigma(k U)), k = ``slope``: the derivative of sigma(k U)."""

    def slope(self, u):
        s = stable_sigmoid(u * self.k)
        g = 1 - s
        g *= s
        g *= self.k
        return g

    def slope_graph(self, u):
        s = sigmoid(u * self.k)
        return (s - s * s) * self.k


class StraightThroughSpike(SurrogateSpike):
    """g(U) = 1: the step forward, the identity backward."""

    def backward(self, dy):
        return (dy,)

    def backward_graph(self, dy):
        return (dy,)


class TriangularSpike(SurrogateSpike):
    """g(U) = max(0, 1 - |U| / w) / w, w = ``width``: a triangle of area 1 on [-w, w]."""

    def slope(self, u):
        g = backend.xp.abs(u)
        g *= -1 / self.width
        g += 1
        backend.xp.maximum(g, 0, out=g)
        g *= 1 / self.width
        return g

    def slope_graph(self, u):
        return clip(1 - tensor_abs(u) * (1 / self.width), 0, None) * (1 / self.width)


def _positive(value, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0 or not math.isfinite(value):
        raise ValueError(f"{what} must be a positive finite number, got {value!r}")
    return float(value)


def spike_fast_sigmoid(u, slope: float = 25.0) -> Tensor:
    """H(u) forward; the fast sigmoid's 1 / (slope |u| + 1)^2 as its derivative."""
    return FastSigmoidSpike.apply(u, k=_positive(slope, "spike_fast_sigmoid: slope"))


def spike_atan(u, alpha: float = 2.0) -> Tensor:
    """H(u) forward; (alpha / 2) / (1 + (pi/2 alpha u)^2) as its derivative."""
    return ATanSpike.apply(u, alpha=_positive(alpha, "spike_atan: alpha"))


def spike_sigmoid(u, slope: float = 25.0) -> Tensor:
    """H(u) forward; slope sigma(slope u) (1 - sigma(slope u)) as its derivative."""
    return SigmoidSpike.apply(u, k=_positive(slope, "spike_sigmoid: slope"))


def spike_straight_through(u) -> Tensor:
    """H(u) forward; 1 as its derivative (the gradient passes unchanged)."""
    return StraightThroughSpike.apply(u)


def spike_triangular(u, width: float = 1.0) -> Tensor:
    """H(u) forward; max(0, 1 - |u| / width) / width as its derivative."""
    return TriangularSpike.apply(u, width=_positive(width, "spike_triangular: width"))


# name -> (wrapper, its option names with their defaults)
_TABLE: dict[str, tuple[Callable, dict[str, float]]] = {
    "fast_sigmoid": (spike_fast_sigmoid, {"slope": 25.0}),
    "atan": (spike_atan, {"alpha": 2.0}),
    "sigmoid": (spike_sigmoid, {"slope": 25.0}),
    "straight_through": (spike_straight_through, {}),
    "triangular": (spike_triangular, {"width": 1.0}),
}
SURROGATES: tuple[str, ...] = tuple(_TABLE)
"""The names :func:`surrogate` knows."""


class Surrogate:
    """A spike function ``u -> H(u)`` with one surrogate gradient and its options bound;
    made by :func:`surrogate`. ``get_config()`` gives ``{"name": ..., **options}``, which
    :func:`surrogate` (``surrogate(**config)``) turns back into the same function."""

    def __init__(self, name: str, **options):
        if name not in _TABLE:
            raise ValueError(f"surrogate: unknown surrogate {name!r}; expected one of {SURROGATES}")
        wrapper, defaults = _TABLE[name]
        unknown = sorted(set(options) - set(defaults))
        if unknown:
            raise ValueError(f"surrogate({name!r}): unknown option(s) {unknown}; it takes {sorted(defaults) or 'none'}")
        self.name = name
        self.options = {**defaults, **{key: float(value) for key, value in options.items()}}
        self._wrapper = wrapper
        wrapper(backend.xp.zeros(1), **self.options)     # checks the options now, not at the first step

    def __call__(self, u) -> Tensor:
        return self._wrapper(u, **self.options)

    def get_config(self) -> dict:
        return {"name": self.name, **self.options}

    def __eq__(self, other) -> bool:
        return isinstance(other, Surrogate) and other.get_config() == self.get_config()

    def __hash__(self) -> int:
        return hash((self.name, tuple(sorted(self.options.items()))))

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value:g}" for key, value in self.options.items())
        return f"surrogate({self.name!r}{', ' if options else ''}{options})"


def surrogate(name: str = "atan", **options) -> Surrogate:
    """The spike function with the surrogate gradient ``name`` (one of :data:`SURROGATES`)
    and its options: ``surrogate("fast_sigmoid", slope=25)``, ``surrogate("atan", alpha=2)``,
    ``surrogate("sigmoid", slope=25)``, ``surrogate("straight_through")``,
    ``surrogate("triangular", width=1)``."""
    return Surrogate(name, **options)
