"""Losses and costs, Keras-style: ``loss(y_pred, y_true)``.

The cost is J = (1/m) sum_i L(y_hat_i, y_i) by default (``reduction='mean'``);
``'sum'`` gives the sum and ``'none'`` the per-sample losses. A target tensor that
requires grad gets dJ/dy, as in PyTorch; other targets are constants.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional import reduce as R
from lamina.functional.activation import log_softmax, stable_sigmoid
from lamina.functional.elementwise import clip, log, where

_REDUCTIONS = ("mean", "sum", "none")
EPSILON = 1e-7
PROBABILITY_SLACK = 1e-4
"""How far outside [0, 1] a probability may stray by rounding before it is taken for a logit."""


def _check_reduction(reduction: str, fn: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {_REDUCTIONS}, got {reduction!r}")


def _reduce(per_sample: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return R.mean(per_sample)
    if reduction == "sum":
        return R.sum(per_sample)
    return per_sample


def _targets(y_true, like: Tensor, fn: str):
    data = y_true.data if isinstance(y_true, Tensor) else backend.xp.asarray(y_true)
    if data.shape != like.shape:
        raise ShapeError(f"{fn}: y_pred has shape {like.shape} but y_true has shape {data.shape}")
    return data.astype(like.dtype, copy=False)


def _differentiable_targets(y_true, like: Tensor, fn: str):
    """:func:`_targets`, except that a target tensor that requires grad is kept as it is (on
    the graph), so that the loss gives it dJ/dy as PyTorch does; an array otherwise."""
    if not (isinstance(y_true, Tensor) and y_true.requires_grad):
        return _targets(y_true, like, fn)
    if y_true.shape != like.shape:
        raise ShapeError(f"{fn}: y_pred has shape {like.shape} but y_true has shape {y_true.shape}")
    if y_true.dtype != like.dtype:
        raise TypeError(f"{fn}: y_true has dtype {y_true.dtype} but y_pred has dtype {like.dtype}; a target "
                        "that needs a gradient must have the prediction's dtype")
    return y_true


def _fused(node, z, y, **params) -> Tensor:
    """``node`` (a fused loss of scores z and targets y) applied: target arrays are constants
    of the node, a target tensor is its second input and gets its gradient too."""
    if isinstance(y, Tensor):
        return node.apply(z, y, **params)
    return node.apply(z, y=y, **params)


def _per_sample(elementwise: Tensor) -> Tensor:
    """Average over every axis but the first: one loss per sample."""
    if elementwise.ndim <= 1:
        return elementwise
    return R.mean(elementwise, axis=tuple(range(1, elementwise.ndim)))


class BinaryCrossEntropyWithLogits(Function):
    """L = -(y log sigma(z) + (1 - y) log(1 - sigma(z))) = max(z, 0) - z y + log(1 + e^-|z|);
    dL/dz = sigma(z) - y and dL/dy = -z. The targets y are the hyperparameter ``y`` (a
    constant) or the second input (a tensor that gets dL/dy)."""

    def forward(self, z, *target):
        xp = backend.xp
        if target:
            self.y = target[0]
        y = self.y
        self.z = z
        return xp.maximum(z, 0) - z * y + xp.log1p(xp.exp(-xp.abs(z)))

    def backward(self, dy):
        grad_z = dy * (stable_sigmoid(self.z) - self.y)
        if len(self.needs_grad) == 1:
            return (grad_z,)
        return grad_z, (-(dy * self.z) if self.needs_grad[1] else None)

    def backward_graph(self, dy):
        z = self.inputs[0]
        if len(self.inputs) == 1:
            return (dy * (z.sigmoid() - self.y),)
        return dy * (z.sigmoid() - self.inputs[1]), (-(dy * z) if self.needs_grad[1] else None)


def _check_probabilities(y_pred, fn: str) -> None:
    """Probabilities lie in [0, 1]; anything else is most likely a model's logits given to a
    loss that expects probabilities, which clipping would silently turn into a flat cost."""
    values = y_pred.data if isinstance(y_pred, Tensor) else backend.xp.asarray(y_pred)
    if values.size == 0 or values.dtype.kind != "f":
        return
    low, high = float(values.min()), float(values.max())
    if low < -PROBABILITY_SLACK or high > 1 + PROBABILITY_SLACK:
        raise ValueError(
            f"{fn}: y_pred of shape {tuple(values.shape)} holds values from {low:.4g} to {high:.4g}, but with "
            "from_logits=False it must hold probabilities in [0, 1]; for scores (logits) pass from_logits=True, "
            "or end the model with a softmax (sigmoid) layer"
        )


def binary_cross_entropy(y_pred, y_true, from_logits: bool = False, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy; probabilities are clipped to [eps, 1 - eps] (eps = 1e-7).
    Values outside [0, 1] with ``from_logits=False`` are refused (they are logits)."""
    _check_reduction(reduction, "binary_cross_entropy")
    if not from_logits:
        _check_probabilities(y_pred, "binary_cross_entropy")
    y = _differentiable_targets(y_true, y_pred, "binary_cross_entropy")
    if from_logits:
        losses = _fused(BinaryCrossEntropyWithLogits, y_pred, y)
    else:
        p = clip(y_pred, EPSILON, 1 - EPSILON)
        losses = -(y * log(p) + (1 - y) * log(1 - p))
    return _reduce(_per_sample(losses), reduction)


