r"""Membership inference: was a record in a model's training set? (as ML Privacy Meter and
TensorFlow Privacy's membership-inference tools have it).

Every attack gives one score per record, higher meaning "more likely a member"; ``probs``
are the model's class probabilities (N, C) (softmax outputs) and ``labels`` the true classes.
:func:`lamina.analysis.attack_report` turns scores into ROC AUC and TPR at low FPR.

* :func:`loss_threshold_attack` (Yeom et al. 2018): s = -l(x, y) = log p_y.
* :func:`confidence_attack`: s = p_y.
* :func:`entropy_attack`: s = -H(p) = sum_i p_i log p_i; ``modified`` (Song and Mittal 2021):
  s = -Mentr(p, y) with Mentr(p, y) = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i),
  which, unlike the entropy, grows for confident wrong predictions.
  These three return a :class:`ThresholdAttack`: the scores, and membership decisions when a
  threshold is given or chosen on reference records whose membership is known (the one with
  the best balanced accuracy there).
* :func:`shadow_model_attack` (Shokri et al. 2017): k shadow models, each trained on half
  of its own disjoint part of the attacker's data; one logistic-regression attack classifier
  per class learns IN from OUT on the shadow models' output vectors and scores the target's.
* :func:`lira` (Carlini et al. 2022, the likelihood-ratio attack): with the logit-scaled
  confidence phi = log(p_y / (1 - p_y)) (:func:`lira_confidence`) of M reference models,
  fit per record Gaussians N(mu_in, s_in^2) to the models that trained on it and
  N(mu_out, s_out^2) to those that did not; online s = log N(phi; mu_in, s_in) -
  log N(phi; mu_out, s_out); offline (OUT models only) the one-sided test
  s = -log P(Z > phi), Z ~ N(mu_out, s_out^2).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import numpy as np

from lamina import backend
from lamina.analysis.privacy_audit import membership_roc
from lamina.autograd import Tensor
from lamina.errors import ShapeError

__all__ = ["ThresholdAttack", "best_threshold", "confidence_attack", "entropy_attack", "lira", "lira_confidence",
           "loss_threshold_attack", "shadow_model_attack"]

#: Probabilities are kept in [TINY, 1 - TINY] before taking logarithms.
TINY = 1e-12


class ThresholdAttack(NamedTuple):
    """``scores`` (N,), higher: more likely a member; ``threshold`` (None when neither given
    nor chosen); ``is_member``: scores >= threshold (None without a threshold)."""

    scores: np.ndarray
    threshold: float | None
    is_member: np.ndarray | None


def _array(values) -> np.ndarray:
    data = values.data if isinstance(values, Tensor) else values
    return np.asarray(backend.to_numpy(data) if not isinstance(data, (list, tuple)) else data)


def _probs_and_labels(probs, labels, fn: str) -> tuple[np.ndarray, np.ndarray]:
    p = _array(probs).astype(np.float64)
    if p.ndim != 2:
        raise ShapeError(f"{fn}: probs must be (records, classes), got shape {p.shape}")
    y = _array(labels)
    if y.shape != (len(p),) or y.dtype.kind not in "iu":
        raise ShapeError(f"{fn}: labels must be {len(p)} integer classes, got shape {y.shape} dtype {y.dtype}")
    if len(y) and (y.min() < 0 or y.max() >= p.shape[1]):
        raise ValueError(f"{fn}: labels must lie in [0, {p.shape[1]}), got range [{y.min()}, {y.max()}]")
    if (p < 0).any() or not np.allclose(p.sum(axis=1), 1.0, atol=1e-3):
        raise ValueError(f"{fn}: probs must be probabilities (non-negative rows summing to 1); pass the softmax "
                         "of the model's outputs")
    return np.clip(p, TINY, 1.0 - TINY), y.astype(np.int64)


def _membership(is_member, n: int, fn: str) -> np.ndarray:
    member = _array(is_member)
    if member.shape != (n,):
        raise ShapeError(f"{fn}: is_member must have one flag per record ({n}), got shape {member.shape}")
    member = member.astype(bool)
    if member.all() or not member.any():
        raise ValueError(f"{fn}: is_member must hold both members and non-members")
    return member


def best_threshold(scores, is_member) -> float:
    """The threshold t whose decision ``scores >= t`` has the best balanced accuracy
    (TPR + TNR) / 2 on records whose membership is known (the highest such t on ties)."""
    s = _array(scores).astype(np.float64).ravel()
    _membership(is_member, len(s), "best_threshold")
    fpr, tpr, thresholds = membership_roc(s, is_member)
    balanced = (tpr + 1.0 - fpr)[1:]                        # the first threshold, +inf, flags nothing
    return float(thresholds[1:][np.argmax(balanced)])


def _decide(scores: np.ndarray, threshold, reference, score_fn: Callable, fn: str) -> ThresholdAttack:
    if threshold is not None and reference is not None:
        raise ValueError(f"{fn}: give a threshold or reference records to choose it on, not both")
    if reference is not None:
        if len(reference) != 3:
            raise ValueError(f"{fn}: reference must be (probs, labels, is_member), got {len(reference)} items")
        ref_probs, ref_labels, ref_member = reference
        threshold = best_threshold(score_fn(*_probs_and_labels(ref_probs, ref_labels, fn)), ref_member)
    if threshold is None:
        return ThresholdAttack(scores, None, None)
    return ThresholdAttack(scores, float(threshold), scores >= threshold)


def _loss_scores(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    return np.log(p[np.arange(len(y)), y])


def _confidence_scores(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    return p[np.arange(len(y)), y]


def _entropy_scores(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (p * np.log(p)).sum(axis=1)


def _modified_entropy_scores(p: np.ndarray, y: np.ndarray) -> np.ndarray:
    rows = np.arange(len(y))
    p_true = p[rows, y]
    others = -p * np.log(1.0 - p)
    others[rows, y] = 0.0
    return -(-(1.0 - p_true) * np.log(p_true) + others.sum(axis=1))


def loss_threshold_attack(probs, labels, threshold: float | None = None, reference=None) -> ThresholdAttack:
    """Yeom et al.'s attack: s = -cross-entropy = log p_y; members have low loss. ``threshold``
    on s (Yeom et al. take minus the mean training loss), or ``reference`` = (probs, labels,
    is_member) of records with known membership to choose it on (:func:`best_threshold`);
    neither: scores only (report them over all thresholds with :func:`attack_report`)."""
    p, y = _probs_and_labels(probs, labels, "loss_threshold_attack")
    return _decide(_loss_scores(p, y), threshold, reference, _loss_scores, "loss_threshold_attack")


def confidence_attack(probs, labels, threshold: float | None = None, reference=None) -> ThresholdAttack:
    """s = p_y, the confidence in the true class; ``threshold``/``reference`` as in
    :func:`loss_threshold_attack`."""
    p, y = _probs_and_labels(probs, labels, "confidence_attack")
    return _decide(_confidence_scores(p, y), threshold, reference, _confidence_scores, "confidence_attack")


def entropy_attack(probs, labels, modified: bool = False, threshold: float | None = None,
                   reference=None) -> ThresholdAttack:
    """s = -H(p) = sum_i p_i log p_i (members get peaked outputs), or with ``modified`` Song
    and Mittal's s = -Mentr(p, y), Mentr = -(1 - p_y) log p_y - sum_{i != y} p_i log(1 - p_i).
    ``threshold``/``reference`` as in :func:`loss_threshold_attack`."""
    p, y = _probs_and_labels(probs, labels, "entropy_attack")
    score_fn = _modified_entropy_scores if modified else _entropy_scores
    return _decide(score_fn(p, y), threshold, reference, score_fn, "entropy_attack")


# -- shadow models -----------------------------------------------------------------------------

def _attack_features(p: np.ndarray) -> np.ndarray:
    return np.log(p)


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 0.5 * (1.0 + np.tanh(0.5 * z))


def _fit_logistic(features: np.ndarray, targets: np.ndarray, l2: float = 1e-2, steps: int = 25) -> np.ndarray:
    """Weights (with a bias last) of an L2-regularised logistic regression, by Newton steps."""
    design = np.hstack([features, np.ones((len(features), 1))])
    weights = np.zeros(design.shape[1])
    penalty = l2 * np.eye(design.shape[1])
    penalty[-1, -1] = 0.0
    for _ in range(steps):
        prob = _sigmoid(design @ weights)
        gradient = design.T @ (prob - targets) + penalty @ weights
        hessian = (design * (prob * (1 - prob))[:, None]).T @ design + penalty + 1e-9 * np.eye(len(weights))
        weights -= np.linalg.solve(hessian, gradient)
    return weights


def _standardise(features: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (features - mean) / std


def shadow_model_attack(train_shadow: Callable, shadow_x, shadow_y, target_probs, target_labels,
                        num_shadows: int = 4, seed: int | None = 0) -> np.ndarray:
    """Shokri et al.'s attack. ``shadow_x``, ``shadow_y``: the attacker's own records, drawn
    like the target's training data; they are shuffled and cut into ``num_shadows`` disjoint
    parts, and ``train_shadow(x, y)`` (mimicking the target's training) is called on the first
    half of each part and must return a function mapping inputs to class probabilities. Each
    shadow model's outputs on its IN half (label 1) and OUT half (label 0) train, per class,
    a logistic-regression attack classifier on log-probability vectors; it scores each target
    record (``target_probs`` (N, C), ``target_labels``) with its class's P(IN). A class with
    no shadow record of both kinds gets 0.5."""
    fn = "shadow_model_attack"
    if isinstance(num_shadows, bool) or not isinstance(num_shadows, int) or num_shadows < 1:
        raise ValueError(f"{fn}: num_shadows must be a positive int, got {num_shadows!r}")
    x = _array(shadow_x)
    y = _array(shadow_y)
    if len(x) != len(y) or len(x) < 2 * num_shadows:
        raise ShapeError(f"{fn}: {len(x)} shadow inputs and {len(y)} labels; expected as many labels as inputs "
                         f"and at least 2 records per shadow model ({2 * num_shadows})")
    target_p, target_y = _probs_and_labels(target_probs, target_labels, fn)
    order = np.random.default_rng(seed).permutation(len(x))
    outputs, classes, members = [], [], []
    for part in np.array_split(order, num_shadows):
        inside, outside = part[:len(part) // 2], part[len(part) // 2:]
        predict = train_shadow(x[inside], y[inside])
        for rows, member in ((inside, 1.0), (outside, 0.0)):
            p, labels = _probs_and_labels(predict(x[rows]), y[rows], fn)
            outputs.append(p)
            classes.append(labels)
            members.append(np.full(len(rows), member))
    outputs, classes, members = np.concatenate(outputs), np.concatenate(classes), np.concatenate(members)
    if outputs.shape[1] != target_p.shape[1]:
        raise ShapeError(f"{fn}: the shadow models give {outputs.shape[1]} classes, the target {target_p.shape[1]}")
    scores = np.full(len(target_y), 0.5)
    for c in np.unique(target_y):
        mine = classes == c
        if len(np.unique(members[mine])) < 2:
            continue
        features = _attack_features(outputs[mine])
        mean, std = features.mean(axis=0), features.std(axis=0) + 1e-6
        weights = _fit_logistic(_standardise(features, mean, std), members[mine])
        rows = target_y == c
        design = np.hstack([_standardise(_attack_features(target_p[rows]), mean, std), np.ones((rows.sum(), 1))])
        scores[rows] = _sigmoid(design @ weights)
    return scores


# -- LiRA --------------------------------------------------------------------------------------

def lira_confidence(probs, labels) -> np.ndarray:
    """phi = log(p_y / (1 - p_y)) per record, with 1 - p_y taken as the sum of the other
    classes' probabilities (no cancellation when p_y is near 1)."""
    p = _array(probs).astype(np.float64)
    _probs_and_labels(p, labels, "lira_confidence")
    y = _array(labels).astype(np.int64)
    rows = np.arange(len(y))
    p_true = p[rows, y]
    others = p.copy()
    others[rows, y] = 0.0
    rest = others.sum(axis=1)
    smallest = np.finfo(np.float64).tiny
    return np.log(np.maximum(p_true, smallest)) - np.log(np.maximum(rest, smallest))


def _log_normal_pdf(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return -0.5 * ((x - mean) / std) ** 2 - np.log(std) - 0.5 * math.log(2 * math.pi)


def _masked_mean_std(values: np.ndarray, mask: np.ndarray, fixed_variance: bool) -> tuple[np.ndarray, np.ndarray]:
    counts = mask.sum(axis=0)
    mean = (values * mask).sum(axis=0) / counts
    if fixed_variance:
        residuals = (values - mean) * mask
        std = np.full(values.shape[1], math.sqrt((residuals ** 2).sum() / mask.sum()))
    else:
        std = np.sqrt((((values - mean) * mask) ** 2).sum(axis=0) / counts)
    return mean, std


def lira(target_confidence, reference_confidences, reference_in, online: bool = True,
         fixed_variance: bool = False, min_std: float = 1e-6) -> np.ndarray:
    """LiRA scores (module docstring) for N records. ``target_confidence`` (N,): phi of the
    attacked model (:func:`lira_confidence`); ``reference_confidences`` (M, N): phi of each of
    M reference models, trained on random halves of a population holding the records;
    ``reference_in`` (M, N) booleans: whether reference model m trained on record n. Means and
    standard deviations are the plain (ddof 0) ones over a record's IN or OUT models, floored
    at ``min_std``; ``fixed_variance``: one standard deviation per side pooled over all records
    (as the paper advises with few reference models). ``online`` needs every record both IN
    and OUT of some model; offline uses the OUT models only."""
    fn = "lira"
    phi = _array(target_confidence).astype(np.float64)
    reference = _array(reference_confidences).astype(np.float64)
    inside = _array(reference_in).astype(bool)
    if phi.ndim != 1 or reference.ndim != 2 or reference.shape[1] != len(phi) or inside.shape != reference.shape:
        raise ShapeError(f"{fn}: expected target_confidence (N,), reference_confidences (M, N) and reference_in "
                         f"(M, N); got {phi.shape}, {reference.shape} and {inside.shape}")
    if not min_std > 0:
        raise ValueError(f"{fn}: min_std must be > 0, got {min_std!r}")
    if not (~inside).any(axis=0).all():
        raise ValueError(f"{fn}: every record needs at least one reference model that did not train on it")
    mean_out, std_out = _masked_mean_std(reference, ~inside, fixed_variance)
    std_out = np.maximum(std_out, min_std)
    if not online:
        from scipy.stats import norm

        return -norm.logsf(phi, loc=mean_out, scale=std_out)
    if not inside.any(axis=0).all():
        raise ValueError(f"{fn}: online LiRA needs every record in the training set of at least one reference "
                         "model; use online=False otherwise")
    mean_in, std_in = _masked_mean_std(reference, inside, fixed_variance)
    std_in = np.maximum(std_in, min_std)
    return _log_normal_pdf(phi, mean_in, std_in) - _log_normal_pdf(phi, mean_out, std_out)
