"""ResNeXt and wide ResNets, SqueezeNet, ShuffleNet v2, MobileNet v3, EfficientNet and
ConvNeXt: torchvision's parameter counts and GFLOPS, the summary table, outputs equal to
torch models built with torchvision's structure and names (random weights loaded with
``load_torchvision_state_dict``), the new blocks' gradients against torch and by finite
differences, configs and saving, and bad arguments."""

import numpy as np
import pytest
import torch
import torch_zoo
import torch_zoo_modern as tz
from torch import nn as tnn
from zoo_checks import check_config_and_save_load, check_published_size, eval_output, random_inputs

import lamina
from helpers import assert_close, randn
from lamina import models
from lamina.analysis import summary
from lamina.models import (
    ConvNeXtBlock,
    Fire,
    MBConv,
    MobileNetV3Block,
    ShuffleNetV2Unit,
    SqueezeExcitation,
    load_torchvision_state_dict,
)

# name -> (parameters with 1000 classes, torchvision's GFLOPS at the builder's input size; the
# builders of B1-B7 default to their native resolutions)
PUBLISHED = {
    "resnext50_32x4d": (25_028_904, 4.23), "resnext101_32x8d": (88_791_336, 16.41),
    "resnext101_64x4d": (83_455_272, 15.46), "wide_resnet50_2": (68_883_240, 11.40),
    "wide_resnet101_2": (126_886_696, 22.75),
    "squeezenet1_0": (1_248_424, 0.82), "squeezenet1_1": (1_235_496, 0.35),
    "shufflenet_v2_x0_5": (1_366_792, 0.04), "shufflenet_v2_x1_0": (2_278_604, 0.14),
    "shufflenet_v2_x1_5": (3_503_624, 0.30), "shufflenet_v2_x2_0": (7_393_996, 0.58),
    "mobilenet_v3_small": (2_542_856, 0.06), "mobilenet_v3_large": (5_483_032, 0.22),
    "efficientnet_b0": (5_288_548, 0.39), "efficientnet_b1": (7_794_184, 0.69), "efficientnet_b2": (9_109_994, 1.09),
    "efficientnet_b3": (12_233_232, 1.83), "efficientnet_b4": (19_341_616, None),
    "efficientnet_b5": (30_389_784, None), "efficientnet_b6": (43_040_704, None), "efficientnet_b7": (66_347_960, None),
    "convnext_tiny": (28_589_128, 4.46), "convnext_small": (50_223_688, 8.68), "convnext_base": (88_591_464, 15.36),
    "convnext_large": (197_767_336, 34.36),
}


def _torch_out(tmodel, x_nhwc):
    with torch.no_grad():
        return tmodel(torch.from_numpy(x_nhwc.transpose(0, 3, 1, 2).copy())).numpy()


# -- architecture --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_torchvision_parameter_counts_and_gflops(name):
    params, gflops = PUBLISHED[name]
    check_published_size(name, params, gflops)


def test_grouped_and_wide_bottlenecks():
    block = models.resnext50_32x4d()["layer1"]["0"]
    assert (block.conv1.filters, block.conv2.filters, block.conv2.groups, block.conv3.filters) == (128, 128, 32, 256)
    block = models.resnext101_32x8d()["layer4"]["2"]
    assert (block.conv2.filters, block.conv2.groups) == (32 * 8 * 8, 32)
    block = models.wide_resnet50_2()["layer2"]["0"]
    assert (block.conv2.filters, block.conv2.groups, block.conv3.filters) == (256, 1, 512)
    assert models.resnet(50, groups=1, width_per_group=64).name == "resnet50"


