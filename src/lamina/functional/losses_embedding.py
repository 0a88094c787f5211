"""Deep-metric-learning losses over a labelled batch of embeddings (pytorch-metric-learning's,
TF-Addons' and the papers' definitions).

Every loss takes ``embeddings`` (N, D) and integer class ``labels`` (N,); two rows are a
*positive* pair when they share a label (a row is never its own positive) and a *negative*
pair otherwise. All are compositions of differentiable primitives (gradients of any order);
the labels, and any mining of pairs, get no gradient.

- proxies, learnable rows for each class: :func:`proxy_nca_loss`, :func:`proxy_anchor_loss`,
  :func:`soft_triple_loss`;
- all pairs of the batch: :func:`multi_similarity_loss`, :func:`lifted_structure_loss`,
  :func:`circle_loss`, :func:`supervised_contrastive_loss`, :func:`npair_loss`;
- triplets chosen inside the batch: :func:`batch_hard_triplet_loss`,
  :func:`batch_all_triplet_loss`, :func:`semi_hard_triplet_loss`.
"""

from __future__ import annotations

import numbers

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.activation import relu, softmax
from lamina.functional.elementwise import sqrt, where
from lamina.functional.miners import _labels
from lamina.functional.reduce_more import logsumexp
from lamina.functional.shape import concat
from lamina.functional.similarity import normalize
from lamina.functional.torch_losses import cross_entropy

__all__ = [
    "batch_all_triplet_loss", "batch_hard_triplet_loss", "circle_loss", "lifted_structure_loss",
    "multi_similarity_loss", "npair_loss", "proxy_anchor_loss", "proxy_nca_loss", "semi_hard_triplet_loss",
    "soft_triple_loss", "supervised_contrastive_loss",
]

_FAR = -1e30
"""Stands in for log 0 in a masked log-sum-exp: its exponential is 0 in float32 and float64."""


# -- argument checks --------------------------------------------------------------------------


def _batch(embeddings, labels, fn: str) -> tuple[Tensor, np.ndarray]:
    """``embeddings`` as an (N, D) tensor and ``labels`` as N integers (a NumPy array)."""
    x = embeddings if isinstance(embeddings, Tensor) else Tensor(embeddings)
    if x.ndim != 2 or x.shape[0] == 0 or x.shape[1] == 0:
        raise ShapeError(f"{fn}: embeddings must have shape (N, D) with N, D >= 1, got shape {x.shape}")
    y = _labels(labels, x.shape[0], fn)
    return x, y


def _number(value, name: str, fn: str, low: float = 0.0, strict: bool = True) -> float:
    ok = isinstance(value, numbers.Real) and not isinstance(value, bool) and np.isfinite(value)
    if not ok or value < low or (strict and value == low):
        raise ValueError(f"{fn}: {name} must be a finite number {'>' if strict else '>='} {low:g}, got {value!r}")
    return float(value)


