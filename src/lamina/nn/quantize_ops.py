"""Affine quantization of arrays to 8-bit integers, and the integer products of quantized layers.

An affine quantization stores a real value x as an integer q of a b-bit range [q_min, q_max]
through a scale s > 0 and a zero point z, the integer that stands for the real 0:

    q = clamp(round(x / s + z), q_min, q_max),        x ≈ s (q - z)

with int8 = [-128, 127] and uint8 = [0, 255]. ``round`` is round half to even, and the zero
point is added before rounding, as PyTorch's CPU kernels do: x · (1 / s) + z in float32, then
rounded (so 2.5 + 3 gives 6, where round(2.5) + 3 would give 5). PyTorch's per-tensor kernel
forms x · (1 / s) + z as one fused multiply-add (a single rounding to float32), its
per-channel kernel rounds the product to float32 before adding z; :func:`quantize_per_tensor`
and :func:`quantize_per_channel` each do as their PyTorch namesake, so both give PyTorch's
integers bit for bit (the two ways differ only for values within a float32 rounding of a
half-integer). The scale is used in float32 whatever type it is given in.

Choosing (s, z) from the range [x_min, x_max] of the values (:func:`choose_qparams`, what
PyTorch's MinMaxObserver and PerChannelMinMaxObserver compute with ``reduce_range=False``).
The range is first widened to hold 0, so that the real 0 (padding, a ReLU's zeros) is exact:

* affine: s = (max(x_max, 0) - min(x_min, 0)) / (q_max - q_min), z = q_min - round(min(x_min, 0) / s),
  clamped to the range; the whole integer range covers [min, max];
* symmetric: s = max(|min(x_min, 0)|, max(x_max, 0)) / ((q_max - q_min) / 2), z = 0 for int8
  (128 for uint8): the range [-a, a] with 0 exactly at q = 0.

s is at least the float32 epsilon, so a range of zeros does not divide by zero.

Per channel, each slice along ``axis`` (a Dense layer's output unit, a filter of a Conv2D) has
its own (s_k, z_k): a channel of small weights keeps its precision next to one of large weights.

Integer products: with x ≈ s_x (q_x - z_x) and a symmetric weight w ≈ s_w q_w, a matrix
product is sum_i x_i w_ik ≈ s_x s_wk sum_i (q_xi - z_x) q_wik, the sum done exactly in int32
(:func:`int_linear`, :func:`int_conv2d`); see :mod:`lamina.nn.quantize`.
"""

from __future__ import annotations

import numbers

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.im2col import conv_pads, out_size, pad_nhwc, patches

__all__ = ["QUANTIZED_RANGES", "choose_qparams", "dequantize", "int_conv2d", "int_linear", "quant_dtype",
           "quantize_per_channel", "quantize_per_tensor", "quantize_weight"]

QUANTIZED_RANGES = {"int8": (-128, 127), "uint8": (0, 255)}
"""The integer types of a quantization and their ranges (q_min, q_max)."""

_EPS = numpy.finfo(numpy.float32).eps

CHUNK_BYTES = 1 << 22
"""Target size of :func:`int_conv2d`'s patch matrix: the batch is cut into runs of images
whose int32 patch matrix stays about this size."""


def quant_dtype(dtype, who: str) -> str:
    """'int8' or 'uint8' for ``dtype`` (a name or a NumPy dtype), or a ValueError naming ``who``."""
    try:
        name = numpy.dtype(dtype).name
    except TypeError:
        name = None
    if name not in QUANTIZED_RANGES:
        raise ValueError(f"{who}: dtype must be one of {sorted(QUANTIZED_RANGES)}, got {dtype!r}")
    return name


def _values(x, who: str, what: str = "x"):
    """``x`` (an array, a tensor or a number) as a float32 array on the backend."""
    array = backend.xp.asarray(x.data if isinstance(x, Tensor) else x)
    if array.dtype.kind not in "fiu":
        raise ValueError(f"{who}: {what} must hold real numbers, got dtype {array.dtype}")
    return array.astype(numpy.float32, copy=False)


def _check_scales(scale, who: str):
    """``scale`` as float32, checked positive and finite."""
    scale = backend.xp.asarray(scale, dtype=numpy.float32)
    if scale.size and not bool(backend.xp.all(backend.xp.isfinite(scale) & (scale > 0))):
        raise ValueError(f"{who}: scales must be positive and finite, got {backend.to_numpy(scale).tolist()}")
    return scale


def _check_zero_points(zero_point, dtype: str | None, who: str):
    """``zero_point`` as int64, checked to be integers (of the range of ``dtype`` unless it is None)."""
    given = numpy.asarray(backend.to_numpy(backend.xp.asarray(zero_point)))
    if given.dtype.kind not in "iu" and not (given.dtype.kind == "f" and numpy.all(given == numpy.rint(given))):
        raise ValueError(f"{who}: zero points must be integers, got {given.tolist()}")
    q_min, q_max = QUANTIZED_RANGES.get(dtype, (-numpy.inf, numpy.inf))
    if given.size and (given.min() < q_min or given.max() > q_max):
        raise ValueError(f"{who}: zero points must lie in the {dtype} range [{q_min}, {q_max}], got {given.tolist()}")
    return backend.xp.asarray(given.astype(numpy.int64))


