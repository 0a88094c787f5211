"""Conv and pooling layers without their kernels: weights, shape inference, input checks."""

import numpy as np
import pytest

import lamina
from lamina import nn


def test_conv2d_weights_and_parameter_count():
    conv = nn.Conv2D(96, 11, stride=4)
    conv.build((None, 227, 227, 3))
    assert conv.weight.shape == (96, 11, 11, 3) and conv.bias.shape == (96,)
    assert conv.num_parameters() == 96 * (11 * 11 * 3 + 1)  # K (f f c_in + 1)
    grouped = nn.Conv2D(8, (3, 5), groups=2, use_bias=False)
    grouped.build((None, 10, 10, 4))
    assert grouped.weight.shape == (8, 3, 5, 2) and grouped.num_parameters() == 8 * 15 * 2
    dw = nn.DepthwiseConv2D(3, depth_multiplier=2)
    dw.build((None, 8, 8, 5))
    assert dw.weight.shape == (10, 3, 3, 1) and dw.bias.shape == (10,)
    sep = nn.SeparableConv2D(16, 3)
    sep.build((None, 8, 8, 5))
    assert [n for n, _ in sep.named_parameters()] == ["depthwise_weight", "pointwise_weight", "bias"]
    assert sep.num_parameters() == 5 * 9 + 16 * 5 + 16


def test_alexnet_output_shapes():
    model = nn.Sequential(
        nn.Conv2D(96, 11, stride=4, activation="relu"), nn.LocalResponseNorm(), nn.MaxPool2D(3, stride=2),
        nn.Conv2D(256, 5, padding="same", activation="relu"), nn.MaxPool2D(3, stride=2),
        nn.Conv2D(384, 3, padding="same"), nn.Conv2D(384, 3, padding="same"),
        nn.Conv2D(256, 3, padding="same"), nn.MaxPool2D(3, stride=2),
        nn.Flatten(), nn.Dense(4096), nn.Dropout(0.5), nn.Dense(4096), nn.Dense(1000, activation="softmax"),
    )
    shapes = []
    shape = (None, 227, 227, 3)
    for layer in model:
        shape = layer.compute_output_shape(shape)
        shapes.append(shape)
    assert shapes[0] == (None, 55, 55, 96) and shapes[2] == (None, 27, 27, 96)
    assert shapes[3] == (None, 27, 27, 256) and shapes[4] == (None, 13, 13, 256)
    assert shapes[8] == (None, 6, 6, 256) and shapes[9] == (None, 9216)
    assert model.compute_output_shape((None, 227, 227, 3)) == (None, 1000)


@pytest.mark.parametrize(
    "layer, in_shape, out_shape",
    [
        (lambda: nn.Conv2D(4, 3), (2, 7, 9, 3), (2, 5, 7, 4)),
        (lambda: nn.Conv2D(4, 3, stride=2, padding=1), (2, 7, 8, 3), (2, 4, 4, 4)),
        (lambda: nn.Conv2D(4, (3, 1), stride=(2, 1), padding=(1, 0)), (2, 7, 8, 3), (2, 4, 8, 4)),
        (lambda: nn.Conv2D(4, 3, stride=2, padding="same"), (2, 7, 8, 3), (2, 4, 4, 4)),
        (lambda: nn.DepthwiseConv2D(3, depth_multiplier=3), (1, 5, 5, 2), (1, 3, 3, 6)),
        (lambda: nn.SeparableConv2D(7, 3, padding="same"), (1, 5, 5, 2), (1, 5, 5, 7)),
        (lambda: nn.MaxPool2D(2), (2, 7, 8, 3), (2, 3, 4, 3)),
        (lambda: nn.MaxPool2D(2, ceil_mode=True), (2, 7, 8, 3), (2, 4, 4, 3)),
        (lambda: nn.MaxPool2D(3, stride=2, padding=1), (2, 8, 8, 3), (2, 4, 4, 3)),
        (lambda: nn.AvgPool2D(3, stride=1), (2, 8, 8, 3), (2, 6, 6, 3)),
        (lambda: nn.GlobalAvgPool2D(), (2, 8, 8, 3), (2, 3)),
    ],
)
def test_output_shape_inference(layer, in_shape, out_shape):
    assert layer().compute_output_shape(in_shape) == out_shape
    assert layer().compute_output_shape((None,) + in_shape[1:]) == (None,) + out_shape[1:]


def test_conv2d_rejects_3d_input():
    conv = nn.Conv2D(4, 3, name="conv1")
    conv.build((None, 8, 8, 3))
    conv.built = True
    with pytest.raises(lamina.ShapeError) as info:
        conv(np.zeros((8, 8, 3), dtype=np.float32))
    msg = str(info.value)
    assert "Conv2D 'conv1'" in msg and "(8, 8, 3)" in msg and "float32" in msg and "4-D NHWC" in msg
    assert "x[None]" in msg


