"""DeepONet: the forward pass (shared and per-function query points) against a PyTorch rewrite in
float64, values and every gradient; finite-difference gradients; the antiderivative data against
numerical integration; learning the antiderivative operator to a small test error; errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import functional as F
from lamina import optim
from lamina.errors import ShapeError
from lamina.models import DeepONet, antiderivative_data


def _torch_deeponet(model):
    params = {name: torch.tensor(p.numpy(), requires_grad=True) for name, p in model.named_parameters()}

    def mlp(x, prefix, activate_last):
        names = sorted({n.rsplit(".", 1)[0] for n in params if n.startswith(prefix + ".")},
                       key=lambda n: (len(n), n))
        for k, layer in enumerate(names):
            x = x @ params[layer + ".weight"] + params[layer + ".bias"]
            if k < len(names) - 1 or activate_last:
                x = torch.tanh(x)
        return x

    def forward(u, y):
        b, t = mlp(u, "branch", False), mlp(y, "trunk", True)
        products = b @ t.T if y.ndim == 2 else torch.einsum("bp,bnp->bn", b, t)
        return products + params["bias"]
    return forward, params


@pytest.mark.parametrize("shared", [True, False])
def test_matches_torch_values_and_gradients(shared):
    model = DeepONet(6, coordinate_dim=2, latent_dim=5, branch_hidden=(7, 4), trunk_hidden=(3,)).double()
    model.bias.data = np.array(0.25)
    u, y = randn(3, 6, seed=1), randn(*((4, 2) if shared else (3, 4, 2)), seed=2)
    upstream = randn(3, 4, seed=3)
    ul, yl = (lamina.tensor(a, dtype=np.float64, requires_grad=True) for a in (u, y))
    out = model(ul, yl)
    (out * lamina.tensor(upstream, dtype=np.float64)).sum().backward()
    forward, params = _torch_deeponet(model)
    ut, yt = (torch.tensor(a, requires_grad=True) for a in (u, y))
    reference = forward(ut, yt)
    (reference * torch.tensor(upstream)).sum().backward()
    assert_close(out.numpy(), reference.detach().numpy(), 1e-12, "G(u)(y)")
    assert_close(ul.grad, ut.grad.numpy(), 1e-10, "dG/du")
    assert_close(yl.grad, yt.grad.numpy(), 1e-10, "dG/dy")
    for name, p in model.named_parameters():
        assert_close(p.grad, params[name].grad.numpy(), 1e-10, name)


def test_finite_difference_gradients():
    model = DeepONet(4, latent_dim=3, branch_hidden=(5,), trunk_hidden=(5,)).double()
    assert check_gradients(lambda u, y: model(u, y), randn(2, 4, seed=4), randn(3, 1, seed=5))


def test_antiderivative_data_integrates_the_functions():
    u, y, g = antiderivative_data(3, num_sensors=4001, num_points=5, modes=3, seed=7)
    assert u.shape == (3, 4001) and y.shape == (3, 5, 1) and g.shape == (3, 5)
    sensors = np.linspace(0, 1, 4001)
    for i in range(3):
        for j in range(5):
            inside = sensors <= y[i, j, 0]
            xs = np.append(sensors[inside], y[i, j, 0])
            us = np.append(u[i, inside], np.interp(y[i, j, 0], sensors, u[i]))
            assert abs(np.trapezoid(us, xs) - g[i, j]) < 1e-5


def test_learns_the_antiderivative_operator():
    # Linear in u, so a linear branch suffices; full-batch L-BFGS reaches a test error of
    # ~2e-2 on unseen functions (the mean predictor's error is 1).
    train = antiderivative_data(100, num_sensors=20, num_points=20, modes=2, seed=0)
    test = antiderivative_data(100, num_sensors=20, num_points=20, modes=2, seed=1)
    model = DeepONet(20, latent_dim=20, branch_hidden=(), trunk_hidden=(20, 20)).double()
    u, y, g = (lamina.tensor(a, dtype=np.float64) for a in train)
    lbfgs = optim.LBFGS(model.parameters(), max_iter=600, history_size=50, line_search_fn="strong_wolfe")

    def closure():
        loss = F.mean((model(u, y) - g) ** 2)
        model.zero_grad()
        loss.backward()
        return loss
    lbfgs.step(closure)
    with lamina.no_grad():
        predicted = model(lamina.tensor(test[0], dtype=np.float64), lamina.tensor(test[1], dtype=np.float64))
    error = np.linalg.norm(predicted.numpy() - test[2]) / np.linalg.norm(test[2])
    assert error < 5e-2, error


def test_errors():
    model = DeepONet(5, coordinate_dim=2)
    with pytest.raises(ShapeError, match=r"\(batch, 5\)"):
        model(np.zeros((3, 4)), np.zeros((6, 2)))
    with pytest.raises(ShapeError, match=r"\(n, 2\) or \(3, n, 2\)"):
        model(np.zeros((3, 5)), np.zeros((6, 1)))
    with pytest.raises(ShapeError, match=r"\(3, n, 2\)"):
        model(np.zeros((3, 5)), np.zeros((2, 6, 2)))
    with pytest.raises(ValueError, match="latent_dim"):
        DeepONet(5, latent_dim=0)
