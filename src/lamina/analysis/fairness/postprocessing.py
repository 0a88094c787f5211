r"""Post-processing: group-specific randomized thresholds on a fixed score (Hardt, Price &
Srebro 2016, "Equality of opportunity in supervised learning"; fairlearn's ThresholdOptimizer).

In group a, the threshold rules y_hat = [s >= t] for t over the group's distinct scores (and
t = +inf, nothing positive) give the points (FPR, TPR) of the group's ROC curve; a rule that
draws threshold t_k with probability q_{a,k} reaches any point of their convex hull,
sum_k q_{a,k} (FPR_k, TPR_k), and selects sum_k q_{a,k} SEL_k. The optimizer solves the linear
program, over q >= 0 with sum_k q_{a,k} = 1 in each group,

    minimise   sum_a sum_k q_{a,k} (FP_{a,k} + FN_{a,k}) / W          (the expected error)
    such that  |rate_a(q) - rate_{a_0}(q)| <= tolerance for each group a and constrained rate,

the constrained rates being TPR and FPR (``"equalized_odds"``), the selection rate
(``"demographic_parity"``), TPR alone (``"true_positive_rate_parity"``, equal opportunity) or FPR
alone (``"false_positive_rate_parity"``), with scipy's ``linprog`` (HiGHS). FP, FN and W are
sample-weight sums. Both constant rules (everyone negative, everyone positive) are feasible,
so the expected accuracy is at least the better constant's. Its solution sits at a vertex, so
each group mixes at most a few thresholds (the two ends of one hull segment, as in the paper).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lamina.analysis.fairness.metric_frame import check_lengths, group_labels

__all__ = ["CONSTRAINTS", "ThresholdOptimizer"]

CONSTRAINTS = {
    "demographic_parity": ("selection",),
    "equalized_odds": ("tpr", "fpr"),
    "true_positive_rate_parity": ("tpr",),
    "false_positive_rate_parity": ("fpr",),
}


def _threshold_table(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray) -> dict[str, np.ndarray]:
    """Thresholds (+inf first, then the distinct scores from high to low) and the weighted
    true and false positives of the rule [s >= t] for each."""
    thresholds = np.concatenate(([np.inf], np.unique(scores)[::-1]))
    ranks = np.searchsorted(-thresholds[1:], -scores)  # the index of each sample's own score
    positives = np.bincount(ranks, weights=weights * labels, minlength=len(thresholds) - 1)
    negatives = np.bincount(ranks, weights=weights * (1 - labels), minlength=len(thresholds) - 1)
    return {"thresholds": thresholds,
            "tp": np.concatenate(([0.0], np.cumsum(positives))),
            "fp": np.concatenate(([0.0], np.cumsum(negatives)))}


class ThresholdOptimizer:
    """Fair randomized thresholds per group, on scores (higher: more likely positive).

    ``score_function`` (optional) maps inputs to scores, so that ``fit``/``predict`` take inputs;
    without it they take the scores themselves. After ``fit``, ``thresholds_[group]`` and
    ``probabilities_[group]`` hold each group's rules and their probabilities, and
    ``predict_proba`` gives P(y_hat = 1) under the randomized rule."""

    def __init__(self, constraints: str = "equalized_odds", score_function: Callable | None = None,
                 tolerance: float = 0.0):
        if constraints not in CONSTRAINTS:
            raise ValueError(f"ThresholdOptimizer: unknown constraints {constraints!r}; "
                             f"expected one of {sorted(CONSTRAINTS)}")
        if tolerance < 0:
            raise ValueError(f"ThresholdOptimizer: tolerance must be >= 0, got {tolerance!r}")
        self.constraints = constraints
        self.score_function = score_function
        self.tolerance = float(tolerance)
        self.thresholds_: dict | None = None

    def _scores(self, x) -> np.ndarray:
        scores = self.score_function(x) if self.score_function is not None else x
        return np.asarray(scores, dtype=np.float64).reshape(-1)

    def fit(self, x, y_true, sensitive_features, sample_weight=None) -> ThresholdOptimizer:
        from scipy.optimize import linprog

        who = "ThresholdOptimizer.fit"
        scores, labels = self._scores(x), np.asarray(y_true).reshape(-1)
        if not np.isin(labels, (0, 1)).all():
            raise ValueError(f"{who}: y_true must hold 0/1 labels, got values {np.unique(labels)[:5]}")
        keys = group_labels(sensitive_features, who)
        weights = np.ones(len(labels)) if sample_weight is None else np.asarray(sample_weight, np.float64).ravel()
        check_lengths(who, scores=scores, y_true=labels, sensitive_features=keys, sample_weight=weights)
        groups = list(dict.fromkeys(keys))
        tables, rates, offsets, start = {}, {}, {}, 0
        for group in groups:
            rows = np.array([k == group for k in keys])
            table = _threshold_table(scores[rows], labels[rows].astype(np.float64), weights[rows])
            positives, negatives = table["tp"][-1], table["fp"][-1]
            needed = CONSTRAINTS[self.constraints]
            if ("tpr" in needed and positives <= 0) or ("fpr" in needed and negatives <= 0):
                raise ValueError(f"{who}: group {group!r} has no {'positive' if positives <= 0 else 'negative'} "
                                 f"samples, which {self.constraints!r} needs for its rates")
            table["error"] = table["fp"] + (positives - table["tp"])
            tables[group] = table
            rates[group] = {"tpr": table["tp"] / max(positives, 1e-300), "fpr": table["fp"] / max(negatives, 1e-300),
                            "selection": (table["tp"] + table["fp"]) / (positives + negatives)}
            offsets[group] = start
            start += len(table["thresholds"])
        cost = np.concatenate([tables[g]["error"] for g in groups]) / weights.sum()
        equal_rows, inequality_rows = [], []
        for group in groups:
            row = np.zeros(start)
            row[offsets[group]:offsets[group] + len(tables[group]["thresholds"])] = 1
            equal_rows.append(row)
        first = groups[0]
        for group in groups[1:]:
            for rate in CONSTRAINTS[self.constraints]:
                row = np.zeros(start)
                row[offsets[group]:offsets[group] + len(tables[group]["thresholds"])] = rates[group][rate]
                row[offsets[first]:offsets[first] + len(tables[first]["thresholds"])] -= rates[first][rate]
                inequality_rows += [row, -row]
        solution = linprog(cost, A_ub=np.array(inequality_rows) if inequality_rows else None,
                           b_ub=np.full(len(inequality_rows), self.tolerance) if inequality_rows else None,
                           A_eq=np.array(equal_rows), b_eq=np.ones(len(groups)), bounds=(0, None), method="highs")
        if not solution.success:
            raise RuntimeError(f"{who}: the linear program failed: {solution.message}")
        self.thresholds_, self.probabilities_ = {}, {}
        for group in groups:
            q = np.clip(solution.x[offsets[group]:offsets[group] + len(tables[group]["thresholds"])], 0, None)
            used = q > 1e-12
            self.thresholds_[group] = tables[group]["thresholds"][used]
            self.probabilities_[group] = q[used] / q[used].sum()
        self.expected_error_ = float(solution.fun)
        return self

    def predict_proba(self, x, sensitive_features) -> np.ndarray:
        """P(y_hat = 1) = sum_k q_{a,k} [s >= t_{a,k}] for each sample of group a."""
        if self.thresholds_ is None:
            raise RuntimeError("ThresholdOptimizer.predict_proba: call fit first")
        scores = self._scores(x)
        keys = group_labels(sensitive_features, "ThresholdOptimizer.predict_proba")
        check_lengths("ThresholdOptimizer.predict_proba", scores=scores, sensitive_features=keys)
        probability = np.empty(len(scores))
        for i, (score, key) in enumerate(zip(scores, keys, strict=True)):
            if key not in self.thresholds_:
                raise ValueError(f"ThresholdOptimizer.predict_proba: group {key!r} was not seen in fit; "
                                 f"known groups: {list(self.thresholds_)}")
            probability[i] = self.probabilities_[key][score >= self.thresholds_[key]].sum()
        return probability

    def predict(self, x, sensitive_features, random_state: int | np.random.Generator | None = 0) -> np.ndarray:
        """0/1 predictions drawn from :meth:`predict_proba`."""
        probability = self.predict_proba(x, sensitive_features)
        return (np.random.default_rng(random_state).random(len(probability)) < probability).astype(np.int64)
