"""Keras's metrics, as lamina :class:`~lamina.train.EpochMetric` objects the Trainer reports.

``"accuracy"`` (or ``"acc"``) is resolved from the loss, as Keras does: binary accuracy
(``y_pred > 0.5`` against 0/1 labels) for binary cross-entropy, sparse categorical accuracy
(argmax against integer labels) for sparse categorical cross-entropy, categorical accuracy
(argmax against the argmax of one-hot rows) for categorical cross-entropy; for other losses,
from the shapes (binary for one output per sample, categorical for labels shaped like the
outputs, sparse for integer labels). Values are means over the epoch's
samples. ``Precision`` and ``Recall`` are Keras's: every value of ``y_pred`` above the
threshold 0.5 is a positive prediction, every nonzero value of ``y_true`` a positive label,
counted over the whole epoch (on one-hot rows, that is micro-averaging over the classes).
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.keras import losses
from lamina.train import AUC as _AUC
from lamina.train import EpochMetric, MeanMetric

__all__ = [
    "AUC", "BinaryAccuracy", "CategoricalAccuracy", "MeanAbsoluteError", "MeanSquaredError", "Precision",
    "Recall", "RootMeanSquaredError", "SparseCategoricalAccuracy", "SparseTopKCategoricalAccuracy",
    "TopKCategoricalAccuracy", "binary_accuracy", "categorical_accuracy", "get", "sparse_categorical_accuracy",
]


def _arrays(y_pred, y_true) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(backend.to_numpy(y_pred)), np.asarray(backend.to_numpy(y_true))


def binary_accuracy(y_pred, y_true, threshold: float = 0.5) -> float:
    """The fraction of values where (y_pred > threshold) equals the 0/1 label."""
    scores, labels = _arrays(y_pred, y_true)
    return float(((scores > threshold) == (labels.reshape(scores.shape) > 0.5)).mean())


def categorical_accuracy(y_pred, y_true) -> float:
    """The fraction of rows whose highest score is the position of the one-hot label's 1."""
    scores, labels = _arrays(y_pred, y_true)
    if labels.shape != scores.shape:        # integer labels given anyway: compare with them
        return sparse_categorical_accuracy(scores, labels)
    return float((scores.argmax(axis=-1) == labels.argmax(axis=-1)).mean())


def sparse_categorical_accuracy(y_pred, y_true) -> float:
    """The fraction of rows whose highest score is at the integer label."""
    scores, labels = _arrays(y_pred, y_true)
    return float((scores.argmax(axis=-1) == labels.reshape(scores.shape[:-1])).mean())


def _top_k(scores: np.ndarray, labels: np.ndarray, k: int) -> float:
    k = min(k, scores.shape[-1])
    top = np.argpartition(-scores, k - 1, axis=-1)[..., :k]
    return float((top == labels[..., None]).any(axis=-1).mean())


class _Mean(MeanMetric):
    """A per-batch function averaged over the epoch's samples, named as Keras logs it."""

    function = staticmethod(lambda y_pred, y_true: 0.0)
    default_name = "metric"

    def __init__(self, name: str | None = None):
        super().__init__(self._compute, name or self.default_name)

    def _compute(self, y_pred, y_true) -> float:
        return self.function(y_pred, y_true)


class BinaryAccuracy(_Mean):
    default_name = "binary_accuracy"

    def __init__(self, name: str | None = None, threshold: float = 0.5):
        self.threshold = float(threshold)
        super().__init__(name)

    def _compute(self, y_pred, y_true) -> float:
        return binary_accuracy(y_pred, y_true, self.threshold)


class CategoricalAccuracy(_Mean):
    default_name = "categorical_accuracy"
    function = staticmethod(categorical_accuracy)


class SparseCategoricalAccuracy(_Mean):
    default_name = "sparse_categorical_accuracy"
    function = staticmethod(sparse_categorical_accuracy)


class TopKCategoricalAccuracy(_Mean):
    """Whether the one-hot label's class is among the ``k`` highest scores."""

    default_name = "top_k_categorical_accuracy"

    def __init__(self, k: int = 5, name: str | None = None):
        self.k = int(k)
        super().__init__(name)

    def _compute(self, y_pred, y_true) -> float:
        scores, labels = _arrays(y_pred, y_true)
        return _top_k(scores, labels.argmax(axis=-1), self.k)


class SparseTopKCategoricalAccuracy(TopKCategoricalAccuracy):
    """Whether the integer label is among the ``k`` highest scores."""

    default_name = "sparse_top_k_categorical_accuracy"

    def _compute(self, y_pred, y_true) -> float:
        scores, labels = _arrays(y_pred, y_true)
        return _top_k(scores, labels.reshape(scores.shape[:-1]).astype(np.int64), self.k)


class MeanAbsoluteError(_Mean):
    default_name = "mean_absolute_error"
    function = staticmethod(lambda y_pred, y_true: float(np.abs(np.subtract(*_arrays(y_pred, y_true))).mean()))