class SoftmaxCrossEntropy(Function):
    """Softmax fused with categorical cross-entropy over the last axis.

    L = -sum_j y_j log y_hat_j with y_hat = softmax(z); dL/dz = y_hat - y (course notes),
    so the cost J = mean L has dJ/dz = (y_hat - y) / m. ``y`` holds target rows (one-hot
    or soft); rows that do not add up to 1 give dL/dz = y_hat sum_j y_j - y. Hyperparameter
    ``reduction`` ('mean', 'sum' or 'none') is applied in the node. The targets are the
    hyperparameter ``y`` (a constant) or the second input (a tensor that gets
    dL/dy_j = -log y_hat_j).
    """

    def forward(self, z, *target):
        shifted, probs, log_norm = _softmax_parts(z)
        self.probs = probs
        if not target:
            return _apply_reduction(-(self.y * (shifted - log_norm)).sum(axis=-1), self.reduction)
        self.y = target[0]
        shifted -= log_norm
        self.log_probs = shifted
        return _apply_reduction(-(self.y * shifted).sum(axis=-1), self.reduction)

    def backward(self, dy):
        scale = _reduced_grad(dy, self.probs.shape[:-1], self.reduction)
        scale = scale[..., None] if self.reduction == "none" else scale
        totals = self.y.sum(axis=-1, keepdims=True)
        grad = self.probs if bool((totals == 1).all()) else self.probs * totals
        if len(self.needs_grad) == 1:
            return (scale * (grad - self.y),)
        return scale * (grad - self.y), (-(scale * self.log_probs) if self.needs_grad[1] else None)

    def backward_graph(self, dy):
        scale = _reduced_grad(dy, self.probs.shape[:-1], self.reduction)
        scale = scale.expand_dims(-1) if self.reduction == "none" else scale
        z = self.inputs[0]
        if len(self.inputs) == 1:
            totals = self.y.sum(axis=-1, keepdims=True)
            probs = z.softmax(axis=-1)
            grad = probs if bool((totals == 1).all()) else probs * totals
            return (scale * (grad - self.y),)
        y = self.inputs[1]
        grad = z.softmax(axis=-1) * R.sum(y, axis=-1, keepdims=True) - y
        return scale * grad, (-(scale * log_softmax(z, axis=-1)) if self.needs_grad[1] else None)


