"""Metric-learning losses: they shape distances between embeddings rather than fit targets.

An embedding network is trained so that inputs of the same kind land close together and
inputs of different kinds far apart. These losses see pairs or triplets of embeddings
(rows over the last axis) and, for pairs, whether they belong together:

- :func:`triplet_margin_loss`: an anchor nearer its positive than its negative by a margin;
- :func:`contrastive_loss`: similar pairs pulled together, dissimilar ones pushed past a margin;
- :func:`cosine_embedding_loss`: the same with cosine similarity instead of a distance;
- :func:`margin_ranking_loss`: one score above another by a margin (scores, not rows).

Each loss is one node with a closed-form backward. A row gives one loss; with more than one
batch axis a sample's rows are averaged, and ``reduction='mean'`` averages the samples,
``'sum'`` adds them and ``'none'`` returns them. The labels get no gradient.
"""

from __future__ import annotations

import math
import numbers

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional.elementwise import sqrt, where
from lamina.functional.loss import _check_reduction
from lamina.functional.losses_more import _check_number, _prediction, _reduce_samples, _sample_scale

__all__ = ["contrastive_loss", "cosine_embedding_loss", "margin_ranking_loss", "triplet_margin_loss"]

COSINE_EPSILON = 1e-12
"""Added to each squared norm in the cosine similarity (PyTorch's value), so zero rows give 0."""


def _p_distance(diff, p: float):
    """||v||_p over the last axis, v = ``diff``."""
    xp = backend.xp
    if p == 2.0:
        return xp.sqrt((diff * diff).sum(axis=-1))
    return xp.power(xp.power(xp.abs(diff), diff.dtype.type(p)).sum(axis=-1), diff.dtype.type(1.0 / p))


def _p_distance_slope(diff, norm, p: float):
    """d||v||_p / dv = sign(v) |v|^(p - 1) / ||v||_p^(p - 1); 0 where ||v||_p = 0 (as PyTorch)."""
    xp = backend.xp
    t = diff.dtype.type
    positive = (norm > 0)[..., None]
    safe_norm = xp.where(positive, norm[..., None], t(1))
    if p == 2.0:
        slope = diff / safe_norm
    else:
        slope = xp.sign(diff) * xp.power(xp.abs(diff) / safe_norm, t(p - 1.0))
    return xp.where(positive, slope, t(0))


def _row_scale(dy, rows_shape: tuple[int, ...], reduction: str):
    """dJ / dL for each row's loss, with a trailing axis to broadcast over the features."""
    return backend.xp.asarray(_sample_scale(dy, rows_shape, reduction))[..., None]


def _p_distance_slope_tensor(diff: Tensor, norm, p: float) -> Tensor:
    """:func:`_p_distance_slope` as recorded ops on the tensor ``diff`` (``norm``, the saved
    array of its norms, gives only where they are 0)."""
    positive = (norm > 0)[..., None]
    if p == 2.0:
        norms = sqrt(where(positive, (diff * diff).sum(axis=-1, keepdims=True), 1.0))
        return where(positive, diff / norms, 0.0)
    magnitude = diff.abs()
    norms = where(positive, (magnitude**p).sum(axis=-1, keepdims=True), 1.0) ** (1.0 / p)
    return where(positive, backend.xp.sign(diff.data) * (magnitude / norms) ** (p - 1.0), 0.0)


def _row_scale_tensor(dy: Tensor, rows_shape: tuple[int, ...], reduction: str) -> Tensor:
    """:func:`_row_scale` for a tensor ``dy``, by recorded ops."""
    return _sample_scale(dy, rows_shape, reduction).expand_dims(-1)


