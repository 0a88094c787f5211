"""Matrix factorization: forward and gradients against PyTorch, ALS's closed form, and
learning synthetic ratings past the global-mean and bias baselines."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina import optim
from lamina.data import leave_one_out_split, synthetic_implicit, synthetic_ratings
from lamina.errors import ShapeError
from lamina.models import MatrixFactorization, als
from lamina.train import Trainer, evaluate_sampled


def _random_model(biases=True, seed=0):
    lamina.set_default_dtype(np.float64)
    model = MatrixFactorization(6, 9, 4, biases=biases, global_mean=3.0)
    rng = np.random.default_rng(seed)
    for param in model.parameters():
        param.data[...] = rng.normal(0, 1, param.shape)
    return model


@pytest.mark.parametrize("biases", [True, False])
def test_forward_and_gradients_match_torch(biases):
    model = _random_model(biases)
    users, items = np.array([0, 5, 2, 0, 3]), np.array([8, 1, 1, 8, 0])       # a repeated pair adds up
    ratings = np.array([4.0, 2.0, 5.0, 3.0, 1.0])
    predicted = model(users, items)
    loss = ((predicted - ratings) ** 2).mean()
    loss.backward()
    params = {name: torch.tensor(p.data, requires_grad=True) for name, p in model.named_parameters()}
    u, i = torch.tensor(users), torch.tensor(items)
    expected = (params["user_factors.weight"][u] * params["item_factors.weight"][i]).sum(-1)
    if biases:
        expected = (expected + params["global_bias"] + params["user_bias.weight"][u, 0]
                    + params["item_bias.weight"][i, 0])
    ((expected - torch.tensor(ratings)) ** 2).mean().backward()
    assert_close(predicted.numpy(), expected.detach().numpy(), 1e-12, "ratings")
    for name, param in model.named_parameters():
        assert_close(param.grad, params[name].grad.numpy(), 1e-10, name)
    assert_close(model.score_all(users)[np.arange(5), items], predicted.numpy(), 1e-12, "score_all")


def test_gradcheck():
    model = _random_model(seed=1)
    users, items = np.array([1, 4, 1]), np.array([2, 2, 7])
    assert lamina.gradcheck(lambda *_: (model(users, items) ** 2).sum(), *model.parameters())


def test_errors_name_the_model():
    model = MatrixFactorization(4, 5, 2)
    with pytest.raises(ValueError, match=r"MatrixFactorization: user id 4 is out of range; user ids must be in \[0, 4"):
        model(np.array([4]), np.array([0]))
    with pytest.raises(ValueError, match="MatrixFactorization: item id -1"):
        model(np.array([0]), np.array([-1]))
    with pytest.raises(ShapeError, match="MatrixFactorization: users and items must pair up one to one, got 2 users"):
        model(np.array([0, 1]), np.array([0]))
    with pytest.raises(ShapeError, match="MatrixFactorization: expected a 1-D array of user ids"):
        model(np.zeros((2, 2), dtype=int), np.array([0, 1]))
    with pytest.raises(TypeError, match="MatrixFactorization: item ids must be integers"):
        model(np.array([0]), np.array([0.5]))


def _bias_baseline(train, test, shrinkage=5.0):
    """mu + b_u + b_i, fitted by alternating shrunk means (Koren's baseline predictor)."""
    mu = train.values.mean()
    user_bias, item_bias = np.zeros(train.n_users), np.zeros(train.n_items)
    for _ in range(10):
        item_bias = (np.bincount(train.items, train.values - mu - user_bias[train.users], train.n_items)
                     / (np.bincount(train.items, minlength=train.n_items) + shrinkage))
        user_bias = (np.bincount(train.users, train.values - mu - item_bias[train.items], train.n_users)
                     / (np.bincount(train.users, minlength=train.n_users) + shrinkage))
    return mu + user_bias[test.users] + item_bias[test.items]


def test_learns_ratings_better_than_the_mean_and_bias_baselines():
    data = synthetic_ratings(200, 300, 30, dim=4, noise=0.3, seed=0)
    order = np.random.default_rng(0).permutation(len(data))
    train, test = data.subset(order[:4800]), data.subset(order[4800:])
    model = MatrixFactorization(200, 300, 8, global_mean=train.values.mean())
    trainer = Trainer(model, loss="mse", optimizer=optim.Adam(model, lr=0.02), metrics=(), verbose=0)
    trainer.fit(((train.users, train.items), train.values), epochs=25, batch_size=256)

    def rmse(predicted):
        return float(np.sqrt(np.mean((predicted - test.values) ** 2)))

    global_mean = rmse(np.full(len(test), train.values.mean()))
    biases = rmse(_bias_baseline(train, test))
    learned = rmse(model(test.users, test.items).numpy())
    assert biases < global_mean - 0.1                   # about 1.08 and 0.88
    assert learned < biases - 0.12                      # about 0.66


def _implicit_objective(model, data, reg, alpha):
    x, y = model.user_factors.weight.data, model.item_factors.weight.data
    r = data.matrix().toarray()
    confidence, preference = 1 + alpha * r, (r > 0).astype(float)
    return (confidence * (preference - x @ y.T) ** 2).sum() + reg * ((x ** 2).sum() + (y ** 2).sum())


def test_als_solves_the_normal_equations_and_lowers_the_objective():
    lamina.set_default_dtype(np.float64)                # the model keeps the factors at full precision
    data = synthetic_implicit(30, 40, 8, seed=0)
    reg, alpha = 0.5, 5.0
    objectives = [_implicit_objective(als(data, 6, reg, alpha, iterations=n, seed=0), data, reg, alpha)
                  for n in (1, 2, 4)]
    assert objectives[0] > objectives[1] > objectives[2]
    model = als(data, 6, reg, alpha, iterations=3, seed=0)
    x, y = model.user_factors.weight.data, model.item_factors.weight.data
    r = data.matrix().toarray()
    for item in (0, 7, 39):                             # the last half-step left every y_i at its optimum
        c = 1 + alpha * r[:, item]
        lhs = x.T @ (c[:, None] * x) + reg * np.eye(6)
        assert_close(y[item], np.linalg.solve(lhs, x.T @ (c * (r[:, item] > 0))), 1e-8, f"y_{item}")


def test_als_ranks_held_out_items_above_popularity():
    train, test = leave_one_out_split(synthetic_implicit(200, 200, 30, temperature=0.3, seed=0))
    model = als(train, 16, reg=0.1, alpha=10.0, iterations=6, seed=0)

    class Popularity:
        def score_all(self, users):
            return np.tile(train.item_counts().astype(float), (len(users), 1))

    learned = evaluate_sampled(model, train, test, seed=1)["hit_rate"]
    popular = evaluate_sampled(Popularity(), train, test, seed=1)["hit_rate"]
    assert learned > popular + 0.2                      # about 0.5 and 0.13
