"""Metrics over an epoch's scores and targets that no mean of per-batch values gives: ROC
AUC and average precision for binary classification (the epoch's scores and labels are
kept and ranked at the end), mean absolute error and R^2 for regression (sums and a merged
total sum of squares).
"""

from __future__ import annotations

import warnings

import numpy as np

from lamina import backend
from lamina.errors import ShapeError
from lamina.train.epoch_metric import EpochMetric

__all__ = ["AUC", "AveragePrecision", "MeanAbsoluteError", "R2Score", "mean_absolute_error", "r2_score"]


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


def _counts_per_score(scores: np.ndarray, labels: np.ndarray,
                      weights: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Positives and negatives at each distinct score, from the lowest score to the highest
    (tied scores form one group, as in scikit-learn's ROC and precision-recall curves);
    with ``weights``, their summed sample weights."""
    order = np.argsort(scores, kind="stable")
    ranked, hits = scores[order], labels[order]
    starts = np.flatnonzero(np.concatenate(([True], ranked[1:] != ranked[:-1])))
    if weights is not None:
        w = weights[order]
        return np.add.reduceat(hits * w, starts), np.add.reduceat((1 - hits) * w, starts)
    positives = np.add.reduceat(hits, starts)
    negatives = np.diff(np.append(starts, len(ranked))) - positives
    return positives, negatives


def _roc_auc(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """NaN when the labels hold one class only or a score is NaN (see :class:`AUC`)."""
    if len(scores) == 0 or np.isnan(scores).any():
        return float("nan")
    positives, negatives = _counts_per_score(scores, labels, weights)
    p, n = positives.sum(), negatives.sum()
    if p == 0 or n == 0:
        return float("nan")
    below = np.cumsum(negatives) - negatives                   # negatives scored lower than the group
    twice_wins = (positives * (2 * below + negatives)).sum()
    if weights is None:
        return int(twice_wins) / (2 * int(p) * int(n))         # integers: one rounding
    return float(twice_wins / (2 * p * n))


def _average_precision(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> float:
    """0 when there is no positive label, NaN when a score is NaN (see :class:`AveragePrecision`)."""
    if len(scores) == 0 or np.isnan(scores).any():
        return float("nan")
    positives, negatives = _counts_per_score(scores, labels, weights)
    positives, negatives = positives[::-1], negatives[::-1]   # thresholds from the highest score down
    total = positives.sum()
    if total == 0:
        return 0.0
    true_pos = np.cumsum(positives)
    precision = true_pos / (true_pos + np.cumsum(negatives))
    return float((positives * precision).sum() / total)


def _sample_weights(sample_weight, samples: int, who: str) -> np.ndarray:
    """One finite, non-negative weight per sample, float64."""
    weights = np.asarray(backend.to_numpy(sample_weight), dtype=np.float64)
    if weights.ndim == 2 and weights.shape[1] == 1:
        weights = weights.reshape(-1)
    if weights.shape != (samples,):
        raise ShapeError(f"{who}: sample_weight of shape {weights.shape} for {samples} samples; expected one "
                         f"weight per sample, shape ({samples},)")
    if not np.isfinite(weights).all() or (weights < 0).any():
        raise ValueError(f"{who}: sample weights must be finite and non-negative, got "
                         f"{weights[~np.isfinite(weights) | (weights < 0)][0]!r}")
    return weights


class _RankingMetric(EpochMetric):
    """Keeps every score and label of the epoch (the ranking of all of them decides).
    ``update`` returns the value of that batch alone (NaN where it is undefined for the
    batch): recomputing the epoch's value at every batch would cost O(n log n) per batch.

    ``sample_weight`` (one non-negative weight per sample) weighs each sample's count, as
    scikit-learn's ``sample_weight``; samples of weight 0 are left out (a Keras mask gives
    its masked steps weight 0). Without weights the counts stay exact integers."""

    takes_sample_weight = True

    def reset(self) -> None:
        self.scores: list[np.ndarray] = []
        self.labels: list[np.ndarray] = []
        self.weights: list[np.ndarray] = []
        self.weighted = False

    def update(self, scores, y_true, sample_weight=None) -> float:
        who = type(self).__name__
        scores, labels = _binary_scores(scores, y_true, who)
        if self.scores and scores.shape[1:] != self.scores[0].shape[1:]:
            raise ShapeError(f"{who}: scores of shape {scores.shape} after batches of "
                             f"shape (*, {', '.join(map(str, self.scores[0].shape[1:]))}); one epoch needs "
                             "one kind of output")
        weights = np.ones(len(labels)) if sample_weight is None else _sample_weights(sample_weight, len(labels), who)
        self.weighted = self.weighted or sample_weight is not None
        self.scores.append(scores)
        self.labels.append(labels)
        self.weights.append(weights)
        return self._value(*self._kept(_positive_scores(scores), labels, weights, sample_weight is not None))

    @staticmethod
    def _kept(scores, labels, weights, weighted: bool) -> tuple:
        """(scores, labels, weights or None) of the samples of nonzero weight."""
        if not weighted:
            return scores, labels, None
        kept = weights > 0
        return scores[kept], labels[kept], weights[kept]

    def _epoch(self) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        if not self.scores:
            return np.zeros(0), np.zeros(0, dtype=np.int64), None
        return self._kept(_positive_scores(np.concatenate(self.scores)), np.concatenate(self.labels),
                          np.concatenate(self.weights), self.weighted)

    def _value(self, scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None) -> float:
        raise NotImplementedError


class AUC(_RankingMetric):
    """Area under the ROC curve of a binary classifier, over the epoch.

    With P positive and N negative samples, AUC = (sum over positive i, negative j of
    [s_i > s_j] + 1/2 [s_i = s_j]) / (P N): the probability that a random positive scores
    above a random negative, ties counting one half. This equals the trapezoidal area under
    the ROC curve through the points (FP/N, TP/P) at each distinct threshold, which is what
    ``sklearn.metrics.roc_auc_score`` computes. It is computed from the sorted scores as
    exact integer counts divided once. With sample weights w every pair counts w_i w_j:
    AUC = sum_ij w_i w_j ([s_i > s_j] + 1/2 [s_i = s_j]) / (W_P W_N), W_P and W_N the summed
    weights of the positives and of the negatives (``roc_auc_score(sample_weight=w)``).

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

    def _value(self, scores, labels, weights) -> float:
        return _roc_auc(scores, labels, weights)

    def result(self) -> float:
        scores, labels, weights = self._epoch()
        if len(labels) == 0:
            raise ValueError("AUC: no samples in this epoch (or only samples of weight 0); call update() with scores "
                             "and labels first")
        if labels.min() == labels.max():
            raise ValueError(f"AUC: all {len(labels)} labels of the epoch are {int(labels[0])}; ROC AUC needs "
                             "both classes (use a validation set holding positives and negatives)")
        return _roc_auc(scores, labels, weights)


class AveragePrecision(_RankingMetric):
    """Average precision of a binary classifier over the epoch, the step-wise (not
    interpolated) area under the precision-recall curve of
    ``sklearn.metrics.average_precision_score``:

        AP = sum_k (R_k - R_{k-1}) P_k,

    over the distinct scores taken as thresholds from the highest down, with P_k = TP_k /
    (TP_k + FP_k) and R_k = TP_k / (number of positives) counting the samples scored at or
    above threshold k (R_0 = 0); tied scores form one step. With sample weights the counts
    are sums of weights (``average_precision_score(sample_weight=w)``). Scores and labels as for
    :class:`AUC`. An epoch without a positive label gives 0 with a warning (as
    scikit-learn), one of positives only gives 1; a NaN score gives NaN.
    """

    name = "average_precision"

    def __init__(self):
        self.reset()

    def _value(self, scores, labels, weights) -> float:
        return _average_precision(scores, labels, weights)

    def result(self) -> float:
        scores, labels, weights = self._epoch()
        if len(labels) == 0:
            raise ValueError("AveragePrecision: no samples in this epoch (or only samples of weight 0); call "
                             "update() with scores and labels first")
        if not labels.any():
            warnings.warn("AveragePrecision: no positive label in this epoch; the average precision is 0",
                          stacklevel=2)
        return _average_precision(scores, labels, weights)


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
