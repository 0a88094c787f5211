"""Classification metrics on NumPy arrays of predictions and labels.

Top-k error (course notes, top-1 and top-5 error): a sample counts as wrong unless its
true class is among the k classes with the highest scores; top-1 error is 1 - accuracy.

The Trainer reports each metric over a whole epoch through an :class:`EpochMetric`: a mean
of per-batch values for the plain functions (accuracy, top-k error, ...), a confusion
matrix added up over the batches for precision, recall and F1, which do not average over
batches, and the ranking and regression metrics of :mod:`lamina.train.score_metrics`.
:func:`get_metric` resolves them all by name.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.errors import ShapeError
from lamina.train import weighting
from lamina.train.epoch_metric import EpochMetric, MeanMetric
from lamina.train.score_metrics import AUC, AveragePrecision, MeanAbsoluteError, R2Score
from lamina.train.segmentation_metrics import DiceScore, MeanClassAccuracy, MeanIoU, PixelAccuracy


def _labels(y_true: np.ndarray, scores_shape: tuple[int, ...] | None = None) -> np.ndarray:
    """Class ids from labels, whatever their dtype. Given the scores' shape (..., K): labels of
    the scores' full shape are one-hot rows (argmax over the last axis), labels of the scores'
    leading shape are the ids themselves (one per row, e.g. per sequence step). Otherwise
    (N, K > 1) labels are one-hot rows and any other (N, ...) labels give one id per sample."""
    y_true = np.asarray(y_true)
    if scores_shape is not None and len(scores_shape) >= 2:
        if y_true.shape == tuple(scores_shape):
            return y_true.argmax(axis=-1)
        if y_true.shape == tuple(scores_shape[:-1]):
            return y_true.astype(np.int64, copy=False)
    if y_true.ndim == 2 and y_true.shape[1] > 1:  # one-hot rows
        return y_true.argmax(axis=1)
    return y_true.reshape(len(y_true)).astype(np.int64)


def top_k_accuracy(scores: np.ndarray, y_true: np.ndarray, k: int = 5) -> float:
    """Fraction of samples whose true class is among the ``k`` highest scores; ``k`` >= 1, and
    a ``k`` of at least the number of classes counts every sample (scikit-learn's
    ``top_k_accuracy_score``)."""
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"top_k_accuracy: k must be an integer >= 1, got {k!r}")
    scores = np.asarray(scores)
    labels = _labels(y_true, scores.shape)
    if scores.ndim != 2 or labels.shape != (len(scores),):
        raise ShapeError(f"top_k_accuracy: scores of shape {scores.shape} for labels of shape {np.shape(y_true)}; "
                         "expected scores (samples, classes)")
    k = min(int(k), scores.shape[1])
    top = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def accuracy(scores: np.ndarray, y_true: np.ndarray) -> float:
    """Fraction classified right: argmax of the scores for several classes, a > 0.5 for one.

    Labels are class ids of the scores' leading shape (any dtype) or one-hot rows of the
    scores' full shape, so they may label every row of a sample (a sequence's steps: scores
    (N, T, K), labels (N, T)); negative labels (an ``ignore_index`` such as -100 marking
    padding) are left out of the count, and a batch with none counted gives NaN."""
    scores = np.asarray(scores)
    if scores.ndim == 1 or scores.shape[-1] == 1:
        return binary_accuracy(scores, y_true)
    labels = _labels(y_true, scores.shape)
    if labels.shape != scores.shape[:-1]:
        raise ShapeError(f"accuracy: labels of shape {np.shape(y_true)} for scores of shape {scores.shape}; "
                         f"expected class ids of shape {scores.shape[:-1]} or one-hot rows of shape {scores.shape}")
    kept = labels >= 0
    hits = scores.argmax(axis=-1) == labels
    return float(hits[kept].mean()) if kept.any() else float("nan")


def _counted_labels(scores: np.ndarray, y_true: np.ndarray) -> int:
    """The number of labels :func:`accuracy` counts in a batch (its weight in an epoch's mean)."""
    scores = np.asarray(scores)
    if scores.ndim == 1 or scores.shape[-1] == 1:
        return scores.size
    return int(np.count_nonzero(_labels(y_true, scores.shape) >= 0))


accuracy.batch_weight = _counted_labels


def binary_accuracy(probabilities: np.ndarray, y_true: np.ndarray, threshold: float = 0.5) -> float:
    """Fraction of samples where (a > threshold) equals the 0/1 label."""
    predicted = np.asarray(probabilities).reshape(-1) > threshold
    return float((predicted == (np.asarray(y_true).reshape(-1) > 0.5)).mean())


def top_k_error(scores: np.ndarray, y_true: np.ndarray, k: int = 5) -> float:
    return 1.0 - top_k_accuracy(scores, y_true, k)


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int | None = None) -> np.ndarray:
    """Counts C[i, j] of samples of true class i predicted as class j. Predictions are class
    ids, rows of scores (argmax) or, as in :func:`accuracy`, probabilities of class 1 (one
    column, or 1-D floats that are not all whole numbers) thresholded at 0.5."""
    y_true = _labels(y_true)
    y_pred = np.asarray(y_pred)
    if y_pred.ndim == 2 and y_pred.shape[1] == 1:
        y_pred = y_pred[:, 0] > 0.5
    elif y_pred.ndim == 2:
        y_pred = y_pred.argmax(axis=1)
    elif y_pred.dtype.kind == "f" and np.any(y_pred != np.round(y_pred)):
        y_pred = y_pred > 0.5
    y_pred = y_pred.astype(np.int64)
    n = int(num_classes or max(y_true.max(initial=-1), y_pred.max(initial=-1)) + 1)
    matrix = np.zeros((n, n), dtype=np.int64)
    np.add.at(matrix, (y_true, y_pred), 1)
    return matrix


