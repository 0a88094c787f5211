"""The remaining PyTorch and Keras losses, Keras-style: ``loss(y_pred, y_true)``.

PyTorch's: :func:`poisson_nll_loss`, :func:`gaussian_nll_loss`, :func:`soft_margin_loss`,
:func:`multilabel_soft_margin_loss`, :func:`hinge_embedding_loss`, :func:`multilabel_margin_loss`
and :func:`kl_div` (``kl_divergence`` with PyTorch's ``log_target`` and reductions). Keras':
:func:`log_cosh`, :func:`squared_hinge`, :func:`mean_squared_logarithmic_error`,
:func:`mean_absolute_percentage_error`, :func:`cosine_similarity_loss` and :func:`poisson`.

Reductions follow the rest of lamina. An element-wise loss gives one loss per sample, the mean
over every axis but the first; a loss over rows (the last axis holds classes or features) gives
one loss per row, and a sample made of several rows averages them. ``reduction='mean'`` averages
the samples, which is PyTorch's (and Keras') mean over everything; ``'sum'`` adds the per-sample
losses and ``'none'`` returns them.

Most losses are composed from existing ops, which give their gradients, the target's included
where the target is a tensor that asks for one. Two are single nodes: :func:`gaussian_nll_loss`
(its variance is clamped with a gradient that ignores the clamp) and :func:`multilabel_margin_loss`
(a hinge on every pair of a target class and another class).
"""

from __future__ import annotations

import math
import numbers

import numpy

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional import elementwise as E
from lamina.functional import reduce as R
from lamina.functional._util import sum_to, unbroadcast
from lamina.functional.elementwise import exp, log, maximum, sqrt, where
from lamina.functional.loss import EPSILON, _check_reduction, _per_sample, _reduce
from lamina.functional.losses_more import (
    KLDivergence,
    _check_number,
    _prediction,
    _reduce_samples,
    _sample_scale,
    _target,
)
from lamina.functional.math_more import log1p, square
from lamina.functional.smooth_activation import softplus

__all__ = [
    "cosine_similarity_loss", "gaussian_nll_loss", "hinge_embedding_loss", "kl_div", "log_cosh",
    "mean_absolute_percentage_error", "mean_squared_logarithmic_error", "multilabel_margin_loss",
    "multilabel_soft_margin_loss", "poisson", "poisson_nll_loss", "soft_margin_loss", "squared_hinge",
]

NORM_EPSILON = 1e-12
"""Lower bound on a row's squared norm before it divides the row (Keras' ``l2_normalize``)."""

_KL_REDUCTIONS = ("mean", "batchmean", "sum", "none")


def _as_tensor(x) -> Tensor:
    """``x`` as a tensor: a tensor as it is, an array as a constant of its own dtype."""
    return x if isinstance(x, Tensor) else Tensor._wrap(x)


def _values(x):
    return x.data if isinstance(x, Tensor) else x


def _elementwise_cost(losses: Tensor, reduction: str) -> Tensor:
    """An element-wise loss averaged over each sample's values, then reduced."""
    return _reduce(_per_sample(losses), reduction)


def _inputs(y_pred, y_true, fn: str, reduction: str) -> tuple[Tensor, Tensor]:
    """The prediction and the target (of the prediction's shape and dtype) as tensors."""
    _check_reduction(reduction, fn)
    y_pred = _prediction(y_pred)
    return y_pred, _as_tensor(_target(y_true, y_pred, fn))


def _rows_of(y_pred, fn: str) -> Tensor:
    y_pred = _prediction(y_pred)
    if y_pred.ndim == 0:
        raise ShapeError(f"{fn}: y_pred must have a class (last) axis, got a scalar")
    return y_pred


# -- PyTorch's losses ----------------------------------------------------------------------


