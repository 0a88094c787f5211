"""Regression, margin and divergence losses, Keras-style: ``loss(y_pred, y_true)``.

Each loss is one node with a closed-form backward. The element-wise losses (mean
absolute error, Huber, smooth L1, hinge) take one loss per sample, the mean over every
axis but the first, so ``reduction='mean'`` is the mean over all m values, as in
PyTorch; ``'sum'`` adds the per-sample losses and ``'none'`` returns them.
:func:`kl_divergence` sums over a sample's values instead (a divergence between two
distributions), so its mean is PyTorch's ``reduction='batchmean'``. The losses over
classes (:func:`multiclass_hinge`, :func:`nll_loss`) take the classes on the last axis,
one loss per row, and a sample made of several rows (a sequence) averages its rows.

Where PyTorch gives the target a gradient, so do these losses: a target tensor created
with ``requires_grad=True`` receives dJ/dy.
"""

from __future__ import annotations

import math
import numbers

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional.elementwise import clip, log, where
from lamina.functional.loss import _check_reduction, _integer_labels

# -- reductions inside the node ----------------------------------------------------------


def _divisors(shape: tuple[int, ...], per_sample: str) -> tuple[int, int]:
    """(d, m): a sample's loss is its values' sum divided by d, and m samples are averaged."""
    inner = math.prod(shape[1:]) if len(shape) > 1 else 1
    return (inner if per_sample == "mean" else 1), (shape[0] if shape else 1)


def _divide(total, count: int):
    """total / count; nan for a count of 0 (a mean over nothing, as NumPy's and PyTorch's),
    without NumPy's warnings."""
    t = total.dtype.type
    return total / t(count) if count else total * t(math.nan)


def _reduce_samples(values, reduction: str, per_sample: str = "mean"):
    """Per-sample losses (the mean or sum over every axis but the first), then reduced; the
    mean of no values is nan."""
    d, m = _divisors(values.shape, per_sample)
    if reduction == "none":
        if values.ndim <= 1:
            return values
        return _divide(values.reshape(m, -1 if m else 0).sum(axis=1), d)
    return _divide(values.sum(), d * m if reduction == "mean" else d)


def _sample_scale(dy, shape: tuple[int, ...], reduction: str, per_sample: str = "mean"):
    """dJ/dv for each value v of :func:`_reduce_samples`, broadcastable to ``shape`` (a count
    of 0 leaves no value to scale, so it divides by 1 instead)."""
    d, m = _divisors(shape, per_sample)
    t = dy.dtype.type
    if reduction == "none":
        scale = dy / t(max(d, 1))
        return scale.reshape(scale.shape + (1,) * (len(shape) - scale.ndim))
    return dy / t(max(d * m if reduction == "mean" else d, 1))


# -- argument checks ---------------------------------------------------------------------


def _prediction(y_pred) -> Tensor:
    return y_pred if isinstance(y_pred, Tensor) else Tensor(y_pred)


def _target(y_true, y_pred: Tensor, fn: str):
    """``y_true`` checked against ``y_pred``'s shape, in its dtype; a tensor of the same
    dtype is kept as it is, so that a gradient can reach it."""
    if isinstance(y_true, Tensor):
        data = y_true.data
    else:
        data = backend.xp.asarray(y_true)
    if data.shape != y_pred.shape:
        raise ShapeError(f"{fn}: y_pred has shape {y_pred.shape} but y_true has shape {data.shape}")
    if isinstance(y_true, Tensor) and data.dtype == y_pred.dtype:
        return y_true
    if isinstance(y_true, Tensor) and y_true.requires_grad:
        raise TypeError(f"{fn}: y_true has dtype {data.dtype} but y_pred has dtype {y_pred.dtype}; a target "
                        "that needs a gradient must have the prediction's dtype")
    return data.astype(y_pred.dtype, copy=False)


def _check_number(value, name: str, fn: str, low: float, strict: bool) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or (value <= low if strict else value < low):
        bound = f"> {low:g}" if strict else f">= {low:g}"
        raise ValueError(f"{fn}: {name} must be a finite number {bound}, got {value!r}")
    return float(value)


