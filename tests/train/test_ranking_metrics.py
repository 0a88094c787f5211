"""Ranking metrics and top-k recommendation: hand-computed values, an independent
per-user NumPy reference, the tie convention, exclusions and the sampled protocol."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.sparse import csr_matrix

from lamina.data import Interactions
from lamina.errors import ShapeError
from lamina.models import MatrixFactorization
from lamina.train import (
    auc_per_user,
    hit_rate_at_k,
    mean_reciprocal_rank,
    ndcg_at_k,
    rank_items,
    ranking_metrics,
    recall_at_k,
    recommend,
    score_items,
)


def test_hand_computed_values():
    scores = np.array([[0.9, 0.1, 0.5, 0.3, 0.7],       # ranking 0, 4, 2, 3, 1
                       [0.2, 0.8, 0.6, 0.4, 0.0]])      # ranking 1, 2, 3, 0, 4
    relevant = [np.array([2, 1]), np.array([4])]
    # user 0: relevant at ranks 2 and 4; user 1: at rank 4
    assert hit_rate_at_k(scores, relevant, k=3, per_user=True).tolist() == [1.0, 0.0]
    assert recall_at_k(scores, relevant, k=3, per_user=True).tolist() == [0.5, 0.0]
    ndcg = ndcg_at_k(scores, relevant, k=3, per_user=True)
    assert ndcg[0] == pytest.approx((1 / np.log2(4)) / (1 + 1 / np.log2(3)))
    assert ndcg[1] == 0
    assert mean_reciprocal_rank(scores, relevant) == pytest.approx((1 / 3 + 1 / 5) / 2)
    # user 0: 1 of 6 (relevant, irrelevant) pairs right (item 2 over 3); user 1: none right
    assert auc_per_user(scores, relevant, per_user=True).tolist() == pytest.approx([1 / 6, 0.0])
    assert ranking_metrics(scores, relevant, k=3)["hit_rate"] == 0.5


def _reference(scores, relevant_rows, excluded_rows, k):
    """One user at a time with plain Python: the pessimistic order on ties."""
    results = {"hit_rate": [], "recall": [], "ndcg": [], "mrr": [], "auc": []}
    for row, rel, excl in zip(scores, relevant_rows, excluded_rows):
        rel = set(rel) - set(excl)
        kept = [c for c in range(len(row)) if c not in set(excl)]
        if not rel:
            continue
        ranked = sorted(kept, key=lambda c: (-row[c], c in rel, c))
        ranks = [r for r, c in enumerate(ranked) if c in rel]
        results["hit_rate"].append(float(ranks[0] < k))
        results["recall"].append(sum(r < k for r in ranks) / len(rel))
        ideal = sum(1 / np.log2(r + 2) for r in range(min(k, len(rel))))
        results["ndcg"].append(sum(1 / np.log2(r + 2) for r in ranks if r < k) / ideal)
        results["mrr"].append(1 / (ranks[0] + 1))
        pairs = [(row[p] > row[n]) + 0.5 * (row[p] == row[n]) for p in rel for n in kept if n not in rel]
        if pairs:
            results["auc"].append(np.mean(pairs))
    return {name: float(np.mean(values)) for name, values in results.items()}


def test_matches_an_independent_reference_with_ties_and_exclusions():
    rng = np.random.default_rng(0)
    scores = rng.integers(0, 4, (30, 12)).astype(float)      # many ties
    relevant = [rng.choice(12, rng.integers(0, 4), replace=False) for _ in range(30)]
    excluded = [rng.choice(12, rng.integers(0, 5), replace=False) for _ in range(30)]
    for k in (1, 3, 12):
        ours = ranking_metrics(scores, relevant, k=k, exclude=excluded)
        theirs = _reference(scores, relevant, excluded, k)
        assert ours == pytest.approx(theirs, rel=1e-12)


def test_ties_count_against_the_relevant_item():
    constant = np.zeros((1, 100))
    relevant = np.zeros((1, 100), dtype=bool)
    relevant[0, 0] = True                               # the NCF layout: the positive first
    assert hit_rate_at_k(constant, relevant, k=10) == 0.0
    assert mean_reciprocal_rank(constant, relevant) == pytest.approx(1 / 100)
    assert auc_per_user(constant, relevant) == 0.5
    scores = np.array([[1.0, 1.0, 0.0]])
    assert ndcg_at_k(scores, [np.array([0])], k=2) == pytest.approx(1 / np.log2(3))


def test_users_without_relevant_items_are_left_out_and_exclusion_removes_items():
    scores = np.array([[3.0, 2.0, 1.0], [3.0, 2.0, 1.0]])
    relevant = [np.array([2]), np.array([], dtype=int)]
    assert np.isnan(hit_rate_at_k(scores, relevant, k=1, per_user=True)[1])
    assert hit_rate_at_k(scores, relevant, k=1) == 0.0
    assert hit_rate_at_k(scores, relevant, k=1, exclude=[np.array([0, 1]), np.array([])]) == 1.0
    as_sparse = csr_matrix(np.array([[1, 1, 0], [0, 0, 0]]))
    assert hit_rate_at_k(scores, relevant, k=1, exclude=as_sparse) == 1.0
    with pytest.raises(ShapeError, match=r"relevant as a boolean mask must have the scores' shape \(2, 3\)"):
        recall_at_k(scores, np.ones((2, 2), dtype=bool))
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        ndcg_at_k(scores, relevant, k=0)


def test_recommend_returns_the_best_unseen_items():
    model = MatrixFactorization(3, 5, 2, biases=False)
    model.user_factors.weight.data[...] = np.array([[1, 0], [0, 1], [1, 1]])
    model.item_factors.weight.data[...] = np.array([[5, 0], [4, 1], [0, 3], [1, 1], [2, 2]])
    seen = Interactions(users=[0, 2], items=[0, 4], values=[1.0, 1.0], timestamps=[0, 1], n_users=3, n_items=5)
    items, scores = recommend(model, np.array([0, 2]), k=2, exclude=seen)
    assert items.tolist() == [[1, 4], [0, 1]] and scores.tolist() == [[4, 2], [5, 5]]   # a tie by item id
    assert recommend(model, np.array([1]), k=3)[0].tolist() == [[2, 4, 1]]
    assert rank_items(np.array([[1.0, 3.0, 2.0]]), 2, exclude=[np.array([1])])[0].tolist() == [[2, 0]]
    pairs = score_items(model, np.array([2, 0]), np.array([[1, 3], [2, 0]]))
    assert pairs.tolist() == [[5, 2], [0, 5]]
    with pytest.raises(ValueError, match="k=5 but a user has only 4 items left"):
        recommend(model, np.array([0]), k=5, exclude=seen)
