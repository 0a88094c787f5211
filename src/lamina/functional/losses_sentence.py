"""Losses for training sentence embeddings, as the sentence-transformers library defines them.

Each is a pure function of embeddings (rows of shape (N, D)) and, where the loss needs
them, labels; all are built from differentiable primitives, so they have gradients of any
order. The defaults (scale 20, margins 0.5 and 5) are sentence-transformers' own.

- :func:`multiple_negatives_ranking_loss` (MNRL, InfoNCE with in-batch negatives), its
  symmetric variant :func:`multiple_negatives_symmetric_ranking_loss`;
- :func:`cosent_loss` and :func:`angle_loss`: pairs ranked by a similarity label;
- :func:`sentence_contrastive_loss`, :func:`online_contrastive_loss`: similar/dissimilar pairs;
- :func:`sentence_triplet_loss`: anchor, positive, negative;
- :func:`cosine_similarity_mse_loss`: the cosine similarity regressed onto a label;
- :func:`matryoshka_loss`: any of them summed over truncations of the embeddings.
"""

from __future__ import annotations

import numbers
from collections.abc import Callable, Sequence

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import relu
from lamina.functional.elementwise import abs as absolute
from lamina.functional.losses_metric import triplet_margin_loss
from lamina.functional.reduce_more import logsumexp
from lamina.functional.shape import concat, getitem, pad
from lamina.functional.similarity import cosine_similarity, normalize, pairwise_distance
from lamina.functional.torch_losses import cross_entropy

__all__ = [
    "angle_loss", "cos_sim", "cosent_loss", "cosine_similarity_mse_loss", "dot_score", "matryoshka_loss",
    "multiple_negatives_ranking_loss", "multiple_negatives_symmetric_ranking_loss", "online_contrastive_loss",
    "pairwise_angle_sim", "pairwise_cos_sim", "sentence_contrastive_loss", "sentence_triplet_loss",
]

DISTANCES = ("cosine", "euclidean", "manhattan")
"""The distance metrics of the pair and triplet losses (sentence-transformers' ``SiameseDistanceMetric``)."""


def _rows(x, name: str, fn: str) -> Tensor:
    x = x if isinstance(x, Tensor) else Tensor(x)
    if x.ndim != 2:
        raise ShapeError(f"{fn}: {name} must be embeddings of shape (N, D), got shape {x.shape}")
    return x


def _same_rows(fn: str, **named) -> list[Tensor]:
    """The named embeddings, each (N, D), all of the first one's shape."""
    tensors = [_rows(x, name, fn) for name, x in named.items()]
    first_name, first = next(iter(named)), tensors[0]
    for name, x in zip(list(named)[1:], tensors[1:]):
        if x.shape != first.shape:
            raise ShapeError(f"{fn}: {first_name} has shape {first.shape} but {name} has shape {x.shape}; "
                             "expected one shape (N, D)")
    return tensors


def _labels(labels, n: int, dtype, fn: str):
    xp = backend.xp
    data = labels.data if isinstance(labels, Tensor) else xp.asarray(labels)
    if data.shape != (n,):
        raise ShapeError(f"{fn}: labels must have shape ({n},), one per pair, got shape {data.shape}")
    return data.astype(dtype)


def _number(value, name: str, fn: str, positive: bool = True) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and value == value
    if not ok or (positive and not value > 0) or abs(value) == float("inf"):
        raise ValueError(f"{fn}: {name} must be a finite number{' > 0' if positive else ''}, got {value!r}")
    return float(value)


# -- similarities --------------------------------------------------------------------------


def cos_sim(a, b) -> Tensor:
    """The matrix S_ij = a_i . b_j / (||a_i|| ||b_j||) of rows a (N, D) and b (M, D), each row
    scaled by max(||row||, 1e-12) (sentence-transformers' ``util.cos_sim``); 1-d inputs are one row."""
    a, b = (x if isinstance(x, Tensor) else Tensor(x) for x in (a, b))
    a = a.expand_dims(0) if a.ndim == 1 else a
    b = b.expand_dims(0) if b.ndim == 1 else b
    return normalize(a, axis=-1) @ normalize(b, axis=-1).T


def dot_score(a, b) -> Tensor:
    """The matrix S_ij = a_i . b_j (sentence-transformers' ``util.dot_score``)."""
    a, b = (x if isinstance(x, Tensor) else Tensor(x) for x in (a, b))
    a = a.expand_dims(0) if a.ndim == 1 else a
    b = b.expand_dims(0) if b.ndim == 1 else b
    return a @ b.T


