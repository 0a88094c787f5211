"""Sample and class weights in the fit loop: Keras's ``sample_weight``, ``class_weight``
and ``weighted_metrics``.

A weighted mini-batch of m samples costs

    J = (1/m) sum_i w_i L_i

(``weight_normalization="batch_size"``, the default): the weighted sum over the batch size,
as Keras 3's default ``"sum_over_batch_size"`` reduction computes it, so a sample of weight
2 counts as two copies of itself and weights all 1 give the unweighted mean. With
``"sum_of_weights"`` the cost is sum_i w_i L_i / sum_i w_i instead, as PyTorch's
``CrossEntropyLoss(weight=...)`` averages (its weights being class weights).

A class weight c_k multiplies the weight of every sample of class k (its integer label, the
argmax of a one-hot row, a 0/1 label rounded); classes left out of a ``class_weight`` dict
weigh 1, and class and sample weights multiply.

A weighted metric is the weighted mean of per-sample values v_i over the epoch,
sum_i w_i v_i / sum_i w_i (Keras's ``weighted_metrics``).
"""

from __future__ import annotations

import copy
import functools
import inspect

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.train.epoch_metric import EpochMetric

__all__ = ["NORMALIZATIONS", "PER_SAMPLE_METRICS", "WeightedMean", "class_indices", "class_weight_table",
           "check_weights", "get_weighted_metric", "per_sample_loss"]

NORMALIZATIONS = ("batch_size", "sum_of_weights")

REGRESSION_LOSSES = (
    F.mean_squared_error, F.mean_absolute_error, F.huber, F.smooth_l1, F.log_cosh, F.poisson,
    F.poisson_nll_loss, F.mean_squared_logarithmic_error, F.mean_absolute_percentage_error,
    F.cosine_similarity_loss, F.kl_divergence,
)
"""Losses of real-valued targets, which have no classes for a ``class_weight``."""


def check_weights(weights, n: int, where: str) -> np.ndarray:
    """``weights`` as a 1-d array of ``n`` finite values >= 0 (raises naming ``where``)."""
    values = np.asarray(backend.to_numpy(weights))
    if values.ndim == 2 and values.shape[1] == 1:
        values = values[:, 0]
    if values.shape != (n,):
        raise ValueError(f"{where}: sample weights must hold one weight per sample, shape ({n},); "
                         f"got shape {values.shape}")
    if not np.issubdtype(values.dtype, np.number) or values.dtype.kind == "c":
        raise ValueError(f"{where}: sample weights must be real numbers; got dtype {values.dtype}")
    if not np.isfinite(values).all():
        raise ValueError(f"{where}: sample weights must be finite; found {values[~np.isfinite(values)][0]} "
                         f"at sample {int(np.argmax(~np.isfinite(values)))}")
    if (values < 0).any():
        first = int(np.argmax(values < 0))
        raise ValueError(f"{where}: sample weights must be >= 0; found {values[first]} at sample {first}")
    return values


def class_weight_table(class_weight, classes: int, where: str) -> np.ndarray:
    """The weight of each of ``classes`` classes from a ``{class: weight}`` dict (missing
    classes weigh 1) or a sequence of one weight per class."""
    table = np.ones(classes)
    if isinstance(class_weight, dict):
        for key, value in class_weight.items():
            if isinstance(key, bool) or not isinstance(key, (int, np.integer)) or not 0 <= key < classes:
                raise ValueError(f"{where}: class_weight names class {key!r}, but the model's {classes} "
                                 f"outputs give classes 0 to {classes - 1}")
            table[int(key)] = value
    else:
        values = np.asarray(backend.to_numpy(class_weight), dtype=np.float64)
        if values.shape != (classes,):
            raise ValueError(f"{where}: class_weight must give one weight per class, shape ({classes},) for "
                             f"the model's {classes} classes; got shape {values.shape}")
        table[:] = values
    bad = ~np.isfinite(table) | (table < 0)
    if bad.any():
        raise ValueError(f"{where}: class weights must be finite and >= 0; class {int(np.argmax(bad))} has "
                         f"{table[bad][0]}")
    return table


