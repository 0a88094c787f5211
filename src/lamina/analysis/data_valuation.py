"""What each training example is worth: representer points and data Shapley values.

* :func:`representer_scores` (Yeh et al. 2018): for a network ending in a Dense layer
  z = f W + b trained with the mean loss plus the penalty l2 ||W||^2, stationarity in W gives

      W = sum_i f_i^T alpha_i,   alpha_i = -1 / (2 l2 n) dL(z_i, y_i)/dz_i,

  so every test logit splits into one term per training example: f_t W = sum_i alpha_i (f_i . f_t).
* :func:`knn_shapley` (Jia et al. 2019): the exact Shapley values of the training examples for
  the K-nearest-neighbour utility U(S) = (1/K) sum over the min(K, |S|) nearest members of S of
  1[their label = the test label]. With the training examples sorted by distance to the test
  point, a_1 nearest to a_N farthest, and m_j = 1[y_{a_j} = y_test]:

      s_{a_N} = m_N / N,   s_{a_j} = s_{a_{j+1}} + (m_j - m_{j+1}) / K * min(K, j) / j

  (for K > N the utility is additive and s_{a_N} = m_N / K).

* :func:`tmc_data_shapley` (Ghorbani & Zou 2019): truncated Monte Carlo. For random orders of
  the training examples, each example earns its marginal contribution V(first j+1) - V(first j)
  to the score V of a model fitted on the examples before it; once V comes within
  ``tolerance`` |V(all)| of V(all) the rest of that order earns nothing. The values average
  over the orders.

Shapley values are efficient: they sum to U(all) - U(empty) (exactly for KNN-Shapley and for
TMC without truncation, ``tolerance=0``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from lamina import backend
from lamina.analysis.influence import LossFn, _as_input, _check_number, _pair
from lamina.autograd import Tensor, enable_grad, grad, no_grad, tensor
from lamina.errors import ShapeError
from lamina.nn.dense import Dense
from lamina.nn.module import Module, evaluation_mode

__all__ = ["DataShapley", "Representers", "knn_shapley", "representer_scores", "tmc_data_shapley"]


class Representers(NamedTuple):
    """``scores[t, i, c]`` = alpha[i, c] (f_i . f_t), the share of training example i in test
    example t's logit c (their sum over i is f_t W); ``alpha`` (n_train, classes); and
    ``weight_residual`` = ||W - sum_i f_i^T alpha_i|| / ||W||, zero when the last layer is stationary."""

    scores: np.ndarray
    alpha: np.ndarray
    weight_residual: float


class DataShapley(NamedTuple):
    """Monte Carlo Shapley values of the training examples and their standard errors."""

    values: np.ndarray
    standard_errors: np.ndarray


# -- representer points ----------------------------------------------------------------------------------


def _last_dense(model: Module, last_layer: Module | None, fn: str) -> Dense:
    if not isinstance(model, Module):
        raise TypeError(f"{fn}: expected a lamina Module, got {type(model).__name__}")
    layer = last_layer
    if layer is None:
        layers = getattr(model, "layers", None)
        layer = model if isinstance(model, Dense) else (layers[-1] if layers else None)
    if not isinstance(layer, Dense):
        raise TypeError(f"{fn}: representer points need a model whose last layer is Dense (z = f W + b); got "
                        f"{type(layer).__name__} (pass last_layer= for a model that is not a Sequential)")
    if layer.activation is not None:
        raise ValueError(f"{fn}: the last Dense layer has an activation; representer points decompose its "
                         "pre-activation logits: use Dense(units) and put the activation into loss_fn")
    return layer


def _features_and_logits(model: Module, layer: Dense, x: np.ndarray, fn: str) -> tuple[np.ndarray, np.ndarray]:
    seen = {}

    def keep(module, inputs, output):
        seen["features"], seen["logits"] = inputs[0], output

    handle = layer.register_forward_hook(keep)
    try:
        with no_grad(), evaluation_mode(model):
            output = model(_as_input(x, layer.weight.data.dtype))
    finally:
        handle.remove()
    if "logits" not in seen or seen["logits"] is not output:
        raise ValueError(f"{fn}: the model's output is not the output of its last Dense layer")
    features = seen["features"]
    features = backend.to_numpy(features.data if isinstance(features, Tensor) else features).astype(np.float64)
    if features.ndim != 2:
        raise ShapeError(f"{fn}: the last Dense layer's input has shape {features.shape}; expected (batch, features)")
    return features, backend.to_numpy(output.data).astype(np.float64)


def representer_scores(model: Module, loss_fn: LossFn, train_data, test_x, l2: float,
                       last_layer: Module | None = None) -> Representers:
    """Representer point selection (Yeh et al. 2018) for ``model`` ending in a Dense layer
    z = f W + b (the last of a Sequential, or ``last_layer``) trained with the mean of
    ``loss_fn(logits, y)`` plus l2 ||W||^2: alpha_i = -1 / (2 l2 n) dL(z_i, y_i)/dz_i and
    scores[t, i, c] = alpha_i[c] (f_i . f_t).

    At a stationary point of that objective in W, the scores summed over i equal the test
    logits minus the bias, z_t - b; ``weight_residual`` says how far W is from it (fine-tune
    the last layer to convergence first)."""
    fn = "representer_scores"
    l2 = _check_number(l2, fn, "l2", 0, True)
    x_train, y_train = _pair(train_data, fn, "train_data")
    layer = _last_dense(model, last_layer, fn)
    f_train, z_train = _features_and_logits(model, layer, x_train, fn)
    test_x = backend.to_numpy(test_x.data) if isinstance(test_x, Tensor) else np.asarray(test_x)
    f_test, _ = _features_and_logits(model, layer, test_x, fn)
    logits = tensor(z_train, requires_grad=True, dtype=layer.weight.data.dtype)
    with enable_grad():
        cost = loss_fn(logits, y_train)
        if not isinstance(cost, Tensor) or cost.data.size != 1:
            raise ValueError(f"{fn}: loss_fn must return a scalar Tensor (the mean loss over the batch)")
        (mean_gradient,) = grad(cost, [logits])
    alpha = -backend.to_numpy(mean_gradient).astype(np.float64) / (2 * l2)  # the mean's gradient is (1/n) dL_i/dz_i
    weight = backend.to_numpy(layer.weight.data).astype(np.float64)
    residual = np.linalg.norm(weight - f_train.T @ alpha) / max(np.linalg.norm(weight), 1e-300)
    scores = alpha[None, :, :] * (f_test @ f_train.T)[:, :, None]
    return Representers(scores, alpha, float(residual))


# -- Shapley values ----------------------------------------------------------------------------------------


def knn_shapley(x_train, y_train, x_test, y_test, k: int, average: bool = True) -> np.ndarray:
    """Exact Shapley values of the training examples for the K-nearest-neighbour classifier's
    utility (Jia et al. 2019), in O(N log N) per test point: (n_train,) averaged over the test
    points, or (n_test, n_train) with ``average=False``. Distances are Euclidean over the
    flattened inputs; ties keep the training order."""
    fn = "knn_shapley"
    x_train, y_train = _pair((x_train, y_train), fn, "the training data")
    x_test, y_test = _pair((x_test, y_test), fn, "the test data")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{fn}: k must be an integer >= 1, got {k!r}")
    train = x_train.reshape(len(x_train), -1).astype(np.float64)
    test = x_test.reshape(len(x_test), -1).astype(np.float64)
    if train.shape[1] != test.shape[1]:
        raise ShapeError(f"{fn}: training inputs have {train.shape[1]} features, test inputs {test.shape[1]}")
    n = len(train)
    distances = ((test[:, None, :] - train[None, :, :]) ** 2).sum(axis=2)
    order = np.argsort(distances, axis=1, kind="stable")
    match = (y_train[order] == y_test[:, None]).astype(np.float64)
    rank = np.arange(1, n + 1)
    steps = (match[:, :-1] - match[:, 1:]) / k * np.minimum(k, rank[:-1]) / rank[:-1]
    sorted_values = np.empty_like(match)
    sorted_values[:, -1] = match[:, -1] * min(k, n) / (k * n)  # m_N / N when K <= N
    sorted_values[:, :-1] = sorted_values[:, -1:] + np.cumsum(steps[:, ::-1], axis=1)[:, ::-1]
    values = np.empty_like(sorted_values)
    np.put_along_axis(values, order, sorted_values, axis=1)
    return values.mean(axis=0) if average else values


def tmc_data_shapley(train_data, val_data, fit_and_score: Callable, n_permutations: int = 100,
                     tolerance: float = 0.01, seed: int | None = 0) -> DataShapley:
    """Truncated Monte Carlo data Shapley (Ghorbani & Zou 2019): the mean, over
    ``n_permutations`` random orders, of each training example's marginal contribution to
    ``fit_and_score(x_subset, y_subset, x_val, y_val)`` (a model fitted on the subset, scored on
    ``val_data``; it must also score the empty subset). An order stops adding once the score is
    within ``tolerance`` |V(all)| of V(all), the rest earning 0; ``tolerance=0`` never truncates
    (then each order's contributions sum to V(all) - V(empty)). Returns values and standard errors."""
    fn = "tmc_data_shapley"
    x, y = _pair(train_data, fn, "train_data")
    x_val, y_val = _pair(val_data, fn, "val_data")
    if isinstance(n_permutations, bool) or not isinstance(n_permutations, (int, np.integer)) or n_permutations < 1:
        raise ValueError(f"{fn}: n_permutations must be an integer >= 1, got {n_permutations!r}")
    tolerance = _check_number(tolerance, fn, "tolerance", 0, False)

    def score(indices) -> float:
        value = fit_and_score(x[indices], y[indices], x_val, y_val)
        if not np.isscalar(value) and np.ndim(value) != 0:
            raise TypeError(f"{fn}: fit_and_score must return one number, got {type(value).__name__}")
        return float(value)

    n = len(x)
    full, empty = score(np.arange(n)), score(np.arange(0))
    rng = np.random.default_rng(seed)
    contributions = np.zeros((n_permutations, n))
    for t in range(n_permutations):
        order = rng.permutation(n)
        previous = empty
        for j, index in enumerate(order):
            if abs(full - previous) < tolerance * abs(full):
                break
            current = full if j == n - 1 else score(order[:j + 1])
            contributions[t, index] = current - previous
            previous = current
    spread = contributions.std(axis=0, ddof=1) / np.sqrt(n_permutations) if n_permutations > 1 else np.full(n, np.nan)
    return DataShapley(contributions.mean(axis=0), spread)
