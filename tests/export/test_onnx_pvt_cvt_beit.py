"""ONNX export of PVT v2, CvT and BEiT's classifier, their blocks and attentions: ONNX Runtime
gives lamina's evaluation outputs for two batch sizes, with every parameter (and BatchNorm's
running statistics) moved off its initial value, and the export leaves the weights as they
were; the forms without an ONNX graph are refused by name."""

from __future__ import annotations

import numpy as np
import pytest
from onnx_checks import check_export, perturb

import lamina
from helpers import run_readme_section
from lamina import models, nn
from lamina.export import export_onnx

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


def _moved_statistics(model: nn.Module, seed: int = 5) -> nn.Module:
    """Every BatchNorm's running mean and variance off 0 and 1 (else they hide a term)."""
    rng = np.random.default_rng(seed)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm):
            shape = module.running_mean.shape
            module.running_mean = (0.5 * rng.standard_normal(shape)).astype(np.float32)
            module.running_var = rng.uniform(0.5, 2.0, shape).astype(np.float32)
    return model


def _built(model: nn.Module, input_shape, seed: int = 7) -> nn.Module:
    lamina.manual_seed(0)
    model.eval()
    model(lamina.tensor(np.zeros((1, *input_shape), dtype=np.float32)))
    return _moved_statistics(perturb(model, seed=seed))


def _check(model: nn.Module, tmp_path, input_shape, what: str, **options):
    return check_export(_built(model, input_shape), tmp_path, input_shape, what, **options)


# -- PVT v2 -----------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [dict(sr_ratio=2), dict(sr_ratio=1), dict(linear=True),
                                     dict(sr_ratio=2, qkv_bias=False)])
def test_spatial_reduction_attention_exports(options, tmp_path):
    model = nn.Sequential(models.SpatialReductionAttention(6, num_heads=2, **options))
    _check(model, tmp_path, (6, 4, 6), f"SpatialReductionAttention {options}")


def test_spatial_reduction_attention_pools_a_map_that_7_does_not_divide(tmp_path):
    """The linear form's adaptive 7 x 7 pooling of a 10 x 9 map (windows that overlap)."""
    model = nn.Sequential(models.SpatialReductionAttention(4, num_heads=1, linear=True))
    _check(model, tmp_path, (10, 9, 4), "linear SpatialReductionAttention, 10 x 9")


@pytest.mark.parametrize("linear", [False, True])
def test_pvt_embedding_ffn_and_block_export(linear, tmp_path):
    model = nn.Sequential(models.OverlapPatchEmbed(6, 3, 2), models.PVTv2FFN(6, 9, linear=linear),
                          models.PVTv2Block(6, 2, mlp_ratio=1.5, sr_ratio=2, linear=linear, stochastic_depth_prob=0.3))
    _check(model, tmp_path, (8, 10, 3), f"PVT v2 blocks, linear={linear}")


@pytest.mark.parametrize("opset", [17, 18])
def test_a_tiny_pvt_v2_exports(opset, tmp_path):
    model = models.pvt_v2((4, 6, 8, 8), (1, 2, 1, 1), (1, 2, 2, 2), (2, 2, 2, 2), (4, 2, 1, 1), num_classes=3,
                          input_shape=(32, 24, 2), stochastic_depth_prob=0.2)
    _check(model, tmp_path, (32, 24, 2), f"PVT v2, opset {opset}", rtol=1e-4, opset=opset)


def test_a_tiny_linear_pvt_v2_exports(tmp_path):
    model = models.pvt_v2((4, 6, 8, 8), (1, 1, 1, 1), (1, 2, 2, 2), (2, 2, 2, 2), (4, 2, 1, 1), linear=True,
                          num_classes=5, input_shape=(32, 32, 3))
    _check(model, tmp_path, (32, 32, 3), "linear PVT v2", rtol=1e-4)


def test_a_map_smaller_than_the_reduction_is_refused(tmp_path):
    model = nn.Sequential(models.SpatialReductionAttention(4, 2, sr_ratio=4, name="sra"))
    _built(model, (4, 4, 4))
    with pytest.raises((NotImplementedError, lamina.errors.ShapeError), match="sra"):
        export_onnx(model, tmp_path / "model.onnx", input_shape=(3, 8, 4))


