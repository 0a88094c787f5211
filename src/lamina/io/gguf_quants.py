"""ggml's tensor types: their block layouts, dequantization to float32 and quantization.

A ggml tensor row of ``n`` values is stored as ``n / B`` blocks of ``S`` bytes each (``B``
values per block; ``B`` = 1 for the plain float and integer types). In the block formulas
below ``d`` and ``m`` are float16 scales and minima, ``q`` the small integers stored, and
the value is

    Q8_0:  x = d q                  q int8                          (B = 32)
    Q4_0:  x = d (q - 8)            q 4 bits                        (B = 32)
    Q4_1:  x = d q + m              q 4 bits                        (B = 32)
    Q5_0:  x = d (q - 16)           q 5 bits (4 packed + 1 in qh)   (B = 32)
    Q5_1:  x = d q + m              q 5 bits                        (B = 32)

The k-quants group 256 values into a super-block of sub-blocks with their own integer
scales ``s`` (and minima ``t``), themselves scaled by the super-block's float16 ``d``
(and ``dmin``):

    Q2_K:  x = (d s) q - (dmin t)   16 sub-blocks of 16, q 2 bits, s and t 4 bits
    Q3_K:  x = (d (s - 32)) (q - 4 [high bit clear])
                                    16 sub-blocks of 16, q 2 bits + 1 in hmask, s 6 bits
    Q4_K:  x = (d s) q - (dmin t)   8 sub-blocks of 32, q 4 bits, s and t 6 bits
    Q5_K:  x = (d s) q - (dmin t)   8 sub-blocks of 32, q 4 bits + 1 in qh, s and t 6 bits
    Q6_K:  x = (d s) (q - 32)       16 sub-blocks of 16, q 4 bits + 2 in qh, s int8

The float32 products are taken in that order (scale first), as ggml does, so the results
equal ggml's to the bit. Quantization follows ggml's reference rules (``quantize_row_*_ref``):
Q8_0 rounds x / d half away from zero with d = max|x| / 127; Q4_0 and Q5_0 take d from the
value of largest magnitude (d = x_max / -8, x_max / -16) and truncate x / d + 8.5 (+ 16.5);
Q4_1 and Q5_1 take d = (max - min) / 15 (31), m = min and truncate (x - m) / d + 0.5.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["BLOCK_SIZES", "DEQUANTIZABLE", "QUANTIZABLE", "GGMLType", "dequantize", "ggml_type", "natural_type",
           "quantize", "row_bytes", "stored_dtype"]

QK_K = 256  # values per k-quant super-block


class GGMLType(enum.IntEnum):
    """ggml's tensor type ids, as stored in GGUF files."""

    F32 = 0
    F16 = 1
    Q4_0 = 2
    Q4_1 = 3
    Q5_0 = 6
    Q5_1 = 7
    Q8_0 = 8
    Q8_1 = 9
    Q2_K = 10
    Q3_K = 11
    Q4_K = 12
    Q5_K = 13
    Q6_K = 14
    Q8_K = 15
    IQ2_XXS = 16
    IQ2_XS = 17
    IQ3_XXS = 18
    IQ1_S = 19
    IQ4_NL = 20
    IQ3_S = 21
    IQ2_S = 22
    IQ4_XS = 23
    I8 = 24
    I16 = 25
    I32 = 26
    I64 = 27
    F64 = 28
    IQ1_M = 29
    BF16 = 30
    TQ1_0 = 34
    TQ2_0 = 35
    MXFP4 = 39


