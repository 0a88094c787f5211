"""Top-k ranking metrics for recommenders, and top-k recommendation.

Each user (a row) has scores for C candidate items: all the items of the catalogue, or a
sample (the NCF protocol: the held-out positive and 99 sampled negatives, one row each).
``relevant`` marks the items the user did interact with (a boolean (U, C) array or, per
user, an array of relevant columns); ``exclude`` marks items left out of the ranking (the
user's training items when all items are ranked). The items are ranked by decreasing score;
a **tie counts against the relevant item**: among equal scores the irrelevant items come
first (the pessimistic convention, so a constant model earns no credit), then by index.
With r_1 < r_2 < ... the 0-based ranks of the relevant items and R their number:

    HitRate@k  = 1[r_1 < k]
    Recall@k   = |{r_j < k}| / R
    NDCG@k     = sum_(r_j < k) 1 / log2(r_j + 2)  /  sum_(j < min(k, R)) 1 / log2(j + 2)
    MRR        = 1 / (r_1 + 1)
    AUC        = P(a relevant item outscores an irrelevant one), ties counted 1/2

each averaged over the users with at least one relevant item (AUC: and one irrelevant
item); ``per_user=True`` gives the values of each user instead (NaN where undefined).
With one relevant item per user (leave-one-out) Recall@k equals HitRate@k.
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina.autograd import no_grad
from lamina.errors import ShapeError
from lamina.nn.module import evaluation_mode

__all__ = ["auc_per_user", "evaluate_sampled", "hit_rate_at_k", "mean_reciprocal_rank", "ndcg_at_k",
           "rank_items", "ranking_metrics", "recall_at_k", "recommend", "score_items"]


def _mask(marks, shape: tuple[int, int], what: str, who: str) -> np.ndarray:
    """A boolean (U, C) mask from a boolean array, a SciPy sparse matrix or per-row index arrays."""
    if marks is None:
        return np.zeros(shape, dtype=bool)
    if hasattr(marks, "tocsr"):
        marks = marks.toarray() != 0
    if isinstance(marks, np.ndarray) and marks.dtype == bool:
        if marks.shape != shape:
            raise ShapeError(f"{who}: {what} as a boolean mask must have the scores' shape {shape}, got {marks.shape}")
        return marks
    rows = list(marks)
    if len(rows) != shape[0]:
        raise ShapeError(f"{who}: {what} must give one array of columns per user ({shape[0]}), got {len(rows)}")
    mask = np.zeros(shape, dtype=bool)
    for row, columns in enumerate(rows):
        columns = np.asarray(columns, dtype=np.int64).reshape(-1)
        if columns.size and (columns.min() < 0 or columns.max() >= shape[1]):
            raise ValueError(f"{who}: {what} of user row {row} holds column {int(columns.max())}, out of range "
                             f"[0, {shape[1]})")
        mask[row, columns] = True
    return mask


def _prepared(scores, relevant, exclude, who: str):
    scores = np.asarray(backend.to_numpy(getattr(scores, "data", scores)), dtype=np.float64)
    if scores.ndim != 2 or scores.shape[1] == 0:
        raise ShapeError(f"{who}: scores must be (users, candidates), got shape {scores.shape}")
    if np.isnan(scores).any():
        raise ValueError(f"{who}: scores hold NaN")
    relevant = _mask(relevant, scores.shape, "relevant", who)
    excluded = _mask(exclude, scores.shape, "exclude", who)
    return scores, relevant & ~excluded, excluded


def _hits_in_rank_order(scores, relevant, excluded) -> np.ndarray:
    """(U, C): whether the item at each rank is relevant; excluded items rank last."""
    keys = np.where(excluded, -np.inf, scores)
    columns = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    order = np.lexsort((columns, relevant, -keys), axis=1)   # score down, irrelevant first, index up
    return np.take_along_axis(relevant, order, 1)


def _check_k(k, who: str) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"{who}: k must be an int >= 1, got {k!r}")
    return int(k)


def _discounts(length: int) -> np.ndarray:
    return 1.0 / np.log2(np.arange(length) + 2.0)


def _per_user(scores, relevant, exclude, k, who):
    """Every metric per user, NaN for users without a relevant item."""
    scores, relevant, excluded = _prepared(scores, relevant, exclude, who)
    hits = _hits_in_rank_order(scores, relevant, excluded)
    count = relevant.sum(axis=1)
    defined = count > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        top = hits[:, :k]
        ideal = np.cumsum(_discounts(scores.shape[1]))[np.minimum(k, np.maximum(count, 1)) - 1]
        first = np.argmax(hits, axis=1)
        values = {
            "hit_rate": top.any(axis=1).astype(np.float64),
            "recall": top.sum(axis=1) / count,
            "ndcg": (top * _discounts(top.shape[1])).sum(axis=1) / ideal,
            "mrr": 1.0 / (first + 1.0),
        }
    return {name: np.where(defined, value, np.nan) for name, value in values.items()}, (scores, relevant, excluded)


def _reduce(values: np.ndarray, per_user: bool):
    if per_user:
        return values
    return float(np.nanmean(values)) if not np.isnan(values).all() else float("nan")


def hit_rate_at_k(scores, relevant, k: int = 10, exclude=None, per_user: bool = False):
    """HitRate@k: whether a relevant item is among the top k (module docstring)."""
    k = _check_k(k, "hit_rate_at_k")
    return _reduce(_per_user(scores, relevant, exclude, k, "hit_rate_at_k")[0]["hit_rate"], per_user)


def recall_at_k(scores, relevant, k: int = 10, exclude=None, per_user: bool = False):
    """Recall@k: the fraction of the relevant items among the top k."""
    k = _check_k(k, "recall_at_k")
    return _reduce(_per_user(scores, relevant, exclude, k, "recall_at_k")[0]["recall"], per_user)


def ndcg_at_k(scores, relevant, k: int = 10, exclude=None, per_user: bool = False):
    """NDCG@k with binary relevance; ties count against the relevant item."""
    k = _check_k(k, "ndcg_at_k")
    return _reduce(_per_user(scores, relevant, exclude, k, "ndcg_at_k")[0]["ndcg"], per_user)


def mean_reciprocal_rank(scores, relevant, exclude=None, per_user: bool = False):
    """MRR: 1 / (rank of the first relevant item + 1), ranks from 0."""
    return _reduce(_per_user(scores, relevant, exclude, 1, "mean_reciprocal_rank")[0]["mrr"], per_user)


def _auc(scores, relevant, excluded) -> np.ndarray:
    """Mann-Whitney: (sum of the relevant items' ranks - R (R + 1) / 2) / (R N) over the
    kept items, ranks from 1 with ties averaged."""
    from scipy.stats import rankdata  # SciPy's statistics take 0.3 s to import: on first use

    kept = ~excluded
    ranks = rankdata(np.where(kept, scores, -np.inf), axis=1) - excluded.sum(axis=1, keepdims=True)
    positives = relevant.sum(axis=1)
    negatives = kept.sum(axis=1) - positives
    with np.errstate(invalid="ignore", divide="ignore"):
        auc = ((ranks * relevant).sum(axis=1) - positives * (positives + 1) / 2) / (positives * negatives)
    return np.where((positives > 0) & (negatives > 0), auc, np.nan)


def auc_per_user(scores, relevant, exclude=None, per_user: bool = False):
    """The AUC of each user's ranking (relevant vs. irrelevant kept items), averaged."""
    scores, relevant, excluded = _prepared(scores, relevant, exclude, "auc_per_user")
    return _reduce(_auc(scores, relevant, excluded), per_user)


def ranking_metrics(scores, relevant, k: int = 10, exclude=None, per_user: bool = False) -> dict:
    """{'hit_rate', 'recall', 'ndcg', 'mrr', 'auc'} in one pass (@k for the first three)."""
    k = _check_k(k, "ranking_metrics")
    values, prepared = _per_user(scores, relevant, exclude, k, "ranking_metrics")
    values["auc"] = _auc(*prepared)
    return {name: _reduce(value, per_user) for name, value in values.items()}


def score_items(model, users, items=None, batch_size: int = 65536) -> np.ndarray:
    """The model's scores (len(users), C) of the ``items`` (C,) (all n_items when None) for each
    user: from ``model.score_all`` (every item's score) when the model has it, else
    ``model(users, items)`` on the pairs, ``batch_size`` pairs at a time, in evaluation mode
    without the graph."""
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    if hasattr(model, "score_all"):
        every = np.asarray(model.score_all(users), dtype=np.float64)
        if items is None:
            return every
        items = np.asarray(items, dtype=np.int64)
        return np.take_along_axis(every, np.broadcast_to(items, (len(users), items.shape[-1])), 1)
    if items is None:
        if not hasattr(model, "n_items"):
            raise ValueError(f"score_items: {type(model).__name__} has no n_items; give the items to score")
        items = np.arange(model.n_items)
    items = np.asarray(items, dtype=np.int64)
    if items.ndim == 1:
        items = np.broadcast_to(items, (len(users), len(items)))
    if items.ndim != 2 or items.shape[0] != len(users):
        raise ShapeError(f"score_items: items must be (C,) or one row per user ({len(users)}, C), got "
                         f"{items.shape}")
    pair_users = np.repeat(users, items.shape[1])
    pair_items = items.reshape(-1)
    parts = []
    with evaluation_mode(model), no_grad():
        for start in range(0, len(pair_items), batch_size):
            part = slice(start, start + batch_size)
            parts.append(np.asarray(backend.to_numpy(model(pair_users[part], pair_items[part]).data)))
    return np.concatenate(parts).astype(np.float64).reshape(items.shape)


def rank_items(scores, k: int, exclude=None) -> tuple[np.ndarray, np.ndarray]:
    """The k best columns of each row (ties by index) and their scores, skipping ``exclude``d
    ones (a boolean mask, a SciPy sparse matrix or per-row column arrays)."""
    scores = np.array(scores, dtype=np.float64)
    k = _check_k(k, "rank_items")
    if scores.ndim != 2:
        raise ShapeError(f"rank_items: scores must be (users, items), got shape {scores.shape}")
    excluded = _mask(exclude, scores.shape, "exclude", "rank_items")
    available = int((~excluded).sum(axis=1).min(initial=scores.shape[1]))
    if k > available:
        raise ValueError(f"rank_items: k={k} but a user has only {available} items left after the exclusions")
    scores[excluded] = -np.inf
    columns = np.broadcast_to(np.arange(scores.shape[1]), scores.shape)
    order = np.lexsort((columns, -scores), axis=1)[:, :k]
    return order, np.take_along_axis(scores, order, 1)


def _exclusion_rows(exclude, users: np.ndarray):
    """Per-row columns to exclude for ``users`` from Interactions, a (n_users, n_items) sparse
    matrix, or per-user arrays (indexed by user id)."""
    if exclude is None:
        return None
    if hasattr(exclude, "items_of"):
        exclude = exclude.items_of()
    elif hasattr(exclude, "tocsr"):
        exclude = exclude.tocsr()
        return [exclude.indices[exclude.indptr[u]:exclude.indptr[u + 1]] for u in users]
    return [exclude[u] for u in users]


def recommend(model, users, k: int = 10, exclude=None) -> tuple[np.ndarray, np.ndarray]:
    """The top-``k`` items (len(users), k) for each user and their scores, best first (ties by
    item id), leaving out each user's items in ``exclude``: Interactions (e.g. the training
    set), a SciPy sparse (n_users, n_items) matrix, or a per-user list of item arrays."""
    users = np.asarray(users, dtype=np.int64).reshape(-1)
    scores = score_items(model, users)
    return rank_items(scores, k, _exclusion_rows(exclude, users))


def evaluate_sampled(model, train, test, negatives: int = 99, k: int = 10, method: str = "uniform",
                     seed=None) -> dict:
    """The NCF protocol (He et al. 2017): each test interaction (user, item) is ranked against
    ``negatives`` items the user interacted with in neither ``train`` nor ``test``, drawn
    distinct; returns :func:`ranking_metrics` of the (len(test), 1 + negatives) scores."""
    from lamina.data.interactions import sample_negatives

    drawn = sample_negatives(train, test.users, negatives, method=method, distinct=True, exclude=test, seed=seed)
    candidates = np.concatenate([test.items[:, None], drawn], axis=1)
    scores = score_items(model, test.users, candidates)
    relevant = np.zeros(candidates.shape, dtype=bool)
    relevant[:, 0] = True
    return ranking_metrics(scores, relevant, k)
