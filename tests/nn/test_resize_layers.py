"""UpSampling2D, ZeroPadding2D and Cropping2D: PyTorch's Upsample, ZeroPad2d and slicing in
outputs and gradients, gradient checks, shape inference, config and save/load, the summary
row, receptive fields (checked against the gradient's support) and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nn_checks import compare_layer, gradcheck_layer

import lamina
from lamina import nn
from lamina.analysis import receptive_field, summary


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


class _TorchCrop(torch.nn.Module):
    def __init__(self, top, bottom, left, right):
        super().__init__()
        self.edges = top, bottom, left, right

    def forward(self, x):  # NCHW
        top, bottom, left, right = self.edges
        return x[:, :, top:x.shape[2] - bottom, left:x.shape[3] - right]


@pytest.mark.parametrize("size, mode", [(2, "nearest"), (3, "nearest"), ((2, 3), "nearest"), (2, "bilinear"),
                                        (3, "bilinear"), ((2, 3), "bilinear"), ((1, 4), "bilinear")])
def test_upsampling_matches_torch(f64, size, mode):
    factor = (float(size), float(size)) if isinstance(size, int) else tuple(float(s) for s in size)
    extra = {"align_corners": False} if mode == "bilinear" else {}
    out, _ = compare_layer(nn.UpSampling2D(size, interpolation=mode),
                           torch.nn.Upsample(scale_factor=factor, mode=mode, **extra), _x((2, 4, 5, 3)))
    assert out.shape[1:3] == (4 * int(factor[0]), 5 * int(factor[1]))


@pytest.mark.parametrize("padding, torch_pad", [(1, (1, 1, 1, 1)), ((2, 1), (1, 1, 2, 2)),
                                                (((0, 2), (3, 1)), (3, 1, 0, 2))])
def test_zero_padding_matches_torch(f64, padding, torch_pad):
    compare_layer(nn.ZeroPadding2D(padding), torch.nn.ZeroPad2d(torch_pad), _x((2, 4, 5, 3)))


@pytest.mark.parametrize("cropping, edges", [(1, (1, 1, 1, 1)), ((2, 1), (2, 2, 1, 1)),
                                             (((0, 3), (1, 0)), (0, 3, 1, 0))])
def test_cropping_matches_torch_slicing(f64, cropping, edges):
    compare_layer(nn.Cropping2D(cropping), _TorchCrop(*edges), _x((2, 6, 5, 3)))


@pytest.mark.parametrize("layer", [nn.UpSampling2D(2), nn.UpSampling2D((3, 2), "bilinear"),
                                   nn.ZeroPadding2D(((1, 0), (2, 1))), nn.Cropping2D(((1, 0), (0, 2)))],
                         ids=repr)
def test_gradcheck(f64, layer):
    assert gradcheck_layer(layer, _x((2, 3, 4, 2), 1))


@pytest.mark.parametrize("layer, shape, expected", [
    (nn.UpSampling2D(2), (None, 4, 5, 3), (None, 8, 10, 3)),
    (nn.UpSampling2D((2, 3), "bilinear"), (None, 4, 5, 3), (None, 8, 15, 3)),
    (nn.ZeroPadding2D(1), (None, 4, 5, 3), (None, 6, 7, 3)),
    (nn.ZeroPadding2D(((1, 2), (0, 3))), (None, 4, 5, 3), (None, 7, 8, 3)),
    (nn.Cropping2D(1), (None, 4, 5, 3), (None, 2, 3, 3)),
    (nn.Cropping2D(((0, 3), (2, 2))), (None, 4, 5, 3), (None, 1, 1, 3)),
], ids=lambda v: repr(v) if isinstance(v, nn.Module) else None)
def test_output_shape_inference(layer, shape, expected):
    assert layer.compute_output_shape(shape) == expected
    y = layer(np.zeros((2,) + shape[1:], dtype=np.float32))
    assert y.shape == (2,) + expected[1:] and y.dtype == np.float32
    assert layer.num_parameters() == 0


def test_output_shape_inference_with_unknown_sizes():
    assert nn.UpSampling2D(3).compute_output_shape((None, None, 5, None)) == (None, None, 15, None)
    assert nn.ZeroPadding2D((1, 2)).compute_output_shape((8, 4, None, 3)) == (8, 6, None, 3)
    assert nn.Cropping2D((1, 2)).compute_output_shape((None, None, None, 3)) == (None, None, None, 3)
    assert nn.Cropping2D(((1, 0), (2, 2))).compute_output_shape((None, None, 5, 3)) == (None, None, 1, 3)


def test_config_round_trip_repr_and_save_load(tmp_path):
    layers = [nn.UpSampling2D((2, 3), interpolation="Bilinear", name="up"), nn.ZeroPadding2D((1, 2)),
              nn.ZeroPadding2D(((1, 2), (0, 1))), nn.Cropping2D(1), nn.Cropping2D(((0, 1), (2, 0)), name="crop")]
    for layer in layers:
        config = nn.layer_to_config(layer)
        again = nn.layer_from_config(config)
        assert type(again) is type(layer) and again.get_config() == layer.get_config()
    assert layers[0].get_config() == {"size": [2, 3], "interpolation": "bilinear", "name": "up"}
    assert layers[2].get_config() == {"padding": [[1, 2], [0, 1]], "name": None}
    assert [repr(layer) for layer in layers] == [
        "UpSampling2D(size=(2, 3), interpolation='bilinear')", "ZeroPadding2D(padding=(1, 2))",
        "ZeroPadding2D(padding=((1, 2), (0, 1)))", "Cropping2D(cropping=(1, 1))",
        "Cropping2D(cropping=((0, 1), (2, 0)))"]

    lamina.manual_seed(0)
    model = nn.Sequential([nn.Conv2D(4, 3, padding="same", activation="relu"), nn.MaxPool2D(2),
                           nn.UpSampling2D(2, interpolation="bilinear"), nn.ZeroPadding2D(((1, 2), (0, 1))),
                           nn.Cropping2D(((2, 1), (1, 0))), nn.Conv2D(2, 3, padding="same")])
    x = _x((2, 8, 6, 1)).astype(np.float32)
    before = model(x).numpy()
    assert before.shape == (2, 8, 6, 2)
    lamina.save(model, tmp_path / "m.lamina")
    loaded = lamina.load(tmp_path / "m.lamina")
    assert [type(m).__name__ for m in loaded.children()] == [
        "Conv2D", "MaxPool2D", "UpSampling2D", "ZeroPadding2D", "Cropping2D", "Conv2D"]
    assert loaded.layers[2].interpolation == "bilinear" and loaded.layers[3].padding == ((1, 2), (0, 1))
    assert loaded.layers[4].cropping == ((2, 1), (1, 0))
    np.testing.assert_array_equal(loaded(x).numpy(), before)


def test_summary_rows():
    model = nn.Sequential([nn.Conv2D(4, 3, stride=2, padding="same"), nn.UpSampling2D(2),
                           nn.UpSampling2D((2, 3), "bilinear"), nn.UpSampling2D((1, 2), "bilinear"),
                           nn.ZeroPadding2D(1), nn.ZeroPadding2D(((1, 2), (0, 1))), nn.Cropping2D((2, 1)),
                           nn.Cropping2D(((0, 1), (3, 3)))])
    rows = summary(model, (8, 8, 1)).layers
    assert [r["name"] for r in rows[1:5]] == ["up_sampling2d", "up_sampling2d_1", "up_sampling2d_2",
                                              "zero_padding2d"]
    assert [r["hyperparameters"] for r in rows[1:]] == [
        "size=2 nearest", "size=2x3 bilinear", "size=1x2 bilinear", "p=1", "p=(1,2)x(0,1)", "crop=2x1",
        "crop=(0,1)x(3,3)"]
    assert [r["output_shape"] for r in rows[1:]] == [
        [8, 8, 4], [16, 24, 4], [16, 48, 4], [18, 50, 4], [21, 51, 4], [17, 49, 4], [16, 43, 4]]
    assert all(r["params"] == 0 for r in rows[1:])
    assert rows[1]["macs"] == 0                      # nearest: a copy
    assert rows[2]["macs"] == 16 * 24 * 4 * 4        # 4 neighbours per output value
    assert rows[3]["macs"] == 16 * 48 * 4 * 2        # interpolated along W only
    assert [r["macs"] for r in rows[4:]] == [0, 0, 0, 0]
    text = str(summary(model, (8, 8, 1)))
    assert "up_sampling2d_1 (UpSampling2D)" in text and "size=2x3 bilinear" in text


@pytest.mark.parametrize("mode, expected", [("nearest", [3, 3, 5, 5, 5, 9]), ("bilinear", [3, 5, 7, 7, 7, 11])])
def test_receptive_field_rule(mode, expected):
    # conv 3x3 s2: r 3, j 2; up 2: j 1, r + 0 (nearest) or + j_in = 2 (bilinear); conv 3x3: + 2 j;
    # padding and cropping keep r and j; then a 3x3 conv of stride 1 and a 5x5 one: + 2 and + 4
    model = nn.Sequential([nn.Conv2D(1, 3, stride=2, padding="same"), nn.UpSampling2D(2, mode),
                           nn.Conv2D(1, 3, padding="same"), nn.ZeroPadding2D(2), nn.Cropping2D(1),
                           nn.Conv2D(1, 5, padding="same")])
    assert [receptive_field(model, i, (16, 16, 1)) for i in range(6)] == expected[:3] + expected[2:3] * 2 + [
        expected[5]]


def test_receptive_field_of_uneven_factors_and_unknown_jumps():
    model = nn.Sequential([nn.Conv2D(1, 3, stride=2, padding="same"), nn.UpSampling2D((1, 2), "bilinear"),
                           nn.UpSampling2D(3, "bilinear")])
    assert receptive_field(model, 1, (16, 16, 1)) == (3, 5)    # along H: s = 1 is the identity
    with pytest.raises(ValueError, match="does not depend"):  # j = 2 / 3 is not a whole pixel
        receptive_field(model, 2, (16, 16, 1))


@pytest.mark.parametrize("mode", ["nearest", "bilinear"])
def test_receptive_field_is_the_support_of_the_gradient(f64, mode):
    """The largest input region one output unit depends on, measured through backward with
    positive weights (no cancellation), is the field the rule gives."""
    model = nn.Sequential([nn.Conv2D(1, 3, stride=2, padding="same", kernel_init="ones"), nn.UpSampling2D(2, mode),
                           nn.Conv2D(1, 3, padding="same", kernel_init="ones")])
    x = lamina.tensor(np.ones((1, 24, 24, 1)), requires_grad=True)
    y = model(x)
    widest = 0
    for i in range(8, 16):           # units away from the borders
        x.grad = None
        upstream = np.zeros(y.shape)
        upstream[0, 12, i, 0] = 1.0
        model(x).backward(upstream)
        cols = np.nonzero(np.abs(x.grad[0, :, :, 0]).sum(axis=0))[0]
        widest = max(widest, cols.max() - cols.min() + 1)
    assert widest == receptive_field(model, 2, (24, 24, 1))


def test_errors_name_the_layer_and_shapes():
    for layer in (nn.UpSampling2D(name="up"), nn.ZeroPadding2D(name="up"), nn.Cropping2D(1, name="up")):
        kind = type(layer).__name__
        with pytest.raises(lamina.ShapeError, match=rf"{kind} 'up'.*\(5, 5, 3\).*4-D NHWC.*x\[None\]"):
            layer(np.zeros((5, 5, 3), dtype=np.float32))
        with pytest.raises(lamina.ShapeError, match=rf"{kind} 'up'.*\(5, 3\).*4-D NHWC"):
            layer.compute_output_shape((5, 3))
    crop = nn.Cropping2D(((2, 1), (0, 0)), name="trim")
    with pytest.raises(lamina.ShapeError, match=r"Cropping2D 'trim': cropping \(\(2, 1\), \(0, 0\)\) is larger "
                                                r"than the input of shape \(1, 3, 5, 2\).*height above 3"):
        crop(np.zeros((1, 3, 5, 2), dtype=np.float32))
    with pytest.raises(lamina.ShapeError, match=r"Cropping2D 'trim'.*\(None, 2, None, 2\)"):
        crop.compute_output_shape((None, 2, None, 2))
    assert crop(np.zeros((1, 4, 5, 2), dtype=np.float32)).shape == (1, 1, 5, 2)
    with pytest.raises(ValueError, match=r"UpSampling2D size: the scale factors must be positive integers"):
        nn.UpSampling2D(0)
    with pytest.raises(TypeError, match="UpSampling2D size: expected ints"):
        nn.UpSampling2D(2.5)
    with pytest.raises(ValueError, match=r"UpSampling2D: interpolation must be one of \['nearest', 'bilinear'\]"):
        nn.UpSampling2D(2, interpolation="bicubic")
    with pytest.raises(ValueError, match="ZeroPadding2D padding: expected non-negative sizes"):
        nn.ZeroPadding2D((1, -2))
    with pytest.raises(ValueError, match=r"Cropping2D cropping: expected an int, \(p_h, p_w\)"):
        nn.Cropping2D((1, 2, 3))


def test_a_small_unet_trains():
    """Encoder, bottleneck, decoder with a skip connection: UpSampling2D, ZeroPadding2D and
    Cropping2D in a graph that learns (the loss falls)."""
    lamina.manual_seed(0)

    class TinyUNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = nn.Conv2D(4, 3, padding="same", activation="relu")
            self.pool = nn.MaxPool2D(2)
            self.mid = nn.Conv2D(8, 3, activation="relu")                   # 'valid': 4x4 -> 2x2
            self.pad = nn.ZeroPadding2D(1)                                   # 2x2 -> 4x4
            self.up = nn.UpSampling2D(2, "bilinear")                         # -> 8x8
            self.crop = nn.Cropping2D(((0, 1), (1, 0)))                       # skip 9x9 -> 8x8
            self.merge = nn.Concatenate()
            self.out = nn.Conv2D(1, 3, padding="same")

        def forward(self, x):
            skip = self.enc(x)
            y = self.up(self.pad(self.mid(self.pool(skip))))
            return self.out(self.merge([y, self.crop(skip)]))

    rng = np.random.default_rng(0)
    x = rng.standard_normal((16, 9, 9, 1)).astype(np.float32)
    target = lamina.tensor(np.roll(x, 1, axis=2)[:, :8, 1:])
    model = TinyUNet()
    optimizer = lamina.optim.Adam(model, lr=0.02)

    def cost():
        return lamina.functional.mean_squared_error(model(x), target)

    start = float(cost().numpy())
    for _ in range(40):
        optimizer.zero_grad()
        loss = cost()
        loss.backward()
        optimizer.step()
    assert float(cost().numpy()) < 0.5 * start