def test_summary_rows_of_the_new_blocks():
    s = summary(models.mobilenet_v3_large)
    rows = {r["name"]: r for r in s.rows}
    se = "features.4.block.2"  # the first squeeze-and-excitation: 72 channels squeezed to 24
    assert rows[f"{se}.avgpool"]["output_shape"] == [1, 1, 72]
    assert rows[f"{se}.fc1"]["params"] == 72 * 24 + 24 and rows[f"{se}.fc1"]["macs"] == 72 * 24
    assert rows["features.4.block.1.0"]["output_shape"] == [28, 28, 72]  # 5x5 depthwise, stride 2
    assert rows["features.16.2"]["output_shape"] == [7, 7, 960]
    assert rows["classifier.0"]["output_shape"] == [1280]

    s = summary(models.convnext_tiny)
    rows = {r["name"]: r for r in s.rows}
    assert rows["features.0.0"]["output_shape"] == [56, 56, 96]  # the 4x4/4 "patchify" stem
    assert rows["features.1.0.block.3"]["output_shape"] == [56, 56, 384]
    assert rows["features.1.0.block.3"]["macs"] == 56 * 56 * 96 * 384
    assert rows["features.7.2.block.0"]["output_shape"] == [7, 7, 768]
    assert "features.5.8.block.5 (Dense)" in str(s)

    s = summary(models.shufflenet_v2_x1_0)
    rows = {r["name"]: r for r in s.rows}
    assert rows["stage2.0.shuffle"]["output_shape"] == [28, 28, 116]
    assert rows["stage2.1.branch2.0"]["input_shape"] == [28, 28, 58]  # half of the channels
    assert rows["conv5.2"]["output_shape"] == [7, 7, 1024]

    s = summary(models.squeezenet1_0)
    rows = {r["name"]: r for r in s.rows}
    assert rows["features.2"]["output_shape"] == [54, 54, 96]  # ceil_mode: (109 - 3) / 2 + 1
    assert rows["features.3.expand3x3"]["output_shape"] == [54, 54, 64]
    assert rows["classifier.1"]["output_shape"] == [13, 13, 1000]


# -- torchvision weights ------------------------------------------------------------------------
def _check_loaded(model, tmodel, x, what):
    load_torchvision_state_dict(model, tmodel.state_dict())  # strict: the key sets are equal
    assert_close(eval_output(model, x), _torch_out(tmodel, x), 1e-5, what)


def test_resnext_matches_torch_with_loaded_weights():
    tmodel = torch_zoo.randomize(tz.resnext((3, 4, 6, 3), 32, 4, num_classes=10), seed=1)
    _check_loaded(models.resnext50_32x4d(num_classes=10, input_shape=(64, 64, 3)), tmodel,
                  random_inputs((2, 64, 64, 3), 0), "resnext50_32x4d logits")


def test_squeezenet_matches_torch_with_loaded_weights():
    tmodel = torch_zoo.randomize(tz.SqueezeNet11(num_classes=10), seed=2)
    # features.4 of a 67x67 image: (33 - 3) / 2 + 1 = 16 without ceil_mode, 17 with it
    _check_loaded(models.squeezenet1_1(num_classes=10, input_shape=(67, 67, 3)), tmodel,
                  random_inputs((2, 67, 67, 3), 1), "squeezenet1_1 scores")


def test_shufflenet_matches_torch_with_loaded_weights():
    tmodel = torch_zoo.randomize(tz.ShuffleNetV2((4, 8, 4), (24, 48, 96, 192, 1024), num_classes=10), seed=3)
    _check_loaded(models.shufflenet_v2_x0_5(num_classes=10, input_shape=(64, 64, 3)), tmodel,
                  random_inputs((2, 64, 64, 3), 2), "shufflenet_v2_x0_5 logits")


def test_mobilenet_v3_matches_torch_with_loaded_weights():
    tmodel = torch_zoo.randomize(tz.MobileNetV3Small(num_classes=10), seed=4)
    _check_loaded(models.mobilenet_v3_small(num_classes=10, input_shape=(64, 64, 3)), tmodel,
                  random_inputs((2, 64, 64, 3), 3) * 2, "mobilenet_v3_small logits")


def test_efficientnet_matches_torch_with_loaded_weights():
    tmodel = torch_zoo.randomize(tz.EfficientNet(1.0, 1.0, num_classes=10), seed=5)
    _check_loaded(models.efficientnet_b0(num_classes=10, input_shape=(64, 64, 3)), tmodel,
                  random_inputs((2, 64, 64, 3), 4), "efficientnet_b0 logits")


def test_convnext_matches_torch_with_loaded_weights():
    tmodel = torch_zoo.randomize(tz.ConvNeXt((3, 3, 9, 3), (96, 192, 384, 768), num_classes=10), seed=6)
    _check_loaded(models.convnext_tiny(num_classes=10, input_shape=(32, 32, 3)), tmodel,
                  random_inputs((2, 32, 32, 3), 5), "convnext_tiny logits")