def _round_to_grid(x, scale, zero_point, dtype: str, fused: bool):
    """clamp(round_half_even(x · (1 / s) + z)) in float32: rounded once (``fused``, the exact
    product formed in float64) or after the product and again after the sum."""
    xp = backend.xp
    inverse = numpy.float32(1) / scale
    if fused:
        shifted = (x.astype(numpy.float64) * inverse.astype(numpy.float64) + zero_point).astype(numpy.float32)
    else:
        shifted = x * inverse + zero_point.astype(numpy.float32)
    q_min, q_max = QUANTIZED_RANGES[dtype]
    return xp.clip(xp.rint(shifted), q_min, q_max).astype(dtype)


def quantize_per_tensor(x, scale: float, zero_point: int, dtype="int8"):
    """q = clamp(round(x / s + z), q_min, q_max) with one (s, z) for every value of ``x``: an
    array of ``dtype`` ('int8' or 'uint8'), equal to ``torch.quantize_per_tensor(...).int_repr()``."""
    who = "quantize_per_tensor"
    dtype = quant_dtype(dtype, who)
    scale, zero_point = _check_scales(scale, who), _check_zero_points(zero_point, dtype, who)
    if scale.ndim or zero_point.ndim:
        raise ValueError(f"{who}: scale and zero_point must be single numbers, got shapes {tuple(scale.shape)} and "
                         f"{tuple(zero_point.shape)} (use quantize_per_channel for one per channel)")
    return _round_to_grid(_values(x, who), scale, zero_point, dtype, fused=True)


def _channel_axis(shape: tuple, axis, who: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, numbers.Integral) or not -len(shape) <= axis < len(shape):
        raise ValueError(f"{who}: axis must be an int in [{-len(shape)}, {len(shape) - 1}] for an array of shape "
                         f"{shape}, got {axis!r}")
    return int(axis) % len(shape)


def _along(values, axis: int, ndim: int):
    """One value per channel, shaped to broadcast along ``axis`` of an ``ndim``-D array."""
    return values.reshape((-1,) + (1,) * (ndim - 1 - axis))


def _per_channel_params(shape: tuple, scales, zero_points, axis, dtype: str | None, who: str):
    axis = _channel_axis(shape, axis, who)
    scales, zero_points = _check_scales(scales, who), _check_zero_points(zero_points, dtype, who)
    channels = shape[axis]
    if tuple(scales.shape) != (channels,) or tuple(zero_points.shape) != (channels,):
        raise ShapeError(f"{who}: expected {channels} scales and zero points (axis {axis} of shape {shape}), got "
                         f"shapes {tuple(scales.shape)} and {tuple(zero_points.shape)}")
    return axis, _along(scales, axis, len(shape)), _along(zero_points, axis, len(shape))


def quantize_per_channel(x, scales, zero_points, axis: int, dtype="int8"):
    """q = clamp(round(x / s_k + z_k), q_min, q_max) with (s_k, z_k) for the slice k of ``x``
    along ``axis``: equal to ``torch.quantize_per_channel(...).int_repr()``."""
    who = "quantize_per_channel"
    dtype = quant_dtype(dtype, who)
    x = _values(x, who)
    axis, scales, zero_points = _per_channel_params(tuple(x.shape), scales, zero_points, axis, dtype, who)
    return _round_to_grid(x, scales, zero_points, dtype, fused=False)


def dequantize(q, scale, zero_point, axis: int | None = None):
    """x̂ = s (q - z) in float32: one (s, z) for all of ``q``, or with ``axis`` one per slice along
    it (``scale`` and ``zero_point`` then hold one value per channel). Equal to PyTorch's
    ``dequantize()`` of the same quantized tensor."""
    who = "dequantize"
    xp = backend.xp
    q = xp.asarray(q.data if isinstance(q, Tensor) else q)
    if q.dtype.kind not in "iu":
        raise ValueError(f"{who}: expected an integer array (the quantized values), got dtype {q.dtype}")
    dtype = q.dtype.name if q.dtype.name in QUANTIZED_RANGES else None
    if axis is None:
        scale, zero_point = _check_scales(scale, who), _check_zero_points(zero_point, dtype, who)
        if scale.ndim or zero_point.ndim:
            raise ValueError(f"{who}: without an axis, scale and zero_point must be single numbers, got shapes "
                             f"{tuple(scale.shape)} and {tuple(zero_point.shape)}")
    else:
        _, scale, zero_point = _per_channel_params(tuple(q.shape), scale, zero_point, axis, dtype, who)
    return (q.astype(numpy.int32) - zero_point.astype(numpy.int32)).astype(numpy.float32) * scale


