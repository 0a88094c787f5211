"""Losses under PyTorch's names and signatures: ``loss(input, target, ...)``.

Each maps its arguments onto lamina's own loss (``categorical_cross_entropy``, ``huber``,
``smooth_l1``, ...) and gives PyTorch's reductions: ``'none'`` returns one loss per value
(per row for the losses over a class axis), ``'sum'`` adds them all and ``'mean'`` averages
them (weighted losses divide by the weights, as PyTorch). lamina's own losses average each
sample's values first, so an element-wise loss is run here on flat views of its inputs,
where every value is a sample of its own.

The class axis is the LAST one (lamina is channels-last): PyTorch's (N, C, d1, ...) input
is lamina's (N, d1, ..., C), with class targets of shape (N, d1, ...) in both.

Where lamina's name is PyTorch's name already (``nll_loss``, ``binary_cross_entropy``,
``kl_div``, ``poisson_nll_loss``, ...), lamina.functional keeps lamina's function; the
versions here, with PyTorch's reductions and options (``weight``, ``ignore_index``), are
what the loss modules of :mod:`lamina.nn.losses` call.
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import loss as lamina_loss
from lamina.functional import losses_extra, losses_metric, losses_more
from lamina.functional import reduce as R
from lamina.functional.activation import relu
from lamina.functional.elementwise import clip, minimum, where
from lamina.functional.indexing import gather
from lamina.functional.loss import _check_reduction, categorical_cross_entropy
from lamina.functional.losses_more import MultiMargin, _check_number, _class_labels, _prediction
from lamina.functional.math_more import square
from lamina.functional.shape import broadcast_to
from lamina.functional.similarity import pairwise_distance
from lamina.functional.smooth_activation import softplus

__all__ = [
    "binary_cross_entropy_with_logits", "cross_entropy", "huber_loss", "l1_loss", "mse_loss", "multi_margin_loss",
    "smooth_l1_loss", "triplet_margin_with_distance_loss",
]


# -- helpers -------------------------------------------------------------------------------


def _data(x):
    return x.data if isinstance(x, Tensor) else backend.xp.asarray(x)


def _same_shape(x: Tensor, target, fn: str, what: str = "target") -> None:
    shape = tuple(_data(target).shape)
    if shape != x.shape:
        raise ShapeError(f"{fn}: input has shape {x.shape} but {what} has shape {shape}; they must match")


def _flat(x):
    """A 1-D view: every value its own sample for lamina's per-sample reductions."""
    return x.reshape(-1) if isinstance(x, Tensor) else backend.xp.asarray(x).reshape(-1)


def _elementwise(loss, fn: str, input, target, reduction: str, **options) -> Tensor:  # noqa: A002
    """lamina's element-wise ``loss`` with PyTorch's reductions: run on flat views of the
    input and the target, reshaped back for ``'none'``."""
    _check_reduction(reduction, fn)
    x = _prediction(input)
    _same_shape(x, target, fn)
    out = loss(_flat(x), _flat(target), reduction=reduction, **options)
    return out.reshape(x.shape) if reduction == "none" else out