def _class_labels(y_true, y_pred: Tensor, fn: str):
    """Integer class indices of shape y_pred.shape[:-1] (one-hot rows are turned into
    their indices), checked against the y_pred.shape[-1] classes."""
    if y_pred.ndim == 0:
        raise ShapeError(f"{fn}: y_pred must have a class axis (the last), got a scalar")
    labels = _integer_labels(y_true, y_pred, fn)
    if labels is not None:
        return labels
    xp = backend.xp
    rows = y_true.data if isinstance(y_true, Tensor) else xp.asarray(y_true)
    if not bool(xp.all((rows == 0) | (rows == 1))) or not bool(xp.all(rows.sum(axis=-1) == 1)):
        raise ValueError(f"{fn}: y_true of shape {rows.shape} must be integer labels of shape {y_pred.shape[:-1]} "
                         "or one-hot rows (a single 1 in each row); soft targets are not supported")
    return rows.argmax(axis=-1).astype(xp.intp)


# -- element-wise losses -----------------------------------------------------------------


class _PointwiseLoss(Function):
    """An element-wise loss of (y_hat, y) reduced in the node (hyperparameter
    ``reduction``). A subclass gives the values and the slopes dL/dy_hat and dL/dy
    (either ``None`` when not needed); one that also gives them as recorded ops
    (:meth:`slope_tensors`) has a differentiable backward."""

    per_sample = "mean"

    def values(self, p, y):
        raise NotImplementedError

    def slopes(self, p, y, want_p: bool, want_y: bool):
        raise NotImplementedError

    def forward(self, p, y):
        self.p, self.y = p, y
        return _reduce_samples(self.values(p, y), self.reduction, self.per_sample)

    def backward(self, dy):
        scale = _sample_scale(dy, self.p.shape, self.reduction, self.per_sample)
        grads = self.slopes(self.p, self.y, *self.needs_grad)
        return tuple(None if g is None else g * scale for g in grads)

    def slope_tensors(self, p: Tensor, y: Tensor, want_p: bool, want_y: bool) -> tuple:
        """:meth:`slopes` as recorded ops on the input tensors (arrays where a slope is
        piecewise constant), for :meth:`backward_graph_from_slopes`."""
        raise NotImplementedError

    def backward_graph_from_slopes(self, dy):
        """The differentiable backward of a subclass that gives :meth:`slope_tensors`; such a
        subclass sets ``backward_graph = _PointwiseLoss.backward_graph_from_slopes``."""
        scale = _sample_scale(dy, self.p.shape, self.reduction, self.per_sample)
        grads = self.slope_tensors(*self.inputs, *self.needs_grad)
        return tuple(None if g is None else scale * g for g in grads)


class AbsoluteError(_PointwiseLoss):
    """L = |y_hat - y|; dL/dy_hat = sign(y_hat - y) (0 at y_hat = y) = -dL/dy."""

    def values(self, p, y):
        return backend.xp.abs(p - y)

    def slopes(self, p, y, want_p, want_y):
        s = backend.xp.sign(p - y)
        return (s if want_p else None), (-s if want_y else None)

    def slope_tensors(self, p, y, want_p, want_y):
        return self.slopes(p.data, y.data, want_p, want_y)      # sign(y_hat - y): piecewise constant

    backward_graph = _PointwiseLoss.backward_graph_from_slopes


class HuberError(_PointwiseLoss):
    """Huber's loss of r = y_hat - y with threshold ``delta``: r^2 / 2 for |r| < delta,
    else delta (|r| - delta / 2); dL/dy_hat = clip(r, -delta, delta) = -dL/dy. With
    ``smooth_l1=True`` both are divided by delta (smooth L1 with beta = delta)."""

    def values(self, p, y):
        xp = backend.xp
        t = p.dtype.type
        r = p - y
        a = xp.abs(r)
        delta, half = t(self.delta), t(0.5)
        if self.smooth_l1:
            return xp.where(a < delta, half * r * r / delta, a - half * delta)
        return xp.where(a < delta, half * r * r, delta * (a - half * delta))

    def slopes(self, p, y, want_p, want_y):
        delta = p.dtype.type(self.delta)
        g = backend.xp.clip(p - y, -delta, delta)
        if self.smooth_l1:
            g = g / delta
        return (g if want_p else None), (-g if want_y else None)

    def slope_tensors(self, p, y, want_p, want_y):
        g = clip(p - y, -self.delta, self.delta)
        if self.smooth_l1:
            g = g / self.delta
        return (g if want_p else None), (-g if want_y else None)

    backward_graph = _PointwiseLoss.backward_graph_from_slopes


