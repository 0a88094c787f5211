"""MnasNet, EfficientNetV2 and the ViT variants: torchvision's parameter counts and GFLOPS,
outputs equal to torch models built with torchvision's structure and names, the new blocks'
gradients against torch and by finite differences, configs and saving, and bad arguments."""

import numpy as np
import pytest
import torch_zoo
import torch_zoo_mnasnet_v2 as tm
from test_zoo_regnet_swin import _compare_block
from zoo_checks import check_config_and_save_load, check_published_size, eval_output, random_inputs

import lamina
from helpers import assert_close, randn
from lamina import models
from lamina.analysis import summary
from lamina.models import FusedMBConv, MBConv, MnasNetBlock, load_torchvision_state_dict
from lamina.nn import layer_from_config, layer_to_config

# name -> (parameters with 1000 classes, torchvision's GFLOPS at the builder's default resolution)
PUBLISHED = {
    "mnasnet0_5": (2_218_512, 0.10), "mnasnet0_75": (3_170_208, 0.21), "mnasnet1_0": (4_383_312, 0.31),
    "mnasnet1_3": (6_282_256, 0.53),
    "efficientnet_v2_s": (21_458_488, 8.37), "efficientnet_v2_m": (54_139_356, 24.58),
    "efficientnet_v2_l": (118_515_272, 56.08),
    "vit_b_32": (88_224_232, 4.41), "vit_l_16": (304_326_632, 61.55), "vit_l_32": (306_535_400, 15.38),
    "vit_h_14": (632_045_800, 167.29),
}


# -- architecture --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_torchvision_parameter_counts_and_gflops(name):
    params, gflops = PUBLISHED[name]
    check_published_size(name, params, gflops)


def test_mnasnet_structure():
    model = models.mnasnet0_5()
    assert model.name == "mnasnet0_5" and model["layers"]["0"].filters == 16
    stack = model["layers"]["13"]  # the last stack: 192 * 0.5 = 96 -> 320 * 0.5 = 160 channels, t = 6
    assert stack["0"].out_channels == 160 and stack["0"].layers["0"].filters == 96 * 6
    assert model["layers"]["12"]["1"].use_shortcut and not model["layers"]["12"]["0"].use_shortcut
    assert model["layers"]["12"]["0"].layers["3"].kernel_size == (5, 5)
    assert model["layers"]["1"].momentum == pytest.approx(0.9997)
    rows = {r["name"]: r for r in summary(models.mnasnet1_0).rows}
    assert rows["layers.16"]["output_shape"] == [7, 7, 1280]


def test_efficientnet_v2_structure():
    model = models.efficientnet_v2_s()
    assert model.input_shape == (None, 384, 384, 3) and model["classifier"]["0"].rate == pytest.approx(0.2)
    features = model["features"]
    assert isinstance(features["1"]["0"], FusedMBConv) and len(features["1"]["0"].block) == 1  # t = 1: one conv
    assert isinstance(features["2"]["0"], FusedMBConv) and len(features["2"]["0"].block) == 2
    assert isinstance(features["4"]["0"], MBConv)
    assert features["6"]["14"].stochastic_depth.p == pytest.approx(0.2 * 39 / 40)  # the last of 40 blocks
    assert features["0"]["1"].eps == pytest.approx(1e-3) and features["7"]["0"].filters == 1280
    assert models.efficientnet_v2_l()["classifier"]["0"].rate == pytest.approx(0.4)


def test_vit_variants_structure():
    model = models.vit_h_14(num_classes=10)
    assert model.name == "vit_h_14" and model.patch_size == (14, 14) and len(model.encoder) == 32
    assert model.compute_output_shape((None, 224, 224, 3)) == (None, 10)
    assert models.vit_l_32(image_size=64).input_shape == (None, 64, 64, 3)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        models.vit_b_32(image_size=48)


# -- torchvision weights ------------------------------------------------------------------------
def _check_loaded(model, tmodel, x, what, rtol=1e-5):
    import torch

    load_torchvision_state_dict(model, tmodel.state_dict())  # strict: the key sets are equal
    with torch.no_grad():
        expected = tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    assert_close(eval_output(model, x), expected, rtol, what)


def test_mnasnet_matches_torch_with_loaded_weights():
    tmodel = torch_zoo.randomize(tm.MNASNet(0.5, num_classes=10), seed=1)
    _check_loaded(models.mnasnet0_5(num_classes=10, input_shape=(32, 32, 3)), tmodel, random_inputs((2, 32, 32, 3), 0),
                  "mnasnet0_5 logits")


def test_efficientnet_v2_s_matches_torch_with_loaded_weights():
    tmodel = torch_zoo.randomize(tm.EfficientNetV2(num_classes=10), seed=2)
    _check_loaded(models.efficientnet_v2_s(num_classes=10, input_shape=(32, 32, 3)), tmodel,
                  random_inputs((2, 32, 32, 3), 1), "efficientnet_v2_s logits", rtol=1e-4)


