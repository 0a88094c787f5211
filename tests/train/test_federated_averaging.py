"""FedAvg and FedProx against references: one client is plain SGD, one local full-batch step
on every client is centralized large-batch SGD, the count-weighted average of longer local
training matches NumPy, FedProx's proximal gradient matches torch, buffers are averaged."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from lamina import functional as F
from lamina import nn
from lamina.train.federated import FedAvg, FedProx, ServerSGD, local_sgd

RNG = np.random.default_rng(0)


def mlp(inputs=4, hidden=5, outputs=3, seed=0):
    lamina.manual_seed(seed)
    model = nn.Sequential(nn.Dense(hidden, activation="tanh"), nn.Dense(outputs))
    model(np.zeros((1, inputs), np.float32))
    return model.double()


def cross_entropy(output, labels):
    return F.categorical_cross_entropy(output, labels, from_logits=True)


def torch_mlp(model):
    """The lamina MLP's weights as leaf tensors (Dense weights are (in, out))."""
    return [torch.tensor(p.data, dtype=torch.float64, requires_grad=True) for p in model.parameters()]


def torch_forward(weights, x):
    w1, b1, w2, b2 = weights
    return torch.tanh(torch.as_tensor(x) @ w1 + b1) @ w2 + b2


def torch_sgd(weights, x, y, lr, steps, extra=None):
    """``steps`` full-batch SGD steps on the mean cross-entropy (+ ``extra(weights)``)."""
    weights = [w.detach().clone().requires_grad_(True) for w in weights]
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(torch_forward(weights, x), torch.as_tensor(y))
        if extra is not None:
            loss = loss + extra(weights)
        grads = torch.autograd.grad(loss, weights)
        weights = [(w - lr * g).detach().requires_grad_(True) for w, g in zip(weights, grads, strict=True)]
    return [w.detach().numpy() for w in weights]


def classification_data(n, seed):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, 4)), rng.integers(0, 3, size=n)


def weights_of(model):
    return [p.data for p in model.parameters()]


def assert_weights_close(actual, expected, tol=1e-12):
    for a, e in zip(actual, expected, strict=True):
        np.testing.assert_allclose(a, e, rtol=tol, atol=tol)


@pytest.mark.parametrize("rounds, epochs", [(3, 1), (1, 4)])
def test_one_client_full_batch_is_plain_sgd(rounds, epochs):
    model = mlp()
    start = torch_mlp(model)
    x, y = classification_data(12, 1)
    FedAvg(model, cross_entropy, lr=0.3, local_epochs=epochs).fit([(x, y)], rounds=rounds)
    assert_weights_close(weights_of(model), torch_sgd(start, x, y, 0.3, rounds * epochs))


def test_one_local_step_on_equal_iid_clients_is_centralized_large_batch_sgd():
    model = mlp()
    start = torch_mlp(model)
    x, y = classification_data(40, 2)
    clients = [(x[k::4], y[k::4]) for k in range(4)]
    FedAvg(model, cross_entropy, lr=0.5).fit(clients, rounds=3)
    union = np.concatenate([c[0] for c in clients]), np.concatenate([c[1] for c in clients])
    assert_weights_close(weights_of(model), torch_sgd(start, *union, 0.5, 3), tol=1e-10)


def linear_model(seed=0):
    lamina.manual_seed(seed)
    model = nn.Dense(2)
    model(np.zeros((1, 3), np.float32))
    return model.double()


def numpy_local_sgd(w, b, x, y, lr, steps, correction=None):
    """Full-batch SGD on mean((x w + b - y)^2) over all entries."""
    for _ in range(steps):
        residual = 2 * (x @ w + b - y) / y.size
        grad_w, grad_b = x.T @ residual, residual.sum(axis=0)
        if correction is not None:
            extra_w, extra_b = correction(w, b)
            grad_w, grad_b = grad_w + extra_w, grad_b + extra_b
        w, b = w - lr * grad_w, b - lr * grad_b
    return w, b


def regression_clients(sizes, seed=3):
    rng = np.random.default_rng(seed)
    truth = rng.normal(size=(3, 2))
    clients = []
    for k, n in enumerate(sizes):
        x = rng.normal(size=(n, 3)) + k  # each client's inputs centred elsewhere
        clients.append((x, x @ truth + rng.normal(size=(n, 2))))
    return clients


