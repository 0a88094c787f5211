"""ReLU6, a = min(max(z, 0), 6) (MobileNet): PyTorch's values and gradients, gradcheck."""

import numpy as np
import torch

import lamina
from helpers import assert_close
from lamina import nn
from lamina.nn import layer_from_config, layer_to_config


def test_relu6_matches_torch_including_the_kinks():
    z = np.array([-3.0, -1e-9, 0.0, 1e-9, 2.5, 5.999, 6.0, 6.001, 40.0])
    x = np.concatenate([z, np.random.default_rng(0).uniform(-4, 10, 31)]).reshape(2, 4, 5)
    xl = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    y = nn.ReLU6()(xl)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.ReLU6()(xt)
    assert_close(y.numpy(), yt.detach().numpy(), 0, "relu6")
    up = np.random.default_rng(1).standard_normal(x.shape)
    y.backward(up)
    (yt * torch.tensor(up)).sum().backward()
    assert_close(xl.grad, xt.grad.numpy(), 0, "relu6 gradient")


def test_relu6_gradcheck_and_activation_name():
    x = np.random.default_rng(2).uniform(-3, 9, (3, 7))
    x[np.abs(x) < 1e-2] += 0.05
    x[np.abs(x - 6) < 1e-2] += 0.05
    xt = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    assert lamina.gradcheck(lambda a: nn.ReLU6()(a), xt)
    layer = nn.Dense(3, activation="relu6")
    y = layer(lamina.tensor(np.full((2, 4), 100.0, dtype=np.float32)))
    assert float(y.numpy().max()) <= 6.0
    assert layer.get_config()["activation"] == "relu6"
    clone = layer_from_config(layer_to_config(nn.ReLU6(name="r")))
    assert isinstance(clone, nn.ReLU6) and clone.name == "r"
    assert nn.ReLU6().compute_output_shape((None, 3, 3, 2)) == (None, 3, 3, 2)


def test_relu6_on_lamina_threads_matches_torch():
    """An activation large enough for lamina's threads and blocks (ELEMENTWISE_MIN values):
    the same values and gradients as PyTorch, exactly."""
    from lamina import parallel
    rng = np.random.default_rng(3)
    x = rng.uniform(-4, 10, (16, 32, 32, 72)).astype(np.float32)
    assert x.size >= parallel.ELEMENTWISE_MIN
    x.reshape(-1)[:4] = [0.0, 6.0, -0.0, 3.0]                  # both kinks
    xl = lamina.tensor(x, requires_grad=True)
    y = nn.ReLU6()(xl)
    xt = torch.tensor(x, requires_grad=True)
    yt = torch.nn.ReLU6()(xt)
    np.testing.assert_array_equal(y.numpy(), yt.detach().numpy())
    up = rng.standard_normal(x.shape).astype(np.float32)
    y.backward(up)
    (yt * torch.tensor(up)).sum().backward()
    np.testing.assert_array_equal(xl.grad, xt.grad.numpy())