def pairwise_cos_sim(a, b) -> Tensor:
    """cos(a_i, b_i) for paired rows (N,), norms raised to at least 1e-12 (``util.pairwise_cos_sim``)."""
    a, b = _same_rows("pairwise_cos_sim", a=a, b=b)
    return (normalize(a, axis=-1) * normalize(b, axis=-1)).sum(axis=-1)


def pairwise_angle_sim(x, y) -> Tensor:
    """AnglE's similarity of paired rows: each row is read as a complex vector z = u + iv (its
    first and second halves, an odd row padded with one zero), and

        s_i = | sum_k Re(w_k) + Im(w_k) |,   w = (z_x / z_y) ||z_y|| / ||z_x||

    the quotient taken as (x conj(y)) / sum_k |y_k|^2 (sentence-transformers' ``util.pairwise_angle_sim``)."""
    x, y = _same_rows("pairwise_angle_sim", x=x, y=y)
    if x.shape[1] % 2:
        x, y = pad(x, ((0, 0), (0, 1))), pad(y, ((0, 0), (0, 1)))
    h = x.shape[1] // 2
    a, b = getitem(x, (slice(None), slice(0, h))), getitem(x, (slice(None), slice(h, None)))
    c, d = getitem(y, (slice(None), slice(0, h))), getitem(y, (slice(None), slice(h, None)))
    y_squared = (c * c + d * d).sum(axis=1, keepdims=True)
    ratio = ((a * a + b * b).sum(axis=1, keepdims=True) ** 0.5) / (y_squared ** 0.5)
    real = (a * c + b * d) / y_squared / ratio
    imaginary = (b * c - a * d) / y_squared / ratio
    return absolute(real.sum(axis=1) + imaginary.sum(axis=1))


# -- ranking losses --------------------------------------------------------------------------


def _candidates(anchors, positives, negatives, fn: str) -> tuple[Tensor, Tensor, int]:
    a, p = _same_rows(fn, anchors=anchors, positives=positives)
    columns = [p]
    for k, negative in enumerate(negatives or ()):
        negative = _rows(negative, f"negatives[{k}]", fn)
        if negative.shape[1] != a.shape[1]:
            raise ShapeError(f"{fn}: negatives[{k}] has shape {negative.shape} but the anchors are {a.shape}; "
                             f"expected rows of {a.shape[1]} features")
        columns.append(negative)
    return a, (concat(columns, axis=0) if len(columns) > 1 else p), a.shape[0]


def multiple_negatives_ranking_loss(anchors, positives, negatives: Sequence | None = None, scale: float = 20.0,
                                    similarity: Callable = cos_sim) -> Tensor:
    """MNRL (Henderson et al. 2017): each anchor a_i must pick its positive p_i among every
    candidate of the batch, the other positives and any hard ``negatives`` (each (M, D), added
    as extra columns):

        L = mean_i -log softmax_j(scale * sim(a_i, c_j))[i],   c = (p; n_1; n_2; ...)

    anchors, positives: (N, D); ``similarity`` gives the (N, M) matrix (:func:`cos_sim`).
    As sentence-transformers' ``MultipleNegativesRankingLoss``.
    """
    fn = "multiple_negatives_ranking_loss"
    scale = _number(scale, "scale", fn)
    a, candidates, n = _candidates(anchors, positives, negatives, fn)
    scores = similarity(a, candidates) * scale
    return cross_entropy(scores, backend.xp.arange(n))


def multiple_negatives_symmetric_ranking_loss(anchors, positives, negatives: Sequence | None = None,
                                              scale: float = 20.0, similarity: Callable = cos_sim) -> Tensor:
    """MNRL both ways: (L_forward + L_backward) / 2, L_forward as
    :func:`multiple_negatives_ranking_loss` and L_backward each positive picking its anchor
    among the N anchors (the transposed anchor-positive block; negatives take no part in it).
    As sentence-transformers' ``MultipleNegativesSymmetricRankingLoss``."""
    fn = "multiple_negatives_symmetric_ranking_loss"
    scale = _number(scale, "scale", fn)
    a, candidates, n = _candidates(anchors, positives, negatives, fn)
    scores = similarity(a, candidates) * scale
    target = backend.xp.arange(n)
    backward = cross_entropy(getitem(scores, (slice(None), slice(0, n))).T, target)
    return (cross_entropy(scores, target) + backward) / 2


