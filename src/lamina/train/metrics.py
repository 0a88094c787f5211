"""Classification metrics on NumPy arrays of predictions and labels.

Top-k error (course notes, top-1 and top-5 error): a sample counts as wrong unless its
true class is among the k classes with the highest scores; top-1 error is 1 - accuracy.

The Trainer reports each metric over a whole epoch through an :class:`EpochMetric`: a mean
of per-batch values for the plain functions (accuracy, top-k error, ...), a confusion
matrix added up over the batches for precision, recall and F1, the epoch's scores and
labels for the ranking metrics (ROC AUC, average precision), and sums and a merged total
sum of squares for the regression metrics (mean absolute error, R^2): none of these is a
mean of per-batch values.
"""

from __future__ import annotations

import warnings

import numpy as np

from lamina import backend
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


class EpochMetric:
    """A metric over an epoch: ``reset()``, ``update(scores, labels)`` once per batch (which
    returns the value to log for that batch), ``result()`` at the end. Scores may be the
    model's arrays on any backend (CuPy's are copied to the host)."""

    name = "metric"

    def reset(self) -> None:
        raise NotImplementedError

    def update(self, scores, y_true) -> float:
        raise NotImplementedError

    def result(self) -> float:
        raise NotImplementedError


class MeanMetric(EpochMetric):
    """A per-batch metric ``fn(scores, labels)`` averaged over the samples of the epoch."""

    def __init__(self, fn, name: str):
        self.fn, self.name = fn, name
        self.reset()

    def reset(self) -> None:
        self.total, self.count = 0.0, 0

    def update(self, scores, y_true) -> float:
        scores = backend.to_numpy(scores)             # a GPU batch comes to the host once
        value = float(self.fn(scores, y_true))
        n = len(scores)
        self.total += value * n
        self.count += n
        return value

    def result(self) -> float:
        return self.total / max(self.count, 1)


AVERAGES = ("macro", "weighted", "micro", "binary")


class _ConfusionMetric(EpochMetric):
    """Per-class precision P_c = C[c, c] / sum_i C[i, c] and recall R_c = C[c, c] / sum_j C[c, j]
    from the confusion matrix C of the epoch, predictions by argmax (a > 0.5 for one output).
    ``average``: 'macro' (the mean over the classes that occur in the labels or the
    predictions), 'weighted' (by each class's number of samples), 'micro' (from the summed
    counts: the accuracy, for one label per sample) or 'binary' (class 1 alone); a ratio with
    nothing to count is 0 (scikit-learn's defaults)."""

    def __init__(self, average: str = "macro"):
        if average not in AVERAGES:
            raise ValueError(f"{type(self).__name__}: average must be one of {AVERAGES}, got {average!r}")
        self.average = average
        self.name = self.name if average == "macro" else f"{self.name}_{average}"
        self.reset()

    def reset(self) -> None:
        self.matrix = None

    def update(self, scores, y_true) -> float:
        scores = backend.to_numpy(scores)
        if scores.ndim == 1 or scores.shape[-1] == 1:
            classes, predicted = 2, (scores.reshape(-1) > 0.5).astype(np.int64)
            labels = (np.asarray(y_true).reshape(-1) > 0.5).astype(np.int64)
        else:
            classes, predicted, labels = scores.shape[-1], scores.argmax(axis=-1), _labels(y_true)
        if len(labels) != len(predicted):
            raise ShapeError(f"{type(self).__name__}: scores of shape {scores.shape} for {len(labels)} labels")
        counts = confusion_matrix(labels, predicted, classes)
        self.matrix = counts if self.matrix is None else self.matrix + counts
        return self.result()

    def result(self) -> float:
        if self.matrix is None:
            return 0.0
        m = self.matrix.astype(np.float64)
        hits, predicted, actual = np.diag(m), m.sum(axis=0), m.sum(axis=1)
        if self.average == "micro":
            hits, predicted, actual = hits.sum(keepdims=True), predicted.sum(keepdims=True), actual.sum(keepdims=True)
        per_class = self._score(_ratio(hits, predicted), _ratio(hits, actual))
        if self.average == "binary":
            return float(per_class[1]) if len(per_class) > 1 else 0.0
        if self.average == "weighted":
            return float((per_class * actual).sum() / max(actual.sum(), 1.0))
        present = (predicted + actual) > 0
        return float(per_class[present].mean()) if present.any() else 0.0

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


