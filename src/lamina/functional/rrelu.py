"""Randomized leaky ReLU (Xu et al. 2015), as PyTorch's ``F.rrelu``:

    y = x            where x > 0
    y = a x          where x <= 0,

with a drawn uniformly from [lower, upper] for every element in training, and the mean slope
a = (lower + upper) / 2 in evaluation. Given the slopes, y is linear in x (a product with a
constant), so dJ/dx = dJ/dy times the slope actually used (a at x = 0, as PyTorch's and
:func:`lamina.functional.leaky_relu`'s) and every higher derivative is 0.
The slopes come from :func:`lamina.backend.rng` (seed it with ``lamina.manual_seed``).
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor

__all__ = ["rrelu", "rrelu_slopes"]


def _check_bounds(lower: float, upper: float) -> tuple[float, float]:
    lower, upper = float(lower), float(upper)
    if not 0.0 <= lower <= upper:
        raise ValueError(f"rrelu: expected 0 <= lower <= upper, got lower={lower}, upper={upper}")
    return lower, upper


def rrelu_slopes(x: Tensor, lower: float = 1.0 / 8, upper: float = 1.0 / 3, training: bool = False):
    """The multiplier of every element of x: 1 where x > 0, else (x <= 0) the random
    (training) or mean (evaluation) slope."""
    lower, upper = _check_bounds(lower, upper)
    xp = backend.xp
    values = x.data if isinstance(x, Tensor) else xp.asarray(x)
    if training:
        slopes = backend.rng().uniform(lower, upper, size=values.shape).astype(values.dtype)
    else:
        slopes = xp.full(values.shape, (lower + upper) / 2, dtype=values.dtype)
    return xp.where(values > 0, xp.ones((), dtype=values.dtype), slopes)


def rrelu(x: Tensor, lower: float = 1.0 / 8, upper: float = 1.0 / 3, training: bool = False) -> Tensor:
    """y = x where x > 0, else a x with a ~ U(lower, upper) per element in training and
    a = (lower + upper) / 2 otherwise (PyTorch's defaults lower = 1/8, upper = 1/3)."""
    return x * rrelu_slopes(x, lower, upper, training)
