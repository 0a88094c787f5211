"""Conv2DTranspose with dilation and groups: PyTorch's ConvTranspose2d in outputs and
gradients, gradient checks, shape inference, config, repr, summary figures and errors."""

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


@pytest.mark.parametrize("kernel, stride, padding, output_padding, dilation, groups", [
    (3, 1, 0, 0, 2, 1), (3, 2, 1, 1, 2, 2), (2, 1, 1, 2, 3, 1), ((3, 2), (2, 1), (1, 0), (0, 1), (1, 2), 2),
])
def test_matches_torch(f64, kernel, stride, padding, output_padding, dilation, groups):
    layer = nn.Conv2DTranspose(6, kernel, stride=stride, padding=padding, output_padding=output_padding,
                               dilation=dilation, groups=groups)
    torch_layer = torch.nn.ConvTranspose2d(4, 6, kernel, stride=stride, padding=padding,
                                           output_padding=output_padding, dilation=dilation, groups=groups)
    layer.build((2, 3, 4, 4))
    assert layer.weight.shape == (4, *torch_layer.weight.shape[2:], 6 // groups)
    layer.bias.data = _x(6, 1)
    compare_layer(layer, torch_layer, _x((2, 3, 4, 4)),
                  [("weight", torch_layer.weight, (0, 3, 1, 2)), ("bias", torch_layer.bias, None)])


@pytest.mark.parametrize("padding", ["valid", "same", 1])
def test_gradcheck(f64, padding):
    layer = nn.Conv2DTranspose(4, 2, stride=2, padding=padding, dilation=2, groups=2, activation="tanh")
    assert gradcheck_layer(layer, _x((1, 3, 2, 2)))


@pytest.mark.parametrize("padding, stride, output_padding, dilation, expected", [
    ("valid", 2, 0, 2, (None, 11, 13, 4)),         # (h - 1) s + q (f - 1) + 1
    ("same", 2, 0, 3, (None, 8, 10, 4)),           # h s
    (1, 1, 1, 2, (None, 7, 8, 4)),                 # (h - 1) s - 2p + q (f - 1) + output_padding + 1
    ((0, 1), (1, 2), (1, 0), (2, 1), (None, 9, 9, 4)),
])
def test_output_shape_inference(padding, stride, output_padding, dilation, expected):
    layer = nn.Conv2DTranspose(4, 3, stride=stride, padding=padding, output_padding=output_padding,
                               dilation=dilation, groups=2)
    assert layer.compute_output_shape((None, 4, 5, 2)) == expected
    y = layer(np.zeros((2, 4, 5, 2), dtype=np.float32))
    assert y.shape == (2,) + expected[1:] and y.dtype == np.float32
    assert layer.weight.shape == (2, 3, 3, 2)


def test_config_round_trip_repr_and_save_load(tmp_path):
    lamina.manual_seed(0)
    layer = nn.Conv2DTranspose(4, 3, stride=2, padding=1, output_padding=1, dilation=(2, 1), groups=2, name="up")
    again = nn.layer_from_config(nn.layer_to_config(layer))
    assert again.get_config() == layer.get_config()
    assert again.dilation == (2, 1) and again.groups == 2
    assert repr(layer) == "Conv2DTranspose(4, kernel_size=(3, 3), stride=(2, 2), padding=(1, 1), " \
                          "dilation=(2, 1), output_padding=(1, 1), groups=2)"
    model = nn.Sequential([nn.Conv2D(2, 3, padding="same"), layer])
    x = _x((2, 5, 5, 1)).astype(np.float32)
    before = model(x).numpy()
    lamina.save(model, tmp_path / "m.lamina")
    np.testing.assert_array_equal(lamina.load(tmp_path / "m.lamina")(x).numpy(), before)


def test_summary_figures_and_receptive_field():
    model = nn.Sequential([nn.Conv2D(8, 3, stride=2, padding="same"),
                           nn.Conv2DTranspose(4, 3, stride=2, padding="same", dilation=2, groups=2)])
    up = summary(model, (8, 8, 2)).layers[1]
    assert up["hyperparameters"] == "K=4 f=3 s=2 p=same d=2 g=2"
    assert up["macs"] == 4 * 4 * 8 * 3 * 3 * 2              # every input value meets f^2 K / groups weights
    assert up["params"] == 8 * 3 * 3 * 2 + 4
    # r: 1 -> 3 (j 2); transposed with extent 2 (3 - 1) + 1 = 5, s=2: + (3 - 1) 2 = 7 (j 1)
    assert receptive_field(model, 1, (8, 8, 2)) == 7


def test_errors():
    with pytest.raises(ValueError, match=r"output_padding .*stride \(1, 1\) or the dilation \(2, 2\)"):
        nn.Conv2DTranspose(4, 3, output_padding=2, dilation=2)
    nn.Conv2DTranspose(4, 3, output_padding=1, dilation=2)       # smaller than the dilation: allowed
    with pytest.raises(ValueError, match="dilation must be positive"):
        nn.Conv2DTranspose(4, 3, dilation=0)
    with pytest.raises(ValueError, match="groups=3 must divide filters=4"):
        nn.Conv2DTranspose(4, 3, groups=3)
    with pytest.raises(lamina.ShapeError, match=r"groups=2 must divide the 3 input channels"):
        nn.Conv2DTranspose(4, 3, groups=2).build((1, 5, 5, 3))
