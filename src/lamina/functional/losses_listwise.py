"""Learning to rank: listwise losses, and NeuralSort's relaxed sorting.

Inputs as in :mod:`lamina.functional.losses_ranking`: scores s (N, L), graded labels y (N, L),
padding marked by the label -1 or ``mask`` False (padded items change nothing and get no
gradient); each loss is averaged over the lists that hold a real item (a list that is all
padding is left out).

- :func:`listnet_loss` (Cao et al. 2007, top-one): -sum_i softmax(y)_i log softmax(s)_i.
- :func:`softmax_loss` (TF-Ranking's SoftmaxLoss): -sum_i (y_i / sum_j y_j) log softmax(s)_i,
  over the lists with a relevant item.
- :func:`listmle_loss` (Xia et al. 2008): the negative Plackett-Luce log-likelihood of the
  items in the order of their labels, sum_i [log sum_(j >= i) exp(s_pi(j)) - s_pi(i)], equal
  labels in a random order.
- :func:`approx_ndcg_loss` (Qin et al. 2010): -NDCG with every rank replaced by the smooth
  1 + sum_(j != i) sigmoid(alpha (s_j - s_i)).
- :func:`neural_ndcg_loss` (Pobrotyn & Bialobrzeski 2021): -NDCG@k of the labels permuted by
  NeuralSort's relaxed permutation matrix (:func:`neural_sort`, Grover et al. 2019) made
  doubly stochastic by Sinkhorn scaling (:func:`sinkhorn_scaling`), as allRank's
  deterministic ``neuralNDCG``.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.functional import reduce as R
from lamina.functional.activation import log_softmax, sigmoid, softmax
from lamina.functional.arithmetic import matmul
from lamina.functional.elementwise import abs as absolute
from lamina.functional.elementwise import log
from lamina.functional.indexing import flip, gather, masked_fill
from lamina.functional.losses_ranking import (
    EPS,
    as_tensor,
    cutoff,
    discounts,
    gains,
    ideal_dcg,
    mean_over_lists,
    positive_number,
    ranking_inputs,
)
from lamina.functional.optimal_transport_entropic import sinkhorn_balance
from lamina.functional.scan_parity import logcumsumexp

__all__ = ["approx_ndcg_loss", "listmle_loss", "listnet_loss", "neural_ndcg_loss", "neural_sort",
           "sinkhorn_scaling", "softmax_loss"]

_FAR = -1e30
"""A finite stand-in for -inf: exp of it underflows to an exact 0 and its gradients stay finite."""


def _constant(values: np.ndarray, like: Tensor) -> Tensor:
    return Tensor._constant(backend.xp.asarray(values, dtype=like.dtype), like.dtype)


def _log_softmax_over(s: Tensor, valid: np.ndarray) -> Tensor:
    """log softmax of each row over its real items (the padded places hold _FAR, weight them 0)."""
    return log_softmax(masked_fill(s, ~valid, _FAR), axis=1)


def _cross_entropy(targets: np.ndarray, s: Tensor, valid: np.ndarray) -> Tensor:
    """(N,): -sum_i t_i log softmax(s)_i over the real items of each list."""
    return -R.sum(masked_fill(_log_softmax_over(s, valid) * _constant(targets, s), ~valid, 0.0), axis=1)


def listnet_loss(scores, labels, mask=None) -> Tensor:
    """ListNet's top-one loss: the cross entropy of softmax(s) against softmax(y) of each list
    (its real items), averaged over the lists. (allRank adds 1e-10 to softmax(s) before the log.)"""
    s, y, valid = ranking_inputs(scores, labels, mask, "listnet_loss")
    top = np.where(valid, y, -np.inf).max(axis=1, keepdims=True)
    weights = np.where(valid, np.exp(y - np.where(np.isfinite(top), top, 0.0)), 0.0)
    totals = weights.sum(axis=1, keepdims=True)
    targets = np.divide(weights, totals, out=np.zeros_like(weights), where=totals > 0)
    return mean_over_lists(_cross_entropy(targets, s, valid), valid.any(axis=1))


def softmax_loss(scores, labels, mask=None) -> Tensor:
    """TF-Ranking's softmax loss: the cross entropy of softmax(s) against the labels normalised
    to sum to 1 in each list, averaged over the lists with a relevant item (0 when none has one)."""
    s, y, valid = ranking_inputs(scores, labels, mask, "softmax_loss")
    totals = y.sum(axis=1, keepdims=True)
    targets = np.divide(y, totals, out=np.zeros_like(y), where=totals > 0)
    return R.sum(_cross_entropy(targets, s, valid)) / max(int((totals > 0).sum()), 1)


def _label_order(y: np.ndarray, valid: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, L): the items by decreasing label, equal labels in a random order, padded ones last."""
    keys = np.where(valid, y, -np.inf)
    return np.lexsort((rng.random(y.shape), -keys), axis=1)


