"""OptNetLayer: feasible by construction, the same QP as qp_solve with its matrices, gradients to every
parameter, and learning a projection onto an unknown polytope far better than an MLP."""

import contextlib
import io
import pathlib
import re

import numpy as np
import pytest
from tests.helpers import randn

import lamina
from lamina import functional as F
from lamina import nn, optim

README = pathlib.Path(__file__).resolve().parents[2] / "README.md"


def test_readme_optimization_layers_example_runs_and_prints_what_it_says():
    section = README.read_text().split("### Optimization layers (OptNet)", 1)[1]
    code = re.search(r"```python\n(.*?)```", section, re.S).group(1)
    names: dict = {}
    with contextlib.redirect_stdout(io.StringIO()):
        exec(compile(code, str(README), "exec"), names)
    np.testing.assert_allclose(names["z"].numpy(), [[1.0, 0.0], [0.0, 0.2]], atol=1e-8)
    np.testing.assert_allclose(names["p"].grad, [[0.0, 0.0], [0.0, -1.0]], atol=1e-8)
    assert names["layer"](names["x"]).shape == (1, 3)


def test_layer_solves_its_qp_and_stays_feasible():
    layer = nn.OptNetLayer(4, 6, n_eq=1, seed=3)
    x = lamina.tensor(randn(5, 4, seed=1, scale=3.0).astype(np.float32))
    z = layer(x)
    assert z.shape == (5, 4) and z.dtype == np.float32
    Q, G, h, A, b = (t.numpy().astype(np.float64) for t in layer.matrices())
    assert np.linalg.eigvalsh(Q).min() > 0
    reference = F.qp_solve(Q, x.numpy().astype(np.float64), G, h, A, b).numpy()
    np.testing.assert_allclose(z.numpy(), reference, atol=1e-5)
    assert (z.numpy() @ G.T <= h + 1e-5).all()
    np.testing.assert_allclose(z.numpy() @ A.T, np.broadcast_to(b, (5, 1)), atol=1e-5)
    assert layer(x[0]).shape == (4,)


def test_every_parameter_gets_a_finite_difference_gradient():
    layer = nn.OptNetLayer(3, 4, n_eq=1, seed=2)
    for param in layer.parameters():
        param.data = param.data.astype(np.float64) + 0.1 * randn(*param.shape, seed=param.size)
    x = lamina.tensor(randn(2, 3, seed=9, scale=4.0), dtype=np.float64)
    Q, G, h, A, b = layer.matrices()
    z, lam, _ = F.qp_solve(Q, x, G, h, A, b, return_duals=True)
    slack = h.numpy() - z.numpy() @ G.numpy().T
    assert (lam.numpy() > 1e-3).sum() >= 2 and np.maximum(lam.numpy(), slack).min() > 1e-2   # active, not degenerate
    weights = randn(2, 3, seed=6)

    def loss():
        return F.sum(layer(x) * lamina.tensor(weights, dtype=np.float64))

    value = loss()
    value.backward()
    for name, param in layer.named_parameters():
        flat, analytic = param.data.reshape(-1), param.grad.reshape(-1)
        for i in range(flat.size):
            old = flat[i]
            flat[i] = old + 1e-6
            up = loss().item()
            flat[i] = old - 1e-6
            down = loss().item()
            flat[i] = old
            assert abs((up - down) / 2e-6 - analytic[i]) < 1e-5 + 1e-4 * abs(analytic[i]), (name, i)


def test_given_h_replaces_the_learned_right_hand_side():
    layer = nn.OptNetLayer(2, 3, seed=0)
    x = lamina.tensor(randn(4, 2, seed=2).astype(np.float32))
    _, G, _, _, _ = layer.matrices()
    h = np.full(3, 0.25, dtype=np.float32)
    z = layer(x, h=h)
    assert (z.numpy() @ G.numpy().T <= h + 1e-5).all()


def test_bad_configuration_and_input_raise():
    with pytest.raises(ValueError, match="OptNetLayer: n_eq"):
        nn.OptNetLayer(2, 3, n_eq=2)
    with pytest.raises(ValueError, match="OptNetLayer: eps"):
        nn.OptNetLayer(2, 3, eps=0.0)
    with pytest.raises(Exception, match=r"OptNetLayer: got an input of shape \(4, 3\)"):
        nn.OptNetLayer(2, 3)(lamina.tensor(np.ones((4, 3), dtype=np.float32)))


class PolytopeProjector(nn.Module):
    """z*(x) = argmin 1/2 z^T Q z - x^T z s.t. G z <= h: the projection of x when Q = I."""

    def __init__(self):
        super().__init__()
        self.qp = nn.OptNetLayer(2, 8, seed=1)

    def forward(self, x):
        return self.qp(-x)


def fit(model, x, y, lr, steps=150, seed=0):
    rng = np.random.default_rng(seed)
    optimizer = optim.Adam(model, lr=lr)
    for _ in range(steps):
        rows = rng.integers(0, len(x), 32)
        loss = F.mean_squared_error(model(lamina.tensor(x[rows])), lamina.tensor(y[rows]))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model


def test_optnet_learns_the_projection_onto_an_unknown_polytope_better_than_an_mlp():
    rng = np.random.default_rng(0)
    angles = np.linspace(0, 2 * np.pi, 5, endpoint=False) + 0.3
    G, h = np.stack([np.cos(angles), np.sin(angles)], 1), rng.uniform(0.5, 1.0, 5)

    def project(x):
        return F.qp_solve(np.eye(2), -x, G, h).numpy().astype(np.float32)

    x_train = (1.5 * rng.standard_normal((128, 2))).astype(np.float32)
    x_test = (3.0 * rng.standard_normal((256, 2))).astype(np.float32)   # wider than training: extrapolation
    y_train, y_test = project(x_train), project(x_test)
    optnet = fit(PolytopeProjector(), x_train, y_train, lr=0.05)
    mlp = fit(nn.Sequential(nn.Dense(32, activation="relu"), nn.Dense(32, activation="relu"), nn.Dense(2)),
              x_train, y_train, lr=0.01)
    with lamina.no_grad():
        optnet_error = float(((optnet(lamina.tensor(x_test)).numpy() - y_test) ** 2).mean())
        mlp_error = float(((mlp(lamina.tensor(x_test)).numpy() - y_test) ** 2).mean())
    assert optnet_error < 1e-3 and optnet_error < 0.05 * mlp_error, (optnet_error, mlp_error)
