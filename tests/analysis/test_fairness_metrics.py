"""Fairness metrics on hand-made arrays against values worked out by hand."""

import math

import numpy as np
import pytest

from lamina.analysis import fairness as fair

Y_TRUE = np.array([1, 1, 0, 0, 1, 0, 1, 0, 0, 1])
Y_PRED = np.array([1, 1, 0, 1, 1, 0, 0, 0, 1, 1])
GROUP = np.array(["a"] * 4 + ["b"] * 6)
SECOND = np.array([0, 1] * 5)
WEIGHTS = np.array([2, 1, 1, 1, 1, 1, 1, 1, 1, 3], dtype=float)
# group a: selection 3/4, TPR 2/2, FPR 1/2; group b: selection 3/6, TPR 2/3, FPR 1/3;
# overall: selection 6/10, TPR 4/5, FPR 2/5


def test_rates_overall():
    assert fair.selection_rate(Y_TRUE, Y_PRED) == pytest.approx(0.6)
    assert fair.true_positive_rate(Y_TRUE, Y_PRED) == pytest.approx(0.8)
    assert fair.false_positive_rate(Y_TRUE, Y_PRED) == pytest.approx(0.4)
    assert fair.false_negative_rate(Y_TRUE, Y_PRED) == pytest.approx(0.2)
    assert fair.true_negative_rate(Y_TRUE, Y_PRED) == pytest.approx(0.6)
    assert fair.accuracy(Y_TRUE, Y_PRED) == pytest.approx(0.7)


def test_weighted_rates():
    # positives (weights 2, 1, 1, 1, 3) predicted 1, 1, 1, 0, 1: (2 + 1 + 1 + 3) / 8
    assert fair.true_positive_rate(Y_TRUE, Y_PRED, sample_weight=WEIGHTS) == pytest.approx(7 / 8)
    assert fair.selection_rate(Y_TRUE, Y_PRED, sample_weight=WEIGHTS) == pytest.approx(9 / 13)


def test_metric_frame_by_group_and_summaries():
    frame = fair.MetricFrame(fair.selection_rate, Y_TRUE, Y_PRED, GROUP)
    assert frame.overall == pytest.approx(0.6)
    assert frame.by_group == pytest.approx({"a": 0.75, "b": 0.5})
    assert (frame.group_min(), frame.group_max()) == pytest.approx((0.5, 0.75))
    assert frame.difference() == pytest.approx(0.25)
    assert frame.ratio() == pytest.approx(0.5 / 0.75)
    assert frame.difference("to_overall") == pytest.approx(0.15)
    assert frame.ratio("to_overall") == pytest.approx(min(0.6 / 0.75, 0.5 / 0.6))


def test_metric_frame_with_several_metrics():
    frame = fair.MetricFrame({"tpr": fair.true_positive_rate, "fpr": fair.false_positive_rate},
                             Y_TRUE, Y_PRED, GROUP)
    assert frame.by_group["tpr"] == pytest.approx({"a": 1.0, "b": 2 / 3})
    assert frame.by_group["fpr"] == pytest.approx({"a": 0.5, "b": 1 / 3})
    assert frame.overall == pytest.approx({"tpr": 0.8, "fpr": 0.4})
    assert frame.difference() == pytest.approx({"tpr": 1 / 3, "fpr": 1 / 6})


def test_intersectional_groups():
    frame = fair.MetricFrame(fair.selection_rate, Y_TRUE, Y_PRED, {"g": GROUP, "s": SECOND})
    assert frame.by_group == pytest.approx({("a", 0): 0.5, ("a", 1): 1.0, ("b", 0): 2 / 3, ("b", 1): 1 / 3})
    assert fair.demographic_parity_difference(Y_TRUE, Y_PRED, sensitive_features=[GROUP, SECOND]) == \
        pytest.approx(2 / 3)
    assert fair.demographic_parity_ratio(Y_TRUE, Y_PRED, sensitive_features=np.stack([GROUP, SECOND], 1)) == \
        pytest.approx(1 / 3)


def test_weighted_metric_frame():
    # group a: weights 2, 1, 1, 1 on predictions 1, 1, 0, 1 -> 4/5; group b: (1 + 1 + 3) / 8
    frame = fair.MetricFrame(fair.selection_rate, Y_TRUE, Y_PRED, GROUP, sample_weight=WEIGHTS)
    assert frame.by_group == pytest.approx({"a": 0.8, "b": 5 / 8})
    assert fair.demographic_parity_difference(Y_TRUE, Y_PRED, sensitive_features=GROUP,
                                              sample_weight=WEIGHTS) == pytest.approx(0.8 - 5 / 8)


