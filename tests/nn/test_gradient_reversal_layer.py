"""GradientReversal: the identity forward, -lambda times the gradient backward (against
PyTorch with a custom autograd.Function), a schedule changing lambda between calls, and its
config round trip."""

from __future__ import annotations

import numpy as np

import lamina
import lamina.nn as nn
from helpers import compare_with_torch, randn
from torch_gradient_reversal import TorchReversal


def test_layer_matches_torch_inside_a_network():
    layer = nn.GradientReversal(0.25)
    compare_with_torch(lambda x: layer(x.tanh()) ** 2, lambda x: TorchReversal.apply(x.tanh(), 0.25) ** 2,
                       randn(4, 3), dtype=np.float64)


def test_lambda_can_change_between_steps():
    layer = nn.GradientReversal()
    x = lamina.tensor(randn(2, 2), requires_grad=True)
    for lambda_ in (0.0, 0.5, 2.0):
        x.grad = None
        layer.lambda_ = lambda_
        layer(x).sum().backward()
        np.testing.assert_allclose(x.grad, np.full((2, 2), -lambda_))


def test_config_round_trip_and_output_shape():
    layer = nn.GradientReversal(0.7)
    again = nn.layer_from_config(nn.layer_to_config(layer))
    assert isinstance(again, nn.GradientReversal) and again.lambda_ == 0.7
    assert layer.compute_output_shape((None, 5)) == (None, 5)
    assert "lambda_=0.7" in repr(layer)