class TripletMargin(Function):
    """L = max(0, margin + d(a, p) - d(a, n)) with d(u, v) = ||u - v + eps||_p over the last axis.

    With ``swap``, d(a, n) is replaced by min(d(a, n), d(p, n)) (the harder of the two
    negatives; a tie shares the gradient equally, as PyTorch). Where the hinge is active
    (>= 0), with s_uv = dd(u, v)/du: dL/da = s_ap - w s_an, dL/dp = -s_ap - (1 - w) s_pn,
    dL/dn = w s_an + (1 - w) s_pn, w the weight of d(a, n) in the minimum.
    Hyperparameters: ``margin``, ``p``, ``eps``, ``swap``, ``reduction``.
    """

    def forward(self, anchor, positive, negative):
        xp = backend.xp
        t = anchor.dtype.type
        eps = t(self.eps)
        self.diff_ap, self.diff_an = anchor - positive + eps, anchor - negative + eps
        self.d_ap, self.d_an = _p_distance(self.diff_ap, self.p), _p_distance(self.diff_an, self.p)
        d_negative = self.d_an
        self.weight_an = xp.ones_like(self.d_an)
        if self.swap:
            self.diff_pn = positive - negative + eps
            self.d_pn = _p_distance(self.diff_pn, self.p)
            self.weight_an = xp.where(self.d_an < self.d_pn, t(1), xp.where(self.d_an == self.d_pn, t(0.5), t(0)))
            d_negative = xp.minimum(self.d_an, self.d_pn)
        hinge = t(self.margin) + self.d_ap - d_negative
        self.active = hinge >= 0
        return _reduce_samples(xp.maximum(hinge, t(0)), self.reduction)

    def backward(self, dy):
        scale = _row_scale(dy, self.d_ap.shape, self.reduction) * self.active[..., None]
        s_ap = _p_distance_slope(self.diff_ap, self.d_ap, self.p)
        w = self.weight_an[..., None]
        s_an = w * _p_distance_slope(self.diff_an, self.d_an, self.p)
        grad_a, grad_p, grad_n = s_ap - s_an, -s_ap, s_an
        if self.swap:
            s_pn = (1 - w) * _p_distance_slope(self.diff_pn, self.d_pn, self.p)
            grad_p, grad_n = grad_p - s_pn, grad_n + s_pn
        return grad_a * scale, grad_p * scale, grad_n * scale

    def backward_graph(self, dy):
        # the hinge's activity and the weights of the minimum are piecewise constant in the inputs
        anchor, positive, negative = self.inputs
        eps = self.eps
        scale = _row_scale_tensor(dy, self.d_ap.shape, self.reduction) * self.active[..., None]
        s_ap = _p_distance_slope_tensor(anchor - positive + eps, self.d_ap, self.p)
        w = self.weight_an[..., None]
        s_an = _p_distance_slope_tensor(anchor - negative + eps, self.d_an, self.p) * w
        grad_a, grad_p, grad_n = s_ap - s_an, -s_ap, s_an
        if self.swap:
            s_pn = _p_distance_slope_tensor(positive - negative + eps, self.d_pn, self.p) * (1 - w)
            grad_p, grad_n = grad_p - s_pn, grad_n + s_pn
        return tuple(g * scale if need else None for g, need in zip((grad_a, grad_p, grad_n), self.needs_grad))


class CosineEmbedding(Function):
    """L = 1 - cos(x1, x2) for y = 1 and max(0, cos(x1, x2) - margin) for y = -1, with
    cos = x1.x2 / sqrt((|x1|^2 + eps)(|x2|^2 + eps)) over the last axis.

    dcos/dx1 = x2 / sqrt(m1 m2) - cos x1 / m1 with m_i = |x_i|^2 + eps (and symmetrically);
    dL/dcos is -1 for y = 1 and 1 for y = -1 where cos >= margin, else 0.
    Hyperparameters: ``y`` (rows' labels, +1 or -1, in x1's dtype), ``margin``, ``reduction``.
    """

    def forward(self, x1, x2):
        xp = backend.xp
        t = x1.dtype.type
        eps = t(COSINE_EPSILON)
        self.x1, self.x2 = x1, x2
        self.m1, self.m2 = (x1 * x1).sum(axis=-1) + eps, (x2 * x2).sum(axis=-1) + eps
        self.denominator = xp.sqrt(self.m1 * self.m2)
        self.cos = (x1 * x2).sum(axis=-1) / self.denominator
        similar = self.y == 1
        gap = self.cos - t(self.margin)
        self.slope = xp.where(similar, t(-1), xp.where(gap >= 0, t(1), t(0)))
        return _reduce_samples(xp.where(similar, 1 - self.cos, xp.maximum(gap, t(0))), self.reduction)

    def backward(self, dy):
        g = _row_scale(dy, self.cos.shape, self.reduction) * self.slope[..., None]
        cos, denominator = self.cos[..., None], self.denominator[..., None]
        d_x1 = self.x2 / denominator - cos * self.x1 / self.m1[..., None]
        d_x2 = self.x1 / denominator - cos * self.x2 / self.m2[..., None]
        return g * d_x1, g * d_x2

    def backward_graph(self, dy):
        # the slope dL/dcos is piecewise constant (the label and the margin's side)
        x1, x2 = self.inputs
        g = _row_scale_tensor(dy, self.cos.shape, self.reduction) * self.slope[..., None]
        m1 = (x1 * x1).sum(axis=-1, keepdims=True) + COSINE_EPSILON
        m2 = (x2 * x2).sum(axis=-1, keepdims=True) + COSINE_EPSILON
        denominator = sqrt(m1 * m2)
        cos = (x1 * x2).sum(axis=-1, keepdims=True) / denominator
        d_x1 = (x2 / denominator - cos * x1 / m1) * g if self.needs_grad[0] else None
        d_x2 = (x1 / denominator - cos * x2 / m2) * g if self.needs_grad[1] else None
        return d_x1, d_x2


