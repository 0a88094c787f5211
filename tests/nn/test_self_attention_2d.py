"""SelfAttention2D (SAGAN's non-local block with BigGAN's pooled keys and values) against a
float64 torch rewrite of the published formula, a float64 gradient check, and its checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import check_gradients, randn
from lamina import nn
from lamina.errors import ShapeError

_PROJECTIONS = ("query", "key", "value", "output")


def torch_self_attention(x, weights, gamma, pooled):
    """y = x + gamma o(softmax(f(x) pool(g(x))^T) pool(h(x))) on NHWC x; 1x1 projections as matrices."""
    n, h, w, _ = x.shape
    f, g, v = x @ weights["query"], x @ weights["key"], x @ weights["value"]
    if pooled:
        def pool(t):
            return TF.max_pool2d(t.permute(0, 3, 1, 2), 2).permute(0, 2, 3, 1)

        g, v = pool(g), pool(v)
    q = f.reshape(n, h * w, -1)
    k, v = g.reshape(n, -1, g.shape[-1]), v.reshape(n, -1, v.shape[-1])
    beta = torch.softmax(q @ k.transpose(1, 2), dim=-1)
    o = (beta @ v).reshape(n, h, w, -1) @ weights["output"]
    return x + gamma * o


def _layer(channels=8, reduction=4, pooled=True, seed=1):
    lamina.set_default_dtype(np.float64)
    layer = nn.SelfAttention2D(channels, reduction=reduction, pooled=pooled)
    layer(np.zeros((1, 4, 4, channels)))
    layer.gamma.data = np.array([0.7])
    rng = np.random.default_rng(seed)
    for name in _PROJECTIONS:
        dense = getattr(layer, name)
        dense.weight.data = rng.standard_normal(dense.weight.shape) * 0.5
    return layer


@pytest.mark.parametrize("pooled", [True, False])
def test_outputs_and_gradients_equal_a_torch_rewrite(pooled):
    layer = _layer(pooled=pooled)
    x = randn(2, 4, 6, 8, seed=2)
    up = randn(2, 4, 6, 8, seed=3)
    xl = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    out = layer(xl)
    (out * lamina.tensor(up)).sum().backward()

    xt = torch.tensor(x, requires_grad=True)
    weights = {name: torch.tensor(getattr(layer, name).weight.data, requires_grad=True) for name in _PROJECTIONS}
    gamma = torch.tensor(layer.gamma.data, requires_grad=True)
    expected = torch_self_attention(xt, weights, gamma, pooled)
    (expected * torch.tensor(up)).sum().backward()

    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xl.grad, xt.grad.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(layer.gamma.grad, gamma.grad.numpy(), rtol=1e-10, atol=1e-12)
    for name in _PROJECTIONS:
        np.testing.assert_allclose(getattr(layer, name).weight.grad, weights[name].grad.numpy(),
                                   rtol=1e-10, atol=1e-12, err_msg=name)


@pytest.mark.parametrize("pooled", [True, False])
def test_float64_gradient_check(pooled):
    layer = _layer(channels=4, reduction=2, pooled=pooled)
    assert check_gradients(lambda x: layer(x), randn(1, 2, 4, 4, seed=4))


def test_a_fresh_block_is_the_identity_and_learns_gamma():
    layer = nn.SelfAttention2D(8)
    x = randn(2, 4, 4, 8, seed=5).astype(np.float32)
    xl = lamina.tensor(x, requires_grad=True)
    out = layer(xl)
    assert float(layer.gamma.data[0]) == 0.0 and np.array_equal(out.numpy(), x)
    out.sum().backward()
    assert np.array_equal(xl.grad, np.ones_like(x)) and abs(float(layer.gamma.grad[0])) > 0


def test_spectral_norm_wraps_every_projection():
    layer = nn.SelfAttention2D(8, spectral_norm=True)
    layer.eval()
    layer(randn(1, 4, 4, 8).astype(np.float32))
    for name in _PROJECTIONS:
        wrapper = getattr(layer, name)
        assert isinstance(wrapper, nn.SpectralNorm)
        assert np.linalg.norm(wrapper.layer.weight.numpy(), 2) == pytest.approx(1.0, rel=1e-3)


def test_bad_inputs_are_refused():
    with pytest.raises(ValueError, match="SelfAttention2D: channels"):
        nn.SelfAttention2D(4, reduction=8)
    layer = nn.SelfAttention2D(8)
    with pytest.raises(ShapeError, match="even height and width"):
        layer(np.zeros((1, 3, 4, 8), np.float32))
    with pytest.raises(ShapeError, match=r"\(batch, h, w, 8\)"):
        layer(np.zeros((1, 4, 4, 6), np.float32))
