"""Dense4bit, the Dense layer with a 4-bit weight: forward and input gradients against torch with
the dequantized weight, float64 gradient checks for the input, no gradient to the weight, the
compute dtype, the state dict round trip into a fresh quantized layer, and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, check_second_derivatives, randn
from lamina import nn
from lamina.errors import ShapeError
from lamina.nn import Dense4bit, dequantize_4bit


def _dense(n_in=20, units=6, activation=None, seed=0):
    lamina.manual_seed(seed)
    dense = nn.Dense(units, activation=activation)
    dense(lamina.tensor(np.zeros((1, n_in), np.float32)))
    dense.bias.data = randn(units, seed=seed + 1, scale=0.1).astype(np.float32)
    return dense


@pytest.mark.parametrize("quant_type, compress", [("nf4", True), ("fp4", False)])
def test_forward_and_input_gradient_equal_torch_with_the_dequantized_weight(quant_type, compress):
    dense = _dense(activation="tanh")
    layer = Dense4bit.from_dense(dense, quant_type, blocksize=32, compress_statistics=compress)
    weight = layer.dequantized_weight()
    assert weight.shape == (20, 6) and np.abs(weight - dense.weight.numpy()).max() < 0.3 * np.abs(weight).max()
    np.testing.assert_array_equal(weight.T, dequantize_4bit(layer.weight, layer.quant_state))
    x = randn(3, 4, 20, seed=2).astype(np.float32)
    up = randn(3, 4, 6, seed=3).astype(np.float32)
    ours = lamina.tensor(x, requires_grad=True)
    out = layer(ours)
    (out * lamina.tensor(up)).sum().backward()
    theirs = torch.tensor(x, requires_grad=True)
    expected = torch.tanh(theirs @ torch.tensor(weight) + torch.tensor(dense.bias.numpy()))
    (expected * torch.tensor(up)).sum().backward()
    assert_close(out.numpy(), expected.detach().numpy(), 1e-5)
    assert_close(ours.grad, theirs.grad.numpy(), 1e-5, "dJ/dx")
    assert layer.bias.grad is not None and "weight" not in dict(layer.named_parameters())


def test_float64_gradient_checks_for_the_input():
    layer = Dense4bit.from_dense(_dense(n_in=9, units=4, activation="sigmoid"), blocksize=8)
    assert check_gradients(lambda x: layer(x), randn(5, 9, seed=4))
    assert check_second_derivatives(lambda x: layer(x), randn(2, 9, seed=5))
    out = layer(lamina.tensor(randn(2, 9), dtype=np.float64))
    assert out.dtype == np.float64                              # dequantized in the input's dtype


def test_compute_dtype_casts_the_input_and_the_output_back():
    layer = Dense4bit.from_dense(_dense(), compute_dtype=np.float64)
    x = lamina.tensor(randn(4, 20, seed=6).astype(np.float32), requires_grad=True)
    out = layer(x)
    assert out.dtype == np.float32
    out.sum().backward()
    assert x.grad.dtype == np.float32
    expected = x.numpy().astype(np.float64) @ layer.dequantized_weight(np.float64) + layer.bias.numpy()
    assert_close(out.numpy(), expected, 1e-7)


def test_cached_dequantization_is_reused_until_the_weight_changes():
    layer = Dense4bit.from_dense(_dense(), cache_dequantized=True)
    first = layer.dequantized_weight()
    assert layer.dequantized_weight() is first
    layer.set_weight(np.ones((20, 6), np.float32))
    assert layer.dequantized_weight() is not first and np.all(layer.dequantized_weight() == 1)


def test_state_dict_round_trip_into_a_fresh_quantized_layer():
    layer = Dense4bit.from_dense(_dense(), blocksize=64, compress_statistics=True)
    state = layer.state_dict()
    assert set(state) == {"weight", "weight_absmax", "weight_nested_absmax", "weight_offset", "bias"}
    assert state["weight"].dtype == np.uint8 and state["weight"].size == 20 * 6 // 2
    assert state["weight_absmax"].dtype == np.uint8                  # double quantization
    fresh = Dense4bit(6, blocksize=64, compress_statistics=True)
    x = randn(3, 20, seed=7).astype(np.float32)
    fresh(lamina.tensor(x))                                           # built with its own random weight
    assert not np.allclose(fresh(lamina.tensor(x)).numpy(), layer(lamina.tensor(x)).numpy())
    fresh.load_state_dict(state)
    np.testing.assert_array_equal(fresh(lamina.tensor(x)).numpy(), layer(lamina.tensor(x)).numpy())
    restored = nn.layer_from_config(nn.layer_to_config(layer))
    assert isinstance(restored, Dense4bit) and restored.quant_type == "nf4" and restored.blocksize == 64


def test_to_dense_undoes_the_quantization():
    layer = Dense4bit.from_dense(_dense(activation="relu"))
    dense = layer.to_dense()
    x = lamina.tensor(randn(3, 20, seed=8).astype(np.float32))
    assert isinstance(dense, nn.Dense)
    np.testing.assert_allclose(dense(x).numpy(), layer(x).numpy(), rtol=1e-6, atol=1e-7)


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="blocksize"):
        Dense4bit(4, blocksize=33)
    with pytest.raises(ValueError, match="quant_type"):
        Dense4bit(4, quant_type="nf8")
    with pytest.raises(ValueError, match="compute_dtype"):
        Dense4bit(4, compute_dtype="int8")
    with pytest.raises(ValueError, match="no weights"):
        Dense4bit.from_dense(nn.Dense(3))
    layer = Dense4bit.from_dense(_dense())
    with pytest.raises(ShapeError, match="20 features"):
        layer(lamina.tensor(np.zeros((2, 7), np.float32)))
    with pytest.raises(ShapeError, match=r"shape \(n_in, 6\)"):
        layer.set_weight(np.zeros((20, 5), np.float32))


def test_the_packed_weight_is_what_bitsandbytes_holds_for_the_torch_layout():
    functional = pytest.importorskip("bitsandbytes.functional")
    dense = _dense(n_in=96, units=10)
    layer = Dense4bit.from_dense(dense, blocksize=64, compress_statistics=False)
    linear_weight = torch.tensor(dense.weight.numpy().T.copy())         # torch.nn.Linear's (out, in)
    try:
        packed, state = functional.quantize_4bit(linear_weight, blocksize=64, quant_type="nf4")
    except Exception as error:            # no CPU kernel in this build
        pytest.skip(f"bitsandbytes cannot quantize on the CPU here: {error}")
    np.testing.assert_array_equal(layer.weight, packed.numpy().ravel())
    np.testing.assert_array_equal(layer.weight_absmax, state.absmax.numpy())