def test_loader_reports_a_misshaped_layer_scale():
    tmodel = tz.ConvNeXt((1,), (8,), num_classes=3)
    state = tmodel.state_dict()
    state["features.1.0.layer_scale"] = torch.ones(8)
    model = models.convnext((1,), (8,), num_classes=3, input_shape=(8, 8, 3))
    with pytest.raises(lamina.ShapeError, match=r"layer_scale.*\(8,\).*\(8, 1, 1\)"):
        load_torchvision_state_dict(model, state)


# -- the blocks against torch, in float64 --------------------------------------------------------------
def _torch_layout(grad: np.ndarray, lamina_shape) -> np.ndarray:
    if grad.ndim == 4:
        return grad.transpose(0, 2, 3, 1)
    if grad.ndim == 2:
        return grad.T
    return grad.reshape(lamina_shape)


def _compare_block(block, tblock, x, seed=0, rtol=1e-9):
    """Outputs, input gradients and every parameter's gradient of ``block`` against
    ``tblock`` (given the same random weights), in float64 and evaluation mode."""
    lamina.set_default_dtype(np.float64)
    tblock = torch_zoo.randomize(tblock.double(), seed=seed)
    block.build((None, *x.shape[1:]))
    load_torchvision_state_dict(block, tblock.state_dict())
    block.eval()
    xl = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    xt = torch.tensor(x.transpose(0, 3, 1, 2).copy(), requires_grad=True)
    out_l, out_t = block(xl), tblock(xt)
    assert_close(out_l.numpy(), out_t.detach().numpy().transpose(0, 2, 3, 1), 1e-10, "output")
    upstream = randn(*out_l.shape, seed=seed + 1)
    out_l.backward(upstream)
    (out_t * torch.from_numpy(upstream.transpose(0, 3, 1, 2).copy())).sum().backward()
    assert_close(xl.grad, xt.grad.numpy().transpose(0, 2, 3, 1), rtol, "input gradient")
    theirs = dict(tblock.named_parameters())
    for name, p in block.named_parameters():
        assert_close(p.grad, _torch_layout(theirs[name].grad.numpy(), p.shape), rtol, f"gradient of {name}")


def test_squeeze_excitation_matches_torch():
    _compare_block(SqueezeExcitation(6, 4, activation="silu"), tz.SqueezeExcitation(6, 4, tnn.SiLU),
                   randn(2, 5, 4, 6))


def test_fire_matches_torch():
    _compare_block(Fire(3, 4, 5), tz.Fire(6, 3, 4, 5), randn(2, 5, 5, 6, seed=1))


def test_convnext_block_matches_torch():
    _compare_block(ConvNeXtBlock(8), tz.CNBlock(8), randn(2, 9, 9, 8, seed=2))


def test_shufflenet_unit_and_mobilenet_v3_block_match_torch():
    _compare_block(ShuffleNetV2Unit(8, 8, 1), tz.ShuffleUnit(8, 8, 1), randn(2, 5, 5, 8, seed=3), seed=1)
    _compare_block(ShuffleNetV2Unit(6, 8, 2), tz.ShuffleUnit(6, 8, 2), randn(2, 5, 5, 6, seed=4), seed=2)
    # torch's CPU hardsigmoid backward multiplies by 1/6 rounded to float32, even in float64
    _compare_block(MobileNetV3Block(8, 5, 16, 8, True, "hard_swish", 1),
                   tz.MobileNetV3Block(8, 5, 16, 8, True, "HS", 1), randn(2, 6, 6, 8, seed=5), seed=3, rtol=1e-6)


@pytest.mark.parametrize("make, shape", [
    (lambda: SqueezeExcitation(4, 2), (2, 3, 3, 4)),
    (lambda: Fire(2, 2, 3), (1, 4, 4, 3)),
    (lambda: ConvNeXtBlock(3, layer_scale_init=0.5), (1, 4, 4, 3)),
], ids=["squeeze_excitation", "fire", "convnext_block"])
def test_block_gradients_by_finite_differences(make, shape):
    lamina.set_default_dtype(np.float64)
    block = make()
    x = lamina.tensor(randn(*shape), requires_grad=True, dtype=np.float64)
    block(x)
    for k, p in enumerate(block.parameters()):  # random biases too: no ReLU input sits exactly at its kink
        p.data = randn(*p.shape, seed=10 + k, scale=0.5)
    assert lamina.gradcheck(lambda x_, *_: block(x_), x, *block.parameters())


