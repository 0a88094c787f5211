"""CaiT: talking-heads attention and class attention against float64 torch rewrites of the
published formulas (outputs, input and parameter gradients), float64 gradient checks of the
blocks, class attention's use of the patches, LayerScale's starting values by depth, the
parameter counts of the presets, saving and a learning test on the digits."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from zoo_checks import check_config_and_save_load, random_inputs

import lamina
from helpers import check_gradients, randn, run_readme_section, train_classifier
from lamina import models, optim
from lamina.data import load_digits
from lamina.errors import ShapeError


def _perturb(module, seed=3, scale=0.3):
    rng = np.random.default_rng(seed)
    for p in module.parameters():
        p.data = (p.data + scale * rng.standard_normal(p.shape)).astype(p.dtype)


# -- torch rewrites of the published formulas --------------------------------------------------
def _heads(x, heads):
    """(N, T, D) -> (N, heads, T, D / heads)."""
    return x.reshape(x.shape[0], x.shape[1], heads, -1).transpose(1, 2)


def torch_talking_heads(x, qkv_w, qkv_b, l_w, l_b, w_w, w_b, proj_w, proj_b, heads):
    """A = P_w softmax(P_l (Q K^T / sqrt(d))), P mixing the head axis; out = proj(A V)."""
    q, k, v = (_heads(t, heads) for t in (x @ qkv_w + qkv_b).chunk(3, dim=-1))
    logits = q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5
    mixed = torch.einsum("nhij,hg->ngij", logits, l_w) + l_b[:, None, None]
    weights = torch.einsum("nhij,hg->ngij", torch.softmax(mixed, dim=-1), w_w) + w_b[:, None, None]
    out = (weights @ v).transpose(1, 2).reshape(x.shape)
    return out @ proj_w + proj_b


def torch_class_attention(x, q_w, q_b, k_w, k_b, v_w, v_b, proj_w, proj_b, heads):
    """The class token's query against keys and values of all tokens: (N, 1, D)."""
    q = _heads(x[:, :1] @ q_w + q_b, heads)
    k, v = _heads(x @ k_w + k_b, heads), _heads(x @ v_w + v_b, heads)
    weights = torch.softmax(q @ k.transpose(-1, -2) / q.shape[-1] ** 0.5, dim=-1)
    out = (weights @ v).transpose(1, 2).reshape(x.shape[0], 1, x.shape[2])
    return out @ proj_w + proj_b


def _dense(layer):
    return [layer.weight, layer.bias]


def _compare(layer, params, reference, x):
    xl = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    theirs = [torch.tensor(p.numpy(), requires_grad=True) for p in params]
    xt = torch.tensor(x, requires_grad=True)
    yl, yt = layer(xl), reference(xt, *theirs)
    np.testing.assert_allclose(yl.numpy(), yt.detach().numpy(), rtol=1e-10, atol=1e-12)
    up = randn(*yl.shape, seed=5)
    (yl * lamina.tensor(up)).sum().backward()
    (yt * torch.tensor(up)).sum().backward()
    np.testing.assert_allclose(xl.grad, xt.grad.numpy(), rtol=1e-9, atol=1e-11)
    for ours, theirs_param in zip(params, theirs):
        np.testing.assert_allclose(ours.grad, theirs_param.grad.numpy(), rtol=1e-9, atol=1e-11)


def test_talking_heads_attention_matches_the_torch_rewrite(float64):
    layer = models.TalkingHeadsAttention(6, num_heads=3)
    x = randn(2, 5, 6, seed=1)
    layer(lamina.tensor(x))
    _perturb(layer)
    params = [*_dense(layer.qkv), *_dense(layer.proj_l), *_dense(layer.proj_w), *_dense(layer.proj)]
    _compare(layer, params, lambda xt, *p: torch_talking_heads(xt, *p, heads=3), x)


def test_class_attention_matches_the_torch_rewrite(float64):
    layer = models.ClassAttention(6, num_heads=2)
    x = randn(2, 5, 6, seed=2)
    assert layer(lamina.tensor(x)).shape == (2, 1, 6)
    _perturb(layer)
    params = [*_dense(layer.q), *_dense(layer.k), *_dense(layer.v), *_dense(layer.proj)]
    _compare(layer, params, lambda xt, *p: torch_class_attention(xt, *p, heads=2), x)