def _pair_masks(y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(positive, negative) boolean (N, N) masks: same label off the diagonal, other label."""
    same = y[:, None] == y[None, :]
    return same & ~np.eye(len(y), dtype=bool), ~same


def _require_pairs(positive: np.ndarray, negative: np.ndarray, y: np.ndarray, fn: str,
                   need_positive: bool = True, need_negative: bool = True) -> None:
    if need_positive and not positive.any():
        raise ValueError(f"{fn}: the batch has no positive pair (two embeddings of one class); its labels "
                         f"{_label_summary(y)} are all different")
    if need_negative and not negative.any():
        raise ValueError(f"{fn}: the batch has no negative pair; all its {len(y)} labels are {int(y[0])} "
                         f"(one class)")


def _label_summary(y: np.ndarray) -> str:
    shown = ", ".join(str(int(v)) for v in y[:8])
    return f"[{shown}{', ...' if len(y) > 8 else ''}]"


def _proxies(proxies, embeddings: Tensor, y: np.ndarray, fn: str) -> Tensor:
    p = proxies if isinstance(proxies, Tensor) else Tensor(proxies)
    if p.ndim != 2 or p.shape[1] != embeddings.shape[1]:
        raise ShapeError(f"{fn}: proxies must have shape (num_classes, {embeddings.shape[1]}) to match embeddings "
                         f"{embeddings.shape}, got shape {p.shape}")
    if y.min() < 0 or y.max() >= p.shape[0]:
        raise ValueError(f"{fn}: labels must lie in [0, {p.shape[0]}) (one proxy per class), got labels in "
                         f"[{int(y.min())}, {int(y.max())}]")
    return p


# -- shared pieces ----------------------------------------------------------------------------


def _as_mask(mask: np.ndarray):
    return backend.xp.asarray(mask)


def _masked_logsumexp(x: Tensor, mask: np.ndarray, add_one: bool = False) -> Tensor:
    """log(sum_{j: mask_ij} e^(x_ij)) for each row i (log(1 + sum ...) with ``add_one``);
    0 for a row whose mask is empty. The masked-out entries get no gradient."""
    kept = where(_as_mask(mask), x, _FAR)
    if add_one:
        kept = concat([kept, Tensor(backend.xp.zeros((x.shape[0], 1), dtype=x.dtype))], axis=1)
    return where(_as_mask(mask.any(axis=1)), logsumexp(kept, axis=1), 0.0)


def _cosine_matrix(x: Tensor) -> Tensor:
    """S_ij = cos(x_i, x_j) (rows scaled by max(||x||, 1e-12))."""
    u = normalize(x, axis=-1)
    return u @ u.T


def _distance_matrix(x: Tensor, squared: bool = False) -> Tensor:
    """D_ij = ||x_i - x_j||_2 (squared with ``squared``); the square root's slope is taken as 0
    where two rows coincide (the diagonal)."""
    diff = x.expand_dims(1) - x.expand_dims(0)
    sq = (diff * diff).sum(axis=-1)
    if squared:
        return sq
    apart = _as_mask(backend.to_numpy(sq.data) > 0)
    return where(apart, sqrt(where(apart, sq, 1.0)), 0.0)


def _mean_of_rows(values: Tensor, rows: np.ndarray) -> Tensor:
    """The mean of ``values`` over the rows where ``rows`` is True."""
    return (values * _as_mask(rows).astype(values.dtype)).sum() / max(int(rows.sum()), 1)


# -- proxy losses -------------------------------------------------------------------------------


def proxy_nca_loss(embeddings, labels, proxies, scale: float = 1.0, exclude_positive: bool = False) -> Tensor:
    """ProxyNCA (Movshovitz-Attias et al. 2017): each embedding is pulled to its class's proxy
    and pushed from the others, by a softmax over negative squared distances of unit vectors:

        L = mean_i -log( e^(-s d_(i, y_i)) / sum_j e^(-s d_ij) ),   d_ij = ||x_i/||x_i|| - p_j/||p_j|| ||^2

    ``proxies`` (C, D) is one learnable row per class, s = ``scale``. The sum over j runs over
    every proxy (pytorch-metric-learning's ``ProxyNCALoss``), or over the other classes only
    with ``exclude_positive=True`` (the paper's NCA).
    """
    fn = "proxy_nca_loss"
    x, y = _batch(embeddings, labels, fn)
    p = _proxies(proxies, x, y, fn)
    scale = _number(scale, "scale", fn)
    u, v = normalize(x, axis=-1), normalize(p, axis=-1)
    distances = (u * u).sum(axis=1, keepdims=True) - 2 * (u @ v.T) + (v * v).sum(axis=1).expand_dims(0)
    logits = distances * -scale
    target = np.zeros(logits.shape, dtype=bool)
    target[np.arange(len(y)), y] = True
    attract = (logits * _as_mask(target).astype(logits.dtype)).sum(axis=1)
    others = ~target if exclude_positive else np.ones_like(target)
    return (_masked_logsumexp(logits, others) - attract).mean()


def proxy_anchor_loss(embeddings, labels, proxies, alpha: float = 32.0, delta: float = 0.1) -> Tensor:
    """Proxy-Anchor (Kim et al. 2020): each proxy p is the anchor, pulling the batch's
    embeddings of its class X_p+ and pushing away the others X_p-, by cosine similarity s:

        L = 1/|P+| sum_(p in P+) log(1 + sum_(x in X_p+) e^(-alpha (s(x, p) - delta)))
          + 1/|P|  sum_(p in P)  log(1 + sum_(x in X_p-) e^( alpha (s(x, p) + delta)))

    P: all C proxies (``proxies`` (C, D)); P+: those with a positive in the batch. The
    paper's alpha = 32 and delta = 0.1 are the defaults, as its reference code.
    """
    fn = "proxy_anchor_loss"
    x, y = _batch(embeddings, labels, fn)
    p = _proxies(proxies, x, y, fn)
    alpha, delta = _number(alpha, "alpha", fn), _number(delta, "delta", fn, strict=False)
    similarity = (normalize(p, axis=-1) @ normalize(x, axis=-1).T)     # (C, N): proxies as rows
    members = np.arange(p.shape[0])[:, None] == y[None, :]
    with_positives = members.any(axis=1)
    pull = _masked_logsumexp((similarity - delta) * -alpha, members, add_one=True)
    push = _masked_logsumexp((similarity + delta) * alpha, ~members, add_one=True)
    return pull.sum() / int(with_positives.sum()) + push.sum() / p.shape[0]


def soft_triple_loss(embeddings, labels, centers, centers_per_class: int = 10, scale: float = 20.0,
                     gamma: float = 0.1, tau: float = 0.2, margin: float = 0.01) -> Tensor:
    """SoftTriple loss (Qian et al. 2019): K learnable centres per class (``centers`` (C K, D),
    row c K + k is centre k of class c), a class similarity that softly picks the nearest centre,

        S_ic = sum_k softmax_k(s_ick / gamma) s_ick,   s_ick = cos(x_i, w_ck)
        L = mean_i -log softmax_c(scale (S_ic - margin [c = y_i]))[y_i] + tau R

    R = sum_c sum_(k < k') sqrt(2 + 1e-5 - 2 w_ck . w_ck') / (C K (K - 1)) (unit centres) keeps a
    class's centres apart so that unused ones can merge; no R when K = 1. The defaults (lambda
    20, gamma 0.1, tau 0.2, delta 0.01, K 10) are the paper's, as its reference code.
    """
    fn = "soft_triple_loss"
    x, y = _batch(embeddings, labels, fn)
    k = centers_per_class
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
        raise ValueError(f"{fn}: centers_per_class must be a positive int, got {k!r}")
    w = centers if isinstance(centers, Tensor) else Tensor(centers)
    if w.ndim != 2 or w.shape[1] != x.shape[1] or w.shape[0] % k:
        raise ShapeError(f"{fn}: centers must have shape (num_classes * {k}, {x.shape[1]}) (centers_per_class={k}),"
                         f" got shape {w.shape}")
    classes = w.shape[0] // k
    if y.min() < 0 or y.max() >= classes:
        raise ValueError(f"{fn}: labels must lie in [0, {classes}) ({w.shape[0]} centers / {k} per class), got "
                         f"labels in [{int(y.min())}, {int(y.max())}]")
    scale, gamma = _number(scale, "scale", fn), _number(gamma, "gamma", fn)
    tau, margin = _number(tau, "tau", fn, strict=False), _number(margin, "margin", fn, strict=False)
    unit = normalize(w, axis=-1)
    similarity = (normalize(x, axis=-1) @ unit.T).reshape(x.shape[0], classes, k)
    weights = softmax(similarity / gamma, axis=2)
    class_similarity = (weights * similarity).sum(axis=2)
    target = np.zeros(class_similarity.shape)
    target[np.arange(len(y)), y] = margin
    loss = cross_entropy((class_similarity - backend.xp.asarray(target, dtype=x.dtype)) * scale,
                         backend.xp.asarray(y.astype(np.int64)))
    if tau == 0 or k == 1:
        return loss
    pairs = np.zeros((w.shape[0], w.shape[0]), dtype=bool)
    for c in range(classes):
        block = slice(c * k, (c + 1) * k)
        pairs[block, block] = np.triu(np.ones((k, k), dtype=bool), 1)
    gaps = 2.0 + 1e-5 - 2 * (unit @ unit.T)
    spread = (sqrt(where(_as_mask(pairs), gaps, 1.0)) * _as_mask(pairs).astype(gaps.dtype)).sum()
    return loss + spread * (tau / (classes * k * (k - 1)))


# -- losses over all pairs ----------------------------------------------------------------------


def multi_similarity_loss(embeddings, labels, alpha: float = 2.0, beta: float = 50.0, base: float = 0.5,
                          epsilon: float = 0.1, mine: bool = True) -> Tensor:
    """Multi-similarity loss (Wang et al. 2019) with its pair mining, on cosine similarities S:

    mining (``mine=True``, the paper's first step): for anchor i, a negative j is kept when
    S_ij + epsilon > min_(positive k) S_ik and a positive j when S_ij - epsilon < max_(negative k) S_ik;
    then, over the kept pairs P_i and N_i,

        L = 1/N sum_i [ 1/alpha log(1 + sum_(P_i) e^(-alpha (S_ij - base)))
                      + 1/beta  log(1 + sum_(N_i) e^( beta (S_ij - base))) ]

    An anchor left with no positive or no negative adds 0 (as the reference code, whose 1/N
    counts every row). The defaults are pytorch-metric-learning's (its loss and miner).
    """
    fn = "multi_similarity_loss"
    x, y = _batch(embeddings, labels, fn)
    alpha, beta = _number(alpha, "alpha", fn), _number(beta, "beta", fn)
    base, epsilon = _number(base, "base", fn, low=-1.0, strict=False), _number(epsilon, "epsilon", fn, strict=False)
    positive, negative = _pair_masks(y)
    _require_pairs(positive, negative, y, fn)
    s = _cosine_matrix(x)
    if mine:
        values = backend.to_numpy(s.data)
        hardest_positive = np.where(positive, values, np.inf).min(axis=1, keepdims=True)
        hardest_negative = np.where(negative, values, -np.inf).max(axis=1, keepdims=True)
        kept_positive = positive & (values - epsilon < hardest_negative)
        negative = negative & (values + epsilon > hardest_positive)
        positive = kept_positive
    rows = positive.any(axis=1) & negative.any(axis=1)
    pull = _masked_logsumexp((s - base) * -alpha, positive & rows[:, None], add_one=True) / alpha
    push = _masked_logsumexp((s - base) * beta, negative & rows[:, None], add_one=True) / beta
    return (pull + push).sum() / len(y)


def lifted_structure_loss(embeddings, labels, margin: float = 1.0) -> Tensor:
    """Generalized lifted structure loss (Hermans et al. 2017, after Oh Song et al. 2016), on
    Euclidean distances D: for each anchor a with positives P(a) and negatives N(a),

        L_a = max(0, log sum_(P(a)) e^(D_ap) + log sum_(N(a)) e^(margin - D_an))

    averaged over the anchors having both. This is pytorch-metric-learning's
    ``GeneralizedLiftedStructureLoss`` (pos_margin 0, neg_margin = ``margin``) on batches where
    every class appears at least twice; that library also counts an anchor without positives,
    its positive term taken as 0.
    """
    fn = "lifted_structure_loss"
    x, y = _batch(embeddings, labels, fn)
    margin = _number(margin, "margin", fn, strict=False)
    positive, negative = _pair_masks(y)
    _require_pairs(positive, negative, y, fn)
    d = _distance_matrix(x)
    rows = positive.any(axis=1) & negative.any(axis=1)
    per_anchor = relu(_masked_logsumexp(d, positive) + _masked_logsumexp(margin - d, negative))
    return _mean_of_rows(per_anchor, rows)


def circle_loss(embeddings, labels, margin: float = 0.25, gamma: float = 256.0) -> Tensor:
    """Circle loss (Sun et al. 2020) on cosine similarities s: for each anchor, with its
    positives' s_p and negatives' s_n,

        L = log(1 + sum_n e^(gamma a_n (s_n - m)) sum_p e^(-gamma a_p (s_p - 1 + m)))
        a_p = max(0, 1 + m - s_p),  a_n = max(0, s_n + m)   (weights held constant)

    one term per anchor as pytorch-metric-learning's ``CircleLoss`` (the paper's code pools all
    the batch's pairs in one term), averaged over the anchors having a positive and a negative.
    m = ``margin`` (relaxation, 0.25), gamma the scale (256).
    """
    fn = "circle_loss"
    x, y = _batch(embeddings, labels, fn)
    margin, gamma = _number(margin, "margin", fn, strict=False), _number(gamma, "gamma", fn)
    positive, negative = _pair_masks(y)
    _require_pairs(positive, negative, y, fn)
    s = _cosine_matrix(x)
    values = backend.xp.asarray(s.data)
    weight_p, weight_n = backend.xp.maximum(1 + margin - values, 0), backend.xp.maximum(values + margin, 0)
    logit_p = (s - (1 - margin)) * (weight_p * -gamma)
    logit_n = (s - margin) * (weight_n * gamma)
    rows = positive.any(axis=1) & negative.any(axis=1)
    both = _masked_logsumexp(logit_p, positive) + _masked_logsumexp(logit_n, negative)
    zero = Tensor(backend.xp.zeros(len(y), dtype=both.dtype))
    softplus = logsumexp(concat([zero.expand_dims(1), both.expand_dims(1)], axis=1), axis=1)
    return _mean_of_rows(softplus, rows)


def supervised_contrastive_loss(embeddings, labels, temperature: float = 0.07,
                                base_temperature: float | None = None) -> Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, L_out) on unit vectors z = x / ||x||:

        L_i = -(tau / tau_b) 1/|P(i)| sum_(p in P(i)) log( e^(z_i.z_p / tau) / sum_(a != i) e^(z_i.z_a / tau) )

    averaged over the anchors i having at least one positive P(i) (the reference code's
    single-view form; each view of an image is one row with the image's label). tau =
    ``temperature``; tau_b = ``base_temperature`` defaults to tau (factor 1).
    """
    fn = "supervised_contrastive_loss"
    x, y = _batch(embeddings, labels, fn)
    temperature = _number(temperature, "temperature", fn)
    base = temperature if base_temperature is None else _number(base_temperature, "base_temperature", fn)
    positive, negative = _pair_masks(y)
    _require_pairs(positive, negative, y, fn, need_negative=False)
    logits = _cosine_matrix(x) / temperature
    others = ~np.eye(len(y), dtype=bool)
    log_prob = logits - _masked_logsumexp(logits, others).expand_dims(1)
    counts = positive.sum(axis=1)
    mean_positive = (log_prob * _as_mask(positive).astype(logits.dtype)).sum(axis=1) / backend.xp.asarray(
        np.maximum(counts, 1)).astype(logits.dtype)
    return _mean_of_rows(mean_positive * -(temperature / base), counts > 0)


def npair_loss(anchors, positives, labels=None, l2_reg: float = 0.002) -> Tensor:
    """N-pair loss (Sohn 2016): anchor i must pick its positive among the N positives by the
    inner product, a softmax cross-entropy over f_i . f+_j:

        L = mean_i -sum_j t_ij log softmax_j(f_i . f+_j) + l2_reg / 4 (mean ||f_i||^2 + mean ||f+_i||^2)

    t = the identity (one class per pair) or, given ``labels`` (N,), the rows of
    [y_i = y_j] normalised to sum to 1 (TF's ``npairs_loss``, whose reg_lambda 0.002 and
    factor 1/4 these are). The L2 term keeps the unnormalised embeddings from growing.
    """
    fn = "npair_loss"
    a = anchors if isinstance(anchors, Tensor) else Tensor(anchors)
    p = positives if isinstance(positives, Tensor) else Tensor(positives)
    if a.ndim != 2 or a.shape != p.shape:
        raise ShapeError(f"{fn}: anchors and positives must have one shape (N, D), got {a.shape} and {p.shape}")
    l2_reg = _number(l2_reg, "l2_reg", fn, strict=False)
    if labels is None:
        targets = np.eye(a.shape[0])
    else:
        _, y = _batch(a, labels, fn)
        targets = (y[:, None] == y[None, :]).astype(np.float64)
        targets /= targets.sum(axis=1, keepdims=True)
    logits = a @ p.T
    loss = cross_entropy(logits, backend.xp.asarray(targets, dtype=logits.dtype))
    squares = (a * a).sum(axis=1).mean() + (p * p).sum(axis=1).mean()
    return loss + squares * (l2_reg / 4)


# -- triplets chosen in the batch ---------------------------------------------------------------


def batch_hard_triplet_loss(embeddings, labels, margin: float = 1.0, squared: bool = False,
                            soft: bool = False) -> Tensor:
    """Batch-hard triplet loss (Hermans et al. 2017; TF-Addons' ``TripletHardLoss``): each
    anchor with its farthest positive and its nearest negative,

        L = mean_a max(0, margin + max_(P(a)) D_ap - min_(N(a)) D_an)   (log(1 + e^(.)) with ``soft``)

    D Euclidean (squared with ``squared``); the mean runs over the anchors having a positive
    and a negative (every anchor, as TF-Addons, when each class appears at least twice). With
    ``soft`` the margin is unused (Hermans' soft margin).
    """
    fn = "batch_hard_triplet_loss"
    x, y = _batch(embeddings, labels, fn)
    margin = _number(margin, "margin", fn, strict=False)
    positive, negative = _pair_masks(y)
    _require_pairs(positive, negative, y, fn)
    d = _distance_matrix(x, squared)
    rows = positive.any(axis=1) & negative.any(axis=1)
    hardest_positive = where(_as_mask(positive), d, -np.inf).max(axis=1)
    hardest_negative = where(_as_mask(negative), d, np.inf).min(axis=1)
    gap = where(_as_mask(rows), hardest_positive - hardest_negative, 0.0)
    if soft:
        zero = Tensor(backend.xp.zeros(len(y), dtype=gap.dtype))
        per_anchor = logsumexp(concat([zero.expand_dims(1), gap.expand_dims(1)], axis=1), axis=1)
    else:
        per_anchor = relu(gap + margin)
    return _mean_of_rows(per_anchor, rows)


def _triplet_gaps(x: Tensor, y: np.ndarray, squared: bool, fn: str) -> tuple[Tensor, np.ndarray]:
    """G_apn = D_ap - D_an (N, N, N) and the mask of the valid triplets (a, p, n)."""
    positive, negative = _pair_masks(y)
    _require_pairs(positive, negative, y, fn)
    d = _distance_matrix(x, squared)
    return d.expand_dims(2) - d.expand_dims(1), positive[:, :, None] & negative[:, None, :]


def batch_all_triplet_loss(embeddings, labels, margin: float = 1.0, squared: bool = False) -> Tensor:
    """Batch-all triplet loss (Hermans et al. 2017, "BA != 0"): every valid triplet (a, p, n) of
    the batch, L = mean over the triplets with a positive loss of max(0, margin + D_ap - D_an)
    (0 when there is none); D Euclidean, squared with ``squared``."""
    fn = "batch_all_triplet_loss"
    x, y = _batch(embeddings, labels, fn)
    margin = _number(margin, "margin", fn, strict=False)
    gaps, valid = _triplet_gaps(x, y, squared, fn)
    losses = relu(gaps + margin) * _as_mask(valid).astype(gaps.dtype)
    active = int((backend.to_numpy(losses.data) > 0).sum())
    return losses.sum() / max(active, 1)


def semi_hard_triplet_loss(embeddings, labels, margin: float = 1.0, squared: bool = False) -> Tensor:
    """Semi-hard triplet loss (Schroff et al. 2015; TF-Addons' ``TripletSemiHardLoss`` rule): for
    each positive pair (a, p) the negative is the nearest one farther than p,
    argmin_(n: D_an > D_ap) D_an, or, when no negative is farther, the farthest negative;

        L = mean_(a, p) max(0, margin + D_ap - D_an)

    over all positive pairs (a != p). D Euclidean (TF-Addons' 'L2'), squared with ``squared``."""
    fn = "semi_hard_triplet_loss"
    x, y = _batch(embeddings, labels, fn)
    margin = _number(margin, "margin", fn, strict=False)
    positive, negative = _pair_masks(y)
    _require_pairs(positive, negative, y, fn)
    d = _distance_matrix(x, squared)
    values = backend.to_numpy(d.data)
    farther = negative[:, None, :] & (values[:, None, :] > values[:, :, None])     # (a, p, n)
    nearest_farther = np.where(farther, values[:, None, :], np.inf).argmin(axis=2)
    farthest = np.where(negative, values, -np.inf).argmax(axis=1)
    chosen = np.where(farther.any(axis=2), nearest_farther, farthest[:, None])     # (a, p)
    a_index = np.broadcast_to(np.arange(len(y))[:, None], chosen.shape)
    d_negative = d[backend.xp.asarray(a_index), backend.xp.asarray(chosen)]
    losses = relu(d - d_negative + margin) * _as_mask(positive).astype(d.dtype)
    return losses.sum() / int(positive.sum())
