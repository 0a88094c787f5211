"""BitLinear (BitNet b1.58): the forward pass and the straight-through gradients against a torch
rewrite of the published quantizers, the gradient of the recorded path in float64, the packed
int8 ternary form and its inference path, saving, a digits MLP against a float one, and errors."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, randn, run_readme_section
from lamina import functional as F
from lamina import nn
from lamina.autograd import no_grad
from lamina.data import load_digits, train_val_test_split
from lamina.nn.dense import linear


def _torch_bitlinear(x, w, b, norm, eps):
    """The BitNet b1.58 layer in torch: RMSNorm, absmax int8 activations per token, absmean
    ternary weights, both through x + (q(x) - x).detach()."""
    if norm:
        x = x * torch.rsqrt((x * x).mean(dim=-1, keepdim=True) + eps)
    a_scale = 127.0 / x.abs().max(dim=-1, keepdim=True).values.clamp(min=1e-5)
    x_q = (x * a_scale).round().clamp(-128, 127) / a_scale
    w_scale = 1.0 / w.abs().mean().clamp(min=1e-5)
    w_q = (w * w_scale).round().clamp(-1, 1) / w_scale
    y = (x + (x_q - x).detach()) @ (w + (w_q - w).detach())
    return y if b is None else y + b


def _layer(n_in, units, dtype, seed=0, **kwargs):
    lamina.manual_seed(seed)
    layer = nn.BitLinear(units, **kwargs)
    with no_grad():
        layer(np.zeros((1, n_in), np.float32))        # builds the weights and records the input shape
    layer.to(dtype)
    if layer.use_bias:
        layer.bias.data = randn(units, seed=seed + 1, scale=0.1).astype(dtype)
    return layer


@pytest.mark.parametrize("dtype, rtol", [(np.float32, 1e-5), (np.float64, 1e-12)])
@pytest.mark.parametrize("norm, use_bias", [(True, False), (False, True)])
def test_forward_and_straight_through_gradients_match_a_torch_rewrite(dtype, rtol, norm, use_bias):
    layer = _layer(6, 4, dtype, norm=norm, use_bias=use_bias)
    x_np = randn(2, 3, 6, seed=2).astype(dtype)
    up = randn(2, 3, 4, seed=3).astype(dtype)
    x = lamina.tensor(x_np, requires_grad=True, dtype=dtype)
    y = layer(x)
    (y * lamina.tensor(up, dtype=dtype)).sum().backward()
    xt = torch.tensor(x_np, requires_grad=True)
    wt = torch.tensor(layer.weight.data, requires_grad=True)
    bt = torch.tensor(layer.bias.data, requires_grad=True) if use_bias else None
    yt = _torch_bitlinear(xt, wt, bt, norm, layer.eps)
    (yt * torch.tensor(up)).sum().backward()
    assert y.dtype == dtype
    np.testing.assert_allclose(y.numpy(), yt.detach().numpy(), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(x.grad, xt.grad.numpy(), rtol=rtol, atol=rtol)
    np.testing.assert_allclose(layer.weight.grad, wt.grad.numpy(), rtol=rtol, atol=rtol)
    if use_bias:
        np.testing.assert_allclose(layer.bias.grad, bt.grad.numpy(), rtol=rtol, atol=rtol)


def test_the_forward_pass_sees_ternary_weights_and_8_bit_activations():
    layer = _layer(5, 3, np.float64, norm=False)
    x = randn(4, 5, seed=4)
    w_int, beta = nn.absmean_ternary(layer.weight.data)
    assert beta == pytest.approx(np.abs(layer.weight.data).mean())
    x_int, gamma = nn.absmax_quantize(x)
    assert set(np.unique(x_int)) <= set(range(-128, 128)) and np.abs(x_int).max(axis=1).tolist() == [127] * 4
    np.testing.assert_allclose(gamma[:, 0], np.abs(x).max(axis=1))
    with no_grad():
        y = layer(lamina.tensor(x, dtype=np.float64)).numpy()
    np.testing.assert_allclose(y, (x_int * gamma / 127) @ (w_int * beta), rtol=1e-12)


def test_the_recorded_path_passes_a_float64_gradient_check():
    """With the quantization offsets q(v) - v held fixed (what the straight-through estimator
    records), the layer is rms_norm then a product: its gradients are checked numerically and
    are the layer's own."""
    layer = _layer(5, 3, np.float64)
    x0 = randn(3, 5, seed=6)
    xn = x0 / np.sqrt((x0 * x0).mean(axis=-1, keepdims=True) + layer.eps)
    x_int, gamma = nn.absmax_quantize(xn)
    x_offset = x_int * gamma / 127 - xn
    w_int, beta = nn.absmean_ternary(layer.weight.data)
    w_offset = w_int * beta - layer.weight.data

    def recorded(x, w):
        return linear(F.rms_norm(x, 5, eps=layer.eps) + lamina.tensor(x_offset, dtype=np.float64),
                      w + lamina.tensor(w_offset, dtype=np.float64))

    assert check_gradients(recorded, x0, layer.weight.data)
    x = lamina.tensor(x0, requires_grad=True, dtype=np.float64)
    w = lamina.tensor(layer.weight.data, requires_grad=True, dtype=np.float64)
    up = randn(3, 3, seed=7)
    (recorded(x, w) * lamina.tensor(up, dtype=np.float64)).sum().backward()
    x_layer = lamina.tensor(x0, requires_grad=True, dtype=np.float64)
    (layer(x_layer) * lamina.tensor(up, dtype=np.float64)).sum().backward()
    np.testing.assert_allclose(x_layer.grad, x.grad, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(layer.weight.grad, w.grad, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("norm, use_bias, activation", [(True, False, None), (False, True, "relu")])
def test_packed_inference_equals_the_eval_forward(norm, use_bias, activation):
    layer = _layer(8, 5, np.float32, norm=norm, use_bias=use_bias, activation=activation)
    packed = layer.pack()
    assert packed.weight.dtype == np.int8 and packed.weight.shape == (8, 5)
    assert set(np.unique(packed.weight)) <= {-1, 0, 1} and len(np.unique(packed.weight)) == 3
    assert packed.scale == pytest.approx(float(np.abs(layer.weight.data).mean()))
    x = randn(2, 4, 8, seed=8).astype(np.float32)
    layer.eval()
    with no_grad():
        expected = layer(x).numpy()
    got = packed(x)
    assert got.dtype == np.float32 and got.shape == (2, 4, 5)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)


def test_saving_round_trips_the_layer(tmp_path):
    layer = _layer(4, 3, np.float32, use_bias=True, norm=False, eps=1e-5, activation="tanh")
    path = tmp_path / "bit.safetensors"
    lamina.save(layer, path)
    twin = lamina.load(path)
    assert type(twin) is nn.BitLinear and twin.get_config() == layer.get_config()
    x = randn(3, 4, seed=9).astype(np.float32)
    with no_grad():
        np.testing.assert_array_equal(twin(x).numpy(), layer(x).numpy())


def _digits():
    x, y = load_digits(size=8)
    x = x.reshape(len(x), -1).astype(np.float32) / 255
    (xtr, ytr), _, (xte, yte) = train_val_test_split(x, y, val=0.0, test=0.25, seed=0)
    return xtr, ytr, xte, yte


def _accuracy_after_training(layer_type, epochs=10, batch=64):
    xtr, ytr, xte, yte = _digits()
    lamina.manual_seed(0)
    model = nn.Sequential(layer_type(64, activation="relu"), layer_type(10))
    model.build((None, 64))
    optimizer = lamina.optim.Adam(model, lr=0.003)
    order = np.random.default_rng(0)
    for _ in range(epochs):
        idx = order.permutation(len(xtr))
        for start in range(0, len(idx), batch):
            rows = idx[start:start + batch]
            optimizer.zero_grad()
            F.cross_entropy(model(xtr[rows]), ytr[rows]).backward()
            optimizer.step()
    model.eval()
    with no_grad():
        return float((model(xte).numpy().argmax(axis=1) == yte).mean())


def test_a_ternary_mlp_learns_digits_close_to_a_float_mlp():
    begin = time.perf_counter()
    float_accuracy = _accuracy_after_training(nn.Dense)
    ternary_accuracy = _accuracy_after_training(nn.BitLinear)
    print(f"digits MLP: float {float_accuracy:.3f}, BitLinear {ternary_accuracy:.3f} "
          f"({time.perf_counter() - begin:.1f} s)")
    assert ternary_accuracy > 0.8                    # chance is 0.1
    assert ternary_accuracy > float_accuracy - 0.06


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="BitLinear: eps"):
        nn.BitLinear(3, eps=0.0)
    with pytest.raises(RuntimeError, match="pack"):
        nn.BitLinear(3).pack()
    with pytest.raises(ValueError, match=r"PackedBitLinear: expected an input of shape \(\.\.\., 4\)"):
        _layer(4, 2, np.float32).pack()(np.zeros((2, 5), np.float32))
    with pytest.raises(lamina.errors.ShapeError, match="BitLinear"):
        _layer(4, 2, np.float32)(np.zeros((2, 5), np.float32))


def test_readme_bitlinear_example_runs():
    printed, names = run_readme_section("Ternary layers: BitNet b1.58")
    assert "ternary values" in printed
    assert set(np.unique(names["packed"].weight)) <= {-1, 0, 1}
