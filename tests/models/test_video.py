"""Video models (r3d_18, mc3_18, r2plus1d_18, s3d): torchvision's parameter counts and
GFLOPS, outputs equal to torch models built with torchvision's structure and names, each
block's gradients against torch and by finite differences, configs and saving, bad
arguments, and a small R(2+1)D network that learns the direction of a moving square."""

import numpy as np
import pytest
import torch
import torch_zoo_video as tv
from zoo_checks import check_config_and_save_load, check_published_size, eval_output, random_inputs

import lamina
from helpers import assert_close, randn
from lamina import functional as F
from lamina import models, optim
from lamina.analysis import summary
from lamina.models import (
    Conv2Plus1D,
    SepInceptionBlock3D,
    VideoBasicBlock,
    load_torchvision_state_dict,
    midplanes,
)
from lamina.nn import init

# name -> (parameters with 400 classes, torchvision's GFLOPS at 16x112x112)
PUBLISHED = {"r3d_18": (33_371_472, 40.70), "mc3_18": (11_695_440, 43.34), "r2plus1d_18": (31_505_325, 40.52)}


def _ncdhw(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.moveaxis(x, -1, 1))


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_torchvision_parameter_counts_and_gflops(name):
    params, gflops = PUBLISHED[name]
    assert getattr(models, name)().input_shape == (None, 16, 112, 112, 3)
    check_published_size(name, params, gflops, classes=400, tolerance=0.0)


def test_midplanes_and_summary_rows():
    assert midplanes(64, 64) == 144 and midplanes(64, 128) == 230 and midplanes(128, 128) == 288
    rows = {r["name"]: r for r in summary(models.r2plus1d_18).rows}
    assert rows["stem.0"]["output_shape"] == [16, 56, 56, 45]
    assert rows["layer2.0.conv1.0.0"]["output_shape"] == [16, 28, 28, 230]  # spatial stride first
    assert rows["layer2.0.conv1.0.3"]["output_shape"] == [8, 28, 28, 128]  # then the temporal one
    assert rows["layer2.0.conv2.0.0"]["output_shape"] == [8, 28, 28, 230]  # the first conv's width
    rows = {r["name"]: r for r in summary(models.mc3_18).rows}
    assert rows["layer4.1.conv2.0"]["output_shape"] == [16, 7, 7, 512]  # MC3 keeps every frame
    assert rows["layer4.0.downsample.0"]["macs"] == 16 * 7 * 7 * 512 * 256
    rows = {r["name"]: r for r in summary(models.r3d_18).rows}
    assert rows["layer4.1.conv2.0"]["output_shape"] == [2, 7, 7, 512]
    assert rows["stem.0"]["macs"] == 16 * 56 * 56 * 64 * 3 * 7 * 7 * 3


@pytest.mark.parametrize("name", sorted(PUBLISHED))
def test_outputs_match_torch_with_loaded_weights(name):
    tmodel = tv.randomize(getattr(tv, name)(num_classes=5), seed=len(name))
    model = getattr(models, name)(num_classes=5, input_shape=(4, 32, 32, 3))
    load_torchvision_state_dict(model, tmodel.state_dict())  # strict: the key sets are equal
    x = random_inputs((2, 4, 32, 32, 3), 0)
    with torch.no_grad():
        expected = tmodel(torch.from_numpy(_ncdhw(x))).numpy()
    assert_close(eval_output(model, x), expected, 1e-5, f"{name} logits")


BLOCKS = [
    ("3d", tv.conv3d_simple, 2), ("no_temporal", tv.conv3d_no_temporal, 2), ("2plus1d", tv.Conv2Plus1D, 2),
    ("2plus1d_identity", tv.Conv2Plus1D, 1),
]


@pytest.mark.parametrize("conv_type, tconv, stride", BLOCKS, ids=[b[0] for b in BLOCKS])
def test_blocks_match_torch_in_float64(conv_type, tconv, stride):
    """Outputs, input gradients and every parameter's gradient of a residual block."""
    lamina.set_default_dtype(np.float64)
    cin, planes = (4, 6) if stride == 2 else (6, 6)
    tblock = tv.randomize(tv.BasicBlock(cin, planes, tconv, stride).double(), seed=3)
    block = VideoBasicBlock(cin, planes, conv_type.split("_identity")[0], stride, downsample=stride != 1)
    x = randn(2, 4, 5, 5, cin, seed=1)
    block.build((None, *x.shape[1:]))
    load_torchvision_state_dict(block, tblock.state_dict())
    block.eval()
    xl = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    xt = torch.tensor(_ncdhw(x), requires_grad=True)
    out_l, out_t = block(xl), tblock(xt)
    assert_close(out_l.numpy(), np.moveaxis(out_t.detach().numpy(), 1, -1), 1e-10, "output")
    upstream = randn(*out_l.shape, seed=2)
    out_l.backward(upstream)
    (out_t * torch.from_numpy(_ncdhw(upstream))).sum().backward()
    assert_close(xl.grad, np.moveaxis(xt.grad.numpy(), 1, -1), 1e-9, "input gradient")
    theirs = dict(tblock.named_parameters())
    for key, p in block.named_parameters():
        g = theirs[key].grad.numpy()
        assert_close(p.grad, np.moveaxis(g, 1, -1) if g.ndim == 5 else g, 1e-9, f"gradient of {key}")


