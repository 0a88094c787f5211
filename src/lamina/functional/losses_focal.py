"""Focal losses (Lin et al. 2017, the RetinaNet detector), Keras-style: ``loss(y_pred, y_true)``.

The cross-entropy of an example the model already gets right is small but not zero, and on
a data set where easy examples (background) far outnumber hard ones their many small losses
swamp the few large ones. The focal loss multiplies each cross-entropy term by
(1 - p_t)^gamma, where p_t is the probability given to the true class: a confident, correct
prediction (p_t near 1) is down-weighted to almost nothing, a wrong one keeps nearly its
whole loss. gamma = 0 gives back the cross-entropy; the paper uses gamma = 2. A weight alpha
may further balance the classes.

Each loss is one node with a closed-form backward. As for the cross-entropies, a sample's
loss is the mean over its values (binary) or over its rows (categorical), and
``reduction='mean'`` averages the samples, ``'sum'`` adds them and ``'none'`` returns them.
The target gets no gradient.
"""

from __future__ import annotations

import math
import numbers

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import log_softmax, sigmoid, softmax, stable_sigmoid
from lamina.functional.elementwise import clip, log, where
from lamina.functional.loss import (
    EPSILON,
    _check_probabilities,
    _check_reduction,
    _integer_labels,
    _one_hot,
    _softmax_parts,
    _targets,
)
from lamina.functional.losses_more import _check_number, _prediction, _reduce_samples, _sample_scale
from lamina.functional.smooth_activation import softplus

__all__ = ["binary_focal_loss", "categorical_focal_loss"]


def _modulation_slope(away, gamma: float):
    """d/da of a^gamma = gamma a^(gamma - 1) for a = 1 - p_t; 0 where a = 0, since the
    term it multiplies (the cross-entropy, or p log p) vanishes there too."""
    xp = backend.xp
    if gamma == 0.0:
        return xp.zeros_like(away)
    positive = away > 0
    t = away.dtype.type
    return xp.where(positive, t(gamma) * xp.power(xp.where(positive, away, t(1)), t(gamma - 1.0)), t(0))


def _modulation_slope_tensor(away: Tensor, gamma: float) -> Tensor:
    """:func:`_modulation_slope` as recorded ops on the tensor ``away``."""
    positive = away.data > 0
    return where(positive, gamma * where(positive, away, 1.0) ** (gamma - 1.0), 0.0)


def _inside_clip(x):
    """Where the clip to [eps, 1 - eps] lets the gradient through (as :func:`clip`)."""
    return (x >= EPSILON) & (x <= 1 - EPSILON)


class BinaryFocal(Function):
    """L = alpha_t (1 - p_t)^gamma CE(y_hat, y) per value, with CE = -(y log y_hat +
    (1 - y) log(1 - y_hat)), 1 - p_t = y (1 - y_hat) + (1 - y) y_hat and
    alpha_t = alpha y + (1 - alpha)(1 - y) (1 without alpha).

    With a = 1 - p_t (da/dy_hat = 1 - 2y) and M = a^gamma:
    dL/dy_hat = alpha_t (M dCE/dy_hat + gamma a^(gamma - 1) (1 - 2y) CE), where
    dCE/dy_hat = (y_hat - y) / (y_hat (1 - y_hat)); from logits z (y_hat = sigma(z)),
    dy_hat/dz = y_hat (1 - y_hat) turns this into alpha_t (M (y_hat - y) +
    gamma a^(gamma - 1) (1 - 2y) y_hat (1 - y_hat) CE).

    Hyperparameters: ``y`` (targets in [0, 1], y_pred's shape and dtype), ``gamma``,
    ``alpha`` (or None), ``from_logits``, ``reduction``.
    """

    def forward(self, x):
        xp = backend.xp
        y = self.y
        if self.from_logits:
            # sigma(z) and 1 - sigma(z) = sigma(-z), each accurate on its own side
            p, q = stable_sigmoid(x), stable_sigmoid(-x)
            ce = xp.maximum(x, 0) - x * y + xp.log1p(xp.exp(-xp.abs(x)))
        else:
            p = xp.clip(x, EPSILON, 1 - EPSILON)
            q = 1 - p
            ce = -(y * xp.log(p) + (1 - y) * xp.log(q))
        away = y * q + (1 - y) * p
        modulation = xp.power(away, x.dtype.type(self.gamma))
        weight = self._alpha_t()
        self.x, self.p, self.q, self.ce, self.away, self.modulation, self.weight = x, p, q, ce, away, modulation, weight
        losses = modulation * ce
        if weight is not None:
            losses = weight * losses
        return _reduce_samples(losses, self.reduction)

    def _alpha_t(self):
        if self.alpha is None:
            return None
        t = self.y.dtype.type
        return self.y * t(self.alpha) + (1 - self.y) * t(1.0 - self.alpha)

    def backward(self, dy):
        y, p, q = self.y, self.p, self.q
        direction = 1 - 2 * y                         # da/dy_hat
        slope = _modulation_slope(self.away, self.gamma) * direction * self.ce
        if self.from_logits:
            grad = self.modulation * (p - y) + slope * (p * q)
        else:
            grad = (self.modulation * (p - y) / (p * q) + slope) * _inside_clip(self.x)
        if self.weight is not None:
            grad = grad * self.weight
        return (grad * _sample_scale(dy, self.x.shape, self.reduction),)

    def backward_graph(self, dy):
        # backward's formula with p, q, CE and a = 1 - p_t as recorded functions of the input
        x, y = self.inputs[0], self.y
        if self.from_logits:
            p, q = sigmoid(x), sigmoid(-x)
            ce = softplus(x, threshold=math.inf) - x * y
        else:
            p = clip(x, EPSILON, 1 - EPSILON)
            q = 1 - p
            ce = -(y * log(p) + (1 - y) * log(q))
        away = y * q + (1 - y) * p
        slope = _modulation_slope_tensor(away, self.gamma) * (1 - 2 * y) * ce
        modulation = away**self.gamma
        if self.from_logits:
            grad = modulation * (p - y) + slope * (p * q)
        else:
            grad = (modulation * (p - y) / (p * q) + slope) * _inside_clip(self.x)
        if self.weight is not None:
            grad = grad * self.weight
        return (grad * _sample_scale(dy, self.x.shape, self.reduction),)


