import numpy as np
import pytest
import torch
from nn_checks import compare_layer, gradcheck_layer

import lamina
from lamina import nn


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)


def _x(shape, seed=0):
    x = np.random.default_rng(seed).standard_normal(shape)
    x[np.abs(x) < 1e-3] += 0.01  # keep away from the kinks for the numeric gradients
    return x


@pytest.mark.parametrize(
    "layer, torch_layer",
    [
        (lambda: nn.ReLU(), lambda: torch.nn.ReLU()),
        (lambda: nn.LeakyReLU(), lambda: torch.nn.LeakyReLU(0.01)),
        (lambda: nn.LeakyReLU(alpha=0.2), lambda: torch.nn.LeakyReLU(0.2)),
        (lambda: nn.ELU(), lambda: torch.nn.ELU()),
        (lambda: nn.ELU(alpha=0.5), lambda: torch.nn.ELU(alpha=0.5)),
        (lambda: nn.SELU(), lambda: torch.nn.SELU()),
        (lambda: nn.Tanh(), lambda: torch.nn.Tanh()),
        (lambda: nn.Sigmoid(), lambda: torch.nn.Sigmoid()),
        (lambda: nn.Softmax(), lambda: torch.nn.Softmax(dim=-1)),
        (lambda: nn.Softmax(axis=1), lambda: torch.nn.Softmax(dim=1)),
        (lambda: nn.Activation("tanh"), lambda: torch.nn.Tanh()),
    ],
)
def test_activation_layers_match_torch_and_gradcheck(f64, layer, torch_layer):
    x = _x((3, 4, 5))
    compare_layer(layer(), torch_layer(), x, nchw=False)
    assert gradcheck_layer(layer(), x)


@pytest.mark.parametrize("shape", [(4, 3), (2, 3, 3, 4)])
def test_prelu_per_channel_matches_torch(f64, shape):
    c = shape[-1]
    layer = nn.PReLU()
    tl = torch.nn.PReLU(num_parameters=c)
    x = _x(shape, 1)
    layer.build(shape)
    layer.built = True
    assert layer.alpha.shape == (c,)
    np.testing.assert_allclose(layer.alpha.numpy(), 0.25)
    layer.alpha.data = np.linspace(0.1, 0.4, c)
    compare_layer(layer, tl, x, [("alpha", tl.weight, None)])
    assert gradcheck_layer(layer, x)


def test_prelu_shared_and_channel_check(f64):
    layer = nn.PReLU(shared=True, alpha_init=0.1)
    x = _x((2, 5), 2)
    y = layer(x)
    np.testing.assert_allclose(y.numpy(), np.where(x > 0, x, 0.1 * x))
    assert gradcheck_layer(layer, x)
    per_channel = nn.PReLU(name="act")
    per_channel(_x((2, 5)))
    with pytest.raises(lamina.ShapeError, match=r"PReLU 'act'.*\(2, 6\).*size 5"):
        per_channel(_x((2, 6)))


def test_activation_shapes_and_configs():
    for layer in [nn.ReLU(), nn.LeakyReLU(0.3), nn.ELU(2.0), nn.SELU(), nn.Tanh(), nn.Sigmoid(),
                  nn.Softmax(axis=1), nn.PReLU(alpha_init=0.2), nn.Activation("relu")]:
        assert layer.compute_output_shape((None, 3, 4)) == (None, 3, 4)
        again = nn.layer_from_config(nn.layer_to_config(layer))
        assert type(again) is type(layer) and again.get_config() == layer.get_config()
