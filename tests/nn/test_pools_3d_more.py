"""LPPool3D / F.lp_pool3d and FractionalMaxPool3D / F.fractional_max_pool3d on NDHWC volumes:
PyTorch's functions in outputs, gradients and indices (layouts converted at the boundary, the
same window samples given to both), float64 gradient checks, second derivatives, shape
inference, config round trips and named errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, check_second_derivatives, compare_with_torch
from lamina import ShapeError, nn
from lamina import functional as F


def _x(shape, seed=0):
    return np.random.default_rng(seed).standard_normal(shape)


def _positive(shape, seed=0):
    return np.random.default_rng(seed).uniform(0.5, 2.0, shape)


def _channels_first(t):
    return t.movedim(-1, 1)


def _channels_last(t):
    return t.movedim(1, -1)


# -- LPPool3D -----------------------------------------------------------------------------------
LP = {  # name: (norm_type, kernel_size, stride, ceil_mode, input shape)
    "square": (2, 2, None, False, (2, 4, 5, 4, 3)),
    "uneven_strided": (3, (2, 3, 1), (1, 2, 2), False, (2, 3, 5, 4, 2)),
    "ceil_overhang": (1.5, (2, 2, 3), 2, True, (2, 5, 4, 7, 2)),
    "ceil_exact": (2.5, 2, None, True, (1, 4, 4, 2, 2)),
}


def _lp(name):
    p, k, s, ceil, shape = LP[name]
    ours = lambda a: F.lp_pool3d(a, p, k, s, ceil)                                      # noqa: E731
    theirs = lambda a: _channels_last(torch.nn.functional.lp_pool3d(_channels_first(a), p, k, s, ceil))  # noqa: E731
    return ours, theirs, shape


@pytest.mark.parametrize("name", list(LP))
def test_lp_pool3d_matches_torch(name):
    ours, theirs, shape = _lp(name)
    compare_with_torch(ours, theirs, _positive(shape), dtype=np.float64)
    compare_with_torch(ours, theirs, _positive(shape, 1))                             # float32


@pytest.mark.parametrize("name", ["uneven_strided", "ceil_overhang"])
def test_lp_pool3d_gradients(name):
    ours, _, shape = _lp(name)
    x = _positive((1,) + shape[1:])
    assert check_gradients(ours, x)
    assert check_second_derivatives(lambda a: ours(a) ** 2, x)


def test_lp_pool3d_layer_matches_torch_and_round_trips():
    lamina.set_default_dtype(np.float64)
    layer = nn.LPPool3D(1.5, (2, 2, 3), stride=2, ceil_mode=True)
    x = _positive((2, 5, 4, 7, 2))
    expected = torch.nn.LPPool3d(1.5, (2, 2, 3), stride=2, ceil_mode=True)(torch.tensor(x).movedim(-1, 1))
    assert_close(layer(x).numpy(), expected.movedim(1, -1).numpy(), 1e-12)
    assert layer.compute_output_shape((None, 5, 4, None, 2)) == (None, 3, 2, None, 2)
    assert layer(x).shape == layer.compute_output_shape(x.shape) == (2, 3, 2, 3, 2)
    again = nn.layer_from_config(nn.layer_to_config(layer))
    assert type(again) is nn.LPPool3D and again.get_config() == layer.get_config()
    assert repr(again) == repr(layer)
    assert layer.macs([x.shape], [layer.compute_output_shape(x.shape)]) == 2 * 3 * 2 * 3 * 2 * 12


def test_lp_pool3d_errors_name_the_op_and_shapes():
    with pytest.raises(ShapeError, match=r"LPPool3D.*5-D NDHWC"):
        nn.LPPool3D(2, 2)(np.ones((1, 4, 4, 1), dtype=np.float32))
    with pytest.raises(ShapeError, match="longer than the axis of length 2"):
        nn.LPPool3D(2, 3)(np.ones((1, 2, 4, 4, 1), dtype=np.float32))
    with pytest.raises(ShapeError, match=r"lp_pool3d: the window \(3, 3, 3\) is larger than the volume"):
        F.lp_pool3d(lamina.tensor(np.ones((1, 2, 4, 4, 1))), 2, 3)
    with pytest.raises(ValueError, match="kernel_size must be a positive int or 3 of them"):
        nn.LPPool3D(2, (2, 2))
    with pytest.raises(ValueError, match="norm_type"):
        nn.LPPool3D(-1, 2)


# -- FractionalMaxPool3D ------------------------------------------------------------------------
FRACTIONAL = {  # name: (input depth-height-width, kernel_size, target)
    "size": ((7, 9, 8), (2, 3, 2), dict(output_size=(4, 5, 3))),
    "ratio": ((6, 7, 8), 2, dict(output_ratio=(0.6, 0.5, 0.7))),
    "cube": ((6, 6, 6), 3, dict(output_size=3)),
}


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name", list(FRACTIONAL))
def test_fractional_max_pool3d_matches_torch(dtype, name):
    dhw, kernel, target = FRACTIONAL[name]
    x = _x((2, *dhw, 3))
    samples = np.random.default_rng(1).random((2, 3, 3)).astype(dtype)
    layer = nn.FractionalMaxPool3D(kernel, **target, return_indices=True)

    def theirs(a, **kwargs):
        return torch.nn.functional.fractional_max_pool3d(_channels_first(a), kernel, **target, **kwargs,
                                                         _random_samples=torch.tensor(samples))

    compare_with_torch(lambda a: layer(a, _random_samples=samples)[0], lambda a: _channels_last(theirs(a)), x,
                       dtype=dtype)
    _, indices = F.fractional_max_pool3d_with_indices(lamina.tensor(x.astype(dtype)), kernel, **target,
                                                      _random_samples=samples)
    _, expected = theirs(torch.tensor(x.astype(dtype)), return_indices=True)
    np.testing.assert_array_equal(indices, _channels_last(expected).numpy())


def test_fractional_max_pool3d_gradients_draws_and_unpooling():
    lamina.set_default_dtype(np.float64)
    layer = nn.FractionalMaxPool3D(2, output_ratio=0.7)
    samples = np.random.default_rng(2).random((1, 2, 3))
    x = _x((1, 5, 6, 4, 2))
    assert check_gradients(lambda a: layer(a, _random_samples=samples), x)
    assert check_second_derivatives(lambda a: F.square(layer(F.square(a), _random_samples=samples)), x)
    assert layer(x).shape == layer.compute_output_shape(x.shape) == (1, 3, 4, 2, 2)
    lamina.manual_seed(0)
    first = layer(_x((2, 9, 9, 9, 3))).numpy()
    lamina.manual_seed(0)
    assert_close(layer(_x((2, 9, 9, 9, 3))).numpy(), first, 0)
    assert np.abs(layer(_x((2, 9, 9, 9, 3))).numpy() - first).max() > 0          # a fresh draw
    # the indices are the flat (depth * H + row) * W + col positions the maxima were read from
    out, indices = nn.FractionalMaxPool3D(2, output_size=(3, 4, 2), return_indices=True)(x, _random_samples=samples)
    flat_indices = indices.reshape(1, -1, 2)
    read = np.take_along_axis(x.reshape(1, -1, 2), flat_indices, 1)
    np.testing.assert_array_equal(read.reshape(out.shape), out.numpy())
    back = nn.MaxUnpool3D(2)(out, indices, output_size=x.shape[1:4]).numpy().reshape(1, -1, 2)
    np.testing.assert_array_equal(np.take_along_axis(back, flat_indices, 1).reshape(out.shape), out.numpy())


def test_fractional_max_pool3d_shapes_config_and_errors():
    layer = nn.FractionalMaxPool3D((2, 3, 2), output_size=(3, 4, 2), return_indices=True)
    assert layer.compute_output_shape((None, 8, 9, 5, 2)) == (None, 3, 4, 2, 2)
    assert nn.FractionalMaxPool3D(2, output_ratio=0.5).compute_output_shape((None, 8, None, 5, 2)) == \
        (None, 4, None, 2, 2)
    again = nn.layer_from_config(nn.layer_to_config(layer))
    assert type(again) is nn.FractionalMaxPool3D and again.get_config() == layer.get_config()
    assert repr(again) == repr(layer)
    x = _x((1, 5, 6, 4, 2))
    with pytest.raises(ValueError, match="exactly one of output_size and output_ratio"):
        nn.FractionalMaxPool3D(2)
    with pytest.raises(ValueError, match=r"output_ratio must be a number or 3 numbers in \(0, 1\)"):
        nn.FractionalMaxPool3D(2, output_ratio=(0.5, 1.5, 0.5))
    with pytest.raises(ShapeError, match="input depth of at least 6"):
        nn.FractionalMaxPool3D(3, output_size=(4, 2, 2))(x)
    with pytest.raises(ShapeError, match=r"_random_samples must have shape \(N, C, 3\)"):
        nn.FractionalMaxPool3D(2, output_size=2)(x, _random_samples=np.full((1, 2, 2), 0.5))
    with pytest.raises(ValueError, match=r"_random_samples must lie in \[0, 1\)"):
        nn.FractionalMaxPool3D(2, output_size=2)(x, _random_samples=np.full((1, 2, 3), 1.0))
    with pytest.raises(ShapeError, match=r"FractionalMaxPool3D.*5-D NDHWC"):
        nn.FractionalMaxPool3D(2, output_size=2)(x[0])
