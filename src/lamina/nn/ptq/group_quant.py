"""Weight-only group quantization of linear layers, as GPTQ and AWQ store their weights.

A weight W (n_in, units) is cut along its input axis into groups of ``group_size`` rows
(``group_size=-1``: one group, per output channel). Each group g and output unit k keep a
scale s_gk and an integer zero point z_gk, and each weight an unsigned b-bit integer:

    q_ik = clamp(round(w_ik / s_gk) + z_gk, 0, 2^b - 1),      w_ik ≈ s_gk (q_ik - z_gk),   g = g_idx[i]

with, over the group's weights w (AutoGPTQ's ``Quantizer``, min/max widened to hold 0):

    lo = min(min w, 0),  hi = max(max w, 0)
    asymmetric: s = (hi - lo) / (2^b - 1),  z = round(-lo / s)
    symmetric:  hi = max(|lo|, hi), lo = -hi, s = 2 hi / (2^b - 1),  z = 2^(b-1)

(a group of zeros takes lo = -1, hi = 1; a symmetric group of non-negative weights keeps
its range [-hi, hi], where AutoGPTQ would take [0, hi] with the zero point in the middle).
Rounding is half to even, as ``torch.round``.
``g_idx[i]`` names the group of input row i: i // group_size, or, after GPTQ's act-order,
the group of the row's place in the order it was quantized in.

The integers are packed into int32 words along the input axis, as AutoGPTQ's ``qweight``
(:func:`pack_bits`): a little-endian bit stream, value i in bits [b i, b (i + 1)), so that
a word holds 32 / b values for b = 2, 4, 8 and three words hold 32 values for b = 3. The zero
points are packed the same way along the unit axis (``qzeros``), stored as they are (the
"v2" layout; AutoGPTQ's v1 checkpoints store z - 1).
"""

from __future__ import annotations

import numbers
from dataclasses import dataclass

import numpy

from lamina.autograd import Tensor
from lamina.errors import ShapeError

__all__ = ["BITS", "QuantizedWeight", "check_bits", "check_group_size", "group_params", "pack_bits",
           "quantize_to_grid", "read_packed", "register_packed", "rtn_quantize_weight", "unpack_bits"]

BITS = (2, 3, 4, 8)
"""The integer widths a weight can be quantized to."""


def check_bits(bits, who: str) -> int:
    if isinstance(bits, bool) or not isinstance(bits, numbers.Integral) or int(bits) not in BITS:
        raise ValueError(f"{who}: bits must be one of {BITS}, got {bits!r}")
    return int(bits)


def check_group_size(group_size, in_features: int, who: str) -> int:
    """The group size as a count of input rows (-1: all ``in_features``); it must divide them."""
    if isinstance(group_size, bool) or not isinstance(group_size, numbers.Integral) or (
            group_size < 1 and group_size != -1):
        raise ValueError(f"{who}: group_size must be a positive int or -1 (one group per output channel), "
                         f"got {group_size!r}")
    size = in_features if group_size == -1 else int(group_size)
    if in_features % size:
        raise ValueError(f"{who}: group_size {size} does not divide in_features {in_features}; use a divisor "
                         "of it or -1 (per channel)")
    return size


def _float_matrix(weight, who: str) -> numpy.ndarray:
    array = numpy.asarray(weight.data if isinstance(weight, Tensor) else weight)
    if array.ndim != 2 or array.dtype.kind != "f" or array.size == 0:
        raise ShapeError(f"{who}: expected a non-empty floating weight of shape (n_in, units), got shape "
                         f"{array.shape} and dtype {array.dtype}")
    return array


def group_params(w: numpy.ndarray, bits: int, sym: bool, axis: int = 0) -> tuple[numpy.ndarray, numpy.ndarray]:
    """The scale s and zero point z (floats holding integers) of the weights ``w`` reduced over
    ``axis`` (see the module's docstring): one pair per remaining index."""
    maxq = 2 ** bits - 1
    lo = numpy.minimum(w.min(axis=axis), 0)
    hi = numpy.maximum(w.max(axis=axis), 0)
    if sym:
        hi = numpy.maximum(-lo, hi)
        lo = -hi
    empty = (lo == 0) & (hi == 0)
    lo, hi = numpy.where(empty, -1, lo), numpy.where(empty, 1, hi)
    scale = (hi - lo) / maxq
    zero = numpy.full_like(scale, (maxq + 1) / 2) if sym else numpy.round(-lo / scale)
    return scale, zero


def quantize_to_grid(w, scale, zero, bits: int) -> numpy.ndarray:
    """clamp(round(w / s) + z, 0, 2^b - 1), as floats (broadcasting ``scale`` and ``zero``)."""
    return numpy.clip(numpy.round(w / scale) + zero, 0, 2 ** bits - 1)


@dataclass
class QuantizedWeight:
    """A group-quantized weight (n_in, units): ``qweight`` the integers (n_in, units),
    ``scales`` and ``zeros`` (n_groups, units), ``g_idx`` (n_in,) the group of each input row,
    ``bits``, ``group_size`` (rows per group) and ``sym``."""

    qweight: numpy.ndarray
    scales: numpy.ndarray
    zeros: numpy.ndarray
    g_idx: numpy.ndarray
    bits: int
    group_size: int
    sym: bool = False

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.qweight.shape)

    def dequantize(self, dtype=numpy.float32) -> numpy.ndarray:
        """W_ik = s_gk (q_ik - z_gk), g = g_idx[i], in ``dtype``."""
        work = numpy.float64 if numpy.dtype(dtype) == numpy.float64 else numpy.float32
        scales = self.scales.astype(work)[self.g_idx]
        zeros = self.zeros.astype(work)[self.g_idx]
        return (scales * (self.qweight.astype(work) - zeros)).astype(dtype, copy=False)