def test_s3d_parameter_count_and_gflops():
    model = models.s3d()
    assert model.input_shape == (None, 16, 224, 224, 3)
    assert model.compute_output_shape(model.input_shape) == (None, 400)
    with init.meta():
        model.build(model.input_shape)
    assert model.num_parameters() == 8_320_048
    rows = summary(models.s3d).rows
    conv_macs = sum(r["macs"] for r in rows if r["type"] == "Conv3D")  # torchvision's 17.98 leaves out pooling
    assert abs(conv_macs / 1e9 - 17.98) <= 0.006
    rows = {r["name"]: r for r in rows}
    assert rows["features.5.branch1.1.0.0"]["output_shape"] == [8, 28, 28, 128]
    assert rows["avgpool"]["input_shape"] == [2, 7, 7, 1024] and rows["mean"]["output_shape"] == [400]


def test_s3d_matches_torch_with_loaded_weights():
    """All the weights load; the features at a small clip size (the 2x7x7 pool needs 16x224x224,
    too slow here) and the head on a larger score map equal torch's."""
    tmodel = tv.randomize(tv.S3D(num_classes=5), seed=4)
    model = models.s3d(num_classes=5)
    load_torchvision_state_dict(model, tmodel.state_dict())
    model.eval()
    x = random_inputs((1, 8, 32, 32, 3), 1)
    with torch.no_grad():
        expected = tmodel.features(torch.from_numpy(_ncdhw(x))).numpy()
    with lamina.no_grad():
        ours = model["features"](lamina.tensor(x)).numpy()
    assert_close(ours, np.moveaxis(expected, 1, -1), 1e-5, "s3d features")
    feats = random_inputs((2, 3, 8, 8, 1024), 2)
    with torch.no_grad():
        t = torch.from_numpy(_ncdhw(feats))
        expected = tmodel.classifier(tmodel.avgpool(t)).mean(dim=(2, 3, 4)).numpy()
    with lamina.no_grad():
        ours = model["mean"](model["classifier"](model["avgpool"](lamina.tensor(feats)))).numpy()
    assert_close(ours, expected, 1e-5, "s3d scores")


def test_sep_inception_block_matches_torch_in_float64():
    lamina.set_default_dtype(np.float64)
    tblock = tv.randomize(tv.SepInceptionBlock3D(3, 2, 3, 4, 2, 3, 2).double(), seed=5)
    block = SepInceptionBlock3D(2, 3, 4, 2, 3, 2)
    x = randn(2, 3, 4, 4, 3, seed=6)
    block.build((None, *x.shape[1:]))
    load_torchvision_state_dict(block, tblock.state_dict())
    block.eval()
    xl = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    xt = torch.tensor(_ncdhw(x), requires_grad=True)
    out_l, out_t = block(xl), tblock(xt)
    assert out_l.shape == (2, 3, 4, 4, 2 + 4 + 3 + 2)
    assert_close(out_l.numpy(), np.moveaxis(out_t.detach().numpy(), 1, -1), 1e-10, "output")
    upstream = randn(*out_l.shape, seed=7)
    out_l.backward(upstream)
    (out_t * torch.from_numpy(_ncdhw(upstream))).sum().backward()
    assert_close(xl.grad, np.moveaxis(xt.grad.numpy(), 1, -1), 1e-9, "input gradient")
    theirs = dict(tblock.named_parameters())
    for key, p in block.named_parameters():
        g = theirs[key].grad.numpy()
        assert_close(p.grad, np.moveaxis(g, 1, -1) if g.ndim == 5 else g, 1e-9, f"gradient of {key}")


def test_conv2plus1d_gradients_by_finite_differences():
    lamina.set_default_dtype(np.float64)
    layer = Conv2Plus1D(3, midplanes=4, stride=2)
    x = lamina.tensor(randn(1, 3, 4, 4, 2), requires_grad=True, dtype=np.float64)
    layer(x)
    for k, p in enumerate(layer.parameters()):  # random BN shift: no ReLU input sits at its kink
        p.data = randn(*p.shape, seed=10 + k, scale=0.5)
    assert lamina.gradcheck(lambda x_, *_: layer(x_), x, *layer.parameters())