class SparseSoftmaxCrossEntropy(Function):
    """:class:`SoftmaxCrossEntropy` for integer labels (hyperparameter ``labels``, the
    class index of each row): L = log sum_j e^(z_j) - z_label, and dL/dz = y_hat minus 1
    at the label. No one-hot matrix is made."""

    def forward(self, z):
        xp = backend.xp
        shifted, probs, log_norm = _softmax_parts(z)
        self.rows = (xp.arange(self.labels.size), self.labels.reshape(-1))
        picked = shifted.reshape(-1, z.shape[-1])[self.rows].reshape(self.labels.shape)
        self.probs = probs
        return _apply_reduction(log_norm[..., 0] - picked, self.reduction)

    def backward(self, dy):
        scale = _reduced_grad(dy, self.labels.shape, self.reduction)
        per_row = self.reduction == "none"          # one scale per row, else one for all
        grad = self.probs * (scale[..., None] if per_row else scale)
        grad.reshape(-1, grad.shape[-1])[self.rows] -= scale.reshape(-1) if per_row else scale
        return (grad,)

    def backward_graph(self, dy):
        scale = _reduced_grad(dy, self.labels.shape, self.reduction)
        picked = backend.xp.zeros(self.probs.shape, dtype=self.probs.dtype)
        picked.reshape(-1, picked.shape[-1])[self.rows] = 1
        grad = self.inputs[0].softmax(axis=-1) - picked
        return ((scale.expand_dims(-1) if self.reduction == "none" else scale) * grad,)


def _softmax_parts(z):
    """(z - max z, softmax(z), log sum e^(z - max z)) over the last axis."""
    xp = backend.xp
    # the ufunc's own reduce skips NumPy's Python wrapper of max; CuPy has only the method
    row_max = xp.maximum.reduce(z, axis=-1, keepdims=True) if xp.__name__ == "numpy" else z.max(axis=-1, keepdims=True)
    shifted = z - row_max
    exps = xp.exp(shifted)
    sums = xp.add.reduce(exps, axis=-1, keepdims=True)
    exps /= sums
    return shifted, exps, xp.log(sums)


def _apply_reduction(losses, reduction: str):
    """The losses' mean (nan for none, as PyTorch's, without NumPy's warnings), sum or themselves."""
    if reduction == "none":
        return losses
    total = backend.xp.add.reduce(losses, axis=None)
    if reduction == "sum":
        return total
    t = losses.dtype.type
    return total / t(losses.size) if losses.size else total * t(math.nan)


def _reduced_grad(dy, shape, reduction: str):
    """dJ/dL_i for the samples: dy / m for the mean and dy for the sum (dy a scalar, the
    same for every sample), dy itself (one per sample) for 'none'. (With m = 0 there is no
    sample to scale: it divides by 1.)"""
    if reduction == "mean":
        return dy / dy.dtype.type(max(math.prod(shape), 1))
    return dy


def _integer_labels(y_true, y_pred: Tensor, fn: str):
    """``y_true`` as integer class indices of shape y_pred.shape[:-1], checked against the
    number of classes; None when it holds target rows (one-hot or soft) instead."""
    xp = backend.xp
    data = y_true.data if isinstance(y_true, Tensor) else xp.asarray(y_true)
    classes = y_pred.shape[-1]
    if data.shape == y_pred.shape and data.dtype.kind == "f":
        return None
    if data.shape != y_pred.shape[:-1]:
        raise ShapeError(
            f"{fn}: y_true must be integer labels of shape {y_pred.shape[:-1]} or one-hot rows of "
            f"shape {y_pred.shape}, got shape {data.shape}"
        )
    if data.dtype.kind not in "iu":
        if data.dtype.kind == "f" and xp.all(data == xp.round(data)):
            data = data.astype(xp.int64)
        else:
            raise TypeError(f"{fn}: integer labels expected, got dtype {data.dtype}")
    if data.size and (data.min() < 0 or data.max() >= classes):
        raise ValueError(
            f"{fn}: labels must lie in [0, {classes}), got values from {int(data.min())} to {int(data.max())}"
        )
    return data.astype(xp.intp, copy=False)


