"""lamina.analysis.data_valuation: representer points decompose the logits of a last layer fitted
to stationarity; KNN-Shapley and truncated Monte Carlo Shapley against Shapley values by
enumeration of every subset; efficiency; the README example; the error messages."""

import itertools
import math

import numpy as np
import pytest

import lamina
from helpers import assert_close, run_readme_section
from lamina import functional as F
from lamina import nn
from lamina.analysis import knn_shapley, representer_scores, tmc_data_shapley
from lamina.errors import ShapeError

L2 = 0.05


def cross_entropy(logits, labels):
    return F.categorical_cross_entropy(logits, labels, from_logits=True)


def softmax(z):
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def fit_last_layer(features, y, classes, steps=50):
    """W, b minimising mean cross-entropy + L2 ||W||^2 (the bias unpenalised), by Newton's method
    in NumPy; the pseudo-inverse handles the softmax's flat direction (all biases shifted alike)."""
    n, d = features.shape
    inputs = np.hstack([features, np.ones((n, 1))])
    penalty = np.diag(np.r_[np.full(d * classes, 2 * L2), np.zeros(classes)])
    theta = np.zeros((d + 1) * classes)
    for _ in range(steps):
        p = softmax(inputs @ theta.reshape(d + 1, classes))
        gradient = (inputs.T @ (p - np.eye(classes)[y]) / n).ravel() + penalty @ theta
        if np.abs(gradient).max() < 1e-14:
            break
        curvature = p[:, :, None] * np.eye(classes) - p[:, :, None] * p[:, None, :]
        hessian = np.einsum("ia,ib,icd->acbd", inputs, inputs, curvature).reshape(theta.size, theta.size) / n
        theta = theta - np.linalg.pinv(hessian + penalty) @ gradient
    return theta[:d * classes].reshape(d, classes), theta[d * classes:]


@pytest.fixture
def network():
    """Dense(6, tanh) -> Dense(3) in float64 on 30 training and 5 test examples, its last layer
    fitted to stationarity with the penalty L2 ||W||^2."""
    lamina.set_default_dtype(np.float64)
    model = nn.Sequential(nn.Dense(6, activation="tanh", bias_init="uniform"), nn.Dense(3))
    model.build((None, 4))
    rng = np.random.default_rng(0)
    x = rng.normal(size=(35, 4))
    y = rng.integers(0, 3, 35)
    w1, b1 = (p.numpy() for p in model.layers[0].parameters())
    features = np.tanh(x[:30] @ w1 + b1)
    weight, bias = fit_last_layer(features, y[:30], 3)
    model.load_state_dict({**model.state_dict(), "dense_1.weight": weight, "dense_1.bias": bias})
    return model, (x[:30], y[:30]), x[30:], features


def test_representer_scores_sum_to_the_logits_without_bias(network):
    model, train, test_x, features = network
    result = representer_scores(model, cross_entropy, train, test_x, l2=L2)
    assert result.scores.shape == (5, 30, 3)
    expected_alpha = -(softmax(model(train[0]).numpy()) - np.eye(3)[train[1]]) / (2 * L2 * 30)
    assert_close(result.alpha, expected_alpha, rtol=1e-12)
    w1, b1 = (p.numpy() for p in model.layers[0].parameters())
    assert_close(result.scores, expected_alpha[None] * (np.tanh(test_x @ w1 + b1) @ features.T)[:, :, None],
                 rtol=1e-12)
    assert result.weight_residual < 1e-9
    logits = model(test_x).numpy()
    assert_close(result.scores.sum(axis=1), logits - model.layers[1].bias.numpy(), rtol=1e-9)
    # the bias is not part of the decomposition, and the wrong penalty breaks it
    assert not np.allclose(result.scores.sum(axis=1), logits, atol=1e-3)
    wrong = representer_scores(model, cross_entropy, train, test_x, l2=2 * L2)
    assert not np.allclose(wrong.scores.sum(axis=1), logits - model.layers[1].bias.numpy(), atol=1e-3)
    assert wrong.weight_residual > 0.1


def test_representer_errors(network):
    model, train, test_x, _ = network
    with pytest.raises(TypeError, match="last layer is Dense.*got ReLU"):
        representer_scores(nn.Sequential(nn.Dense(3), nn.ReLU()), cross_entropy, train, test_x, l2=L2)
    with pytest.raises(ValueError, match="has an activation"):
        representer_scores(nn.Sequential(nn.Dense(3, activation="softmax")), cross_entropy, train, test_x, l2=L2)
    with pytest.raises(ValueError, match="l2 must be a number > 0"):
        representer_scores(model, cross_entropy, train, test_x, l2=0.0)
    with pytest.raises(ShapeError, match="same leading"):
        representer_scores(model, cross_entropy, (train[0], train[1][:4]), test_x, l2=L2)