# -- the blocks against torch, in float64 ------------------------------------------------------------
@pytest.mark.parametrize("args, shape", [
    ((8, 8, 3, 1, 3), (2, 5, 5, 8)),     # the shortcut
    ((8, 12, 5, 2, 2), (2, 7, 6, 8)),    # stride 2, 5x5 depthwise, no shortcut
], ids=["shortcut", "stride2"])
def test_mnasnet_block_matches_torch(args, shape):
    cin, cout, k, s, t = args
    _compare_block(MnasNetBlock(cin, cout, k, s, t), tm.MnasNetInvertedResidual(cin, cout, k, s, t),
                   randn(*shape, seed=4), nchw=True, seed=4)


@pytest.mark.parametrize("args, shape", [
    ((4, 3, 1, 8, 8), (2, 5, 5, 8)),     # expand then project, with the shortcut
    ((4, 3, 2, 8, 16), (2, 7, 6, 8)),    # stride 2
    ((1, 3, 1, 8, 8), (2, 5, 5, 8)),     # t = 1: one conv
], ids=["expand", "stride2", "single_conv"])
def test_fused_mbconv_matches_torch(args, shape):
    t, k, s, cin, cout = args
    _compare_block(FusedMBConv(cin, cout, k, s, t, eps=1e-3), tm.FusedMBConv(t, k, s, cin, cout, 0.0),
                   randn(*shape, seed=5), nchw=True, seed=5)


@pytest.mark.parametrize("make", [
    lambda: MnasNetBlock(4, 4, 3, 1, 2),
    lambda: FusedMBConv(4, 4, 3, 1, 2),
], ids=["mnasnet_block", "fused_mbconv"])
def test_block_gradients_by_finite_differences(make):
    lamina.set_default_dtype(np.float64)
    block = make()
    x = lamina.tensor(randn(1, 3, 3, 4), requires_grad=True, dtype=np.float64)
    block.eval()
    block(x)
    for k, p in enumerate(block.parameters()):  # random biases too: no ReLU input sits exactly at its kink
        p.data = randn(*p.shape, seed=10 + k, scale=0.5)
    assert lamina.gradcheck(lambda x_, *_: block(x_), x, *block.parameters())


def test_fused_mbconv_stochastic_depth_drops_the_branch_in_training():
    block = FusedMBConv(8, 8, 3, 1, 4, stochastic_depth_prob=0.999)
    x = lamina.tensor(random_inputs((3, 5, 5, 8), 6))
    block.train()
    np.testing.assert_allclose(block(x).numpy(), x.numpy())


# -- configs, saving, errors ----------------------------------------------------------------------
SMALL = [
    ("mnasnet", lambda: models.mnasnet(0.25, num_classes=3, input_shape=(32, 32, 3))),
    ("efficientnet_v2", lambda: models.efficientnet_v2("s", num_classes=3, input_shape=(32, 32, 3))),
]


@pytest.mark.parametrize("name, build", SMALL, ids=[n for n, _ in SMALL])
def test_config_round_trip_and_save_load(tmp_path, name, build):
    model = build()
    x = random_inputs((2, *model.input_shape[1:]), 7)
    check_config_and_save_load(model, x, tmp_path / f"{name}.safetensors")


def test_vit_variant_config_round_trip():
    model = models.vit_l_32(num_classes=7, image_size=64)
    clone = layer_from_config(layer_to_config(model))
    assert clone.name == "vit_l_32" and clone.get_config() == model.get_config()
    assert clone.compute_output_shape((None, 64, 64, 3)) == (None, 7)


def test_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="alpha"):
        models.mnasnet(0)
    with pytest.raises(ValueError, match="dropout"):
        models.mnasnet(1.0, dropout=1.0)
    with pytest.raises(ValueError, match="kernel_size"):
        MnasNetBlock(8, 8, kernel_size=7)
    with pytest.raises(ValueError, match="stride"):
        MnasNetBlock(8, 8, stride=3)
    with pytest.raises(ValueError, match="expansion"):
        MnasNetBlock(8, 8, expansion=0)
    with pytest.raises(lamina.ShapeError, match=r"8 channels.*in_channels=8"):
        MnasNetBlock(8, 16).compute_output_shape((None, 4, 4, 6))
    with pytest.raises(ValueError, match="variant"):
        models.efficientnet_v2("xl")
    with pytest.raises(ValueError, match="stochastic_depth_prob"):
        models.efficientnet_v2_s(stochastic_depth_prob=1.0)
    with pytest.raises(ValueError, match="expand_ratio"):
        FusedMBConv(8, 8, expand_ratio=0.5)
    with pytest.raises(ValueError, match="stride"):
        FusedMBConv(8, 8, stride=3)
    with pytest.raises(lamina.ShapeError, match=r"8 channels.*in_channels=8"):
        FusedMBConv(8, 16).compute_output_shape((None, 4, 4, 6))
    assert FusedMBConv(8, 16, stride=2).compute_output_shape((None, 5, 6, 8)) == (None, 3, 3, 16)
    assert MnasNetBlock(8, 16, 5, 2).compute_output_shape((None, 5, 6, 8)) == (None, 3, 3, 16)