BLOCK_SIZES: dict[GGMLType, tuple[int, int]] = {
    GGMLType.F32: (1, 4), GGMLType.F16: (1, 2), GGMLType.BF16: (1, 2), GGMLType.F64: (1, 8),
    GGMLType.I8: (1, 1), GGMLType.I16: (1, 2), GGMLType.I32: (1, 4), GGMLType.I64: (1, 8),
    GGMLType.Q4_0: (32, 18), GGMLType.Q4_1: (32, 20), GGMLType.Q5_0: (32, 22), GGMLType.Q5_1: (32, 24),
    GGMLType.Q8_0: (32, 34), GGMLType.Q8_1: (32, 36),
    GGMLType.Q2_K: (QK_K, 84), GGMLType.Q3_K: (QK_K, 110), GGMLType.Q4_K: (QK_K, 144),
    GGMLType.Q5_K: (QK_K, 176), GGMLType.Q6_K: (QK_K, 210), GGMLType.Q8_K: (QK_K, 292),
    GGMLType.IQ2_XXS: (QK_K, 66), GGMLType.IQ2_XS: (QK_K, 74), GGMLType.IQ3_XXS: (QK_K, 98),
    GGMLType.IQ1_S: (QK_K, 50), GGMLType.IQ4_NL: (32, 18), GGMLType.IQ3_S: (QK_K, 110),
    GGMLType.IQ2_S: (QK_K, 82), GGMLType.IQ4_XS: (QK_K, 136), GGMLType.IQ1_M: (QK_K, 56),
    GGMLType.TQ1_0: (QK_K, 54), GGMLType.TQ2_0: (QK_K, 66), GGMLType.MXFP4: (32, 17),
}
"""ggml type -> (values per block, bytes per block)."""

_PLAIN = {GGMLType.F32: np.float32, GGMLType.F16: np.float16, GGMLType.F64: np.float64, GGMLType.I8: np.int8,
          GGMLType.I16: np.int16, GGMLType.I32: np.int32, GGMLType.I64: np.int64}
_NATURAL_TYPES = {np.dtype(dtype): ggml for ggml, dtype in _PLAIN.items()}


def ggml_type(value) -> GGMLType:
    """A :class:`GGMLType` from itself, its id or its name ('Q8_0', 'q8_0')."""
    if isinstance(value, str):
        try:
            return GGMLType[value.upper()]
        except KeyError:
            raise ValueError(f"ggml_type: unknown ggml type name {value!r}; known: "
                             f"{', '.join(t.name for t in GGMLType)}") from None
    try:
        return GGMLType(int(value))
    except ValueError:
        raise ValueError(f"ggml_type: unknown ggml type id {value!r}") from None


def natural_type(dtype) -> GGMLType:
    """The ggml type storing a NumPy dtype as it is (float32 -> F32, int8 -> I8...)."""
    dtype = np.dtype(dtype)
    if dtype not in _NATURAL_TYPES:
        raise TypeError(f"natural_type: no ggml type stores {dtype}; known: "
                        f"{', '.join(str(d) for d in _NATURAL_TYPES)}")
    return _NATURAL_TYPES[dtype]


def stored_dtype(kind: GGMLType) -> np.dtype:
    """The NumPy dtype of a type's stored data: the plain types' own, uint16 bit patterns
    for BF16, uint8 bytes for the block types."""
    kind = GGMLType(kind)
    if kind in _PLAIN:
        return np.dtype(_PLAIN[kind]).newbyteorder("<")
    return np.dtype("<u2") if kind == GGMLType.BF16 else np.dtype(np.uint8)


def row_bytes(kind: GGMLType, row_length: int, who: str = "row_bytes") -> int:
    """Bytes of one row of ``row_length`` values of type ``kind`` (a whole number of blocks)."""
    block, size = BLOCK_SIZES[kind]
    if row_length % block:
        raise ValueError(f"{who}: a {kind.name} row holds whole blocks of {block} values; "
                         f"the last dimension {row_length} is not a multiple of {block}")
    return row_length // block * size


# -- dequantization ---------------------------------------------------------------------------

def _half(blocks: np.ndarray, at: int) -> np.ndarray:
    """The float16 field at byte ``at`` of every block, as float32 (n_blocks, 1)."""
    return np.ascontiguousarray(blocks[:, at:at + 2]).view("<f2").astype(np.float32)