class Hinge(_PointwiseLoss):
    """L = max(0, 1 - t y_hat) with t = a y + b the label in {-1, 1} (a = 2, b = -1 maps
    {0, 1} labels); where 1 - t y_hat >= 0, dL/dy_hat = -t and dL/dy = -a y_hat, else 0."""

    def _signs(self, y):
        return y if self.a == 1 else y * y.dtype.type(self.a) + y.dtype.type(self.b)

    def values(self, p, y):
        return backend.xp.maximum(1 - self._signs(y) * p, 0)

    def slopes(self, p, y, want_p, want_y):
        xp = backend.xp
        t = self._signs(y)
        active = (1 - t * p) >= 0
        zero = p.dtype.type(0)
        g_p = xp.where(active, -t, zero) if want_p else None
        g_y = xp.where(active, -p * p.dtype.type(self.a), zero) if want_y else None
        return g_p, g_y

    def slope_tensors(self, p, y, want_p, want_y):
        active = (1 - self._signs(y.data) * p.data) >= 0
        g_p = where(active, -(y * self.a + self.b), 0.0) if want_p else None
        g_y = where(active, p * -self.a, 0.0) if want_y else None
        return g_p, g_y

    backward_graph = _PointwiseLoss.backward_graph_from_slopes


class KLDivergence(_PointwiseLoss):
    """L = sum_j p_j (log p_j - log q_j) from log-probabilities ``log q`` and probabilities
    p (0 log 0 = 0); dL/dlog q = -p, dL/dp = log p + 1 - log q (-inf at p = 0)."""

    per_sample = "sum"

    def values(self, log_q, p):
        xp = backend.xp
        positive = p > 0
        p_log_p = xp.where(positive, p * xp.log(xp.where(positive, p, 1)), p.dtype.type(0))
        return p_log_p - p * log_q

    def slopes(self, log_q, p, want_q, want_p):
        xp = backend.xp
        g_q = -p if want_q else None
        g_p = None
        if want_p:
            positive = p > 0
            g_p = xp.where(positive, xp.log(xp.where(positive, p, 1)) + 1 - log_q, p.dtype.type(-math.inf))
        return g_q, g_p

    def slope_tensors(self, log_q, p, want_q, want_p):
        g_q = -p if want_q else None
        g_p = None
        if want_p:
            positive = p.data > 0
            g_p = where(positive, log(where(positive, p, 1.0)) + 1 - log_q, -math.inf)
        return g_q, g_p

    backward_graph = _PointwiseLoss.backward_graph_from_slopes


def _pointwise(cls, y_pred, y_true, fn: str, reduction: str, **params) -> Tensor:
    _check_reduction(reduction, fn)
    y_pred = _prediction(y_pred)
    return cls.apply(y_pred, _target(y_true, y_pred, fn), reduction=reduction, **params)


def mean_absolute_error(y_pred, y_true, reduction: str = "mean") -> Tensor:
    """Mean absolute error (L1 loss): J = (1/m) sum |y_hat - y| over the m values.

    dJ/dy_hat = sign(y_hat - y) / m, 0 where y_hat = y (as PyTorch's ``l1_loss``). A
    sample's loss is the mean over its values.
    """
    return _pointwise(AbsoluteError, y_pred, y_true, "mean_absolute_error", reduction)


