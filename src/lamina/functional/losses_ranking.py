"""Learning to rank: pointwise and pairwise losses, and the LambdaLoss framework.

Every loss takes the scores ``s`` (N, L) of N lists (queries) of L items each and their
graded relevance labels ``y`` (N, L) (0, 1, 2, ...); a 1-D pair is one list. Shorter lists are
padded: items whose label is the padding value -1 (allRank's convention) or that ``mask`` marks
False are left out, their scores get no gradient and may hold anything. Gains are
G(y) = 2^y - 1 and the discount of the 0-based rank r is 1 / log2(r + 2). Orders by score are
stable: equal scores keep their positions. The listwise losses are in
:mod:`lamina.functional.losses_listwise`. All are composites of primitive ops, so second
derivatives come for free.

- :func:`pointwise_rmse`: per list sqrt(mean_i (y_i - c s_i)^2), averaged (allRank's).
- :func:`ranknet_loss`: log(1 + exp(-sigma (s_i - s_j))) over the pairs with y_i > y_j
  (Burges et al. 2005), optionally weighted by |delta NDCG_ij| (LambdaRank) or |y_i - y_j|.
- :func:`rank_hinge_loss`: max(0, margin - (s_i - s_j)) over the same pairs.
- :func:`lambda_loss`: Wang et al. 2018's -sum w_ij log2 sigmoid(sigma (s_i - s_j)), with i, j
  ranks by score and the weights w_ij of NDCG-Loss1, NDCG-Loss2, NDCG-Loss2++, LambdaRank,
  RankNet or ARP, as allRank computes them.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import reduce as R
from lamina.functional.activation import relu
from lamina.functional.activation_extra import log_sigmoid
from lamina.functional.indexing import gather, masked_fill
from lamina.functional.shape import reshape

__all__ = ["LAMBDA_WEIGHTINGS", "PADDING_LABEL", "lambda_loss", "pointwise_rmse", "rank_hinge_loss",
           "ranknet_loss"]

PADDING_LABEL = -1
"""The label that marks a padded item (allRank's PADDED_Y_VALUE)."""

LAMBDA_WEIGHTINGS = ("ndcg_loss1", "ndcg_loss2", "ndcg_loss2pp", "lambdarank", "ranknet", "arp")
"""The ``weighting`` values of :func:`lambda_loss`."""

EPS = 1e-10
"""allRank's floor of ideal DCGs (a list without a relevant item has IDCG 0)."""


# -- inputs ------------------------------------------------------------------------------------
def as_tensor(values) -> Tensor:
    if isinstance(values, Tensor):
        return values
    data = backend.xp.asarray(values)
    if data.dtype.kind != "f":
        data = data.astype(backend.get_default_dtype())
    return Tensor._constant(data, data.dtype)


def ranking_inputs(scores, labels, mask, fn: str) -> tuple[Tensor, np.ndarray, np.ndarray]:
    """(scores (N, L) with the padded ones zeroed, labels (N, L) float64 with padding 0, valid
    (N, L) bool), after checking shapes and labels; a 1-D list becomes one row."""
    s = as_tensor(scores)
    y = np.asarray(backend.to_numpy(labels.data) if isinstance(labels, Tensor) else labels, dtype=np.float64)
    if s.ndim not in (1, 2) or y.shape != s.shape:
        raise ShapeError(f"{fn}: scores and labels must have the same shape (lists, items) or (items,); got "
                         f"scores {s.shape} and labels {y.shape}")
    if mask is not None:
        mask = np.asarray(backend.to_numpy(getattr(mask, "data", mask)))
    if s.ndim == 1:
        s, y = reshape(s, (1, -1)), y[None]
        mask = None if mask is None else mask[None]
    valid = y != PADDING_LABEL
    if mask is not None:
        if mask.shape != y.shape:
            raise ShapeError(f"{fn}: mask must have the labels' shape {y.shape}, got {mask.shape}")
        valid &= mask.astype(bool)
    bad = valid & ~(y >= 0)     # negative or NaN
    if bad.any():
        raise ValueError(f"{fn}: labels must be >= 0 (or {PADDING_LABEL} for padding); got "
                         f"{float(y[bad][0])!r} at {tuple(int(i) for i in np.argwhere(bad)[0])}")
    y = np.where(valid, y, 0.0)
    if not valid.all():
        s = masked_fill(s, ~valid, 0.0)
    return s, y, valid


def positive_number(value, name: str, fn: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not 0 < value < math.inf:
        raise ValueError(f"{fn}: {name} must be a finite number > 0, got {value!r}")
    return float(value)


def cutoff(k, length: int, fn: str) -> int:
    """k as an int in [1, length]; None is the whole list."""
    if k is None:
        return length
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{fn}: k must be an int >= 1 or None, got {k!r}")
    return min(int(k), length)


def gains(y: np.ndarray, gain: str, fn: str) -> np.ndarray:
    """2^y - 1 ('exp2') or y ('linear')."""
    if gain == "exp2":
        return np.exp2(y) - 1.0
    if gain == "linear":
        return y.copy()
    raise ValueError(f"{fn}: gain must be 'exp2' or 'linear', got {gain!r}")


def discounts(length: int) -> np.ndarray:
    """1 / log2(r + 2) of the 0-based ranks r."""
    return 1.0 / np.log2(np.arange(length) + 2.0)


def ideal_dcg(g: np.ndarray, k: int) -> np.ndarray:
    """(N,): the DCG@k of each list in its best order (gains sorted down)."""
    best = -np.sort(-g, axis=1)[:, :k]
    return (best * discounts(best.shape[1])).sum(axis=1)


def score_order(s: Tensor, valid: np.ndarray) -> np.ndarray:
    """(N, L): the items by decreasing score (ties by position), padded ones last."""
    keys = np.where(valid, np.asarray(backend.to_numpy(s.data), dtype=np.float64), -np.inf)
    return np.argsort(-keys, axis=1, kind="stable")


def _reduced(terms: Tensor, selected: np.ndarray, reduction: str, fn: str) -> Tensor:
    """The sum of the selected terms, or their mean (over the selected count, 0 when none)."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"{fn}: reduction must be 'mean' or 'sum', got {reduction!r}")
    total = R.sum(masked_fill(terms, ~selected, 0.0))
    return total / max(int(selected.sum()), 1) if reduction == "mean" else total


def mean_over_lists(per_list: Tensor, kept: np.ndarray) -> Tensor:
    """The mean of the kept lists' values (N,) (0 when none is kept); the others get no gradient."""
    return R.sum(masked_fill(per_list, ~kept, 0.0)) / max(int(kept.sum()), 1)


def _pair_differences(s: Tensor) -> Tensor:
    return s[:, :, None] - s[:, None, :]


def _better_pairs(y: np.ndarray, valid: np.ndarray) -> np.ndarray:
    """(N, L, L): the pairs of real items (i, j) with y_i > y_j."""
    return valid[:, :, None] & valid[:, None, :] & (y[:, :, None] > y[:, None, :])


# -- pointwise ---------------------------------------------------------------------------------
def pointwise_rmse(scores, labels, mask=None, scale: float = 1.0) -> Tensor:
    """mean over lists of sqrt(sum_i (y_i - scale * s_i)^2 / n), n the list's real items
    (allRank's ``pointwise_rmse``, ``scale`` its number of relevance levels); lists without a
    real item are left out (here and in the listwise losses)."""
    fn = "pointwise_rmse"
    s, y, valid = ranking_inputs(scores, labels, mask, fn)
    scale = positive_number(scale, "scale", fn)
    errors = masked_fill(Tensor._constant(y.astype(s.dtype), s.dtype) - s * scale, ~valid, 0.0)
    counts = valid.sum(axis=1)
    filled = counts > 0
    mse = R.sum(errors * errors, axis=1) / np.maximum(counts, 1).astype(s.dtype)
    return mean_over_lists(masked_fill(mse, ~filled, 1.0) ** 0.5, filled)


# -- pairwise ----------------------------------------------------------------------------------
def lambdarank_weights(s: Tensor, y: np.ndarray, valid: np.ndarray, k: int | None = None,
                       gain: str = "exp2") -> np.ndarray:
    """(N, L, L): |delta NDCG@k_ij|, the change of NDCG@k when items i and j swap places in the
    current order by score: |G_i - G_j| |d(r_i) - d(r_j)| / IDCG@k, d(r) = 1 / log2(r + 2) for
    ranks r < k and 0 beyond (0 for a list without a relevant item)."""
    length = y.shape[1]
    k = length if k is None else k
    g = gains(y, gain, "lambdarank_weights") * valid
    order = score_order(s, valid)
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(length)[None].repeat(len(order), 0), axis=1)
    d = np.where(ranks < k, 1.0 / np.log2(ranks + 2.0), 0.0)
    best = ideal_dcg(g, k)
    scale = np.divide(1.0, best, out=np.zeros_like(best), where=best > 0)
    return (np.abs(g[:, :, None] - g[:, None, :]) * np.abs(d[:, :, None] - d[:, None, :])
            * scale[:, None, None])


RANKNET_WEIGHTINGS = (None, "ndcg", "label_difference")


def ranknet_loss(scores, labels, mask=None, sigma: float = 1.0, weighting: str | None = None,
                 k: int | None = None, reduction: str = "mean") -> Tensor:
    """RankNet: sum over the pairs with y_i > y_j of w_ij log(1 + exp(-sigma (s_i - s_j))),
    divided by the number of pairs of the batch (``reduction='mean'``, allRank's) or not
    ('sum'). ``weighting``: None (w = 1), 'ndcg' (w = |delta NDCG@k_ij| of swapping i and j in
    the current order: LambdaRank's gradients) or 'label_difference' (w = |y_i - y_j|)."""
    fn = "ranknet_loss"
    s, y, valid = ranking_inputs(scores, labels, mask, fn)
    sigma = positive_number(sigma, "sigma", fn)
    if weighting not in RANKNET_WEIGHTINGS:
        raise ValueError(f"{fn}: weighting must be one of {RANKNET_WEIGHTINGS}, got {weighting!r}")
    pairs = _better_pairs(y, valid)
    terms = -log_sigmoid(_pair_differences(s) * sigma)
    if weighting == "ndcg":
        terms = terms * lambdarank_weights(s, y, valid, cutoff(k, y.shape[1], fn)).astype(s.dtype)
    elif weighting == "label_difference":
        terms = terms * np.abs(y[:, :, None] - y[:, None, :]).astype(s.dtype)
    return _reduced(terms, pairs, reduction, fn)


def rank_hinge_loss(scores, labels, mask=None, margin: float = 1.0, reduction: str = "mean") -> Tensor:
    """max(0, margin - (s_i - s_j)) over the pairs with y_i > y_j, averaged over the batch's
    pairs ('mean') or summed ('sum'): the pairwise hinge loss of RankSVM and TF-Ranking."""
    fn = "rank_hinge_loss"
    s, y, valid = ranking_inputs(scores, labels, mask, fn)
    if isinstance(margin, bool) or not isinstance(margin, numbers.Real) or not math.isfinite(margin):
        raise ValueError(f"{fn}: margin must be a finite number, got {margin!r}")
    return _reduced(relu(float(margin) - _pair_differences(s)), _better_pairs(y, valid), reduction, fn)


# -- the LambdaLoss framework ------------------------------------------------------------------
def _lambda_weights(weighting: str, g: np.ndarray, y: np.ndarray, mu: float) -> np.ndarray | float:
    """w_ij for items i, j at 0-based ranks i, j by score; g the gains over IDCG@k in that order."""
    length = g.shape[1]
    log_ranks = np.log2(np.arange(length) + 2.0)           # D_i = log2(1 + i) for 1-based i
    gain_gaps = np.abs(g[:, :, None] - g[:, None, :])
    if weighting == "ndcg_loss1":
        return (g / log_ranks)[:, :, None]
    if weighting in ("ndcg_loss2", "ndcg_loss2pp"):
        # delta_|i-j| = 1 / D_|i-j| - 1 / D_|i-j|+1, and delta_0 = 0
        gap = np.abs(np.arange(length)[:, None] - np.arange(length)[None, :])
        with np.errstate(divide="ignore"):
            inverse = 1.0 / np.log2(np.arange(length + 1) + 1.0)
        delta = np.where(gap > 0, np.abs(inverse[np.maximum(gap, 1)] - inverse[np.maximum(gap, 1) + 1]), 0.0)
        loss2 = delta[None] * gain_gaps
        if weighting == "ndcg_loss2":
            return loss2
        return mu * loss2 + _lambda_weights("lambdarank", g, y, mu)
    if weighting == "lambdarank":
        return np.abs(1.0 / log_ranks[:, None] - 1.0 / log_ranks[None, :])[None] * gain_gaps
    if weighting == "arp":
        return np.abs(y[:, :, None] - y[:, None, :])
    return 1.0


def lambda_loss(scores, labels, mask=None, weighting: str = "ndcg_loss2pp", k: int | None = None,
                sigma: float = 1.0, mu: float = 10.0, reduction: str = "sum", log_base: str = "binary") -> Tensor:
    """The LambdaLoss framework (Wang et al. 2018) as allRank's ``lambdaLoss``: with the items of
    each list in the order of their scores (ranks i, j from 0), gains G_i = (2^y_i - 1) / IDCG@k
    and D_i = log2(i + 2),

        loss = -sum_(i, j) w_ij log2 sigmoid(sigma (s_i - s_j))

    over the pairs with y_i > y_j (every pair of real items for NDCG-Loss1) and both ranks < k.
    ``weighting``: 'ndcg_loss1' w = G_i / D_i; 'ndcg_loss2' w = delta_|i-j| |G_i - G_j| with
    delta_n = 1 / log2(n + 1) - 1 / log2(n + 2); 'lambdarank' w = |1/D_i - 1/D_j| |G_i - G_j|;
    'ndcg_loss2pp' w = mu * NDCG-Loss2's + LambdaRank's; 'ranknet' w = 1; 'arp' w = |y_i - y_j|
    (ARP-Loss2). ``reduction`` 'sum' (allRank's default) or 'mean' over the pairs, ``log_base``
    'binary' or 'natural'. allRank floors sigmoid at 1e-10 before the log; the log-sigmoid
    here is exact, so the two differ only past score gaps of about 23 / sigma.
    """
    fn = "lambda_loss"
    s, y, valid = ranking_inputs(scores, labels, mask, fn)
    if weighting not in LAMBDA_WEIGHTINGS:
        raise ValueError(f"{fn}: weighting must be one of {', '.join(LAMBDA_WEIGHTINGS)}, got {weighting!r}")
    if log_base not in ("binary", "natural"):
        raise ValueError(f"{fn}: log_base must be 'binary' or 'natural', got {log_base!r}")
    sigma = positive_number(sigma, "sigma", fn)
    mu = positive_number(mu, "mu", fn)
    length = y.shape[1]
    k = cutoff(k, length, fn)
    order = score_order(s, valid)
    s_ranked = gather(s, 1, order)
    y_ranked = np.take_along_axis(y, order, 1)
    valid_ranked = np.take_along_axis(valid, order, 1)
    best = np.maximum(ideal_dcg(gains(y, "exp2", fn), k), EPS)
    g = gains(y_ranked, "exp2", fn) / best[:, None]
    weights = _lambda_weights(weighting, g, y_ranked, mu)
    selected = valid_ranked[:, :, None] & valid_ranked[:, None, :]
    if weighting != "ndcg_loss1":
        selected = selected & (y_ranked[:, :, None] > y_ranked[:, None, :])
    top = np.arange(length) < k
    selected = selected & top[None, :, None] & top[None, None, :]
    terms = log_sigmoid(_pair_differences(s_ranked) * sigma)
    if not isinstance(weights, float):
        terms = terms * weights.astype(s.dtype)
    if log_base == "binary":
        terms = terms / math.log(2.0)
    return -_reduced(terms, selected, reduction, fn)