def test_stochastic_depth_drops_whole_residual_branches_in_training():
    """With p close to 1 nearly every sample's branch is dropped: the block is its shortcut."""
    block = MBConv(8, 8, stochastic_depth_prob=0.999)
    x = lamina.tensor(random_inputs((4, 5, 5, 8), 6))
    block.train()
    np.testing.assert_allclose(block(x).numpy(), x.numpy())
    block.eval()
    assert not np.allclose(block(x).numpy(), x.numpy())


# -- configs, saving, errors ----------------------------------------------------------------------
SMALL = [
    ("resnext", lambda: models.resnet(50, num_classes=3, input_shape=(16, 16, 3), groups=4, width_per_group=2)),
    ("squeezenet", lambda: models.squeezenet1_1(num_classes=3, input_shape=(35, 35, 3))),
    ("shufflenet", lambda: models.shufflenet_v2_x0_5(num_classes=3, input_shape=(32, 32, 3))),
    ("mobilenet_v3", lambda: models.mobilenet_v3_small(num_classes=3, input_shape=(32, 32, 3), width_mult=0.5)),
    ("efficientnet", lambda: models.efficientnet(0.25, 0.5, num_classes=3, input_shape=(32, 32, 3))),
    ("convnext", lambda: models.convnext((1, 2), (8, 16), num_classes=3, input_shape=(16, 16, 3))),
]


@pytest.mark.parametrize("name, build", SMALL, ids=[n for n, _ in SMALL])
def test_config_round_trip_and_save_load(tmp_path, name, build):
    model = build()
    x = random_inputs((2, *model.input_shape[1:]), 7)
    check_config_and_save_load(model, x, tmp_path / f"{name}.safetensors")


def test_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="groups"):
        models.resnet(18, groups=32, width_per_group=4)
    with pytest.raises(ValueError, match="width_per_group"):
        models.resnet(50, width_per_group=0)
    with pytest.raises(ValueError, match="version"):
        models.squeezenet("1_2")
    with pytest.raises(ValueError, match="width"):
        models.shufflenet_v2("0.75")
    with pytest.raises(ValueError, match="out_channels"):
        ShuffleNetV2Unit(8, 7, 2)
    with pytest.raises(ValueError, match="in_channels must equal"):
        ShuffleNetV2Unit(8, 16, 1)
    with pytest.raises(ValueError, match="arch"):
        models.mobilenet_v3("medium")
    with pytest.raises(ValueError, match="setting"):
        models.mobilenet_v3(setting=[(16, 3, 16, 16, False, "gelu", 1)])
    with pytest.raises(ValueError, match="width_mult"):
        models.efficientnet(width_mult=0)
    with pytest.raises(ValueError, match="stochastic_depth_prob"):
        models.efficientnet_b0(stochastic_depth_prob=1.0)
    with pytest.raises(ValueError, match="block_setting"):
        models.convnext((3, 3), (96,))
    with pytest.raises(ValueError, match="squeeze_channels"):
        SqueezeExcitation(8, 0)
    with pytest.raises(ValueError, match="activation"):
        SqueezeExcitation(8, 2, activation="swoosh")
    with pytest.raises(lamina.ShapeError, match=r"8 channels.*\(None, 4, 4, 6\)|\(None, 4, 4, 6\).*8 channels"):
        SqueezeExcitation(8, 2).compute_output_shape((None, 4, 4, 6))
    with pytest.raises(lamina.ShapeError, match="16 channels"):
        ConvNeXtBlock(16).compute_output_shape((None, 4, 4, 8))
    with pytest.raises(lamina.ShapeError, match="in_channels=8"):
        MBConv(8, 8).compute_output_shape((None, 4, 4, 6))
    assert MBConv(8, 16, 5, stride=2).compute_output_shape((None, 7, 7, 8)) == (None, 4, 4, 16)
    assert Fire(4, 6, 10).compute_output_shape((None, 5, 5, 3)) == (None, 5, 5, 16)
