"""``nn.fully_connected_to_conv``: the course's conversion of Flatten + Dense into
convolutions keeps the outputs on the built size and slides on larger images."""

import numpy as np
import pytest

import lamina
from lamina import models, nn


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)


def _run(model, x):
    model.eval()
    with lamina.no_grad():
        return model(lamina.tensor(x, dtype=x.dtype)).numpy()


def _convnet():
    model = nn.Sequential(
        nn.Conv2D(4, 3, activation="relu"),
        nn.MaxPool2D(2),
        nn.Conv2D(6, 3),
        nn.ReLU(),
        nn.Flatten(),
        nn.Dense(10, activation="relu", name="fc1"),
        nn.Dropout(0.3),
        nn.Dense(7, name="fc2"),
        nn.BatchNorm(),
        nn.Dense(5, name="fc3"),
        nn.Softmax(),
    )
    model.build((None, 12, 12, 2))  # conv 10 -> pool 5 -> conv 3: a (3, 3, 6) volume, 54 features
    bn = model["batch_norm"]
    rng = np.random.default_rng(0)
    bn.running_mean = rng.standard_normal(7)
    bn.running_var = rng.random(7) + 0.5
    return model


def test_outputs_are_preserved_on_the_built_size(f64):
    model = _convnet()
    conv = nn.fully_connected_to_conv(model)
    kinds = [type(layer).__name__ for layer in conv]
    assert "Flatten" not in kinds and "Dense" not in kinds
    assert conv["fc1"].kernel_size == (3, 3) and conv["fc1"].filters == 10
    assert conv["fc2"].kernel_size == (1, 1) and conv["fc3"].kernel_size == (1, 1)
    x = np.random.default_rng(1).standard_normal((3, 12, 12, 2))
    expected = _run(model, x)
    out = _run(conv, x)
    assert out.shape == (3, 1, 1, 5)
    np.testing.assert_allclose(out.reshape(3, 5), expected, rtol=1e-10, atol=1e-12)


def test_larger_image_gives_the_grid_of_window_outputs(f64):
    model = _convnet()
    conv = nn.fully_connected_to_conv(model)
    x = np.random.default_rng(2).standard_normal((2, 20, 18, 2))
    grid = _run(conv, x)
    stride = 2  # the product of the strides before the first Dense layer (the 2x2 pool)
    rows, cols = (20 - 12) // stride + 1, (18 - 12) // stride + 1
    assert grid.shape == (2, rows, cols, 5)
    for i in range(rows):
        for j in range(cols):
            crop = x[:, i * stride:i * stride + 12, j * stride:j * stride + 12]
            np.testing.assert_allclose(grid[:, i, j], _run(model, crop), rtol=1e-10, atol=1e-12)


def test_nested_vgg_style_model_with_identity_adaptive_pool(f64):
    model = nn.Sequential(
        nn.Sequential(nn.Conv2D(3, 3, name="0"), nn.ReLU(name="1"), nn.MaxPool2D(2, name="2"), name="features"),
        models.AdaptiveAvgPool2D(3, name="avgpool"),
        nn.Flatten(name="flatten"),
        nn.Sequential(nn.Dense(8, name="0"), nn.ReLU(name="1"), nn.Dense(4, name="2"), name="classifier"),
    )
    model.build((None, 8, 8, 1))  # conv 6 -> pool 3: the adaptive pool is the identity
    conv = nn.fully_connected_to_conv(model)
    assert [layer.name for layer in conv] == ["features", "classifier"]
    x = np.random.default_rng(3).standard_normal((2, 8, 8, 1))
    np.testing.assert_allclose(_run(conv, x).reshape(2, 4), _run(model, x), rtol=1e-10, atol=1e-12)
    big = np.random.default_rng(4).standard_normal((1, 12, 10, 1))
    grid = _run(conv, big)
    assert grid.shape == (1, 3, 2, 4)
    np.testing.assert_allclose(grid[0, 2, 1], _run(model, big[:, 4:12, 2:10])[0], rtol=1e-10, atol=1e-12)


def test_global_average_pooling_head(f64):
    model = models.resnet_cifar(8, num_classes=3, input_shape=(16, 16, 3))
    model.build((None, 16, 16, 3))
    conv = nn.fully_connected_to_conv(model)
    assert type(conv["avgpool"]).__name__ == "AvgPool2D" and conv["fc"].kernel_size == (1, 1)
    x = np.random.default_rng(5).standard_normal((2, 16, 16, 3))
    np.testing.assert_allclose(_run(conv, x).reshape(2, 3), _run(model, x), rtol=1e-10, atol=1e-12)
    assert _run(conv, np.zeros((1, 24, 24, 3))).shape == (1, 3, 3, 3)  # 6x6 maps, 4x4 windows


def test_errors():
    with pytest.raises(TypeError):
        nn.fully_connected_to_conv(nn.Dense(3))
    with pytest.raises(ValueError, match="build"):
        nn.fully_connected_to_conv(nn.Sequential(nn.Flatten(), nn.Dense(3)))
    mlp = nn.Sequential(nn.Dense(4), nn.Dense(2))
    mlp.build((None, 5))
    with pytest.raises(ValueError, match="does not follow a Flatten"):
        nn.fully_connected_to_conv(mlp)
