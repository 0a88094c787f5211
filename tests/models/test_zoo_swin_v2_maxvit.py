"""The Swin Transformer V2 and MaxViT: torchvision's parameter counts and GFLOPS, outputs
equal to torch models built with torchvision's structure and names (weights loaded with
load_torchvision_state_dict), the new blocks' gradients against torch and by finite
differences, configs and saving, and bad arguments."""

import math

import numpy as np
import pytest
import torch
import torch_zoo
import torch_zoo_swin_v2_maxvit as tm
from test_zoo_regnet_swin import _check_loaded, _compare_block
from zoo_checks import check_config_and_save_load, check_published_size, random_inputs

import lamina
from helpers import randn
from lamina import models
from lamina.analysis import summary
from lamina.models import (
    MaxVitLayer,
    MaxVitMBConv,
    PartitionAttention,
    PatchMergingV2,
    RelativePositionalMultiHeadAttention,
    ShiftedWindowAttentionV2,
    SwinTransformerBlockV2,
)
from lamina.models.maxvit import maxvit_grid_sizes
from lamina.models.swin import log_spaced_coordinates

# name -> (parameters with 1000 classes, torchvision's GFLOPS at its native size: 256 for V2, 224 for MaxViT)
PUBLISHED = {
    "swin_v2_t": (28_351_570, 5.94), "swin_v2_s": (49_737_442, 11.55), "swin_v2_b": (87_930_848, 20.32),
    "maxvit_t": (30_919_624, 5.56),
}


# -- architecture --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_torchvision_parameter_counts_and_gflops(name):
    params, gflops = PUBLISHED[name]
    check_published_size(name, params, gflops)


def test_swin_v2_structure_and_summary_rows():
    rows = {r["name"]: r for r in summary(models.swin_v2_t).rows}
    assert rows["features.0.0"]["output_shape"] == [64, 64, 96]
    assert rows["features.1.1.attn"]["params"] == 3                               # the logit scales
    assert rows["features.1.1.attn.cpb_mlp.0"]["params"] == 2 * 512 + 512
    assert rows["features.1.1.attn.cpb_mlp.2"]["output_shape"] == [15, 15, 3]   # (2M - 1)^2 offsets, 3 heads
    assert rows["features.2.reduction"]["output_shape"] == [32, 32, 192]
    assert rows["features.2.norm"]["params"] == 2 * 192                          # after the reduction: 2C
    model = models.swin_v2_t()
    assert model["features"]["3"]["1"].attn.shift_size == (4, 4)
    assert isinstance(model["features"]["4"], PatchMergingV2)
    assert model["features"]["7"]["1"].stochastic_depth.p == pytest.approx(0.2)


def test_maxvit_structure_and_summary_rows():
    rows = {r["name"]: r for r in summary(models.maxvit_t).rows}
    first = "blocks.0.layers.0.layers."
    assert rows["stem.1.0"]["output_shape"] == [112, 112, 64]
    assert rows[first + "MBconv.proj.0"]["output_shape"] == [56, 56, 64]            # the 3x3/2 average pool
    assert rows[first + "MBconv.layers.conv_b.0"]["output_shape"] == [56, 56, 256]   # 4 C_out, depthwise, stride 2
    assert rows[first + "MBconv.layers.squeeze_excitation.fc1"]["output_shape"] == [1, 1, 16]
    attn = rows[first + "window_attention.attn_layer.1"]
    assert attn["params"] == 13 * 13 * 2                                             # the bias table, heads of 32
    assert rows[first + "window_attention.attn_layer.1.to_qkv"]["params"] == 64 * 192 + 192
    assert attn["macs"] == 2 * 56 * 56 * 49 * 64                                    # Q K^T and A V
    assert attn["output_shape"] == [64, 49, 64]                                      # 8 x 8 windows of 7 x 7
    assert rows["blocks.3.layers.1.layers.grid_attention.attn_layer.1"]["output_shape"] == [1, 49, 512]
    assert rows["classifier.5"]["params"] == 512 * 1000
    model = models.maxvit_t()
    assert maxvit_grid_sizes(224, 224, 4) == [(56, 56), (28, 28), (14, 14), (7, 7)]
    layers = [layer for block in model["blocks"] for layer in block["layers"]]
    probabilities = [layer.layers["grid_attention"].stochastic_dropout.p for layer in layers]
    np.testing.assert_allclose(probabilities, np.linspace(0, 0.2, 11))
    assert not layers[1].layers["MBconv"].has_projection and layers[2].layers["MBconv"].has_projection


