"""RMSNorm, GLU, RReLU, LogSoftmax, Softmax2D, LPPool1D/2D, AdaptiveAvgPool3D/AdaptiveMaxPool3D,
Conv1DTranspose, Conv3DTranspose, the 1-D/2-D/3-D padding layers and Unflatten: PyTorch's
modules in outputs and gradients (inputs and parameters, layouts converted at the boundary),
float64 gradient checks, second derivatives, shape inference, config round trips, the summary's
MACs and named errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from nn_checks import compare_layer, gradcheck_layer

import lamina
from helpers import assert_close, check_second_derivatives
from lamina import ShapeError, nn
from lamina.analysis import summary


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _positive(shape, seed=0):
    return np.random.default_rng(seed).uniform(0.5, 2.0, shape)


class _ChannelsLast(torch.nn.Module):
    """A torch module on channel-last inputs of any rank (it takes channels at axis 1)."""

    def __init__(self, module):
        super().__init__()
        self.module = module

    def forward(self, x):
        return self.module(x.movedim(-1, 1)).movedim(1, -1)


# -- against torch --------------------------------------------------------------------------
CHANNELS_LAST = [
    ("constant1d", lambda: nn.ConstantPad1D((2, 1), 0.5), lambda: torch.nn.ConstantPad1d((2, 1), 0.5), (2, 4, 3)),
    ("constant2d", lambda: nn.ConstantPad2D((1, 0, 2, 3), -1.0), lambda: torch.nn.ConstantPad2d((2, 3, 1, 0), -1.0),
     (2, 3, 4, 2)),
    ("constant3d", lambda: nn.ConstantPad3D(1, 2.0), lambda: torch.nn.ConstantPad3d(1, 2.0), (1, 2, 3, 2, 2)),
    ("zero1d", lambda: nn.ZeroPad1D(2), lambda: torch.nn.ZeroPad1d(2), (2, 4, 3)),
    ("zero3d", lambda: nn.ZeroPad3D((1, 0, 0, 2, 1, 1)), lambda: torch.nn.ZeroPad3d((1, 1, 0, 2, 1, 0)),
     (1, 2, 3, 2, 2)),
    ("reflect1d", lambda: nn.ReflectionPad1D((3, 1)), lambda: torch.nn.ReflectionPad1d((3, 1)), (2, 4, 3)),
    ("reflect3d", lambda: nn.ReflectionPad3D(((1, 2), (0, 1), (2, 1))),
     lambda: torch.nn.ReflectionPad3d((2, 1, 0, 1, 1, 2)), (1, 3, 3, 4, 2)),
    ("replicate1d", lambda: nn.ReplicationPad1D((0, 3)), lambda: torch.nn.ReplicationPad1d((0, 3)), (2, 4, 3)),
    ("replicate3d", lambda: nn.ReplicationPad3D((2, 1, 1)), lambda: torch.nn.ReplicationPad3d((1, 1, 1, 1, 2, 2)),
     (1, 2, 3, 2, 2)),
    ("circular1d", lambda: nn.CircularPad1D((4, 2)), lambda: torch.nn.CircularPad1d((4, 2)), (2, 4, 3)),
    ("circular2d", lambda: nn.CircularPad2D((1, 2, 3, 0)), lambda: torch.nn.CircularPad2d((3, 0, 1, 2)),
     (2, 3, 4, 2)),
    ("circular3d", lambda: nn.CircularPad3D((1, 0, 2, 1, 0, 2)), lambda: torch.nn.CircularPad3d((0, 2, 2, 1, 1, 0)),
     (1, 2, 3, 2, 2)),
    ("adaptive_avg3d", lambda: nn.AdaptiveAvgPool3D((2, 3, None)), lambda: torch.nn.AdaptiveAvgPool3d((2, 3, None)),
     (2, 5, 7, 3, 2)),
    ("adaptive_max3d", lambda: nn.AdaptiveMaxPool3D(2), lambda: torch.nn.AdaptiveMaxPool3d(2), (2, 3, 5, 4, 2)),
    ("softmax2d", lambda: nn.Softmax2D(), lambda: torch.nn.Softmax2d(), (2, 3, 4, 5)),
    ("lp2d", lambda: nn.LPPool2D(2, 2), lambda: torch.nn.LPPool2d(2, 2), (2, 4, 6, 3)),
    ("lp2d_ceil", lambda: nn.LPPool2D(3, (2, 3), stride=(2, 1), ceil_mode=True),
     lambda: torch.nn.LPPool2d(3, (2, 3), stride=(2, 1), ceil_mode=True), (2, 5, 6, 2)),
    ("lp1d", lambda: nn.LPPool1D(1.5, 3, stride=2, ceil_mode=True),
     lambda: torch.nn.LPPool1d(1.5, 3, stride=2, ceil_mode=True), (2, 8, 3)),
]


@pytest.mark.parametrize("name, layer, torch_layer, shape", CHANNELS_LAST, ids=[c[0] for c in CHANNELS_LAST])
def test_weightless_layers_match_torch_and_gradcheck(f64, name, layer, torch_layer, shape):
    x = _positive(shape) if name.startswith("lp") else _x(shape)
    compare_layer(layer(), _ChannelsLast(torch_layer()), x, nchw=False)
    assert gradcheck_layer(layer(), x[:1] if name.startswith("lp") else _x((1,) + shape[1:], 1))


@pytest.mark.parametrize("layer, torch_layer, shape", [
    (lambda: nn.GLU(), lambda: torch.nn.GLU(-1), (2, 3, 6)),
    (lambda: nn.GLU(axis=1), lambda: torch.nn.GLU(1), (2, 4, 3)),
    (lambda: nn.LogSoftmax(), lambda: torch.nn.LogSoftmax(-1), (3, 5)),
    (lambda: nn.LogSoftmax(axis=1), lambda: torch.nn.LogSoftmax(1), (2, 4, 3)),
    (lambda: nn.Unflatten(1, (2, -1)), lambda: torch.nn.Unflatten(1, (2, 3)), (2, 6, 2)),
    (lambda: nn.Unflatten(-1, (2, 2)), lambda: torch.nn.Unflatten(-1, (2, 2)), (2, 3, 4)),
], ids=["glu", "glu_axis1", "log_softmax", "log_softmax_axis1", "unflatten", "unflatten_last"])
def test_same_layout_layers_match_torch_and_gradcheck(f64, layer, torch_layer, shape):
    compare_layer(layer(), torch_layer(), _x(shape), nchw=False)
    assert gradcheck_layer(layer(), _x(shape, 1))


@pytest.mark.parametrize("normalized_shape, eps, affine", [(4, None, True), ((3, 4), 1e-3, True), (4, 0.1, False)])
def test_rms_norm_matches_torch_and_gradchecks(f64, normalized_shape, eps, affine):
    layer = nn.RMSNorm(normalized_shape, eps=eps, elementwise_affine=affine)
    theirs = torch.nn.RMSNorm(normalized_shape, eps=eps, elementwise_affine=affine)
    x = _x((2, 3, 4))
    layer.build(x.shape)
    layer.built = True
    if affine:
        layer.weight.data[...] = _positive(layer.weight.shape, 3)
    pairs = [("weight", theirs.weight, None)] if affine else []
    compare_layer(layer, theirs, x, pairs, nchw=False)
    assert gradcheck_layer(layer, _x((1, 3, 4), 1))


def test_rms_norm_eps_none_is_the_dtype_machine_epsilon():
    x = np.full((1, 4), 1e-5, dtype=np.float32)
    ours = nn.RMSNorm(axes=1)(x).numpy()
    theirs = torch.nn.RMSNorm(4)(torch.tensor(x)).detach().numpy()
    assert_close(ours, theirs, 1e-5)
    assert ours[0, 0] < 0.99                  # float32's eps (1.2e-7) is felt next to mean(x^2) = 1e-10


def test_rms_norm_second_derivatives(f64):
    layer = nn.RMSNorm(axes=2)
    layer.build((2, 3, 4))
    assert check_second_derivatives(lambda x, w: lamina.functional.rms_norm(x, (3, 4), w, None), _x((2, 3, 4)),
                                     _positive((3, 4)))


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=3),
    dict(kernel_size=3, stride=2, padding=1, output_padding=1),
    dict(kernel_size=2, stride=3, padding=2, output_padding=2, dilation=2, groups=2),
], ids=["plain", "strided", "grouped_dilated"])
def test_conv1d_transpose_matches_torch(f64, kwargs):
    torch_kwargs = dict(kwargs)
    layer = nn.Conv1DTranspose(6, **kwargs, bias_init="uniform")
    theirs = torch.nn.ConvTranspose1d(4, 6, **torch_kwargs)
    x = _x((2, 5, 4))
    compare_layer(layer, _ChannelsLast(theirs), x,
                  [("weight", theirs.weight, (0, 2, 1)), ("bias", theirs.bias, None)], nchw=False)
    assert gradcheck_layer(nn.Conv1DTranspose(2, **kwargs), _x((1, 4, 2), 1))


@pytest.mark.parametrize("kwargs", [
    dict(kernel_size=2),
    dict(kernel_size=(1, 2, 3), stride=(1, 2, 2), padding=(0, 1, 1), output_padding=(0, 1, 0), dilation=(1, 1, 2),
         groups=2),
], ids=["plain", "mixed"])
def test_conv3d_transpose_matches_torch(f64, kwargs):
    layer = nn.Conv3DTranspose(4, **kwargs, bias_init="uniform")
    theirs = torch.nn.ConvTranspose3d(2, 4, **kwargs)
    x = _x((2, 2, 3, 3, 2))
    compare_layer(layer, _ChannelsLast(theirs), x,
                  [("weight", theirs.weight, (0, 4, 1, 2, 3)), ("bias", theirs.bias, None)], nchw=False)
    assert gradcheck_layer(nn.Conv3DTranspose(2, **kwargs), _x((1, 2, 2, 2, 2), 1))


def test_rrelu_evaluation_uses_the_mean_slope_as_torch(f64):
    layer, theirs = nn.RReLU(0.1, 0.4), torch.nn.RReLU(0.1, 0.4)
    layer.eval()
    theirs.eval()
    compare_layer(layer, theirs, _x((3, 5)), nchw=False)
    assert gradcheck_layer(layer, _x((2, 3), 1))


def test_rrelu_gradient_at_zero_is_the_slope_as_torch(f64):
    """At x = 0 (and -0) the gradient is the negative side's slope in evaluation and in
    training, as PyTorch's (and as LeakyReLU's)."""
    x = np.array([0.0, -0.0, 1.0, -1.0, 0.0])
    layer, theirs = nn.RReLU(0.1, 0.4), torch.nn.RReLU(0.1, 0.4)
    layer.eval()
    theirs.eval()
    ours, reference = lamina.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    layer(ours).sum().backward()
    theirs(reference).sum().backward()
    np.testing.assert_allclose(ours.grad, reference.grad.numpy(), rtol=1e-15)
    layer.train()
    ours = lamina.tensor(x, requires_grad=True)
    layer(ours).sum().backward()
    at_zero = ours.grad[[0, 1, 4]]
    assert np.all((at_zero >= 0.1) & (at_zero <= 0.4)) and ours.grad[2] == 1.0


def test_rrelu_training_draws_one_slope_per_negative_input(f64):
    layer = nn.RReLU(0.1, 0.4)
    x = lamina.tensor(_x((50, 40)), requires_grad=True)
    lamina.manual_seed(0)
    y = layer(x)
    y.sum().backward()
    negative = x.numpy() < 0
    slopes = y.numpy()[negative] / x.numpy()[negative]
    assert slopes.min() >= 0.1 and slopes.max() <= 0.4 and slopes.std() > 0.05     # U(0.1, 0.4): std 0.087
    assert_close(x.grad[negative], slopes, 1e-12, "gradient: the slope used")
    assert np.array_equal(y.numpy()[~negative], x.numpy()[~negative]) and np.all(x.grad[~negative] == 1)
    lamina.manual_seed(0)
    assert np.array_equal(layer(x).numpy(), y.numpy())          # reproducible from the seed
    assert gradcheck_layer(layer, _x((2, 3), 1), reseed=5)


# -- second derivatives ---------------------------------------------------------------------
@pytest.mark.parametrize("layer, shape", [
    (lambda: nn.Conv1DTranspose(2, 3, stride=2, padding=1, output_padding=1, groups=2), (1, 3, 2)),
    (lambda: nn.Conv3DTranspose(2, 2, stride=2), (1, 2, 1, 2, 2)),
    (lambda: nn.LPPool2D(2, 2), (1, 2, 2, 2)),
    (lambda: nn.GLU(), (2, 4)),
    (lambda: nn.ReflectionPad3D(1), (1, 2, 2, 2, 1)),
    (lambda: nn.CircularPad1D(2), (1, 3, 2)),
], ids=["conv1d_t", "conv3d_t", "lp_pool", "glu", "reflect3d", "circular1d"])
def test_second_derivatives_through_the_layers(f64, layer, shape):
    module = layer()
    assert check_second_derivatives(lambda x_: module(x_) ** 3, _positive(shape))     # cubed: curved even if linear


# -- shapes, configs, summary, errors -------------------------------------------------------
LAYERS_AND_SHAPES = [
    (nn.ConstantPad1D((1, 2), 3.0), (None, 5, 2), (None, 8, 2)),
    (nn.ConstantPad3D(((1, 0), (0, 2), (1, 1)), 0.0), (None, 3, None, 4, 2), (None, 4, None, 6, 2)),
    (nn.ReflectionPad1D(2), (None, 5, 2), (None, 9, 2)),
    (nn.ReplicationPad3D(1), (None, 2, 3, 4, 1), (None, 4, 5, 6, 1)),
    (nn.CircularPad2D((1, 2)), (None, 3, 4, 2), (None, 5, 8, 2)),
    (nn.ZeroPad3D((1, 2, 0)), (None, 2, 3, 4, 1), (None, 4, 7, 4, 1)),
    (nn.GLU(), (None, 3, 8), (None, 3, 4)),
    (nn.RReLU(), (None, 3), (None, 3)),
    (nn.LogSoftmax(), (None, 3), (None, 3)),
    (nn.Softmax2D(), (None, 3, 3, 4), (None, 3, 3, 4)),
    (nn.LPPool2D(2, 3, stride=2, ceil_mode=True), (None, 6, 7, 2), (None, 3, 3, 2)),
    (nn.LPPool1D(2, 2), (None, 7, 3), (None, 3, 3)),
    (nn.Conv1DTranspose(4, 3, stride=2, padding=1, output_padding=1), (None, 5, 2), (None, 10, 4)),
    (nn.Conv3DTranspose(4, 2, stride=(1, 2, 3), dilation=2), (None, 2, 3, 2, 2), (None, 4, 7, 6, 4)),
    (nn.RMSNorm(axes=2), (None, 3, 4), (None, 3, 4)),
    (nn.AdaptiveAvgPool3D((1, None, 2)), (None, 3, 4, 5, 2), (None, 1, 4, 2, 2)),
    (nn.AdaptiveMaxPool3D(2), (None, 3, 4, 5, 2), (None, 2, 2, 2, 2)),
    (nn.Unflatten(1, (2, -1, 3)), (None, 12, 5), (None, 2, 2, 3, 5)),
]


@pytest.mark.parametrize("layer, shape, expected", LAYERS_AND_SHAPES, ids=repr)
def test_output_shape_inference_and_config_round_trip(layer, shape, expected):
    assert layer.compute_output_shape(shape) == expected
    x = np.ones((2,) + tuple(4 if n is None else n for n in shape[1:]), dtype=np.float32)
    y = layer(x)
    assert y.shape == layer.compute_output_shape(x.shape) and y.dtype == np.float32
    again = nn.layer_from_config(nn.layer_to_config(layer))
    assert type(again) is type(layer) and again.get_config() == layer.get_config()
    assert repr(again) == repr(layer)


def test_summary_counts_parameters_and_macs():
    model = nn.Sequential(nn.Conv1DTranspose(4, 3, stride=2, groups=2), nn.LPPool1D(2, 2), nn.GLU(),
                          nn.RMSNorm(axes=1))
    rows = summary(model, (5, 2)).rows
    assert [r["output_shape"] for r in rows] == [[11, 4], [5, 4], [5, 2], [5, 2]]
    assert [r["params"] for r in rows] == [2 * 3 * 2 + 4, 0, 0, 2]
    assert rows[0]["macs"] == 5 * 2 * 3 * 2            # every input value meets the f K / groups weights
    assert rows[1]["macs"] == 5 * 4 * 2
    volume = nn.Sequential(nn.Conv3DTranspose(3, 2, stride=2), nn.ReflectionPad3D(1))
    rows = summary(volume, (2, 2, 2, 1)).rows
    assert rows[0]["output_shape"] == [4, 4, 4, 3] and rows[0]["macs"] == 8 * 1 * 8 * 3
    assert rows[1]["output_shape"] == [6, 6, 6, 3] and rows[1]["macs"] == 0


@pytest.mark.parametrize("make, x_shape, message", [
    (lambda: nn.ReflectionPad1D(3), (1, 3, 2), "less than the length 3"),
    (lambda: nn.CircularPad3D(3), (1, 2, 4, 4, 1), "at most the length 2"),
    (lambda: nn.ConstantPad3D(1, 0.0), (1, 4, 4, 1), "5-D input"),
    (lambda: nn.GLU(), (2, 5), "even number"),
    (lambda: nn.Softmax2D(), (2, 5), "NHWC"),
    (lambda: nn.LPPool2D(2, 4), (1, 3, 5, 1), "longer than the axis of length 3"),
    (lambda: nn.Conv1DTranspose(2, 1, padding=2), (1, 2, 3), "crops the whole output"),
    (lambda: nn.Conv3DTranspose(2, 1), (1, 2, 3, 3), "5-D input"),
    (lambda: nn.RMSNorm((3, 4)), (2, 4, 3), "ends with (4, 3); expected (3, 4)"),
    (lambda: nn.Unflatten(1, (4, 2)), (2, 6), "cannot be split into (4, 2)"),
    (lambda: nn.AdaptiveAvgPool3D(2), (1, 4, 4, 1), "5-D batch"),
], ids=lambda v: v if isinstance(v, str) else None)
def test_errors_name_the_layer_and_the_shapes(make, x_shape, message):
    layer = make()
    with pytest.raises(ShapeError, match=type(layer).__name__) as info:
        layer(np.ones(x_shape, dtype=np.float32))
    assert message in str(info.value)


@pytest.mark.parametrize("make, message", [
    (lambda: nn.Conv1DTranspose(4, 3, stride=2, output_padding=2), "output_padding"),
    (lambda: nn.Conv3DTranspose(3, 3, groups=2), "groups=2 must divide filters=3"),
    (lambda: nn.RReLU(0.5, 0.1), "lower <= upper"),
    (lambda: nn.LPPool2D(0, 2), "norm_type"),
    (lambda: nn.RMSNorm(4, eps=-1.0), "eps"),
    (lambda: nn.Unflatten(0, (2, 2)), "batch"),
    (lambda: nn.ConstantPad1D((1, 2, 3), 0.0), "padding"),
])
def test_bad_arguments_are_refused(make, message):
    with pytest.raises(ValueError, match=message):
        make()