class CategoricalFocal(Function):
    """L = -sum_j c_j (1 - y_hat_j)^gamma log y_hat_j over the last axis, c = alpha * y
    (the targets times the class weights).

    With A_j = dL/dlog y_hat_j = -c_j (1 - y_hat_j)^gamma and
    B_j = dL/dy_hat_j = c_j gamma (1 - y_hat_j)^(gamma - 1) log y_hat_j (at fixed log y_hat):
    on probabilities dL/dy_hat = A / y_hat + B; from logits z (y_hat = softmax(z), whose
    Jacobian is diag(y_hat) - y_hat y_hat^T) dL/dz = G - y_hat sum_j G_j with G = A + B y_hat.
    gamma = 0 gives dL/dz = y_hat sum_j c_j - c, the cross-entropy's y_hat - y.

    Hyperparameters: ``c`` (weighted target rows, y_pred's shape and dtype), ``gamma``,
    ``from_logits``, ``reduction``.
    """

    def forward(self, x):
        xp = backend.xp
        if self.from_logits:
            shifted, p, log_norm = _softmax_parts(x)
            log_p = shifted - log_norm
        else:
            p = xp.clip(x, EPSILON, 1 - EPSILON)
            log_p = xp.log(p)
        away = 1 - p
        modulation = xp.power(away, x.dtype.type(self.gamma))
        self.x, self.p, self.log_p, self.away, self.modulation = x, p, log_p, away, modulation
        return _reduce_samples(-(self.c * modulation * log_p).sum(axis=-1), self.reduction)

    def backward(self, dy):
        p, c = self.p, self.c
        along_log = -c * self.modulation                                            # A
        along_p = c * _modulation_slope(self.away, self.gamma) * self.log_p         # B
        if self.from_logits:
            g = along_log + along_p * p
            grad = g - p * g.sum(axis=-1, keepdims=True)
        else:
            grad = (along_log / p + along_p) * _inside_clip(self.x)
        scale = _sample_scale(dy, p.shape[:-1], self.reduction)
        return (grad * scale[..., None],)

    def backward_graph(self, dy):
        # backward's formula with y_hat and log y_hat as recorded functions of the input
        x, c = self.inputs[0], self.c
        if self.from_logits:
            p, log_p = softmax(x, axis=-1), log_softmax(x, axis=-1)
        else:
            p = clip(x, EPSILON, 1 - EPSILON)
            log_p = log(p)
        away = 1 - p
        along_log = -c * away**self.gamma
        along_p = c * _modulation_slope_tensor(away, self.gamma) * log_p
        if self.from_logits:
            g = along_log + along_p * p
            grad = g - p * g.sum(axis=-1, keepdims=True)
        else:
            grad = (along_log / p + along_p) * _inside_clip(self.x)
        return (grad * _sample_scale(dy, self.p.shape[:-1], self.reduction).expand_dims(-1),)


# -- argument checks ---------------------------------------------------------------------


def _check_alpha(alpha, fn: str):
    """None, or a number in [0, 1]."""
    if alpha is None:
        return None
    ok = isinstance(alpha, numbers.Real) and not isinstance(alpha, bool) and 0.0 <= alpha <= 1.0
    if not ok:
        raise ValueError(f"{fn}: alpha must be None or a number in [0, 1], got {alpha!r}")
    return float(alpha)


