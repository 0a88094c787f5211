r"""Losses that tolerate noisy class labels: ``loss(logits, labels, ...)``.

``logits`` (N, C) are unnormalised scores, p = softmax(logits), ``labels`` (N,) the given
(possibly wrong) class indices y. Each loss is composed of recorded ops, so it has first and
second derivatives; ``reduction`` is ``'mean'``, ``'sum'`` or ``'none'`` (one loss per row).

- :func:`generalized_cross_entropy` (Zhang & Sabuncu 2018): L = (1 - p_y^q) / q; q -> 0 gives
  the cross-entropy -log p_y, q = 1 the mean absolute error 1 - p_y (bounded, noise-robust).
- :func:`symmetric_cross_entropy` (Wang et al. 2019): alpha CE + beta RCE, with the reverse
  cross-entropy RCE = -sum_k p_k log y_k where log 0 is clipped to A (= -4): RCE = -A (1 - p_y).
- :func:`bootstrap_loss` (Reed et al. 2015): the target is mixed with the model's prediction;
  soft: -sum_k (beta y_k + (1 - beta) p_k) log p_k, hard: -beta log p_y - (1 - beta) log p_argmax.
- :func:`taylor_cross_entropy` (Feng et al. 2020): the cross-entropy's Taylor series about
  p_y = 1 cut after t terms, sum_{k=1}^t (1 - p_y)^k / k; t -> infinity gives -log p_y.
- :func:`forward_corrected_loss` (Patrini et al. 2017): -log (p^T T)_y, where T[i, j] =
  P(noisy label j | true label i) is row-stochastic.
- :func:`backward_corrected_loss` (Patrini et al. 2017): (T^-1 l)_y with l_k = -log p_k, an
  unbiased estimate of the clean loss.
- :func:`estimate_transition_matrix`: T from anchor points (Patrini et al.): row i is the
  predicted distribution of the sample most confidently of class i.
"""

from __future__ import annotations

import numbers

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import reduce as R
from lamina.functional.activation import log_softmax, softmax
from lamina.functional.arithmetic import matmul
from lamina.functional.elementwise import log

__all__ = ["backward_corrected_loss", "bootstrap_loss", "estimate_transition_matrix", "forward_corrected_loss",
           "generalized_cross_entropy", "symmetric_cross_entropy", "taylor_cross_entropy"]


def _parts(logits, labels, fn: str) -> tuple[Tensor, np.ndarray]:
    """(logits as a 2-D tensor, the one-hot labels in its dtype), checked."""
    z = logits if isinstance(logits, Tensor) else Tensor(np.asarray(logits))
    if z.ndim != 2:
        raise ShapeError(f"{fn}: logits must be (batch, classes), got shape {z.shape}")
    y = np.asarray(backend.to_numpy(labels) if isinstance(labels, Tensor) else labels)
    if y.shape != (z.shape[0],) or y.dtype.kind not in "iu":
        raise ShapeError(f"{fn}: labels must be {z.shape[0]} integer class indices, got {y.dtype} of shape {y.shape}")
    classes = z.shape[1]
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise ValueError(f"{fn}: labels must lie in 0..{classes - 1}, got values {y.min()}..{y.max()}")
    onehot = np.zeros(z.shape, dtype=z.data.dtype)
    onehot[np.arange(len(y)), y] = 1
    return z, backend.xp.asarray(onehot)