class MarginRanking(Function):
    """L = max(0, -y (x1 - x2) + margin), element-wise; where that is >= 0,
    dL/dx1 = -y = -dL/dx2. Hyperparameters: ``y`` (+1 or -1, x1's dtype), ``margin``, ``reduction``."""

    def forward(self, x1, x2):
        xp = backend.xp
        t = x1.dtype.type
        hinge = t(self.margin) - self.y * (x1 - x2)
        self.slope = xp.where(hinge >= 0, -self.y, t(0))
        return _reduce_samples(xp.maximum(hinge, t(0)), self.reduction)

    def backward(self, dy):
        g = self.slope * _sample_scale(dy, self.slope.shape, self.reduction)
        return g, -g

    def backward_graph(self, dy):
        g = _sample_scale(dy, self.slope.shape, self.reduction) * self.slope    # the slope is piecewise constant
        return (g if self.needs_grad[0] else None), (-g if self.needs_grad[1] else None)


class Contrastive(Function):
    """L = s d^2 / 2 + (1 - s) max(0, margin - d)^2 / 2 with d = ||x1 - x2||_2 over the last
    axis and s = 1 for a similar pair, 0 for a dissimilar one.

    dL/dx1 = (s - (1 - s) max(0, margin - d) / d)(x1 - x2) = -dL/dx2; the second term is
    taken as 0 at d = 0, where the direction to push apart is undefined.
    Hyperparameters: ``same`` (rows' s in x1's dtype), ``margin``, ``reduction``.
    """

    def forward(self, x1, x2):
        xp = backend.xp
        t = x1.dtype.type
        self.diff = x1 - x2
        self.distance = xp.sqrt((self.diff * self.diff).sum(axis=-1))
        self.shortfall = xp.maximum(t(self.margin) - self.distance, t(0))
        same = self.same
        losses = t(0.5) * (same * self.distance * self.distance + (1 - same) * self.shortfall * self.shortfall)
        return _reduce_samples(losses, self.reduction)

    def backward(self, dy):
        xp = backend.xp
        t = self.diff.dtype.type
        apart = self.distance > 0
        push = xp.where(apart, self.shortfall / xp.where(apart, self.distance, t(1)), t(0))
        coefficient = self.same - (1 - self.same) * push
        g = _row_scale(dy, self.distance.shape, self.reduction) * coefficient[..., None] * self.diff
        return g, -g

    def backward_graph(self, dy):
        x1, x2 = self.inputs
        diff = x1 - x2
        apart = self.distance > 0
        # d, with the rows at d = 0 (where the push is taken as 0) kept off sqrt's infinite slope
        distance = sqrt(where(apart, (diff * diff).sum(axis=-1), 1.0))
        short = self.shortfall > 0        # where max(0, margin - d) is margin - d
        push = where(apart & short, (self.margin - distance) / distance, 0.0)
        coefficient = self.same - (1 - self.same) * push
        g = _row_scale_tensor(dy, self.distance.shape, self.reduction) * coefficient.expand_dims(-1) * diff
        return (g if self.needs_grad[0] else None), (-g if self.needs_grad[1] else None)


# -- argument checks ---------------------------------------------------------------------


def _embeddings(fn: str, **named) -> list[Tensor]:
    """The named inputs as tensors of one shape, with a feature axis."""
    tensors = [_prediction(x) for x in named.values()]
    names = list(named)
    first = tensors[0]
    if first.ndim == 0:
        raise ShapeError(f"{fn}: {names[0]} must have a feature axis (the last), got a scalar")
    for name, x in zip(names[1:], tensors[1:]):
        if x.shape != first.shape:
            raise ShapeError(f"{fn}: {names[0]} has shape {first.shape} but {name} has shape {x.shape}")
    return tensors


def _labels(values, allowed: tuple[int, int], shape: tuple[int, ...], dtype, name: str, fn: str):
    """``values`` of ``shape`` whose every entry is one of ``allowed``, in ``dtype``."""
    xp = backend.xp
    data = values.data if isinstance(values, Tensor) else xp.asarray(values)
    if data.shape != shape:
        raise ShapeError(f"{fn}: {name} must have shape {shape}, got shape {data.shape}")
    data = data.astype(dtype)
    known = (data == allowed[0]) | (data == allowed[1])
    if not bool(known.all()):
        found = sorted({float(v) for v in backend.to_numpy(data[~known]).reshape(-1)[:5]})
        raise ValueError(f"{fn}: {name} must hold only {allowed[0]} or {allowed[1]}, got {found}")
    return data


def _margin(margin, fn: str, low: float = -math.inf, high: float = math.inf) -> float:
    ok = isinstance(margin, numbers.Real) and not isinstance(margin, bool) and math.isfinite(margin)
    if not ok or not low <= margin <= high:
        bounds = "" if math.isinf(low) and math.isinf(high) else f" in [{low:g}, {high:g}]"
        raise ValueError(f"{fn}: margin must be a finite number{bounds}, got {margin!r}")
    return float(margin)


