"""Speaker verification scoring: cosine scores, score normalisation, EER and minDCF.

A trial pairs an enrolment and a test embedding; its score says how likely they come from
one speaker, its label is 1 (target: same speaker) or 0 (non-target). For a threshold t,
trials scoring >= t are accepted:

    P_miss(t) = #(targets below t) / #targets,   P_fa(t) = #(non-targets at or above t) / #non-targets.

* :func:`eer`: the equal error rate, where the ROC curve (P_fa, P_miss) over all thresholds,
  drawn with straight segments between its points, crosses P_miss = P_fa; returns the rate and
  the threshold interpolated on the same segment (the usual scripts' brentq on interp1d).
* :func:`min_dcf`: NIST's normalised minimum detection cost, min_t C_det(t) / C_default with
  C_det = c_miss P_miss p_target + c_fa P_fa (1 - p_target) and C_default = min(c_miss p_target,
  c_fa (1 - p_target)), the cost of always accepting or always rejecting.
* :func:`cosine_scores` of paired embeddings, and the normalisations :func:`s_norm` (symmetric)
  and :func:`as_norm` (adaptive, Matejka et al. 2017): with a cohort of impostor embeddings,
  s' = ((s - mu_e) / sigma_e + (s - mu_t) / sigma_t) / 2, mu_e and sigma_e the mean and std of
  the enrolment's scores against the cohort (for as_norm: against its top-k closest cohort
  members), mu_t, sigma_t the same for the test side.
"""

from __future__ import annotations

import numpy as np

from lamina.errors import ShapeError

__all__ = ["as_norm", "cosine_scores", "detection_error_curve", "eer", "min_dcf", "normalize_scores", "s_norm"]


def _trials(scores, labels, fn: str) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    labels = np.asarray(labels)
    if scores.ndim != 1 or labels.ndim != 1 or len(scores) != len(labels):
        raise ShapeError(f"{fn}: scores and labels must be 1-D of one length (one per trial), got shapes "
                         f"{scores.shape} and {labels.shape}")
    if labels.dtype.kind not in "biuf" or not np.isin(labels, (0, 1)).all():
        found = np.unique(labels)[:6].tolist() if labels.dtype.kind in "biuf" else labels.dtype
        raise ValueError(f"{fn}: labels must be 0 (non-target) or 1 (target), got values {found}")
    labels = labels.astype(bool)
    if labels.all() or not labels.any():
        raise ValueError(f"{fn}: the trials need both target (1) and non-target (0) labels, got "
                         f"{int(labels.sum())} targets among {len(labels)} trials")
    if not np.isfinite(scores).all():
        raise ValueError(f"{fn}: the scores must be finite")
    return scores, labels