@pytest.mark.parametrize("window", [(8, 8), (3, 5)])
def test_log_spaced_coordinates_match_torchvision(window):
    tattn = tm.ShiftedWindowAttentionV2(8, window, [0, 0], 2)
    np.testing.assert_allclose(log_spaced_coordinates(window), tattn.relative_coords_table.numpy(), rtol=1e-6)
    assert log_spaced_coordinates(window).max() == pytest.approx(math.log2(9) / 3)   # the offset M - 1: c = 8


def test_maxvit_relative_position_index_matches_torchvision():
    ours = RelativePositionalMultiHeadAttention(8, 4, 3)
    np.testing.assert_array_equal(ours.relative_position_index,
                                  tm.RelativePositionalMultiHeadAttention(8, 4, 3).relative_position_index.numpy())


# -- torchvision weights ------------------------------------------------------------------------
def test_swin_v2_t_matches_torch_with_loaded_weights():
    """64x64: stages of 16, 8, 4, 2 tokens a side in windows of 8; the shift is used in the first
    stage only, the last two stages are padded."""
    tmodel = torch_zoo.randomize(tm.SwinTransformerV2(96, (2, 2, 6, 2), (3, 6, 12, 24), num_classes=10), seed=3)
    model = models.swin_v2_t(num_classes=10, input_shape=(64, 64, 3))
    _check_loaded(model, tmodel, random_inputs((2, 64, 64, 3), 2), "swin_v2_t logits", rtol=1e-4)


def test_maxvit_t_matches_torch_with_loaded_weights():
    """maxvit_t at 224x224 (the smallest input its partitions of 7 allow), one image."""
    tmodel = torch_zoo.randomize(tm.MaxVit(64, (64, 128, 256, 512), (2, 2, 5, 2), 32, 7, num_classes=10), seed=4)
    model = models.maxvit_t(num_classes=10)
    _check_loaded(model, tmodel, random_inputs((1, 224, 224, 3), 3), "maxvit_t logits", rtol=1e-4)


def test_small_maxvit_matches_torch_with_loaded_weights():
    """Partitions of 2 on maps of 4x4 and 2x2 (the grid spans the whole map)."""
    tmodel = torch_zoo.randomize(tm.MaxVit(8, (16, 32), (1, 2), 8, 2, num_classes=5), seed=5)
    model = models.maxvit(8, (16, 32), (1, 2), head_dim=8, partition_size=2, num_classes=5, input_shape=(16, 16, 3))
    _check_loaded(model, tmodel, random_inputs((2, 16, 16, 3), 4), "small maxvit logits")