def listmle_loss(scores, labels, mask=None, seed=None) -> Tensor:
    """ListMLE: with pi the items by decreasing label (equal labels shuffled by ``seed``: an int,
    a NumPy Generator, or None for lamina's generator), the negative Plackett-Luce
    log-likelihood sum_i [log sum_(j >= i) exp(s_pi(j)) - s_pi(i)] over each list's real items,
    averaged over the lists. (allRank adds 1e-10 inside the log.)"""
    s, y, valid = ranking_inputs(scores, labels, mask, "listmle_loss")
    rng = seed if isinstance(seed, np.random.Generator) else (
        backend.rng() if seed is None else np.random.default_rng(seed))
    order = _label_order(y, valid, rng)
    ranked_valid = np.take_along_axis(valid, order, 1)
    ranked = gather(masked_fill(s, ~valid, _FAR), 1, order)
    tails = flip(logcumsumexp(flip(ranked, 1), 1), 1)      # log sum_(j >= i) exp(s_pi(j))
    return mean_over_lists(R.sum(masked_fill(tails - ranked, ~ranked_valid, 0.0), axis=1), valid.any(axis=1))


def approx_ndcg_loss(scores, labels, mask=None, alpha: float = 1.0, gain: str = "exp2") -> Tensor:
    """ApproxNDCG: -mean over lists of sum_i G_i / log2(1 + pi_i) / IDCG, with the smooth rank
    pi_i = 1 + sum_(j != i) sigmoid(-alpha (s_i - s_j)) over the list's real items; a list
    without a relevant item counts 0 (allRank's). As alpha grows pi_i tends to the true rank
    (from 1) and the loss to -NDCG (ties apart)."""
    fn = "approx_ndcg_loss"
    s, y, valid = ranking_inputs(scores, labels, mask, fn)
    alpha = positive_number(alpha, "alpha", fn)
    g = gains(y, gain, fn)
    best = np.maximum(ideal_dcg(g, y.shape[1]), EPS)
    others = valid[:, :, None] & valid[:, None, :] & ~np.eye(y.shape[1], dtype=bool)[None]
    differences = s[:, None, :] - s[:, :, None]                 # [n, i, j] = s_j - s_i
    beaten = masked_fill(sigmoid(differences * alpha), ~others, 0.0)
    positions = R.sum(beaten, axis=2) + 1.0
    approx = R.sum(_constant(g / best[:, None], s) / (log(positions + 1.0) / np.log(2.0)), axis=1)
    return -mean_over_lists(approx, valid.any(axis=1))