def huber(y_pred, y_true, delta: float = 1.0, reduction: str = "mean") -> Tensor:
    """Huber loss: J = (1/m) sum L(y_hat - y) over the m values, with
    L(r) = r^2 / 2 for |r| < delta and delta (|r| - delta / 2) otherwise.

    Quadratic near the target and linear beyond ``delta`` (> 0), so outliers pull with
    a bounded gradient clip(y_hat - y, -delta, delta) / m. PyTorch's ``huber_loss``.
    """
    fn = "huber"
    delta = _check_number(delta, "delta", fn, 0.0, strict=True)
    return _pointwise(HuberError, y_pred, y_true, fn, reduction, delta=delta, smooth_l1=False)


def smooth_l1(y_pred, y_true, beta: float = 1.0, reduction: str = "mean") -> Tensor:
    """Smooth L1 loss: J = (1/m) sum L(y_hat - y) over the m values, with
    L(r) = r^2 / (2 beta) for |r| < beta and |r| - beta / 2 otherwise.

    The Huber loss with delta = beta divided by beta (PyTorch's ``smooth_l1_loss``):
    its gradient saturates at +-1 / m. ``beta = 0`` is the mean absolute error.
    """
    fn = "smooth_l1"
    beta = _check_number(beta, "beta", fn, 0.0, strict=False)
    if beta == 0.0:
        return _pointwise(AbsoluteError, y_pred, y_true, fn, reduction)
    return _pointwise(HuberError, y_pred, y_true, fn, reduction, delta=beta, smooth_l1=True)


def hinge(y_pred, y_true, reduction: str = "mean") -> Tensor:
    """Hinge loss for binary labels: J = (1/m) sum max(0, 1 - y y_hat) over the m values.

    ``y_pred`` holds raw scores (no sigmoid); ``y_true`` labels in {-1, 1}, or in {0, 1}
    which are mapped to -1 and 1 (as Keras' ``hinge``); anything else is refused.
    dJ/dy_hat = -y / m where 1 - y y_hat >= 0, else 0.
    """
    fn = "hinge"
    _check_reduction(reduction, fn)
    y_pred = _prediction(y_pred)
    y = _target(y_true, y_pred, fn)
    xp = backend.xp
    data = y.data if isinstance(y, Tensor) else y
    if bool(xp.all(xp.abs(data) == 1)):
        a, b = 1, 0
    elif bool(xp.all((data == 0) | (data == 1))):
        a, b = 2, -1
    else:
        found = backend.to_numpy(xp.unique(data)[:8]).tolist()
        raise ValueError(f"{fn}: y_true must hold labels in {{-1, 1}} or in {{0, 1}}, got values {found}")
    return Hinge.apply(y_pred, y, reduction=reduction, a=a, b=b)


def kl_divergence(y_pred, y_true, reduction: str = "mean") -> Tensor:
    """Kullback-Leibler divergence KL(p || q): J = (1/m) sum_i sum_j p_ij (log p_ij - log q_ij).

    ``y_pred`` holds log-probabilities log q (e.g. from ``log_softmax``), ``y_true``
    probabilities p >= 0, with 0 log 0 = 0; the inner sum runs over each sample's
    values and m is the number of samples: PyTorch's
    ``kl_div(log_q, p, reduction='batchmean')``. dJ/dlog q = -p / m, and
    dJ/dp = (log p + 1 - log q) / m, -inf where p = 0 (PyTorch gives NaN there).
    """
    fn = "kl_divergence"
    _check_reduction(reduction, fn)
    y_pred = _prediction(y_pred)
    p = _target(y_true, y_pred, fn)
    data = p.data if isinstance(p, Tensor) else p
    if data.size and not bool((data >= 0).all()):
        raise ValueError(f"{fn}: y_true must hold probabilities >= 0, got a minimum of {float(data.min())}")
    return KLDivergence.apply(y_pred, p, reduction=reduction)


# -- losses over classes -----------------------------------------------------------------


def _rows(labels):
    """(row numbers, labels) indexing each row's label in rows of classes."""
    xp = backend.xp
    flat = labels.reshape(-1)
    return xp.arange(flat.size), flat