def _binary_scores(scores, y_true, who: str) -> tuple[np.ndarray, np.ndarray]:
    """Host copies of the scores, shape (samples,) or (samples, 2), and of the 0/1 labels."""
    scores, labels = np.asarray(backend.to_numpy(scores)), np.asarray(backend.to_numpy(y_true))
    if scores.ndim == 2 and scores.shape[1] == 2:
        scores = scores.astype(np.float64)                   # both columns; see _positive_scores
    elif scores.ndim == 1 or (scores.ndim == 2 and scores.shape[1] == 1):
        scores = scores.reshape(-1).astype(np.float64)
    else:
        raise ShapeError(f"{who}: scores of shape {scores.shape}; expected one score per sample, shape "
                         "(samples,) or (samples, 1), or two-class outputs of shape (samples, 2)")
    if labels.ndim == 2 and labels.shape[1] == 2:            # one-hot rows of two classes
        if not np.isin(labels, (0, 1)).all() or (labels.sum(axis=1) != 1).any():
            raise ValueError(f"{who}: labels of shape {labels.shape} must be one-hot rows of 0s and 1s")
        labels = labels[:, 1]
    elif labels.ndim == 1 or (labels.ndim == 2 and labels.shape[1] == 1):
        labels = labels.reshape(-1)
    else:
        raise ShapeError(f"{who}: labels of shape {labels.shape}; expected 0/1 labels of shape (samples,) "
                         "or (samples, 1), or one-hot rows of shape (samples, 2)")
    if len(labels) != len(scores):
        raise ShapeError(f"{who}: scores for {len(scores)} samples but {len(labels)} labels")
    wrong = ~np.isin(labels, (0, 1))
    if wrong.any():
        raise ValueError(f"{who}: labels must be 0 or 1 (binary classification), found {labels[wrong][0].item()!r}; "
                         "for several classes, score each class against the rest")
    return scores, labels.astype(np.int64)


def _positive_scores(scores: np.ndarray) -> np.ndarray:
    """One score per sample, ranking the samples as the probability of class 1 does: the
    score itself for one output; for two outputs, column 1 when every row looks like
    probabilities (in [0, 1], summing to 1), else (logits) column 1 minus column 0, whose
    sigmoid is that probability. Decided once for all the rows, so one epoch ranks on one
    scale."""
    if scores.ndim == 1:
        return scores
    looks_like_probabilities = (bool(((scores >= 0) & (scores <= 1)).all())
                                and bool((np.abs(scores.sum(axis=1) - 1) <= 1e-3).all()))
    return scores[:, 1] if looks_like_probabilities else scores[:, 1] - scores[:, 0]