def _class_weights(alpha, y_pred: Tensor, fn: str):
    """None, or alpha (a number or one weight per class) as an array in y_pred's dtype that
    broadcasts over its rows; every weight in [0, 1]."""
    if alpha is None or isinstance(alpha, numbers.Real):
        checked = _check_alpha(alpha, fn)
        return None if checked is None else backend.xp.asarray(checked, dtype=y_pred.dtype)
    xp = backend.xp
    weights = xp.asarray(getattr(alpha, "data", alpha), dtype=y_pred.dtype).reshape(-1)
    classes = y_pred.shape[-1]
    if weights.shape != (classes,):
        raise ValueError(f"{fn}: alpha must be a number or {classes} per-class weights (y_pred has shape "
                         f"{y_pred.shape}), got {weights.size} weights")
    if not bool(xp.all((weights >= 0) & (weights <= 1))):
        raise ValueError(f"{fn}: per-class alpha weights must lie in [0, 1], got "
                         f"{backend.to_numpy(weights).tolist()}")
    return weights


def _check_target_range(y, fn: str) -> None:
    xp = backend.xp
    if y.size and not bool(xp.all((y >= 0) & (y <= 1))):
        raise ValueError(f"{fn}: y_true must hold targets in [0, 1], got values from {float(y.min()):.4g} "
                         f"to {float(y.max()):.4g}")


# -- the losses ------------------------------------------------------------------------------


def binary_focal_loss(y_pred, y_true, gamma: float = 2.0, alpha: float | None = 0.25, from_logits: bool = False,
                      reduction: str = "mean") -> Tensor:
    """Binary focal loss: J = (1/m) sum_i L_i, with per value

        L = -alpha_t (1 - p_t)^gamma log p_t,   p_t = y_hat if y = 1 else 1 - y_hat,

    and alpha_t = alpha for y = 1, 1 - alpha for y = 0 (``alpha=None``: no weighting). Soft
    targets y in [0, 1] follow the RetinaNet reference implementation (torchvision's
    ``sigmoid_focal_loss``): p_t = y_hat y + (1 - y_hat)(1 - y), alpha_t = alpha y +
    (1 - alpha)(1 - y), and -log p_t is replaced by the binary cross-entropy
    -(y log y_hat + (1 - y) log(1 - y_hat)).

    ``y_pred`` holds probabilities y_hat, clipped to [eps, 1 - eps] as in
    :func:`binary_cross_entropy` (values outside [0, 1] are refused), or logits z with
    ``from_logits=True``, where y_hat = sigma(z) and log y_hat = -log(1 + e^-z) are computed
    stably. ``gamma`` >= 0; gamma = 0 with alpha None is the binary cross-entropy. A sample's
    loss is the mean over its values, so ``'mean'`` is the mean over all values (as
    torchvision's).
    """
    fn = "binary_focal_loss"
    _check_reduction(reduction, fn)
    gamma = _check_number(gamma, "gamma", fn, 0.0, strict=False)
    alpha = _check_alpha(alpha, fn)
    y_pred = _prediction(y_pred)
    if not from_logits:
        _check_probabilities(y_pred, fn)
    y = _targets(y_true, y_pred, fn)
    _check_target_range(y, fn)
    return BinaryFocal.apply(y_pred, y=y, gamma=gamma, alpha=alpha, from_logits=bool(from_logits),
                             reduction=reduction)


def categorical_focal_loss(y_pred, y_true, gamma: float = 2.0, alpha=None, from_logits: bool = False,
                           reduction: str = "mean") -> Tensor:
    """Categorical focal loss over the classes on the last axis:

        L = -sum_j alpha_j y_j (1 - y_hat_j)^gamma log y_hat_j

    (Keras' ``CategoricalFocalCrossentropy``), J = (1/m) sum_i L_i. ``y_true`` holds integer
    labels of shape y_pred.shape[:-1], or one-hot or soft target rows in [0, 1] of
    y_pred's shape. ``alpha``: None (no weighting), a number, or one weight per class, each
    in [0, 1]; the mean stays over the samples (unlike the weighted mean of
    :func:`categorical_cross_entropy` with ``class_weights``).

    ``y_pred`` holds probabilities, clipped to [eps, 1 - eps] (values outside [0, 1] are
    refused), or scores z with ``from_logits=True``: the softmax and a stable log-softmax
    are fused in. ``gamma`` >= 0; gamma = 0 with alpha None is the categorical
    cross-entropy. A sample made of several rows (a sequence) averages its rows.
    """
    fn = "categorical_focal_loss"
    _check_reduction(reduction, fn)
    gamma = _check_number(gamma, "gamma", fn, 0.0, strict=False)
    y_pred = _prediction(y_pred)
    if y_pred.ndim == 0:
        raise ShapeError(f"{fn}: y_pred must have a class axis (the last), got a scalar")
    weights = _class_weights(alpha, y_pred, fn)
    if not from_logits:
        _check_probabilities(y_pred, fn)
    labels = _integer_labels(y_true, y_pred, fn)
    if labels is None:
        y = _targets(y_true, y_pred, fn)
        _check_target_range(y, fn)
    else:
        y = _one_hot(labels, y_pred)
    c = y if weights is None else y * weights
    return CategoricalFocal.apply(y_pred, c=c, gamma=gamma, from_logits=bool(from_logits), reduction=reduction)