def _nibbles(packed: np.ndarray) -> np.ndarray:
    """Bytes (n, k) -> 4-bit values (n, 2k): the low nibbles of all bytes, then the high ones."""
    return np.concatenate([packed & 0x0F, packed >> 4], axis=-1)


def _bits(packed: np.ndarray) -> np.ndarray:
    """Bytes (n, k) -> bits (n, 8k), bit j of byte i at column 8 i + j."""
    return np.unpackbits(packed, axis=-1, bitorder="little")


def _dequantize_q8_0(blocks):
    return blocks[:, 2:].view(np.int8).astype(np.float32) * _half(blocks, 0)


def _dequantize_q4_0(blocks):
    q = _nibbles(blocks[:, 2:]).astype(np.float32) - np.float32(8)
    return _half(blocks, 0) * q


def _dequantize_q4_1(blocks):
    return _half(blocks, 0) * _nibbles(blocks[:, 4:]).astype(np.float32) + _half(blocks, 2)


def _five_bit(blocks: np.ndarray, high_at: int) -> np.ndarray:
    """Q5_0 / Q5_1: 4 low bits packed as in Q4_0, the fifth bits in a 32-bit mask before them."""
    high = _bits(blocks[:, high_at:high_at + 4])
    return (_nibbles(blocks[:, high_at + 4:]) | (high << 4)).astype(np.float32)


def _dequantize_q5_0(blocks):
    return _half(blocks, 0) * (_five_bit(blocks, 2) - np.float32(16))


def _dequantize_q5_1(blocks):
    return _half(blocks, 0) * _five_bit(blocks, 4) + _half(blocks, 2)


def _two_bit_planes(packed: np.ndarray) -> np.ndarray:
    """Q2_K / Q3_K low bits: each 32-byte half of ``packed`` (n, 64) holds 4 planes of 2 bits;
    value 128 h + 32 j + i is bits 2j..2j+1 of byte 32 h + i. Returns (n, 256)."""
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    planes = (packed.reshape(-1, 2, 1, 32) >> shifts) & 3
    return planes.reshape(-1, QK_K)


def _by_sub_block(scale: np.ndarray, q: np.ndarray, offset: np.ndarray | None = None) -> np.ndarray:
    """(scale q - offset) per sub-block: scale, offset (n, s); q (n, 256) -> (n, 256)."""
    n, subs = scale.shape
    out = scale.reshape(n, subs, 1) * q.reshape(n, subs, -1)
    if offset is not None:
        out = out - offset.reshape(n, subs, 1)
    return out.reshape(n, QK_K)


def _dequantize_q2_k(blocks):
    scales, q = blocks[:, :16], _two_bit_planes(blocks[:, 16:80]).astype(np.float32)
    d, dmin = _half(blocks, 80), _half(blocks, 82)
    return _by_sub_block(d * (scales & 0x0F).astype(np.float32), q, dmin * (scales >> 4).astype(np.float32))


def _q3_k_scales(packed: np.ndarray) -> np.ndarray:
    """16 signed 6-bit scales from 12 bytes: low 4 bits in the nibbles of bytes 0..7 (low
    nibbles for scales 0..7, high for 8..15), high 2 bits of scale i in byte 8 + i % 4 at bit
    2 (i // 4). Returns scale - 32 as float32 (n, 16)."""
    low = _nibbles(packed[:, :8])
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 4, 1)
    high = ((packed[:, 8:12].reshape(-1, 1, 4) >> shifts) & 3).reshape(-1, 16)
    return (low | (high << 4)).astype(np.float32) - np.float32(32)


def _dequantize_q3_k(blocks):
    hmask, low = blocks[:, :32], _two_bit_planes(blocks[:, 32:96]).astype(np.int8)
    # value 32 k + i takes bit k of hmask byte i; a clear bit subtracts 4
    high_clear = 1 - _bits(hmask).reshape(-1, 32, 8).transpose(0, 2, 1).reshape(-1, QK_K).astype(np.int8)
    q = (low - 4 * high_clear).astype(np.float32)
    return _by_sub_block(_half(blocks, 108) * _q3_k_scales(blocks[:, 96:108]), q)