def _one_hot(labels, like: Tensor):
    """Rows of ``like``'s shape and dtype with a 1 at each label."""
    xp = backend.xp
    one_hot = xp.zeros(like.shape, dtype=like.dtype)
    xp.put_along_axis(one_hot, labels[..., None], 1, axis=-1)
    return one_hot


def _one_hot_targets(y_true, y_pred: Tensor, fn: str):
    labels = _integer_labels(y_true, y_pred, fn)
    return _differentiable_targets(y_true, y_pred, fn) if labels is None else _one_hot(labels, y_pred)


def categorical_cross_entropy(y_pred, y_true, from_logits: bool = False, reduction: str = "mean",
                              label_smoothing: float = 0.0, class_weights=None,
                              ignore_index: int | None = None) -> Tensor:
    """Categorical cross-entropy L = -sum_j y_j log y_hat_j over the last axis.

    ``y_true`` is integer labels or one-hot (or soft) rows. With ``from_logits=True``
    ``y_pred`` holds scores z and softmax is fused in (backward (y_hat - y)/m); otherwise
    probabilities, clipped to [eps, 1 - eps]. ``label_smoothing`` eps replaces the targets
    with (1 - eps) y + eps / K for K classes (Szegedy et al., Inception-v3; as PyTorch's
    and Keras's option), which keeps the scores from growing without bound.

    ``class_weights`` (K values >= 0) weighs class j's term: L = -sum_j w_j y_j log y_hat_j,
    for classes seen rarely (PyTorch's ``weight``). With integer labels the mean is then
    taken over the weights, sum_i L_i / sum_i w_(y_i), so the cost stays on the scale of an
    unweighted one; with target rows it is over the samples.

    ``ignore_index`` (integer labels only): rows labelled with it add nothing and get no
    gradient, and the mean is over the other rows, sum_i L_i / #kept (PyTorch's option; the
    padding of batched sequences of different lengths); with ``class_weights`` the mean is over
    the kept rows' weights.

    With ``from_logits=False``, values of ``y_pred`` outside [0, 1] are refused with an error
    (a model's logits given as probabilities would otherwise train to nothing, silently).
    """
    fn = "categorical_cross_entropy"
    _check_reduction(reduction, fn)
    if not from_logits:
        _check_probabilities(y_pred, fn)
    if ignore_index is not None:
        return _cross_entropy_ignoring(y_pred, y_true, ignore_index, from_logits, reduction, label_smoothing,
                                       class_weights)
    if not 0.0 <= label_smoothing <= 1.0:
        raise ValueError(f"{fn}: label_smoothing must lie in [0, 1], got {label_smoothing!r}")
    if label_smoothing or class_weights is not None or from_logits:
        y_pred = y_pred if isinstance(y_pred, Tensor) else Tensor(y_pred)
        if y_pred.ndim == 0:
            raise ShapeError(f"{fn}: y_pred must have a class axis, got a scalar")
    if class_weights is not None:
        return _weighted_cross_entropy(y_pred, y_true, from_logits, reduction, label_smoothing, class_weights)
    if label_smoothing:
        y_true = _smoothed(_one_hot_targets(y_true, y_pred, fn), label_smoothing)
    if from_logits:
        # the node reduces over the rows itself; a sample spread over several rows (a
        # sequence) first averages its rows' losses
        in_node = reduction if y_pred.ndim <= 2 else "none"
        labels = _integer_labels(y_true, y_pred, fn)
        if labels is not None:
            losses = SparseSoftmaxCrossEntropy.apply(y_pred, labels=labels, reduction=in_node)
        else:
            losses = _fused(SoftmaxCrossEntropy, y_pred, _differentiable_targets(y_true, y_pred, fn),
                            reduction=in_node)
        return losses if y_pred.ndim <= 2 else _reduce(_per_sample(losses), reduction)
    y = _one_hot_targets(y_true, y_pred, fn)
    p = clip(y_pred, EPSILON, 1 - EPSILON)
    losses = -R.sum(y * log(p), axis=-1)
    return _reduce(_per_sample(losses), reduction)


