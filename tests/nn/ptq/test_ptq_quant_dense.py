"""Group quantization of weights, int32 packing and the QuantDense layer."""

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch
from lamina.nn import Dense, LayerNorm
from lamina.nn.ptq import QuantDense, QuantizedWeight, pack_bits, rtn_quantize, rtn_quantize_weight, unpack_bits


def dense(n_in, units, seed=0, activation=None, use_bias=True):
    lamina.manual_seed(seed)
    layer = Dense(units, activation=activation, use_bias=use_bias)
    layer(np.zeros((1, n_in), dtype=np.float32))
    return layer


def torch_rtn(weight, bits, group_size, sym):
    """Round-to-nearest per (group, unit) with torch, from the quantizer's definition."""
    w = torch.tensor(weight, dtype=torch.float64)
    n_in, units = w.shape
    size = n_in if group_size == -1 else group_size
    maxq = 2 ** bits - 1
    codes = torch.empty_like(w)
    for g in range(0, n_in, size):
        block = w[g:g + size]
        lo = torch.clamp(block.min(0).values, max=0)
        hi = torch.clamp(block.max(0).values, min=0)
        if sym:
            hi = torch.maximum(-lo, hi)
            lo = -hi
        scale = (hi - lo) / maxq
        zero = torch.full_like(scale, (maxq + 1) // 2) if sym else torch.round(-lo / scale)
        codes[g:g + size] = torch.clamp(torch.round(block / scale) + zero, 0, maxq)
    return codes.numpy()


@pytest.mark.parametrize("bits, group_size, sym", [(4, 8, False), (3, -1, False), (8, 16, True), (2, 4, True)])
def test_rtn_matches_torch_and_bounds_the_error(bits, group_size, sym):
    weight = np.random.default_rng(bits).standard_normal((32, 6))
    quantized = rtn_quantize_weight(weight, bits, group_size, sym)
    np.testing.assert_array_equal(quantized.qweight, torch_rtn(weight, bits, group_size, sym))
    size = 32 if group_size == -1 else group_size
    assert quantized.scales.shape == (32 // size, 6)
    error = np.abs(quantized.dequantize(np.float64) - weight)
    assert (error <= quantized.scales[quantized.g_idx] / 2 + 1e-6).all()


def test_hand_computed_group():
    # one group of 4 rows, 2 bits, asymmetric: lo = -1, hi = 2, s = 1, z = 1
    weight = np.array([[-1.0], [0.4], [1.6], [2.0]])
    quantized = rtn_quantize_weight(weight, bits=2, group_size=-1)
    np.testing.assert_allclose(quantized.scales, [[1.0]])
    np.testing.assert_array_equal(quantized.zeros, [[1]])
    np.testing.assert_array_equal(quantized.qweight[:, 0], [0, 1, 3, 3])
    np.testing.assert_allclose(quantized.dequantize(np.float64)[:, 0], [-1, 0, 2, 2])


@pytest.mark.parametrize("bits", [2, 3, 4, 8])
def test_pack_round_trip(bits):
    values = np.random.default_rng(bits).integers(0, 2 ** bits, (40, 5)).astype(np.uint8)
    words = pack_bits(values, bits)
    assert words.dtype == np.int32 and words.shape == (-(-40 * bits // 32), 5)
    np.testing.assert_array_equal(unpack_bits(words, bits, 40), values)


def test_pack_layout_is_little_endian_bit_stream():
    values = np.arange(1, 9, dtype=np.uint8)[:, None]                     # eight 4-bit values: one word
    assert int(pack_bits(values, 4)[0, 0].view(np.uint32)) == 0x87654321
    three = np.array([[7], [0], [5]] + [[0]] * 7 + [[6]], dtype=np.uint8)    # value 10 straddles words 0 and 1
    words = pack_bits(three, 3).view(np.uint32)[:, 0]
    assert words[0] == 7 | (5 << 6) | ((6 & 0b11) << 30) and words[1] == 6 >> 2


def test_quant_dense_forward_is_the_dequantized_matmul():
    layer = dense(16, 5, activation="relu")
    quant = QuantDense.from_dense(layer, bits=4, group_size=8)
    weight = quant.dequantized_weight(np.float64)
    np.testing.assert_allclose(weight, rtn_quantize_weight(layer.weight.data, 4, 8).dequantize(np.float64),
                               rtol=1e-6)
    x = np.random.default_rng(1).standard_normal((3, 2, 16))
    bias = layer.bias.data.astype(np.float64)
    compare_with_torch(lambda t: quant(t), lambda t: torch.relu(t @ torch.tensor(weight) + torch.tensor(bias)),
                       x, dtype=np.float64)
    assert check_gradients(lambda t: quant(t), x)
    np.testing.assert_allclose(quant(x.astype(np.float32)).numpy(), np.maximum(x @ weight + bias, 0), atol=1e-5)


def test_quant_dense_with_act_order_g_idx_and_input_scale():
    rng = np.random.default_rng(2)
    layer = dense(12, 4, use_bias=False)
    base = rtn_quantize_weight(layer.weight.data, 3, 4)
    g_idx = rng.permutation(base.g_idx)
    quantized = QuantizedWeight(base.qweight, base.scales, base.zeros, g_idx, 3, 4)
    scale = rng.uniform(0.5, 2.0, 12)
    quant = QuantDense.from_dense(layer, quantized=quantized, input_scale=scale)
    expected = base.scales[g_idx] * (base.qweight - base.zeros[g_idx].astype(float))
    np.testing.assert_allclose(quant.dequantized_weight(np.float64), expected, rtol=1e-6)
    unpacked = quant.quantized_weight()
    np.testing.assert_array_equal(unpacked.qweight, base.qweight)
    np.testing.assert_array_equal(unpacked.zeros, base.zeros)
    x = rng.standard_normal((5, 12))
    np.testing.assert_allclose(quant(x).numpy(), (x / scale) @ expected, rtol=1e-5, atol=1e-6)


def test_rtn_quantize_model_replaces_dense_layers():
    lamina.manual_seed(0)
    model = lamina.nn.Sequential([Dense(16, activation="relu"), LayerNorm(), Dense(8)])
    x = np.random.default_rng(0).standard_normal((4, 32)).astype(np.float32)
    reference = model(x).numpy()
    quantized = rtn_quantize(model, bits=8, group_size=16)
    assert [type(m).__name__ for m in quantized.modules()].count("QuantDense") == 2
    assert [type(m).__name__ for m in model.modules()].count("QuantDense") == 0
    np.testing.assert_allclose(quantized(x).numpy(), reference, atol=0.05)


def test_errors_name_the_problem():
    layer = dense(12, 4)
    with pytest.raises(ValueError, match=r"bits must be one of \(2, 3, 4, 8\), got 5"):
        QuantDense.from_dense(layer, bits=5)
    with pytest.raises(ValueError, match="group_size 8 does not divide in_features 12"):
        QuantDense.from_dense(layer, group_size=8)
    with pytest.raises(TypeError, match="expected a Dense layer, got LayerNorm"):
        QuantDense.from_dense(LayerNorm())
    with pytest.raises(ValueError, match=r"values must lie in \[0, 15\]"):
        pack_bits(np.array([[16]]), 4)
    with pytest.raises(ValueError, match="no Dense layer to quantize"):
        rtn_quantize(lamina.nn.Sequential([LayerNorm()]))
    quant = QuantDense.from_dense(layer, group_size=4)
    with pytest.raises(lamina.errors.ShapeError, match="12 features"):
        quant(np.zeros((2, 5), dtype=np.float32))
