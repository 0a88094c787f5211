"""Linear probes: is a property of the input linearly readable from a layer's activations?

A probe is a linear map fitted on activations x (n, d) (flattened after the first axis, each
feature standardised with the training mean and standard deviation):

* ``kind='logistic'``: multinomial logistic regression, p(y | x) = softmax(x W + b), fitted by
  L-BFGS on the mean cross-entropy + l2 / 2 ||W||^2; its score is the accuracy.
* ``kind='ridge'``: least squares with an l2 penalty, W = (X^T X + l2 n I)^-1 X^T y on centred
  X and y (targets (n,) or (n, k)); its score is R^2 = 1 - SS_res / SS_tot.

:func:`probe_layers` fits one probe per layer on a training split and scores it on the rest:
the layers where the test score rises are where the model computes the property.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize

from lamina.errors import ShapeError

__all__ = ["KINDS", "LinearProbe", "ProbeScore", "probe_layers", "train_probe"]

KINDS = ("logistic", "ridge")


def _rows(x, who: str) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim < 2:
        raise ShapeError(f"{who}: expected activations (samples, features...), got shape {x.shape}")
    return x.reshape(x.shape[0], -1)


@dataclass
class LinearProbe:
    """A fitted probe: ``weight`` (d, k), ``bias`` (k,) on standardised features; ``classes``
    (logistic) maps output columns to labels."""

    kind: str
    weight: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    scale: np.ndarray
    classes: np.ndarray | None = None
    single_target: bool = False

    def decision(self, activations) -> np.ndarray:
        """x W + b on standardised features: logits (logistic) or predictions (ridge), (n, k)."""
        x = _rows(activations, "LinearProbe")
        if x.shape[1] != self.mean.shape[0]:
            raise ShapeError(f"LinearProbe: activations with {x.shape[1]} features; the probe was fitted on "
                             f"{self.mean.shape[0]}")
        return ((x - self.mean) / self.scale) @ self.weight + self.bias

    def predict(self, activations) -> np.ndarray:
        """Predicted labels (logistic) or targets (ridge)."""
        out = self.decision(activations)
        if self.kind == "logistic":
            return self.classes[out.argmax(axis=1)]
        return out[:, 0] if self.single_target else out

    def score(self, activations, labels) -> float:
        """Accuracy (logistic) or R^2 (ridge) on ``labels``."""
        predicted = self.predict(activations)
        labels = np.asarray(labels)
        if self.kind == "logistic":
            return float((predicted == labels).mean())
        residual = ((labels - predicted) ** 2).sum()
        total = ((labels - labels.mean(axis=0)) ** 2).sum()
        return float(1.0 - residual / total) if total > 0 else 0.0


def _fit_logistic(x: np.ndarray, labels: np.ndarray, l2: float, max_iter: int):
    classes, y = np.unique(labels, return_inverse=True)
    if len(classes) < 2:
        raise ValueError(f"train_probe: logistic probes need two classes or more, the labels hold {classes}")
    n, d = x.shape
    k = len(classes)
    onehot = np.eye(k)[y]

    def cost(theta):
        weight, bias = theta[:d * k].reshape(d, k), theta[d * k:]
        z = x @ weight + bias
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        error = (np.exp(log_p) - onehot) / n
        value = -(onehot * log_p).sum() / n + 0.5 * l2 * (weight ** 2).sum()
        gradient = np.concatenate([(x.T @ error + l2 * weight).ravel(), error.sum(axis=0)])
        return value, gradient

    result = minimize(cost, np.zeros(d * k + k), jac=True, method="L-BFGS-B", options={"maxiter": max_iter})
    return result.x[:d * k].reshape(d, k), result.x[d * k:], classes


def _fit_ridge(x: np.ndarray, targets: np.ndarray, l2: float):
    y = np.asarray(targets, dtype=np.float64)
    y = y[:, None] if y.ndim == 1 else y.reshape(y.shape[0], -1)
    offset = y.mean(axis=0)
    n, d = x.shape
    weight = np.linalg.solve(x.T @ x + l2 * n * np.eye(d), x.T @ (y - offset))
    return weight, offset            # x is centred: the bias is the targets' mean


def train_probe(activations, labels, kind: str = "logistic", l2: float = 1e-3, max_iter: int = 500) -> LinearProbe:
    """A linear probe from ``activations`` (n, ...) to ``labels`` (n,) (classes for 'logistic',
    numbers, or (n, k), for 'ridge'); ``l2`` is the weight penalty (see the module docstring)."""
    who = "train_probe"
    if kind not in KINDS:
        raise ValueError(f"{who}: kind must be one of {KINDS}, got {kind!r}")
    x = _rows(activations, who)
    labels = np.asarray(labels)
    if labels.shape[0] != x.shape[0]:
        raise ShapeError(f"{who}: {x.shape[0]} activation rows but {labels.shape[0]} labels")
    if l2 < 0:
        raise ValueError(f"{who}: l2 must be >= 0, got {l2}")
    mean, scale = x.mean(axis=0), x.std(axis=0)
    scale = np.where(scale > 0, scale, 1.0)
    standardised = (x - mean) / scale
    if kind == "logistic":
        weight, bias, classes = _fit_logistic(standardised, labels, l2, max_iter)
        return LinearProbe(kind, weight, bias, mean, scale, classes)
    weight, bias = _fit_ridge(standardised, labels, l2)
    return LinearProbe(kind, weight, bias, mean, scale, single_target=labels.ndim == 1)


@dataclass(frozen=True)
class ProbeScore:
    """A probe's score on the data it was fitted on and on held-out data."""

    train: float
    test: float


def probe_layers(activations: Mapping[str, np.ndarray], labels, kind: str = "logistic", test_fraction: float = 0.3,
                 seed: int = 0, **options) -> dict[str, ProbeScore]:
    """One probe per layer (``activations``: name -> (n, ...), e.g. a residual stream at one position),
    fitted on a random ``1 - test_fraction`` of the samples (the same split for every layer) and scored
    on the rest. ``options`` go to :func:`train_probe`."""
    who = "probe_layers"
    labels = np.asarray(labels)
    n = labels.shape[0]
    if not 0 < test_fraction < 1:
        raise ValueError(f"{who}: test_fraction must be in (0, 1), got {test_fraction}")
    order = np.random.default_rng(seed).permutation(n)
    held_out = max(1, int(round(test_fraction * n)))
    test, train = order[:held_out], order[held_out:]
    scores = {}
    for name, values in activations.items():
        values = np.asarray(values)
        if values.shape[0] != n:
            raise ShapeError(f"{who}: {name!r} has {values.shape[0]} rows; there are {n} labels")
        probe = train_probe(values[train], labels[train], kind, **options)
        scores[name] = ProbeScore(probe.score(values[train], labels[train]), probe.score(values[test], labels[test]))
    return scores