# -- NeuralSort and NeuralNDCG -----------------------------------------------------------------
def neural_sort(scores, tau: float = 1.0, mask=None) -> Tensor:
    """NeuralSort's relaxed permutation matrix P (N, L, L) of the scores (N, L) sorted down:
    row i (rank i) is softmax_j(((n + 1 - 2 (i + 1)) s_j - sum_k |s_j - s_k|) / tau) over the n
    real items of the list; the columns of padded items (``mask`` False) and the rows of ranks
    i >= n are 0. Rows 0..n-1 sum to 1, and as tau -> 0 P tends to the permutation matrix that
    sorts s (ties apart)."""
    fn = "neural_sort"
    shape = tuple(np.shape(scores))
    valid = np.ones(shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    s, _, valid = ranking_inputs(scores, np.zeros(shape), valid, fn)
    tau = positive_number(tau, "tau", fn)
    pairs = valid[:, :, None] & valid[:, None, :]
    spread = R.sum(masked_fill(absolute(s[:, :, None] - s[:, None, :]), ~pairs, 0.0), axis=2)   # (N, L)
    counts = valid.sum(axis=1, keepdims=True)
    ranks = np.arange(1, s.shape[1] + 1)[None]
    scaling = np.where(ranks <= counts, counts + 1 - 2 * ranks, 0).astype(s.dtype)            # (N, L)
    logits = _constant(scaling, s)[:, :, None] * s[:, None, :] - spread[:, None, :]
    rows = ranks <= counts
    logits = masked_fill(logits, ~valid[:, None, :], _FAR)
    return masked_fill(softmax(logits / tau, axis=2), ~rows[:, :, None] | ~valid[:, None, :], 0.0)


def sinkhorn_scaling(matrix, mask=None, tol: float = 1e-6, max_iter: int = 50) -> Tensor:
    """Sinkhorn scaling of non-negative (N, L, L) matrices towards doubly stochastic ones: divide
    every column by its sum, then every row by its sum (sums floored at 1e-10), until all row
    and column sums of the real block are within ``tol`` of 1 or ``max_iter`` rounds (allRank's
    loop). ``mask`` (N, L) False marks padded items, whose rows and columns come out 0."""
    fn = "sinkhorn_scaling"
    p = as_tensor(matrix)
    if p.ndim != 3 or p.shape[1] != p.shape[2]:
        raise ValueError(f"{fn}: expected square matrices (N, L, L), got shape {p.shape}")
    if isinstance(max_iter, bool) or not isinstance(max_iter, (int, np.integer)) or max_iter < 1:
        raise ValueError(f"{fn}: max_iter must be an int >= 1, got {max_iter!r}")
    valid = np.ones(p.shape[:2], dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if valid.shape != p.shape[:2]:
        raise ValueError(f"{fn}: mask must be (N, L) = {p.shape[:2]}, got {valid.shape}")
    outside = ~(valid[:, :, None] & valid[:, None, :])
    padded_block = ~valid[:, :, None] & ~valid[:, None, :]
    p = masked_fill(masked_fill(p, outside, 0.0), padded_block, 1.0)     # no all-zero row or column
    p = sinkhorn_balance(p, num_iter=max_iter, tol=tol, columns_first=True, floor=EPS, row_mask=valid,
                         column_mask=valid)
    return masked_fill(p, outside, 0.0)


def neural_ndcg_loss(scores, labels, mask=None, temperature: float = 1.0, k: int | None = None,
                     gain: str = "exp2", sinkhorn_tol: float = 1e-6, sinkhorn_iter: int = 50) -> Tensor:
    """NeuralNDCG: with P the NeuralSort matrix of the scores at ``temperature`` after Sinkhorn
    scaling, the relaxed DCG@k = sum_(i < k) (P G)_i / log2(i + 2); the loss is -DCG@k / (IDCG@k
    + 1e-10) averaged over the lists with a relevant item (0 when none has one), as allRank's
    deterministic neuralNDCG."""
    fn = "neural_ndcg_loss"
    s, y, valid = ranking_inputs(scores, labels, mask, fn)
    temperature = positive_number(temperature, "temperature", fn)
    k = cutoff(k, y.shape[1], fn)
    # the real items first (the loss does not depend on the items' order): ranks < n and items < n
    # are then the same rows and columns, the real block of the matrices
    front = np.argsort(~valid, axis=1, kind="stable")
    s, y, valid = gather(s, 1, front), np.take_along_axis(y, front, 1), np.take_along_axis(valid, front, 1)
    p = sinkhorn_scaling(neural_sort(s, temperature, valid), valid, sinkhorn_tol, sinkhorn_iter)
    g = gains(y, gain, fn)
    sorted_gains = matmul(p, _constant(g[:, :, None], s))[:, :k, 0]          # (N, k)
    best = ideal_dcg(g, k)
    has_relevant = best > 0
    dcg = R.sum(sorted_gains * _constant(discounts(k)[None], s), axis=1)
    ndcg = masked_fill(dcg / _constant(best + EPS, s), ~has_relevant, 0.0)
    return -R.sum(ndcg) / max(int(has_relevant.sum()), 1)
