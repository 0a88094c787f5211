"""RegNet and the Swin Transformer: torchvision's parameter counts and GFLOPS, the width
generator against torchvision's (run in torch), outputs equal to torch models built with
torchvision's structure and names, the blocks' gradients against torch and by finite
differences, configs and saving, and bad arguments."""

import numpy as np
import pytest
import torch
import torch_zoo
import torch_zoo_regnet_swin as tr
from zoo_checks import check_config_and_save_load, check_published_size, eval_output, random_inputs

import lamina
from helpers import assert_close, randn
from lamina import models
from lamina.analysis import summary
from lamina.models import (
    PatchMerging,
    RegNetBlock,
    ShiftedWindowAttention,
    SwinTransformerBlock,
    load_torchvision_state_dict,
    regnet_block_params,
)
from lamina.models.regnet import REGNET_CONFIGS
from lamina.models.swin import relative_position_index, shifted_window_mask

# name -> (parameters with 1000 classes, torchvision's GFLOPS at 224x224)
PUBLISHED = {
    "regnet_y_400mf": (4_344_144, 0.40), "regnet_y_800mf": (6_432_512, 0.83), "regnet_y_1_6gf": (11_202_430, 1.61),
    "regnet_y_3_2gf": (19_436_338, 3.18), "regnet_y_8gf": (39_381_472, 8.47), "regnet_y_16gf": (83_590_140, 15.91),
    "regnet_y_32gf": (145_046_770, 32.28), "regnet_y_128gf": (644_812_894, 127.52),
    "regnet_x_400mf": (5_495_976, 0.41), "regnet_x_800mf": (7_259_656, 0.80), "regnet_x_1_6gf": (9_190_136, 1.60),
    "regnet_x_3_2gf": (15_296_552, 3.18), "regnet_x_8gf": (39_572_648, 8.00), "regnet_x_16gf": (54_278_536, 15.94),
    "regnet_x_32gf": (107_811_560, 31.74),
    "swin_t": (28_288_354, 4.49), "swin_s": (49_606_258, 8.74), "swin_b": (87_768_224, 15.43),
}


# -- architecture --------------------------------------------------------------------------------
@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_torchvision_parameter_counts_and_gflops(name):
    params, gflops = PUBLISHED[name]
    check_published_size(name, params, gflops)


@pytest.mark.parametrize("variant", sorted(REGNET_CONFIGS))
def test_width_generator_matches_torchvision(variant):
    depth, w_0, w_a, w_m, group_width, _ = REGNET_CONFIGS[variant]
    ours = regnet_block_params(depth, w_0, w_a, w_m, group_width)
    depths, widths, groups = tr.regnet_stages(depth, w_0, w_a, w_m, group_width)
    assert ours == (tuple(depths), tuple(widths), tuple(groups))
    assert sum(ours.depths) == depth


def test_regnet_structure_and_summary_rows():
    model = models.regnet_y_400mf()
    assert regnet_block_params(16, 48, 27.89, 2.09, 8) == ((1, 3, 6, 6), (48, 104, 208, 440), (8, 8, 8, 8))
    block = model["trunk_output"]["block2"]["block2-0"]
    assert block.has_projection and block.f["b"]["0"].groups == 104 // 8
    assert block.f["se"].squeeze_channels == round(0.25 * 48)  # from the block's input width
    assert not model["trunk_output"]["block2"]["block2-1"].has_projection
    assert "se" not in models.regnet_x_400mf()["trunk_output"]["block1"]["block1-0"].f._modules
    rows = {r["name"]: r for r in summary(models.regnet_y_400mf).rows}
    assert rows["stem.0"]["output_shape"] == [112, 112, 32]
    assert rows["trunk_output.block1.block1-0.f.b.0"]["output_shape"] == [56, 56, 48]
    assert rows["trunk_output.block4.block4-5.f.c.1"]["output_shape"] == [7, 7, 440]
    assert rows["fc"]["params"] == 440 * 1000 + 1000