def _counts_per_score(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Positives and negatives at each distinct score, from the lowest score to the highest
    (tied scores form one group, as in scikit-learn's ROC and precision-recall curves)."""
    order = np.argsort(scores, kind="stable")
    ranked, hits = scores[order], labels[order]
    starts = np.flatnonzero(np.concatenate(([True], ranked[1:] != ranked[:-1])))
    positives = np.add.reduceat(hits, starts)
    negatives = np.diff(np.append(starts, len(ranked))) - positives
    return positives, negatives


def _roc_auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """NaN when the labels hold one class only or a score is NaN (see :class:`AUC`)."""
    if len(scores) == 0 or np.isnan(scores).any():
        return float("nan")
    positives, negatives = _counts_per_score(scores, labels)
    p, n = int(positives.sum()), int(negatives.sum())
    if p == 0 or n == 0:
        return float("nan")
    below = np.cumsum(negatives) - negatives                   # negatives scored lower than the group
    twice_wins = int((positives * (2 * below + negatives)).sum())
    return twice_wins / (2 * p * n)                            # integers: one rounding


def _average_precision(scores: np.ndarray, labels: np.ndarray) -> float:
    """0 when there is no positive label, NaN when a score is NaN (see :class:`AveragePrecision`)."""
    if len(scores) == 0 or np.isnan(scores).any():
        return float("nan")
    positives, negatives = _counts_per_score(scores, labels)
    positives, negatives = positives[::-1], negatives[::-1]   # thresholds from the highest score down
    total = int(positives.sum())
    if total == 0:
        return 0.0
    true_pos = np.cumsum(positives)
    precision = true_pos / (true_pos + np.cumsum(negatives))
    return float((positives * precision).sum() / total)


class _RankingMetric(EpochMetric):
    """Keeps every score and label of the epoch (the ranking of all of them decides).
    ``update`` returns the value of that batch alone (NaN where it is undefined for the
    batch): recomputing the epoch's value at every batch would cost O(n log n) per batch."""

    def reset(self) -> None:
        self.scores: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []

    def update(self, scores, y_true) -> float:
        scores, labels = _binary_scores(scores, y_true, type(self).__name__)
        if self.scores and scores.shape[1:] != self.scores[0].shape[1:]:
            raise ShapeError(f"{type(self).__name__}: scores of shape {scores.shape} after batches of "
                             f"shape (*, {', '.join(map(str, self.scores[0].shape[1:]))}); one epoch needs "
                             "one kind of output")
        self.scores.append(scores)
        self.labels.append(labels)
        return self._value(_positive_scores(scores), labels)

    def _epoch(self) -> tuple[np.ndarray, np.ndarray]:
        if not self.scores:
            return np.zeros(0), np.zeros(0, dtype=np.int64)
        return _positive_scores(np.concatenate(self.scores)), np.concatenate(self.labels)

    def _value(self, scores: np.ndarray, labels: np.ndarray) -> float:
        raise NotImplementedError


class AUC(_RankingMetric):
    """Area under the ROC curve of a binary classifier, over the epoch.

    With P positive and N negative samples, AUC = (sum over positive i, negative j of
    [s_i > s_j] + 1/2 [s_i = s_j]) / (P N): the probability that a random positive scores
    above a random negative, ties counting one half. This equals the trapezoidal area under
    the ROC curve through the points (FP/N, TP/P) at each distinct threshold, which is what
    ``sklearn.metrics.roc_auc_score`` computes. It is computed from the sorted scores as
    exact integer counts divided once.

    Scores: one per sample, shape (samples,) or (samples, 1) (a sigmoid output or a logit:
    only their order matters), or two-class outputs (samples, 2): softmax probabilities
    (column 1 is used) or logits (column 1 minus column 0). Labels: 0/1, shape (samples,)
    or (samples, 1), or one-hot rows (samples, 2).

    ``result()`` raises ValueError when the epoch's labels hold one class only: the AUC is
    not defined then, and a NaN (what scikit-learn returns now, with a warning; older
    versions raised) would pass into the logs unnoticed, where EarlyStopping or
    ModelCheckpoint monitoring it would never see an improvement. A NaN score (a diverged
    model) gives NaN, so that TerminateOnNaN can stop such a run instead of an error.
    """

    name = "auc"

    def __init__(self):
        self.reset()

    def _value(self, scores, labels) -> float:
        return _roc_auc(scores, labels)

    def result(self) -> float:
        scores, labels = self._epoch()
        if len(labels) == 0:
            raise ValueError("AUC: no samples in this epoch; call update() with scores and labels first")
        if labels.min() == labels.max():
            raise ValueError(f"AUC: all {len(labels)} labels of the epoch are {int(labels[0])}; ROC AUC needs "
                             "both classes (use a validation set holding positives and negatives)")
        return _roc_auc(scores, labels)


class AveragePrecision(_RankingMetric):
    """Average precision of a binary classifier over the epoch, the step-wise (not
    interpolated) area under the precision-recall curve of
    ``sklearn.metrics.average_precision_score``:

        AP = sum_k (R_k - R_{k-1}) P_k,

    over the distinct scores taken as thresholds from the highest down, with P_k = TP_k /
    (TP_k + FP_k) and R_k = TP_k / (number of positives) counting the samples scored at or
    above threshold k (R_0 = 0); tied scores form one step. Scores and labels as for
    :class:`AUC`. An epoch without a positive label gives 0 with a warning (as
    scikit-learn), one of positives only gives 1; a NaN score gives NaN.
    """

    name = "average_precision"

    def __init__(self):
        self.reset()

    def _value(self, scores, labels) -> float:
        return _average_precision(scores, labels)

    def result(self) -> float:
        scores, labels = self._epoch()
        if len(labels) == 0:
            raise ValueError("AveragePrecision: no samples in this epoch; call update() with scores and "
                             "labels first")
        if not labels.any():
            warnings.warn("AveragePrecision: no positive label in this epoch; the average precision is 0",
                          stacklevel=2)
        return _average_precision(scores, labels)


def _regression_pair(predictions, y_true, who: str) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and targets as float64 arrays of shape (samples, outputs)."""
    predicted = np.asarray(backend.to_numpy(predictions), dtype=np.float64)
    target = np.asarray(backend.to_numpy(y_true), dtype=np.float64)
    shapes = []
    for a in (predicted, target):
        if a.ndim not in (1, 2):
            raise ShapeError(f"{who}: predictions of shape {predicted.shape} and targets of shape {target.shape}; "
                             "expected (samples,) or (samples, outputs)")
        shapes.append((len(a), 1 if a.ndim == 1 else a.shape[1]))
    if shapes[0] != shapes[1]:
        raise ShapeError(f"{who}: predictions of shape {predicted.shape} for targets of shape {target.shape}")
    return predicted.reshape(shapes[0]), target.reshape(shapes[1])


class _RegressionMetric(EpochMetric):
    """Sums per output over the epoch; ``update`` returns the epoch's value so far."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.count = 0
        self.outputs: int | None = None

    def update(self, predictions, y_true) -> float:
        predicted, target = _regression_pair(predictions, y_true, type(self).__name__)
        if len(target):
            if self.outputs is None:
                self.outputs = target.shape[1]
                self._start(target)
            elif target.shape[1] != self.outputs:
                raise ShapeError(f"{type(self).__name__}: a batch of {target.shape[1]} outputs after batches "
                                 f"of {self.outputs}")
            self._add(predicted, target)
            self.count += len(target)
        return self.result()

    def _start(self, target: np.ndarray) -> None:
        raise NotImplementedError

    def _add(self, predicted: np.ndarray, target: np.ndarray) -> None:
        raise NotImplementedError


class MeanAbsoluteError(_RegressionMetric):
    """MAE = (1 / (n m)) sum_i sum_o |y_io - yhat_io| over the n samples and m outputs of the
    epoch (``sklearn.metrics.mean_absolute_error``, outputs averaged uniformly), from the
    sums of absolute errors per output; NaN before any sample."""

    name = "mae"

    def _start(self, target):
        self.absolute = np.zeros(target.shape[1])

    def _add(self, predicted, target):
        self.absolute += np.abs(target - predicted).sum(axis=0)

    def result(self) -> float:
        if self.count == 0:
            return float("nan")
        return float((self.absolute / self.count).mean())


class R2Score(_RegressionMetric):
    """Coefficient of determination over the epoch, per output o

        R^2_o = 1 - SS_res / SS_tot,  SS_res = sum_i (y_io - yhat_io)^2,
                                      SS_tot = sum_i (y_io - mean_o(y))^2,

    averaged uniformly over the outputs (``sklearn.metrics.r2_score``; a 1-D target is one
    output). As in scikit-learn, an output with constant targets (SS_tot = 0) scores 1 if
    predicted exactly and 0 otherwise, and fewer than two samples give NaN.

    SS_res is a sum of squares added up over the batches. SS_tot is not taken from the sums
    of y and y^2 (sum y^2 - n mean^2 cancels catastrophically when the mean is large next to
    the spread): the targets are shifted by the first one of the epoch, each batch's count,
    mean and sum of squared deviations from its own mean (two passes) are computed, and
    these are merged pairwise (Chan, Golub and LeVeque): with delta = mean_b - mean_a,
    M2 = M2_a + M2_b + delta^2 n_a n_b / (n_a + n_b). The batch sizes change the result by
    rounding only.
    """

    name = "r2"

    def _start(self, target):
        self.shift = target[0].copy()
        self.mean = np.zeros(target.shape[1])
        self.total_squares = np.zeros(target.shape[1])
        self.residual_squares = np.zeros(target.shape[1])

    def _add(self, predicted, target):
        self.residual_squares += ((target - predicted) ** 2).sum(axis=0)
        shifted = target - self.shift
        n_a, n_b = self.count, len(target)
        mean_b = shifted.mean(axis=0)
        delta = mean_b - self.mean
        self.total_squares += ((shifted - mean_b) ** 2).sum(axis=0) + delta**2 * (n_a * n_b / (n_a + n_b))
        self.mean += delta * (n_b / (n_a + n_b))

    def result(self) -> float:
        if self.count < 2:
            return float("nan")
        constant = self.total_squares == 0
        scores = np.where(constant, (self.residual_squares == 0).astype(np.float64),
                          1 - self.residual_squares / np.where(constant, 1.0, self.total_squares))
        return float(scores.mean())


def mean_absolute_error(predictions: np.ndarray, y_true: np.ndarray) -> float:
    """Mean absolute error of ``predictions`` against the targets ``y_true`` (lamina's order,
    predictions first; scikit-learn takes the targets first), as :class:`MeanAbsoluteError`."""
    metric = MeanAbsoluteError()
    return metric.update(predictions, y_true)


def r2_score(predictions: np.ndarray, y_true: np.ndarray) -> float:
    """R^2 of ``predictions`` against the targets ``y_true`` (lamina's order, predictions
    first; scikit-learn's ``r2_score`` takes the targets first), as :class:`R2Score`."""
    metric = R2Score()
    return metric.update(predictions, y_true)


METRICS = {
    "accuracy": accuracy,
    "binary_accuracy": binary_accuracy,
    "top5_accuracy": lambda s, y: top_k_accuracy(s, y, 5),
    "top1_error": lambda s, y: top_k_error(s, y, 1),
    "top5_error": lambda s, y: top_k_error(s, y, 5),
}

EPOCH_METRICS = {
    "precision": Precision, "recall": Recall, "f1": F1Score,
    "auc": AUC, "average_precision": AveragePrecision, "mae": MeanAbsoluteError, "r2": R2Score,
}


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
