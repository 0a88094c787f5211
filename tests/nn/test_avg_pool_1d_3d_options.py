"""AvgPool1D and AvgPool3D with count_include_pad and divisor_override: PyTorch's
AvgPool1d/AvgPool3d in outputs and gradients, float64 gradient checks, config, repr, errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import nn


def _last(t):
    return t.movedim(-1, 1)


def _first(t):
    return t.movedim(1, -1)


@pytest.mark.parametrize("include_pad, divisor", [(False, None), (True, 5), (False, 2)])
@pytest.mark.parametrize("pool, stride, padding, ceil_mode", [(3, 2, 1, False), (4, 3, 2, True)])
def test_avg_pool1d_matches_torch(pool, stride, padding, ceil_mode, include_pad, divisor):
    layer = nn.AvgPool1D(pool, stride, padding, ceil_mode=ceil_mode, count_include_pad=include_pad,
                         divisor_override=divisor)
    if divisor is None:
        pool1d = torch.nn.AvgPool1d(pool, stride, padding, ceil_mode=ceil_mode, count_include_pad=include_pad)

        def theirs(x):
            return _first(pool1d(_last(x)))
    else:                       # torch's AvgPool1d has no divisor_override: AvgPool2d over a height of 1
        pool2d = torch.nn.AvgPool2d((1, pool), (1, stride), (0, padding), ceil_mode=ceil_mode,
                                    count_include_pad=include_pad, divisor_override=divisor)

        def theirs(x):
            return _first(pool2d(_last(x)[:, :, None])[:, :, 0])

    compare_with_torch(layer, theirs, randn(2, 10, 3), dtype=np.float64)


@pytest.mark.parametrize("include_pad, divisor", [(False, None), (True, 5), (False, 7)])
def test_avg_pool3d_matches_torch(include_pad, divisor):
    layer = nn.AvgPool3D((2, 3, 3), stride=(1, 2, 2), padding=(1, 1, 1), count_include_pad=include_pad,
                         divisor_override=divisor)
    theirs = torch.nn.AvgPool3d((2, 3, 3), stride=(1, 2, 2), padding=(1, 1, 1), count_include_pad=include_pad,
                                divisor_override=divisor)
    compare_with_torch(layer, lambda x: _first(theirs(_last(x))), randn(2, 3, 5, 4, 2), dtype=np.float64)


def test_gradcheck():
    assert check_gradients(nn.AvgPool1D(3, 2, 1, count_include_pad=False, divisor_override=None), randn(1, 6, 2))
    assert check_gradients(nn.AvgPool1D(3, 2, 1, divisor_override=2), randn(1, 6, 2))
    assert check_gradients(nn.AvgPool3D(2, 1, 1, count_include_pad=False), randn(1, 2, 3, 2, 2))
    assert check_gradients(nn.AvgPool3D(2, 1, 1, divisor_override=3), randn(1, 2, 3, 2, 2))


@pytest.mark.parametrize("make, text", [
    (lambda: nn.AvgPool1D(3, 2, 1, count_include_pad=False, divisor_override=4),
     "AvgPool1D(pool_size=3, stride=2, padding=1, count_include_pad=False, divisor_override=4)"),
    (lambda: nn.AvgPool3D(3, 2, 1, count_include_pad=False),
     "AvgPool3D(pool_size=(3, 3, 3), stride=(2, 2, 2), padding=(1, 1, 1), count_include_pad=False)"),
    (lambda: nn.AvgPool3D(2, divisor_override=3), "AvgPool3D(pool_size=(2, 2, 2), divisor_override=3)"),
])
def test_config_round_trip_and_repr(make, text):
    layer = make()
    assert repr(layer) == text
    again = nn.layer_from_config(nn.layer_to_config(layer))
    assert again.get_config() == layer.get_config()
    assert (again.count_include_pad, again.divisor_override) == (layer.count_include_pad, layer.divisor_override)


def test_defaults_keep_the_old_config():
    assert "count_include_pad" not in nn.AvgPool1D(2).get_config()
    assert "divisor_override" not in nn.AvgPool3D(2).get_config()
    assert nn.AvgPool1D(2).count_include_pad and nn.AvgPool3D(2).divisor_override is None


@pytest.mark.parametrize("make", [nn.AvgPool1D, nn.AvgPool3D])
@pytest.mark.parametrize("bad", [0, -2, 1.5, True])
def test_a_bad_divisor_is_refused(make, bad):
    with pytest.raises(ValueError, match=rf"{make.__name__}: divisor_override must be a positive int"):
        make(2, divisor_override=bad)


def test_float32_stays_float32():
    x = lamina.tensor(np.ones((1, 4, 2), dtype=np.float32))
    assert nn.AvgPool1D(2, padding=1, count_include_pad=False)(x).dtype == np.float32