def _pair_ranking(similarities: Tensor, labels, scale: float) -> Tensor:
    """log(1 + sum_{(i, j): y_i < y_j} exp(scale (s_i - s_j))): every pair ranked below
    another by label should be below it by similarity too."""
    xp = backend.xp
    differences = (similarities.expand_dims(1) - similarities.expand_dims(0)) * scale
    below = labels[:, None] < labels[None, :]
    masked = differences - xp.where(below, 0.0, 1e12).astype(differences.dtype)
    zero = Tensor(xp.zeros(1, dtype=differences.dtype))
    return logsumexp(concat([zero, masked.reshape(-1)], axis=0), axis=0)


def cosent_loss(embeddings1, embeddings2, labels, scale: float = 20.0) -> Tensor:
    """CoSENT (Su 2022): L = log(1 + sum_{y_i < y_j} exp(scale (cos_i - cos_j))), cos_i the
    cosine similarity of pair i and y_i its label (any real score of how similar it is).
    As sentence-transformers' ``CoSENTLoss`` (pairs with labels not below each other add
    exp(-1e12), i.e. nothing)."""
    fn = "cosent_loss"
    scale = _number(scale, "scale", fn)
    u, v = _same_rows(fn, embeddings1=embeddings1, embeddings2=embeddings2)
    return _pair_ranking(pairwise_cos_sim(u, v), _labels(labels, u.shape[0], u.dtype, fn), scale)


def angle_loss(embeddings1, embeddings2, labels, scale: float = 20.0) -> Tensor:
    """AnglE (Li and Li 2023): :func:`cosent_loss` with the cosine replaced by
    :func:`pairwise_angle_sim`. As sentence-transformers' ``AnglELoss``."""
    fn = "angle_loss"
    scale = _number(scale, "scale", fn)
    u, v = _same_rows(fn, embeddings1=embeddings1, embeddings2=embeddings2)
    return _pair_ranking(pairwise_angle_sim(u, v), _labels(labels, u.shape[0], u.dtype, fn), scale)


# -- pair and triplet losses ------------------------------------------------------------------


def _distance(u: Tensor, v: Tensor, distance: str, fn: str) -> Tensor:
    if distance == "cosine":
        return 1 - cosine_similarity(u, v, axis=-1)
    if distance == "euclidean":
        return pairwise_distance(u, v, p=2)
    if distance == "manhattan":
        return pairwise_distance(u, v, p=1)
    raise ValueError(f"{fn}: distance must be one of {', '.join(map(repr, DISTANCES))}, got {distance!r}")


def sentence_contrastive_loss(embeddings1, embeddings2, labels, distance: str = "cosine", margin: float = 0.5,
                              reduction: str = "mean") -> Tensor:
    """Contrastive loss over pairs (Hadsell et al. 2006) with sentence-transformers' defaults:

        L_i = (y_i d_i^2 + (1 - y_i) max(0, margin - d_i)^2) / 2

    y_i = 1 for a similar pair, 0 for a dissimilar one; d = 1 - cos (``distance='cosine'``,
    cosine eps 1e-8), or ``'euclidean'`` / ``'manhattan'`` (||u - v + 1e-6||_p, PyTorch's
    ``pairwise_distance``). ``reduction`` 'mean' (``size_average=True``) or 'sum'. With the
    Euclidean distance it is :func:`lamina.functional.contrastive_loss` but for the 1e-6.
    As sentence-transformers' ``ContrastiveLoss``.
    """
    fn = "sentence_contrastive_loss"
    margin = _number(margin, "margin", fn)
    if reduction not in ("mean", "sum"):
        raise ValueError(f"{fn}: reduction must be 'mean' or 'sum', got {reduction!r}")
    u, v = _same_rows(fn, embeddings1=embeddings1, embeddings2=embeddings2)
    y = _labels(labels, u.shape[0], u.dtype, fn)
    d = _distance(u, v, distance, fn)
    losses = (d * d * y + relu(margin - d) ** 2 * (1 - y)) * 0.5
    return losses.mean() if reduction == "mean" else losses.sum()


