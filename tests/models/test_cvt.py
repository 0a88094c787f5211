"""CvT: the convolutional-projection attention (with and without the class token) against a
float64 torch rewrite of the published formula (outputs, input and parameter gradients, NHWC
maps and conv weights converted at the torch boundary), float64 gradient checks, the class
token joining only the last stage, the shapes of the stages, the published parameter count,
saving and a learning test on the digits."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as TF
from zoo_checks import check_config_and_save_load, random_inputs

import lamina
from helpers import check_gradients, perturb_parameters, randn, shuffled_digits, train_classifier
from lamina import models, optim
from lamina.errors import ShapeError


# -- the torch rewrite (NCHW inside, NHWC at the boundary) -----------------------------------------
def torch_conv_projection(x, conv_w, bn_w, bn_b, stride):
    """BN(dwconv_3x3(x)) with the batch statistics (training), flattened to (N, h w, C)."""
    c = x.shape[-1]
    out = TF.conv2d(x.permute(0, 3, 1, 2), conv_w.permute(0, 3, 1, 2), None, stride=stride, padding=1, groups=c)
    out = TF.batch_norm(out, None, None, bn_w, bn_b, training=True, eps=1e-5)
    return out.permute(0, 2, 3, 1).reshape(x.shape[0], -1, c)


def torch_cvt_attention(x, cls, *p, heads):
    """Q, K, V = proj_{q,k,v}([cls; BN(dwconv(x))]) (stride 1 for q, 2 for k and v);
    out = proj([softmax(Q_j K_j^T / sqrt(C)) V_j]_j), split into the map and the class token."""
    n, h, w, c = x.shape
    convs, denses, (proj_w, proj_b) = [p[0:3], p[3:6], p[6:9]], [p[9:11], p[11:13], p[13:15]], p[15:17]
    q, k, v = (torch.cat([cls, torch_conv_projection(x, *conv, stride)], dim=1) if cls is not None
               else torch_conv_projection(x, *conv, stride) for conv, stride in zip(convs, (1, 2, 2)))
    q, k, v = (t @ weight + bias for t, (weight, bias) in zip((q, k, v), denses))
    split = [t.reshape(n, t.shape[1], heads, c // heads).transpose(1, 2) for t in (q, k, v)]
    weights = torch.softmax(split[0] @ split[1].transpose(-1, -2) / c ** 0.5, dim=-1)
    out = (weights @ split[2]).transpose(1, 2).reshape(n, -1, c) @ proj_w + proj_b
    if cls is None:
        return out.reshape(n, h, w, c)
    return out[:, 1:].reshape(n, h, w, c), out[:, :1]


def _attention_params(layer):
    convs = [p for conv in (layer.conv_proj_q, layer.conv_proj_k, layer.conv_proj_v)
             for p in (conv["conv"].weight, conv["bn"].weight, conv["bn"].bias)]
    return convs + [p for d in (layer.proj_q, layer.proj_k, layer.proj_v, layer.proj) for p in (d.weight, d.bias)]


@pytest.mark.parametrize("with_cls_token, size", [(False, (4, 5)), (True, (5, 4))])
def test_convolutional_projection_attention_matches_the_torch_rewrite(float64, with_cls_token, size):
    layer = models.ConvProjectionAttention(6, num_heads=2, with_cls_token=with_cls_token)
    inputs = [randn(2, *size, 6, seed=1)] + ([randn(2, 1, 6, seed=2)] if with_cls_token else [])
    ours_in = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in inputs]
    layer(*ours_in)
    perturb_parameters(layer)
    params = _attention_params(layer)
    assert len(params) == len(list(layer.parameters()))
    theirs = [torch.tensor(p.numpy(), requires_grad=True) for p in params]
    theirs_in = [torch.tensor(a, requires_grad=True) for a in inputs]
    ours_out, theirs_out = layer(*ours_in), torch_cvt_attention(*theirs_in, *([None] if not with_cls_token else []),
                                                                *theirs, heads=2)
    ours_out = list(ours_out) if with_cls_token else [ours_out]
    theirs_out = list(theirs_out) if with_cls_token else [theirs_out]
    assert ours_out[0].shape == (2, *size, 6)
    for a, b in zip(ours_out, theirs_out):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-12)
    ups = [randn(*a.shape, seed=5 + i) for i, a in enumerate(ours_out)]
    sum(((a * lamina.tensor(u)).sum() for a, u in zip(ours_out, ups)), lamina.tensor(0.0)).backward()
    sum((b * torch.tensor(u)).sum() for b, u in zip(theirs_out, ups)).backward()
    for a, b in [*zip(ours_in, theirs_in), *zip(params, theirs)]:
        np.testing.assert_allclose(a.grad, b.grad.numpy(), rtol=1e-9, atol=1e-11)


def test_keys_and_values_come_from_a_map_strided_by_two():
    layer = models.ConvProjectionAttention(4, 2)
    x = lamina.tensor(randn(1, 7, 6, 4).astype(np.float32))
    assert layer.conv_proj_k(x).shape == layer.conv_proj_v(x).shape == (1, 4, 3, 4)
    assert layer.conv_proj_q(x).shape == (1, 7, 6, 4)


def test_layers_gradients(float64):
    x, cls = randn(2, 4, 3, 4, seed=3), randn(2, 1, 4, seed=4)
    block = models.CvTBlock(4, 2, mlp_ratio=1.5)
    block(lamina.tensor(x))
    perturb_parameters(block, scale=0.1)
    assert check_gradients(lambda t: block(t), x)
    with_cls = models.CvTBlock(4, 2, mlp_ratio=1.5, with_cls_token=True)
    with_cls(lamina.tensor(x), lamina.tensor(cls))
    perturb_parameters(with_cls, scale=0.1)
    assert check_gradients(lambda t, c: F_sum(with_cls(t, c)), x, cls)
    embed = models.ConvEmbed(3, 3, 2, 1)
    assert check_gradients(lambda t: embed(t), x)


def F_sum(outputs):
    """The map and the class token as one tensor, for the gradient check."""
    grid, cls = outputs
    return lamina.functional.concat([lamina.functional.reshape(grid, grid.shape[0], -1, grid.shape[-1]), cls], axis=1)


# -- the model --------------------------------------------------------------------------------
def test_stages_and_the_class_token_of_the_last_stage_only(float64):
    model = models.cvt((4, 6, 8), (1, 2, 1), (1, 2, 2), num_classes=3, input_shape=(32, 24, 2))
    x = randn(2, 32, 24, 2, seed=6)
    model(lamina.tensor(x))
    perturb_parameters(model, scale=0.1)
    assert [b.with_cls_token for i in range(3) for b in getattr(model, f"blocks{i}")] == [False, False, False, True]
    assert model.cls_token.shape == (1, 1, 8) and not hasattr(model, "pos_embed")
    t = model.patch_embed0(lamina.tensor(x))
    assert t.shape == (2, 8, 6, 4)
    t = model.blocks0[0](t)
    t = model.patch_embed1(t)
    assert t.shape == (2, 4, 3, 6)
    t = model.blocks1[1](model.blocks1[0](t))
    t = model.patch_embed2(t)
    assert t.shape == (2, 2, 2, 8)
    grid, cls = model.blocks2[0](t, lamina.tensor(np.broadcast_to(model.cls_token.numpy(), (2, 1, 8))))
    assert grid.shape == (2, 2, 2, 8)
    expected = model.head(model.norm(cls[:, 0])).numpy()
    np.testing.assert_allclose(model(lamina.tensor(x)).numpy(), expected, rtol=1e-12)


def cvt_parameter_count(dims, depths, classes=1000, channels=3, mlp_ratio=4):
    """Counted from the architecture: per stage the embedding conv and LN; per block two LNs,
    three depthwise 3x3 convs (no bias) with BN, q, k, v and the output projection, the MLP;
    the class token, the final LN and the head."""
    total, previous = 0, channels
    for i, (d, depth) in enumerate(zip(dims, depths)):
        k = 7 if i == 0 else 3
        total += k * k * previous * d + d + 2 * d
        attention = 3 * (9 * d + 2 * d) + 4 * (d * d + d)
        mlp = 2 * mlp_ratio * d * d + mlp_ratio * d + d
        total += depth * (4 * d + attention + mlp)
        previous = d
    return total + dims[-1] + 2 * dims[-1] + dims[-1] * classes + classes


def test_parameter_count_matches_the_architecture_and_the_paper():
    model = models.cvt_13()
    model.build((None, 224, 224, 3))
    total = sum(p.size for p in model.parameters())
    assert total == cvt_parameter_count(*models.CVT_CONFIGS["13"][:2])
    assert round(total / 1e6, 1) == 20.0                             # the paper's Table 2, in millions
    assert "cvt_13" in models.list_models(module="classification")


def test_config_and_save_load(tmp_path):
    model = models.cvt((4, 6, 8), (1, 1, 2), (1, 2, 2), num_classes=5, input_shape=(16, 16, 3),
                       stochastic_depth_prob=0.1)
    model.build((None, 16, 16, 3))
    perturb_parameters(model, scale=0.05)
    check_config_and_save_load(model, random_inputs((2, 16, 16, 3), 8), tmp_path / "cvt.lamina")


def test_bad_arguments():
    with pytest.raises(ValueError, match="not divisible"):
        models.ConvProjectionAttention(6, 4)
    with pytest.raises(ValueError, match=r"num_heads=\(1, 2\) must give one value per stage"):
        models.cvt(num_heads=(1, 2))
    with pytest.raises(ShapeError, match=r"expected a map \(N, H, W, 4\) and a class token \(N, 1, 4\)"):
        models.ConvProjectionAttention(4, 2, with_cls_token=True)(np.zeros((1, 3, 3, 4), np.float32))
    with pytest.raises(ShapeError, match=r"class token of shape \(1, 2, 4\); expected \(N, 1, 4\)"):
        models.CvTBlock(4, 2, with_cls_token=True)(np.zeros((1, 3, 3, 4), np.float32), np.zeros((1, 2, 4), np.float32))
    with pytest.raises(ShapeError, match="4-D NHWC"):
        models.cvt_tiny()(np.zeros((2, 32, 32), np.float32))


# -- learning --------------------------------------------------------------------------------------
def test_tiny_cvt_learns_the_digits():
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    x, y = shuffled_digits(32, rng)
    x = x.reshape(len(x), 32, 32, 1)
    model = models.cvt_tiny(10, (32, 32, 1))
    start = time.perf_counter()
    train_classifier(model, x, y, [rng.integers(0, 1400, 32) for _ in range(100)], optim.Adam(model, lr=3e-3))
    seconds = time.perf_counter() - start
    model.eval()
    with lamina.no_grad():
        predicted = model(lamina.tensor(x[1400:])).numpy().argmax(axis=1)
    # measured: 0.94 on the 397 held-out digits (0.91 and 0.90 with seeds 1 and 2; chance: 0.1), in about 5 s
    assert np.mean(predicted == y[1400:]) > 0.6
    assert seconds < 60