def test_blocks_gradients(float64):
    block = models.CaiTBlock(4, 2, mlp_ratio=1.5, layer_scale_init=0.5)
    head = models.ClassAttentionBlock(4, 2, mlp_ratio=1.5, layer_scale_init=0.5)
    x = randn(2, 3, 4, seed=3)
    for module in (block, head):
        module(lamina.tensor(x))
        _perturb(module, scale=0.1)
        assert check_gradients(lambda t, m=module: m(t), x)


def test_class_attention_updates_only_the_class_token_from_every_patch(float64):
    block = models.ClassAttentionBlock(4, 2, layer_scale_init=1.0)
    x = randn(2, 6, 4, seed=4)
    out = block(lamina.tensor(x)).numpy()
    np.testing.assert_array_equal(out[:, 1:], x[:, 1:])           # the patches pass through
    for patch in range(1, 6):
        moved = x.copy()
        moved[:, patch] += randn(2, 4, seed=patch)
        changed = block(lamina.tensor(moved)).numpy()
        assert np.all(np.abs(changed[:, 0] - out[:, 0]).max(axis=-1) > 1e-4), patch
        np.testing.assert_array_equal(changed[:, 1:], moved[:, 1:])


def test_the_model_adds_the_class_token_after_the_self_attention_stage(float64):
    model = models.cait(2, 4, 2, 2, num_classes=3, input_shape=(4, 4, 1), layer_scale_init=0.5)
    x = randn(2, 4, 4, 1, seed=5)
    model(lamina.tensor(x))
    _perturb(model, scale=0.1)
    patches = model.patch_embed(lamina.tensor(x))
    stage = model.blocks(patches + model.pos_embed)
    assert stage.shape == (2, 4, 4)                                # no class token yet
    cls = np.broadcast_to(model.cls_token.numpy(), (2, 1, 4))
    tokens = model.blocks_token_only(lamina.tensor(np.concatenate([cls, stage.numpy()], axis=1)))
    expected = model.head(model.norm(tokens[:, 0])).numpy()
    np.testing.assert_allclose(model(lamina.tensor(x)).numpy(), expected, rtol=1e-12)


# -- LayerScale ---------------------------------------------------------------------------------
@pytest.mark.parametrize("depth, expected", [(1, 0.1), (12, 0.1), (18, 0.1), (19, 1e-5), (24, 1e-5), (25, 1e-6),
                                             (36, 1e-6)])
def test_layer_scale_starts_at_the_papers_value_for_the_depth(depth, expected):
    assert models.cait_layer_scale_init(depth) == expected


@pytest.mark.parametrize("builder, expected", [(models.cait_xxs24, 1e-5), (models.cait_s24, 1e-5),
                                               (models.cait_xxs36, 1e-6), (models.cait_tiny, 0.1)])
def test_presets_start_every_layer_scale_at_the_depths_value(builder, expected):
    model = builder()
    scales = [m for m in model.modules() if isinstance(m, models.LayerScale)]
    assert len(scales) == 2 * (model.depth + 2)
    for scale in scales:
        assert scale.gamma.shape == (model.dim,)
        np.testing.assert_array_equal(scale.gamma.numpy(), np.float32(expected))
    given = models.cait(4, 8, 2, 2, layer_scale_init=0.3, input_shape=(8, 8, 3))
    assert given.blocks_token_only["1"].ls2.gamma.numpy()[0] == np.float32(0.3)


def test_layer_scale_is_a_per_channel_diagonal():
    scale = models.LayerScale(3, 0.5)
    scale.gamma.data = np.array([1.0, -2.0, 0.5], np.float32)
    x = randn(2, 4, 3).astype(np.float32)
    np.testing.assert_allclose(scale(lamina.tensor(x)).numpy(), x * [1.0, -2.0, 0.5], rtol=1e-6)
    with pytest.raises(ShapeError, match="3 channels"):
        scale(lamina.tensor(np.zeros((2, 4))))