def online_contrastive_loss(embeddings1, embeddings2, labels, distance: str = "cosine",
                            margin: float = 0.5) -> Tensor:
    """The contrastive loss over the hard pairs of the batch only (sentence-transformers'
    ``OnlineContrastiveLoss``): the negatives nearer than the farthest positive (than the
    negatives' mean when there is at most one positive) and the positives farther than the
    nearest negative (than the positives' mean when there is at most one negative):

        L = sum_{hard positives} d^2 + sum_{hard negatives} max(0, margin - d)^2   (no 1/2, a sum)
    """
    fn = "online_contrastive_loss"
    margin = _number(margin, "margin", fn)
    u, v = _same_rows(fn, embeddings1=embeddings1, embeddings2=embeddings2)
    y = backend.to_numpy(_labels(labels, u.shape[0], u.dtype, fn))
    d = _distance(u, v, distance, fn)
    values = backend.to_numpy(d.data)
    negatives, positives = values[y == 0], values[y == 1]
    negative_bound = positives.max() if len(positives) > 1 else negatives.mean()
    positive_bound = negatives.min() if len(negatives) > 1 else positives.mean()
    xp = backend.xp
    hard_negative = xp.asarray((y == 0) & (values < negative_bound))
    hard_positive = xp.asarray((y == 1) & (values > positive_bound))
    positive_loss = (d * d * hard_positive.astype(d.dtype)).sum()
    return positive_loss + (relu(margin - d) ** 2 * hard_negative.astype(d.dtype)).sum()


def sentence_triplet_loss(anchors, positives, negatives, distance: str = "euclidean", margin: float = 5.0) -> Tensor:
    """L = mean_i max(0, d(a_i, p_i) - d(a_i, n_i) + margin), sentence-transformers'
    ``TripletLoss`` (Euclidean distance ||u - v + 1e-6||_2 and margin 5 by default; 'cosine'
    and 'manhattan' as :func:`sentence_contrastive_loss`). The Euclidean case is
    :func:`lamina.functional.triplet_margin_loss`."""
    fn = "sentence_triplet_loss"
    margin = _number(margin, "margin", fn)
    a, p, n = _same_rows(fn, anchors=anchors, positives=positives, negatives=negatives)
    if distance == "euclidean":
        return triplet_margin_loss(a, p, n, margin=margin, p=2, eps=1e-6)
    return relu(_distance(a, p, distance, fn) - _distance(a, n, distance, fn) + margin).mean()


def cosine_similarity_mse_loss(embeddings1, embeddings2, labels) -> Tensor:
    """L = mean_i (cos(u_i, v_i) - y_i)^2, cos with eps 1e-8 (sentence-transformers'
    ``CosineSimilarityLoss`` with its default MSE)."""
    fn = "cosine_similarity_mse_loss"
    u, v = _same_rows(fn, embeddings1=embeddings1, embeddings2=embeddings2)
    y = _labels(labels, u.shape[0], u.dtype, fn)
    error = cosine_similarity(u, v, axis=-1) - y
    return (error * error).mean()


def matryoshka_loss(loss: Callable, embeddings: Sequence, dims: Sequence[int], weights: Sequence[float] | None = None,
                    **loss_options) -> Tensor:
    """Matryoshka representation learning (Kusupati et al. 2022): L = sum_k w_k loss(e_1[:, :m_k],
    e_2[:, :m_k], ...), the same loss on the first m_k features of every embedding, so that
    a prefix of the vector is a usable embedding by itself. ``loss`` is any of this module's
    losses, ``embeddings`` its embedding arguments (each (N, D)), ``loss_options`` its other
    arguments (labels, scale...). ``weights`` default to 1 (sentence-transformers' ``MatryoshkaLoss``)."""
    fn = "matryoshka_loss"
    tensors = [_rows(e, f"embeddings[{k}]", fn) for k, e in enumerate(embeddings)]
    if not tensors:
        raise ValueError(f"{fn}: needs at least one embedding tensor")
    dims = list(dims)
    weights = [1.0] * len(dims) if weights is None else list(weights)
    if not dims or len(weights) != len(dims):
        raise ValueError(f"{fn}: needs one weight per dimension, got dims {dims} and weights {weights}")
    width = min(t.shape[1] for t in tensors)
    for m in dims:
        if isinstance(m, bool) or not isinstance(m, numbers.Integral) or not 1 <= m <= width:
            raise ValueError(f"{fn}: each dim must be an int in [1, {width}] (the embeddings' width), got {m!r}")
    total = None
    for m, w in zip(dims, weights):
        term = loss(*[getitem(t, (slice(None), slice(0, int(m)))) for t in tensors], **loss_options) * float(w)
        total = term if total is None else total + term
    return total
