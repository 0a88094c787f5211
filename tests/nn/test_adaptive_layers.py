"""AdaptiveAvgPool2D/1D, AdaptiveMaxPool2D/1D, PixelShuffle, PixelUnshuffle, ReflectionPad2D
and ReplicationPad2D: PyTorch's modules in outputs and gradients, gradient checks, shape
inference, config round trips and save/load, use inside a Sequential, and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nn_checks import compare_layer, gradcheck_layer

import lamina
from lamina import ShapeError, nn
from lamina.nn.adaptive import (
    AdaptiveAvgPool1D,
    AdaptiveAvgPool2D,
    AdaptiveMaxPool1D,
    AdaptiveMaxPool2D,
    PixelShuffle,
    PixelUnshuffle,
    ReflectionPad2D,
    ReplicationPad2D,
)


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


class _Sequences(torch.nn.Module):
    """A torch 1-D module on (N, T, C) sequences (it takes (N, C, T))."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x.permute(0, 2, 1)).permute(0, 2, 1)


@pytest.mark.parametrize("layer, torch_layer, shape", [
    (lambda: AdaptiveAvgPool2D(3), lambda: torch.nn.AdaptiveAvgPool2d(3), (2, 7, 7, 3)),
    (lambda: AdaptiveAvgPool2D((2, None)), lambda: torch.nn.AdaptiveAvgPool2d((2, None)), (2, 5, 4, 3)),
    (lambda: AdaptiveMaxPool2D((3, 5)), lambda: torch.nn.AdaptiveMaxPool2d((3, 5)), (2, 7, 3, 2)),
    (lambda: AdaptiveMaxPool2D(2), lambda: torch.nn.AdaptiveMaxPool2d(2), (2, 8, 8, 2)),
    (lambda: PixelShuffle(2), lambda: torch.nn.PixelShuffle(2), (2, 3, 4, 8)),
    (lambda: PixelUnshuffle(2), lambda: torch.nn.PixelUnshuffle(2), (2, 4, 6, 3)),
    # PyTorch's padding modules list (left, right, top, bottom)
    (lambda: ReflectionPad2D((1, 3, 2, 0)), lambda: torch.nn.ReflectionPad2d((2, 0, 1, 3)), (2, 4, 5, 3)),
    (lambda: ReplicationPad2D(((2, 0), (1, 4))), lambda: torch.nn.ReplicationPad2d((1, 4, 2, 0)), (2, 4, 5, 3)),
    (lambda: ReflectionPad2D(), lambda: torch.nn.ReflectionPad2d(1), (1, 3, 3, 2)),
], ids=lambda v: None)
def test_layers_match_torch_and_gradcheck(f64, layer, torch_layer, shape):
    compare_layer(layer(), torch_layer(), _x(shape))
    assert gradcheck_layer(layer(), _x((1,) + shape[1:], 1))


@pytest.mark.parametrize("layer, torch_layer", [
    (lambda: AdaptiveAvgPool1D(3), lambda: torch.nn.AdaptiveAvgPool1d(3)),
    (lambda: AdaptiveMaxPool1D(4), lambda: torch.nn.AdaptiveMaxPool1d(4)),
])
def test_1d_layers_match_torch_and_gradcheck(f64, layer, torch_layer):
    compare_layer(layer(), _Sequences(torch_layer()), _x((2, 7, 3)), nchw=False)
    assert gradcheck_layer(layer(), _x((1, 7, 2), 1))


@pytest.mark.parametrize("layer, shape, expected", [
    (AdaptiveAvgPool2D(3), (None, 7, 9, 4), (None, 3, 3, 4)),
    (AdaptiveMaxPool2D((2, None)), (None, 7, 9, 4), (None, 2, 9, 4)),
    (AdaptiveAvgPool2D(1), (None, 5, 4, 6), (None, 1, 1, 6)),
    (AdaptiveAvgPool1D(4), (None, 10, 3), (None, 4, 3)),
    (AdaptiveMaxPool1D(None), (None, 10, 3), (None, 10, 3)),
    (PixelShuffle(3), (None, 2, 4, 18), (None, 6, 12, 2)),
    (PixelUnshuffle(2), (None, 4, 6, 3), (None, 2, 3, 12)),
    (ReflectionPad2D(2), (None, 4, 5, 3), (None, 8, 9, 3)),
    (ReplicationPad2D((1, 0, 2, 3)), (None, 4, 5, 3), (None, 5, 10, 3)),
], ids=repr)
def test_output_shape_inference(layer, shape, expected):
    assert layer.compute_output_shape(shape) == expected
    y = layer(np.zeros((2,) + shape[1:], dtype=np.float32))
    assert y.shape == (2,) + expected[1:] and y.dtype == np.float32
    assert layer.num_parameters() == 0


def test_output_shape_inference_with_unknown_sizes():
    assert AdaptiveAvgPool2D(2).compute_output_shape((None, None, None, 3)) == (None, 2, 2, 3)
    assert AdaptiveAvgPool2D((None, 2)).compute_output_shape((None, None, None, 3)) == (None, None, 2, 3)
    assert PixelShuffle(2).compute_output_shape((None, None, None, 8)) == (None, None, None, 2)
    assert ReflectionPad2D(1).compute_output_shape((None, None, 4, 3)) == (None, None, 6, 3)