@pytest.mark.parametrize("weighted", [True, False])
def test_unequal_clients_are_averaged_by_sample_count(weighted):
    clients = regression_clients([3, 10, 25])
    model = linear_model()
    w, b = model.weight.data.copy(), model.bias.data.copy()
    algorithm = FedAvg(model, F.mean_squared_error, lr=0.02, local_epochs=3, weighted=weighted)
    for _ in range(2):
        algorithm.run_round(clients)
        trained = [numpy_local_sgd(w, b, x, y, 0.02, 3) for x, y in clients]
        sizes = np.array([len(x) for x, _ in clients], dtype=np.float64)
        shares = sizes / sizes.sum() if weighted else np.full(3, 1 / 3)
        w = sum(p * tw for p, (tw, _) in zip(shares, trained, strict=True))
        b = sum(p * tb for p, (_, tb) in zip(shares, trained, strict=True))
        np.testing.assert_allclose(model.weight.data, w, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(model.bias.data, b, rtol=1e-12, atol=1e-12)


def test_fedprox_local_training_matches_torch():
    model = mlp()
    start = torch_mlp(model)
    x, y = classification_data(16, 4)
    mu = 0.7
    FedProx(model, cross_entropy, lr=0.4, mu=mu, local_epochs=5).fit([(x, y)], rounds=1)
    anchor = [w.detach().clone() for w in start]

    def proximal(weights):
        return mu / 2 * sum(((w - a) ** 2).sum() for w, a in zip(weights, anchor, strict=True))

    expected = torch_sgd(start, x, y, 0.4, 5, extra=proximal)
    assert_weights_close(weights_of(model), expected)
    plain = torch_sgd(start, x, y, 0.4, 5)
    assert max(np.abs(a - e).max() for a, e in zip(weights_of(model), plain, strict=True)) > 1e-4


def test_fedprox_with_mu_zero_is_fedavg():
    clients = [classification_data(n, seed) for seed, n in enumerate([9, 14, 20, 7])]
    runs = []
    for algorithm in (FedAvg, lambda *a, **k: FedProx(*a, mu=0.0, **k)):
        model = mlp()
        algorithm(model, cross_entropy, lr=0.2, local_epochs=2, batch_size=4, fraction=0.5, seed=7).fit(
            clients, rounds=3)
        runs.append(weights_of(model))
    for a, b in zip(*runs, strict=True):
        np.testing.assert_array_equal(a, b)


def test_batch_norm_buffers_are_count_weighted_averages():
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Dense(3), nn.BatchNorm(), nn.Dense(3))
    model(np.zeros((2, 4), np.float32))
    model.double()
    clients = [classification_data(n, seed) for seed, n in enumerate([6, 18])]
    start = {name: np.array(v, copy=True) for name, v in model.state_dict().items()}
    expected = {}
    for x, y in clients:
        model.load_state_dict(start)
        local_sgd(model, cross_entropy, (x, y), 0.1, 1, None, np.random.default_rng(0))
        for name, buffer in model.named_buffers():
            expected[name] = expected.get(name, 0) + len(x) / 24 * buffer
    model.load_state_dict(start)
    FedAvg(model, cross_entropy, lr=0.1).run_round(clients)
    assert set(expected) == {"batch_norm.running_mean", "batch_norm.running_var"}
    for name, buffer in model.named_buffers():
        np.testing.assert_allclose(buffer, expected[name], rtol=1e-12)
        assert not np.allclose(buffer, start[name])


def test_client_sampling_is_seeded_and_sized_by_fraction():
    clients = [classification_data(5, seed) for seed in range(10)]

    def sampled(seed):
        algorithm = FedAvg(mlp(), cross_entropy, lr=0.1, fraction=0.3, seed=seed)
        return [algorithm.run_round(clients)["clients"] for _ in range(4)]

    first = sampled(1)
    assert first == sampled(1) and first != sampled(2)
    assert all(len(chosen) == 3 and len(set(chosen)) == 3 for chosen in first)


def test_history_records_test_metrics_and_client_losses():
    clients = [classification_data(n, seed) for seed, n in enumerate([10, 12])]
    result = FedAvg(mlp(), cross_entropy, lr=0.3, server_optimizer=ServerSGD(lr=1.0)).fit(
        clients, rounds=3, test=classification_data(30, 9))
    assert len(result.history) == 3 and [r["round"] for r in result.history] == [1, 2, 3]
    assert all(0 <= a <= 1 for a in result.test_accuracy)
    assert result.test_loss[-1] < result.test_loss[0] + 0.5
    assert all(len(losses) == 2 for losses in result.client_losses)
    assert np.mean(result.client_losses[-1]) < np.mean(result.client_losses[0])


@pytest.mark.parametrize("keywords, message", [
    ({"fraction": 0.0}, r"fraction .* must lie in \(0, 1\]"),
    ({"fraction": 1.5}, r"fraction .* must lie in \(0, 1\]"),
    ({"lr": -1.0}, "lr must be a finite number > 0"),
    ({"local_epochs": 0}, "local_epochs must be an integer > 0"),
    ({"noise_multiplier": 1.0}, "needs clip_norm"),
])
def test_fedavg_rejects_bad_arguments(keywords, message):
    arguments = {"lr": 0.1} | keywords
    with pytest.raises(ValueError, match=message):
        FedAvg(mlp(), cross_entropy, **arguments)


def test_fedavg_rejects_mismatched_client_data():
    with pytest.raises(ValueError, match="client 1 needs as many labels as inputs"):
        FedAvg(mlp(), cross_entropy, lr=0.1).run_round([classification_data(4, 0), (np.zeros((3, 4)), np.zeros(2))])
    with pytest.raises(ValueError, match="mu must be a finite number >= 0"):
        FedProx(mlp(), cross_entropy, lr=0.1, mu=-1.0)