class MeanSquaredError(_Mean):
    default_name = "mean_squared_error"
    function = staticmethod(lambda y_pred, y_true: float((np.subtract(*_arrays(y_pred, y_true)) ** 2).mean()))


class RootMeanSquaredError(MeanSquaredError):
    """sqrt of the epoch's mean squared error."""

    default_name = "root_mean_squared_error"

    def result(self) -> float:
        return float(np.sqrt(super().result()))


class _Counts(EpochMetric):
    """True and false positives and negatives of ``y_pred > thresholds`` over the epoch."""

    default_name = "metric"

    def __init__(self, thresholds: float | None = None, name: str | None = None):
        self.threshold = 0.5 if thresholds is None else float(thresholds)
        self.name = name or self.default_name
        self.reset()

    def reset(self) -> None:
        self.tp = self.fp = self.fn = 0

    def update(self, y_pred, y_true) -> float:
        scores, labels = _arrays(y_pred, y_true)
        if labels.size == scores.size:
            labels = labels.reshape(scores.shape)
        predicted, actual = scores > self.threshold, labels > 0.5
        self.tp += int((predicted & actual).sum())
        self.fp += int((predicted & ~actual).sum())
        self.fn += int((~predicted & actual).sum())
        return self.result()

    def result(self) -> float:
        raise NotImplementedError


class Precision(_Counts):
    """TP / (TP + FP) over the epoch (0 when nothing is predicted positive)."""

    default_name = "precision"

    def result(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0


class Recall(_Counts):
    """TP / (TP + FN) over the epoch (0 when no label is positive)."""

    default_name = "recall"

    def result(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0


class AUC(_AUC):
    """Area under the ROC curve of a binary classifier (lamina's exact AUC, not Keras's
    200-threshold approximation)."""

    def __init__(self, name: str | None = None):
        super().__init__()
        self.name = name or "auc"


METRICS = {
    "binary_accuracy": BinaryAccuracy, "categorical_accuracy": CategoricalAccuracy,
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "top_k_categorical_accuracy": TopKCategoricalAccuracy,
    "sparse_top_k_categorical_accuracy": SparseTopKCategoricalAccuracy,
    "mae": MeanAbsoluteError, "mean_absolute_error": MeanAbsoluteError,
    "mse": MeanSquaredError, "mean_squared_error": MeanSquaredError,
    "rmse": RootMeanSquaredError, "root_mean_squared_error": RootMeanSquaredError,
    "auc": AUC, "precision": Precision, "recall": Recall,
}
ACCURACY_NAMES = ("accuracy", "acc")


class _AccuracyByShape(_Mean):
    """Accuracy for a loss that does not say which: binary for one output per sample,
    categorical when the labels are rows like the outputs, sparse otherwise (integer labels)."""

    default_name = "accuracy"

    def _compute(self, y_pred, y_true) -> float:
        scores, labels = _arrays(y_pred, y_true)
        if scores.ndim == 1 or scores.shape[-1] == 1:
            return binary_accuracy(scores, labels)
        if labels.shape == scores.shape:
            return categorical_accuracy(scores, labels)
        return sparse_categorical_accuracy(scores, labels)


def _accuracy_for(loss) -> type[_Mean]:
    """Keras's choice of accuracy for ``compile(metrics=["accuracy"])``: from the loss when it
    is a cross-entropy, else from the shapes of the outputs and labels."""
    if isinstance(loss, losses.BinaryCrossentropy):
        return BinaryAccuracy
    if isinstance(loss, losses.SparseCategoricalCrossentropy):
        return SparseCategoricalAccuracy
    if isinstance(loss, losses.CategoricalCrossentropy):
        return CategoricalAccuracy
    return _AccuracyByShape


def get(identifier, loss=None) -> EpochMetric:
    """An :class:`EpochMetric` from a name (any case: ``"AUC"``, ``"mae"``; ``"accuracy"``
    follows ``loss``), an EpochMetric as it is, or a callable ``fn(y_true, y_pred)`` in
    Keras's argument order (averaged over the samples)."""
    if isinstance(identifier, EpochMetric):
        return identifier
    if isinstance(identifier, str):
        if identifier in ACCURACY_NAMES:
            return _accuracy_for(loss)(name=identifier)
        key = identifier.lower()
        if key in METRICS:
            return METRICS[key](name=key)
        raise ValueError(f"lamina.keras.metrics.get: unknown metric {identifier!r}; expected one of "
                         f"{sorted({*ACCURACY_NAMES, *METRICS})}, a metric object or a callable metric(y_true, y_pred)")
    if callable(identifier):
        name = getattr(identifier, "__name__", "metric")
        return MeanMetric(lambda y_pred, y_true: float(np.mean(backend.to_numpy(identifier(y_true, y_pred)))), name)
    raise TypeError(f"lamina.keras.metrics.get: expected a metric name, object or callable, got "
                    f"{type(identifier).__name__}")
