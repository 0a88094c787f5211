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

Every metric takes sample weights as Keras's do (:meth:`_Mean.update`): with
per-sample (or per-step) values v and weights w, the epoch's value is
sum_n mean(v_n w_n) / sum_n mean(w_n), each mean over the sample's steps; Precision and
Recall count w for each prediction, AUC weighs each pair of predictions by the product of
their weights. A masked sequence output gives the mask as the weights
(times the sample weights of ``weighted_metrics``): a masked step counts for nothing.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.errors import ShapeError
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


def _binary_hits(scores: np.ndarray, labels: np.ndarray, threshold: float) -> np.ndarray:
    """Per sample (per step): the fraction of its last axis where (y_pred > threshold) is the label."""
    hits = ((scores > threshold) == (labels.reshape(scores.shape) > 0.5)).astype(np.float64)
    return hits if hits.ndim == 1 else hits.mean(axis=-1)


def _categorical_hits(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    if labels.shape != scores.shape:        # integer labels given anyway: compare with them
        return _sparse_hits(scores, labels)
    return (scores.argmax(axis=-1) == labels.argmax(axis=-1)).astype(np.float64)


def _sparse_hits(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    return (scores.argmax(axis=-1) == labels.reshape(scores.shape[:-1])).astype(np.float64)


def _errors(scores: np.ndarray, labels: np.ndarray, power: int) -> np.ndarray:
    """|y_pred - y_true|^power, averaged over the last axis of a sample (or step) of several values."""
    errors = np.abs(scores - labels.reshape(scores.shape)) ** power
    return errors if errors.ndim == 1 else errors.mean(axis=-1)


def binary_accuracy(y_pred, y_true, threshold: float = 0.5) -> float:
    """The fraction of values where (y_pred > threshold) equals the 0/1 label."""
    return float(_binary_hits(*_arrays(y_pred, y_true), threshold).mean())


def categorical_accuracy(y_pred, y_true) -> float:
    """The fraction of rows whose highest score is the position of the one-hot label's 1."""
    return float(_categorical_hits(*_arrays(y_pred, y_true)).mean())


def sparse_categorical_accuracy(y_pred, y_true) -> float:
    """The fraction of rows whose highest score is at the integer label."""
    return float(_sparse_hits(*_arrays(y_pred, y_true)).mean())


def _top_k(scores: np.ndarray, labels: np.ndarray, k: int) -> np.ndarray:
    k = min(k, scores.shape[-1])
    top = np.argpartition(-scores, k - 1, axis=-1)[..., :k]
    return (top == labels[..., None]).any(axis=-1).astype(np.float64)


def _as_weights(weights, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keras's ``reduce_to_samplewise_values``: values averaged down to the weights' rank
    (or weights squeezed to the values'), weights broadcast to the values' shape."""
    weights = np.asarray(weights, dtype=np.float64)
    while weights.ndim > max(values.ndim, 1) and weights.shape[-1] == 1:
        weights = weights[..., 0]
    if values.ndim > weights.ndim:
        values = values.mean(axis=tuple(range(weights.ndim, values.ndim)))
    return values, np.broadcast_to(weights, values.shape)


class _Mean(MeanMetric):
    """Per-sample (or per-step) values averaged over the epoch's samples, optionally weighted
    (Keras's ``Mean``: sum_n mean(v_n w_n) / sum_n mean(w_n)), named as Keras logs it."""

    function = staticmethod(lambda scores, labels: np.zeros(len(scores)))
    default_name = "metric"
    takes_sample_weight = True

    def __init__(self, name: str | None = None):
        super().__init__(self._compute, name or self.default_name)

    def values(self, y_pred, y_true) -> np.ndarray:
        """The metric of each sample (each step of a sequence output)."""
        return np.asarray(self.function(*_arrays(y_pred, y_true)), dtype=np.float64)

    def _compute(self, y_pred, y_true) -> float:
        return float(self.values(y_pred, y_true).mean())

    def update(self, y_pred, y_true, sample_weight=None) -> float:
        values = self.values(y_pred, y_true)
        if values.ndim == 0:                        # one value for the batch: each sample's
            values = np.full(len(backend.to_numpy(y_pred)), float(values))
        if sample_weight is None:
            totals, counts = values.reshape(len(values), -1).mean(axis=1), np.ones(len(values))
        else:
            values, weights = _as_weights(sample_weight, values)
            totals = (values * weights).reshape(len(values), -1).mean(axis=1)
            counts = weights.reshape(len(values), -1).mean(axis=1)
        self.total += float(totals.sum())
        self.count += float(counts.sum())
        return float(totals.sum() / max(counts.sum(), 1e-12))

    def result(self) -> float:
        return self.total / self.count if self.count else 0.0


class BinaryAccuracy(_Mean):
    default_name = "binary_accuracy"

    def __init__(self, name: str | None = None, threshold: float = 0.5):
        self.threshold = float(threshold)
        super().__init__(name)

    def values(self, y_pred, y_true) -> np.ndarray:
        return _binary_hits(*_arrays(y_pred, y_true), self.threshold)


class CategoricalAccuracy(_Mean):
    default_name = "categorical_accuracy"
    function = staticmethod(_categorical_hits)


class SparseCategoricalAccuracy(_Mean):
    default_name = "sparse_categorical_accuracy"
    function = staticmethod(_sparse_hits)


class TopKCategoricalAccuracy(_Mean):
    """Whether the one-hot label's class is among the ``k`` highest scores."""

    default_name = "top_k_categorical_accuracy"

    def __init__(self, k: int = 5, name: str | None = None):
        self.k = int(k)
        super().__init__(name)

    def values(self, y_pred, y_true) -> np.ndarray:
        scores, labels = _arrays(y_pred, y_true)
        return _top_k(scores, labels.argmax(axis=-1), self.k)


class SparseTopKCategoricalAccuracy(TopKCategoricalAccuracy):
    """Whether the integer label is among the ``k`` highest scores."""

    default_name = "sparse_top_k_categorical_accuracy"

    def values(self, y_pred, y_true) -> np.ndarray:
        scores, labels = _arrays(y_pred, y_true)
        return _top_k(scores, labels.reshape(scores.shape[:-1]).astype(np.int64), self.k)


class MeanAbsoluteError(_Mean):
    default_name = "mean_absolute_error"
    function = staticmethod(lambda scores, labels: _errors(scores, labels, 1))


class MeanSquaredError(_Mean):
    default_name = "mean_squared_error"
    function = staticmethod(lambda scores, labels: _errors(scores, labels, 2))


class RootMeanSquaredError(MeanSquaredError):
    """sqrt of the epoch's mean squared error."""

    default_name = "root_mean_squared_error"

    def result(self) -> float:
        return float(np.sqrt(super().result()))


class _Counts(EpochMetric):
    """True and false positives and negatives of ``y_pred > thresholds`` over the epoch."""

    default_name = "metric"
    takes_sample_weight = True

    def __init__(self, thresholds: float | None = None, name: str | None = None):
        self.threshold = 0.5 if thresholds is None else float(thresholds)
        self.name = name or self.default_name
        self.reset()

    def reset(self) -> None:
        self.tp = self.fp = self.fn = 0

    def update(self, y_pred, y_true, sample_weight=None) -> float:
        scores, labels = _arrays(y_pred, y_true)
        if labels.size == scores.size:
            labels = labels.reshape(scores.shape)
        predicted, actual = scores > self.threshold, labels > 0.5
        weights = np.ones(scores.shape)
        if sample_weight is not None:
            given = np.asarray(sample_weight, dtype=np.float64)
            weights = np.broadcast_to(given.reshape(given.shape + (1,) * (scores.ndim - given.ndim)), scores.shape)
        self.tp += float((weights * (predicted & actual)).sum())
        self.fp += float((weights * (predicted & ~actual)).sum())
        self.fn += float((weights * (~predicted & actual)).sum())
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


class AUC(EpochMetric):
    """Area under the ROC curve, as Keras's ``AUC`` computes it for binary and multi-label
    outputs, but exact (lamina's :class:`lamina.train.AUC`, the pair-counting formula) where
    Keras approximates it on ``num_thresholds`` thresholds.

    Every score is one prediction, as Keras's: the outputs, labels and sample weights are
    flattened together (weights broadcast over the trailing axes, so a masked sequence output's
    step weights drop its masked steps), unless ``multi_label`` is set: then each class (last
    axis) has its own AUC and the result is their mean, weighted by ``label_weights`` when
    given. ``from_logits`` is accepted for Keras's sake: a sigmoid keeps the order of the
    scores, so the AUC is the same either way."""

    takes_sample_weight = True

    def __init__(self, name: str | None = None, multi_label: bool = False, label_weights=None,
                 from_logits: bool = False):
        self.name = name or "auc"
        self.multi_label, self.from_logits = bool(multi_label), bool(from_logits)
        self.label_weights = None if label_weights is None else np.asarray(label_weights, dtype=np.float64)
        self.reset()

    def reset(self) -> None:
        self.curves: list[_AUC] = []

    def update(self, y_pred, y_true, sample_weight=None) -> float:
        scores, labels = _arrays(y_pred, y_true)
        if labels.size == scores.size:
            labels = labels.reshape(scores.shape)
        if labels.shape != scores.shape:
            raise ShapeError(f"AUC: labels of shape {labels.shape} for outputs of shape {scores.shape}; expected "
                             "one 0/1 label per output")
        weights = None
        if sample_weight is not None:
            given = np.asarray(backend.to_numpy(sample_weight), dtype=np.float64)
            try:
                weights = np.broadcast_to(given.reshape(given.shape + (1,) * (scores.ndim - given.ndim)),
                                          scores.shape)
            except ValueError:
                raise ShapeError(f"AUC: sample_weight of shape {given.shape} does not fit outputs of shape "
                                 f"{scores.shape}") from None
        columns = scores.shape[-1] if self.multi_label and scores.ndim > 1 else 1
        if self.multi_label and scores.ndim < 2:
            raise ShapeError(f"AUC(multi_label=True): expected outputs (samples, labels), got shape {scores.shape}")
        if self.label_weights is not None and self.label_weights.shape != (columns,):
            raise ShapeError(f"AUC: label_weights of shape {self.label_weights.shape} for {columns} labels")
        if not self.curves:
            self.curves = [_AUC() for _ in range(columns)]
        elif len(self.curves) != columns:
            raise ShapeError(f"AUC: a batch of {columns} labels after batches of {len(self.curves)}")
        batch = []
        for j, curve in enumerate(self.curves):
            column = [None if a is None else (a[..., j] if self.multi_label else a).reshape(-1)
                      for a in (scores, labels, weights)]
            batch.append(curve.update(*column))
        return float(np.mean(batch))

    def result(self) -> float:
        if not self.curves:
            raise ValueError("AUC: no samples in this epoch; call update() with scores and labels first")
        values = np.array([curve.result() for curve in self.curves])
        if self.label_weights is None:
            return float(values.mean())
        return float(values @ self.label_weights / self.label_weights.sum())


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

    def values(self, y_pred, y_true) -> np.ndarray:
        scores, labels = _arrays(y_pred, y_true)
        if scores.ndim == 1 or scores.shape[-1] == 1:
            return _binary_hits(scores, labels, 0.5)
        if labels.shape == scores.shape:
            return _categorical_hits(scores, labels)
        return _sparse_hits(scores, labels)


class _Function(_Mean):
    """A callable ``fn(y_true, y_pred)`` in Keras's argument order giving a value per sample."""

    def __init__(self, fn):
        self.fn_of_labels = fn
        super().__init__(getattr(fn, "__name__", "metric"))

    def values(self, y_pred, y_true) -> np.ndarray:
        return np.asarray(backend.to_numpy(self.fn_of_labels(y_true, y_pred)), dtype=np.float64)


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
        return _Function(identifier)
    raise TypeError(f"lamina.keras.metrics.get: expected a metric name, object or callable, got "
                    f"{type(identifier).__name__}")
