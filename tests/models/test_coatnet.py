"""CoAtNet: the relative attention against a float64 torch rewrite with an explicit gather of
the bias table, float64 gradient checks of the blocks, the parameter count of coatnet_0, a
learning test on the digits and the README example."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import (
    accuracy,
    check_gradients,
    compare_layer_with_torch,
    perturb_parameters,
    randn,
    run_readme_section,
    shuffled_digits,
    train_classifier,
)
from lamina import models, optim


# -- torch rewrite of the published formula ---------------------------------------------------
def torch_relative_attention(x, w_qkv, b_qkv, w_proj, b_proj, table, heads):
    """softmax(q k^T / sqrt(d) + w[i - j]) v over all tokens of an NHWC map, the bias of the
    pair (i, j) read from the row (y_i - y_j + H - 1)(2W - 1) + x_i - x_j + W - 1."""
    batch, height, width, _ = x.shape
    n, out = height * width, w_proj.shape[0]
    d = out // heads
    q, k, v = (t.reshape(batch, n, heads, d).transpose(1, 2)
               for t in (x.reshape(batch, n, -1) @ w_qkv + b_qkv).split(out, dim=-1))
    pairs = []
    for i in range(n):
        for j in range(n):
            (yi, xi), (yj, xj) = divmod(i, width), divmod(j, width)
            pairs.append(table[(yi - yj + height - 1) * (2 * width - 1) + xi - xj + width - 1])
    bias = torch.stack(pairs).reshape(n, n, heads).permute(2, 0, 1)
    weights = torch.softmax(q @ k.transpose(-1, -2) / d ** 0.5 + bias, dim=-1)
    return ((weights @ v).transpose(1, 2).reshape(batch, height, width, out)) @ w_proj + b_proj


@pytest.mark.parametrize("in_channels,grid", [(8, (3, 4)), (6, (2, 2))])
def test_relative_attention_matches_the_torch_rewrite(float64, in_channels, grid):
    layer = models.CoAtNetRelativeAttention(in_channels, 8, grid, head_dim=4)
    x = randn(2, *grid, in_channels, seed=1)
    layer(lamina.tensor(x))
    perturb_parameters(layer)
    params = [layer.qkv.weight, layer.qkv.bias, layer.proj.weight, layer.proj.bias,
              layer.relative_position_bias_table]

    def reference(xt, *p):
        return torch_relative_attention(xt, *p, heads=2)

    compare_layer_with_torch(layer, params, reference, x)


def test_attention_bias_depends_on_the_offset_only(float64):
    layer = models.CoAtNetRelativeAttention(4, 4, (3, 3), head_dim=2)
    layer.build((None, 3, 3, 4))
    bias = layer.relative_position_bias().numpy()                 # (heads, 9, 9)
    assert bias.shape == (2, 9, 9)
    # token 0 -> 4 and token 4 -> 8 are both the offset (-1, -1)
    np.testing.assert_array_equal(bias[:, 0, 4], bias[:, 4, 8])
    assert not np.allclose(bias[:, 0, 4], bias[:, 4, 0])


@pytest.mark.parametrize("downsample", [False, True])
def test_transformer_block_gradients(float64, downsample):
    in_channels = 4 if downsample else 6
    block = models.CoAtNetTransformerBlock(in_channels, 6, 2, head_dim=3, downsample=downsample)
    x = randn(2, 4 if downsample else 2, 4 if downsample else 2, in_channels, seed=2)
    assert block(lamina.tensor(x)).shape == (2, 2, 2, 6)
    perturb_parameters(block, scale=0.1)
    assert check_gradients(lambda t: block(t), x)


def test_tiny_coatnet_gradients(float64):
    model = models.CoAtNet(3, 8, 4, (4, 4, 4, 4), (1, 1, 1, 1), head_dim=2)
    x = randn(2, 8, 8, 1, seed=4)
    assert model(lamina.tensor(x)).shape == (2, 3)
    perturb_parameters(model, scale=0.1)
    model.eval()                                                  # BatchNorm statistics fixed
    assert check_gradients(lambda t: model(t), x)


# -- parameter count ---------------------------------------------------------------------------
def _mbconv_params(cin, cout, stride):
    mid, squeezed = 4 * cout, cout // 4
    count = 2 * cin + cin * mid + 2 * mid + 9 * mid + 2 * mid
    count += mid * squeezed + squeezed + squeezed * mid + mid + mid * cout + cout
    return count + (cin * cout + cout if stride != 1 or cin != cout else 0)


def _transformer_params(cin, cout, grid, head_dim, downsample):
    count = 2 * cin + cin * 3 * cout + 3 * cout + cout * cout + cout + (2 * grid - 1) ** 2 * (cout // head_dim)
    count += 2 * cout + cout * 4 * cout + 4 * cout + 4 * cout * cout + cout
    return count + (cin * cout + cout if downsample else 0)


def coatnet_parameter_count(stem, channels, depths, head_dim, classes, size):
    total = 27 * stem + 2 * stem + 9 * stem * stem + stem
    width, size = stem, size // 2
    for s, (cout, depth) in enumerate(zip(channels, depths)):
        size //= 2
        for b in range(depth):
            cin = width if b == 0 else cout
            total += (_mbconv_params(cin, cout, 2 if b == 0 else 1) if s < 2
                      else _transformer_params(cin, cout, size, head_dim, b == 0))
        width = cout
    return total + 2 * width + width * classes + classes


def test_coatnet_0_parameter_count():
    total = models.coatnet_0().summary(input_shape=(224, 224, 3)).total_params
    assert total == coatnet_parameter_count(*models.COATNET_0, 1000, 224) == 24_446_292
    # the paper: ~25M; the 2.2% below comes from the squeeze-excitation width (a quarter of
    # the block's output width, as torchvision's MaxViT MBConv; a quarter of the expanded
    # width would add 0.77M)
    assert abs(total - 25e6) / 25e6 < 0.03
    assert models.get_model_builder("coatnet_0") is models.coatnet_0


def test_wrong_map_size_is_reported():
    model = models.coatnet_tiny(10, 32)
    with pytest.raises(lamina.errors.ShapeError, match="32x32"):
        model(lamina.tensor(np.zeros((1, 16, 16, 1), np.float32)))


# -- learning ------------------------------------------------------------------------------------
def test_tiny_coatnet_learns_the_digits():
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    x, y = shuffled_digits(32, rng)
    model = models.coatnet_tiny(10, 32)
    model(lamina.tensor(x[:2]))
    train_classifier(model, x, y, (rng.integers(0, 1400, 32) for _ in range(150)),
                     optim.Adam(model.parameters(), lr=1e-2))
    # measured: 0.84 on the 397 held-out digits (chance: 0.1)
    assert accuracy(model, x[1400:], y[1400:]) > 0.5


def test_readme_example():
    printed, names = run_readme_section("CoAtNet and LeViT")
    assert names["logits"].shape == (2, 10)
    assert "coatnet_0 24446292" in printed and "levit_128s 7777058" in printed
