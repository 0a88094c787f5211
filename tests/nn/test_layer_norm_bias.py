"""LayerNorm(bias=False): a weight and no bias, as torch.nn.LayerNorm(bias=False)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nn_checks import gradcheck_layer

import lamina
from helpers import assert_close
from lamina.nn.layer import layer_from_config, layer_to_config
from lamina.nn.sample_norm import LayerNorm


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


@pytest.mark.parametrize("axes, shape", [(-1, (1, 5)), (-1, (3, 4, 6)), ((-2, -1), (2, 3, 4))])
def test_matches_torch(f64, axes, shape):
    rng = np.random.default_rng(len(shape))
    layer = LayerNorm(axes, eps=1e-3, bias=False)
    layer.build(shape)
    k = 1 if isinstance(axes, int) else len(axes)
    normalized = shape[len(shape) - k:]
    assert [name for name, _ in layer.named_parameters()] == ["weight"]
    assert layer.beta is None
    layer.weight.data = 1.0 + 0.5 * rng.standard_normal(normalized)
    ref = torch.nn.LayerNorm(normalized, eps=1e-3, bias=False, dtype=torch.float64)
    with torch.no_grad():
        ref.weight.copy_(torch.from_numpy(layer.weight.numpy()))
    x = rng.standard_normal(shape)
    xl, xt = lamina.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    out, expected = layer(xl), ref(xt)
    assert_close(out.numpy(), expected.detach().numpy(), 1e-10, "output")
    up = rng.standard_normal(shape)
    out.backward(up)
    (expected * torch.from_numpy(up)).sum().backward()
    assert_close(xl.grad, xt.grad.numpy(), 1e-10, "input gradient")
    assert_close(layer.weight.grad, ref.weight.grad.numpy(), 1e-10, "weight gradient")


def test_gradcheck(f64):
    layer = LayerNorm(-1, bias=False)
    x = np.random.default_rng(1).standard_normal((2, 3, 4))
    layer.build(x.shape)
    layer.weight.data = np.random.default_rng(2).standard_normal(4)
    assert gradcheck_layer(layer, x)


def test_no_bias_means_no_shift(f64):
    """The output of each sample has mean 0 across its features when gamma is 1: no beta."""
    x = np.random.default_rng(3).standard_normal((3, 5)) * 4 + 2
    out = LayerNorm(-1, bias=False)(x).numpy()
    np.testing.assert_allclose(out.mean(axis=-1), 0.0, atol=1e-12)
    with_bias = LayerNorm(-1)
    with_bias.build(x.shape)
    with_bias.bias.data = np.full(5, 0.5)
    np.testing.assert_allclose(with_bias(x).numpy().mean(axis=-1), 0.5)


def test_config_and_repr():
    layer = LayerNorm(-1, bias=False)
    layer.build((2, 4))
    config = layer.get_config()
    assert config["bias"] is False
    again = layer_from_config(layer_to_config(layer))
    assert again.get_config() == config and not again.use_bias
    assert "bias=False" in repr(layer)
    assert "bias" not in LayerNorm(-1).get_config()          # older configs stay as they were
    # affine=False drops the weight too, whatever bias says
    plain = LayerNorm(-1, affine=False, bias=False)
    plain.build((2, 4))
    assert plain.parameters() == []
