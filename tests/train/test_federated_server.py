"""SCAFFOLD's control variates and the adaptive server optimizers (FedAdam, FedYogi,
FedAdagrad, FedAvgM) against NumPy references of the papers' algorithms, and DP-FedAvg."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina import functional as F
from lamina import nn
from lamina.optim.privacy import compute_epsilon
from lamina.train.federated import SCAFFOLD, FedAdagrad, FedAdam, FedAvg, FedAvgM, FedYogi, ServerSGD


def linear_model(seed=0):
    lamina.manual_seed(seed)
    model = nn.Dense(2)
    model(np.zeros((1, 3), np.float32))
    return model.double()


def regression_clients(sizes, seed=5):
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(3, 2))
    clients = []
    for k, n in enumerate(sizes):
        x = rng.normal(size=(n, 3)) * (1 + k) + k
        clients.append((x, x @ truth + rng.normal(size=(n, 2))))
    return clients


def mse_gradient(params, x, y):
    """Gradients of mean((x w + b - y)^2) over all entries, for params = {weight, bias}."""
    residual = 2 * (x @ params["weight"] + params["bias"] - y) / y.size
    return {"weight": x.T @ residual, "bias": residual.sum(axis=0)}


def test_scaffold_control_variates_match_a_numpy_reference():
    clients = regression_clients([4, 7, 5, 9])
    model = linear_model()
    lr, steps, server_lr = 0.02, 3, 0.8
    scaffold = SCAFFOLD(model, F.mean_squared_error, lr=lr, local_epochs=steps, fraction=0.5, weighted=False,
                        server_optimizer=ServerSGD(lr=server_lr), seed=4)
    x_global = {"weight": model.weight.data.copy(), "bias": model.bias.data.copy()}
    c = {k: np.zeros_like(v) for k, v in x_global.items()}
    c_clients = [{k: np.zeros_like(v) for k, v in x_global.items()} for _ in clients]
    for _ in range(3):
        chosen = scaffold.run_round(clients)["clients"]
        assert len(chosen) == 2
        changes_y, changes_c = [], []
        for i in chosen:
            y = dict(x_global)
            for _ in range(steps):
                g = mse_gradient(y, *clients[i])
                y = {k: y[k] - lr * (g[k] - c_clients[i][k] + c[k]) for k in y}
            new_ci = {k: c_clients[i][k] - c[k] + (x_global[k] - y[k]) / (steps * lr) for k in y}
            changes_y.append({k: y[k] - x_global[k] for k in y})
            changes_c.append({k: new_ci[k] - c_clients[i][k] for k in y})
            c_clients[i] = new_ci
        x_global = {k: x_global[k] + server_lr * np.mean([d[k] for d in changes_y], axis=0) for k in x_global}
        c = {k: c[k] + sum(d[k] for d in changes_c) / len(clients) for k in c}
        for k in x_global:
            np.testing.assert_allclose(getattr(model, k).data, x_global[k], rtol=1e-12, atol=1e-14)
            np.testing.assert_allclose(scaffold.control[k], c[k], rtol=1e-12, atol=1e-14)
            for i in chosen:
                np.testing.assert_allclose(scaffold.client_controls[i][k], c_clients[i][k], rtol=1e-12, atol=1e-14)
    assert np.abs(c["weight"]).max() > 1e-3


def reference_adaptive(kind, deltas, w, lr, beta1, beta2, tau):
    """Reddi et al. (2021), Algorithm 2, with v starting at tau^2 and m at 0."""
    m, v = np.zeros_like(w), np.full_like(w, tau ** 2)
    for delta in deltas:
        m = beta1 * m + (1 - beta1) * delta
        if kind == "adagrad":
            v = v + delta ** 2
        elif kind == "adam":
            v = beta2 * v + (1 - beta2) * delta ** 2
        else:
            v = v - (1 - beta2) * delta ** 2 * np.sign(v - delta ** 2)
        w = w + lr * m / (np.sqrt(v) + tau)
    return w


@pytest.mark.parametrize("kind, optimizer", [("adagrad", FedAdagrad), ("adam", FedAdam), ("yogi", FedYogi)])
def test_adaptive_server_optimizers_follow_algorithm_2(kind, optimizer):
    rng = np.random.default_rng(1)
    w0 = rng.normal(size=(4, 3))
    deltas = [rng.normal(scale=0.1 * (t + 1), size=(4, 3)) for t in range(5)]
    server = optimizer(lr=0.05, beta1=0.8, beta2=0.95, tau=0.01)
    w = {"w": w0}
    for delta in deltas:
        w = server.step(w, {"w": delta})
    np.testing.assert_allclose(w["w"], reference_adaptive(kind, deltas, w0, 0.05, 0.8, 0.95, 0.01), rtol=1e-12)


def test_fedavgm_is_server_momentum():
    rng = np.random.default_rng(2)
    w0, deltas = rng.normal(size=5), [rng.normal(size=5) for _ in range(4)]
    server, w, velocity, expected = FedAvgM(lr=0.7, momentum=0.9), {"w": w0}, 0, w0
    for delta in deltas:
        w = server.step(w, {"w": delta})
        velocity = 0.9 * velocity + delta
        expected = expected + 0.7 * velocity
    np.testing.assert_allclose(w["w"], expected, rtol=1e-12)


@pytest.mark.parametrize("optimizer", [FedAdam, FedYogi, FedAdagrad])
def test_fedavg_hands_the_weighted_pseudo_gradient_to_the_server(optimizer):
    clients = regression_clients([3, 8, 6])
    plain = linear_model()
    start = {"weight": plain.weight.data.copy(), "bias": plain.bias.data.copy()}
    FedAvg(plain, F.mean_squared_error, lr=0.05, local_epochs=2).run_round(clients)
    delta = {"weight": plain.weight.data - start["weight"], "bias": plain.bias.data - start["bias"]}
    expected = optimizer(lr=0.1).step(start, delta)
    adaptive = linear_model()
    FedAvg(adaptive, F.mean_squared_error, lr=0.05, local_epochs=2, server_optimizer=optimizer(lr=0.1)).run_round(
        clients)
    for k in expected:
        np.testing.assert_allclose(getattr(adaptive, k).data, expected[k], rtol=1e-12)


def test_dp_fedavg_clips_updates_and_accounts_for_the_privacy_spent():
    clients = regression_clients([5, 5, 5, 5])
    model = linear_model()
    start = np.concatenate([model.weight.data.ravel(), model.bias.data])
    dp = FedAvg(model, F.mean_squared_error, lr=0.5, local_epochs=5, fraction=0.5, clip_norm=0.01,
                noise_multiplier=0.0)
    dp.run_round(clients)
    moved = np.concatenate([model.weight.data.ravel(), model.bias.data]) - start
    assert np.linalg.norm(moved) <= 0.01 + 1e-12  # an average of updates clipped to 0.01
    noisy = FedAvg(linear_model(), F.mean_squared_error, lr=0.1, fraction=0.5, clip_norm=1.0, noise_multiplier=1.1)
    for _ in range(3):
        noisy.run_round(clients)
    epsilon = noisy.accountant.get_epsilon(1e-5)
    assert np.isclose(epsilon, compute_epsilon(1.1, 0.5, 3, 1e-5))


@pytest.mark.parametrize("call, message", [
    (lambda: FedAdam(lr=0.0), "lr must be a finite number > 0"),
    (lambda: FedYogi(beta2=1.5), "beta2"),
    (lambda: FedAdagrad(tau=0.0), "tau must be a finite number > 0"),
    (lambda: FedAvgM(momentum=-0.1), "momentum"),
])
def test_server_optimizers_reject_bad_arguments(call, message):
    with pytest.raises(ValueError, match=message):
        call()
