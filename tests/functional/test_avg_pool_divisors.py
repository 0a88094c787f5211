"""avg_pool2d's count_include_pad and divisor_override (as PyTorch's): values and gradients
against torch in float64 over both options x ceil_mode x padding x stride, numerical
gradients, the AvgPool2D layer and its config, avg_pool1d, and the errors."""

from __future__ import annotations

import functools
import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
import lamina.functional as F
from helpers import check_gradients, check_second_derivatives, compare_with_torch, randn
from lamina import ShapeError, nn

OPTIONS = list(itertools.product([True, False], [None, 5], [False, True], [0, 1]))   # include pad, divisor, ceil, pad


def torch_avg_pool(f, s, p, ceil_mode, include_pad, divisor):
    def fn(x):
        v = TF.avg_pool2d(x.permute(0, 3, 1, 2), f, s, p, ceil_mode, include_pad, divisor)
        return v.permute(0, 2, 3, 1)
    return fn


@pytest.mark.parametrize("h, w, f, s", [(7, 8, 3, 2), (6, 6, 2, 2), (9, 5, 3, 1), (8, 7, (3, 2), (2, 3))])
def test_avg_pool2d_options_match_torch(h, w, f, s):
    x = randn(2, h, w, 3, seed=h + w)
    for include_pad, divisor, ceil_mode, p in OPTIONS:
        out = compare_with_torch(
            functools.partial(F.avg_pool2d, pool_size=f, stride=s, padding=p, ceil_mode=ceil_mode,
                              count_include_pad=include_pad, divisor_override=divisor),
            torch_avg_pool(f, s, p, ceil_mode, include_pad, divisor), x, dtype=np.float64, rtol=1e-12)
        assert out[0].dtype == np.float64


def test_avg_pool2d_excluding_padding_averages_the_pixels_inside():
    x = lamina.tensor(np.arange(16.0).reshape(1, 4, 4, 1), dtype=np.float64)
    corner = F.avg_pool2d(x, 3, stride=1, padding=1, count_include_pad=False).numpy()[0, 0, 0, 0]
    assert corner == np.mean([0, 1, 4, 5])
    counted = F.avg_pool2d(x, 3, stride=1, padding=1).numpy()[0, 0, 0, 0]
    assert counted == np.sum([0, 1, 4, 5]) / 9
    summed = F.avg_pool2d(x, 2, divisor_override=1).numpy()[0, :, :, 0]
    np.testing.assert_array_equal(summed, [[10, 18], [42, 50]])


def test_avg_pool2d_defaults_are_unchanged():
    x = lamina.tensor(randn(2, 7, 7, 4, seed=1), dtype=np.float64)
    plain = F.avg_pool2d(x, 3, 2, 1, True).numpy()
    explicit = F.avg_pool2d(x, 3, 2, 1, True, count_include_pad=True, divisor_override=None).numpy()
    np.testing.assert_array_equal(plain, explicit)


@pytest.mark.parametrize("include_pad, divisor, ceil_mode", [(False, None, True), (True, 3, False), (False, 7, True)])
def test_avg_pool2d_options_gradcheck(include_pad, divisor, ceil_mode):
    fn = lambda x_: F.avg_pool2d(x_, 3, 2, 1, ceil_mode, count_include_pad=include_pad,  # noqa: E731
                                 divisor_override=divisor)
    assert check_gradients(fn, randn(1, 6, 5, 2, seed=3))
    # the pool is linear: squared inputs give it a second derivative to check
    assert check_second_derivatives(lambda x_: fn(x_ * x_), randn(1, 6, 5, 2, seed=4))


def test_avg_pool2d_divisor_override_is_checked():
    x = np.zeros((1, 4, 4, 1))
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="avg_pool2d: divisor_override must be a positive int or None"):
            F.avg_pool2d(x, 2, divisor_override=bad)
    with pytest.raises(ShapeError, match="avg_pool2d: pool 5x5 is larger than the padded input"):
        F.avg_pool2d(x, 5, count_include_pad=False)


def test_avg_pool2d_layer_options_and_config_round_trip():
    layer = nn.AvgPool2D(3, stride=2, padding=1, ceil_mode=True, count_include_pad=False, divisor_override=4)
    config = layer.get_config()
    assert config["count_include_pad"] is False and config["divisor_override"] == 4
    rebuilt = nn.AvgPool2D.from_config(config)
    assert (rebuilt.count_include_pad, rebuilt.divisor_override) == (False, 4)
    assert "count_include_pad=False" in repr(layer) and "divisor_override=4" in repr(layer)
    x = randn(2, 7, 6, 3, seed=5)
    expected = torch_avg_pool(3, 2, 1, True, False, 4)(torch.tensor(x)).numpy()
    for pool in (layer, rebuilt):
        np.testing.assert_allclose(pool(lamina.tensor(x, dtype=np.float64)).numpy(), expected, rtol=1e-12)
    assert "count_include_pad" not in nn.AvgPool2D(2).get_config()
    excluding = nn.AvgPool2D(3, stride=1, padding=1, count_include_pad=False)
    expected = torch_avg_pool(3, 1, 1, False, False, None)(torch.tensor(x)).numpy()
    np.testing.assert_allclose(excluding(lamina.tensor(x, dtype=np.float64)).numpy(), expected, rtol=1e-12)
    with pytest.raises(ValueError, match="AvgPool2D: divisor_override must be a positive int or None"):
        nn.AvgPool2D(2, divisor_override=0)


@pytest.mark.parametrize("ceil_mode", [False, True])
def test_avg_pool1d_excluding_padding_matches_torch(ceil_mode):
    x = randn(2, 9, 3, seed=6)

    def theirs(x_):
        return TF.avg_pool1d(x_.transpose(1, 2), 4, 3, 2, ceil_mode, False).transpose(1, 2)

    compare_with_torch(lambda x_: F.avg_pool1d(x_, 4, 3, 2, ceil_mode, count_include_pad=False), theirs, x,
                       dtype=np.float64, rtol=1e-12)


@pytest.mark.parametrize("f, s, p", [(3, 2, 1), ((2, 3, 2), (1, 2, 2), (1, 1, 0))])
def test_avg_pool3d_options_match_torch(f, s, p):
    x = randn(2, 5, 6, 7, 2, seed=7)
    for include_pad, divisor in itertools.product([True, False], [None, 4]):
        def theirs(x_, include_pad=include_pad, divisor=divisor):
            v = TF.avg_pool3d(x_.permute(0, 4, 1, 2, 3), f, s, p, False, include_pad, divisor)
            return v.permute(0, 2, 3, 4, 1)

        compare_with_torch(functools.partial(F.avg_pool3d, pool_size=f, stride=s, padding=p,
                                             count_include_pad=include_pad, divisor_override=divisor),
                           theirs, x, dtype=np.float64, rtol=1e-12)
    fn = functools.partial(F.avg_pool3d, pool_size=3, stride=2, padding=1, count_include_pad=False)
    assert check_gradients(fn, randn(1, 4, 5, 4, 2, seed=8))
    with pytest.raises(ValueError, match="avg_pool3d: divisor_override must be a positive int or None"):
        F.avg_pool3d(x, 2, divisor_override=0)