SMALL = [
    ("r3d", lambda: models.video_resnet(("3d", "3d"), blocks=(1, 1), widths=(4, 8), num_classes=3,
                                        input_shape=(4, 8, 8, 3))),
    ("mc3", lambda: models.video_resnet(("3d", "no_temporal"), blocks=(1, 2), widths=(4, 8), num_classes=3,
                                        input_shape=(4, 8, 8, 3), classifier_activation="softmax")),
    ("r2plus1d", lambda: models.video_resnet(("2plus1d",) * 2, "r2plus1d", blocks=(1, 1), widths=(4, 8),
                                             num_classes=3, input_shape=(4, 8, 8, 3), stem_midplanes=5)),
    ("s3d_blocks", lambda: _with_input(lamina.nn.Sequential(
        models.TemporalSeparableConv(4, 3, 2, 1), SepInceptionBlock3D(2, 2, 3, 1, 2, 2), lamina.nn.GlobalAvgPool3D(),
        name="s3d_blocks"), (4, 6, 6, 3))),
]


def _with_input(model, shape):
    model.input_shape = (None, *shape)
    return model


@pytest.mark.parametrize("name, build", SMALL, ids=[n for n, _ in SMALL])
def test_config_round_trip_and_save_load(tmp_path, name, build):
    model = build()
    x = random_inputs((2, *model.input_shape[1:]), 7)
    check_config_and_save_load(model, x, tmp_path / f"{name}.safetensors")


def test_bad_arguments_and_shapes():
    with pytest.raises(ValueError, match="conv_type"):
        VideoBasicBlock(4, 4, "2d")
    with pytest.raises(ValueError, match="input_shape.*frames"):
        models.r3d_18(input_shape=(112, 112, 3))
    with pytest.raises(ValueError, match="one entry per stage"):
        models.video_resnet(("3d",) * 3)
    with pytest.raises(ValueError, match="stem"):
        models.video_resnet(stem="r3d")
    with pytest.raises(ValueError, match="widths"):
        models.video_resnet(widths=(64, 0, 256, 512))
    with pytest.raises(lamina.ShapeError, match="5-D NDHWC"):
        VideoBasicBlock(4, 4).compute_output_shape((None, 8, 8, 4))
    with pytest.raises(lamina.ShapeError, match=r"\(None, 2, 8, 8, 6\).*4 channels"):
        VideoBasicBlock(4, 4).compute_output_shape((None, 2, 8, 8, 6))
    with pytest.raises(lamina.ShapeError, match="downsample=True"):
        VideoBasicBlock(4, 8).compute_output_shape((None, 2, 8, 8, 4))
    with pytest.raises(lamina.ShapeError, match="avgpool.*2x7x7 pool"):
        models.s3d(input_shape=(8, 64, 64, 3)).compute_output_shape((None, 8, 64, 64, 3))
    with pytest.raises(ValueError, match="s3d: input_shape"):
        models.s3d(input_shape=(224, 224, 3))
    assert VideoBasicBlock(4, 8, "no_temporal", 2, True).compute_output_shape((None, 3, 7, 7, 4)) == (None, 3, 4, 4, 8)
    assert VideoBasicBlock(4, 8, "3d", 2, True).compute_output_shape((None, 3, 7, 7, 4)) == (None, 2, 4, 4, 8)


def _moving_squares(n: int, seed: int):
    """Clips of 4 frames of 16x16: a 4x4 square moving 3 pixels a frame to the left (label 0)
    or to the right (label 1), plus a little noise. Both classes visit the same positions (a
    square moving right from column c covers what one moving left from c + 9 does): the
    frames taken as a set do not tell them apart, only their order in time does."""
    rng = np.random.default_rng(seed)
    x = np.zeros((n, 4, 16, 16, 1), np.float32)
    y = rng.integers(0, 2, n)
    for i in range(n):
        step = 3 if y[i] else -3
        top, left = rng.integers(0, 13), (rng.integers(0, 4) if y[i] else rng.integers(9, 13))
        for t in range(4):
            x[i, t, top:top + 4, left + step * t:left + step * t + 4] = 1.0
    return x + 0.05 * rng.standard_normal(x.shape).astype(np.float32), y


def test_small_r2plus1d_learns_the_direction_of_motion():
    x, y = _moving_squares(96, seed=0)
    xt, yt = _moving_squares(64, seed=1)
    model = models.video_resnet(("2plus1d",) * 2, "r2plus1d", blocks=(1, 1), widths=(8, 16), num_classes=2,
                                input_shape=(4, 16, 16, 1), stem_midplanes=8)
    model.build(model.input_shape)
    opt = optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    losses = []
    rng = np.random.default_rng(2)
    for _ in range(8):
        order = rng.permutation(len(x))
        for batch in np.array_split(order, 4):
            opt.zero_grad()
            loss = F.categorical_cross_entropy(model(lamina.tensor(x[batch])), y[batch], from_logits=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.numpy()))
    assert np.mean(losses[-4:]) < 0.5 * np.mean(losses[:4])
    accuracy = np.mean(eval_output(model, xt).argmax(-1) == yt)
    assert accuracy >= 0.9, accuracy