def choose_qparams(x_min, x_max, dtype="uint8", symmetric: bool = False):
    """The scale s (float32) and zero point z (int64) that quantize the range [x_min, x_max]
    (widened to hold 0) to ``dtype``: affine, or ``symmetric`` about 0 (see the module's
    docstring). ``x_min`` and ``x_max`` are numbers, or arrays of one range per channel;
    the results have their shape (0-d arrays for numbers)."""
    who = "choose_qparams"
    dtype = quant_dtype(dtype, who)
    xp = backend.xp
    low, high = _values(x_min, who, "x_min"), _values(x_max, who, "x_max")
    if low.shape != high.shape:
        raise ShapeError(f"{who}: x_min and x_max must have the same shape, got {tuple(low.shape)} and "
                         f"{tuple(high.shape)}")
    if not bool(xp.all(xp.isfinite(low) & xp.isfinite(high))):
        raise ValueError(f"{who}: the range must be finite, got x_min={backend.to_numpy(low).tolist()}, "
                         f"x_max={backend.to_numpy(high).tolist()}")
    if bool(xp.any(low > high)):
        raise ValueError(f"{who}: expected x_min <= x_max, got x_min={backend.to_numpy(low).tolist()}, "
                         f"x_max={backend.to_numpy(high).tolist()}")
    q_min, q_max = QUANTIZED_RANGES[dtype]
    low, high = xp.minimum(low, numpy.float32(0)), xp.maximum(high, numpy.float32(0))
    if symmetric:
        half_range = numpy.float32((q_max - q_min) / 2)
        scale = xp.maximum(xp.maximum(-low, high) / half_range, _EPS)
        zero_point = xp.full(scale.shape, 0 if dtype == "int8" else 128, dtype=numpy.int64)
    else:
        scale = xp.maximum((high - low) / numpy.float32(q_max - q_min), _EPS)
        zero_point = xp.clip(q_min - xp.rint(low / scale).astype(numpy.int64), q_min, q_max)
    return scale.astype(numpy.float32), zero_point


def quantize_weight(weight, axis: int):
    """A layer's weight as int8 per channel along ``axis``, symmetric: (q, scales), with the
    range of each channel taken over all the other axes (PyTorch's default for weights,
    PerChannelMinMaxObserver with ``qscheme=torch.per_channel_symmetric``)."""
    who = "quantize_weight"
    w = _values(weight, who, "weight")
    axis = _channel_axis(tuple(w.shape), axis, who)
    others = tuple(i for i in range(w.ndim) if i != axis)
    scales, zero_points = choose_qparams(w.min(axis=others), w.max(axis=others), "int8", symmetric=True)
    return quantize_per_channel(w, scales, zero_points, axis, "int8"), scales


def int_linear(x_shifted, q_weight):
    """sum_i (q_x - z_x)_i q_w[i, k] exactly: int32 (..., n_in) times int8 (n_in, units), each
    cast to int32 before the product so that no partial sum overflows 8 bits."""
    x = x_shifted.astype(numpy.int32, copy=False)
    rows = x.reshape(-1, x.shape[-1])
    return backend.xp.matmul(rows, q_weight.astype(numpy.int32)).reshape(x.shape[:-1] + (q_weight.shape[1],))


def int_conv2d(x_shifted, q_weight, stride: tuple[int, int], padding, dilation: tuple[int, int],
               groups: int):
    """The convolution of the int32 NHWC batch (q_x - z_x) with int8 filters (K, f_h, f_w, c / groups),
    as im2col + an int32 matrix product per group (the float Conv2D's computation,
    :mod:`lamina.functional.conv_gemm`). The input is padded with zeros, which is the real 0
    once the zero point has been subtracted. ``padding`` as the Conv2D layer takes it."""
    xp = backend.xp
    x = x_shifted.astype(numpy.int32, copy=False)
    n, h, w, c = x.shape
    k, fh, fw, c_group = q_weight.shape
    extent = ((fh - 1) * dilation[0] + 1, (fw - 1) * dilation[1] + 1)
    pads = conv_pads(padding, (h, w), extent, stride, "int_conv2d")
    out_hw = (out_size(h, extent[0], stride[0], pads[0], pads[1]), out_size(w, extent[1], stride[1], pads[2], pads[3]))
    k_group = k // groups
    weights = [q_weight[g * k_group:(g + 1) * k_group].reshape(k_group, -1).T.astype(numpy.int32)
               for g in range(groups)]
    out = xp.empty((n, *out_hw, k), dtype=numpy.int32)
    per_image = out_hw[0] * out_hw[1] * fh * fw * c * 4
    step = max(1, CHUNK_BYTES // max(per_image, 1))
    for lo in range(0, n, step):
        windows = patches(pad_nhwc(x[lo:lo + step], pads), extent, out_hw, stride)
        windows = windows[:, :, :, ::dilation[0], ::dilation[1]]          # the taps of a dilated kernel
        for g, weight in enumerate(weights):
            cols = windows[..., g * c_group:(g + 1) * c_group].reshape(-1, fh * fw * c_group)
            out[lo:lo + step, ..., g * k_group:(g + 1) * k_group] = xp.matmul(cols, weight).reshape(
                -1, *out_hw, k_group)
    return out