@pytest.mark.parametrize("kind", ["window", "grid"])
def test_partitions_of_a_non_square_map(kind):
    """Sequence s of a 'window' partition: the P x P block s; of a 'grid' partition: the
    pixels (a H / P + i, b W / P + j), a, b < P, for s = (i, j); departition inverts both."""
    height, width, p = 4, 6, 2
    layer = PartitionAttention(1, 1, p, kind)
    rows, cols = np.meshgrid(np.arange(height), np.arange(width), indexing="ij")
    x = lamina.tensor((rows * 10 + cols)[None, :, :, None].astype(np.float64))
    parts = layer.partition(x).numpy()[0, :, :, 0]
    assert parts.shape == (height * width // p ** 2, p * p)
    if kind == "window":
        assert parts[1].tolist() == [2, 3, 12, 13]                   # the second block of the top row
    else:
        assert parts[1].tolist() == [1, 4, 21, 24]                   # rows 0, 2 and columns 1, 4: strides 2 and 3
    np.testing.assert_array_equal(layer.departition(layer.partition(x), height, width).numpy(), x.numpy())


# -- the blocks against torch, in float64 --------------------------------------------------------------
@pytest.mark.parametrize("shape, window, shift", [
    ((2, 6, 6, 8), (3, 3), (1, 1)),    # shifted windows, no padding
    ((1, 5, 7, 8), (4, 3), (2, 1)),    # rectangular windows, padded; no shift along the rows (one window)
], ids=["shifted", "padded"])
def test_swin_v2_block_matches_torch(monkeypatch, shape, window, shift):
    randomize = torch_zoo.randomize

    def above_the_clamp(model, seed):
        """Random weights, the first head's logit scale above log 100 (clamped: no gradient)."""
        model = randomize(model, seed)
        with torch.no_grad():
            model.attn.logit_scale[0] = math.log(100.0) + 0.5
        return model

    monkeypatch.setattr(torch_zoo, "randomize", above_the_clamp)
    _compare_block(SwinTransformerBlockV2(8, 2, window, shift), tm.SwinBlockV2(8, 2, window, list(shift)),
                   randn(*shape, seed=2), nchw=False, seed=2)


def test_patch_merging_v2_matches_torch():
    _compare_block(PatchMergingV2(6), tm.PatchMergingV2(6), randn(2, 5, 4, 6, seed=3), nchw=False, seed=3)


@pytest.mark.parametrize("cin, cout, stride", [(8, 16, 2), (8, 8, 1)], ids=["projected", "identity"])
def test_maxvit_mbconv_matches_torch(cin, cout, stride):
    _compare_block(MaxVitMBConv(cin, cout, stride=stride), tm.MBConv(cin, cout, stride), randn(2, 6, 6, cin, seed=4),
                   nchw=True, seed=4)


@pytest.mark.parametrize("kind", ["window", "grid"])
def test_partition_attention_matches_torch(kind):
    _compare_block(PartitionAttention(8, 4, 2, kind), tm.PartitionAttentionLayer(8, 4, 2, kind),
                   randn(2, 4, 4, 8, seed=5), nchw=True, seed=5)


def test_maxvit_layer_matches_torch():
    _compare_block(MaxVitLayer(4, 8, head_dim=4, partition_size=2, stride=2), tm.MaxVitLayer(4, 8, 2, 4, 2),
                   randn(1, 8, 8, 4, seed=6), nchw=True, seed=6)


@pytest.mark.parametrize("make, shape, names", [
    (lambda: SwinTransformerBlockV2(4, 2, 2, 1, mlp_ratio=2.0), (1, 3, 3, 4),
     ("attn.logit_scale", "attn.qkv.bias", "attn.cpb_mlp.2.weight", "norm1.weight")),
    (lambda: PatchMergingV2(3), (1, 3, 4, 3), ("reduction.weight", "norm.weight")),
    (lambda: MaxVitMBConv(2, 4, expansion_ratio=2.0, stride=2), (1, 4, 4, 2),
     ("proj.1.weight", "layers.conv_b.0.weight", "layers.squeeze_excitation.fc1.weight", "layers.conv_c.bias")),
    (lambda: PartitionAttention(4, 2, 2, "grid", mlp_ratio=2), (1, 4, 2, 4),
     ("attn_layer.1.to_qkv.weight", "attn_layer.1.relative_position_bias_table", "mlp_layer.1.bias")),
], ids=["swin_v2_block", "patch_merging_v2", "maxvit_mbconv", "partition_attention"])
def test_block_gradients_by_finite_differences(make, shape, names):
    lamina.set_default_dtype(np.float64)
    block = make()
    x = lamina.tensor(randn(*shape), requires_grad=True, dtype=np.float64)
    block.eval()
    block(x)
    params = dict(block.named_parameters())
    for k, p in enumerate(params.values()):
        p.data = randn(*p.shape, seed=10 + k, scale=0.5)
    chosen = [params[name] for name in names]
    assert lamina.gradcheck(lambda x_, *_: block(x_), x, *chosen)


def test_stochastic_depth_drops_the_maxvit_branches_in_training():
    layer = PartitionAttention(8, 4, 2, "grid", stochastic_depth_prob=0.999)
    x = lamina.tensor(random_inputs((3, 4, 4, 8), 6))
    layer.train()
    np.testing.assert_allclose(layer(x).numpy(), x.numpy())
    layer.eval()
    assert not np.allclose(layer(x).numpy(), x.numpy())


# -- configs, saving, errors ----------------------------------------------------------------------
SMALL = [
    ("swin_v2", lambda: models.swin_v2(8, (2, 2), (2, 2), window_size=3, num_classes=3, input_shape=(20, 20, 3))),
    ("maxvit", lambda: models.maxvit(8, (8, 16), (2, 1), head_dim=4, partition_size=2, num_classes=3,
                                     input_shape=(16, 16, 3))),
]


@pytest.mark.parametrize("name, build", SMALL, ids=[n for n, _ in SMALL])
def test_config_round_trip_and_save_load(tmp_path, name, build):
    model = build()
    x = random_inputs((2, *model.input_shape[1:]), 7)
    check_config_and_save_load(model, x, tmp_path / f"{name}.safetensors")


def test_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match=r"200x200 gives block 0 a map of 50x50, not a multiple of partition_size=7"):
        models.maxvit_t(input_shape=(200, 200, 3))
    with pytest.raises(lamina.ShapeError, match=r"shape \(None, 6, 4, 8\).*multiples of partition_size=4"):
        PartitionAttention(8, 4, 4).compute_output_shape((None, 6, 4, 8))
    with pytest.raises(lamina.ShapeError, match="multiples of partition_size=3"):
        PartitionAttention(8, 4, 3, "grid")(lamina.tensor(random_inputs((1, 6, 4, 8), 0)))
    with pytest.raises(lamina.ShapeError, match=r"8 channels.*in_channels=8"):
        PartitionAttention(8, 4, 2).compute_output_shape((None, 4, 4, 6))
    with pytest.raises(lamina.ShapeError, match="sequences of 4 tokens"):
        RelativePositionalMultiHeadAttention(8, 4, 2).compute_output_shape((None, 3, 9, 8))
    with pytest.raises(ValueError, match="partition_type"):
        PartitionAttention(8, 4, 2, "diagonal")
    with pytest.raises(ValueError, match="not divisible by head_dim 3"):
        RelativePositionalMultiHeadAttention(8, 3, 2)
    with pytest.raises(ValueError, match="multiples of head_dim 32"):
        models.maxvit(block_channels=(48, 64, 128, 256))
    with pytest.raises(ValueError, match="block_channels and block_layers"):
        models.maxvit(block_layers=(2, 2, 5))
    with pytest.raises(ValueError, match="stride"):
        MaxVitMBConv(8, 8, stride=3)
    with pytest.raises(ValueError, match="at least 2 along each axis"):
        ShiftedWindowAttentionV2(8, (1, 4), 0, 2)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        models.swin_v2(96, (2, 2), (5, 6))
    with pytest.raises(ValueError, match="stochastic_depth_prob"):
        models.swin_v2_t(stochastic_depth_prob=1.0)
    assert PatchMergingV2(4).compute_output_shape((None, 5, 6, 4)) == (None, 3, 3, 8)
    assert SwinTransformerBlockV2(8, 2, 3, 1).compute_output_shape((None, 5, 4, 8)) == (None, 5, 4, 8)
    assert models.maxvit_t(input_shape=(448, 448, 3)).compute_output_shape((None, 448, 448, 3)) == (None, 1000)