def _k4_scales_and_minima(packed: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Q4_K / Q5_K: 8 unsigned 6-bit scales and 8 minima from 12 bytes a (3 groups of 4):
    j < 4: scale a[j] & 63, minimum a[4+j] & 63; j >= 4: scale a[8+j-4] & 15 | (a[j-4] >> 6) << 4,
    minimum a[8+j-4] >> 4 | (a[j] >> 6) << 4. Returns float32 (n, 8) each."""
    first, second, third = packed[:, 0:4], packed[:, 4:8], packed[:, 8:12]
    scales = np.concatenate([first & 63, (third & 0x0F) | ((first >> 6) << 4)], axis=-1)
    minima = np.concatenate([second & 63, (third >> 4) | ((second >> 6) << 4)], axis=-1)
    return scales.astype(np.float32), minima.astype(np.float32)


def _k4_nibbles(packed: np.ndarray) -> np.ndarray:
    """Q4_K / Q5_K low bits: each 32 bytes hold 64 values, the low nibbles first (n, 256)."""
    return _nibbles(packed.reshape(-1, 32)).reshape(-1, QK_K)


def _dequantize_q4_k(blocks):
    scales, minima = _k4_scales_and_minima(blocks[:, 4:16])
    q = _k4_nibbles(blocks[:, 16:]).astype(np.float32)
    return _by_sub_block(_half(blocks, 0) * scales, q, _half(blocks, 2) * minima)


def _dequantize_q5_k(blocks):
    scales, minima = _k4_scales_and_minima(blocks[:, 4:16])
    # value 32 k + i takes bit k of qh byte i as its fifth bit
    high = _bits(blocks[:, 16:48]).reshape(-1, 32, 8).transpose(0, 2, 1).reshape(-1, QK_K)
    q = (_k4_nibbles(blocks[:, 48:]) | (high << 4)).astype(np.float32)
    return _by_sub_block(_half(blocks, 0) * scales, q, _half(blocks, 2) * minima)


def _dequantize_q6_k(blocks):
    # each half h of 128 values: quarter r (32 values) takes nibble r // 2 of low bytes
    # 64 h + 32 (r % 2) + i and bits 2r..2r+1 of high byte 32 h + i
    low = _nibbles(blocks[:, :128].reshape(-1, 64)).reshape(-1, 2, 4, 32)
    shifts = np.array([0, 2, 4, 6], dtype=np.uint8).reshape(1, 1, 4, 1)
    high = (blocks[:, 128:192].reshape(-1, 2, 1, 32) >> shifts) & 3
    q = (low | (high << 4)).reshape(-1, QK_K).astype(np.float32) - np.float32(32)
    scales = blocks[:, 192:208].view(np.int8).astype(np.float32)
    return _by_sub_block(_half(blocks, 208) * scales, q)


_DEQUANTIZERS = {
    GGMLType.Q8_0: _dequantize_q8_0, GGMLType.Q4_0: _dequantize_q4_0, GGMLType.Q4_1: _dequantize_q4_1,
    GGMLType.Q5_0: _dequantize_q5_0, GGMLType.Q5_1: _dequantize_q5_1, GGMLType.Q2_K: _dequantize_q2_k,
    GGMLType.Q3_K: _dequantize_q3_k, GGMLType.Q4_K: _dequantize_q4_k, GGMLType.Q5_K: _dequantize_q5_k,
    GGMLType.Q6_K: _dequantize_q6_k,
}
DEQUANTIZABLE = frozenset({*_PLAIN, GGMLType.BF16, *_DEQUANTIZERS})
"""The types :func:`dequantize` reads."""

_CHUNK_BLOCKS = 1 << 16    # blocks dequantized at a time, to bound the temporaries


def _bfloat16_bits_to_float32(bits: np.ndarray) -> np.ndarray:
    return (bits.astype(np.uint32) << 16).view(np.float32)


def dequantize(raw: np.ndarray, kind: GGMLType, shape: tuple[int, ...]) -> np.ndarray:
    """The values of a tensor of ``shape`` (NumPy order) stored as ``raw`` bytes of type
    ``kind``: float32 for the quantized types, F16 and BF16 (exactly), the stored dtype for
    F32, F64 and the integer types (a view of ``raw`` where possible)."""
    kind = GGMLType(kind)
    raw = np.asarray(raw).reshape(-1).view(np.uint8)
    if kind in _PLAIN:
        values = raw.view(np.dtype(_PLAIN[kind]).newbyteorder("<")).reshape(shape)
        return values.astype(np.float32) if kind == GGMLType.F16 else values
    if kind == GGMLType.BF16:
        return _bfloat16_bits_to_float32(raw.view("<u2")).reshape(shape)
    if kind not in _DEQUANTIZERS:
        raise NotImplementedError(f"dequantize: ggml type {kind.name} cannot be dequantized; supported: "
                                  f"{', '.join(sorted(t.name for t in DEQUANTIZABLE))}")
    block, size = BLOCK_SIZES[kind]
    blocks = raw.reshape(-1, size)
    out = np.empty((blocks.shape[0], block), dtype=np.float32)
    for start in range(0, blocks.shape[0], _CHUNK_BLOCKS):
        out[start:start + _CHUNK_BLOCKS] = _DEQUANTIZERS[kind](blocks[start:start + _CHUNK_BLOCKS])
    return out.reshape(shape)


# -- quantization -----------------------------------------------------------------------------

def _round_half_away(x: np.ndarray) -> np.ndarray:
    """C's roundf: to the nearest integer, halves away from zero (computed without adding
    0.5, whose float32 rounding would move values just below a half)."""
    magnitude = np.abs(x)
    whole = np.floor(magnitude)
    return np.copysign(whole + (magnitude - whole >= 0.5), x)


def _reciprocal(d: np.ndarray) -> np.ndarray:
    """1 / d, 0 where d is 0 (an all-zero block)."""
    safe = np.where(d == 0, np.float32(1), d)
    return np.where(d == 0, np.float32(0), np.float32(1) / safe).astype(np.float32)


def _half_bytes(values: np.ndarray) -> np.ndarray:
    return values.astype("<f2").view(np.uint8)


def _pack_nibbles(q: np.ndarray) -> np.ndarray:
    """4-bit values (n, 32) -> bytes (n, 16): value i in the low nibble of byte i, value
    16 + i in its high nibble."""
    return (q[:, :16] & 0x0F) | (q[:, 16:] << 4)


def _largest_magnitude(blocks: np.ndarray) -> np.ndarray:
    """The signed value of largest magnitude in each block (the first if tied), (n, 1)."""
    return np.take_along_axis(blocks, np.abs(blocks).argmax(axis=-1)[:, None], axis=-1)


def _truncated(values: np.ndarray, top: int) -> np.ndarray:
    return np.minimum(np.trunc(values), top).astype(np.uint8)


def _quantize_q8_0(blocks):
    d = np.abs(blocks).max(axis=-1, keepdims=True) / np.float32(127)
    q = _round_half_away(blocks * _reciprocal(d)).astype(np.int8).view(np.uint8)
    return np.concatenate([_half_bytes(d), q], axis=-1)


def _quantize_q4_0(blocks):
    d = _largest_magnitude(blocks) / np.float32(-8)
    q = _truncated(blocks * _reciprocal(d) + np.float32(8.5), 15)
    return np.concatenate([_half_bytes(d), _pack_nibbles(q)], axis=-1)


def _quantize_q4_1(blocks):
    low = blocks.min(axis=-1, keepdims=True)
    d = (blocks.max(axis=-1, keepdims=True) - low) / np.float32(15)
    q = _truncated((blocks - low) * _reciprocal(d) + np.float32(0.5), 15)
    return np.concatenate([_half_bytes(d), _half_bytes(low), _pack_nibbles(q)], axis=-1)


def _five_bit_bytes(q: np.ndarray) -> np.ndarray:
    """5-bit values (n, 32) -> the 32-bit mask of their fifth bits, then their low nibbles."""
    high = np.packbits(q >> 4, axis=-1, bitorder="little")
    return np.concatenate([high, _pack_nibbles(q & 0x0F)], axis=-1)


def _quantize_q5_0(blocks):
    d = _largest_magnitude(blocks) / np.float32(-16)
    q = _truncated(blocks * _reciprocal(d) + np.float32(16.5), 31)
    return np.concatenate([_half_bytes(d), _five_bit_bytes(q)], axis=-1)


def _quantize_q5_1(blocks):
    low = blocks.min(axis=-1, keepdims=True)
    d = (blocks.max(axis=-1, keepdims=True) - low) / np.float32(31)
    q = _truncated((blocks - low) * _reciprocal(d) + np.float32(0.5), 31)
    return np.concatenate([_half_bytes(d), _half_bytes(low), _five_bit_bytes(q)], axis=-1)


def _float32_to_bfloat16_bits(values: np.ndarray) -> np.ndarray:
    """Round to nearest even on the upper 16 bits; NaNs stay (quiet) NaNs."""
    bits = np.ascontiguousarray(values, dtype=np.float32).view(np.uint32).astype(np.uint64)
    rounded = ((bits + 0x7FFF + ((bits >> 16) & 1)) >> 16).astype(np.uint16)
    nan = np.isnan(values)
    if nan.any():
        rounded[nan] = ((bits[nan] >> 16) | 0x40).astype(np.uint16)
    return rounded


_QUANTIZERS = {GGMLType.Q8_0: _quantize_q8_0, GGMLType.Q4_0: _quantize_q4_0, GGMLType.Q4_1: _quantize_q4_1,
               GGMLType.Q5_0: _quantize_q5_0, GGMLType.Q5_1: _quantize_q5_1}
QUANTIZABLE = frozenset({*_PLAIN, GGMLType.BF16, *_QUANTIZERS})
"""The types :func:`quantize` writes."""


def quantize(values: np.ndarray, kind: GGMLType) -> np.ndarray:
    """The bytes (flat uint8, in ``values``' C order) storing ``values`` as type ``kind``; for
    the block types the last dimension must be a whole number of blocks."""
    kind = GGMLType(kind)
    values = np.asarray(values)
    if kind in _PLAIN:
        return np.ascontiguousarray(values, dtype=np.dtype(_PLAIN[kind]).newbyteorder("<")).reshape(-1).view(np.uint8)
    if kind == GGMLType.BF16:
        return _float32_to_bfloat16_bits(values).astype("<u2").reshape(-1).view(np.uint8)
    if kind not in _QUANTIZERS:
        raise NotImplementedError(f"quantize: cannot quantize to ggml type {kind.name}; supported: "
                                  f"{', '.join(sorted(t.name for t in QUANTIZABLE))}")
    block = BLOCK_SIZES[kind][0]
    length = values.shape[-1] if values.ndim else 1
    row_bytes(kind, length, "quantize")
    blocks = np.ascontiguousarray(values, dtype=np.float32).reshape(-1, block)
    out = np.empty((blocks.shape[0], BLOCK_SIZES[kind][1]), dtype=np.uint8)
    for start in range(0, blocks.shape[0], _CHUNK_BLOCKS):
        out[start:start + _CHUNK_BLOCKS] = _QUANTIZERS[kind](blocks[start:start + _CHUNK_BLOCKS])
    return out.reshape(-1)