def test_group_disparities():
    assert fair.demographic_parity_difference(Y_TRUE, Y_PRED, sensitive_features=GROUP) == pytest.approx(0.25)
    assert fair.demographic_parity_ratio(Y_TRUE, Y_PRED, sensitive_features=GROUP) == pytest.approx(2 / 3)
    assert fair.equalized_odds_difference(Y_TRUE, Y_PRED, sensitive_features=GROUP) == pytest.approx(1 / 3)
    assert fair.equalized_odds_ratio(Y_TRUE, Y_PRED, sensitive_features=GROUP) == pytest.approx(2 / 3)
    assert fair.equal_opportunity_difference(Y_TRUE, Y_PRED, sensitive_features=GROUP) == pytest.approx(1 / 3)
    assert fair.equal_opportunity_ratio(Y_TRUE, Y_PRED, sensitive_features=GROUP) == pytest.approx(2 / 3)
    # to the overall value: TPR max(|1 - 0.8|, |2/3 - 0.8|) = 0.2, FPR max(0.1, 1/15) = 0.1
    assert fair.equalized_odds_difference(Y_TRUE, Y_PRED, sensitive_features=GROUP,
                                          method="to_overall") == pytest.approx(0.2)


def test_aif360_style_differences():
    assert fair.statistical_parity_difference(Y_PRED, GROUP, privileged="a") == pytest.approx(0.5 - 0.75)
    assert fair.disparate_impact(Y_PRED, GROUP, privileged="a") == pytest.approx(0.5 / 0.75)
    assert fair.average_odds_difference(Y_TRUE, Y_PRED, GROUP, privileged="a") == \
        pytest.approx(((1 / 3 - 1 / 2) + (2 / 3 - 1)) / 2)
    assert fair.average_abs_odds_difference(Y_TRUE, Y_PRED, GROUP, privileged="a") == pytest.approx(0.25)
    # the unprivileged side gathers every other group
    assert fair.statistical_parity_difference(Y_PRED, {"g": GROUP, "s": SECOND}, privileged=("a", 1)) == \
        pytest.approx(4 / 8 - 1.0)  # 1 + 0 + 1 + 0 + 1 + 0 + 0 + 1 positives among the other 8
    weighted = fair.statistical_parity_difference(Y_PRED, GROUP, privileged="b", sample_weight=WEIGHTS)
    assert weighted == pytest.approx(0.8 - 5 / 8)


def test_entropy_indices():
    benefits = Y_PRED - Y_TRUE + 1  # 1 1 1 2 1 1 0 1 2 1, mean 1.1
    mu = 1.1
    theil = (7 * (1 / mu) * math.log(1 / mu) + 2 * (2 / mu) * math.log(2 / mu)) / 10
    assert list(benefits) == [1, 1, 1, 2, 1, 1, 0, 1, 2, 1]
    assert fair.theil_index(Y_TRUE, Y_PRED) == pytest.approx(theil)
    assert fair.generalized_entropy_index(Y_TRUE, Y_PRED, alpha=2) == pytest.approx((15 / 1.21 - 10) / 20)
    # group means 1.25 (a) and 1.0 (b)
    assert fair.between_group_generalized_entropy_index(Y_TRUE, Y_PRED, GROUP, alpha=2) == \
        pytest.approx((12.25 / 1.21 - 10) / 20)
    assert fair.generalized_entropy_index([1, 0, 1], [1, 0, 1]) == 0.0


def test_calibration_within_groups():
    probs = np.array([0.05, 0.15, 0.8, 0.85, 0.3, 0.9])
    truth = np.array([0, 0, 1, 0, 1, 1])
    # bins [0, 0.5] and (0.5, 1]: |0 - 0.1| * 2/4 + |0.5 - 0.825| * 2/4
    assert fair.binary_calibration_error(truth[:4], probs[:4], n_bins=2) == pytest.approx(0.2125)
    frame = fair.MetricFrame(lambda y, p: fair.binary_calibration_error(y, p, n_bins=2),
                             truth, probs, np.array([0, 0, 0, 0, 1, 1]))
    assert frame.by_group == pytest.approx({0: 0.2125, 1: (0.7 + 0.1) / 2})


def test_ratio_conventions_for_zero_rates():
    frame = fair.MetricFrame(fair.selection_rate, None, np.array([0, 0, 1, 1]), np.array([0, 0, 1, 1]))
    assert frame.ratio() == 0.0 and frame.difference() == 1.0
    empty = fair.MetricFrame(fair.selection_rate, None, np.zeros(4), np.array([0, 0, 1, 1]))
    assert math.isnan(empty.ratio())


def test_clear_errors():
    with pytest.raises(ValueError, match=r"y_true has 10, y_pred has 9"):
        fair.selection_rate(Y_TRUE, Y_PRED[:9])
    with pytest.raises(ValueError, match=r"sensitive_features has 3"):
        fair.MetricFrame(fair.selection_rate, Y_TRUE, Y_PRED, GROUP[:3])
    # group "a" has no negative label under these labels
    with pytest.raises(ValueError, match=r"false_positive_rate.*group 'a'.*no samples with a negative label"):
        fair.MetricFrame({"false_positive_rate": fair.false_positive_rate}, [1, 1, 0, 1], [1, 0, 0, 1],
                         ["a", "a", "b", "b"])
    with pytest.raises(ValueError, match=r"method must be one of"):
        fair.MetricFrame(fair.selection_rate, Y_TRUE, Y_PRED, GROUP).difference("largest")
    with pytest.raises(ValueError, match=r"privileged group 'c' must hold some samples"):
        fair.disparate_impact(Y_PRED, GROUP, privileged="c")
    with pytest.raises(ValueError, match=r"sample_weight has 2 values for 10 samples"):
        fair.selection_rate(Y_TRUE, Y_PRED, sample_weight=[1, 2])
