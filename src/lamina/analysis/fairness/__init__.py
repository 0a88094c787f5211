"""Fairness assessment and mitigation for binary classifiers (as fairlearn and AIF360).

* Assessment: :class:`MetricFrame` (a metric overall and per group, intersectional groups,
  sample weights; ``difference``/``ratio`` between groups or to the overall value) and the
  metrics of :mod:`lamina.analysis.fairness.metrics` (selection and error rates, demographic
  parity, equalized odds, equal opportunity, AIF360's disparate impact, statistical parity and
  average odds differences, generalized entropy / Theil indices, calibration error).
* Pre-processing: :func:`reweighing`, :class:`CorrelationRemover`.
* In-processing: :class:`ExponentiatedGradient` with :class:`DemographicParity`,
  :class:`EqualizedOdds` or :class:`TruePositiveRateParity`; fairness penalties and adversarial
  debiasing for lamina models are in :mod:`lamina.train.fairness`.
* Post-processing: :class:`ThresholdOptimizer`.
* Data: :func:`make_biased_classification`, :func:`breast_cancer_with_group`.
"""

from lamina.analysis.fairness.datasets import breast_cancer_with_group, make_biased_classification
from lamina.analysis.fairness.metric_frame import MetricFrame, group_labels
from lamina.analysis.fairness.metrics import (
    accuracy,
    average_abs_odds_difference,
    average_odds_difference,
    between_group_generalized_entropy_index,
    binary_calibration_error,
    demographic_parity_difference,
    demographic_parity_ratio,
    disparate_impact,
    equal_opportunity_difference,
    equal_opportunity_ratio,
    equalized_odds_difference,
    equalized_odds_ratio,
    false_negative_rate,
    false_positive_rate,
    generalized_entropy_index,
    selection_rate,
    statistical_parity_difference,
    theil_index,
    true_negative_rate,
    true_positive_rate,
)
from lamina.analysis.fairness.postprocessing import ThresholdOptimizer
from lamina.analysis.fairness.preprocessing import CorrelationRemover, reweighing
from lamina.analysis.fairness.reductions import (
    DemographicParity,
    EqualizedOdds,
    ExponentiatedGradient,
    Moment,
    TruePositiveRateParity,
    WeightedLogisticRegression,
)

__all__ = [
    "CorrelationRemover", "DemographicParity", "EqualizedOdds", "ExponentiatedGradient", "MetricFrame", "Moment",
    "ThresholdOptimizer", "TruePositiveRateParity", "WeightedLogisticRegression", "accuracy",
    "average_abs_odds_difference", "average_odds_difference", "between_group_generalized_entropy_index",
    "binary_calibration_error", "breast_cancer_with_group", "demographic_parity_difference", "demographic_parity_ratio",
    "disparate_impact", "equal_opportunity_difference", "equal_opportunity_ratio", "equalized_odds_difference",
    "equalized_odds_ratio", "false_negative_rate", "false_positive_rate", "generalized_entropy_index", "group_labels",
    "make_biased_classification", "reweighing", "selection_rate", "statistical_parity_difference", "theil_index",
    "true_negative_rate", "true_positive_rate",
]
