"""Classification metrics on NumPy arrays of predictions and labels.

Top-k error (course notes, top-1 and top-5 error): a sample counts as wrong unless its
true class is among the k classes with the highest scores; top-1 error is 1 - accuracy.
"""

from __future__ import annotations

import numpy as np

from lamina.errors import ShapeError


def _labels(y_true: np.ndarray) -> np.ndarray:
    y_true = np.asarray(y_true)
    if y_true.ndim == 2 and y_true.shape[1] > 1:  # one-hot rows
        return y_true.argmax(axis=1)
    return y_true.reshape(len(y_true)).astype(np.int64)


def top_k_accuracy(scores: np.ndarray, y_true: np.ndarray, k: int = 5) -> float:
    """Fraction of samples whose true class is among the ``k`` highest scores."""
    scores = np.asarray(scores)
    labels = _labels(y_true)
    if scores.ndim != 2 or len(scores) != len(labels):
        raise ShapeError(f"top_k_accuracy: scores of shape {scores.shape} for {len(labels)} labels; "
                         "expected (samples, classes)")
    k = min(k, scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def accuracy(scores: np.ndarray, y_true: np.ndarray) -> float:
    """Fraction classified right: argmax of the scores for several classes, a > 0.5 for one."""
    scores = np.asarray(scores)
    if scores.ndim == 1 or scores.shape[-1] == 1:
        return binary_accuracy(scores, y_true)
    return float((scores.argmax(axis=-1) == _labels(y_true)).mean())


def binary_accuracy(probabilities: np.ndarray, y_true: np.ndarray, threshold: float = 0.5) -> float:
    """Fraction of samples where (a > threshold) equals the 0/1 label."""
    predicted = np.asarray(probabilities).reshape(-1) > threshold
    return float((predicted == (np.asarray(y_true).reshape(-1) > 0.5)).mean())


def top_k_error(scores: np.ndarray, y_true: np.ndarray, k: int = 5) -> float:
    return 1.0 - top_k_accuracy(scores, y_true, k)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Counts C[i, j] of samples of true class i predicted as class j."""
    y_true = _labels(y_true)
    y_pred = np.asarray(y_pred)
    if y_pred.ndim == 2:
        y_pred = y_pred.argmax(axis=1)
    n = int(num_classes or max(y_true.max(initial=-1), y_pred.max(initial=-1)) + 1)
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred.astype(np.int64)), 1)
    return matrix


METRICS = {
    "accuracy": accuracy,
    "binary_accuracy": binary_accuracy,
    "top5_accuracy": lambda s, y: top_k_accuracy(s, y, 5),
    "top1_error": lambda s, y: top_k_error(s, y, 1),
    "top5_error": lambda s, y: top_k_error(s, y, 5),
}


def get_metric(metric):
    """A metric by name (see ``METRICS``) or a callable ``(scores, labels) -> float``."""
    if callable(metric):
        return getattr(metric, "__name__", "metric"), metric
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {sorted(METRICS)} or a callable")
    return metric, METRICS[metric]