def test_swin_structure_and_summary_rows():
    rows = {r["name"]: r for r in summary(models.swin_t).rows}
    assert rows["features.0.0"]["output_shape"] == [56, 56, 96]
    attn = rows["features.1.1.attn"]
    assert attn["params"] == 13 * 13 * 3 and attn["macs"] == 2 * 56 * 56 * 49 * 96  # Q K^T and A V
    assert rows["features.1.1.attn.qkv"]["macs"] == 56 * 56 * 96 * 288  # every token of every window
    assert rows["features.2.reduction"]["output_shape"] == [28, 28, 192]
    assert rows["features.7.1.mlp.0"]["output_shape"] == [7, 7, 3072]
    model = models.swin_t()
    assert model["features"]["3"]["1"].attn.shift_size == (3, 3)
    assert model["features"]["3"]["0"].attn.shift_size == (0, 0)
    assert model["features"]["7"]["1"].stochastic_depth.p == pytest.approx(0.2)
    assert model["features"]["5"]["0"].stochastic_depth.p == pytest.approx(0.2 * 4 / 11)


@pytest.mark.parametrize("window", [(7, 7), (3, 4)])
def test_relative_position_index_matches_torchvision(window):
    tattn = tr.ShiftedWindowAttention(8, window, [0, 0], 2)
    np.testing.assert_array_equal(relative_position_index(window), tattn.relative_position_index.numpy())
    ours = ShiftedWindowAttention(8, window, 0, 2)
    np.testing.assert_array_equal(ours.relative_position_index, tattn.relative_position_index.numpy())


def test_shifted_window_mask():
    mask = shifted_window_mask(6, 6, (3, 3), (1, 1))   # 4 windows of 9 tokens
    assert mask.shape == (4, 9, 9) and set(np.unique(mask)) == {0.0, -100.0}
    assert not mask[0].any()                           # the top-left window holds one region
    # the bottom-right window: rows/cols 3-4 and 5 of the rolled map, 4 regions
    region = np.array([0, 0, 1, 0, 0, 1, 2, 2, 3])
    np.testing.assert_array_equal(mask[3] == 0, region[:, None] == region[None, :])


# -- torchvision weights ------------------------------------------------------------------------
def _check_loaded(model, tmodel, x, what, rtol=1e-5):
    load_torchvision_state_dict(model, tmodel.state_dict())  # strict: the key sets are equal
    with torch.no_grad():
        expected = tmodel(torch.from_numpy(x.transpose(0, 3, 1, 2).copy())).numpy()
    assert_close(eval_output(model, x), expected, rtol, what)


def test_regnet_y_matches_torch_with_loaded_weights():
    tmodel = torch_zoo.randomize(tr.RegNet(16, 48, 27.89, 2.09, 8, 0.25, num_classes=10), seed=1)
    _check_loaded(models.regnet_y_400mf(num_classes=10, input_shape=(64, 64, 3)), tmodel,
                  random_inputs((2, 64, 64, 3), 0), "regnet_y_400mf logits")


def test_regnet_x_matches_torch_with_loaded_weights():
    tmodel = torch_zoo.randomize(tr.RegNet(22, 24, 24.48, 2.54, 16, num_classes=10), seed=2)
    _check_loaded(models.regnet_x_400mf(num_classes=10, input_shape=(48, 48, 3)), tmodel,
                  random_inputs((2, 48, 48, 3), 1), "regnet_x_400mf logits")


def test_swin_t_matches_torch_with_loaded_weights():
    """64x64: stages of 16, 8, 4, 2 tokens a side, padded to windows of 7; the shift is used
    in the first two stages only (a padded map of one window is not shifted)."""
    tmodel = torch_zoo.randomize(tr.SwinTransformer(96, (2, 2, 6, 2), (3, 6, 12, 24), num_classes=10), seed=3)
    model = models.swin_t(num_classes=10, input_shape=(64, 64, 3))
    _check_loaded(model, tmodel, random_inputs((2, 64, 64, 3), 2), "swin_t logits", rtol=1e-4)