def class_indices(labels, where: str = "class_indices") -> np.ndarray:
    """Each sample's class: an integer label, the argmax of a one-hot (or soft) row, or a
    0/1 label rounded. Labels of several classes per sample (a sequence's) are refused."""
    labels = np.asarray(backend.to_numpy(labels))
    rows = labels.reshape(len(labels), -1)
    one_per_sample = rows.shape[1] == 1
    one_hot = labels.ndim == 2 and rows.shape[1] > 1 and (
        labels.dtype.kind == "f" or bool(((rows == 0) | (rows == 1)).all() and (rows.sum(axis=1) == 1).all()))
    if not (one_per_sample or one_hot):
        raise ValueError(f"{where}: class weights need one class per sample (integer labels or one-hot rows); "
                         f"got labels of shape {labels.shape}")
    if one_hot:
        return rows.argmax(axis=1)
    if labels.dtype.kind in "iu":
        return rows[:, 0].astype(np.int64)
    return np.rint(rows[:, 0]).astype(np.int64)


def per_sample_loss(loss):
    """``loss`` giving one value per sample (``reduction='none'``), or None when it cannot:
    a function taking a ``reduction`` argument, or a loss module with a ``reduction``
    attribute (copied, sharing its buffers)."""
    if isinstance(getattr(loss, "reduction", None), str) and not inspect.isroutine(loss):
        unreduced = copy.copy(loss)
        unreduced.reduction = "none"
        return unreduced
    try:
        parameters = inspect.signature(loss).parameters
    except (TypeError, ValueError):
        return None
    if "reduction" not in parameters:
        return None
    return functools.partial(loss, reduction="none")


def is_regression_loss(loss) -> bool:
    """Whether ``loss`` is one of :data:`REGRESSION_LOSSES` (maybe with options fixed)."""
    while isinstance(loss, functools.partial):
        loss = loss.func
    return any(loss is known for known in REGRESSION_LOSSES)


def _rows(scores, labels) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(backend.to_numpy(scores)), np.asarray(backend.to_numpy(labels))


def correct(scores, labels) -> np.ndarray:
    """1 per sample classified right (argmax of the scores, a > 0.5 for one output), else 0."""
    scores, labels = _rows(scores, labels)
    if scores.ndim == 1 or scores.shape[-1] == 1:
        return binary_correct(scores, labels)
    return (scores.reshape(len(scores), -1).argmax(axis=1) == class_indices(labels)).astype(np.float64)


def binary_correct(scores, labels) -> np.ndarray:
    """1 per sample where (a > 0.5) equals its 0/1 label, else 0."""
    scores, labels = _rows(scores, labels)
    predicted = scores.reshape(len(scores), -1)[:, 0] > 0.5
    return (predicted == (labels.reshape(len(labels), -1)[:, 0] > 0.5)).astype(np.float64)


def absolute_error(scores, labels) -> np.ndarray:
    """Each sample's mean |a - y| over its values."""
    scores, labels = _rows(scores, labels)
    return np.abs(scores - labels.reshape(scores.shape)).reshape(len(scores), -1).mean(axis=1)


def squared_error(scores, labels) -> np.ndarray:
    """Each sample's mean (a - y)^2 over its values."""
    scores, labels = _rows(scores, labels)
    return np.square(scores - labels.reshape(scores.shape)).reshape(len(scores), -1).mean(axis=1)


def cosine_similarity(scores, labels, eps: float = 1e-12) -> np.ndarray:
    """Each sample's cosine <a, y> / (|a| |y|) along the last axis (Keras's ``CosineSimilarity``
    metric), averaged over its other axes; a zero vector gives 0 (its norm floored at ``eps``)."""
    scores, labels = _rows(scores, labels)
    a = scores.astype(np.float64).reshape(len(scores), -1, scores.shape[-1] if scores.ndim > 1 else 1)
    y = labels.astype(np.float64).reshape(a.shape)
    norms = np.maximum(np.linalg.norm(a, axis=-1) * np.linalg.norm(y, axis=-1), eps)
    return ((a * y).sum(axis=-1) / norms).mean(axis=1)


