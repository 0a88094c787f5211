"""4-bit blockwise quantization of weights (NF4 and FP4), as in QLoRA (Dettmers et al. 2023) and
the bitsandbytes library.

A weight array is read flat (row-major) and cut into blocks of ``blocksize`` values (the last
block padded with zeros). Each block b keeps its absolute maximum m_b (a float32) and each
value one of 16 codes c_0..c_15 in [-1, 1]:

    q_i = argmin_k |w_i / m_b - c_k|,        w_i ≈ m_b c_{q_i}

(nearest code; a value exactly half-way between two codes takes the lower one). The codes
are packed two to a byte, **the earlier value in the high nibble**: byte j holds
(q_{2j} << 4) | q_{2j+1}, as bitsandbytes stores them; an odd count ends with the code of 0
in the last low nibble. The packed array has ceil(n / 2) bytes.

The code tables (:data:`NF4_CODE`, :data:`FP4_CODE`, indexed by the 4-bit code):

* NF4, NormalFloat: quantiles of N(0, 1) normalized to [-1, 1], so that each code covers an
  equal share of normally distributed weights. It is asymmetric to hold an exact 0: 8
  positive values are the quantiles Phi^-1(p) at 8 probabilities evenly spaced from 1/2
  (excluded) to delta, 7 negative values likewise with 8 points, plus 0, all divided by
  Phi^-1(delta); delta = 1 - (1/30 + 1/32) / 2 ≈ 0.9677083 keeps the ends finite
  (:func:`normal_float_code` builds it).
* FP4: a float with 1 sign bit, 2 exponent bits and 1 mantissa bit (e2m1), bitsandbytes'
  variant: the 3 low bits 000..111 stand for 0, 0.0625, 8, 12, 4, 6, 2, 3, divided by 12;
  bit 3 is the sign (a value that rounds to 0 gets 0b0000; 0b1000, -0, is never produced).

Double quantization (``compress_statistics=True``, QLoRA's "double quant"): the float32
block maxima are themselves quantized, minus their mean mu, to 8 bits in blocks of 256
with bitsandbytes' signed dynamic code (:func:`dynamic_code`), which brings the cost of the
statistics from 32 / 64 = 0.5 bits per weight to about 8 / 64 + 32 / (64 * 256) ≈ 0.127:

    m_b ≈ mu + a_g d_{r_b},     a_g = max over the group g of |m_b - mu|

with d the 256-entry code and r_b its 8-bit index.
"""

from __future__ import annotations

import functools
import math
import numbers
from dataclasses import dataclass, field

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError

__all__ = ["FP4_CODE", "NF4_CODE", "QUANT_TYPES", "QuantState", "dequantize_4bit", "dequantize_blockwise_8bit",
           "dynamic_code", "fp4_code", "normal_float_code", "quantize_4bit", "quantize_blockwise_8bit"]

NF4_OFFSET = 0.9677083
"""delta = 1 - (1/30 + 1/32) / 2 rounded as QLoRA publishes it: the largest probability whose
quantile becomes the code 1."""

NF4_CODE = numpy.array([
    -1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453, -0.28444138169288635,
    -0.18477343022823334, -0.09105003625154495, 0.0, 0.07958029955625534, 0.16093020141124725,
    0.24611230194568634, 0.33791524171829224, 0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0,
], dtype=numpy.float32)
"""QLoRA's published NormalFloat4 values, by code (the order of their values)."""
NF4_CODE.flags.writeable = False

_FP4_MAGNITUDES = (0.0, 0.0625, 8.0, 12.0, 4.0, 6.0, 2.0, 3.0)


def fp4_code() -> numpy.ndarray:
    """bitsandbytes' FP4 (e2m1) table by code: the low 3 bits give 0, 0.0625, 8, 12, 4, 6, 2, 3
    (over 12, so that the largest is 1), bit 3 the sign."""
    magnitudes = numpy.array(_FP4_MAGNITUDES) / 12.0
    return numpy.concatenate([magnitudes, -magnitudes]).astype(numpy.float32)