AVERAGES = ("macro", "weighted", "micro", "binary")


class _ConfusionMetric(EpochMetric):
    """Per-class precision P_c = C[c, c] / sum_i C[i, c] and recall R_c = C[c, c] / sum_j C[c, j]
    from the confusion matrix C of the epoch, predictions by argmax (a > 0.5 for one output).
    ``average``: 'macro' (the mean over the classes that occur in the labels or the
    predictions), 'weighted' (by each class's number of samples), 'micro' (from the summed
    counts: the accuracy, for one label per sample) or 'binary' (class 1 alone); a ratio with
    nothing to count is 0 (scikit-learn's defaults). With sample weights w_i, C[i, j] sums
    the weights of the samples of class i predicted as j (so 'weighted' weighs each class by
    its total weight); a class met only in samples of weight 0 still counts in 'macro', as
    in scikit-learn's ``precision_recall_fscore_support(..., sample_weight=w)``."""

    def __init__(self, average: str = "macro"):
        if average not in AVERAGES:
            raise ValueError(f"{type(self).__name__}: average must be one of {AVERAGES}, got {average!r}")
        self.average = average
        self.name = self.name if average == "macro" else f"{self.name}_{average}"
        self.reset()

    takes_sample_weight = True

    def reset(self) -> None:
        self.matrix = None
        self.present = None      # the classes met among the labels or predictions, whatever their weights

    def update(self, scores, y_true, sample_weight=None) -> float:
        """Add a batch to the epoch's confusion matrix; with ``sample_weight`` (one weight
        >= 0 per sample, as ``Trainer(weighted_metrics=...)`` passes) each sample adds its
        weight instead of 1, as scikit-learn's ``sample_weight``. Labels are read as in
        :func:`accuracy`: with one label per step (scores (N, T, K), labels (N, T)) every
        step counts as a sample (of its sequence's weight), and negative labels are left out."""
        scores = backend.to_numpy(scores)
        if scores.ndim == 1 or scores.shape[-1] == 1:
            classes, predicted = 2, (scores.reshape(-1) > 0.5).astype(np.int64)
            labels = (np.asarray(y_true).reshape(-1) > 0.5).astype(np.int64)
            if len(labels) != len(predicted):
                raise ShapeError(f"{type(self).__name__}: scores of shape {scores.shape} for {len(labels)} labels")
            weights = self._weights(sample_weight, len(labels))
        else:
            classes, predicted, labels = scores.shape[-1], scores.argmax(axis=-1), _labels(y_true, scores.shape)
            if labels.shape != predicted.shape:
                raise ShapeError(f"{type(self).__name__}: labels of shape {np.shape(y_true)} for scores of shape "
                                 f"{scores.shape}; expected class ids of shape {scores.shape[:-1]} or one-hot rows")
            weights = self._weights(sample_weight, len(labels))
            if labels.ndim > 1:                       # one label per step: each step a sample of its sequence's weight
                weights = np.broadcast_to(weights.reshape((len(labels),) + (1,) * (labels.ndim - 1)), labels.shape)
                predicted, labels, weights = predicted.ravel(), labels.ravel(), weights.ravel()
            kept = labels >= 0                        # negative labels (-100, ...) are ignored
            if not kept.all():
                predicted, labels, weights = predicted[kept], labels[kept], weights[kept]
        counts = np.zeros((classes, classes))
        np.add.at(counts, (labels, predicted), weights)
        present = np.bincount(np.concatenate([labels, predicted]), minlength=classes) > 0
        self.matrix = counts if self.matrix is None else self.matrix + counts
        self.present = present if self.present is None else self.present | present
        return self.result()

    def _weights(self, sample_weight, n: int) -> np.ndarray:
        weights = np.ones(n) if sample_weight is None else np.asarray(sample_weight, np.float64)
        if weights.shape != (n,):
            raise ShapeError(f"{type(self).__name__}: sample weights of shape {weights.shape} for "
                             f"{n} samples; expected ({n},)")
        return weights

    def result(self) -> float:
        if self.matrix is None:
            return 0.0
        m = self.matrix
        hits, predicted, actual = np.diag(m), m.sum(axis=0), m.sum(axis=1)
        if self.average == "micro":
            hits, predicted, actual = hits.sum(keepdims=True), predicted.sum(keepdims=True), actual.sum(keepdims=True)
        per_class = self._score(_ratio(hits, predicted), _ratio(hits, actual))
        if self.average == "binary":
            return float(per_class[1]) if len(per_class) > 1 else 0.0
        if self.average == "weighted":
            total = actual.sum()
            return float((per_class * actual).sum() / total) if total > 0 else 0.0
        if self.average == "micro":
            return float(per_class[0])
        return float(per_class[self.present].mean()) if self.present.any() else 0.0

    def _score(self, precision, recall):
        raise NotImplementedError