def test_conv2d_rejects_nchw_input():
    conv = nn.Conv2D(4, 3)
    conv.build((None, 8, 8, 3))
    conv.built = True
    with pytest.raises(lamina.ShapeError) as info:
        conv(np.zeros((2, 3, 8, 8), dtype=np.float32))
    msg = str(info.value)
    assert "Conv2D" in msg and "(2, 3, 8, 8)" in msg and "expected NHWC with C=3" in msg and "NCHW" in msg
    with pytest.raises(lamina.ShapeError, match="built for NHWC with C=3"):
        conv.compute_output_shape((None, 8, 8, 5))


def test_kernel_and_pool_larger_than_input():
    with pytest.raises(lamina.ShapeError, match=r"Conv2D.*5x5 kernel is larger.*\(None, 3, 3, 1\)"):
        nn.Conv2D(2, 5).build((None, 3, 3, 1))
    pool = nn.MaxPool2D(4, name="pool")
    with pytest.raises(lamina.ShapeError, match=r"MaxPool2D 'pool'.*4x4 pool is larger.*\(1, 3, 3, 2\)"):
        pool(np.zeros((1, 3, 3, 2), dtype=np.float32))
    with pytest.raises(lamina.ShapeError, match="4x4 pool is larger"):
        pool.compute_output_shape((None, 2, 9, 1))
    with pytest.raises(lamina.ShapeError, match=r"AvgPool2D.*4-D NHWC"):
        nn.AvgPool2D(2)(np.zeros((3, 3, 2), dtype=np.float32))


def test_bad_conv_arguments():
    with pytest.raises(ValueError, match="groups"):
        nn.Conv2D(5, 3, groups=2)
    with pytest.raises(lamina.ShapeError, match="groups=2 must divide"):
        nn.Conv2D(4, 3, groups=2).build((None, 8, 8, 3))
    with pytest.raises(ValueError, match="padding"):
        nn.Conv2D(4, 3, padding="full")
    with pytest.raises(ValueError, match="padding"):
        nn.MaxPool2D(2, padding="same")
    with pytest.raises(ValueError, match="at most half"):
        nn.MaxPool2D(2, padding=2)
    with pytest.raises(ValueError, match="SeparableConv2D: kernel_size, stride and dilation must be positive"):
        nn.SeparableConv2D(4, 3, dilation=0)
    too_wide = r"Conv2D.*9x9 kernel \(3x3 dilated by \(4, 4\)\) is larger than the padded input"
    with pytest.raises(lamina.ShapeError, match=too_wide):
        nn.Conv2D(4, 3, dilation=4).build((None, 8, 8, 3))     # extent 9


def test_dilated_conv_shapes():
    """A dilation d makes an f-wide kernel d (f - 1) + 1 wide: 'valid' loses that minus one
    pixels, 'same' keeps the input size; the weights are those of the undilated kernel."""
    layer = nn.Conv2D(4, 3, dilation=(2, 3))
    assert layer.compute_output_shape((None, 12, 12, 2)) == (None, 8, 6, 4)
    assert layer(np.zeros((1, 12, 12, 2), np.float32)).shape == (1, 8, 6, 4)
    assert layer.weight.shape == (4, 3, 3, 2)
    assert nn.Conv2D(4, 3, padding="same", dilation=3).compute_output_shape((None, 9, 10, 2)) == (None, 9, 10, 4)
    assert nn.SeparableConv2D(5, 3, dilation=2).compute_output_shape((None, 9, 9, 2)) == (None, 5, 5, 5)
    assert "dilation=(2, 3)" in repr(layer)


def test_conv_configs_round_trip_through_json():
    import json

    for layer in [nn.Conv2D(8, (3, 5), stride=2, padding=(1, 2), groups=2, activation="relu",
                            kernel_init="xavier_normal", bias_init=0.1, name="c"),
                  nn.DepthwiseConv2D(3, depth_multiplier=2, padding="same"),
                  nn.SeparableConv2D(4, 3, stride=2, activation="relu"),
                  nn.Conv2D(4, 3, padding="same", dilation=(2, 3)), nn.DepthwiseConv2D(3, dilation=2),
                  nn.SeparableConv2D(4, 2, dilation=2, padding="same"),
                  nn.MaxPool2D(3, stride=2, padding=1, ceil_mode=True), nn.AvgPool2D(2), nn.GlobalAvgPool2D()]:
        config = json.loads(json.dumps(nn.layer_to_config(layer)))
        again = nn.layer_from_config(config)
        assert type(again) is type(layer) and again.get_config() == layer.get_config()
        assert again.compute_output_shape((None, 12, 12, 4)) == layer.compute_output_shape((None, 12, 12, 4))


def test_convolution_reprs_show_what_differs_from_the_defaults():
    assert repr(nn.Conv2D(4, 3)) == "Conv2D(4, kernel_size=(3, 3))"
    assert repr(nn.SeparableConv2D(8, 3, stride=2, padding="same", depth_multiplier=2)) == (
        "SeparableConv2D(8, kernel_size=(3, 3), stride=(2, 2), padding='same', depth_multiplier=2)")
    assert repr(nn.DepthwiseConv2D(5, dilation=(1, 2), activation="relu")) == (
        "DepthwiseConv2D(kernel_size=(5, 5), dilation=(1, 2), activation='relu')")