def _reduce(losses: Tensor, reduction: str, fn: str) -> Tensor:
    if reduction == "mean":
        return R.mean(losses)
    if reduction == "sum":
        return R.sum(losses)
    if reduction == "none":
        return losses
    raise ValueError(f"{fn}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def _number(value, name: str, fn: str, low: float, high: float, low_open: bool = False) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool)
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        bracket = "(" if low_open else "["
        raise ValueError(f"{fn}: {name} must be a number in {bracket}{low}, {high}], got {value!r}")
    return float(value)


def generalized_cross_entropy(logits, labels, q: float = 0.7, reduction: str = "mean") -> Tensor:
    """L_q = (1 - p_y^q) / q (Zhang & Sabuncu 2018), q in (0, 1]."""
    fn = "generalized_cross_entropy"
    q = _number(q, "q", fn, 0.0, 1.0, low_open=True)
    z, onehot = _parts(logits, labels, fn)
    p_y = R.sum(softmax(z, axis=-1) * onehot, axis=-1)
    return _reduce((1.0 - p_y ** q) / q, reduction, fn)


def symmetric_cross_entropy(logits, labels, alpha: float = 0.1, beta: float = 1.0, log_zero: float = -4.0,
                            reduction: str = "mean") -> Tensor:
    """alpha CE + beta RCE (Wang et al. 2019), RCE = -sum_k p_k log y_k = -A (1 - p_y) with
    log 0 clipped to A = ``log_zero``. The paper's CIFAR-10 setting is alpha 0.1, beta 1."""
    fn = "symmetric_cross_entropy"
    alpha = _number(alpha, "alpha", fn, 0.0, float("inf"))
    beta = _number(beta, "beta", fn, 0.0, float("inf"))
    if not log_zero < 0:
        raise ValueError(f"{fn}: log_zero (the clipped log 0, A) must be negative, got {log_zero!r}")
    z, onehot = _parts(logits, labels, fn)
    ce = -R.sum(log_softmax(z, axis=-1) * onehot, axis=-1)
    rce = -log_zero * (1.0 - R.sum(softmax(z, axis=-1) * onehot, axis=-1))
    return _reduce(alpha * ce + beta * rce, reduction, fn)


def bootstrap_loss(logits, labels, beta: float | None = None, kind: str = "soft", reduction: str = "mean") -> Tensor:
    """Reed et al. 2015: the cross-entropy against beta y + (1 - beta) t, with t = p (``'soft'``,
    beta 0.95 by default; the gradient flows through both sides, as the paper's objective) or
    t = one-hot argmax p (``'hard'``, beta 0.8)."""
    fn = "bootstrap_loss"
    if kind not in ("soft", "hard"):
        raise ValueError(f"{fn}: kind must be 'soft' or 'hard', got {kind!r}")
    beta = (0.95 if kind == "soft" else 0.8) if beta is None else _number(beta, "beta", fn, 0.0, 1.0)
    z, onehot = _parts(logits, labels, fn)
    log_p = log_softmax(z, axis=-1)
    if kind == "soft":
        target = beta * onehot + (1.0 - beta) * softmax(z, axis=-1)
    else:
        predicted = np.zeros(z.shape, dtype=z.data.dtype)
        predicted[np.arange(z.shape[0]), backend.to_numpy(z.data).argmax(axis=-1)] = 1
        target = beta * onehot + (1.0 - beta) * backend.xp.asarray(predicted)
    return _reduce(-R.sum(target * log_p, axis=-1), reduction, fn)


def taylor_cross_entropy(logits, labels, order: int = 2, reduction: str = "mean") -> Tensor:
    """sum_{k=1}^t (1 - p_y)^k / k with t = ``order`` (Feng et al. 2020): bounded for small t."""
    fn = "taylor_cross_entropy"
    if isinstance(order, bool) or not isinstance(order, numbers.Integral) or order < 1:
        raise ValueError(f"{fn}: order (the number of Taylor terms t) must be an integer >= 1, got {order!r}")
    z, onehot = _parts(logits, labels, fn)
    away = 1.0 - R.sum(softmax(z, axis=-1) * onehot, axis=-1)
    total = away
    for k in range(2, int(order) + 1):
        total = total + away ** k / k
    return _reduce(total, reduction, fn)


def check_transition_matrix(matrix, classes: int, fn: str, atol: float = 1e-6) -> np.ndarray:
    """``matrix`` as a (C, C) float64 array, after checking it is row-stochastic."""
    t = np.asarray(backend.to_numpy(matrix.data) if isinstance(matrix, Tensor) else matrix, dtype=np.float64)
    if t.shape != (classes, classes):
        raise ShapeError(f"{fn}: the transition matrix T must be ({classes}, {classes}), got shape {t.shape}")
    sums = t.sum(axis=1)
    if (t < -atol).any() or not np.allclose(sums, 1.0, atol=atol):
        raise ValueError(f"{fn}: the transition matrix T must be row-stochastic (entries >= 0, rows summing to "
                         f"1), got row sums {np.round(sums, 6).tolist()} and minimum {t.min():.6g}")
    return t


def forward_corrected_loss(logits, labels, transition, reduction: str = "mean") -> Tensor:
    """-log (p^T T)_y: the model's clean-class distribution p pushed through T[i, j] =
    P(noisy j | clean i) before the cross-entropy with the noisy label."""
    fn = "forward_corrected_loss"
    z, onehot = _parts(logits, labels, fn)
    t = check_transition_matrix(transition, z.shape[1], fn).astype(z.data.dtype)
    noisy = matmul(softmax(z, axis=-1), backend.xp.asarray(t))
    return _reduce(-log(R.sum(noisy * onehot, axis=-1)), reduction, fn)


def backward_corrected_loss(logits, labels, transition, reduction: str = "mean") -> Tensor:
    """(T^-1 l)_y with l_k = -log p_k: the loss vector corrected by the inverse of T."""
    fn = "backward_corrected_loss"
    z, onehot = _parts(logits, labels, fn)
    t = check_transition_matrix(transition, z.shape[1], fn)
    if abs(np.linalg.det(t)) < 1e-12:
        raise ValueError(f"{fn}: the transition matrix T is singular (det {np.linalg.det(t):.3g}); backward "
                         "correction needs T^-1")
    rows = onehot @ backend.xp.asarray(np.linalg.inv(t).astype(z.data.dtype))  # row y of T^-1 per sample
    return _reduce(-R.sum(rows * log_softmax(z, axis=-1), axis=-1), reduction, fn)


def estimate_transition_matrix(pred_probs, quantile: float | None = 0.97) -> np.ndarray:
    """T estimated from anchor points (Patrini et al. 2017): for each class i, the sample x_i
    whose p_i is the ``quantile`` of p_i over all samples (the paper's 97%, which skips
    outliers; None: the maximum) is taken as surely of class i, and T[i, :] = p(x_i).
    ``pred_probs`` (N, C) are a model's probabilities trained on the noisy labels."""
    fn = "estimate_transition_matrix"
    probs = check_pred_probs(pred_probs, fn)
    t = np.empty((probs.shape[1], probs.shape[1]))
    for i in range(probs.shape[1]):
        column = probs[:, i]
        if quantile is None:
            anchor = int(column.argmax())
        else:
            level = np.quantile(column, _number(quantile, "quantile", fn, 0.0, 1.0), method="higher")
            anchor = int(np.flatnonzero(column >= level)[np.argmin(column[column >= level])])
        t[i] = probs[anchor]
    return t / t.sum(axis=1, keepdims=True)


def check_pred_probs(pred_probs, fn: str, atol: float = 1e-4) -> np.ndarray:
    """``pred_probs`` as an (N, C) float64 array of rows summing to 1."""
    probs = np.asarray(backend.to_numpy(pred_probs.data) if isinstance(pred_probs, Tensor) else pred_probs,
                       dtype=np.float64)
    if probs.ndim != 2 or probs.shape[0] == 0:
        raise ShapeError(f"{fn}: pred_probs must be (samples, classes), got shape {probs.shape}")
    sums = probs.sum(axis=1)
    bad = np.flatnonzero(~np.isclose(sums, 1.0, atol=atol) | (probs < 0).any(axis=1))
    if bad.size:
        raise ValueError(f"{fn}: every row of pred_probs must be a probability distribution (entries >= 0, "
                         f"summing to 1); row {bad[0]} sums to {sums[bad[0]]:.6g} ({bad.size} bad rows)")
    return probs
