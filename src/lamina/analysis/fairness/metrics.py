r"""Fairness metrics of binary classifiers, as in fairlearn and AIF360.

Per-sample functions take ``(y_true, y_pred, sample_weight=None)`` and give one number; with
weights w every mean and count is weighted (a rate is sum_i w_i [condition_i] / sum_i w_i
over the samples it is a rate of):

* selection rate P(y_hat = 1); true / false positive and negative rates
  TPR = P(y_hat = 1 | y = 1), FPR = P(y_hat = 1 | y = 0), FNR = 1 - TPR, TNR = 1 - FPR;
  accuracy; :func:`binary_calibration_error` of probabilities (calibration within groups
  when given per group to :class:`~lamina.analysis.fairness.MetricFrame`).

Group disparities (fairlearn), through a :class:`~lamina.analysis.fairness.MetricFrame` over
the groups of ``sensitive_features`` (several features: their intersections):

* :func:`demographic_parity_difference` / ``_ratio``: max - min, min / max of selection rates;
* :func:`equalized_odds_difference`: the larger of the TPR and FPR differences;
  :func:`equalized_odds_ratio` the smaller of their ratios;
  :func:`equal_opportunity_difference` / ``_ratio``: of TPR alone.

Privileged-versus-the-rest differences (AIF360; ``privileged`` one value of the feature, or a
tuple of values for several; every other sample is unprivileged, u, the privileged ones p):

* :func:`statistical_parity_difference` P(y_hat=1 | u) - P(y_hat=1 | p);
  :func:`disparate_impact` P(y_hat=1 | u) / P(y_hat=1 | p);
* :func:`average_odds_difference` ((FPR_u - FPR_p) + (TPR_u - TPR_p)) / 2 and
  :func:`average_abs_odds_difference` (|.| + |.|) / 2.

Inequality of individual benefits (Speicher et al. 2018, AIF360), with b_i = y_hat_i - y_i + 1
and mu its mean: :func:`generalized_entropy_index`
GE(alpha) = 1 / (n alpha (alpha - 1)) sum_i ((b_i / mu)^alpha - 1) (alpha = 1: the Theil index
(1/n) sum_i (b_i/mu) ln(b_i/mu), :func:`theil_index`; alpha = 0: -(1/n) sum_i ln(b_i/mu)), and
:func:`between_group_generalized_entropy_index`, the same with b_i replaced by its group's mean.

A rate with nothing to count (TPR of samples with no positive label) raises ValueError, naming the
rate and, inside a MetricFrame, the group.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lamina.analysis.fairness.metric_frame import MetricFrame, check_lengths, group_labels

__all__ = [
    "accuracy", "average_abs_odds_difference", "average_odds_difference", "between_group_generalized_entropy_index",
    "binary_calibration_error", "demographic_parity_difference", "demographic_parity_ratio", "disparate_impact",
    "equal_opportunity_difference", "equal_opportunity_ratio", "equalized_odds_difference", "equalized_odds_ratio",
    "false_negative_rate", "false_positive_rate", "generalized_entropy_index", "selection_rate",
    "statistical_parity_difference", "theil_index", "true_negative_rate", "true_positive_rate",
]


def _binary(values, pos_label=1) -> np.ndarray:
    """1.0 where a value is ``pos_label``, else 0.0."""
    return (np.asarray(values).reshape(-1) == pos_label).astype(np.float64)


def _weights(sample_weight, n: int, who: str) -> np.ndarray:
    if sample_weight is None:
        return np.ones(n)
    weights = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    if len(weights) != n:
        raise ValueError(f"{who}: sample_weight has {len(weights)} values for {n} samples")
    if (weights < 0).any() or not np.isfinite(weights).all():
        raise ValueError(f"{who}: sample_weight must be finite and >= 0")
    return weights


def _rate(hits: np.ndarray, among: np.ndarray, weights: np.ndarray, who: str, among_what: str) -> float:
    """sum w [hit] / sum w over the samples ``among``; raises when there are none."""
    total = float((weights * among).sum())
    if total <= 0:
        raise ValueError(f"{who}: no samples with {among_what} (or all their weights are 0); the rate is undefined")
    return float((weights * among * hits).sum() / total)


def _prepare(y_true, y_pred, sample_weight, who: str, pos_label=1):
    check_lengths(who, y_true=y_true, y_pred=y_pred)
    truth, predicted = _binary(y_true, pos_label), _binary(y_pred, pos_label)
    return truth, predicted, _weights(sample_weight, len(truth), who)


def selection_rate(y_true, y_pred, sample_weight=None, pos_label=1) -> float:
    """P(y_hat = pos_label): the weighted share of positive predictions (``y_true`` unused)."""
    predicted = _binary(y_pred, pos_label)
    if y_true is not None:
        check_lengths("selection_rate", y_true=y_true, y_pred=y_pred)
    weights = _weights(sample_weight, len(predicted), "selection_rate")
    return _rate(predicted, np.ones_like(predicted), weights, "selection_rate", "any sample")


def true_positive_rate(y_true, y_pred, sample_weight=None, pos_label=1) -> float:
    """TPR = P(y_hat = 1 | y = 1) (recall, sensitivity)."""
    truth, predicted, weights = _prepare(y_true, y_pred, sample_weight, "true_positive_rate", pos_label)
    return _rate(predicted, truth, weights, "true_positive_rate", "a positive label (y_true == pos_label)")


def false_positive_rate(y_true, y_pred, sample_weight=None, pos_label=1) -> float:
    """FPR = P(y_hat = 1 | y = 0)."""
    truth, predicted, weights = _prepare(y_true, y_pred, sample_weight, "false_positive_rate", pos_label)
    return _rate(predicted, 1 - truth, weights, "false_positive_rate", "a negative label (y_true != pos_label)")


def true_negative_rate(y_true, y_pred, sample_weight=None, pos_label=1) -> float:
    """TNR = P(y_hat = 0 | y = 0) = 1 - FPR (specificity)."""
    truth, predicted, weights = _prepare(y_true, y_pred, sample_weight, "true_negative_rate", pos_label)
    return _rate(1 - predicted, 1 - truth, weights, "true_negative_rate", "a negative label (y_true != pos_label)")


def false_negative_rate(y_true, y_pred, sample_weight=None, pos_label=1) -> float:
    """FNR = P(y_hat = 0 | y = 1) = 1 - TPR."""
    truth, predicted, weights = _prepare(y_true, y_pred, sample_weight, "false_negative_rate", pos_label)
    return _rate(1 - predicted, truth, weights, "false_negative_rate", "a positive label (y_true == pos_label)")


def accuracy(y_true, y_pred, sample_weight=None) -> float:
    """P(y_hat = y), weighted."""
    check_lengths("accuracy", y_true=y_true, y_pred=y_pred)
    hits = (np.asarray(y_true).reshape(-1) == np.asarray(y_pred).reshape(-1)).astype(np.float64)
    weights = _weights(sample_weight, len(hits), "accuracy")
    return _rate(hits, np.ones_like(hits), weights, "accuracy", "any sample")


def binary_calibration_error(y_true, y_prob, sample_weight=None, n_bins: int = 10) -> float:
    """sum_b (W_b / W) |mean(y | b) - mean(p | b)| over ``n_bins`` equal-width bins of the
    predicted probability p of the positive label (right-closed, bin 0 also holds 0)."""
    check_lengths("binary_calibration_error", y_true=y_true, y_prob=y_prob)
    truth = _binary(y_true)
    prob = np.asarray(y_prob, dtype=np.float64).reshape(-1)
    if ((prob < 0) | (prob > 1)).any():
        raise ValueError("binary_calibration_error: y_prob must be probabilities in [0, 1]")
    weights = _weights(sample_weight, len(truth), "binary_calibration_error")
    if weights.sum() <= 0:
        raise ValueError("binary_calibration_error: no samples (or all their weights are 0)")
    bins = np.clip(np.ceil(prob * n_bins).astype(int) - 1, 0, n_bins - 1)
    error = 0.0
    for b in np.unique(bins):
        w = weights * (bins == b)
        if w.sum() > 0:
            error += abs(float((w * truth).sum() - (w * prob).sum()))
    return error / float(weights.sum())


def _disparity(metric: Callable, y_true, y_pred, sensitive_features, method: str, sample_weight, ratio: bool):
    frame = MetricFrame(metric, y_true, y_pred, sensitive_features, sample_weight=sample_weight)
    return frame.ratio(method) if ratio else frame.difference(method)


def demographic_parity_difference(y_true, y_pred, sensitive_features, method: str = "between_groups",
                                  sample_weight=None) -> float:
    """max_a - min_a of the selection rate P(y_hat = 1 | A = a) (``method`` as
    :meth:`MetricFrame.difference`)."""
    return _disparity(selection_rate, y_true, y_pred, sensitive_features, method, sample_weight, False)


def demographic_parity_ratio(y_true, y_pred, sensitive_features, method: str = "between_groups",
                             sample_weight=None) -> float:
    """min_a / max_a of the selection rate (``method`` as :meth:`MetricFrame.ratio`)."""
    return _disparity(selection_rate, y_true, y_pred, sensitive_features, method, sample_weight, True)


def equal_opportunity_difference(y_true, y_pred, sensitive_features, method: str = "between_groups",
                                 sample_weight=None) -> float:
    """max_a - min_a of TPR_a (fairlearn's; AIF360's signed version is TPR_u - TPR_p)."""
    return _disparity(true_positive_rate, y_true, y_pred, sensitive_features, method, sample_weight, False)


def equal_opportunity_ratio(y_true, y_pred, sensitive_features, method: str = "between_groups",
                            sample_weight=None) -> float:
    """min_a / max_a of TPR_a."""
    return _disparity(true_positive_rate, y_true, y_pred, sensitive_features, method, sample_weight, True)


def equalized_odds_difference(y_true, y_pred, sensitive_features, method: str = "between_groups",
                              sample_weight=None) -> float:
    """max(TPR difference, FPR difference) over the groups (fairlearn's worst case)."""
    return max(_disparity(rate, y_true, y_pred, sensitive_features, method, sample_weight, False)
               for rate in (true_positive_rate, false_positive_rate))


def equalized_odds_ratio(y_true, y_pred, sensitive_features, method: str = "between_groups",
                         sample_weight=None) -> float:
    """min(TPR ratio, FPR ratio) over the groups."""
    return min(_disparity(rate, y_true, y_pred, sensitive_features, method, sample_weight, True)
               for rate in (true_positive_rate, false_positive_rate))


def _privileged_split(y_true, y_pred, sensitive_features, privileged, sample_weight, who: str):
    """(is_privileged mask, y_true, y_pred, weights) with both sides non-empty."""
    keys = group_labels(sensitive_features, who)
    check_lengths(who, y_true=y_true, y_pred=y_pred, sensitive_features=keys)
    mask = np.array([key == privileged for key in keys], dtype=bool)
    if mask.all() or not mask.any():
        found = sorted({repr(k) for k in keys})
        raise ValueError(f"{who}: the privileged group {privileged!r} must hold some samples but not all; "
                         f"groups found: {', '.join(found)}")
    return mask, np.asarray(y_true).reshape(-1), np.asarray(y_pred).reshape(-1), \
        _weights(sample_weight, len(mask), who)


def _on(rate: Callable, mask, y_true, y_pred, weights, side: str, who: str) -> float:
    try:
        return rate(y_true[mask], y_pred[mask], weights[mask])
    except ValueError as error:
        raise ValueError(f"{who}: in the {side} samples, {error}") from None


def statistical_parity_difference(y_pred, sensitive_features, privileged, sample_weight=None) -> float:
    """P(y_hat = 1 | unprivileged) - P(y_hat = 1 | privileged) (AIF360; 0 is parity)."""
    who = "statistical_parity_difference"
    mask, _, predicted, weights = _privileged_split(y_pred, y_pred, sensitive_features, privileged, sample_weight, who)
    return (_on(selection_rate, ~mask, predicted, predicted, weights, "unprivileged", who)
            - _on(selection_rate, mask, predicted, predicted, weights, "privileged", who))


def disparate_impact(y_pred, sensitive_features, privileged, sample_weight=None) -> float:
    """P(y_hat = 1 | unprivileged) / P(y_hat = 1 | privileged) (AIF360; 1 is parity, the
    four-fifths rule asks for >= 0.8); raises when the privileged rate is 0."""
    who = "disparate_impact"
    mask, _, predicted, weights = _privileged_split(y_pred, y_pred, sensitive_features, privileged, sample_weight, who)
    privileged_rate = _on(selection_rate, mask, predicted, predicted, weights, "privileged", who)
    if privileged_rate == 0:
        raise ValueError(f"{who}: the privileged group {privileged!r} has no positive prediction; "
                         "the ratio is undefined")
    return _on(selection_rate, ~mask, predicted, predicted, weights, "unprivileged", who) / privileged_rate


def _odds_gaps(y_true, y_pred, sensitive_features, privileged, sample_weight, who: str) -> tuple[float, float]:
    mask, truth, predicted, weights = _privileged_split(y_true, y_pred, sensitive_features, privileged,
                                                        sample_weight, who)
    return tuple(_on(rate, ~mask, truth, predicted, weights, "unprivileged", who)
                 - _on(rate, mask, truth, predicted, weights, "privileged", who)
                 for rate in (false_positive_rate, true_positive_rate))


def average_odds_difference(y_true, y_pred, sensitive_features, privileged, sample_weight=None) -> float:
    """((FPR_u - FPR_p) + (TPR_u - TPR_p)) / 2 (AIF360)."""
    fpr_gap, tpr_gap = _odds_gaps(y_true, y_pred, sensitive_features, privileged, sample_weight,
                                  "average_odds_difference")
    return (fpr_gap + tpr_gap) / 2


def average_abs_odds_difference(y_true, y_pred, sensitive_features, privileged, sample_weight=None) -> float:
    """(|FPR_u - FPR_p| + |TPR_u - TPR_p|) / 2 (AIF360)."""
    fpr_gap, tpr_gap = _odds_gaps(y_true, y_pred, sensitive_features, privileged, sample_weight,
                                  "average_abs_odds_difference")
    return (abs(fpr_gap) + abs(tpr_gap)) / 2


def _entropy_index(benefits: np.ndarray, alpha: float) -> float:
    ratio = benefits / benefits.mean()
    if alpha == 1:
        positive = ratio > 0
        return float(np.sum(ratio[positive] * np.log(ratio[positive])) / len(ratio))
    if alpha == 0:
        if (ratio <= 0).any():
            raise ValueError("generalized_entropy_index: alpha = 0 needs every benefit b_i > 0")
        return float(-np.mean(np.log(ratio)))
    return float(np.mean(ratio ** alpha - 1) / (alpha * (alpha - 1)))


def _benefits(y_true, y_pred, who: str, pos_label=1) -> np.ndarray:
    check_lengths(who, y_true=y_true, y_pred=y_pred)
    benefits = _binary(y_pred, pos_label) - _binary(y_true, pos_label) + 1
    if len(benefits) == 0 or benefits.sum() == 0:
        raise ValueError(f"{who}: needs samples with a positive total benefit b = y_hat - y + 1")
    return benefits


def generalized_entropy_index(y_true, y_pred, alpha: float = 2.0, pos_label=1) -> float:
    """GE(alpha) of the benefits b_i = y_hat_i - y_i + 1 (AIF360; 0 when all are equal)."""
    return _entropy_index(_benefits(y_true, y_pred, "generalized_entropy_index", pos_label), alpha)


def theil_index(y_true, y_pred, pos_label=1) -> float:
    """GE(1) = (1/n) sum_i (b_i / mu) ln(b_i / mu), with 0 ln 0 = 0."""
    return generalized_entropy_index(y_true, y_pred, alpha=1.0, pos_label=pos_label)


def between_group_generalized_entropy_index(y_true, y_pred, sensitive_features, alpha: float = 2.0,
                                            pos_label=1) -> float:
    """GE(alpha) with each b_i replaced by the mean benefit of its group (AIF360's
    between-group index: the share of the inequality that lies between groups)."""
    who = "between_group_generalized_entropy_index"
    benefits = _benefits(y_true, y_pred, who, pos_label)
    keys = group_labels(sensitive_features, who)
    check_lengths(who, y_true=y_true, sensitive_features=keys)
    group_means = np.empty_like(benefits)
    for key in set(keys):
        members = np.array([k == key for k in keys])
        group_means[members] = benefits[members].mean()
    return _entropy_index(group_means, alpha)
