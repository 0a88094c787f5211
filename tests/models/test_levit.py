"""LeViT: the attention with biases (plain and shrinking) against a float64 torch rewrite with
an explicit gather of the bias table, float64 gradient checks of the blocks, the folded
Linear + BatchNorm, the parameter count of levit_128s and a learning test on the digits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import accuracy, check_gradients, compare_layer_with_torch, perturb_parameters, randn, shuffled_digits
from lamina import models, optim


# -- torch rewrite of the published formulas ---------------------------------------------------
def torch_linear_norm(x, weight, gamma, beta, eps):
    """Linear without bias, then BatchNorm1d with the batch statistics over all tokens."""
    y = x @ weight
    flat = y.reshape(-1, y.shape[-1])
    mean, var = flat.mean(0), flat.var(0, unbiased=False)
    return (y - mean) / torch.sqrt(var + eps) * gamma + beta


def _linear_norm_params(layer):
    return [layer.linear.weight, layer.norm.weight, layer.norm.bias]


def torch_biased_attention(q, k, v, table, resolution, stride):
    """softmax(q k^T / sqrt(key_dim) + b[h, |dy| W + |dx|]) v, the query i at row
    stride (i // W'), column stride (i % W') of the map; heads concatenated."""
    height, width = resolution
    query_width = (width - 1) // stride + 1
    columns = []
    for i in range(q.shape[2]):
        qy, qx = divmod(i, query_width)
        for j in range(k.shape[2]):
            ky, kx = divmod(j, width)
            columns.append(table[:, abs(qy * stride - ky) * width + abs(qx * stride - kx)])
    bias = torch.stack(columns, dim=1).reshape(table.shape[0], q.shape[2], k.shape[2])
    weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5 + bias, dim=-1)
    out = weights @ v
    return out.transpose(1, 2).reshape(out.shape[0], out.shape[2], -1)


def torch_levit_attention(x, qkv_w, qkv_g, qkv_b, proj_w, proj_g, proj_b, table, heads, key_dim, eps, resolution):
    batch, tokens, _ = x.shape
    qkv = torch_linear_norm(x, qkv_w, qkv_g, qkv_b, eps).reshape(batch, tokens, heads, -1).transpose(1, 2)
    q, k, v = qkv[..., :key_dim], qkv[..., key_dim:2 * key_dim], qkv[..., 2 * key_dim:]
    out = torch.nn.functional.hardswish(torch_biased_attention(q, k, v, table, resolution, 1))
    return torch_linear_norm(out, proj_w, proj_g, proj_b, eps)


def torch_levit_subsample(x, kv_w, kv_g, kv_b, q_w, q_g, q_b, proj_w, proj_g, proj_b, table, heads, key_dim, eps,
                          resolution, stride):
    batch, tokens, channels = x.shape
    kv = torch_linear_norm(x, kv_w, kv_g, kv_b, eps).reshape(batch, tokens, heads, -1).transpose(1, 2)
    k, v = kv[..., :key_dim], kv[..., key_dim:]
    sub = x.reshape(batch, *resolution, channels)[:, ::stride, ::stride].reshape(batch, -1, channels)
    q = torch_linear_norm(sub, q_w, q_g, q_b, eps).reshape(batch, sub.shape[1], heads, key_dim).transpose(1, 2)
    out = torch.nn.functional.hardswish(torch_biased_attention(q, k, v, table, resolution, stride))
    return torch_linear_norm(out, proj_w, proj_g, proj_b, eps)


