"""Fake quantization: a value rounded to the grid of a quantization and back, in float, for
quantization-aware training.

For a scale s, zero point z and integer range [q_min, q_max]:

    q = round_half_even(x · (1 / s)) + z,      y = (clamp(q, q_min, q_max) - z) · s

computed as PyTorch's ``fake_quantize_per_tensor_affine`` / ``fake_quantize_per_channel_affine``
do on the CPU (the inverse scale 1 / s formed in float32, the product in the input's precision),
so that the values are the same bit for bit. The gradient is the straight-through estimator:
dy/dx = 1 where q lies in [q_min, q_max] and 0 where it was clamped; nothing flows to s or z.
The gradient is a fixed mask times dy, so second derivatives with respect to x are zero.

:func:`fake_quantize_learnable_per_tensor` also learns s and z (LSQ, Esser et al. 2020, as
PyTorch's ``_fake_quantize_learnable_per_tensor_affine``): inside the range
dy/ds = (y - x) / s and dy/dz = 0; below it dy/ds = q_min - z and dy/dz = -s; above it
dy/ds = q_max - z and dy/dz = -s; both scaled by ``grad_factor``. It has first derivatives
only (as PyTorch's).
"""

from __future__ import annotations

import numbers

import numpy

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError

__all__ = ["fake_quantize_learnable_per_tensor", "fake_quantize_per_channel", "fake_quantize_per_tensor"]


def _grid(x, scale, zero_point, quant_min: int, quant_max: int, float32_product: bool = True):
    """(y, mask): the fake-quantized values and where q was inside [q_min, q_max].
    ``scale`` (float32) and ``zero_point`` (int64) broadcast against ``x``; the final product
    (q - z) s is rounded to float32 (PyTorch's per-tensor kernel, whatever the input's type)
    or formed in the input's precision (its per-channel kernel)."""
    xp = backend.xp
    inverse = (numpy.float32(1) / scale).astype(x.dtype)
    q = xp.rint(x * inverse) + zero_point.astype(x.dtype)
    mask = (q >= quant_min) & (q <= quant_max)
    product_dtype = numpy.float32 if float32_product else x.dtype
    steps = (xp.clip(q, quant_min, quant_max) - zero_point.astype(x.dtype)).astype(product_dtype)
    return (steps * scale.astype(product_dtype)).astype(x.dtype, copy=False), mask


class FakeQuantize(Function):
    """y = (clamp(round(x / s) + z, q_min, q_max) - z) s with s, z given as ``scale`` and
    ``zero_point`` arrays that broadcast against x; the gradient passes where q was in range."""

    def forward(self, x):
        y, self.mask = _grid(x, self.scale, self.zero_point, self.quant_min, self.quant_max, self.scale.ndim == 0)
        return y

    def backward(self, dy):
        return (backend.xp.where(self.mask, dy, 0).astype(dy.dtype, copy=False),)

    def backward_graph(self, dy: Tensor) -> tuple:
        return (dy * Tensor._wrap(self.mask.astype(dy.dtype)),)


def _check_range(quant_min, quant_max, who: str) -> tuple[int, int]:
    for name, value in (("quant_min", quant_min), ("quant_max", quant_max)):
        if isinstance(value, bool) or not isinstance(value, numbers.Integral):
            raise ValueError(f"{who}: {name} must be an int, got {value!r}")
    if quant_min > quant_max:
        raise ValueError(f"{who}: expected quant_min <= quant_max, got quant_min={quant_min}, quant_max={quant_max}")
    return int(quant_min), int(quant_max)


def _check_qparams(scale, zero_point, quant_min: int, quant_max: int, who: str):
    """``scale`` as float32 (positive, finite) and ``zero_point`` as int64 (integers in the range)."""
    scale = numpy.asarray(backend.to_numpy(backend.xp.asarray(scale)), dtype=numpy.float32)
    if not numpy.all(numpy.isfinite(scale) & (scale > 0)):
        raise ValueError(f"{who}: scale must be positive and finite, got {scale.tolist()}")
    given = numpy.asarray(backend.to_numpy(backend.xp.asarray(zero_point)))
    if given.dtype.kind not in "iuf" or not numpy.all(given == numpy.rint(given)):
        raise ValueError(f"{who}: zero_point must hold integers, got {given.tolist()}")
    if given.size and (given.min() < quant_min or given.max() > quant_max):
        raise ValueError(f"{who}: zero_point must lie in [quant_min, quant_max] = [{quant_min}, {quant_max}], "
                         f"got {given.tolist()}")
    return backend.xp.asarray(scale), backend.xp.asarray(given.astype(numpy.int64))


def _floating(x, who: str) -> Tensor:
    x = x if isinstance(x, Tensor) else Tensor(x)
    if x.dtype.kind != "f":
        raise ValueError(f"{who}: x must be a floating-point tensor, got dtype {x.dtype}")
    return x


def fake_quantize_per_tensor(x, scale: float, zero_point: int, quant_min: int, quant_max: int) -> Tensor:
    """x rounded to the grid s (q - z), q in [quant_min, quant_max], and back to float, with one
    (s, z) for all of ``x`` (equal to ``torch.fake_quantize_per_tensor_affine``); the gradient
    is the straight-through estimator (see the module's docstring)."""
    who = "fake_quantize_per_tensor"
    x = _floating(x, who)
    quant_min, quant_max = _check_range(quant_min, quant_max, who)
    scale, zero_point = _check_qparams(scale, zero_point, quant_min, quant_max, who)
    if scale.size != 1 or zero_point.size != 1:
        raise ValueError(f"{who}: scale and zero_point must be single numbers, got shapes {tuple(scale.shape)} and "
                         f"{tuple(zero_point.shape)} (use fake_quantize_per_channel for one per channel)")
    return FakeQuantize.apply(x, scale=scale.reshape(()), zero_point=zero_point.reshape(()),
                              quant_min=quant_min, quant_max=quant_max)


