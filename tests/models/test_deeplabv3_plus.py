"""DeepLabv3+: the decoder's fusion (plain and separable) against a float64 torch rewrite
(outputs, input and parameter gradients), gradient checks, strides of the low-level and encoder
features, ASPP rates by output stride, parameter counts derived from torchvision's DeepLabv3,
saving, errors and a learning test on thin structures against DeepLabv3 on the same backbone
and against the decoder without its low-level features."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
import torch.nn.functional as tf
from segmentation_shapes import train_and_score
from zoo_checks import check_config_and_save_load, random_inputs

import lamina
from helpers import check_gradients, perturb_parameters, randn, run_readme_section
from lamina import functional as F
from lamina import models, nn
from lamina.errors import ShapeError
from lamina.models.deeplabv3_plus import tiny_backbone


# -- torch rewrite of the decoder -------------------------------------------------------------
def _nchw(x):
    return x.permute(0, 3, 1, 2)


def _conv(x, weight, bias=None, dilation=1, separable=None):
    """NCHW convolution with a lamina (K, f, f, c_in) weight, or a separable pair."""
    if separable is not None:
        depthwise, pointwise = weight, separable
        pad = dilation * (depthwise.shape[1] // 2)
        mid = tf.conv2d(x, depthwise.permute(0, 3, 1, 2), padding=pad, dilation=dilation, groups=x.shape[1])
        return tf.conv2d(mid, pointwise.permute(0, 3, 1, 2), bias)
    return tf.conv2d(x, weight.permute(0, 3, 1, 2), bias, padding=dilation * (weight.shape[1] // 2), dilation=dilation)


def _bn_relu(x, gamma, beta):
    return torch.relu(tf.batch_norm(x, None, None, gamma, beta, training=True, eps=1e-5))


def torch_decoder(low, high, p, separable):
    """l = ReLU(BN(W_1x1 low)); z = [up(high); l]; two 3x3 conv-BN-ReLU; W_cls z (NHWC in and out)."""
    low, high = _nchw(low), _nchw(high)
    reduced = _bn_relu(_conv(low, p["project.0.weight"]), p["project.1.weight"], p["project.1.bias"])
    up = tf.interpolate(high, size=low.shape[2:], mode="bilinear", align_corners=False)
    z = torch.cat([up, reduced], dim=1)
    for i in range(2):
        if separable:
            z = _conv(z, p[f"fuse.{i}.0.depthwise_weight"], separable=p[f"fuse.{i}.0.pointwise_weight"])
        else:
            z = _conv(z, p[f"fuse.{i}.0.weight"])
        z = _bn_relu(z, p[f"fuse.{i}.1.weight"], p[f"fuse.{i}.1.bias"])
    return _conv(z, p["classifier.weight"], p["classifier.bias"]).permute(0, 2, 3, 1)


@pytest.mark.parametrize("separable", [False, True])
def test_decoder_matches_the_torch_rewrite(float64, separable):
    decoder = models.DeepLabV3PlusDecoder(3, low_level_filters=2, filters=4, separable=separable)
    low, high = randn(2, 8, 6, 3, seed=1), randn(2, 2, 3, 5, seed=2)
    decoder(lamina.tensor(low), lamina.tensor(high))
    perturb_parameters(decoder, scale=0.2)
    ours = dict(decoder.named_parameters())
    theirs = {name: torch.tensor(p.numpy(), requires_grad=True) for name, p in ours.items()}
    low_l, high_l = lamina.tensor(low, requires_grad=True), lamina.tensor(high, requires_grad=True)
    low_t, high_t = torch.tensor(low, requires_grad=True), torch.tensor(high, requires_grad=True)
    out_l, out_t = decoder(low_l, high_l), torch_decoder(low_t, high_t, theirs, separable)
    assert out_l.shape == (2, 8, 6, 3)
    np.testing.assert_allclose(out_l.numpy(), out_t.detach().numpy(), rtol=1e-9, atol=1e-11)
    up = randn(*out_l.shape, seed=5)
    (out_l * lamina.tensor(up)).sum().backward()
    (out_t * torch.tensor(up)).sum().backward()
    np.testing.assert_allclose(low_l.grad, low_t.grad.numpy(), rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(high_l.grad, high_t.grad.numpy(), rtol=1e-8, atol=1e-10)
    for name, param in ours.items():
        np.testing.assert_allclose(param.grad, theirs[name].grad.numpy(), rtol=1e-8, atol=1e-10, err_msg=name)


def test_decoder_gradients(float64):
    decoder = models.DeepLabV3PlusDecoder(2, low_level_filters=2, filters=3, separable=True)
    low, high = randn(2, 4, 4, 2, seed=3), randn(2, 2, 2, 3, seed=4)
    decoder(lamina.tensor(low), lamina.tensor(high))
    perturb_parameters(decoder, scale=0.1)
    assert check_gradients(lambda a, b: decoder(a, b), low, high)


# -- shapes, strides, rates -------------------------------------------------------------------
def _stage_shapes(model, size):
    shape, shapes = (None, size, size, 3), {}
    for name, layer in model.backbone.named_children():
        shape = layer.compute_output_shape(shape)
        shapes[name] = shape
    return shapes


@pytest.mark.parametrize("output_stride, rates, encoder_size", [(16, (6, 12, 18), 32), (8, (12, 24, 36), 64)])
def test_resnet50_strides_and_rates(output_stride, rates, encoder_size):
    model = models.deeplabv3_plus_resnet50(output_stride=output_stride)
    shapes = _stage_shapes(model, 512)
    assert shapes["layer1"] == (None, 128, 128, 256)                  # low-level features at stride 4
    assert shapes["layer4"] == (None, encoder_size, encoder_size, 2048)
    assert model.aspp.rates == rates and model.low_level_layer == "layer1"
    assert model.compute_output_shape((None, 512, 512, 3)) == (None, 512, 512, 21)
    decoder_in = model.decoder.compute_output_shape([shapes["layer1"], (None, encoder_size, encoder_size, 256)])
    assert decoder_in == (None, 128, 128, 21)                         # scores at stride 4, then x4


def test_tiny_model_outputs_input_sized_scores_from_stride_4_and_16():
    model = models.deeplabv3_plus_tiny(3, width=2, input_shape=(32, 32, 1))
    low, high = model.encode(lamina.tensor(randn(2, 32, 32, 1).astype(np.float32)))
    assert low.shape == (2, 8, 8, 4) and high.shape == (2, 2, 2, 8)
    assert model(randn(2, 32, 32, 1).astype(np.float32)).shape == (2, 32, 32, 3)
    assert model.eval()(randn(1, 48, 40, 1).astype(np.float32)).shape == (1, 48, 40, 3)


def test_separable_option_uses_separable_convolutions():
    model = models.deeplabv3_plus_tiny(3, width=2, separable=True)
    model.build((None, 32, 32, 1))
    assert isinstance(model.aspp, models.SeparableASPP)
    for i in (1, 2, 3):
        conv = model.aspp.convs[i]["0"]
        assert isinstance(conv, nn.SeparableConv2D) and conv.dilation == (model.aspp.rates[i - 1],) * 2
    assert all(isinstance(model.decoder.fuse[str(i)]["0"], nn.SeparableConv2D) for i in range(2))
    assert model.decoder.project["0"].kernel_size == (1, 1)


# -- parameter counts ---------------------------------------------------------------------------
TORCHVISION_DEEPLABV3_RESNET50 = 39_638_869                      # 21 classes, no aux head


def _separable_saving(c_in, c_out):
    return 9 * c_in * c_out - (9 * c_in + c_in * c_out)


@pytest.mark.parametrize("separable", [False, True])
def test_resnet50_parameter_count_follows_torchvisions_deeplabv3(separable):
    # DeepLabv3's head: ASPP, 3x3 conv 256 -> 256 + BN, 1x1 classifier; DeepLabv3+ keeps all of them
    # (the 3x3 conv as the decoder's second) and adds the 1x1 reduction to 48 + BN and a 3x3 conv
    # 304 -> 256 + BN.
    expected = TORCHVISION_DEEPLABV3_RESNET50 + 256 * 48 + 2 * 48 + 9 * 304 * 256 + 2 * 256
    if separable:
        expected -= 3 * _separable_saving(2048, 256) + _separable_saving(304, 256) + _separable_saving(256, 256)
    model = models.deeplabv3_plus_resnet50(separable=separable)
    total = model.summary(input_shape=(64, 64, 3)).total_params
    assert total == expected == (26_682_725 if separable else 40_352_181)
    assert "deeplabv3_plus_resnet50" in models.list_models(module="segmentation")


# -- configs, saving, errors ----------------------------------------------------------------
def test_config_and_save_load(tmp_path):
    model = models.deeplabv3_plus_tiny(3, width=2, separable=True, input_shape=(16, 16, 1))
    model.build((None, 16, 16, 1))
    perturb_parameters(model, scale=0.05)
    check_config_and_save_load(model, random_inputs((2, 16, 16, 1), 8), tmp_path / "deeplabv3_plus.lamina")


def test_bad_arguments():
    with pytest.raises(ValueError, match="output_stride must be 16 or 8"):
        models.deeplabv3_plus_resnet50(output_stride=32)
    with pytest.raises(ValueError, match="low_level_layer 'layer9'"):
        models.deeplabv3_plus(tiny_backbone(2), low_level_layer="layer9")
    decoder = models.DeepLabV3PlusDecoder(3, 2, 4)
    with pytest.raises(ShapeError, match=r"DeepLabV3PlusDecoder.*\(2, 4, 4, 3\).*\(3, 2, 2, 5\).*same batch"):
        decoder(np.zeros((2, 4, 4, 3), np.float32), np.zeros((3, 2, 2, 5), np.float32))
    with pytest.raises(ShapeError, match="expected two NHWC maps"):
        decoder.compute_output_shape((None, 4, 4, 3))


# -- learning: thin structures ------------------------------------------------------------------
SIZE = 32


def thin_structures(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Noisy 32x32 images with two one-pixel-wide lines (class 1) and a square of side 8-12
    (class 2) of the same brightness on background (class 0)."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 0.3, (n, SIZE, SIZE, 1)).astype(np.float32)
    y = np.zeros((n, SIZE, SIZE), np.int64)
    for i in range(n):
        side = int(rng.integers(8, 13))
        top, left = rng.integers(0, SIZE - side + 1, 2)
        y[i, top:top + side, left:left + side] = 2
        for _ in range(2):
            at, start = rng.integers(0, SIZE, 2)
            line = y[i, at, start:start + int(rng.integers(12, 24))] if rng.random() < 0.5 else \
                y[i, start:start + int(rng.integers(12, 24)), at]
            line[line == 0] = 1
        x[i, ..., 0] += y[i] > 0
    return x, y


def _loss(scores, labels):
    return F.categorical_cross_entropy(scores, labels, from_logits=True)


class _NoLowLevelDecoder(models.DeepLabV3PlusDecoder):
    """The ablation: the decoder's convolutions at stride 4 without the low-level features."""

    def forward(self, low, high):
        return super().forward(low * 0.0, high)