def log_cosh_error(scores, labels) -> np.ndarray:
    """Each sample's mean log(cosh(a - y)) over its values (Keras's ``LogCoshError``), as
    |d| + log1p(exp(-2|d|)) - log 2, which does not overflow for large differences d."""
    scores, labels = _rows(scores, labels)
    d = np.abs(scores.astype(np.float64) - labels.astype(np.float64).reshape(scores.shape))
    return (d + np.log1p(np.exp(-2 * d)) - np.log(2.0)).reshape(len(scores), -1).mean(axis=1)


PER_SAMPLE_METRICS = {"accuracy": correct, "binary_accuracy": binary_correct, "mae": absolute_error,
                      "mse": squared_error, "cosine_similarity": cosine_similarity, "logcosh": log_cosh_error}


class WeightedMean(EpochMetric):
    """The weighted mean sum_i w_i v_i / sum_i w_i over the epoch of per-sample values
    ``fn(scores, labels) -> v`` (one value per sample)."""

    def __init__(self, fn, name: str):
        self.fn, self.name = fn, name
        self.reset()

    def reset(self) -> None:
        self.total, self.weight = 0.0, 0.0

    def update(self, scores, y_true, weights=None) -> float:
        values = np.asarray(self.fn(scores, y_true), dtype=np.float64)
        if values.shape != (len(values),) or len(values) != len(scores):
            raise ValueError(f"weighted metric {self.name}: expected one value per sample, shape "
                             f"({len(scores)},); got shape {values.shape}")
        weights = np.ones(len(values)) if weights is None else np.asarray(weights, dtype=np.float64)
        batch_total, batch_weight = float(values @ weights), float(weights.sum())
        self.total += batch_total
        self.weight += batch_weight
        return batch_total / batch_weight if batch_weight > 0 else 0.0

    def result(self) -> float:
        return self.total / self.weight if self.weight > 0 else 0.0


def get_weighted_metric(metric) -> tuple[str, EpochMetric]:
    """(``"weighted_" + name``, the metric) for a name in ``PER_SAMPLE_METRICS`` (a
    :class:`WeightedMean`), 'precision', 'recall' or 'f1' (macro averages of a weighted
    confusion matrix), a WeightedMean, an :class:`EpochMetric` that takes sample weights
    (``takes_sample_weight``: ``Precision(average="micro")`` and the like), or a callable
    ``(scores, labels) -> one value per sample``."""
    from lamina.train.metrics import WEIGHTED_EPOCH_METRICS

    if isinstance(metric, WeightedMean):
        return metric.name, metric
    if isinstance(metric, EpochMetric) and getattr(metric, "takes_sample_weight", False):
        return f"weighted_{metric.name}", metric
    if isinstance(metric, str) and metric in WEIGHTED_EPOCH_METRICS:
        made = WEIGHTED_EPOCH_METRICS[metric]()
        return f"weighted_{made.name}", made
    if isinstance(metric, str):
        if metric not in PER_SAMPLE_METRICS:
            raise ValueError(f"Trainer: unknown weighted metric {metric!r}; expected one of "
                             f"{sorted({*PER_SAMPLE_METRICS, *WEIGHTED_EPOCH_METRICS})}, an EpochMetric "
                             "taking sample weights or a callable giving one value per sample")
        return f"weighted_{metric}", WeightedMean(PER_SAMPLE_METRICS[metric], f"weighted_{metric}")
    if isinstance(metric, EpochMetric):
        raise TypeError(f"Trainer: the weighted metric {type(metric).__name__} takes no sample weights; give "
                        "it in metrics= instead")
    if callable(metric):
        name = f"weighted_{getattr(metric, '__name__', 'metric')}"
        return name, WeightedMean(metric, name)
    raise TypeError(f"Trainer: a weighted metric must be a name, a WeightedMean or a callable; "
                    f"got {type(metric).__name__}")