def _reduced(losses: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return R.mean(losses)
    if reduction == "sum":
        return R.sum(losses)
    return losses


def _weight_array(weight, classes: int, like: Tensor, fn: str):
    values = backend.xp.asarray(_data(weight), dtype=like.dtype).reshape(-1)
    if values.shape != (classes,):
        raise ShapeError(f"{fn}: weight must hold one value per class ({classes}), got shape {values.shape}")
    return values


def _class_targets(input, target, fn: str):  # noqa: A002
    """(scores as a tensor with a class axis, targets as an array or tensor, whether they are
    class indices)."""
    x = _prediction(input)
    if x.ndim == 0:
        raise ShapeError(f"{fn}: input must have a class axis (the last), got a scalar")
    data = _data(target)
    if data.shape == x.shape[:-1] and data.dtype.kind in "iub":
        return x, data, True
    if data.shape == x.shape and data.dtype.kind == "f":
        return x, target, False
    raise ShapeError(f"{fn}: target must be class indices (integers) of shape {x.shape[:-1]} or class "
                     f"probabilities (floats) of the input's shape {x.shape}, got {data.dtype} of shape "
                     f"{tuple(data.shape)} (the class axis is the last one)")


# -- over a class axis ---------------------------------------------------------------------


def cross_entropy(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean",  # noqa: A002
                  label_smoothing: float = 0.0) -> Tensor:
    """Cross-entropy of logits: L = -sum_j w_j y_j log softmax(z)_j over the LAST axis (the
    class axis; PyTorch's axis 1), PyTorch's ``cross_entropy``.

    ``target``: class indices of the input's shape without its last axis, or class
    probabilities of the input's shape. ``weight`` (C,) rescales each class; the mean over
    class indices then divides by the sum of the targets' weights. Targets equal to
    ``ignore_index`` add nothing and are left out of the mean. ``label_smoothing`` eps mixes
    the targets with the uniform distribution: (1 - eps) y + eps / C. ``'none'`` gives one
    loss per row, of the target's shape (class indices) or the input's without its last axis.

    The work is :func:`lamina.functional.categorical_cross_entropy` with ``from_logits=True``;
    target probabilities that require grad get theirs, -w_j log softmax(z)_j per row.
    """
    fn = "cross_entropy"
    _check_reduction(reduction, fn)
    x, labels, indices = _class_targets(input, target, fn)
    classes = x.shape[-1]
    weights = None if weight is None else _weight_array(weight, classes, x, fn)
    rows = x.reshape(-1, classes)
    if indices:
        flat = labels.reshape(-1).astype(backend.xp.int64)
        ignored = bool((flat == ignore_index).any())
        losses = categorical_cross_entropy(rows, flat, from_logits=True, reduction=reduction,
                                           label_smoothing=label_smoothing, class_weights=weights,
                                           ignore_index=ignore_index if ignored else None)
    elif ignore_index != -100:
        raise ValueError(f"{fn}: ignore_index applies to class indices only, not to class probabilities (as "
                         f"PyTorch); got ignore_index={ignore_index!r} with probabilities of shape {x.shape}")
    else:
        losses = categorical_cross_entropy(rows, labels.reshape(-1, classes), from_logits=True, reduction=reduction,
                                           label_smoothing=label_smoothing, class_weights=weights)
    return losses.reshape(x.shape[:-1]) if reduction == "none" else losses


def nll_loss(input, target, weight=None, ignore_index: int = -100, reduction: str = "mean") -> Tensor:  # noqa: A002
    """Negative log-likelihood of log-probabilities over the LAST axis: L = -w_y log p_y,
    PyTorch's ``nll_loss`` with its ``weight`` and ``ignore_index``; the mean divides by the
    sum of the kept targets' weights. (``lamina.functional.nll_loss`` is lamina's version,
    without these options; both pick the value through it.)"""
    fn = "nll_loss"
    _check_reduction(reduction, fn)
    x, labels, indices = _class_targets(input, target, fn)
    if not indices:
        raise ShapeError(f"{fn}: target must be class indices of shape {x.shape[:-1]}, got {labels.dtype} values "
                         f"of shape {tuple(_data(labels).shape)}")
    xp = backend.xp
    classes = x.shape[-1]
    flat = labels.reshape(-1).astype(xp.int64)
    kept = flat != ignore_index
    safe = xp.where(kept, flat, 0)
    picked = losses_more.nll_loss(x.reshape(-1, classes), safe, reduction="none")
    scale = kept.astype(x.dtype)
    if weight is not None:
        scale = scale * _weight_array(weight, classes, x, fn)[safe]
    losses = picked * scale
    if reduction == "none":
        return losses.reshape(labels.shape)
    total = R.sum(losses)
    return total / scale.sum() if reduction == "mean" else total


def multi_margin_loss(input, target, p: int = 1, margin: float = 1.0, weight=None,  # noqa: A002
                      reduction: str = "mean") -> Tensor:
    """Multi-class hinge loss of scores x over the LAST axis and class indices y:
    L = (1/C) sum_(j != y) w_y max(0, margin - x_y + x_j)^p, PyTorch's ``multi_margin_loss``
    (p = 1 or 2), for any margin. With p = 1 and no weight it is the node of
    :func:`lamina.functional.multiclass_hinge` (which asks for margin >= 0); otherwise it is
    composed from gather, maximum and where."""
    fn = "multi_margin_loss"
    _check_reduction(reduction, fn)
    if p not in (1, 2):
        raise ValueError(f"{fn}: p must be 1 or 2, got {p!r}")
    margin = _check_number(margin, "margin", fn, -math.inf, strict=False)
    x, labels, indices = _class_targets(input, target, fn)
    if not indices:
        raise ShapeError(f"{fn}: target must be class indices of shape {x.shape[:-1]}")
    classes = x.shape[-1]
    rows, flat = x.reshape(-1, classes), labels.reshape(-1).astype(backend.xp.int64)
    if p == 1 and weight is None:
        losses = MultiMargin.apply(rows, labels=_class_labels(flat, rows, fn), margin=margin, reduction=reduction)
        return losses.reshape(labels.shape) if reduction == "none" else losses
    picked = gather(rows, 1, flat[:, None])
    others = backend.xp.arange(classes)[None, :] != flat[:, None]
    terms = where(others, relu(rows - picked + margin), 0.0)        # no gradient at the hinge, as torch
    if p == 2:
        terms = square(terms)
    losses = R.sum(terms, axis=1) / classes
    if weight is not None:
        losses = losses * _weight_array(weight, classes, x, fn)[flat]
    return _reduced(losses.reshape(labels.shape) if reduction == "none" else losses, reduction)


# -- element-wise ----------------------------------------------------------------------------


def mse_loss(input, target, reduction: str = "mean") -> Tensor:  # noqa: A002
    """L = (x - y)^2 per value, PyTorch's ``mse_loss``; the target gets a gradient too."""
    fn = "mse_loss"
    _check_reduction(reduction, fn)
    x = _prediction(input)
    _same_shape(x, target, fn)
    return _reduced(square(x - target), reduction)


def l1_loss(input, target, reduction: str = "mean") -> Tensor:  # noqa: A002
    """L = |x - y| per value, PyTorch's ``l1_loss`` (:func:`lamina.functional.mean_absolute_error`)."""
    return _elementwise(losses_more.mean_absolute_error, "l1_loss", input, target, reduction)


def smooth_l1_loss(input, target, reduction: str = "mean", beta: float = 1.0) -> Tensor:  # noqa: A002
    """L = r^2 / (2 beta) for |r| < beta, else |r| - beta / 2, with r = x - y: PyTorch's
    ``smooth_l1_loss`` (:func:`lamina.functional.smooth_l1`)."""
    return _elementwise(losses_more.smooth_l1, "smooth_l1_loss", input, target, reduction, beta=beta)


def huber_loss(input, target, reduction: str = "mean", delta: float = 1.0) -> Tensor:  # noqa: A002
    """L = r^2 / 2 for |r| < delta, else delta (|r| - delta / 2), with r = x - y: PyTorch's
    ``huber_loss`` (:func:`lamina.functional.huber`)."""
    return _elementwise(losses_more.huber, "huber_loss", input, target, reduction, delta=delta)


def _broadcastable(values, x: Tensor, name: str, fn: str):
    """``values`` (a tensor, or an array in x's dtype) checked to broadcast to x's shape."""
    values = values if isinstance(values, Tensor) else backend.xp.asarray(values, dtype=x.dtype)
    try:
        ok = numpy.broadcast_shapes(tuple(values.shape), x.shape) == x.shape
    except ValueError:
        ok = False
    if not ok:
        raise ShapeError(f"{fn}: {name} of shape {tuple(values.shape)} does not broadcast to the input's shape "
                         f"{x.shape}")
    return values


def _weighted(losses: Tensor, weight, fn: str) -> Tensor:
    return losses if weight is None else losses * _broadcastable(weight, losses, "weight", fn)


def binary_cross_entropy_with_logits(input, target, weight=None, reduction: str = "mean",  # noqa: A002
                                     pos_weight=None) -> Tensor:
    """L = -w (p_w y log sigma(x) + (1 - y) log(1 - sigma(x))) per value, from logits x:
    PyTorch's ``binary_cross_entropy_with_logits``. ``weight`` broadcasts to the input;
    ``pos_weight`` (one value per class, the last axis) weighs the positive term, to trade
    recall against precision. Without ``pos_weight`` it is lamina's fused node
    (:func:`lamina.functional.binary_cross_entropy` with ``from_logits=True``); with it, it is
    (1 - y) x + (1 + (p_w - 1) y) softplus(-x), from softplus."""
    fn = "binary_cross_entropy_with_logits"
    _check_reduction(reduction, fn)
    x = _prediction(input)
    _same_shape(x, target, fn)
    if pos_weight is None:
        losses = lamina_loss.binary_cross_entropy(x.reshape(-1), _flat(target), from_logits=True, reduction="none")
        losses = losses.reshape(x.shape)
    else:
        pos_weight = _broadcastable(pos_weight, x, "pos_weight", fn)
        y = target if isinstance(target, Tensor) else backend.xp.asarray(target, dtype=x.dtype)
        losses = (1 - y) * x + (1 + (pos_weight - 1) * y) * softplus(-x, threshold=math.inf)
    return _reduced(_weighted(losses, weight, fn), reduction)


def binary_cross_entropy(input, target, weight=None, reduction: str = "mean") -> Tensor:  # noqa: A002
    """L = -w (y log p + (1 - y) log(1 - p)) per value of probabilities p: PyTorch's
    ``binary_cross_entropy`` (lamina's :func:`lamina.functional.binary_cross_entropy`, whose
    probabilities are clipped to [1e-7, 1 - 1e-7] where PyTorch clamps the logs at -100)."""
    fn = "binary_cross_entropy"
    _check_reduction(reduction, fn)
    x = _prediction(input)
    _same_shape(x, target, fn)
    losses = lamina_loss.binary_cross_entropy(x.reshape(-1), _flat(target), reduction="none").reshape(x.shape)
    return _reduced(_weighted(losses, weight, fn), reduction)


def kl_div(input, target, reduction: str = "mean", log_target: bool = False) -> Tensor:  # noqa: A002
    """PyTorch's ``kl_div`` with its ``'none'``: one value p (log p - log q) per entry
    (:func:`lamina.functional.kl_div`)."""
    if reduction != "none":
        return losses_extra.kl_div(input, target, log_target=log_target, reduction=reduction)
    return _elementwise(losses_extra.kl_div, "kl_div", input, target, reduction, log_target=log_target)


def poisson_nll_loss(input, target, log_input: bool = True, full: bool = False, eps: float = 1e-8,  # noqa: A002
                     reduction: str = "mean") -> Tensor:
    """PyTorch's ``poisson_nll_loss`` (:func:`lamina.functional.poisson_nll_loss`)."""
    return _elementwise(losses_extra.poisson_nll_loss, "poisson_nll_loss", input, target, reduction,
                        log_input=log_input, full=full, eps=eps)


def gaussian_nll_loss(input, target, var, full: bool = False, eps: float = 1e-6,  # noqa: A002
                      reduction: str = "mean") -> Tensor:
    """PyTorch's ``gaussian_nll_loss`` (:func:`lamina.functional.gaussian_nll_loss`): ``var``
    has the input's shape, that shape without its last axis, or one axis of size 1."""
    fn = "gaussian_nll_loss"
    _check_reduction(reduction, fn)
    x = _prediction(input)
    _same_shape(x, target, fn)
    var = losses_extra._variance(var, x, fn)
    var = var if isinstance(var, Tensor) else Tensor._wrap(var)
    flat_var = broadcast_to(var, x.shape).reshape(-1)
    out = losses_extra.gaussian_nll_loss(x.reshape(-1), _flat(target), flat_var, full=full, eps=eps,
                                         reduction=reduction)
    return out.reshape(x.shape) if reduction == "none" else out


def soft_margin_loss(input, target, reduction: str = "mean") -> Tensor:  # noqa: A002
    """PyTorch's ``soft_margin_loss`` (:func:`lamina.functional.soft_margin_loss`)."""
    return _elementwise(losses_extra.soft_margin_loss, "soft_margin_loss", input, target, reduction)


def hinge_embedding_loss(input, target, margin: float = 1.0, reduction: str = "mean") -> Tensor:  # noqa: A002
    """PyTorch's ``hinge_embedding_loss`` (:func:`lamina.functional.hinge_embedding_loss`)."""
    return _elementwise(losses_extra.hinge_embedding_loss, "hinge_embedding_loss", input, target, reduction,
                        margin=margin)


def margin_ranking_loss(input1, input2, target, margin: float = 0.0, reduction: str = "mean") -> Tensor:
    """PyTorch's ``margin_ranking_loss`` (:func:`lamina.functional.margin_ranking_loss`)."""
    fn = "margin_ranking_loss"
    _check_reduction(reduction, fn)
    x1 = _prediction(input1)
    _same_shape(x1, input2, fn, "input2")
    _same_shape(x1, target, fn)
    out = losses_metric.margin_ranking_loss(_flat(x1), _flat(input2), _flat(target), margin=margin, reduction=reduction)
    return out.reshape(x1.shape) if reduction == "none" else out


# -- embeddings ------------------------------------------------------------------------------


def triplet_margin_with_distance_loss(anchor, positive, negative, *, distance_function=None, margin: float = 1.0,
                                      swap: bool = False, reduction: str = "mean") -> Tensor:
    """L = max(0, margin + d(a, p) - d(a, n)) for any distance d (default: the Euclidean
    :func:`lamina.functional.pairwise_distance`), PyTorch's
    ``triplet_margin_with_distance_loss``; ``swap`` uses min(d(a, n), d(p, n)). Composed
    from the distance, minimum and maximum."""
    fn = "triplet_margin_with_distance_loss"
    _check_reduction(reduction, fn)
    margin = _check_number(margin, "margin", fn, 0.0, strict=True)
    distance = pairwise_distance if distance_function is None else distance_function
    d_positive, d_negative = distance(anchor, positive), distance(anchor, negative)
    if swap:
        d_negative = minimum(d_negative, distance(positive, negative))
    return _reduced(clip(d_positive - d_negative + margin, 0.0, None), reduction)   # torch's clamp_min
