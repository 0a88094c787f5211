"""QLoRA: quantize_model_4bit (the walk, skip, size), prepare_model_for_kbit_training, LoRA
adapters on 4-bit bases against torch, merging into a 4-bit base (requantized or float),
the state dict of a quantized model, and a digits MLP quantized to NF4 then adapted to
shifted digits through its adapters alone."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

import lamina
import lamina.saving
from helpers import assert_close, randn
from lamina import functional as F
from lamina import nn
from lamina.data import load_digits
from lamina.nn import (
    Dense4bit,
    LoRADense,
    apply_lora,
    merge_lora,
    prepare_model_for_kbit_training,
    quantize_model_4bit,
    unmerge_lora,
)
from lamina.nn.quant4 import NF4_CODE
from lamina.nn.quantize import model_size_bytes


def _mlp(seed=0, sizes=(16, 32, 4)):
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Dense(sizes[1], activation="relu"), nn.Dense(sizes[2]))
    model(lamina.tensor(np.zeros((1, sizes[0]), np.float32)))
    return model


def _perturb_b(model, seed=1):
    for i, (_, module) in enumerate(model.named_modules()):
        if isinstance(module, nn.LoRAAdapter):
            module.B.data = randn(*module.B.shape, seed=seed + i, scale=0.3).astype(module.B.dtype)


def test_quantize_model_4bit_replaces_the_dense_layers_in_a_copy_and_skips_by_name():
    model = _mlp()
    quantized = quantize_model_4bit(model, quant_type="fp4", blocksize=32, compress_statistics=False)
    assert all(type(m) is nn.Dense for m in model)                  # the original is untouched
    assert all(isinstance(m, Dense4bit) and m.quant_type == "fp4" and m.blocksize == 32 for m in quantized)
    for original, layer in zip(model, quantized):                   # FP4's largest half gap: (1 - 2/3) / 2
        weight = original.weight.numpy()
        assert np.abs(layer.dequantized_weight() - weight).max() <= np.abs(weight).max() / 6
    model.lm_head = nn.Dense(3)
    model.lm_head(lamina.tensor(np.zeros((1, 4), np.float32)))
    partly = quantize_model_4bit(model, inplace=True)
    assert partly is model and type(model.lm_head) is nn.Dense and isinstance(model[0], Dense4bit)
    only = quantize_model_4bit(_mlp(), target="dense_1")
    assert type(only[0]) is nn.Dense and isinstance(only[1], Dense4bit)


def test_the_model_size_drops_about_eightfold():
    model = _mlp(sizes=(256, 256, 64))
    quantized = quantize_model_4bit(model)
    ratio = model_size_bytes(model) / model_size_bytes(quantized)
    # weights 4 bits + 8-bit block maxima per 64 + float32 biases: 32 / 4.127 ~ 7.75 on the weights
    assert 7.0 < ratio < 8.0, ratio


def test_prepare_model_for_kbit_training_freezes_casts_and_makes_inputs_require_grad():
    model = quantize_model_4bit(_mlp())
    model[1].bias.data = model[1].bias.data.astype(np.float16)
    prepared = prepare_model_for_kbit_training(model)
    assert prepared is model and not model.parameters(trainable_only=True)
    assert model[1].bias.dtype == np.float32
    seen = []
    model[0].register_forward_pre_hook(lambda module, inputs: seen.append(getattr(inputs[0], "requires_grad", False)))
    model(np.zeros((2, 16), np.float32))
    with lamina.no_grad():
        model(np.zeros((2, 16), np.float32))
    assert seen == [True, False]


def test_lora_on_a_4bit_base_equals_torch_and_only_the_adapter_gets_gradients():
    model = apply_lora(prepare_model_for_kbit_training(quantize_model_4bit(_mlp())), r=4, alpha=8)
    _perturb_b(model)
    layer = model[0]
    assert isinstance(layer, LoRADense) and isinstance(layer.base, Dense4bit)
    weight = torch.tensor(layer.base.dequantized_weight())
    a = torch.tensor(layer.lora.A.numpy(), requires_grad=True)
    b = torch.tensor(layer.lora.B.numpy(), requires_grad=True)
    x = randn(5, 16, seed=3).astype(np.float32)
    up = randn(5, 32, seed=4).astype(np.float32)
    ours = layer(lamina.tensor(x))
    theirs = torch.relu(torch.tensor(x) @ weight + torch.tensor(layer.base.bias.numpy()) + 2.0 * (
        torch.tensor(x) @ a @ b))
    assert_close(ours.numpy(), theirs.detach().numpy(), 1e-5)
    (ours * lamina.tensor(up)).sum().backward()
    (theirs * torch.tensor(up)).sum().backward()
    assert_close(layer.lora.A.grad, a.grad.numpy(), 1e-5, "dJ/dA")
    assert_close(layer.lora.B.grad, b.grad.numpy(), 1e-5, "dJ/dB")
    assert layer.base.bias.grad is None
    assert {n for n, _ in model.named_parameters(trainable_only=True)} == {
        "dense.lora.A", "dense.lora.B", "dense_1.lora.A", "dense_1.lora.B"}


def test_merging_into_a_4bit_base_requantizes_or_gives_float_layers():
    model = apply_lora(quantize_model_4bit(_mlp()), r=4, alpha=8)
    _perturb_b(model)
    x = lamina.tensor(randn(6, 16, seed=5).astype(np.float32))
    adapted = model(x).numpy()
    floating = merge_lora(copy.deepcopy(model), unload=True, dequantize=True)
    assert all(type(m) is nn.Dense for m in floating)
    assert_close(floating(x).numpy(), adapted, 1e-5)                         # exact up to float rounding
    requantized = merge_lora(copy.deepcopy(model), unload=True)
    assert all(isinstance(m, Dense4bit) for m in requantized)
    assert_close(requantized(x).numpy(), adapted, 0.15)                      # moved by the new 4-bit rounding
    kept = merge_lora(copy.deepcopy(model))
    assert kept[0].lora.merged and isinstance(kept[0].base, Dense4bit)
    np.testing.assert_array_equal(kept(x).numpy(), requantized(x).numpy())
    unmerge_lora(kept)                                      # subtracted and quantized again: not exact
    assert not kept[0].lora.merged
    half_gap = np.diff(NF4_CODE).max() / 2
    for before, merged, after in zip(model, requantized, kept):   # two roundings, each within half a gap
        weight, delta = before.base.dequantized_weight(), before.lora.delta_weight()
        bound = half_gap * 1.01 * (np.abs(weight + delta).max() + np.abs(merged.dequantized_weight() - delta).max())
        error = np.abs(after.base.dequantized_weight() - weight).max()
        assert 0 < error <= bound, (error, bound)


def test_a_quantized_model_state_dict_loads_into_a_fresh_quantized_model():
    model = quantize_model_4bit(_mlp(seed=0))
    fresh = quantize_model_4bit(_mlp(seed=1))
    x = lamina.tensor(randn(3, 16, seed=6).astype(np.float32))
    assert not np.allclose(fresh(x).numpy(), model(x).numpy())
    fresh.load_state_dict(model.state_dict())
    np.testing.assert_array_equal(fresh(x).numpy(), model(x).numpy())
    with pytest.raises(KeyError, match="weight_nested_absmax"):
        quantize_model_4bit(_mlp(), compress_statistics=False).load_state_dict(model.state_dict())


def test_a_quantized_model_saves_and_loads_with_its_4bit_layers(tmp_path):
    model = quantize_model_4bit(_mlp(), quant_type="fp4", blocksize=32)
    path = tmp_path / "model.lamina"
    lamina.saving.save(model, str(path))
    loaded = lamina.saving.load(str(path))
    assert isinstance(loaded[0], Dense4bit) and loaded[0].quant_type == "fp4" and loaded[0].blocksize == 32
    x = randn(3, 16, seed=7).astype(np.float32)
    np.testing.assert_array_equal(loaded(x).numpy(), model(x).numpy())


def test_errors_name_the_problem():
    with pytest.raises(ValueError, match="no Dense layer"):
        quantize_model_4bit(_mlp(), target="missing")
    with pytest.raises(ValueError, match="no weights"):
        quantize_model_4bit(nn.Sequential(nn.Dense(3)))
    with pytest.raises(ValueError, match="blocksize"):
        quantize_model_4bit(_mlp(), blocksize=7)
    with pytest.raises(ValueError, match="quant_type"):
        quantize_model_4bit(_mlp(), quant_type="int4")
    with pytest.raises(ValueError, match="Module"):
        prepare_model_for_kbit_training("model")


# -- QLoRA learning ------------------------------------------------------------------------------

def _train(model, params, x, y, epochs, lr):
    optimizer = lamina.optim.Adam(params, lr=lr)
    order = np.random.default_rng(1)
    for _ in range(epochs):
        for batch in np.array_split(order.permutation(len(x)), len(x) // 64):
            optimizer.zero_grad()
            F.categorical_cross_entropy(model(lamina.tensor(x[batch])), y[batch], from_logits=True).backward()
            optimizer.step()


def _accuracy(model, x, y):
    with lamina.no_grad():
        return float((model(lamina.tensor(x)).numpy().argmax(axis=1) == y).mean())


def test_a_digits_mlp_quantized_to_nf4_then_adapted_to_shifted_digits():
    x, y = load_digits(size=8)
    x = x.astype(np.float32) / 255
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:1350], order[1350:]
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Dense(64, activation="relu"), nn.Dense(10))
    model(lamina.tensor(x[:1]))
    _train(model, model.parameters(), x[train], y[train], epochs=10, lr=5e-3)
    float_accuracy = _accuracy(model, x[test], y[test])
    quantized = quantize_model_4bit(model)
    nf4_accuracy = _accuracy(quantized, x[test], y[test])
    # about 0.980 in float32, 0.978 in NF4
    assert float_accuracy > 0.95 and nf4_accuracy > float_accuracy - 0.02, (float_accuracy, nf4_accuracy)
    assert model_size_bytes(model) / model_size_bytes(quantized) > 6                         # 19240 -> 2754 bytes

    shifted = np.roll(x, 1, axis=2)                          # every digit moved one pixel right
    before = _accuracy(quantized, shifted[test], y[test])
    apply_lora(prepare_model_for_kbit_training(quantized), r=4, alpha=8)
    frozen = {k: np.array(v) for k, v in quantized.state_dict().items() if ".lora." not in k}
    _train(quantized, quantized.parameters(trainable_only=True), shifted[train], y[train], epochs=5, lr=1e-2)
    after = _accuracy(quantized, shifted[test], y[test])
    assert after > before + 0.3 and after > 0.9, (before, after)                             # 0.47 -> 0.94
    state = quantized.state_dict()
    assert all(np.array_equal(state[k], v) for k, v in frozen.items())                     # only adapters moved