def fake_quantize_per_channel(x, scale, zero_point, axis: int, quant_min: int, quant_max: int) -> Tensor:
    """As :func:`fake_quantize_per_tensor` with (s_k, z_k) for the slice k of ``x`` along ``axis``
    (``scale`` and ``zero_point`` hold one value per channel); equal to
    ``torch.fake_quantize_per_channel_affine``."""
    who = "fake_quantize_per_channel"
    x = _floating(x, who)
    quant_min, quant_max = _check_range(quant_min, quant_max, who)
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral) or not -x.ndim <= axis < x.ndim:
        raise ValueError(f"{who}: axis must be an int in [{-x.ndim}, {x.ndim - 1}] for x of shape {tuple(x.shape)}, "
                         f"got {axis!r}")
    axis = int(axis) % x.ndim
    scale, zero_point = _check_qparams(scale, zero_point, quant_min, quant_max, who)
    channels = x.shape[axis]
    if tuple(scale.shape) != (channels,) or tuple(zero_point.shape) != (channels,):
        raise ShapeError(f"{who}: expected {channels} scales and zero points (axis {axis} of shape {tuple(x.shape)}), "
                         f"got shapes {tuple(scale.shape)} and {tuple(zero_point.shape)}")
    along = (-1,) + (1,) * (x.ndim - 1 - axis)
    return FakeQuantize.apply(x, scale=scale.reshape(along), zero_point=zero_point.reshape(along),
                              quant_min=quant_min, quant_max=quant_max)


def _fused_shift(x, inverse, zero_point: int):
    """z + x · (1 / s) rounded once to x's precision, as the fused multiply-add of PyTorch's
    learnable kernel (float32 only: the product of two float32 numbers is exact in float64);
    float64 x takes the product and the sum in float64."""
    if x.dtype != numpy.float32:
        return x * inverse.astype(x.dtype) + zero_point
    return (x.astype(numpy.float64) * numpy.float64(inverse) + zero_point).astype(numpy.float32)


class LearnableFakeQuantize(Function):
    """Fake quantization per tensor with the scale and zero point as inputs (LSQ): the gradient
    of x is the straight-through one, those of s and z as in the module's docstring (PyTorch's
    CPU kernel: the forward rounds z to the nearest integer and x / s before adding it, the
    backward takes trunc(z + 1/2) and rounds z + x / s once)."""

    def forward(self, x, scale, zero_point):
        self.scale_value = numpy.float32(scale.reshape(-1)[0])
        forward_zero = numpy.clip(numpy.rint(numpy.float32(zero_point.reshape(-1)[0])), self.quant_min, self.quant_max)
        y, _ = _grid(x, backend.xp.asarray(self.scale_value), backend.xp.asarray(numpy.int64(forward_zero)),
                     self.quant_min, self.quant_max)
        self.x, self.zero_point_value = x, numpy.float32(zero_point.reshape(-1)[0])
        self.scale_shape, self.zero_point_shape = scale.shape, zero_point.shape
        return y

    def backward(self, dy):
        xp = backend.xp
        s, x = self.scale_value, self.x
        inverse = numpy.float32(1) / s
        z = int(numpy.clip(self.zero_point_value + numpy.float32(0.5), self.quant_min, self.quant_max))
        q = xp.rint(_fused_shift(x, inverse, z))
        below, above = q < self.quant_min, q > self.quant_max
        inside = ~(below | above)
        y = ((xp.clip(q, self.quant_min, self.quant_max) - z) * s).astype(numpy.float32)
        clamped = xp.where(below, dy * numpy.float32(self.quant_min - z), dy * numpy.float32(self.quant_max - z))
        d_scale = xp.where(inside, dy * (y - x) * inverse, clamped)
        d_zero = xp.where(inside, 0, dy * (-s))
        factor = numpy.float32(self.grad_factor)
        return (xp.where(inside, dy, 0).astype(dy.dtype, copy=False),
                (d_scale * factor).sum().astype(dy.dtype).reshape(self.scale_shape),
                (d_zero * factor).sum().astype(dy.dtype).reshape(self.zero_point_shape))


def fake_quantize_learnable_per_tensor(x, scale, zero_point, quant_min: int, quant_max: int,
                                       grad_factor: float = 1.0) -> Tensor:
    """Fake quantization per tensor whose ``scale`` and ``zero_point`` (one-element tensors,
    usually Parameters) receive gradients, as PyTorch's
    ``_fake_quantize_learnable_per_tensor_affine`` (LSQ); ``grad_factor`` scales both (LSQ's
    1 / sqrt(numel · q_max)). The forward rounds z to the nearest integer in the range."""
    who = "fake_quantize_learnable_per_tensor"
    x = _floating(x, who)
    quant_min, quant_max = _check_range(quant_min, quant_max, who)
    scale = scale if isinstance(scale, Tensor) else Tensor(numpy.asarray(scale, dtype=x.dtype))
    zero_point = zero_point if isinstance(zero_point, Tensor) else Tensor(numpy.asarray(zero_point, dtype=x.dtype))
    if scale.size != 1 or zero_point.size != 1:
        raise ValueError(f"{who}: scale and zero_point must hold one number each, got shapes {tuple(scale.shape)} "
                         f"and {tuple(zero_point.shape)}")
    if not float(scale.data.reshape(-1)[0]) > 0:
        raise ValueError(f"{who}: scale must be positive, got {float(scale.data.reshape(-1)[0])}")
    return LearnableFakeQuantize.apply(x, scale, zero_point, quant_min=quant_min, quant_max=quant_max,
                                       grad_factor=float(grad_factor))
