r"""Pre-processing mitigations: change the training data, not the learner.

* :func:`reweighing` (Kamiran & Calders 2012, AIF360's ``Reweighing``): each sample of group a
  and label y gets the weight w(a, y) = P(a) P(y) / P(a, y) (probabilities over the data, weighted
  by any given sample weights), the weight that would make A and Y independent. Under the new
  weights the rate of each label is the same in every group: P_w(y | a) = P(y).
* :class:`CorrelationRemover` (fairlearn): project the non-sensitive features onto the space
  orthogonal to the (centred) sensitive features. Each feature column x is regressed on the
  centred sensitive columns S by least squares, x = S beta + r, and replaced by
  alpha (x - S beta) + (1 - alpha) x: alpha = 1 leaves no linear correlation with S, alpha = 0
  leaves the data unchanged.
"""

from __future__ import annotations

import numpy as np

from lamina.analysis.fairness.metric_frame import check_lengths, group_labels

__all__ = ["CorrelationRemover", "reweighing"]


def reweighing(y_true, sensitive_features, sample_weight=None) -> np.ndarray:
    """w_i = P(a_i) P(y_i) / P(a_i, y_i), times the sample's own weight when given."""
    who = "reweighing"
    keys = group_labels(sensitive_features, who)
    labels = np.asarray(y_true).reshape(-1)
    n = check_lengths(who, y_true=labels, sensitive_features=keys)
    base = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).reshape(-1)
    check_lengths(who, y_true=labels, sample_weight=base)
    total = base.sum()
    if n == 0 or total <= 0:
        raise ValueError(f"{who}: needs samples with a positive total weight")
    weights = np.zeros(n)
    for group in dict.fromkeys(keys):
        in_group = np.array([k == group for k in keys])
        for label in np.unique(labels):
            cell = in_group & (labels == label)
            joint = base[cell].sum() / total
            if joint > 0:
                weights[cell] = base[cell] * (base[in_group].sum() / total) * \
                    (base[labels == label].sum() / total) / joint
    return weights


class CorrelationRemover:
    """Remove the linear correlation of the features with the sensitive columns.

    ``fit(X, sensitive)`` learns the column means and the least-squares coefficients beta of
    each feature on the centred sensitive columns; ``transform(X, sensitive)`` returns
    alpha (X - S_c beta) + (1 - alpha) X, S_c the sensitive columns centred with the fitted means.
    ``sensitive`` is a 1-D or 2-D numeric array (one-hot encode a categorical one; drop one
    column to keep S_c of full rank, or the minimum-norm solution is used)."""

    def __init__(self, alpha: float = 1.0):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"CorrelationRemover: alpha must be in [0, 1], got {alpha!r}")
        self.alpha = float(alpha)
        self.coef_: np.ndarray | None = None

    @staticmethod
    def _arrays(x, sensitive, who: str) -> tuple[np.ndarray, np.ndarray]:
        features = np.asarray(x, dtype=np.float64)
        columns = np.asarray(sensitive, dtype=np.float64)
        columns = columns.reshape(-1, 1) if columns.ndim == 1 else columns
        if features.ndim != 2 or columns.ndim != 2:
            raise ValueError(f"CorrelationRemover.{who}: X must be 2-D (samples, features) and sensitive 1-D or "
                             f"2-D, got shapes {features.shape} and {columns.shape}")
        check_lengths(f"CorrelationRemover.{who}", X=features, sensitive=columns)
        return features, columns

    def fit(self, x, sensitive) -> CorrelationRemover:
        features, columns = self._arrays(x, sensitive, "fit")
        self.sensitive_mean_ = columns.mean(axis=0)
        centred = columns - self.sensitive_mean_
        self.coef_ = np.linalg.lstsq(centred, features - features.mean(axis=0), rcond=None)[0]
        return self

    def transform(self, x, sensitive) -> np.ndarray:
        if self.coef_ is None:
            raise RuntimeError("CorrelationRemover.transform: call fit first")
        features, columns = self._arrays(x, sensitive, "transform")
        if columns.shape[1] != self.coef_.shape[0] or features.shape[1] != self.coef_.shape[1]:
            raise ValueError(f"CorrelationRemover.transform: fitted on {self.coef_.shape[1]} features and "
                             f"{self.coef_.shape[0]} sensitive columns, got {features.shape[1]} and {columns.shape[1]}")
        removed = features - (columns - self.sensitive_mean_) @ self.coef_
        return self.alpha * removed + (1 - self.alpha) * features

    def fit_transform(self, x, sensitive) -> np.ndarray:
        return self.fit(x, sensitive).transform(x, sensitive)