# -- Shapley values ----------------------------------------------------------------------------------


def knn_utility(x, y, subset, x_test, y_test, k):
    """(1/K) sum over the min(K, |S|) nearest members of S of 1[label = test label], averaged over
    the test points."""
    subset = list(subset)
    if not subset:
        return 0.0
    total = 0.0
    for point, label in zip(x_test, y_test):
        distances = ((x[subset] - point) ** 2).sum(axis=1)
        nearest = np.array(subset)[np.argsort(distances, kind="stable")[:k]]
        total += (y[nearest] == label).sum() / k
    return total / len(x_test)


def brute_force_shapley(n, utility):
    """phi_i = sum over S not holding i of |S|! (n - |S| - 1)! / n! (U(S + i) - U(S))."""
    values = np.zeros(n)
    cache = {}

    def u(members):
        key = tuple(sorted(members))
        if key not in cache:
            cache[key] = utility(key)
        return cache[key]

    for i in range(n):
        others = [j for j in range(n) if j != i]
        for size in range(n):
            weight = math.factorial(size) * math.factorial(n - size - 1) / math.factorial(n)
            for subset in itertools.combinations(others, size):
                values[i] += weight * (u(subset + (i,)) - u(subset))
    return values


@pytest.fixture
def points():
    rng = np.random.default_rng(4)
    return rng.normal(size=(8, 3)), rng.integers(0, 2, 8), rng.normal(size=(3, 3)), rng.integers(0, 2, 3)


@pytest.mark.parametrize("k", [1, 3, 10])
def test_knn_shapley_equals_enumeration(points, k):
    x, y, x_test, y_test = points
    per_test = knn_shapley(x, y, x_test, y_test, k, average=False)
    assert per_test.shape == (3, 8)
    for t in range(3):
        expected = brute_force_shapley(8, lambda s, t=t: knn_utility(x, y, s, x_test[t:t + 1], y_test[t:t + 1], k))
        assert np.abs(per_test[t] - expected).max() < 1e-10
    values = knn_shapley(x, y, x_test, y_test, k)
    assert_close(values, per_test.mean(axis=0), rtol=1e-12)
    assert abs(values.sum() - knn_utility(x, y, range(8), x_test, y_test, k)) < 1e-12  # efficiency, U(empty) = 0


def test_tmc_shapley_approaches_enumeration(points):
    x, y, x_test, y_test = points
    x, y = x[:6], y[:6]
    calls = []

    def fit_and_score(x_subset, y_subset, x_val, y_val):  # the 3-NN utility of the subset
        calls.append(len(x_subset))
        indices = [int(np.flatnonzero((x == row).all(axis=1))[0]) for row in x_subset]
        return knn_utility(x, y, indices, x_val, y_val, 3)

    expected = brute_force_shapley(6, lambda s: knn_utility(x, y, s, x_test, y_test, 3))
    result = tmc_data_shapley((x, y), (x_test, y_test), fit_and_score, n_permutations=1500, tolerance=0.0, seed=0)
    assert np.abs(result.values - expected).max() < 0.02
    assert np.all(np.abs(result.values - expected) < 5 * result.standard_errors + 1e-12)
    full = knn_utility(x, y, range(6), x_test, y_test, 3)
    assert abs(result.values.sum() - full) < 1e-12  # efficiency: U(all) - U(empty), U(empty) = 0
    untruncated_calls = len(calls)
    calls.clear()
    truncated = tmc_data_shapley((x, y), (x_test, y_test), fit_and_score, n_permutations=1500, tolerance=0.2,
                                 seed=0)
    assert len(calls) < untruncated_calls
    assert np.abs(truncated.values - expected).max() < 0.1


def test_shapley_errors(points):
    x, y, x_test, y_test = points
    with pytest.raises(ValueError, match="k must be an integer >= 1"):
        knn_shapley(x, y, x_test, y_test, 0)
    with pytest.raises(ShapeError, match="3 features, test inputs 2"):
        knn_shapley(x, y, x_test[:, :2], y_test, 1)
    with pytest.raises(ValueError, match="n_permutations must be an integer >= 1"):
        tmc_data_shapley((x, y), (x_test, y_test), lambda *a: 0.0, n_permutations=0)
    with pytest.raises(TypeError, match="must return one number"):
        tmc_data_shapley((x, y), (x_test, y_test), lambda *a: np.zeros(2), n_permutations=2)


def test_readme_example():
    printed, _ = run_readme_section("Training-data attribution")
    assert printed.splitlines() == ["(2, 40)", "True", "True", "True"]