def test_small_window_swin_matches_torch_with_loaded_weights():
    """Windows of 4 on 12x12 (no padding) and 6x6 (padded to 8) maps, shifted by 2."""
    tmodel = torch_zoo.randomize(tr.SwinTransformer(16, (2, 2), (2, 4), window=(4, 4), num_classes=5), seed=4)
    model = models.swin(16, (2, 2), (2, 4), window_size=4, num_classes=5, input_shape=(48, 48, 3))
    _check_loaded(model, tmodel, random_inputs((2, 48, 48, 3), 3), "small swin logits")


# -- the blocks against torch, in float64 --------------------------------------------------------------
def _to_lamina_layout(name: str, grad: np.ndarray, lamina_shape) -> np.ndarray:
    if grad.ndim == 4:
        return grad.transpose(0, 2, 3, 1)
    if grad.ndim == 2 and not name.endswith("relative_position_bias_table"):  # Linear (out, in) -> Dense (in, out)
        return grad.T
    return grad.reshape(lamina_shape)


def _compare_block(block, tblock, x, nchw, seed=0, rtol=1e-9):
    """Outputs, input gradients and every parameter's gradient of ``block`` against ``tblock``
    (given the same random weights), in float64 and evaluation mode. ``nchw``: the torch block
    takes NCHW maps (convolutional blocks) rather than NHWC ones (Swin's)."""
    lamina.set_default_dtype(np.float64)
    tblock = torch_zoo.randomize(tblock.double(), seed=seed)
    block.build((None, *x.shape[1:]))
    load_torchvision_state_dict(block, tblock.state_dict())
    block.eval()
    to_torch = (lambda a: a.transpose(0, 3, 1, 2).copy()) if nchw else (lambda a: a)
    from_torch = (lambda a: a.transpose(0, 2, 3, 1)) if nchw else (lambda a: a)
    xl = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    xt = torch.tensor(to_torch(x), requires_grad=True)
    out_l, out_t = block(xl), tblock(xt)
    assert_close(out_l.numpy(), from_torch(out_t.detach().numpy()), 1e-10, "output")
    upstream = randn(*out_l.shape, seed=seed + 1)
    out_l.backward(upstream)
    (out_t * torch.from_numpy(to_torch(upstream))).sum().backward()
    assert_close(xl.grad, from_torch(xt.grad.numpy()), rtol, "input gradient")
    theirs = dict(tblock.named_parameters())
    assert {name for name, _ in block.named_parameters()} == set(theirs)
    for name, p in block.named_parameters():
        assert_close(p.grad, _to_lamina_layout(name, theirs[name].grad.numpy(), p.shape), rtol, f"gradient of {name}")


def test_regnet_blocks_match_torch():
    # Y: stride 2, a projection shortcut, squeeze-and-excitation sized from the input width
    _compare_block(RegNetBlock(8, 16, 2, group_width=4, se_ratio=0.25), tr.RegNetBlock(8, 16, 2, 4, 0.25),
                   randn(2, 7, 7, 8), nchw=True)
    # X: the identity shortcut
    _compare_block(RegNetBlock(8, 8, 1, group_width=2), tr.RegNetBlock(8, 8, 1, 2, None),
                   randn(2, 5, 5, 8, seed=1), nchw=True, seed=1)


@pytest.mark.parametrize("shape, window, shift", [
    ((2, 6, 6, 8), (3, 3), (1, 1)),    # shifted windows, no padding
    ((2, 5, 4, 8), (3, 3), (1, 1)),    # shifted, padded to 6x6
    ((1, 4, 7, 8), (4, 3), (2, 1)),    # rectangular windows; no shift along the rows (one window)
    ((2, 5, 5, 8), (3, 3), (0, 0)),    # plain windows
], ids=["shifted", "padded", "rectangular", "unshifted"])
def test_swin_block_matches_torch(shape, window, shift):
    _compare_block(SwinTransformerBlock(8, 2, window, shift), tr.SwinBlock(8, 2, window, list(shift)),
                   randn(*shape, seed=2), nchw=False, seed=2)


def test_patch_merging_matches_torch():
    _compare_block(PatchMerging(6), tr.PatchMerging(6), randn(2, 5, 4, 6, seed=3), nchw=False, seed=3)


