"""Ranking metrics with graded relevance, for learning to rank.

Each row of ``scores`` (N, L) is a query's list of L items, ``labels`` (N, L) their graded
relevance (0, 1, 2, ...); a 1-D pair is one query. Items whose label is -1 (allRank's padding)
or that ``mask`` marks False are left out. Items are ranked by decreasing score and **ties
keep their positions** (a stable sort, as allRank and LightGBM order them): among equal
scores the earlier item ranks first. With r = 0, 1, ... the ranks, g(y) = 2^y - 1 ('exp2') or
y ('linear'), and k the cutoff (None: the whole list):

    DCG@k  = sum_(r < k) g(y_r) / log2(r + 2)          NDCG@k = DCG@k / IDCG@k
    ERR@k  = sum_(r < k) R_r / (r + 1) prod_(q < r) (1 - R_q),  R = (2^y - 1) / 2^max_label
    MRR@k  = 1 / (rank of the first relevant item + 1), 0 when none is in the top k
    P@k    = (relevant items in the top k) / min(k, n)
    AP@k   = sum_(r < k, relevant) P@(r + 1) / min(k, R)

(Chapelle et al. 2009 for ERR; IDCG@k is the DCG@k of the labels sorted down, n the real
items, R the relevant ones.) An item is relevant when its label is >= ``threshold`` (1). A
query without a relevant item has no ideal ranking: NDCG and AP give it ``empty``, 1.0 by
default as LightGBM and allRank do (0.0 to count it as a miss); MRR, ERR, P@k and DCG are 0
there. Results are averaged over the queries, or per query with ``per_query=True``.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.errors import ShapeError
from lamina.functional.losses_ranking import PADDING_LABEL, cutoff, discounts, gains

__all__ = ["dcg", "err", "ltr_metrics", "map_at_k", "mrr", "ndcg", "precision_at_k"]


def _array(values) -> np.ndarray:
    return np.asarray(backend.to_numpy(getattr(values, "data", values)), dtype=np.float64)


def _ranked(scores, labels, mask, fn: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels in rank order with padding 0, real items in rank order), both (N, L)."""
    s, y = _array(scores), _array(labels)
    if s.ndim not in (1, 2) or s.shape != y.shape:
        raise ShapeError(f"{fn}: scores and labels must have the same shape (queries, items) or (items,); got "
                         f"scores {s.shape} and labels {y.shape}")
    mask = None if mask is None else np.asarray(backend.to_numpy(getattr(mask, "data", mask)))
    if s.ndim == 1:
        s, y = s[None], y[None]
        mask = None if mask is None else mask[None]
    valid = y != PADDING_LABEL
    if mask is not None:
        if mask.shape != y.shape:
            raise ShapeError(f"{fn}: mask must have the labels' shape {y.shape}, got {mask.shape}")
        valid &= mask.astype(bool)
    bad = valid & ~(y >= 0)
    if bad.any():
        raise ValueError(f"{fn}: labels must be >= 0 (or {PADDING_LABEL} for padding); got "
                         f"{float(y[bad][0])!r} at {tuple(int(i) for i in np.argwhere(bad)[0])}")
    if np.isnan(s[valid]).any():
        raise ValueError(f"{fn}: scores hold NaN")
    order = np.argsort(-np.where(valid, s, -np.inf), axis=1, kind="stable")
    return np.take_along_axis(np.where(valid, y, 0.0), order, 1), np.take_along_axis(valid, order, 1)


def _reduce(values: np.ndarray, per_query: bool):
    return values if per_query else float(values.mean())


def _dcg_of(ranked: np.ndarray, k: int, gain: str, fn: str) -> np.ndarray:
    top = gains(ranked[:, :k], gain, fn)
    return (top * discounts(top.shape[1])).sum(axis=1)


def dcg(scores, labels, k: int | None = None, gain: str = "exp2", mask=None, per_query: bool = False):
    """DCG@k: sum over the top k of g(y_r) / log2(r + 2) (module docstring)."""
    ranked, _ = _ranked(scores, labels, mask, "dcg")
    return _reduce(_dcg_of(ranked, cutoff(k, ranked.shape[1], "dcg"), gain, "dcg"), per_query)