class MultiMargin(Function):
    """The multiclass SVM loss of score rows s (last axis) and integer ``labels``:
    L = (1/C) sum_(j != y) max(0, margin - s_y + s_j). dL/ds_j = 1/C for each j != y
    with a positive term, and dL/ds_y = -(their count) / C; a term at exactly 0 gives
    none (as PyTorch)."""

    def forward(self, s):
        xp = backend.xp
        classes = s.shape[-1]
        t = s.dtype.type
        index = _rows(self.labels)
        flat = s.reshape(-1, classes)
        z = (t(self.margin) - flat[index])[:, None] + flat
        z[index] = 0
        self.active = z > 0
        self.shape = s.shape
        per_row = xp.maximum(z, 0).sum(axis=1) / t(max(classes, 1))
        return _reduce_samples(per_row.reshape(self.labels.shape), self.reduction)

    def backward(self, dy):
        xp = backend.xp
        classes = self.shape[-1]
        scale = _sample_scale(dy, self.labels.shape, self.reduction) / dy.dtype.type(max(classes, 1))
        scale = xp.broadcast_to(scale, self.labels.shape).reshape(-1, 1)
        grad = self.active * scale
        grad[_rows(self.labels)] = -self.active.sum(axis=1) * scale[:, 0]
        return (grad.reshape(self.shape),)

    def backward_graph(self, dy):
        # piecewise linear in s: dL/ds is dy times a constant pattern (the active terms)
        classes = self.shape[-1]
        pattern = self.active.astype(dy.dtype)
        pattern[_rows(self.labels)] = -self.active.sum(axis=1)
        scale = _sample_scale(dy, self.labels.shape, self.reduction) / dy.dtype.type(max(classes, 1))
        scale = scale.broadcast_to(self.labels.shape).reshape(-1, 1)
        return ((scale * pattern).reshape(self.shape),)


class NegativeLogLikelihood(Function):
    """L = -log_probs[y] over the last axis for integer ``labels``; dL/dlog_probs is -1 at
    the label and 0 elsewhere."""

    def forward(self, log_probs):
        classes = log_probs.shape[-1]
        self.shape, self.dtype = log_probs.shape, log_probs.dtype
        picked = log_probs.reshape(-1, classes)[_rows(self.labels)]
        return _reduce_samples(-picked.reshape(self.labels.shape), self.reduction)

    def backward(self, dy):
        xp = backend.xp
        classes = self.shape[-1]
        scale = xp.broadcast_to(_sample_scale(dy, self.labels.shape, self.reduction), self.labels.shape)
        grad = xp.zeros((self.labels.size, classes), dtype=self.dtype)
        grad[_rows(self.labels)] = -scale.reshape(-1)
        return (grad.reshape(self.shape),)

    backward_graph = Function.linear_backward_graph


def multiclass_hinge(y_pred, y_true, margin: float = 1.0, reduction: str = "mean") -> Tensor:
    """Multiclass hinge (SVM) loss of raw scores s over C classes (the last axis):
    J = (1/m) sum_i (1/C) sum_(j != y_i) max(0, margin - s_(i, y_i) + s_ij).

    ``y_true`` holds integer labels in [0, C) (or one-hot rows); ``margin`` >= 0. As
    PyTorch's ``multi_margin_loss`` (p = 1, no weights) for (m, C) scores.
    """
    fn = "multiclass_hinge"
    _check_reduction(reduction, fn)
    margin = _check_number(margin, "margin", fn, 0.0, strict=False)
    y_pred = _prediction(y_pred)
    labels = _class_labels(y_true, y_pred, fn)
    return MultiMargin.apply(y_pred, labels=labels, margin=margin, reduction=reduction)


def nll_loss(y_pred, y_true, reduction: str = "mean") -> Tensor:
    """Negative log-likelihood: J = -(1/m) sum_i log_probs[i, y_i].

    ``y_pred`` holds log-probabilities over the last axis (e.g. from ``log_softmax``;
    together they are the cross-entropy), ``y_true`` integer labels in [0, C) (or one-hot
    rows). As PyTorch's ``nll_loss`` (no weights, no ignored index) for (m, C) inputs.
    """
    fn = "nll_loss"
    _check_reduction(reduction, fn)
    y_pred = _prediction(y_pred)
    labels = _class_labels(y_true, y_pred, fn)
    return NegativeLogLikelihood.apply(y_pred, labels=labels, reduction=reduction)