# -- CvT ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [dict(), dict(qkv_bias=False)])
def test_conv_projection_attention_exports(options, tmp_path):
    model = nn.Sequential(models.ConvProjectionAttention(6, num_heads=2, **options))
    _check(model, tmp_path, (5, 6, 6), f"ConvProjectionAttention {options}")


def test_cvt_embedding_and_block_export(tmp_path):
    model = nn.Sequential(models.ConvEmbed(4, 3, 2, 1), models.CvTBlock(4, 2, mlp_ratio=1.5, stochastic_depth_prob=0.3),
                          models.CvTBlock(4, 1))
    _check(model, tmp_path, (9, 8, 3), "CvT blocks")


@pytest.mark.parametrize("opset", [17, 18])
def test_a_tiny_cvt_exports(opset, tmp_path):
    model = models.cvt((4, 6, 8), (1, 2, 2), (1, 2, 2), mlp_ratio=2.0, num_classes=3, input_shape=(32, 24, 2),
                       stochastic_depth_prob=0.2)
    _check(model, tmp_path, (32, 24, 2), f"CvT, opset {opset}", rtol=1e-4, opset=opset)


@pytest.mark.parametrize("make", [lambda: models.ConvProjectionAttention(4, 2, with_cls_token=True, name="cls_layer"),
                                  lambda: models.CvTBlock(4, 2, with_cls_token=True, name="cls_layer")])
def test_a_cvt_layer_with_a_class_token_alone_is_refused(make, tmp_path):
    layer = make()
    layer(lamina.tensor(np.zeros((1, 4, 4, 4), np.float32)), lamina.tensor(np.zeros((1, 1, 4), np.float32)))
    with pytest.raises(NotImplementedError, match="cls_layer.*with_cls_token"):
        export_onnx(layer, tmp_path / "model.onnx", input_shape=(4, 4, 4))


# -- BEiT ---------------------------------------------------------------------------------------
@pytest.mark.parametrize("qkv_bias", [True, False])
def test_beit_attention_exports_its_relative_position_bias(qkv_bias, tmp_path):
    model = nn.Sequential(models.BEiTAttention(8, num_heads=2, grid_size=(2, 3), qkv_bias=qkv_bias))
    _check(model, tmp_path, (7, 8), f"BEiTAttention, qkv_bias={qkv_bias}")


def test_beit_blocks_export(tmp_path):
    model = nn.Sequential(models.BEiTBlock(8, 2, (3, 2), mlp_ratio=1.5), models.BEiTBlock(8, 4, (3, 2)))
    _check(model, tmp_path, (7, 8), "BEiTBlock")


@pytest.mark.parametrize("opset", [17, 18])
def test_a_tiny_beit_classifier_exports(opset, tmp_path):
    model = models.beit((8, 12), 4, num_classes=5, dim=8, depth=2, num_heads=2, mlp_ratio=2.0, vocab_size=6,
                        channels=2)
    _check(model, tmp_path, (8, 12, 2), f"BEiT, opset {opset}", rtol=1e-4, opset=opset)


def test_beit_for_masked_image_modelling_only_is_refused(tmp_path):
    model = models.beit(8, 4, num_classes=None, dim=8, depth=1, num_heads=2, vocab_size=6, channels=1,
                        name="mim_beit")
    with pytest.raises(NotImplementedError, match="mim_beit.*num_classes"):
        export_onnx(model, tmp_path / "model.onnx")


def test_beit_at_another_image_size_is_refused(tmp_path):
    model = models.beit(8, 4, num_classes=3, dim=8, depth=1, num_heads=2, channels=1, name="small_beit")
    with pytest.raises((NotImplementedError, lamina.errors.ShapeError), match="small_beit"):
        export_onnx(model, tmp_path / "model.onnx", input_shape=(12, 8, 1))


def test_the_readme_example_runs(tmp_path):
    printed, _ = run_readme_section("Exporting PVT v2, CvT, BEiT and Griffin to ONNX",
                                    {"/tmp/pvt_cvt_beit.onnx": f"{tmp_path}/pvt_cvt_beit.onnx",
                                     "/tmp/griffin.onnx": f"{tmp_path}/griffin.onnx"})
    assert printed.split() == ["True"] * 4