def _cross_entropy_ignoring(y_pred, y_true, ignore_index: int, from_logits: bool, reduction: str,
                            label_smoothing: float, class_weights) -> Tensor:
    """categorical_cross_entropy over the rows whose label is not ``ignore_index``."""
    fn = "categorical_cross_entropy"
    xp = backend.xp
    y_pred = y_pred if isinstance(y_pred, Tensor) else Tensor(y_pred)
    labels = y_true.data if isinstance(y_true, Tensor) else xp.asarray(y_true)
    if labels.dtype.kind not in "iu" or labels.shape != y_pred.shape[:-1]:
        raise ShapeError(f"{fn}: ignore_index={ignore_index!r} needs integer labels of shape {y_pred.shape[:-1]}, "
                         f"got {labels.dtype} labels of shape {labels.shape}")
    kept = labels != ignore_index
    # one loss per row, from a 2-D view ('none' on sequences would average each sample's rows)
    flat = y_pred.reshape(-1, y_pred.shape[-1])
    losses = categorical_cross_entropy(flat, xp.where(kept, labels, 0).reshape(-1), from_logits=from_logits,
                                       reduction="none", label_smoothing=label_smoothing,
                                       class_weights=class_weights)
    losses = where(kept, losses.reshape(kept.shape), 0.0)    # an ignored row adds 0, whatever its scores hold
    if reduction == "none":
        return losses
    total = R.sum(losses)
    if reduction == "sum":
        return total
    count = int(kept.sum())
    if not count:
        # the mean over no row is nan, as PyTorch's, whose gradient is then 0 (the rows' masks)
        return total + total.dtype.type(math.nan)
    if class_weights is None:
        return total / count
    weights = xp.asarray(getattr(class_weights, "data", class_weights), dtype=y_pred.dtype).reshape(-1)
    return total / weights[labels[kept]].sum()


def _smoothed(y, eps: float):
    """(1 - eps) y + eps / K for target rows y of K classes."""
    return y * y.dtype.type(1.0 - eps) + y.dtype.type(eps / y.shape[-1])


def _weighted_cross_entropy(y_pred: Tensor, y_true, from_logits: bool, reduction: str, label_smoothing: float,
                            class_weights) -> Tensor:
    fn = "categorical_cross_entropy"
    xp = backend.xp
    weights = xp.asarray(getattr(class_weights, "data", class_weights), dtype=y_pred.dtype).reshape(-1)
    classes = y_pred.shape[-1]
    if weights.shape != (classes,) or not bool(xp.all(xp.isfinite(weights))) or bool((weights < 0).any()):
        raise ValueError(f"{fn}: class_weights must be {classes} finite values >= 0 (one per class of y_pred "
                         f"of shape {y_pred.shape}), got shape {weights.shape}")
    labels = _integer_labels(y_true, y_pred, fn)                 # checked once, kept for the mean
    y = _differentiable_targets(y_true, y_pred, fn) if labels is None else _one_hot(labels, y_pred)
    if label_smoothing:
        y = _smoothed(y, label_smoothing)
    y = y * weights
    if from_logits:
        losses = _fused(SoftmaxCrossEntropy, y_pred, y, reduction="none")
    else:
        losses = -R.sum(y * log(clip(y_pred, EPSILON, 1 - EPSILON)), axis=-1)
    if reduction == "mean" and labels is not None:
        return R.sum(losses) / weights[labels].sum()
    return _reduce(_per_sample(losses), reduction)


def mean_squared_error(y_pred, y_true, reduction: str = "mean") -> Tensor:
    """L = mean over features of (y_hat - y)^2, one value per sample."""
    _check_reduction(reduction, "mean_squared_error")
    y = _differentiable_targets(y_true, y_pred, "mean_squared_error")
    diff = y_pred - y
    return _reduce(_per_sample(diff * diff), reduction)
