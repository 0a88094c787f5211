"""DifferentialAttention: outputs, input and parameter gradients against a float64 PyTorch
rewrite of the DIFF Transformer's layer (2H softmax maps, lambda re-parameterisation,
per-head RMSNorm, (1 - lambda_init) scaling); with lambda = 0 it is ordinary attention of the
first halves followed by the norm; causal masking; lambda_init by depth; finite differences;
errors naming the layer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import nn
from torch_linear_sequence import compare_layer_with_torch


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def rope(x, base):
    """Rotate-half RoPE of x (..., T, d) at positions 0 .. T - 1."""
    t, d = x.shape[-2], x.shape[-1]
    angles = torch.arange(t, dtype=torch.float64)[:, None] * base ** (-torch.arange(0, d, 2, dtype=torch.float64) / d)
    first, second = x[..., :d // 2], x[..., d // 2:]
    return torch.cat([first * angles.cos() - second * angles.sin(), first * angles.sin() + second * angles.cos()], -1)


def rms(x, weight, eps):
    return x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + eps) * weight


def differential_reference(layer, causal=True):
    """The paper's layer with torch ops: 2H softmax maps, paired as (1, 2) per head."""
    h, d = layer.num_heads, layer.head_dim

    def reference(x, p):
        n, t, _ = x.shape
        q = (x @ p["q_proj.weight"]).reshape(n, t, 2 * h, d).transpose(1, 2)
        k = (x @ p["k_proj.weight"]).reshape(n, t, 2 * h, d).transpose(1, 2)
        if layer.rotary:
            q, k = rope(q, layer.rope_theta), rope(k, layer.rope_theta)
        v = (x @ p["v_proj.weight"]).reshape(n, t, h, 2 * d).transpose(1, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(d)
        if causal:
            scores = scores.masked_fill(torch.triu(torch.ones(t, t, dtype=torch.bool), 1), float("-inf"))
        maps = scores.softmax(-1).reshape(n, h, 2, t, t)
        lam = (torch.exp((p["lambda_q1"] * p["lambda_k1"]).sum()) - torch.exp((p["lambda_q2"] * p["lambda_k2"]).sum())
               + layer.lambda_init)
        heads = (maps[:, :, 0] - lam * maps[:, :, 1]) @ v
        heads = rms(heads, p["norm_weight"], layer.eps) * (1 - layer.lambda_init)
        return heads.transpose(1, 2).reshape(n, t, 2 * h * d) @ p["out_proj.weight"]

    return reference


def _perturbed(layer):
    """A norm weight away from 1, so that it is tested."""
    layer.norm_weight.data = layer.norm_weight.data + 0.3 * randn(*layer.norm_weight.shape, seed=9)
    return layer


@pytest.mark.parametrize("causal, rotary, layer_index", [(True, False, 1), (False, False, 3), (True, True, 2)])
def test_matches_a_torch_rewrite_in_values_and_gradients(f64, causal, rotary, layer_index):
    layer = _perturbed(nn.DifferentialAttention(16, 2, layer_index=layer_index, rotary=rotary))
    compare_layer_with_torch(layer, differential_reference(layer, causal), randn(2, 6, 16), causal=causal)


def test_with_lambda_zero_it_is_ordinary_attention(f64):
    layer = _perturbed(nn.DifferentialAttention(16, 2, lambda_init=0.0))
    layer.lambda_q2.data, layer.lambda_k2.data = layer.lambda_q1.data.copy(), layer.lambda_k1.data.copy()
    assert abs(layer.lambda_value().item()) < 1e-15
    x = randn(2, 6, 16)
    got = layer(lamina.tensor(x)).numpy()
    w = {name: torch.tensor(np.asarray(p.data)) for name, p in layer.named_parameters()}
    tx = torch.tensor(x)
    q = (tx @ w["q_proj.weight"]).reshape(2, 6, 2, 2, 4)[:, :, :, 0].transpose(1, 2)   # the first halves
    k = (tx @ w["k_proj.weight"]).reshape(2, 6, 2, 2, 4)[:, :, :, 0].transpose(1, 2)
    v = (tx @ w["v_proj.weight"]).reshape(2, 6, 2, 8).transpose(1, 2)
    heads = rms(torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True), w["norm_weight"], 1e-5)
    expected = heads.transpose(1, 2).reshape(2, 6, 16) @ w["out_proj.weight"]
    assert_close(got, expected.numpy(), 1e-10, "lambda = 0")


def test_causal_masking(f64):
    layer = nn.DifferentialAttention(8, 1)
    x = randn(1, 7, 8)
    changed = x.copy()
    changed[:, 4:] = randn(1, 3, 8, seed=2)
    for causal, same in ((True, True), (False, False)):
        before = layer(lamina.tensor(x), causal=causal).numpy()
        after = layer(lamina.tensor(changed), causal=causal).numpy()
        assert np.allclose(after[:, :4], before[:, :4], rtol=0, atol=1e-12) == same


def test_lambda_init_by_depth():
    assert nn.DifferentialAttention(8, 1, layer_index=1).lambda_init == pytest.approx(0.2)
    assert nn.DifferentialAttention(8, 1, layer_index=4).lambda_init == pytest.approx(0.8 - 0.6 * math.exp(-0.9))


def test_gradcheck(f64):
    layer = nn.DifferentialAttention(4, 1, layer_index=2)
    assert check_gradients(layer, randn(1, 4, 4))


def test_config_and_errors():
    layer = nn.DifferentialAttention(8, 2, layer_index=3, rotary=True)
    assert nn.DifferentialAttention(**layer.get_config()).get_config() == layer.get_config()
    with pytest.raises(ValueError, match=r"DifferentialAttention: d_model 12 must split into num_heads 4 heads of "
                                         r"two halves \(2 \* num_heads = 8 must divide it\)"):
        nn.DifferentialAttention(12, 4)
    with pytest.raises(ValueError, match="DifferentialAttention: rotary needs an even half-head size.*got 3"):
        nn.DifferentialAttention(12, 2, rotary=True)
    with pytest.raises(ValueError, match="DifferentialAttention: layer_index"):
        nn.DifferentialAttention(8, 1, layer_index=0)
    with pytest.raises(lamina.errors.ShapeError, match=r"DifferentialAttention.*\(batch, time, 8\)"):
        layer(lamina.tensor(randn(2, 8)))