def poisson_nll_loss(y_pred, y_true, log_input: bool = True, full: bool = False, eps: float = 1e-8,
                     reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of counts y under a Poisson distribution of rate lambda.

    With ``log_input=True`` ``y_pred`` is log lambda and L = e^(y_hat) - y y_hat; otherwise it
    is lambda and L = y_hat - y log(y_hat + eps). The term log(y!) that does not depend on the
    prediction is left out, unless ``full``: then Stirling's approximation of it,
    y log y - y + log(2 pi y) / 2, is added where y > 1 (0 elsewhere). As PyTorch's
    ``poisson_nll_loss``; dL/dy_hat = e^(y_hat) - y, or 1 - y / (y_hat + eps).
    """
    fn = "poisson_nll_loss"
    eps = _check_number(eps, "eps", fn, 0.0, strict=False)
    y_pred, y = _inputs(y_pred, y_true, fn, reduction)
    if log_input:
        losses = exp(y_pred) - y * y_pred
    else:
        losses = y_pred - y * log(y_pred + eps)
    if full:
        losses = losses + _stirling(y)
    return _elementwise_cost(losses, reduction)


def _stirling(y: Tensor) -> Tensor:
    """y log y - y + log(2 pi y) / 2 where y > 1, else 0 (computed at max(y, 1), so the
    masked entries never take the log of a count of 0)."""
    safe = maximum(y, 1.0)
    term = safe * log(safe) - safe + 0.5 * log(safe * (2 * math.pi))
    return where(y.data > 1, term, 0.0)


class GaussianNLL(Function):
    """L = (log v + (y_hat - y)^2 / v) / 2 (+ log(2 pi) / 2 when ``full``), v = max(var, eps).

    dL/dy_hat = (y_hat - y) / v = -dL/dy and dL/dvar = (1 / v - (y_hat - y)^2 / v^2) / 2: the
    clamp passes the gradient through unchanged, as PyTorch's (which clamps outside the
    graph). ``var`` broadcasts to the prediction's shape; its gradient is summed back.
    Hyperparameters: ``eps``, ``full``, ``reduction``.
    """

    def forward(self, p, y, var):
        xp = backend.xp
        t = p.dtype.type
        self.shapes = p.shape, var.shape
        self.v = xp.maximum(var, t(self.eps))
        self.r = p - y
        losses = t(0.5) * (xp.log(self.v) + self.r * self.r / self.v)
        if self.full:
            losses = losses + t(0.5 * math.log(2 * math.pi))
        return _reduce_samples(losses, self.reduction)

    def backward(self, dy):
        p_shape, var_shape = self.shapes
        scale = _sample_scale(dy, p_shape, self.reduction)
        need_p, need_y, need_var = self.needs_grad
        slope = self.r / self.v * scale if need_p or need_y else None
        d_var = None
        if need_var:
            half = self.v.dtype.type(0.5)
            d_var = unbroadcast(half * (1 / self.v - self.r * self.r / (self.v * self.v)) * scale, var_shape)
        return (slope if need_p else None), (-slope if need_y else None), d_var

    def backward_graph(self, dy):
        p, y, var = self.inputs
        p_shape, var_shape = self.shapes
        scale = _sample_scale(dy, p_shape, self.reduction)
        need_p, need_y, need_var = self.needs_grad
        v = var + (self.v - var.data)        # max(var, eps) with the clamp's slope taken as 1, as in backward
        r = p - y
        slope = r / v * scale if need_p or need_y else None
        d_var = sum_to((1 / v - r * r / (v * v)) * scale * 0.5, var_shape) if need_var else None
        return (slope if need_p else None), (-slope if need_y else None), d_var


def gaussian_nll_loss(y_pred, y_true, var, full: bool = False, eps: float = 1e-6,
                      reduction: str = "mean") -> Tensor:
    """Negative log-likelihood of y under a Gaussian of mean y_hat and variance ``var``:
    L = (log max(var, eps) + (y_hat - y)^2 / max(var, eps)) / 2, plus log(2 pi) / 2 when ``full``.

    ``var`` (>= 0) is a number, an array or a tensor (trained alongside the mean, it gets a
    gradient) of the prediction's shape, of that shape without its last axis (one variance per
    row), or of the same rank with exactly one axis of size 1 where the prediction's is larger;
    any other shape is refused. The clamp at ``eps`` keeps log v finite and lets the gradient
    through unchanged, as PyTorch's ``gaussian_nll_loss``.
    """
    fn = "gaussian_nll_loss"
    eps = _check_number(eps, "eps", fn, 0.0, strict=False)
    y_pred, y = _inputs(y_pred, y_true, fn, reduction)
    var = _variance(var, y_pred, fn)
    return GaussianNLL.apply(y_pred, y, var, eps=eps, full=bool(full), reduction=reduction)


def _variance(var, y_pred: Tensor, fn: str):
    """``var`` checked (>= 0, a shape PyTorch accepts) and shaped to broadcast to y_pred."""
    xp = backend.xp
    if isinstance(var, numbers.Real) and not isinstance(var, bool):
        var = xp.asarray(var, dtype=y_pred.dtype)
    elif isinstance(var, Tensor):
        if var.dtype != y_pred.dtype:
            if var.requires_grad:
                raise TypeError(f"{fn}: var has dtype {var.dtype} but y_pred has dtype {y_pred.dtype}; a var "
                                "that needs a gradient must have the prediction's dtype")
            var = var.data.astype(y_pred.dtype)
    else:
        var = xp.asarray(var, dtype=y_pred.dtype)
    values = _values(var)
    if values.size and bool((values < 0).any()):
        raise ValueError(f"{fn}: var must be >= 0, got a minimum of {float(values.min())}")
    shape, target = tuple(values.shape), y_pred.shape
    if values.ndim == 0 or shape == target:
        return var
    if shape == target[:-1]:
        return var.reshape(shape + (1,))
    mismatched = [v for v, t in zip(shape, target) if v != t]
    if len(shape) == len(target) and mismatched == [1]:
        return var
    raise ShapeError(f"{fn}: var has shape {shape} but y_pred has shape {target}; var must have y_pred's shape, "
                     f"its shape without the last axis {target[:-1]}, or y_pred's shape with one axis set to 1")


def soft_margin_loss(y_pred, y_true, reduction: str = "mean") -> Tensor:
    """Two-class logistic loss of scores y_hat and labels y (in {-1, 1}):
    L = log(1 + e^(-y y_hat)), computed as softplus(-y y_hat) so that it never overflows.

    dL/dy_hat = -y sigma(-y y_hat); the target gets no gradient. As PyTorch's ``soft_margin_loss``.
    """
    y_pred, y = _inputs(y_pred, y_true, "soft_margin_loss", reduction)
    return _elementwise_cost(softplus(-(y.data * y_pred), threshold=math.inf), reduction)


def multilabel_soft_margin_loss(y_pred, y_true, weight=None, reduction: str = "mean") -> Tensor:
    """Binary cross-entropy of C independent labels y in {0, 1} from their scores y_hat (the
    last axis), averaged over the classes:

        L = (1/C) sum_c w_c (log(1 + e^(y_hat_c)) - y_c y_hat_c),

    which is -(1/C) sum_c w_c (y_c log sigma(y_hat_c) + (1 - y_c) log sigma(-y_hat_c)).
    ``weight`` (default all 1) broadcasts to the prediction's shape, e.g. one weight per class.
    dL/dy_hat_c = w_c (sigma(y_hat_c) - y_c) / C. As PyTorch's ``multilabel_soft_margin_loss``.
    """
    fn = "multilabel_soft_margin_loss"
    y_pred, y = _inputs(_rows_of(y_pred, fn), y_true, fn, reduction)
    losses = softplus(y_pred, threshold=math.inf) - y * y_pred
    if weight is not None:
        losses = losses * _weights(weight, y_pred, fn)
    return _elementwise_cost(R.mean(losses, axis=-1), reduction)


def _weights(weight, y_pred: Tensor, fn: str):
    values = _values(weight) if isinstance(weight, Tensor) else backend.xp.asarray(weight, dtype=y_pred.dtype)
    try:
        shape = numpy.broadcast_shapes(values.shape, y_pred.shape)
    except ValueError:
        shape = None
    if shape != y_pred.shape:
        raise ShapeError(f"{fn}: weight of shape {values.shape} does not broadcast to y_pred's shape {y_pred.shape}")
    return weight if isinstance(weight, Tensor) else values


def hinge_embedding_loss(y_pred, y_true, margin: float = 1.0, reduction: str = "mean") -> Tensor:
    """Loss of distances (or dissimilarities) x = y_hat between pairs labelled y = 1 (alike)
    or y = -1 (unlike): L = x where y = 1 and max(0, margin - x) where y = -1.

    dL/dx = 1 for alike pairs and -1 for unlike ones with x <= margin. Other label values get
    both terms, and the target no gradient, as PyTorch's ``hinge_embedding_loss``.
    """
    fn = "hinge_embedding_loss"
    if not isinstance(margin, numbers.Real) or isinstance(margin, bool) or not math.isfinite(margin):
        raise ValueError(f"{fn}: margin must be a finite number, got {margin!r}")
    y_pred, y = _inputs(y_pred, y_true, fn, reduction)
    labels = y.data
    gap = float(margin) - y_pred
    pushed = where((labels != 1) & (gap.data >= 0), gap, 0.0)
    kept = where(labels != -1, y_pred, 0.0)
    return _elementwise_cost(pushed + kept, reduction)


class MultilabelMargin(Function):
    """Multi-label hinge of score rows s (the last axis) with target classes T (a set) per row:

        L = (1/C) sum_(j in T) sum_(i not in T) max(0, 1 - s_j + s_i).

    ``counts`` (rows, C) says how often each class is listed as a target (a class listed
    twice counts twice, as PyTorch). A term above 0 adds 1/C to dL/ds_i and takes 1/C from
    dL/ds_j; a term at exactly 0 gives none. Hyperparameters: ``counts``, ``reduction``.
    """

    def forward(self, s):
        xp = backend.xp
        classes = s.shape[-1]
        rows = s.reshape(-1, classes)
        is_target = self.counts > 0
        # z[r, j, i] = 1 - s_rj + s_ri for target j and non-target i
        z = 1 - rows[:, :, None] + rows[:, None, :]
        pairs = (z > 0) & is_target[:, :, None] & ~is_target[:, None, :]
        weights = xp.where(pairs, self.counts[:, :, None], 0).astype(s.dtype)
        t = s.dtype.type
        self.row_shape, self.shape = s.shape[:-1], s.shape
        self.slope = (weights.sum(axis=1) - weights.sum(axis=2)) / t(classes)
        per_row = (weights * z).sum(axis=(1, 2)) / t(classes)
        return _reduce_samples(per_row.reshape(self.row_shape), self.reduction)

    def backward(self, dy):
        xp = backend.xp
        scale = xp.broadcast_to(_sample_scale(dy, self.row_shape, self.reduction), self.row_shape)
        return ((self.slope * scale.reshape(-1, 1)).reshape(self.shape),)

    def backward_graph(self, dy):
        # piecewise linear in s: the slope is a constant pattern, dy the only tensor
        scale = _sample_scale(dy, self.row_shape, self.reduction).broadcast_to(self.row_shape)
        return ((scale.reshape(-1, 1) * self.slope).reshape(self.shape),)


def multilabel_margin_loss(y_pred, y_true, reduction: str = "mean") -> Tensor:
    """Multi-label hinge loss of scores s over C classes (the last axis): each target class
    should score at least 1 above every other class,

        L = (1/C) sum_(j in T) sum_(i not in T) max(0, 1 - s_j + s_i).

    ``y_true`` is in PyTorch's format: integers of the prediction's shape, each row listing
    its target classes T first and ended by -1 (anything after the first -1 is ignored), e.g.
    ``[3, 0, -1, 1]`` for T = {3, 0}; every value must lie in [-1, C). As PyTorch's
    ``multilabel_margin_loss``; rows may carry leading axes beyond the batch.
    """
    fn = "multilabel_margin_loss"
    _check_reduction(reduction, fn)
    y_pred = _rows_of(y_pred, fn)
    xp = backend.xp
    labels = _values(y_true) if isinstance(y_true, Tensor) else xp.asarray(y_true)
    if labels.shape != y_pred.shape:
        raise ShapeError(f"{fn}: y_true must have y_pred's shape {y_pred.shape} (target classes ended by -1), "
                         f"got shape {labels.shape}")
    if labels.dtype.kind not in "iu":
        if labels.dtype.kind != "f" or not bool(xp.all(labels == xp.round(labels))):
            raise ValueError(f"{fn}: y_true must hold integer class indices, got dtype {labels.dtype}")
    classes = y_pred.shape[-1]
    if labels.size and (labels.min() < -1 or labels.max() >= classes):
        raise ValueError(f"{fn}: y_true values must lie in [-1, {classes}), got values from "
                         f"{int(labels.min())} to {int(labels.max())}")
    rows = labels.reshape(-1, classes).astype(xp.int64)
    listed = xp.cumprod(rows != -1, axis=1).astype(bool)          # before the first -1
    flat = (xp.arange(rows.shape[0])[:, None] * classes + rows)[listed]
    counts = xp.bincount(flat, minlength=rows.size).reshape(rows.shape)
    return MultilabelMargin.apply(y_pred, counts=counts, reduction=reduction)


def kl_div(input, target, log_target: bool = False, reduction: str = "mean") -> Tensor:  # noqa: A002
    """PyTorch's ``kl_div``: KL(p || q) from log-probabilities ``input`` = log q and the target
    p (probabilities, or log-probabilities log p with ``log_target=True``):

        L_ij = p_ij (log p_ij - log q_ij)   (0 where p_ij = 0).

    A sample's loss is the sum over its values. ``reduction``: 'batchmean' divides the total by
    the batch size (the divergence per sample, the mathematically right mean), 'mean' by the
    number of values (PyTorch's default), 'sum' gives the total, 'none' the per-sample sums.
    With ``log_target=False`` this is :func:`kl_divergence` (whose mean is 'batchmean').
    """
    fn = "kl_div"
    if reduction not in _KL_REDUCTIONS:
        raise ValueError(f"{fn}: reduction must be one of {_KL_REDUCTIONS}, got {reduction!r}")
    log_q = _prediction(input)
    p = _target(target, log_q, fn)
    if log_target:
        p = _as_tensor(p)
        values = exp(p) * (p - log_q)
        sums = R.sum(values, axis=tuple(range(1, values.ndim))) if values.ndim > 1 else values
    else:
        data = _values(p)
        if data.size and not bool((data >= 0).all()):
            raise ValueError(f"{fn}: target must hold probabilities >= 0 (or pass log_target=True for "
                             f"log-probabilities), got a minimum of {float(data.min())}")
        sums = KLDivergence.apply(log_q, p, reduction="none")
    if reduction == "none":
        return sums
    total = R.sum(sums)
    if reduction == "batchmean":
        return total / (log_q.shape[0] if log_q.ndim else 1)
    if reduction == "mean":      # over no value: nan, as PyTorch's
        return total / log_q.size if log_q.size else total + total.dtype.type(float("nan"))
    return total


# -- Keras' losses -------------------------------------------------------------------------


def log_cosh(y_pred, y_true, reduction: str = "mean") -> Tensor:
    """Log-cosh loss of the residual x = y_hat - y: L = log cosh x, about x^2 / 2 near 0 and
    |x| - log 2 far from it (Keras' ``log_cosh``).

    Computed as x + softplus(-2x) - log 2, which cannot overflow (cosh x does past |x| ~ 89 in float32);
    dL/dy_hat = tanh x = -dL/dy.
    """
    y_pred, y = _inputs(y_pred, y_true, "log_cosh", reduction)
    x = y_pred - y
    return _elementwise_cost(x + softplus(-2.0 * x, threshold=math.inf) - math.log(2.0), reduction)


def _hinge_signs(y: Tensor, fn: str) -> Tensor:
    """Labels in {-1, 1} as they are, labels in {0, 1} mapped to -1 and 1 (as Keras)."""
    xp = backend.xp
    data = y.data
    if bool(xp.all((data == 0) | (data == 1))):
        return 2.0 * y - 1.0
    if bool(xp.all(xp.abs(data) == 1)):
        return y
    found = backend.to_numpy(xp.unique(data)[:8]).tolist()
    raise ValueError(f"{fn}: y_true must hold labels in {{-1, 1}} or in {{0, 1}}, got values {found}")


def squared_hinge(y_pred, y_true, reduction: str = "mean") -> Tensor:
    """Squared hinge loss of scores y_hat and labels y: L = max(0, 1 - y y_hat)^2.

    Labels in {-1, 1}, or in {0, 1} which become -1 and 1, as Keras' ``squared_hinge``;
    dL/dy_hat = -2 y max(0, 1 - y y_hat).
    """
    fn = "squared_hinge"
    y_pred, y = _inputs(y_pred, y_true, fn, reduction)
    return _elementwise_cost(square(maximum(1.0 - _hinge_signs(y, fn) * y_pred, 0.0)), reduction)


def mean_squared_logarithmic_error(y_pred, y_true, reduction: str = "mean") -> Tensor:
    """Mean squared logarithmic error: L = (log(1 + max(y_hat, eps)) - log(1 + max(y, eps)))^2,
    eps = 1e-7 (Keras' ``mean_squared_logarithmic_error``).

    It compares ratios rather than differences (for targets spanning orders of magnitude);
    negative predictions are raised to eps and get no gradient.
    """
    y_pred, y = _inputs(y_pred, y_true, "mean_squared_logarithmic_error", reduction)
    diff = log1p(maximum(y_pred, EPSILON)) - log1p(maximum(y, EPSILON))
    return _elementwise_cost(square(diff), reduction)


def mean_absolute_percentage_error(y_pred, y_true, reduction: str = "mean") -> Tensor:
    """Mean absolute percentage error: L = 100 |y - y_hat| / max(|y|, eps), eps = 1e-7, so a
    target of 0 gives a large but finite loss (Keras' ``mean_absolute_percentage_error``)."""
    y_pred, y = _inputs(y_pred, y_true, "mean_absolute_percentage_error", reduction)
    return _elementwise_cost(100.0 * E.abs((y - y_pred) / maximum(E.abs(y), EPSILON)), reduction)


def _l2_normalized(v: Tensor) -> Tensor:
    """v / sqrt(max(sum v^2, 1e-12)) over the last axis (a zero row stays zero)."""
    return v / sqrt(maximum(R.sum(v * v, axis=-1, keepdims=True), NORM_EPSILON))


def cosine_similarity_loss(y_pred, y_true, reduction: str = "mean") -> Tensor:
    """Minus the cosine similarity of prediction and target rows (the last axis):
    L = -sum_k u_k v_k with u, v the rows scaled to unit length (Keras' ``CosineSimilarity``
    loss): -1 for rows pointing the same way, 0 where either row is zero.

    Each row's squared norm is raised to at least 1e-12 before it divides the row (Keras'
    ``l2_normalize``). For the similarity itself, see ``cosine_similarity``.
    """
    fn = "cosine_similarity_loss"
    y_pred, y = _inputs(_rows_of(y_pred, fn), y_true, fn, reduction)
    rows = -R.sum(_l2_normalized(y_pred) * _l2_normalized(y), axis=-1)
    return _elementwise_cost(rows, reduction)


def poisson(y_pred, y_true, reduction: str = "mean") -> Tensor:
    """Keras' Poisson loss of a predicted rate y_hat (> 0) and counts y:
    L = y_hat - y log(y_hat + eps), eps = 1e-7; dL/dy_hat = 1 - y / (y_hat + eps).
    PyTorch's form, with the prediction a log-rate, is :func:`poisson_nll_loss`."""
    y_pred, y = _inputs(y_pred, y_true, "poisson", reduction)
    return _elementwise_cost(y_pred - y * log(y_pred + EPSILON), reduction)
