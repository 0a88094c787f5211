"""Conv and pooling layers against PyTorch (need the functional kernels)."""

import numpy as np
import pytest
import torch
from nn_checks import compare_layer, gradcheck_layer

import lamina
import lamina.functional as F
from lamina import nn

if not hasattr(F, "conv2d"):
    pytest.skip("lamina.functional.conv2d is not available yet", allow_module_level=True)

W_PERM = (0, 3, 1, 2)  # lamina (K, fh, fw, c) -> torch (K, c, fh, fw)


def needs(name):
    return pytest.mark.skipif(not hasattr(F, name), reason=f"lamina.functional.{name} is not available yet")


@pytest.fixture(autouse=True)
def f64():
    lamina.set_default_dtype(np.float64)


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize(
    "filters, kernel, stride, padding, groups",
    [
        (4, 3, 1, "valid", 1),
        (4, (3, 2), (2, 1), 1, 1),
        (6, 3, 2, (1, 2), 2),
        (4, 3, 1, "same", 1),
        (3, 1, 1, 0, 1),
    ],
)
def test_conv2d_matches_torch(filters, kernel, stride, padding, groups):
    x = _x((2, 7, 8, 4))
    layer = nn.Conv2D(filters, kernel, stride=stride, padding=padding, groups=groups)
    tpad = padding if isinstance(padding, (str, tuple)) else (padding, padding)
    tl = torch.nn.Conv2d(4, filters, kernel, stride=stride, padding=tpad, groups=groups)
    out, _ = compare_layer(layer, tl, x, [("weight", tl.weight, W_PERM), ("bias", tl.bias, None)])
    assert out.shape == layer.compute_output_shape(x.shape)


def test_conv2d_same_stride_2_shape():
    layer = nn.Conv2D(3, 3, stride=2, padding="same")
    x = _x((1, 7, 8, 2))
    assert layer(x).shape == layer.compute_output_shape(x.shape) == (1, 4, 4, 3)


def test_conv2d_activation_and_gradcheck():
    x = _x((2, 5, 5, 2), 1)
    layer = nn.Conv2D(3, 3, padding=1, activation="tanh", bias_init=0.1)
    tl = torch.nn.Conv2d(2, 3, 3, padding=1)
    compare_layer(layer, torch.nn.Sequential(tl, torch.nn.Tanh()), x,
                  [("weight", tl.weight, W_PERM), ("bias", tl.bias, None)])
    assert gradcheck_layer(nn.Conv2D(2, 3, stride=2, padding=1), x)


@pytest.mark.parametrize("multiplier", [1, 2])
def test_depthwise_matches_torch_and_gradcheck(multiplier):
    x = _x((2, 6, 6, 3), 2)
    layer = nn.DepthwiseConv2D(3, depth_multiplier=multiplier, padding="same")
    tl = torch.nn.Conv2d(3, 3 * multiplier, 3, padding="same", groups=3)
    compare_layer(layer, tl, x, [("weight", tl.weight, W_PERM), ("bias", tl.bias, None)])
    assert gradcheck_layer(nn.DepthwiseConv2D(2, depth_multiplier=multiplier), x[:1, :4, :4])


def test_separable_matches_torch_and_gradcheck():
    x = _x((2, 6, 6, 3), 3)
    layer = nn.SeparableConv2D(5, 3, depth_multiplier=2, stride=2, padding=1, activation="relu")
    dw = torch.nn.Conv2d(3, 6, 3, stride=2, padding=1, groups=3, bias=False)
    pw = torch.nn.Conv2d(6, 5, 1)
    compare_layer(layer, torch.nn.Sequential(dw, pw, torch.nn.ReLU()), x,
                  [("depthwise_weight", dw.weight, W_PERM), ("pointwise_weight", pw.weight, W_PERM),
                   ("bias", pw.bias, None)])
    assert gradcheck_layer(nn.SeparableConv2D(2, 2), x[:1, :4, :4])