@pytest.mark.parametrize("resolution", [(3, 3), (2, 3)])
def test_attention_with_biases_matches_the_torch_rewrite(float64, resolution):
    layer = models.LeViTAttention(6, key_dim=3, num_heads=2, attn_ratio=2, resolution=resolution)
    x = randn(2, resolution[0] * resolution[1], 6, seed=1)
    layer(lamina.tensor(x))
    perturb_parameters(layer)
    params = [*_linear_norm_params(layer.qkv), *_linear_norm_params(layer.proj), layer.attention_biases]
    eps = layer.qkv.norm.eps

    def reference(xt, *p):
        return torch_levit_attention(xt, *p, heads=2, key_dim=3, eps=eps, resolution=resolution)

    compare_layer_with_torch(layer, params, reference, x, rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("resolution", [(4, 4), (3, 5)])
def test_shrinking_attention_matches_the_torch_rewrite(float64, resolution):
    layer = models.LeViTAttentionSubsample(4, 6, key_dim=2, num_heads=2, attn_ratio=2, resolution=resolution)
    x = randn(2, resolution[0] * resolution[1], 4, seed=2)
    out = layer(lamina.tensor(x))
    assert out.shape == (2, ((resolution[0] + 1) // 2) * ((resolution[1] + 1) // 2), 6)
    perturb_parameters(layer)
    params = [*_linear_norm_params(layer.kv), *_linear_norm_params(layer.q), *_linear_norm_params(layer.proj),
              layer.attention_biases]
    eps = layer.kv.norm.eps

    def reference(xt, *p):
        return torch_levit_subsample(xt, *p, heads=2, key_dim=2, eps=eps, resolution=resolution, stride=2)

    compare_layer_with_torch(layer, params, reference, x, rtol=1e-9, atol=1e-11)


def test_bias_index_uses_absolute_offsets():
    index = models.levit_attention_bias_index((3, 4), stride=2)
    assert index.shape == (4, 12)                    # queries at rows 0, 2 and columns 0, 2
    assert index[0, 0] == 0 and index[3, 0] == 2 * 4 + 2 and index[3, 11] == 0 * 4 + 1


def test_blocks_gradients(float64):
    block = models.LeViTBlock(4, key_dim=2, num_heads=2, resolution=2)
    down = models.LeViTDownsample(4, 6, key_dim=2, num_heads=2, resolution=3)
    x = randn(3, 4, 4, seed=3)
    block(lamina.tensor(x))
    down(lamina.tensor(randn(3, 9, 4, seed=4)))
    perturb_parameters(block, scale=0.1)
    perturb_parameters(down, scale=0.1)
    assert check_gradients(lambda t: block(t), x)
    assert check_gradients(lambda t: down(t), randn(3, 9, 4, seed=4))


def test_folded_linear_norm_equals_the_layer_in_evaluation(float64):
    layer = models.LinearNorm(5, 3)
    x = randn(4, 6, 5, seed=6)
    for seed in range(3):                            # move the running statistics
        layer(lamina.tensor(randn(4, 6, 5, seed=seed)))
    perturb_parameters(layer)
    layer.eval()
    weight, bias = layer.folded()
    np.testing.assert_allclose(layer(lamina.tensor(x)).numpy(), x @ weight + bias, rtol=1e-10, atol=1e-12)


def test_distillation_heads_average_in_evaluation():
    model = models.levit_tiny(4, 32)
    x = lamina.tensor(randn(2, 32, 32, 3).astype(np.float32))
    scores, scores_dist = model(x)
    model.eval()
    with lamina.no_grad():
        pooled = model.features(x)
        expected = (model.head(pooled).numpy() + model.head_dist(pooled).numpy()) / 2
        np.testing.assert_allclose(model(x).numpy(), expected, rtol=1e-6)
    assert scores.shape == scores_dist.shape == (2, 4)


# -- parameter count ---------------------------------------------------------------------------
def _linear_norm(cin, cout):
    return cin * cout + 2 * cout


def levit_parameter_count(dims, heads, depths, key_dim, classes, size=224, distilled=True):
    widths = (dims[0] // 8, dims[0] // 4, dims[0] // 2, dims[0])
    total = sum(9 * cin * cout + 2 * cout for cin, cout in zip((3, *widths[:-1]), widths))
    resolution = size // 16
    for s, (dim, h, depth) in enumerate(zip(dims, heads, depths)):
        if s > 0:
            cin, hd = dims[s - 1], dims[s - 1] // key_dim
            total += _linear_norm(cin, hd * 5 * key_dim) + _linear_norm(cin, hd * key_dim)
            total += _linear_norm(hd * 4 * key_dim, dim) + hd * resolution ** 2
            total += _linear_norm(dim, 2 * dim) + _linear_norm(2 * dim, dim)
            resolution = (resolution - 1) // 2 + 1
        for _ in range(depth):
            total += _linear_norm(dim, h * 4 * key_dim) + _linear_norm(h * 2 * key_dim, dim) + h * resolution ** 2
            total += _linear_norm(dim, 2 * dim) + _linear_norm(2 * dim, dim)
    head = 2 * dims[-1] + dims[-1] * classes + classes
    return total + head * (2 if distilled else 1)


def test_levit_128s_parameter_count():
    total = models.levit_128s().summary(input_shape=(224, 224, 3)).total_params
    assert total == levit_parameter_count(*models.LEVIT_128S, 1000) == 7_777_058
    # the paper: 7.8M, counting the distillation head (385,768 of them: BatchNorm + Dense)
    assert abs(total - 7.8e6) / 7.8e6 < 0.005
    plain = models.levit_128s(distilled=False).summary(input_shape=(224, 224, 3)).total_params
    assert total - plain == 2 * 384 + 384 * 1000 + 1000
    assert "levit_128s" in models.list_models(module="classification")


# -- learning ------------------------------------------------------------------------------------
def test_tiny_levit_learns_the_digits():
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    x, y = shuffled_digits(32, rng)
    model = models.levit_tiny(10, 32)
    model(lamina.tensor(x[:2]))
    opt = optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(100):
        rows = rng.integers(0, 1400, 32)
        scores, scores_dist = model(lamina.tensor(x[rows]))    # no teacher: both heads learn the labels
        loss = (lamina.functional.cross_entropy(scores, y[rows])
                + lamina.functional.cross_entropy(scores_dist, y[rows])) * 0.5
        opt.zero_grad()
        loss.backward()
        opt.step()
    # measured: 0.91 on the 397 held-out digits (chance: 0.1)
    assert accuracy(model, x[1400:], y[1400:]) > 0.6
