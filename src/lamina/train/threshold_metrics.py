"""Binary-classifier metrics at an operating point: the best of one rate among the decision
thresholds where another rate reaches a target (Keras's ``PrecisionAtRecall``,
``RecallAtPrecision``, ``SensitivityAtSpecificity``, ``SpecificityAtSensitivity``).

Predicting positive when the score is >= t, each threshold t gives TP, FP, TN, FN and the
rates precision TP / (TP + FP), recall = sensitivity TP / (TP + FN) and specificity
TN / (TN + FP) (a ratio with nothing to count is 0). The thresholds tried are every
distinct score of the epoch, and one above them all (nothing predicted positive), so the
result is exact where Keras evaluates a grid of ``num_thresholds`` values in [0, 1]; the
rates are those of scikit-learn's ``precision_recall_curve`` and ``roc_curve``. Scores and
labels as for :class:`~lamina.train.score_metrics.AUC` (probabilities, logits or two-class
outputs: only the order of the scores matters). Sample weights weigh the counts, as
scikit-learn's ``sample_weight`` and Keras's.
"""

from __future__ import annotations

import numbers

import numpy as np

from lamina.train.score_metrics import _counts_per_score, _RankingMetric

__all__ = ["PrecisionAtRecall", "RecallAtPrecision", "SensitivityAtSpecificity", "SpecificityAtSensitivity",
           "operating_points"]


def _share(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros(len(a)), where=b > 0)


def operating_points(scores: np.ndarray, labels: np.ndarray,
                     weights: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Precision, recall (sensitivity) and specificity at each threshold, from nothing
    predicted positive to everything (thresholds at the distinct scores, highest first);
    with ``weights``, TP, FP, TN and FN are sums of sample weights."""
    positives, negatives = _counts_per_score(scores, labels, weights)
    true_pos = np.concatenate(([0], np.cumsum(positives[::-1]))).astype(np.float64)
    false_pos = np.concatenate(([0], np.cumsum(negatives[::-1]))).astype(np.float64)
    p, n = true_pos[-1], false_pos[-1]
    return {"precision": _share(true_pos, true_pos + false_pos),
            "recall": true_pos / p if p > 0 else np.zeros_like(true_pos),
            "specificity": (n - false_pos) / n if n > 0 else np.zeros_like(false_pos)}


class _AtConstraint(_RankingMetric):
    """max of rate ``best`` over the thresholds where rate ``given`` >= the target; 0 when
    no threshold reaches the target (and before any sample)."""

    best = given = ""

    def __init__(self, target: float):
        if isinstance(target, bool) or not isinstance(target, numbers.Real) or not 0.0 <= target <= 1.0:
            raise ValueError(f"{type(self).__name__}: the target {self.given} must be a number in [0, 1], "
                             f"got {target!r}")
        self.target = float(target)
        self.reset()

    def _value(self, scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None) -> float:
        if len(scores) == 0:
            return 0.0
        if np.isnan(scores).any():
            return float("nan")
        rates = operating_points(scores, labels, weights)
        feasible = rates[self.given] >= self.target
        return float(rates[self.best][feasible].max()) if feasible.any() else 0.0

    def result(self) -> float:
        return self._value(*self._epoch())


class PrecisionAtRecall(_AtConstraint):
    """The best precision among the thresholds whose recall is at least ``recall``."""

    name, best, given = "precision_at_recall", "precision", "recall"

    def __init__(self, recall: float):
        super().__init__(recall)


class RecallAtPrecision(_AtConstraint):
    """The best recall among the thresholds whose precision is at least ``precision``."""

    name, best, given = "recall_at_precision", "recall", "precision"

    def __init__(self, precision: float):
        super().__init__(precision)


class SensitivityAtSpecificity(_AtConstraint):
    """The best sensitivity (recall) among the thresholds whose specificity is at least ``specificity``."""

    name, best, given = "sensitivity_at_specificity", "recall", "specificity"

    def __init__(self, specificity: float):
        super().__init__(specificity)


class SpecificityAtSensitivity(_AtConstraint):
    """The best specificity among the thresholds whose sensitivity (recall) is at least ``sensitivity``."""

    name, best, given = "specificity_at_sensitivity", "specificity", "recall"

    def __init__(self, sensitivity: float):
        super().__init__(sensitivity)