@pytest.mark.parametrize("make, torch_layer", [
    (lambda: nn.Conv2D(5, 3, padding="same", dilation=2), lambda: torch.nn.Conv2d(4, 5, 3, padding="same", dilation=2)),
    (lambda: nn.Conv2D(6, (3, 2), padding=(2, 1), dilation=(2, 1), groups=2),
     lambda: torch.nn.Conv2d(4, 6, (3, 2), padding=(2, 1), dilation=(2, 1), groups=2)),
    (lambda: nn.DepthwiseConv2D(3, depth_multiplier=2, dilation=3, padding=3),
     lambda: torch.nn.Conv2d(4, 8, 3, padding=3, dilation=3, groups=4)),
])
def test_dilated_conv_layers_match_torch_and_gradcheck(make, torch_layer):
    x = _x((2, 8, 9, 4), 5)
    layer, tl = make(), torch_layer()
    out, _ = compare_layer(layer, tl, x, [("weight", tl.weight, W_PERM), ("bias", tl.bias, None)])
    assert out.shape == layer.compute_output_shape(x.shape)
    assert gradcheck_layer(make(), x[:1, :7, :7])


def test_dilated_separable_matches_torch():
    x = _x((2, 9, 9, 3), 6)
    layer = nn.SeparableConv2D(4, 3, dilation=2, padding="same", activation="relu")
    dw = torch.nn.Conv2d(3, 3, 3, padding=2, dilation=2, groups=3, bias=False)
    pw = torch.nn.Conv2d(3, 4, 1)
    compare_layer(layer, torch.nn.Sequential(dw, pw, torch.nn.ReLU()), x,
                  [("depthwise_weight", dw.weight, W_PERM), ("pointwise_weight", pw.weight, W_PERM),
                   ("bias", pw.bias, None)])


def test_dropconnect_on_conv():
    x = _x((2, 5, 5, 2), 4)
    layer = nn.DropConnect(nn.Conv2D(3, 3), rate=0.5)
    assert gradcheck_layer(layer, x, reseed=1)
    layer.eval()
    np.testing.assert_allclose(layer(x).numpy(), layer.layer(x).numpy())


@needs("max_pool2d")
@pytest.mark.parametrize(
    "pool, stride, padding, ceil_mode, hw",
    [(2, None, 0, False, (6, 8)), (3, 2, 0, False, (7, 7)), (3, 2, 1, False, (8, 8)), (2, None, 0, True, (7, 5)),
     (3, 2, 1, True, (8, 8))],
)
def test_max_pool_matches_torch(pool, stride, padding, ceil_mode, hw):
    x = _x((2,) + hw + (3,), 5)
    layer = nn.MaxPool2D(pool, stride=stride, padding=padding, ceil_mode=ceil_mode)
    tl = torch.nn.MaxPool2d(pool, stride=stride, padding=padding, ceil_mode=ceil_mode)
    out, _ = compare_layer(layer, tl, x)
    assert out.shape == layer.compute_output_shape(x.shape)


@needs("max_pool2d")
def test_max_pool_gradcheck():
    assert gradcheck_layer(nn.MaxPool2D(2), _x((1, 4, 4, 2), 6))


@needs("avg_pool2d")
@pytest.mark.parametrize("pool, stride", [(2, None), (3, 1), (3, 2)])
def test_avg_pool_matches_torch_and_gradcheck(pool, stride):
    x = _x((2, 7, 7, 3), 7)
    layer = nn.AvgPool2D(pool, stride=stride)
    out, _ = compare_layer(layer, torch.nn.AvgPool2d(pool, stride=stride), x)
    assert out.shape == layer.compute_output_shape(x.shape)
    assert gradcheck_layer(nn.AvgPool2D(pool, stride=stride), x[:1, :5, :5, :2])


@needs("global_avg_pool2d")
def test_global_avg_pool_matches_torch():
    x = _x((2, 4, 5, 3), 8)
    layer = nn.GlobalAvgPool2D()

    class TorchGAP(torch.nn.Module):
        def forward(self, t):
            return t.mean(dim=(2, 3))

    out, _ = compare_layer(layer, TorchGAP(), x)
    assert out.shape == layer.compute_output_shape(x.shape) == (2, 3)
    assert gradcheck_layer(nn.GlobalAvgPool2D(), x[:1])


def test_small_cnn_trains_one_step_and_shapes_agree():
    model = nn.Sequential(nn.Conv2D(4, 3, padding="same", activation="relu"), nn.BatchNorm(),
                          nn.Conv2D(4, 3, stride=2), nn.Flatten(), nn.Dense(3))
    x = _x((2, 8, 8, 3), 9)
    y = model(x)
    assert y.shape == model.compute_output_shape(x.shape) == (2, 3)
    y.sum().backward()
    assert all(p.grad is not None for p in model.parameters())