def detection_error_curve(scores, labels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(P_fa, P_miss, thresholds) over the thresholds +inf (reject all) and every distinct
    score in decreasing order (the last accepts all): P_fa rises from 0 to 1, P_miss falls
    from 1 to 0."""
    scores, labels = _trials(scores, labels, "detection_error_curve")
    order = np.argsort(-scores, kind="stable")
    sorted_scores, sorted_labels = scores[order], labels[order]
    last_of_value = np.r_[sorted_scores[1:] != sorted_scores[:-1], True]   # cut between distinct scores
    accepted_targets = np.cumsum(sorted_labels)[last_of_value]
    accepted_nontargets = np.cumsum(~sorted_labels)[last_of_value]
    targets, nontargets = labels.sum(), (~labels).sum()
    p_fa = np.r_[0.0, accepted_nontargets / nontargets]
    p_miss = np.r_[1.0, 1.0 - accepted_targets / targets]
    thresholds = np.r_[np.inf, sorted_scores[last_of_value]]
    return p_fa, p_miss, thresholds


def eer(scores, labels) -> tuple[float, float]:
    """(equal error rate, threshold): see the module docstring. 0 for separable scores, the
    threshold then the lowest target score."""
    p_fa, p_miss, thresholds = detection_error_curve(scores, labels)
    gap = p_miss - p_fa                                   # falls from 1 to -1
    k = int(np.argmax(gap <= 0))
    if gap[k] == 0 or k == 0:
        return float(p_fa[k]), float(thresholds[k])
    fraction = gap[k - 1] / (gap[k - 1] - gap[k])
    rate = p_fa[k - 1] + fraction * (p_fa[k] - p_fa[k - 1])
    if np.isinf(thresholds[k - 1]):
        return float(rate), float(thresholds[k])
    return float(rate), float(thresholds[k - 1] + fraction * (thresholds[k] - thresholds[k - 1]))


def min_dcf(scores, labels, p_target: float = 0.01, c_miss: float = 1.0, c_fa: float = 1.0) -> tuple[float, float]:
    """(normalised minimum detection cost, its threshold): see the module docstring. The
    thresholds tried are +inf (reject all) and every distinct score."""
    if not 0 < p_target < 1:
        raise ValueError(f"min_dcf: p_target must lie in (0, 1), got {p_target!r}")
    if not (c_miss > 0 and c_fa > 0):
        raise ValueError(f"min_dcf: c_miss and c_fa must be positive, got c_miss={c_miss!r}, c_fa={c_fa!r}")
    p_fa, p_miss, thresholds = detection_error_curve(scores, labels)
    cost = c_miss * p_miss * p_target + c_fa * p_fa * (1 - p_target)
    k = int(np.argmin(cost))
    return float(cost[k] / min(c_miss * p_target, c_fa * (1 - p_target))), float(thresholds[k])


def _rows(x, fn: str, what: str) -> np.ndarray:
    x = np.asarray(getattr(x, "data", x), dtype=np.float64)
    if x.ndim != 2:
        raise ShapeError(f"{fn}: {what} must be embeddings (N, D), got shape {x.shape}")
    return x


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def cosine_scores(enrol, test) -> np.ndarray:
    """cos(enrol_i, test_i) for paired embeddings (T, D) and (T, D): (T,)."""
    enrol, test = _rows(enrol, "cosine_scores", "enrol"), _rows(test, "cosine_scores", "test")
    if enrol.shape != test.shape:
        raise ShapeError(f"cosine_scores: enrol and test must pair up row by row, got shapes {enrol.shape} and "
                         f"{test.shape}")
    return (_unit(enrol) * _unit(test)).sum(axis=1)


def _cohort_statistics(cohort_scores: np.ndarray, top_k: int | None) -> tuple[np.ndarray, np.ndarray]:
    if top_k is not None:
        cohort_scores = -np.sort(-cohort_scores, axis=1)[:, :top_k]
    return cohort_scores.mean(axis=1), np.maximum(cohort_scores.std(axis=1), 1e-12)


def normalize_scores(scores, enrol_cohort_scores, test_cohort_scores, top_k: int | None = None) -> np.ndarray:
    """Symmetric normalisation of trial scores (T,) given each side's scores against the
    cohort, (T, C) each; ``top_k``: keep each row's k highest cohort scores (adaptive)."""
    scores = np.asarray(scores, dtype=np.float64)
    enrol_cohort = np.asarray(enrol_cohort_scores, dtype=np.float64)
    test_cohort = np.asarray(test_cohort_scores, dtype=np.float64)
    if scores.ndim != 1 or enrol_cohort.shape != test_cohort.shape or enrol_cohort.shape[:1] != scores.shape:
        raise ShapeError(f"normalize_scores: expected scores (T,) and cohort scores (T, C) for both sides, got "
                         f"shapes {scores.shape}, {enrol_cohort.shape} and {test_cohort.shape}")
    if top_k is not None and not (isinstance(top_k, int) and 1 <= top_k <= enrol_cohort.shape[1]):
        raise ValueError(f"normalize_scores: top_k must be an int in [1, {enrol_cohort.shape[1]}] (the cohort "
                         f"size), got {top_k!r}")
    mean_e, std_e = _cohort_statistics(enrol_cohort, top_k)
    mean_t, std_t = _cohort_statistics(test_cohort, top_k)
    return 0.5 * ((scores - mean_e) / std_e + (scores - mean_t) / std_t)


def s_norm(enrol, test, cohort, top_k: int | None = None) -> np.ndarray:
    """Cosine scores of paired embeddings (T, D), s-normalised with the ``cohort`` (C, D);
    ``top_k`` makes it adaptive (:func:`as_norm`)."""
    enrol, test = _rows(enrol, "s_norm", "enrol"), _rows(test, "s_norm", "test")
    cohort = _rows(cohort, "s_norm", "cohort")
    if cohort.shape[1] != enrol.shape[1]:
        raise ShapeError(f"s_norm: the cohort's embeddings {cohort.shape} must have the trials' dimension "
                         f"{enrol.shape[1]}")
    unit_cohort = _unit(cohort)
    return normalize_scores(cosine_scores(enrol, test), _unit(enrol) @ unit_cohort.T, _unit(test) @ unit_cohort.T,
                            top_k)


def as_norm(enrol, test, cohort, top_k: int = 300) -> np.ndarray:
    """Adaptive s-norm: :func:`s_norm` over each side's ``top_k`` highest-scoring cohort
    members (all of them when the cohort is smaller)."""
    cohort = _rows(cohort, "as_norm", "cohort")
    return s_norm(enrol, test, cohort, min(top_k, len(cohort)))