# -- parameter counts ---------------------------------------------------------------------------
def cait_parameter_count(dim, depth, heads, classes=1000, patch=16, size=224, channels=3, mlp_ratio=4,
                         class_blocks=2):
    """Counted from the architecture: patch embedding, positions and class token, the blocks'
    norms, projections, head mixing and LayerScales, the final norm and the head."""
    hidden = mlp_ratio * dim
    mlp = dim * hidden + hidden + hidden * dim + dim
    residual = 2 * 2 * dim + 2 * dim + mlp                       # two LayerNorms, two LayerScales, the MLP
    self_attention = 3 * dim * dim + 3 * dim + 2 * (heads * heads + heads) + dim * dim + dim
    class_attention = 4 * (dim * dim + dim)
    patches = (size // patch) ** 2
    embedding = patch * patch * channels * dim + dim + patches * dim + dim
    return (embedding + depth * (self_attention + residual) + class_blocks * (class_attention + residual)
            + 2 * dim + dim * classes + classes)


@pytest.mark.parametrize("builder, config, published", [(models.cait_xxs24, "xxs24", 12.0),
                                                        (models.cait_xxs36, "xxs36", 17.3),
                                                        (models.cait_s24, "s24", 46.9)])
def test_parameter_counts_match_the_architecture_and_the_paper(builder, config, published):
    total = builder().summary(input_shape=(224, 224, 3)).total_params
    assert total == cait_parameter_count(*models.CAIT_CONFIGS[config])
    assert round(total / 1e6, 1) == published                      # the paper's Table, in millions
    assert builder.__name__ in models.list_models(module="classification")


# -- configs, saving, errors ----------------------------------------------------------------
def test_config_and_save_load(tmp_path):
    model = models.cait(2, 8, 2, 2, num_classes=5, input_shape=(4, 6, 3), stochastic_depth_prob=0.1)
    model.build((None, 4, 6, 3))
    _perturb(model, scale=0.05)
    check_config_and_save_load(model, random_inputs((2, 4, 6, 3), 8), tmp_path / "cait.lamina")


def test_bad_arguments():
    with pytest.raises(ValueError, match="not divisible"):
        models.TalkingHeadsAttention(6, 4)
    with pytest.raises(ValueError, match="not divisible"):
        models.cait(4, 10, 1, 3, input_shape=(8, 8, 3))
    with pytest.raises(ValueError, match="multiple of the patch size"):
        models.cait(16, input_shape=(40, 40, 3))
    model = models.cait(4, 8, 1, 2, num_classes=3, input_shape=(8, 8, 1))
    model.build((None, 8, 8, 1))
    with pytest.raises(ShapeError, match="4 patches of 4x4"):
        model(np.zeros((1, 12, 12, 1), np.float32))
    with pytest.raises(ShapeError, match="expected 8 features"):
        models.ClassAttention(8, 2)(np.zeros((1, 3, 6), np.float32))


# -- learning --------------------------------------------------------------------------------------
def test_tiny_cait_learns_the_digits():
    lamina.manual_seed(0)
    x, y = load_digits(size=8)
    x = x.astype(np.float32) / 255.0
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    x, y = x[order], y[order]
    model = models.cait_tiny(10, (8, 8, 1), patch_size=4)
    start = time.perf_counter()
    train_classifier(model, x, y, [rng.integers(0, 1400, 32) for _ in range(300)],
                     optim.Adam(model.parameters(), lr=1e-2))
    seconds = time.perf_counter() - start
    model.eval()
    with lamina.no_grad():
        predicted = model(lamina.tensor(x[1400:])).numpy().argmax(axis=1)
    # measured: 0.80 on the 397 held-out digits (0.78 with another seed; chance: 0.1), in about 5 s
    assert np.mean(predicted == y[1400:]) > 0.5
    assert seconds < 60


def test_readme_example_runs():
    printed, names = run_readme_section("Class-attention image transformers (CaiT)")
    assert type(names["model"]) is models.CaiT
    scale, scores = printed.split()
    assert float(scale) == 0.1 and scores == "(2,10)"
