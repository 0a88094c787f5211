r"""Pieces of semi-supervised learning: ramp-ups, sharpening, consistency losses and the
pseudo-label thresholds of FixMatch and FlexMatch.

- :func:`sigmoid_rampup` (Laine & Aila 2017, Mean Teacher): w(t) = exp(-5 (1 - t/L)^2) for
  t < L, 1 after; :func:`linear_rampup`: w(t) = min(t/L, 1).
- :func:`sharpen` (MixMatch): Sharpen(p, T)_c = p_c^(1/T) / sum_j p_j^(1/T); T -> 0 gives the
  one-hot argmax, T = 1 leaves p as it is.
- :func:`consistency_loss`: per sample, ``"mse"`` the mean over the C classes of
  (softmax(z)_c - q_c)^2, ``"ce"`` the cross-entropy -sum_c q_c log softmax(z)_c, then the
  mean over the batch of the per-sample loss times an optional mask. The targets q carry no
  gradient.
- :func:`fixmatch_unlabeled_loss` (Sohn et al. 2020): q = softmax(z_weak) (no gradient),
  mask_b = [max_c q_bc >= tau], loss = (1/(mu B)) sum_b mask_b CE(argmax_c q_bc, z_strong_b).
- :func:`flexmatch_class_thresholds` (Zhang et al. 2021, curriculum pseudo-labelling): with
  sigma_c the number of unlabelled samples whose confident (>= tau) prediction is class c and
  N unlabelled samples, the learning effect beta_c = sigma_c / max(max_j sigma_j, N - sum_j
  sigma_j) (with warm-up; sigma_c / max_j sigma_j without) and the class threshold
  T_c = M(beta_c) tau, with M(x) = x / (2 - x) (convex) or M(x) = x (linear).
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import log_softmax, softmax

__all__ = ["FLEXMATCH_MAPPINGS", "consistency_loss", "fixmatch_unlabeled_loss", "flexmatch_class_thresholds",
           "linear_rampup", "sharpen", "sigmoid_rampup"]

FLEXMATCH_MAPPINGS = ("convex", "linear")
CONSISTENCY_KINDS = ("mse", "ce")


def _check_real(value, name: str, who: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value):
        raise ValueError(f"{who}: {name} must be a finite real number, got {value!r}")
    return float(value)


def check_threshold(threshold, who: str) -> float:
    """``threshold`` as a float in (0, 1], or a ValueError naming ``who``."""
    value = _check_real(threshold, "threshold", who)
    if not 0.0 < value <= 1.0:
        raise ValueError(f"{who}: threshold must lie in (0, 1] (a confidence), got {threshold!r}")
    return value


def _rampup_progress(step, length, who: str) -> float | None:
    """step / length clipped to [0, 1], or None when ``length`` is 0 (no ramp-up)."""
    step, length = _check_real(step, "step", who), _check_real(length, "length", who)
    if length < 0:
        raise ValueError(f"{who}: length must be >= 0, got {length!r}")
    if length == 0:
        return None
    return min(max(step / length, 0.0), 1.0)


def sigmoid_rampup(step: float, length: float) -> float:
    """exp(-5 (1 - t)^2) with t = step / length clipped to [0, 1]; 1 when ``length`` is 0."""
    progress = _rampup_progress(step, length, "sigmoid_rampup")
    return 1.0 if progress is None else math.exp(-5.0 * (1.0 - progress) ** 2)


def linear_rampup(step: float, length: float) -> float:
    """step / length clipped to [0, 1]; 1 when ``length`` is 0."""
    progress = _rampup_progress(step, length, "linear_rampup")
    return 1.0 if progress is None else progress


def _as_tensor(x) -> Tensor:
    """``x`` as a constant tensor; floating arrays keep their dtype."""
    if isinstance(x, Tensor):
        return x
    values = backend.xp.asarray(x)
    return Tensor(values, dtype=values.dtype if values.dtype.kind == "f" else None)


def sharpen(p, temperature: float) -> Tensor:
    """p_c^(1/T) / sum_j p_j^(1/T) over the last axis of the probabilities ``p``."""
    temperature = _check_real(temperature, "temperature", "sharpen")
    if temperature <= 0:
        raise ValueError(f"sharpen: temperature T must be > 0, got {temperature!r}")
    p = _as_tensor(p)
    if p.ndim < 1:
        raise ShapeError(f"sharpen: p must have a class axis, got shape {tuple(p.shape)}")
    powered = p ** (1.0 / temperature)
    return powered / powered.sum(axis=-1, keepdims=True)


def _targets(targets, logits: Tensor, who: str) -> Tensor:
    """The targets as a gradient-free (B, C) tensor of the logits' dtype (labels one-hot)."""
    values = targets.detach().data if isinstance(targets, Tensor) else backend.xp.asarray(targets)
    if values.ndim == 1 and values.dtype.kind in "iu":
        values = backend.xp.eye(logits.shape[-1], dtype=logits.dtype)[values]
    if tuple(values.shape) != tuple(logits.shape):
        raise ShapeError(f"{who}: targets of shape {tuple(values.shape)} do not match the logits "
                         f"{tuple(logits.shape)} (expected (batch, classes) rows or (batch,) labels)")
    return Tensor(values, dtype=logits.dtype)


