"""ggml's block types: hand-built blocks, the error bounds of quantization, and agreement with
llama.cpp's own Python package (``gguf``) on quantized bytes and dequantized values."""

from __future__ import annotations

import numpy as np
import pytest
from gguf_checks import random_blocks

from lamina.io.gguf_quants import BLOCK_SIZES, DEQUANTIZABLE, GGMLType, dequantize, quantize

BLOCK_TYPES = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K")
QUANTIZED_TYPES = ("Q8_0", "Q4_0", "Q4_1", "Q5_0", "Q5_1")


def _half(value: float) -> list[int]:
    return list(np.array([value], dtype="<f2").view(np.uint8))


def test_a_hand_built_q4_0_block():
    qs = [j | (15 - j) << 4 for j in range(16)]          # value j: j - 8, value 16 + j: 7 - j
    block = np.array(_half(0.5) + qs, dtype=np.uint8)
    values = dequantize(block, GGMLType.Q4_0, (32,))
    expected = np.concatenate([np.arange(16) - 8, 7 - np.arange(16)]) * 0.5
    np.testing.assert_array_equal(values, expected)


def test_a_hand_built_q5_1_block():
    q = np.arange(32)                                    # 5-bit values 0..31
    low = [(q[j] & 15) | (q[16 + j] & 15) << 4 for j in range(16)]
    high = list(np.packbits(q >> 4, bitorder="little"))
    block = np.array(_half(0.25) + _half(-3.0) + high + low, dtype=np.uint8)
    np.testing.assert_array_equal(dequantize(block, GGMLType.Q5_1, (32,)), 0.25 * q - 3.0)


def test_a_hand_built_q4_k_block():
    scales = [1, 20, 33, 63, 17, 50, 5, 60]              # 6 bits each: the high bits packed apart
    minima = [0, 63, 2, 40, 31, 48, 9, 16]
    packed = [scales[j] | (scales[j + 4] >> 4) << 6 for j in range(4)]
    packed += [minima[j] | (minima[j + 4] >> 4) << 6 for j in range(4)]
    packed += [(scales[j + 4] & 15) | (minima[j + 4] & 15) << 4 for j in range(4)]
    nibbles = [3 | 10 << 4] * 128                        # even sub-blocks read 3, odd ones 10
    block = np.array(_half(0.5) + _half(0.125) + packed + nibbles, dtype=np.uint8)
    values = dequantize(block, GGMLType.Q4_K, (256,)).reshape(8, 32)
    q = np.array([3, 10] * 4)
    expected = 0.5 * np.array(scales) * q - 0.125 * np.array(minima)
    np.testing.assert_array_equal(values, np.repeat(expected[:, None], 32, axis=1))


@pytest.mark.parametrize("kind", QUANTIZED_TYPES)
def test_quantization_error_stays_within_the_block_step(kind):
    x = np.random.default_rng(1).standard_normal((6, 128)).astype(np.float32) * 3
    x[0, :32] = 0                                        # an all-zero block stays zero
    y = dequantize(quantize(x, GGMLType[kind]), GGMLType[kind], x.shape)
    blocks, errors = x.reshape(-1, 32), np.abs(y - x).reshape(-1, 32)
    span = blocks.max(1) - blocks.min(1)
    magnitude = np.abs(blocks).max(1)
    step = {"Q8_0": magnitude / 127, "Q4_0": magnitude / 8, "Q5_0": magnitude / 16,
            "Q4_1": span / 15, "Q5_1": span / 31}[kind]
    # half a step of rounding (a whole step where Q4_0 / Q5_0 clip their top code), plus the
    # float16 rounding of the scale over the largest code
    codes = {"Q8_0": 127, "Q4_0": 8, "Q5_0": 16, "Q4_1": 15, "Q5_1": 31}[kind]
    bound = step * (0.5 if kind in ("Q8_0", "Q4_1", "Q5_1") else 1.0) + step * codes * 2.0**-11
    bound += np.abs(blocks).max(1) * 2.0**-11 if kind in ("Q4_1", "Q5_1") else 0    # the float16 minimum
    assert (errors.max(1) <= bound + 1e-7).all()
    assert np.array_equal(y.reshape(-1, 32)[0], np.zeros(32))
    assert errors.mean() < 0.3 * step.mean()             # most values land within half a step


def test_unsupported_types_are_named():
    with pytest.raises(NotImplementedError, match="IQ2_XXS"):
        dequantize(np.zeros(66, np.uint8), GGMLType.IQ2_XXS, (256,))
    with pytest.raises(NotImplementedError, match="Q4_K"):
        quantize(np.zeros(256, np.float32), GGMLType.Q4_K)
    with pytest.raises(ValueError, match="multiple of 32"):
        quantize(np.zeros((2, 48), np.float32), GGMLType.Q8_0)


# -- against llama.cpp's gguf package -------------------------------------------------------

@pytest.fixture(scope="module")
def gguf():
    return pytest.importorskip("gguf")


def test_block_sizes_match_ggml(gguf):
    for kind, sizes in BLOCK_SIZES.items():
        if kind == GGMLType.Q8_1:     # the package still lists Q8_1's old float32 scales (40 bytes); ggml's is 36
            continue
        theirs = gguf.GGMLQuantizationType(int(kind))
        assert theirs.name == kind.name
        assert gguf.GGML_QUANT_SIZES[theirs] == sizes, kind.name


@pytest.mark.parametrize("kind", BLOCK_TYPES)
def test_dequantization_equals_the_package(gguf, kind):
    block = BLOCK_SIZES[GGMLType[kind]][0]
    raw = random_blocks(kind, 3 * 512 // block).reshape(3, -1)
    theirs = gguf.quants.dequantize(raw, gguf.GGMLQuantizationType[kind])
    ours = dequantize(raw, GGMLType[kind], (3, 512))
    assert ours.dtype == np.float32
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("kind", (*QUANTIZED_TYPES, "BF16"))
def test_quantization_equals_the_package_byte_for_byte(gguf, kind):
    x = np.random.default_rng(2).standard_normal((4, 256)).astype(np.float32)
    x[1] *= 1e-3
    x[2, :32] = 0
    x[3, 32:64] = np.arange(32) - 15.5                   # x / d lands on halves: ties in Q8_0's rounding
    x[3, 32] = 127
    if kind == "BF16":
        x[3, :3] = [np.nan, np.inf, -0.0]
    theirs = gguf.quants.quantize(x, gguf.GGMLQuantizationType[kind])
    np.testing.assert_array_equal(quantize(x, GGMLType[kind]), theirs.reshape(-1).view(np.uint8))


def test_every_dequantizable_type_is_known_to_the_package(gguf):
    assert {kind.name for kind in DEQUANTIZABLE} <= set(gguf.GGMLQuantizationType.__members__)
