"""ScaledStdConv2D: values and input / weight / gain gradients against a float64 torch rewrite
of scaled weight standardization, float64 gradient checks, the statistics of W_hat."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import functional as F
from lamina import nn


def torch_scaled_std_conv(x_nhwc, weight_kffc, gain, bias, gamma, eps, stride, padding, groups=1):
    """The published formula in torch, NCHW inside: W_hat = g gamma (W - mean) / (sqrt(N) sqrt(var + eps))."""
    w = weight_kffc.permute(0, 3, 1, 2)
    fan_in = w[0].numel()
    mean = w.mean(dim=(1, 2, 3), keepdim=True)
    var = w.var(dim=(1, 2, 3), unbiased=False, keepdim=True)
    w_hat = gain.reshape(-1, 1, 1, 1) * gamma * (w - mean) / (fan_in**0.5 * torch.sqrt(var + eps))
    y = torch.nn.functional.conv2d(x_nhwc.permute(0, 3, 1, 2), w_hat, bias, stride=stride, padding=padding,
                                   groups=groups)
    return y.permute(0, 2, 3, 1)


def _layer_fn(layer):
    def run(x, weight, gain, bias):
        layer._parameters["weight"], layer._parameters["gain"], layer._parameters["bias"] = weight, gain, bias
        return layer(x)
    return run


@pytest.mark.parametrize("stride,padding,groups", [(1, 1, 1), (2, 0, 2)])
def test_matches_the_torch_rewrite_in_values_and_gradients(stride, padding, groups):
    layer = nn.ScaledStdConv2D(4, 3, stride=stride, padding=padding, groups=groups, gamma=1.7, eps=1e-4)
    layer.build((None, 6, 6, 4))
    x, w = randn(2, 6, 6, 4), randn(4, 3, 3, 4 // groups, seed=1)
    gain, bias = 1.0 + randn(4, seed=2, scale=0.3), randn(4, seed=3)
    compare_with_torch(
        _layer_fn(layer),
        lambda x, w, g, b: torch_scaled_std_conv(x, w, g, b, 1.7, 1e-4, stride, padding, groups),
        x, w, gain, bias, dtype=np.float64)


def test_float64_gradient_check_through_the_standardization():
    layer = nn.ScaledStdConv2D(3, 2, padding=1, gamma=1.3, eps=1e-3)
    layer.build((None, 4, 4, 2))
    assert check_gradients(_layer_fn(layer), randn(1, 4, 4, 2), randn(3, 2, 2, 2, seed=1),
                           1.0 + randn(3, seed=2, scale=0.2), randn(3, seed=3))
    assert check_gradients(lambda w, g: F.sum(F.mul(nn.scaled_standardized_weight(w, g, 1.5, 1e-4), w)),
                           randn(3, 2, 2, 2, seed=4), 1.0 + randn(3, seed=5, scale=0.2))


def test_each_standardized_filter_has_zero_mean_and_norm_gamma_gain():
    layer = nn.ScaledStdConv2D(5, 3, gamma=2.0, eps=0.0)
    layer.build((None, 8, 8, 3))
    layer.weight.data = (3.0 + 4.0 * randn(*layer.weight.shape)).astype(np.float32)   # far from standardized
    layer.gain.data = np.linspace(0.5, 1.5, 5).astype(np.float32)
    w_hat = layer.standardized_weight().numpy().reshape(5, -1)
    np.testing.assert_allclose(w_hat.mean(axis=1), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.linalg.norm(w_hat, axis=1), 2.0 * layer.gain.numpy(), rtol=1e-5)


def test_unit_variance_input_gives_output_variance_gamma_squared():
    layer = nn.ScaledStdConv2D(64, 3, gamma=1.0, use_bias=False)
    x = lamina.tensor(randn(8, 12, 12, 16, seed=6).astype(np.float32))
    assert abs(float(layer(x).numpy().var()) - 1.0) < 0.1


def test_config_and_errors():
    layer = nn.ScaledStdConv2D(4, (3, 1), stride=2, padding="same", gamma=1.7, eps=1e-5, use_bias=False)
    twin = nn.layer_from_config(nn.layer_to_config(layer))
    assert type(twin) is nn.ScaledStdConv2D and twin.get_config() == layer.get_config()
    assert twin.gamma == 1.7 and twin.eps == 1e-5 and twin.kernel_size == (3, 1)
    with pytest.raises(ValueError, match="ScaledStdConv2D: gamma"):
        nn.ScaledStdConv2D(4, 3, gamma=0.0)
    with pytest.raises(ValueError, match="ScaledStdConv2D: groups=3 must divide filters=4"):
        nn.ScaledStdConv2D(4, 3, groups=3)