def ndcg(scores, labels, k: int | None = None, gain: str = "exp2", mask=None, empty: float = 1.0,
         per_query: bool = False):
    """NDCG@k = DCG@k / IDCG@k; ``empty`` for a query without a relevant item (LightGBM's 1.0)."""
    ranked, _ = _ranked(scores, labels, mask, "ndcg")
    k = cutoff(k, ranked.shape[1], "ndcg")
    ideal = _dcg_of(-np.sort(-ranked, axis=1), k, gain, "ndcg")
    found = _dcg_of(ranked, k, gain, "ndcg")
    values = np.divide(found, ideal, out=np.full_like(found, float(empty)), where=ideal > 0)
    return _reduce(values, per_query)


def _relevant(ranked: np.ndarray, valid: np.ndarray, threshold: float) -> np.ndarray:
    return valid & (ranked >= threshold)


def mrr(scores, labels, k: int | None = None, threshold: float = 1, mask=None, per_query: bool = False):
    """Reciprocal rank of the first item with label >= ``threshold``, 0 when none is in the top k."""
    ranked, valid = _ranked(scores, labels, mask, "mrr")
    k = cutoff(k, ranked.shape[1], "mrr")
    hits = _relevant(ranked, valid, threshold)[:, :k]
    first = np.argmax(hits, axis=1)
    return _reduce(np.where(hits.any(axis=1), 1.0 / (first + 1.0), 0.0), per_query)


def err(scores, labels, k: int | None = None, max_label: float = 4, mask=None, per_query: bool = False):
    """Expected reciprocal rank: a user scans down and stops at rank r with probability
    R_r = (2^y_r - 1) / 2^max_label; ERR@k = sum_(r < k) R_r / (r + 1) prod_(q < r) (1 - R_q)."""
    ranked, _ = _ranked(scores, labels, mask, "err")
    k = cutoff(k, ranked.shape[1], "err")
    if ranked.max(initial=0.0) > max_label:
        raise ValueError(f"err: a label {ranked.max()!r} exceeds max_label={max_label!r}; give the top grade")
    stop = (np.exp2(ranked[:, :k]) - 1.0) / 2.0 ** max_label
    reach = np.cumprod(np.concatenate([np.ones((len(stop), 1)), 1.0 - stop[:, :-1]], axis=1), axis=1)
    return _reduce((reach * stop / np.arange(1.0, k + 1.0)).sum(axis=1), per_query)


def precision_at_k(scores, labels, k: int, threshold: float = 1, mask=None, per_query: bool = False):
    """The fraction of relevant items (label >= ``threshold``) among the top min(k, n)."""
    ranked, valid = _ranked(scores, labels, mask, "precision_at_k")
    if k is None:
        raise ValueError("precision_at_k: k must be an int >= 1, got None")
    k = cutoff(k, ranked.shape[1], "precision_at_k")
    hits = _relevant(ranked, valid, threshold)[:, :k].sum(axis=1)
    shown = np.minimum(valid.sum(axis=1), k)
    return _reduce(np.divide(hits, shown, out=np.zeros(len(hits)), where=shown > 0), per_query)


def map_at_k(scores, labels, k: int | None = None, threshold: float = 1, mask=None, empty: float = 1.0,
             per_query: bool = False):
    """Mean average precision@k: sum over the relevant items in the top k of the precision at
    their rank, over min(k, R); ``empty`` for a query without a relevant item (LightGBM's 1.0)."""
    ranked, valid = _ranked(scores, labels, mask, "map_at_k")
    k = cutoff(k, ranked.shape[1], "map_at_k")
    relevant = _relevant(ranked, valid, threshold)
    hits = relevant[:, :k]
    precision = np.cumsum(hits, axis=1) / np.arange(1.0, k + 1.0)
    wanted = np.minimum(relevant.sum(axis=1), k)
    found = (precision * hits).sum(axis=1)
    return _reduce(np.divide(found, wanted, out=np.full(len(found), float(empty)), where=wanted > 0), per_query)


def ltr_metrics(scores, labels, k: int = 10, mask=None, max_label: float = 4) -> dict:
    """{'ndcg', 'map', 'mrr', 'err', 'precision'}, each @k and averaged over the queries."""
    return {"ndcg": ndcg(scores, labels, k, mask=mask), "map": map_at_k(scores, labels, k, mask=mask),
            "mrr": mrr(scores, labels, k, mask=mask), "err": err(scores, labels, k, max_label, mask=mask),
            "precision": precision_at_k(scores, labels, k, mask=mask)}
