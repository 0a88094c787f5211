"""Modified backward rules for attribution methods, set on lamina's primitive ops for the
length of a ``with`` block.

An attribution method that is "back propagation with another local rule" (guided
backprop, deconvnet, DeepLIFT) runs the ordinary forward pass and the ordinary backward
pass, with the backward of a few primitive ops replaced. The replacement is made on the
op's :class:`~lamina.autograd.Function` class, so it reaches every caller: ReLU layers,
``F.relu`` and the ``activation='relu'`` of Dense and Conv2D layers alike. The original
methods come back when the block ends, also when it raises.

* guided backprop (Springenberg et al., 2015): ReLU passes dy where z > 0 and dy > 0;
* deconvnet (Zeiler & Fergus, 2014): ReLU passes max(dy, 0), whatever z was;
* DeepLIFT's Rescale rule (Shrikumar et al., 2017): the forward runs on the batch
  [x; x0] (inputs, then their references); an elementwise nonlinearity y = f(z) passes
  dy * (y - y0) / (z - z0) on the inputs' rows, or its gradient dy f'(z) where
  |z - z0| < eps; max pooling sends dy (y - y0) to a window's maximum (the input's, or
  the reference's where the input's did not change) and divides by (z - z0) there.
  Linear ops keep their gradient, so the product of multipliers along the graph gives
  sum_i m_i (x_i - x0_i) = S(x) - S(x0) (summation-to-delta).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from lamina import backend
from lamina.autograd import Function
from lamina.functional.activation import ELU, LeakyReLU, ReLU, Sigmoid, Tanh
from lamina.functional.pooling import MaxPool2d, _read_maxima
from lamina.nn.activation import ReLU6Function

__all__ = ["ELEMENTWISE_NONLINEAR_OPS", "deeplift_rescale_rules", "overridden_methods", "relu_backward_rule"]

#: The one-input elementwise primitive ops DeepLIFT's Rescale rule is applied to.
ELEMENTWISE_NONLINEAR_OPS: tuple[type[Function], ...] = (ReLU, LeakyReLU, ELU, Sigmoid, Tanh, ReLU6Function)

RELU_RULES = ("guided", "deconvnet")


@contextlib.contextmanager
def overridden_methods(replacements: dict[type, dict[str, Callable]]) -> Iterator[None]:
    """Within the block, ``cls.name`` is ``method`` for each ``{cls: {name: method}}``; the
    classes' own attributes come back on exit (also on an exception)."""
    missing = object()
    saved = [(cls, name, cls.__dict__.get(name, missing)) for cls, methods in replacements.items() for name in methods]
    try:
        for cls, methods in replacements.items():
            for name, method in methods.items():
                setattr(cls, name, method)
        yield
    finally:
        for cls, name, original in saved:
            if original is missing:
                delattr(cls, name)
            else:
                setattr(cls, name, original)


def relu_backward_rule(rule: str):
    """A context manager under which ReLU's backward follows ``rule``: 'guided'
    (dy [z > 0] [dy > 0]) or 'deconvnet' (max(dy, 0))."""
    if rule not in RELU_RULES:
        raise ValueError(f"relu_backward_rule: rule must be one of {RELU_RULES}, got {rule!r}")
    xp = backend.xp

    def guided(self, dy):
        return (dy * ((self.a > 0) & (dy > 0)),)

    def deconvnet(self, dy):
        return (xp.maximum(dy, 0),)

    return overridden_methods({ReLU: {"backward": guided if rule == "guided" else deconvnet}})


def _safe_ratio(numerator, denominator, eps: float):
    """(numerator / denominator, mask |denominator| >= eps); 0 where the mask is False."""
    xp = backend.xp
    usable = xp.abs(denominator) >= eps
    return xp.where(usable, numerator / xp.where(usable, denominator, 1), 0), usable


def _remembering_forward(cls: type[Function]):
    """cls.forward that also keeps a copy of its input (in-place ops overwrite it) and its output."""
    original = cls.forward

    def forward(self, z):
        self._rescale_in = z.copy()
        out = original(self, z)
        self._rescale_out = out
        return out

    return forward


def _rescale_backward(cls: type[Function], inputs: int, eps: float):
    """Backward of an elementwise op: the secant slope (y - y0) / (z - z0) on the first
    ``inputs`` rows, the op's own derivative where z ~ z0 and on the reference rows."""
    original = cls.backward
    xp = backend.xp

    def backward(self, dy):
        derivative = original(self, dy.copy())[0]
        z, y = self._rescale_in, self._rescale_out
        if z.ndim == 0 or z.shape[0] != 2 * inputs:
            return (derivative,)
        slope, usable = _safe_ratio(y[:inputs] - y[inputs:], z[:inputs] - z[inputs:], eps)
        top = xp.where(usable, dy[:inputs] * slope, derivative[:inputs])
        return (xp.concatenate([top, derivative[inputs:]]),)

    return backward


def _max_pool_backward(inputs: int, eps: float):
    """Backward of max pooling: each window's dy (y - y0) is sent to the input's maximum p,
    divided by z_p - z0_p there; where that difference is ~0 (y = z_p = z0_p < y0), to the
    reference's maximum q instead, divided by z_q - z0_q; and where both are ~0 (then
    y ~ y0), dy goes to p as the gradient does. The multipliers times z - z0 sum to
    dy (y - y0) over the windows exactly."""
    original = MaxPool2d.backward
    xp = backend.xp

    def backward(self, dy):
        derivative = original(self, dy.copy())[0]
        z, y = self._rescale_in, self._rescale_out
        if z.shape[0] != 2 * inputs:
            return (derivative,)
        top, bottom = slice(None, inputs), slice(inputs, None)
        swapped_maxima = _read_maxima(self, xp.concatenate([z[bottom], z[top]]))
        change = dy[top] * (y[top] - y[bottom])
        at_input_max, use_input_max = _safe_ratio(change, y[top] - swapped_maxima[top], eps)
        at_reference_max, use_reference_max = _safe_ratio(change, swapped_maxima[bottom] - y[bottom], eps)
        use_reference_max &= ~use_input_max
        fallback = ~(use_input_max | use_reference_max)
        spread = xp.zeros_like(dy)
        spread[top] = at_input_max + fallback * dy[top]
        multipliers = original(self, spread)[0][top]
        spread[top] = 0
        spread[bottom] = use_reference_max * at_reference_max
        multipliers += original(self, spread)[0][bottom]
        return (xp.concatenate([multipliers, derivative[bottom]]),)

    return backward


def deeplift_rescale_rules(inputs: int, eps: float = 1e-10):
    """A context manager under which the ops of :data:`ELEMENTWISE_NONLINEAR_OPS` and max
    pooling back-propagate DeepLIFT multipliers (module docstring) for a forward pass on
    the batch [x; x0] of 2 ``inputs`` rows."""
    replacements: dict[type, dict[str, Callable]] = {
        cls: {"forward": _remembering_forward(cls), "backward": _rescale_backward(cls, inputs, eps)}
        for cls in ELEMENTWISE_NONLINEAR_OPS
    }
    replacements[MaxPool2d] = {"forward": _remembering_forward(MaxPool2d),
                               "backward": _max_pool_backward(inputs, eps)}
    return overridden_methods(replacements)