FP4_CODE = fp4_code()
FP4_CODE.flags.writeable = False

QUANT_TYPES = {"nf4": NF4_CODE, "fp4": FP4_CODE}
"""The 4-bit types and their code tables."""


def _spaced(start: float, stop: float, count: int) -> numpy.ndarray:
    """``count`` evenly spaced float32 values from ``start`` to ``stop``, stepped from both
    ends (start + i h for the first half, stop - (count - 1 - i) h for the rest), as the
    published NF4 table was computed."""
    start, stop = numpy.float32(start), numpy.float32(stop)
    step = (stop - start) / numpy.float32(count - 1)
    i = numpy.arange(count, dtype=numpy.float32)
    return numpy.where(i < count // 2, start + i * step, stop - (numpy.float32(count - 1) - i) * step)


def normal_float_code(offset: float = NF4_OFFSET) -> numpy.ndarray:
    """The NF4 table built as QLoRA describes: Phi^-1 at 9 probabilities evenly spaced from
    ``offset`` to 1/2 (the last, 1/2, dropped) gives 8 positive values, at 8 such
    probabilities 7 negative ones (negated), with 0 added; sorted and divided by the largest.
    With the probabilities and the division in float32 (:func:`_spaced`) this is the
    published table (:data:`NF4_CODE`) bit for bit."""
    from scipy.stats import norm

    def quantiles(count):
        return norm.ppf(_spaced(offset, 0.5, count)[:-1].astype(numpy.float64))

    values = numpy.sort(numpy.concatenate([quantiles(9), [0.0], -quantiles(8)]).astype(numpy.float32))
    return values / values.max()


@functools.cache
def dynamic_code() -> numpy.ndarray:
    """bitsandbytes' signed 8-bit dynamic code (Dettmers 2016), used for the statistics of a
    double quantization: for each decade 10^(e - 6), e = 0..6, the midpoints of 2^e equal
    steps of [0.1, 1] times 10^(e - 6), with their negatives, plus 0 and 1; 256 values, sorted
    (in float32, equal to bitsandbytes' to one float32 rounding)."""
    values = [0.0, 1.0]
    for exponent in range(7):
        edges = numpy.linspace(0.1, 1.0, 2 ** exponent + 1, dtype=numpy.float32)
        means = (edges[:-1] + edges[1:]) / numpy.float32(2)
        scaled = numpy.float32(10.0 ** (exponent - 6)) * means
        values += list(scaled) + list(-scaled)
    code = numpy.sort(numpy.array(values, dtype=numpy.float32))
    code.flags.writeable = False
    return code


@dataclass
class QuantState:
    """What :func:`dequantize_4bit` needs besides the packed codes.

    ``absmax``: the block maxima m_b, float32 (n_blocks,); with a double quantization
    (``nested`` set) their 8-bit codes r_b (uint8) instead, and ``offset`` the mean mu.
    ``nested``: the 8-bit state of the maxima (its ``absmax`` the group maxima a_g, its
    ``code`` the 256-value dynamic code, ``blocksize`` 256). ``shape`` and ``dtype``: the
    original array's. ``code``: the 16 values of ``quant_type``."""

    absmax: numpy.ndarray
    shape: tuple[int, ...]
    dtype: numpy.dtype
    blocksize: int
    quant_type: str
    code: numpy.ndarray = field(repr=False)
    offset: numpy.ndarray | None = None
    nested: QuantState | None = None

    @property
    def n_blocks(self) -> int:
        return -(-math.prod(self.shape) // self.blocksize)

    def block_absmax(self):
        """The block maxima m_b as float32 (decoded from 8 bits for a double quantization)."""
        if self.nested is None:
            return self.absmax
        return dequantize_blockwise_8bit(self.absmax, self.nested) + self.offset

    @property
    def nbytes(self) -> int:
        """Bytes of the per-block statistics (the code tables are shared constants, not counted)."""
        own = self.absmax.nbytes + (0 if self.offset is None else self.offset.nbytes)
        return own + (0 if self.nested is None else self.nested.absmax.nbytes)


def _check_blocksize(blocksize, who: str) -> int:
    if isinstance(blocksize, bool) or not isinstance(blocksize, numbers.Integral) or blocksize < 2 \
            or blocksize % 2:
        raise ValueError(f"{who}: blocksize must be a positive even int (bitsandbytes uses powers of two "
                         f"from 32 to 4096; 64 is QLoRA's), got {blocksize!r}")
    return int(blocksize)


def _check_quant_type(quant_type, who: str) -> str:
    if not isinstance(quant_type, str) or quant_type.lower() not in QUANT_TYPES:
        raise ValueError(f"{who}: quant_type must be one of {sorted(QUANT_TYPES)}, got {quant_type!r}")
    return quant_type.lower()


def _float_array(w, who: str):
    array = backend.xp.asarray(w.data if isinstance(w, Tensor) else w)
    if array.dtype.kind != "f":
        raise ValueError(f"{who}: expected a floating array to quantize, got dtype {array.dtype}")
    if array.size == 0:
        raise ShapeError(f"{who}: cannot quantize an empty array (shape {tuple(array.shape)})")
    return array


def _blocks(flat, blocksize: int):
    """``flat`` (float32) padded with zeros to whole blocks: (n_blocks, blocksize), and the
    block maxima."""
    xp = backend.xp
    pad = -flat.size % blocksize
    if pad:
        flat = xp.concatenate([flat, xp.zeros(pad, dtype=flat.dtype)])
    blocks = flat.reshape(-1, blocksize)
    return blocks, xp.abs(blocks).max(axis=1)


def _nearest(scaled, code):
    """The index into ``code`` of the nearest value to each of ``scaled`` (ties to the lower
    value), searching the sorted table's midpoints."""
    xp = backend.xp
    order = numpy.argsort(code, kind="stable")
    ascending = code[order]
    keep = numpy.concatenate([[True], ascending[1:] != ascending[:-1]])      # FP4's -0 repeats 0
    order, ascending = order[keep], ascending[keep]
    midpoints = (ascending[:-1] + ascending[1:]) / numpy.float32(2)
    position = xp.searchsorted(xp.asarray(midpoints), scaled, side="left")
    return xp.asarray(order.astype(numpy.uint8))[position]


def _scaled(blocks, absmax):
    """w / m_b as float32, clipped to [-1, 1] (1 / m_b taken first, as bitsandbytes; 0 for an
    all-zero block)."""
    xp = backend.xp
    inverse = xp.where(absmax > 0, numpy.float32(1) / xp.where(absmax > 0, absmax, 1), 0).astype(numpy.float32)
    return xp.clip(blocks * inverse[:, None], -1, 1)


def quantize_4bit(w, blocksize: int = 64, quant_type: str = "nf4",
                  compress_statistics: bool = False) -> tuple[numpy.ndarray, QuantState]:
    """Blockwise 4-bit codes of ``w`` (any shape, floating): the packed uint8 array of
    ceil(w.size / 2) bytes (earlier value in the high nibble) and its :class:`QuantState`.
    ``quant_type`` 'nf4' or 'fp4'; ``compress_statistics`` also quantizes the block maxima
    (double quantization, see the module's docstring)."""
    who = "quantize_4bit"
    blocksize = _check_blocksize(blocksize, who)
    quant_type = _check_quant_type(quant_type, who)
    array = _float_array(w, who)
    code = QUANT_TYPES[quant_type]
    blocks, absmax = _blocks(array.reshape(-1).astype(numpy.float32), blocksize)
    codes = _nearest(_scaled(blocks, absmax), code).reshape(-1)[:array.size]
    if codes.size % 2:
        codes = backend.xp.concatenate([codes, _nearest(backend.xp.zeros(1, numpy.float32), code)])
    packed = (codes[0::2] << 4) | codes[1::2]
    state = QuantState(absmax=absmax, shape=tuple(array.shape), dtype=array.dtype, blocksize=blocksize,
                       quant_type=quant_type, code=code)
    if compress_statistics:
        state.offset = absmax.mean(dtype=numpy.float32)
        state.absmax, state.nested = quantize_blockwise_8bit(absmax - state.offset)
    return packed.astype(numpy.uint8), state


def dequantize_4bit(packed, state: QuantState, dtype=None):
    """The array ``quantize_4bit`` coded: m_b c_q for every value, in ``dtype`` (default the
    original array's), in the original shape."""
    who = "dequantize_4bit"
    if not isinstance(state, QuantState):
        raise ValueError(f"{who}: state must be the QuantState quantize_4bit returned, got {type(state).__name__}")
    xp = backend.xp
    packed = xp.asarray(packed.data if isinstance(packed, Tensor) else packed)
    size = math.prod(state.shape)
    if packed.dtype != numpy.uint8 or packed.size != -(-size // 2):
        raise ShapeError(f"{who}: expected {-(-size // 2)} packed uint8 bytes for shape {state.shape}, got "
                         f"{packed.size} of dtype {packed.dtype}")
    packed = packed.reshape(-1)
    codes = xp.empty(packed.size * 2, dtype=numpy.uint8)
    codes[0::2], codes[1::2] = packed >> 4, packed & 0x0F
    absmax = xp.asarray(state.block_absmax())
    if absmax.shape != (state.n_blocks,):
        raise ShapeError(f"{who}: the state has {absmax.shape[0]} block maxima; shape {state.shape} in blocks "
                         f"of {state.blocksize} needs {state.n_blocks}")
    out_dtype = numpy.dtype(state.dtype if dtype is None else dtype)
    work = numpy.float64 if out_dtype == numpy.float64 else numpy.float32
    values = xp.asarray(state.code, dtype=work)[codes[:size]]
    pad = -size % state.blocksize
    if pad:
        values = xp.concatenate([values, xp.zeros(pad, dtype=work)])
    values = values.reshape(-1, state.blocksize) * absmax.astype(work)[:, None]
    return values.reshape(-1)[:size].reshape(state.shape).astype(out_dtype, copy=False)


def quantize_blockwise_8bit(x, blocksize: int = 256) -> tuple[numpy.ndarray, QuantState]:
    """8-bit blockwise codes of the flat float array ``x`` with :func:`dynamic_code`: uint8
    indices (nearest code of x / a_g, a_g each block's absolute maximum) and their state."""
    xp = backend.xp
    flat = xp.asarray(x, dtype=numpy.float32).reshape(-1)
    blocks, absmax = _blocks(flat, blocksize)
    code = dynamic_code()
    indices = _nearest(_scaled(blocks, absmax), code).reshape(-1)[:flat.size]
    state = QuantState(absmax=absmax, shape=(flat.size,), dtype=numpy.dtype(numpy.float32), blocksize=blocksize,
                       quant_type="dynamic8", code=code)
    return indices, state


def dequantize_blockwise_8bit(indices, state: QuantState):
    """The float32 values :func:`quantize_blockwise_8bit` coded: a_g d_r."""
    xp = backend.xp
    size = math.prod(state.shape)
    values = xp.asarray(state.code)[xp.asarray(indices).reshape(-1)]
    pad = -size % state.blocksize
    if pad:
        values = xp.concatenate([values, xp.zeros(pad, dtype=numpy.float32)])
    values = values.reshape(-1, state.blocksize) * xp.asarray(state.absmax, dtype=numpy.float32)[:, None]
    return values.reshape(-1)[:size]