def _ratio(a, b):
    return np.divide(a, b, out=np.zeros_like(a), where=b > 0)


class Precision(_ConfusionMetric):
    """Of the samples predicted as a class, the fraction that belong to it."""

    name = "precision"

    def _score(self, precision, recall):
        return precision


class Recall(_ConfusionMetric):
    """Of the samples of a class, the fraction predicted as it."""

    name = "recall"

    def _score(self, precision, recall):
        return recall


class F1Score(_ConfusionMetric):
    """F1 = 2 P R / (P + R), the harmonic mean of precision and recall, per class."""

    name = "f1"

    def _score(self, precision, recall):
        return _ratio(2 * precision * recall, precision + recall)


class FBetaScore(_ConfusionMetric):
    """F_beta = (1 + beta^2) P R / (beta^2 P + R) per class: recall counts ``beta`` times as
    much as precision (``sklearn.metrics.fbeta_score``; beta = 1 is :class:`F1Score`)."""

    name = "fbeta"

    def __init__(self, beta: float = 1.0, average: str = "macro"):
        if isinstance(beta, bool) or not isinstance(beta, (int, float, np.floating)) or not 0 < beta < np.inf:
            raise ValueError(f"FBetaScore: beta must be a positive number, got {beta!r}")
        self.beta = float(beta)
        super().__init__(average)

    def _score(self, precision, recall):
        b2 = self.beta**2
        return _ratio((1 + b2) * precision * recall, b2 * precision + recall)


def cosine_similarity(predictions: np.ndarray, y_true: np.ndarray) -> float:
    """The mean over the samples of the cosine between prediction and target along the last
    axis (see :func:`lamina.train.weighting.cosine_similarity`)."""
    return float(weighting.cosine_similarity(predictions, y_true).mean())


def log_cosh_error(predictions: np.ndarray, y_true: np.ndarray) -> float:
    """The mean of log(cosh(prediction - target)) over all values (see
    :func:`lamina.train.weighting.log_cosh_error`)."""
    return float(weighting.log_cosh_error(predictions, y_true).mean())


METRICS = {
    "cosine_similarity": cosine_similarity,
    "logcosh": log_cosh_error,
    "accuracy": accuracy,
    "binary_accuracy": binary_accuracy,
    "top5_accuracy": lambda s, y: top_k_accuracy(s, y, 5),
    "top1_error": lambda s, y: top_k_error(s, y, 1),
    "top5_error": lambda s, y: top_k_error(s, y, 5),
}

EPOCH_METRICS = {
    "precision": Precision, "recall": Recall, "f1": F1Score,
    "auc": AUC, "average_precision": AveragePrecision, "mae": MeanAbsoluteError, "r2": R2Score,
    "mean_iou": MeanIoU, "pixel_accuracy": PixelAccuracy, "mean_class_accuracy": MeanClassAccuracy,
    "dice_score": DiceScore,
}


WEIGHTED_EPOCH_METRICS = {"precision": Precision, "recall": Recall, "f1": F1Score}
"""The epoch metrics that ``Trainer(weighted_metrics=...)`` takes by name."""


def get_metric(metric) -> tuple[str, EpochMetric]:
    """(name, :class:`EpochMetric`) for a metric given by name (``METRICS``; 'precision',
    'recall', 'f1' with macro averaging; 'auc', 'average_precision' for binary
    classification; 'mae', 'r2' for regression), as an EpochMetric, or as a callable
    ``(scores, labels) -> float`` (averaged over the samples)."""
    if isinstance(metric, EpochMetric):
        return metric.name, metric
    if callable(metric):
        name = getattr(metric, "__name__", "metric")
        return name, MeanMetric(metric, name)
    if metric in EPOCH_METRICS:
        made = EPOCH_METRICS[metric]()
        return made.name, made
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; expected one of {sorted({*METRICS, *EPOCH_METRICS})}, "
                         "an EpochMetric or a callable")
    return metric, MeanMetric(METRICS[metric], metric)