def _mask(mask, batch: int, logits: Tensor, who: str):
    if mask is None:
        return None
    values = backend.xp.asarray(mask.detach().data if isinstance(mask, Tensor) else mask)
    if tuple(values.shape) != (batch,):
        raise ShapeError(f"{who}: mask must have one value per sample, shape ({batch},), got "
                         f"{tuple(values.shape)}")
    return Tensor(values, dtype=logits.dtype)


def consistency_loss(logits, targets, kind: str = "mse", mask=None) -> Tensor:
    """The mean over the batch of mask_b l_b, with l_b the ``"mse"`` between softmax(logits_b)
    and the target probabilities (mean over classes) or their ``"ce"`` cross-entropy.
    ``targets``: (B, C) probabilities or (B,) labels, taken without gradient; ``mask``: None
    (all ones) or B weights."""
    who = "consistency_loss"
    if kind not in CONSISTENCY_KINDS:
        raise ValueError(f"{who}: kind must be one of {CONSISTENCY_KINDS}, got {kind!r}")
    logits = _as_tensor(logits)
    if logits.ndim != 2:
        raise ShapeError(f"{who}: logits must be (batch, classes), got shape {tuple(logits.shape)}")
    target = _targets(targets, logits, who)
    if kind == "mse":
        difference = softmax(logits, axis=-1) - target
        per_sample = (difference * difference).mean(axis=-1)
    else:
        per_sample = -(target * log_softmax(logits, axis=-1)).sum(axis=-1)
    weights = _mask(mask, logits.shape[0], logits, who)
    return (per_sample if weights is None else per_sample * weights).mean()


def fixmatch_unlabeled_loss(logits_weak, logits_strong, threshold: float = 0.95) -> tuple[Tensor, np.ndarray]:
    """FixMatch's unlabelled loss and its mask (see the module's docstring): the confident
    argmax of the weakly augmented view's softmax is the hard label of the strong view."""
    who = "fixmatch_unlabeled_loss"
    threshold = check_threshold(threshold, who)
    logits_strong = _as_tensor(logits_strong)
    weak = logits_weak.detach().data if isinstance(logits_weak, Tensor) else backend.xp.asarray(logits_weak)
    if weak.ndim != 2 or tuple(weak.shape) != tuple(logits_strong.shape):
        raise ShapeError(f"{who}: logits_weak {tuple(weak.shape)} and logits_strong {tuple(logits_strong.shape)} "
                         "must both be (batch, classes)")
    shifted = backend.xp.exp(weak - weak.max(axis=-1, keepdims=True))
    probs = shifted / shifted.sum(axis=-1, keepdims=True)
    mask = (probs.max(axis=-1) >= threshold).astype(logits_strong.dtype)
    loss = consistency_loss(logits_strong, probs.argmax(axis=-1), kind="ce", mask=mask)
    return loss, backend.to_numpy(mask)


def flexmatch_class_thresholds(counts, num_unlabeled: int, threshold: float = 0.95, warmup: bool = True,
                               mapping: str = "convex") -> np.ndarray:
    """The per-class thresholds T_c = M(beta_c) tau of FlexMatch (see the module's docstring)
    from ``counts`` sigma_c, the confident predictions per class among the ``num_unlabeled``
    unlabelled samples. Before any confident prediction every beta_c is 0, and so is T_c."""
    who = "flexmatch_class_thresholds"
    tau = check_threshold(threshold, who)
    if mapping not in FLEXMATCH_MAPPINGS:
        raise ValueError(f"{who}: mapping must be one of {FLEXMATCH_MAPPINGS}, got {mapping!r}")
    sigma = np.asarray(counts, dtype=np.float64)
    if sigma.ndim != 1 or sigma.size == 0 or np.any(sigma < 0):
        raise ValueError(f"{who}: counts must be a non-empty 1-d array of counts >= 0, got {counts!r}")
    if isinstance(num_unlabeled, bool) or not isinstance(num_unlabeled, numbers.Integral) \
            or num_unlabeled < sigma.sum():
        raise ValueError(f"{who}: num_unlabeled must be an integer >= the total count {sigma.sum():g}, "
                         f"got {num_unlabeled!r}")
    normaliser = sigma.max()
    if warmup:
        normaliser = max(normaliser, num_unlabeled - sigma.sum())
    beta = sigma / normaliser if normaliser > 0 else np.zeros_like(sigma)
    mapped = beta / (2.0 - beta) if mapping == "convex" else beta
    return mapped * tau