def test_decoder_beats_deeplabv3_and_the_ablation_without_low_level_features_on_thin_structures():
    train, test = thin_structures(192, 10), thin_structures(64, 99)
    start = time.perf_counter()
    lamina.manual_seed(0)
    plus = models.deeplabv3_plus_tiny(3, width=8)
    lamina.manual_seed(0)
    head = nn.Sequential(models.ASPP((6, 12, 18), 32, name="0"), nn.Conv2D(3, 1, name="1"), name="classifier")
    v3 = models.SegmentationModel(tiny_backbone(8), head)             # the same encoder, upsampled x16
    lamina.manual_seed(0)
    ablation = models.DeepLabV3Plus(tiny_backbone(8), models.ASPP((6, 12, 18), 32, name="aspp"),
                                    _NoLowLevelDecoder(3, 8, 32, name="decoder"))
    plus_miou, v3_miou, ablation_miou = (train_and_score(model, _loss, train, test, epochs=8, lr=1e-2)
                                         for model in (plus, v3, ablation))
    # measured: mIoU 0.61 / 0.60 / 0.60 against DeepLabv3's 0.34 / 0.32 / 0.33 and the ablation's
    # 0.535 / 0.526 / 0.541 (seeds 0, 1, 2 of the data and the initialisation), ~15 s
    assert plus_miou > 0.5 and plus_miou > v3_miou + 0.15, (plus_miou, v3_miou)
    assert plus_miou > ablation_miou + 0.03, (plus_miou, ablation_miou)
    assert time.perf_counter() - start < 60


def test_readme_example_runs():
    printed, names = run_readme_section("DeepLabv3+ and CrossViT")
    assert type(names["segmenter"]) is models.DeepLabV3Plus and type(names["classifier"]) is models.CrossViT
    assert printed.split() == ["(2,32,32,3)", "(2,10)"]
