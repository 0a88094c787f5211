"""Small waveform effects, as torchaudio: pre-emphasis, de-emphasis and fades.

    preemphasis   y[i] = x[i] - c x[i - 1]      (y[0] = x[0])
    deemphasis    y[i] = x[i] + c y[i - 1]      (y[0] = x[0]; its inverse), clamped to [-1, 1]
                  as torchaudio's ``lfilter`` does by default
    fade          y = x (.) in (.) out, in rising over the first ``fade_in_len`` samples and out
                  falling over the last ``fade_out_len``, with f = linspace(0, 1, len) and

        shape          fade in                     fade out
        linear         f                           1 - f
        exponential    2^(f - 1) f                 2^-f (1 - f)
        logarithmic    log10(0.1 + f) + 1          log10(1.1 - f) + 1
        quarter_sine   sin(pi f / 2)               sin(pi f / 2 + pi / 2)
        half_sine      sin(pi f - pi / 2) / 2 + 1/2    sin(pi f + pi / 2) / 2 + 1/2

    (each clamped to [0, 1]). All act on the last axis of (..., time) and are differentiable.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional import elementwise, shape

__all__ = ["FADE_SHAPES", "deemphasis", "fade", "fade_envelope", "preemphasis"]

FADE_SHAPES = ("linear", "exponential", "logarithmic", "quarter_sine", "half_sine")


def _waveform(x, op: str) -> Tensor:
    x = x if isinstance(x, Tensor) else Tensor._constant(x, None)
    if x.ndim < 1 or x.dtype.kind != "f":
        raise ShapeError(f"{op}: expected a float waveform (..., time), got shape {tuple(x.shape)} and dtype {x.dtype}")
    return x


def preemphasis(waveform, coeff: float = 0.97) -> Tensor:
    """y[i] = x[i] - coeff x[i - 1], y[0] = x[0] (``torchaudio.functional.preemphasis``)."""
    x = _waveform(waveform, "preemphasis")
    if x.shape[-1] < 2:
        return x
    return shape.concat([x[..., :1], x[..., 1:] - coeff * x[..., :-1]], axis=-1)


class FirstOrderRecursion(Function):
    """y[i] = x[i] + c y[i - 1] along the last axis (linear in x). Its adjoint runs the same
    recursion backwards in time: g[i] = dy[i] + c g[i + 1]."""

    @staticmethod
    def _run(values, coeff: float, reverse: bool):
        import scipy.signal

        data = backend.to_numpy(values)
        if reverse:
            data = data[..., ::-1]
        out = scipy.signal.lfilter([1.0], [1.0, -coeff], data, axis=-1)
        if reverse:
            out = out[..., ::-1]
        return backend.xp.asarray(out.astype(values.dtype, copy=False))

    def forward(self, x):
        return self._run(x, self.coeff, reverse=False)

    def backward(self, dy):
        return (self._run(dy, self.coeff, reverse=True),)

    backward_graph = Function.linear_backward_graph


def deemphasis(waveform, coeff: float = 0.97, clamp: bool = True) -> Tensor:
    """y[i] = x[i] + coeff y[i - 1] (the inverse of :func:`preemphasis`), clamped to [-1, 1]
    when ``clamp`` as ``torchaudio.functional.deemphasis`` (through ``lfilter``'s default)."""
    x = _waveform(waveform, "deemphasis")
    y = FirstOrderRecursion.apply(x, coeff=float(coeff))
    return elementwise.clip(y, -1.0, 1.0) if clamp else y


def fade_envelope(length: int, fade_in_len: int = 0, fade_out_len: int = 0, fade_shape: str = "linear",
                  dtype=None) -> Tensor:
    """The gain (length,) of :func:`fade`: fade-in times fade-out (module docstring)."""
    if fade_shape not in FADE_SHAPES:
        raise ValueError(f"fade: fade_shape must be one of {FADE_SHAPES}, got {fade_shape!r}")
    for name, value in (("fade_in_len", fade_in_len), ("fade_out_len", fade_out_len)):
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= length:
            raise ValueError(f"fade: {name} must be an int in [0, {length}] (the waveform's length), got {value!r}")
    xp = backend.xp
    rising = xp.linspace(0.0, 1.0, fade_in_len)
    falling = xp.linspace(0.0, 1.0, fade_out_len)
    if fade_shape == "linear":
        falling = 1.0 - falling
    elif fade_shape == "exponential":
        rising, falling = 2.0 ** (rising - 1.0) * rising, 2.0 ** -falling * (1.0 - falling)
    elif fade_shape == "logarithmic":
        rising, falling = xp.log10(0.1 + rising) + 1.0, xp.log10(1.1 - falling) + 1.0
    elif fade_shape == "quarter_sine":
        rising, falling = xp.sin(rising * math.pi / 2), xp.sin(falling * math.pi / 2 + math.pi / 2)
    else:
        rising = xp.sin(rising * math.pi - math.pi / 2) / 2 + 0.5
        falling = xp.sin(falling * math.pi + math.pi / 2) / 2 + 0.5
    gain = xp.ones(length)
    gain[:fade_in_len] = xp.clip(rising, 0.0, 1.0)
    if fade_out_len:
        gain[length - fade_out_len:] *= xp.clip(falling, 0.0, 1.0)
    dtype = backend.get_default_dtype() if dtype is None else dtype
    return Tensor._wrap(gain.astype(dtype))


def fade(waveform, fade_in_len: int = 0, fade_out_len: int = 0, fade_shape: str = "linear") -> Tensor:
    """The waveform (..., time) faded in over ``fade_in_len`` and out over ``fade_out_len``
    samples with ``fade_shape`` (``torchaudio.transforms.Fade``)."""
    x = _waveform(waveform, "fade")
    return x * fade_envelope(x.shape[-1], fade_in_len, fade_out_len, fade_shape, dtype=x.dtype)