# -- the losses ------------------------------------------------------------------------------


def triplet_margin_loss(anchor, positive, negative, margin: float = 1.0, p: float = 2, eps: float = 1e-6,
                        swap: bool = False, reduction: str = "mean") -> Tensor:
    """Triplet loss (Schroff et al. 2015, FaceNet): L = max(0, margin + d(a, p) - d(a, n)).

    The anchor a must be nearer its positive p (same kind) than its negative n by at least
    ``margin`` > 0. d(u, v) = ||u - v + eps||_p over the last axis, the eps inside the norm as
    in PyTorch's ``pairwise_distance``. ``swap=True`` (Balntas et al. 2016) uses the nearer
    of d(a, n) and d(p, n). All three inputs have one shape, (N, D) or (D,); ``p`` >= 1.
    As PyTorch's ``triplet_margin_loss``.
    """
    fn = "triplet_margin_loss"
    _check_reduction(reduction, fn)
    margin = _check_number(margin, "margin", fn, 0.0, strict=True)
    p = _check_number(p, "p", fn, 1.0, strict=False)
    eps = _check_number(eps, "eps", fn, 0.0, strict=False)
    a, pos, neg = _embeddings(fn, anchor=anchor, positive=positive, negative=negative)
    return TripletMargin.apply(a, pos, neg, margin=margin, p=p, eps=eps, swap=bool(swap), reduction=reduction)


def cosine_embedding_loss(x1, x2, y, margin: float = 0.0, reduction: str = "mean") -> Tensor:
    """Cosine embedding loss: L = 1 - cos(x1, x2) for y = 1 (similar) and
    max(0, cos(x1, x2) - margin) for y = -1 (dissimilar).

    cos = x1.x2 / sqrt((|x1|^2 + eps)(|x2|^2 + eps)) over the last axis with eps = 1e-12 (as
    PyTorch). x1 and x2 have one shape, (N, D) or (D,); ``y`` holds one label, 1 or -1, per
    row (shape x1.shape[:-1]); ``margin`` in [-1, 1] (0 to 0.5 is typical). As PyTorch's
    ``cosine_embedding_loss``.
    """
    fn = "cosine_embedding_loss"
    _check_reduction(reduction, fn)
    margin = _margin(margin, fn, low=-1.0, high=1.0)
    x1, x2 = _embeddings(fn, x1=x1, x2=x2)
    labels = _labels(y, (1, -1), x1.shape[:-1], x1.data.dtype, "y", fn)
    return CosineEmbedding.apply(x1, x2, y=labels, margin=margin, reduction=reduction)


def margin_ranking_loss(x1, x2, y, margin: float = 0.0, reduction: str = "mean") -> Tensor:
    """Margin ranking loss: L = max(0, -y (x1 - x2) + margin), element-wise.

    y = 1 asks for x1 to rank above x2 by ``margin``, y = -1 for the reverse. x1, x2 and y
    have one shape (scores, not rows); a sample of several values averages them. As
    PyTorch's ``margin_ranking_loss`` for (N,) scores.
    """
    fn = "margin_ranking_loss"
    _check_reduction(reduction, fn)
    margin = _margin(margin, fn)
    x1, x2 = (_prediction(x1), _prediction(x2))
    if x1.shape != x2.shape:
        raise ShapeError(f"{fn}: x1 has shape {x1.shape} but x2 has shape {x2.shape}")
    labels = _labels(y, (1, -1), x1.shape, x1.data.dtype, "y", fn)
    return MarginRanking.apply(x1, x2, y=labels, margin=margin, reduction=reduction)


def contrastive_loss(x1, x2, same, margin: float = 1.0, reduction: str = "mean") -> Tensor:
    """Contrastive loss (Hadsell, Chopra and LeCun 2006):

        L = s d^2 / 2 + (1 - s) max(0, margin - d)^2 / 2,   d = ||x1 - x2||_2 over the last axis.

    ``same`` holds s per row (shape x1.shape[:-1]): 1 (or True) for a similar pair, pulled
    together, 0 (False) for a dissimilar one, pushed apart until it is ``margin`` > 0 away.
    This is the paper's convention (s = 1 - Y there, as its Y = 0 marks similar pairs); some
    libraries drop the 1/2. PyTorch has no such loss.
    """
    fn = "contrastive_loss"
    _check_reduction(reduction, fn)
    margin = _check_number(margin, "margin", fn, 0.0, strict=True)
    x1, x2 = _embeddings(fn, x1=x1, x2=x2)
    labels = _labels(same, (0, 1), x1.shape[:-1], x1.data.dtype, "same", fn)
    return Contrastive.apply(x1, x2, same=labels, margin=margin, reduction=reduction)