@pytest.mark.parametrize("make, shape", [
    (lambda: RegNetBlock(4, 4, 1, group_width=2, se_ratio=0.5), (1, 3, 3, 4)),
    (lambda: SwinTransformerBlock(4, 2, 2, 1, mlp_ratio=2.0), (1, 3, 3, 4)),
], ids=["regnet_block", "swin_block"])
def test_block_gradients_by_finite_differences(make, shape):
    lamina.set_default_dtype(np.float64)
    block = make()
    x = lamina.tensor(randn(*shape), requires_grad=True, dtype=np.float64)
    block.eval()
    block(x)
    for k, p in enumerate(block.parameters()):  # random biases too: no ReLU input sits exactly at its kink
        p.data = randn(*p.shape, seed=10 + k, scale=0.5)
    assert lamina.gradcheck(lambda x_, *_: block(x_), x, *block.parameters())


def test_stochastic_depth_drops_both_swin_branches_in_training():
    block = SwinTransformerBlock(8, 2, 3, 1, stochastic_depth_prob=0.999)
    x = lamina.tensor(random_inputs((3, 6, 6, 8), 6))
    block.train()
    np.testing.assert_allclose(block(x).numpy(), x.numpy())
    block.eval()
    assert not np.allclose(block(x).numpy(), x.numpy())


# -- configs, saving, errors ----------------------------------------------------------------------
SMALL = [
    ("regnet_y", lambda: models.regnet(4, 8, 8.0, 2.0, 4, se_ratio=0.25, stem_width=8, num_classes=3,
                                       input_shape=(16, 16, 3))),
    ("regnet_x", lambda: models.regnet(3, 8, 12.0, 2.5, 8, num_classes=3, input_shape=(16, 16, 3))),
    ("swin", lambda: models.swin(8, (2, 2), (2, 2), window_size=3, num_classes=3, input_shape=(20, 20, 3))),
]


@pytest.mark.parametrize("name, build", SMALL, ids=[n for n, _ in SMALL])
def test_config_round_trip_and_save_load(tmp_path, name, build):
    model = build()
    x = random_inputs((2, *model.input_shape[1:]), 7)
    check_config_and_save_load(model, x, tmp_path / f"{name}.safetensors")


def test_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="w_0"):
        models.regnet(16, 50, 27.89, 2.09, 8)
    with pytest.raises(ValueError, match="w_m"):
        regnet_block_params(16, 48, 27.89, 1.0, 8)
    with pytest.raises(ValueError, match="w_a"):
        regnet_block_params(16, 48, -1.0, 2.0, 8)
    with pytest.raises(ValueError, match="depth"):
        models.regnet(0, 48, 27.89, 2.09, 8)
    with pytest.raises(ValueError, match="group_width 3"):
        RegNetBlock(8, 16, group_width=3)
    with pytest.raises(ValueError, match="stride"):
        RegNetBlock(8, 16, stride=3)
    with pytest.raises(lamina.ShapeError, match=r"8 channels.*in_channels=8"):
        RegNetBlock(8, 16).compute_output_shape((None, 4, 4, 6))
    with pytest.raises(ValueError, match="divisible by num_heads"):
        ShiftedWindowAttention(10, 7, 0, 3)
    with pytest.raises(ValueError, match="shift_size"):
        ShiftedWindowAttention(8, 4, 4, 2)
    with pytest.raises(lamina.ShapeError, match=r"96 channels.*dim=96"):
        SwinTransformerBlock(96, 3).compute_output_shape((None, 8, 8, 48))
    with pytest.raises(ValueError, match="depths and num_heads"):
        models.swin(96, (2, 2, 6), (3, 6))
    with pytest.raises(ValueError, match="divisible by num_heads"):
        models.swin(96, (2, 2), (5, 6))
    with pytest.raises(ValueError, match="stochastic_depth_prob"):
        models.swin_t(stochastic_depth_prob=1.0)
    assert PatchMerging(4).compute_output_shape((None, 5, 6, 4)) == (None, 3, 3, 8)
    assert SwinTransformerBlock(8, 2, 3, 1).compute_output_shape((None, 5, 4, 8)) == (None, 5, 4, 8)