def rtn_quantize_weight(weight, bits: int = 4, group_size: int = 128, sym: bool = False) -> QuantizedWeight:
    """Round-to-nearest: each group's weights quantized on their own min/max grid."""
    who = "rtn_quantize_weight"
    bits = check_bits(bits, who)
    w = _float_matrix(weight, who).astype(numpy.float64)
    n_in, units = w.shape
    size = check_group_size(group_size, n_in, who)
    grouped = w.reshape(n_in // size, size, units)
    scale, zero = group_params(grouped, bits, sym, axis=1)                 # (n_groups, units)
    q = quantize_to_grid(grouped, scale[:, None], zero[:, None], bits).reshape(n_in, units)
    g_idx = numpy.arange(n_in) // size
    return QuantizedWeight(q.astype(numpy.uint8), scale.astype(numpy.float32), zero.astype(numpy.uint8),
                           g_idx.astype(numpy.int32), bits, size, bool(sym))


def pack_bits(values, bits: int) -> numpy.ndarray:
    """Unsigned ``bits``-bit integers (n, m) packed along axis 0 into int32 words
    (ceil(n b / 32), m): a little-endian bit stream, value i in bits [b i, b (i + 1)), padded
    with zero bits to a whole word."""
    who = "pack_bits"
    bits = check_bits(bits, who)
    q = numpy.asarray(values)
    if q.ndim != 2 or q.dtype.kind not in "iu":
        raise ShapeError(f"{who}: expected a 2-d integer array, got shape {q.shape} and dtype {q.dtype}")
    if q.size and (q.min() < 0 or q.max() >= 2 ** bits):
        raise ValueError(f"{who}: values must lie in [0, {2 ** bits - 1}] for {bits} bits, got "
                         f"[{q.min()}, {q.max()}]")
    n, m = q.shape
    stream = ((q[:, None, :].astype(numpy.uint32) >> numpy.arange(bits, dtype=numpy.uint32)[None, :, None]) & 1)
    stream = stream.reshape(n * bits, m)
    pad = -stream.shape[0] % 32
    if pad:
        stream = numpy.concatenate([stream, numpy.zeros((pad, m), dtype=numpy.uint32)])
    words = (stream.reshape(-1, 32, m) << numpy.arange(32, dtype=numpy.uint32)[None, :, None]).sum(
        axis=1, dtype=numpy.uint32)
    return words.view(numpy.int32)


def unpack_bits(words, bits: int, count: int) -> numpy.ndarray:
    """The ``count`` values per column that :func:`pack_bits` packed into ``words``, as uint8."""
    who = "unpack_bits"
    bits = check_bits(bits, who)
    words = numpy.asarray(words)
    if words.ndim != 2 or words.dtype != numpy.int32 or words.shape[0] != -(-count * bits // 32):
        raise ShapeError(f"{who}: {count} values of {bits} bits need {-(-count * bits // 32)} int32 words per "
                         f"column, got an array of shape {words.shape} and dtype {words.dtype}")
    unsigned = words.view(numpy.uint32)
    stream = (unsigned[:, None, :] >> numpy.arange(32, dtype=numpy.uint32)[None, :, None]) & 1
    stream = stream.reshape(-1, words.shape[1])[:count * bits].reshape(count, bits, words.shape[1])
    values = (stream << numpy.arange(bits, dtype=numpy.uint32)[None, :, None]).sum(axis=1)
    return values.astype(numpy.uint8)


def register_packed(module, prefix: str, quantized: QuantizedWeight) -> None:
    """Store ``quantized`` in ``module``'s buffers ``{prefix}qweight`` and ``{prefix}qzeros``
    (packed int32), ``{prefix}scales`` (float32) and ``{prefix}g_idx`` (int32)."""
    module.register_buffer(prefix + "qweight", pack_bits(quantized.qweight.astype(numpy.uint8), quantized.bits))
    module.register_buffer(prefix + "qzeros", pack_bits(quantized.zeros.astype(numpy.uint8).T, quantized.bits).T.copy())
    module.register_buffer(prefix + "scales", numpy.asarray(quantized.scales, dtype=numpy.float32).copy())
    module.register_buffer(prefix + "g_idx", numpy.asarray(quantized.g_idx, dtype=numpy.int32).copy())


def read_packed(module, prefix: str, shape: tuple[int, int], bits: int, group_size: int, sym: bool
                ) -> QuantizedWeight:
    """The :class:`QuantizedWeight` of shape ``shape`` that :func:`register_packed` stored."""
    n_in, units = shape
    buffers = module._buffers
    q = unpack_bits(buffers[prefix + "qweight"], bits, n_in)
    zeros = unpack_bits(buffers[prefix + "qzeros"].T.copy(), bits, units).T
    return QuantizedWeight(q, buffers[prefix + "scales"], zeros, buffers[prefix + "g_idx"], bits, group_size, sym)
