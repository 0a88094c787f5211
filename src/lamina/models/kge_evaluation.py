"""Link prediction: the filtered rank of the true entity among all entities.

For a test triple (h, r, t) the tail side scores every entity e as (h, r, e); the *filtered*
setting (Bordes et al. 2013) drops the candidates e != t for which (h, r, e) is a known true
triple (in any of the ``known`` sets: train, valid, test), so that other right answers do not
count against the model. With s the score of the true tail and the remaining candidates c:

    optimistic rank  = 1 + #{c : s_c > s}
    pessimistic rank = 1 + #{c : s_c >= s}
    realistic rank   = (optimistic + pessimistic) / 2      (PyKEEN's default, the expected
                                                            rank under random tie-breaking)

The head side is the same with (e, r, t). From the ranks R (of both sides, pooled):

    MRR = mean(1 / R),  Hits@k = mean(R <= k),  MR = mean(R).

The pessimistic MRR equals :func:`lamina.train.mean_reciprocal_rank` on the same scores
with the filtered candidates excluded (that function breaks ties against the true item);
the realistic convention is used here so a constant model earns the rank a random one would.
"""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from lamina import backend
from lamina.autograd import no_grad
from lamina.nn.module import evaluation_mode

from .kge_losses import check_triples

__all__ = ["filtered_ranks", "link_prediction_metrics", "evaluate_link_prediction", "ranks_from_scores"]

TIES = ("realistic", "optimistic", "pessimistic")


def ranks_from_scores(scores, true_columns, filtered=None, ties: str = "realistic") -> np.ndarray:
    """Rank (B,) of column ``true_columns[i]`` in row i of ``scores`` (B, C), leaving out the
    columns marked in the boolean ``filtered`` (B, C) (the true column never is)."""
    if ties not in TIES:
        raise ValueError(f"ranks_from_scores: ties must be one of {TIES}, got {ties!r}")
    scores = np.asarray(scores, dtype=np.float64)
    rows = np.arange(scores.shape[0])
    true = scores[rows, true_columns][:, None]
    keep = np.ones(scores.shape, dtype=bool) if filtered is None else ~np.asarray(filtered, dtype=bool)
    keep[rows, true_columns] = False
    better = ((scores > true) & keep).sum(axis=1)
    tied = ((scores == true) & keep).sum(axis=1)
    optimistic, pessimistic = 1.0 + better, 1.0 + better + tied
    if ties == "optimistic":
        return optimistic
    if ties == "pessimistic":
        return pessimistic
    return (optimistic + pessimistic) / 2


def _answers(known, n_entities: int, n_relations: int):
    """Index of the known triples: (h, r) -> tails and (r, t) -> heads."""
    tails, heads = defaultdict(list), defaultdict(list)
    for part in known:
        for h, r, t in check_triples(part, n_entities, n_relations, "filtered_ranks").tolist():
            tails[h, r].append(t)
            heads[r, t].append(h)
    return tails, heads


def _mask(keys, index, shape) -> np.ndarray:
    mask = np.zeros(shape, dtype=bool)
    for row, key in enumerate(keys):
        mask[row, index.get(key, [])] = True
    return mask


def filtered_ranks(model, triples, known=(), side: str = "both", ties: str = "realistic",
                   batch_size: int = 256) -> np.ndarray:
    """Filtered ranks of the test ``triples`` (B, 3) under ``model`` (a KGE model with
    score_t / score_h), filtering the triples of every array in ``known``.

    ``side``: 'tail' (B,), 'head' (B,) or 'both' (2B,: the tail ranks, then the head ranks).
    ``known=()`` gives the raw (unfiltered) ranks."""
    if side not in ("tail", "head", "both"):
        raise ValueError(f"filtered_ranks: side must be 'tail', 'head' or 'both', got {side!r}")
    triples = check_triples(triples, model.n_entities, model.n_relations, "filtered_ranks")
    tails, heads = _answers(known, model.n_entities, model.n_relations)
    tail_ranks, head_ranks = [], []
    with evaluation_mode(model), no_grad():
        for start in range(0, len(triples), batch_size):
            h, r, t = triples[start:start + batch_size].T
            shape = (len(h), model.n_entities)
            if side in ("tail", "both"):
                scores = backend.to_numpy(model.score_t(h, r).data)
                tail_ranks.append(ranks_from_scores(scores, t, _mask(zip(h, r), tails, shape), ties))
            if side in ("head", "both"):
                scores = backend.to_numpy(model.score_h(r, t).data)
                head_ranks.append(ranks_from_scores(scores, h, _mask(zip(r, t), heads, shape), ties))
    return np.concatenate(tail_ranks + head_ranks) if len(triples) else np.zeros(0)


def link_prediction_metrics(ranks, ks=(1, 3, 10)) -> dict:
    """{'mrr', 'mean_rank', 'hits@k' for k in ks} of the ranks."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if ranks.ndim != 1 or ranks.size == 0 or (ranks < 1).any():
        raise ValueError(f"link_prediction_metrics: expected a non-empty 1-D array of ranks >= 1, got shape "
                         f"{ranks.shape}")
    metrics = {"mrr": float(np.mean(1.0 / ranks)), "mean_rank": float(ranks.mean())}
    for k in ks:
        metrics[f"hits@{k}"] = float(np.mean(ranks <= k))
    return metrics


def evaluate_link_prediction(model, triples, known=(), side: str = "both", ties: str = "realistic",
                             ks=(1, 3, 10)) -> dict:
    """:func:`link_prediction_metrics` of :func:`filtered_ranks`."""
    return link_prediction_metrics(filtered_ranks(model, triples, known, side, ties), ks)
