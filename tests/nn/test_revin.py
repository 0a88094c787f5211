"""RevIN: normalisation and its inverse against a torch reference (values and gradients),
a float64 gradient check, the round trip, and its errors."""

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import nn


def torch_revin(x, y, gamma, beta, eps=1e-5):
    """Kim et al.'s RevIN: statistics detached, the forecast mapped back with them."""
    mean = x.mean(dim=1, keepdim=True).detach()
    std = torch.sqrt(x.var(dim=1, keepdim=True, unbiased=False) + eps).detach()
    z = (x - mean) / std * gamma + beta
    back = (y - beta) / (gamma + eps * eps) * std + mean
    return z, back


def revin_function(layer):
    def call(x, y, gamma, beta):
        out = nn.functional_call(layer, {"weight": gamma, "bias": beta}, x, "norm")
        back = nn.functional_call(layer, {"weight": gamma, "bias": beta}, y, "denorm")
        return out, back
    return call


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_revin_matches_torch(dtype):
    layer = nn.RevIN(3)
    layer.build((None, 7, 3))
    x, y = randn(4, 7, 3, scale=3.0) + 2.0, randn(4, 5, 3, seed=1)
    gamma, beta = randn(3, seed=2) * 0.3 + 1.0, randn(3, seed=3)
    compare_with_torch(revin_function(layer), torch_revin, x, y, gamma, beta, dtype=dtype,
                       rtol=1e-4 if dtype == np.float32 else 1e-10)


def test_revin_gradcheck():
    lamina.set_default_dtype(np.float64)
    try:
        layer = nn.RevIN(2)
        layer.build((None, 6, 2))
        function = revin_function(layer)

        def summed(*arrays):
            z, back = function(*arrays)
            return z.sum() + (back * back).sum()

        assert check_gradients(summed, randn(3, 6, 2), randn(3, 4, 2, seed=1),
                               randn(2, seed=2) + 1.5, randn(2, seed=3), grad=[False, True, True, True])
        # x also enters through its statistics, which are constants of the gradient (as in RevIN's
        # code), so centred differences in x disagree with the gradient by design
    finally:
        lamina.set_default_dtype(np.float32)


def test_round_trip_and_statistics():
    layer = nn.RevIN(2, affine=False)
    x = randn(3, 10, 2, scale=5.0) + 7.0
    z = layer(x, "norm").numpy()
    np.testing.assert_allclose(z.mean(axis=1), 0.0, atol=1e-5)
    np.testing.assert_allclose(z.std(axis=1), 1.0, atol=1e-3)
    np.testing.assert_allclose(layer(z, "denorm").numpy(), x, rtol=1e-5, atol=1e-5)
    affine = nn.RevIN(2)
    np.testing.assert_allclose(affine(affine(x, "norm"), "denorm").numpy(), x, rtol=1e-4, atol=1e-4)
    assert nn.RevIN.from_config(affine.get_config()).get_config() == affine.get_config()
    assert sorted(affine.state_dict()) == ["bias", "weight"]


def test_revin_errors():
    layer = nn.RevIN(2)
    with pytest.raises(RuntimeError, match="normalize call first"):
        layer(randn(1, 4, 2), "denorm")
    with pytest.raises(lamina.errors.ShapeError, match="RevIN"):
        layer(randn(1, 4, 3))
    with pytest.raises(ValueError, match="mode"):
        layer(randn(1, 4, 2), "inverse")