@pytest.mark.parametrize("layer", [
    AdaptiveAvgPool2D((2, None)), AdaptiveMaxPool2D(3), AdaptiveAvgPool1D(5), AdaptiveMaxPool1D(None),
    PixelShuffle(3), PixelUnshuffle(2), ReflectionPad2D((0, 1, 2, 3)), ReplicationPad2D(2),
], ids=repr)
def test_config_round_trip(layer):
    again = nn.layer_from_config(nn.layer_to_config(layer))
    assert type(again) is type(layer) and again.get_config() == layer.get_config()
    assert repr(again) == repr(layer)


def test_any_image_size_reaches_one_classifier_head():
    """Adaptive pooling gives the dense head the same input whatever the image size."""
    model = nn.Sequential([nn.Conv2D(4, 3, activation="relu"), AdaptiveAvgPool2D(2), nn.Flatten(), nn.Dense(3)])
    for size in (6, 9, 13):
        assert model(np.ones((2, size, size, 1), np.float32)).shape == (2, 3)
    assert model[:2].compute_output_shape((None, 11, 8, 1)) == (None, 2, 2, 4)


def test_sub_pixel_upsampling_and_reflection_padding_in_a_model_save_and_load(tmp_path):
    model = nn.Sequential([ReflectionPad2D(1), nn.Conv2D(8, 3), PixelShuffle(2), ReplicationPad2D(1),
                           nn.Conv2D(2, 3), PixelUnshuffle(2), AdaptiveMaxPool2D(3), nn.Flatten(), nn.Dense(2)])
    x = _x((2, 5, 5, 1)).astype(np.float32)
    before = model(x).numpy()
    assert model[:3](x).shape == (2, 10, 10, 2)        # 'same' 3x3 convolution, then upsampled by 2
    path = tmp_path / "m.lamina"
    lamina.save(model, path)
    np.testing.assert_array_equal(lamina.load(path)(x).numpy(), before)


def _spots(rng, count: int, size: int):
    """Noisy images with one bright 2x2 spot; the label is the quadrant that holds it."""
    x = rng.uniform(0, 0.5, (count, size, size, 1)).astype(np.float32)
    labels = rng.integers(0, 4, count)
    half = size // 2
    for image, label in zip(x, labels):
        top = rng.integers(0, half - 1) + (half if label >= 2 else 0)
        left = rng.integers(0, half - 1) + (half if label % 2 else 0)
        image[top:top + 2, left:left + 2] += 1.0
    return x, labels


def test_a_model_with_adaptive_pooling_learns_on_any_image_size():
    """A tiny CNN with a 2x2 adaptive max pool head, trained on 8x8 and 12x12 images, finds
    the quadrant of a spot on those sizes and on 10x10 images it never saw (chance: 25%)."""
    rng = np.random.default_rng(0)
    train = [_spots(rng, 128, size) for size in (8, 12)]
    model = nn.Sequential([nn.Conv2D(4, 3, padding="same", activation="relu"), AdaptiveMaxPool2D(2), nn.Flatten(),
                           nn.Dense(4)])
    optimizer = lamina.optim.Adam(model, lr=0.03)
    for _ in range(40):
        for x, y in train:
            loss = lamina.functional.categorical_cross_entropy(model(x), y, from_logits=True)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    for size in (8, 10, 12):
        x, y = _spots(rng, 128, size)
        assert (model(x).numpy().argmax(axis=1) == y).mean() >= 0.9, size


@pytest.mark.parametrize("call, error, message", [
    (lambda: AdaptiveAvgPool2D(0), ValueError, r"AdaptiveAvgPool2D output_size: expected positive ints"),
    (lambda: AdaptiveMaxPool2D((2, 3, 4)), ValueError, r"AdaptiveMaxPool2D output_size: expected an int or a pair"),
    (lambda: AdaptiveAvgPool1D(2.5), ValueError, r"AdaptiveAvgPool1D output_size: expected positive ints"),
    (lambda: PixelShuffle(0), ValueError, r"PixelShuffle upscale_factor: expected a positive int, got 0"),
    (lambda: ReflectionPad2D(-1), ValueError, r"ReflectionPad2D padding: padding must be"),
    (lambda: AdaptiveAvgPool2D(2)(np.zeros((4, 4, 1))), ShapeError,
     r"AdaptiveAvgPool2D: got an input of shape \(4, 4, 1\).*expected a 4-D NHWC batch .*add a batch axis"),
    (lambda: AdaptiveMaxPool1D(2)(np.zeros((2, 0, 3))), ShapeError,
     r"AdaptiveMaxPool1D: got an input of shape \(2, 0, 3\).*expected a 3-D batch of sequences .* at least one "
     r"step"),
    (lambda: PixelShuffle(2)(np.zeros((1, 2, 2, 6))), ShapeError,
     r"PixelShuffle: the 6 channels of the input shape \(1, 2, 2, 6\) are not a multiple of r\^2 = 4"),
    (lambda: PixelUnshuffle(3).compute_output_shape((None, 6, 7, 1)), ShapeError,
     r"PixelUnshuffle: the height and width of the input shape \(None, 6, 7, 1\) must be multiples of r = 3"),
    (lambda: ReflectionPad2D((1, 1, 3, 0))(np.zeros((1, 4, 3, 2))), ShapeError,
     r"ReflectionPad2D: padding \(top, bottom, left, right\) = \(1, 1, 3, 0\) does not fit the input shape "
     r"\(1, 4, 3, 2\); expected each amount less than"),
    (lambda: ReplicationPad2D(1).compute_output_shape((None, 0, 3, 2)), ShapeError,
     r"ReplicationPad2D: padding .*\(None, 0, 3, 2\); expected a height and width of at least 1"),
])
def test_errors_name_the_layer_and_shapes(call, error, message):
    with pytest.raises(error, match=message):
        call()
