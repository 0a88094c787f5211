"""Conv2DTranspose: PyTorch's ConvTranspose2d in outputs and gradients, gradient checks,
shape inference, config, summary row, receptive field, errors, and an autoencoder that learns."""

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


@pytest.mark.parametrize("kernel, stride, padding, output_padding", [
    (3, 1, 0, 0), (3, 2, 1, 1), (4, 2, 1, 0), (2, 2, 0, 0), ((3, 5), (2, 1), (1, 2), (1, 0)), (1, 3, 0, 2),
])
def test_matches_torch(f64, kernel, stride, padding, output_padding):
    layer = nn.Conv2DTranspose(5, kernel, stride=stride, padding=padding, output_padding=output_padding)
    torch_layer = torch.nn.ConvTranspose2d(3, 5, kernel, stride=stride, padding=padding,
                                           output_padding=output_padding)
    layer.build((2, 4, 5, 3))
    layer.bias.data = _x(5, 1)
    compare_layer(layer, torch_layer, _x((2, 4, 5, 3)),
                  [("weight", torch_layer.weight, (0, 3, 1, 2)), ("bias", torch_layer.bias, None)])


@pytest.mark.parametrize("padding", ["valid", "same", 1])
def test_gradcheck(f64, padding):
    layer = nn.Conv2DTranspose(2, 3, stride=2, padding=padding, activation="tanh")
    assert gradcheck_layer(layer, _x((2, 3, 3, 2)))


@pytest.mark.parametrize("padding, stride, output_padding, expected", [
    ("valid", 2, 0, (None, 9, 11, 4)),       # (h - 1) s + f
    ("same", 2, 0, (None, 8, 10, 4)),        # h s
    ("same", 3, 0, (None, 12, 15, 4)),
    (1, 2, 1, (None, 8, 10, 4)),             # (h - 1) s - 2p + f + output_padding
    ((0, 1), (1, 2), (0, 1), (None, 6, 10, 4)),
])
def test_output_shape_inference(padding, stride, output_padding, expected):
    layer = nn.Conv2DTranspose(4, 3, stride=stride, padding=padding, output_padding=output_padding)
    assert layer.compute_output_shape((None, 4, 5, 3)) == expected
    y = layer(np.zeros((2, 4, 5, 3), dtype=np.float32))
    assert y.shape == (2,) + expected[1:] and y.dtype == np.float32
    assert layer.weight.shape == (3, 3, 3, 4)


def test_config_round_trip_and_save_load(tmp_path):
    lamina.manual_seed(0)
    layer = nn.Conv2DTranspose(4, (3, 2), stride=2, padding=1, output_padding=(1, 0), activation="relu",
                               use_bias=True, name="up")
    again = nn.layer_from_config(nn.layer_to_config(layer))
    assert again.get_config() == layer.get_config()
    assert repr(layer) == "Conv2DTranspose(4, kernel_size=(3, 2), stride=(2, 2), padding=(1, 1), " \
                          "activation='relu', output_padding=(1, 0))"
    model = nn.Sequential([nn.Conv2D(3, 3, padding="same"), layer])
    x = _x((2, 5, 5, 1)).astype(np.float32)
    before = model(x).numpy()
    lamina.save(model, tmp_path / "m.lamina")
    np.testing.assert_array_equal(lamina.load(tmp_path / "m.lamina")(x).numpy(), before)


def test_summary_row_and_receptive_field():
    model = nn.Sequential([nn.Conv2D(8, 3, stride=2, padding="same"), nn.Conv2D(8, 3, stride=2, padding="same"),
                           nn.Conv2DTranspose(8, 3, stride=2, padding="same"),
                           nn.Conv2DTranspose(1, 4, stride=2, padding=1)])
    rows = summary(model, (16, 16, 1)).layers
    up = rows[2]
    assert up["type"] == "Conv2DTranspose" and up["hyperparameters"] == "K=8 f=3 s=2 p=same"
    assert up["output_shape"] == [8, 8, 8]
    assert up["macs"] == 4 * 4 * 8 * 3 * 3 * 8           # every input value meets f^2 K weights
    assert up["params"] == 8 * 3 * 3 * 8 + 8
    assert rows[3]["output_shape"] == [16, 16, 1]
    # r: 1 -> 3 (j 2) -> 7 (j 4); transposed f=3 s=2: + (2 - 1) 4 = 11 (j 2); f=4 s=2: + (2 - 1) 2 = 13 (j 1)
    assert receptive_field(model, 2, (16, 16, 1)) == 11
    assert receptive_field(model, 3, (16, 16, 1)) == 13
    assert [row["name"] for row in rows][2:] == ["conv2d_transpose", "conv2d_transpose_1"]


def test_errors_name_the_layer_and_shapes():
    layer = nn.Conv2DTranspose(4, 3, name="up")
    with pytest.raises(lamina.ShapeError, match=r"Conv2DTranspose 'up'.*\(5, 5, 3\).*4-D NHWC"):
        layer(np.zeros((5, 5, 3), dtype=np.float32))
    layer(np.zeros((1, 5, 5, 3), dtype=np.float32))
    with pytest.raises(lamina.ShapeError, match=r"Conv2DTranspose 'up'.*\(1, 5, 5, 2\).*C=3"):
        layer(np.zeros((1, 5, 5, 2), dtype=np.float32))
    with pytest.raises(ValueError, match=r"Conv2DTranspose: output_padding must be .* smaller than the stride"):
        nn.Conv2DTranspose(4, 3, stride=2, output_padding=2)
    with pytest.raises(ValueError, match=r"Conv2DTranspose: padding='same'"):
        nn.Conv2DTranspose(4, 3, stride=2, padding="same", output_padding=1)
    with pytest.raises(lamina.ShapeError, match=r"Conv2DTranspose.*crops the whole output.*\(None, 1, 1, 3\)"):
        nn.Conv2DTranspose(4, 2, padding=2).compute_output_shape((None, 1, 1, 3))


def test_a_convolutional_autoencoder_learns_to_reconstruct_digits():
    from sklearn.datasets import load_digits

    lamina.manual_seed(0)
    images = (load_digits().images[:512, :, :, None] / 16.0).astype(np.float32)
    model = nn.Sequential([nn.Conv2D(8, 3, stride=2, padding="same", activation="relu"),
                           nn.Conv2D(16, 3, stride=2, padding="same", activation="relu"),
                           nn.Conv2DTranspose(8, 3, stride=2, padding="same", activation="relu"),
                           nn.Conv2DTranspose(1, 3, stride=2, padding="same", activation="sigmoid")])
    optimizer = lamina.optim.Adam(model, lr=0.01)

    def cost():
        return lamina.functional.mean_squared_error(model(images), lamina.tensor(images))

    start = float(cost().numpy())
    for _ in range(60):
        optimizer.zero_grad()
        loss = cost()
        loss.backward()
        optimizer.step()
    end = float(cost().numpy())
    assert end < 0.35 * start, (start, end)
