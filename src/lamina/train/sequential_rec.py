"""Leave-one-out evaluation of next-item recommenders (GRU4Rec, SASRec, BERT4Rec).

Each evaluated user has one held-out target item t. Its row of scores is ranked in one of
two ways (both offered; papers differ, so say which one a figure uses):

* ``candidates='full'``: against every item of the catalogue. The user's history (the items
  it read before t) is excluded from the ranking, as RecBole does, since a model should not
  be credited or blamed for re-recommending what was consumed; the target itself is never
  excluded, even when it also appears in the history.
* ``candidates='sampled'``: against ``negatives`` distinct items (100 by default, as SASRec and
  BERT4Rec report) drawn outside the history and the target, uniformly or by popularity.
  The target's rank among 1 + negatives candidates is optimistic next to the full ranking.

With r the 0-based rank of the target (ties counted against it, as in
:mod:`lamina.train.ranking_metrics`, whose functions compute them):

    HR@k = 1[r < k],   NDCG@k = 1[r < k] / log2(r + 2),   MRR = 1 / (r + 1)

averaged over the users, all in batched NumPy.
"""

from __future__ import annotations

import numpy as np

from lamina.data.sequences_rec import sample_unseen_items
from lamina.errors import ShapeError
from lamina.train.ranking_metrics import ranking_metrics

__all__ = ["evaluate_next_item", "next_item_metrics"]

CANDIDATE_MODES = ("full", "sampled")


def _history_mask(histories, targets: np.ndarray, n_items: int) -> np.ndarray:
    """(U, n_items): True at each user's history items, except its target."""
    mask = np.zeros((len(targets), n_items), dtype=bool)
    lengths = np.array([len(h) for h in histories], dtype=np.int64)
    if lengths.sum():
        rows = np.repeat(np.arange(len(targets)), lengths)
        columns = np.concatenate([np.asarray(h, dtype=np.int64).reshape(-1) for h in histories])
        mask[rows, columns] = True
    mask[np.arange(len(targets)), targets] = False
    return mask


def next_item_metrics(scores, targets, histories=None, k: int = 10) -> dict:
    """{'hit_rate', 'ndcg', 'mrr'} (@k for the first two) of full-catalogue scores (U, n_items)
    with one target item per user (U,), the items of ``histories`` (one array per user, None:
    nothing) excluded from each ranking but for the target."""
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    if scores.ndim != 2 or scores.shape[0] != len(targets):
        raise ShapeError(f"next_item_metrics: scores must be (users, items) with one row per target ({len(targets)}), "
                         f"got shape {scores.shape}")
    if targets.size and (targets.min() < 0 or targets.max() >= scores.shape[1]):
        raise ValueError(f"next_item_metrics: targets must be item ids in [0, {scores.shape[1]}), got "
                         f"[{int(targets.min())}, {int(targets.max())}]")
    relevant = np.zeros(scores.shape, dtype=bool)
    relevant[np.arange(len(targets)), targets] = True
    if histories is not None and len(histories) != len(targets):
        raise ShapeError(f"next_item_metrics: {len(histories)} histories for {len(targets)} targets")
    exclude = None if histories is None else _history_mask(histories, targets, scores.shape[1])
    values = ranking_metrics(scores, relevant, k, exclude=exclude)
    return {name: values[name] for name in ("hit_rate", "ndcg", "mrr")}


def evaluate_next_item(model, histories, targets, k: int = 10, candidates: str = "full", negatives: int = 100,
                       method: str = "uniform", item_counts=None, seed=None) -> dict:
    """HR@k, NDCG@k and MRR of ``model.score_next(histories)`` for the held-out ``targets``
    (e.g. a :class:`lamina.data.SequenceSplit`'s test_inputs and test_targets), ranked over
    the full catalogue or against ``negatives`` sampled items (module docstring);
    ``method``/``item_counts``: how negatives are drawn (see
    :func:`lamina.data.sample_unseen_items`)."""
    if candidates not in CANDIDATE_MODES:
        raise ValueError(f"evaluate_next_item: candidates must be one of {CANDIDATE_MODES}, got {candidates!r}")
    targets = np.asarray(targets, dtype=np.int64).reshape(-1)
    scores = np.asarray(model.score_next(histories), dtype=np.float64)
    if candidates == "full":
        return next_item_metrics(scores, targets, histories, k)
    seen = [np.append(np.asarray(h, dtype=np.int64), t) for h, t in zip(histories, targets)]
    drawn = sample_unseen_items(seen, scores.shape[1], negatives, method, item_counts, distinct=True, seed=seed)
    columns = np.concatenate([targets[:, None], drawn], axis=1)
    sampled = np.take_along_axis(scores, columns, 1)
    return next_item_metrics(sampled, np.zeros(len(targets), dtype=np.int64), None, k)
