"""Leave-one-out metrics of next-item recommenders: hand-computed HR@k, NDCG@k and MRR,
the history excluded from full rankings (but never the target), and ranking against
sampled negatives."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.data import sample_unseen_items
from lamina.train import evaluate_next_item, next_item_metrics, ranking_metrics

SCORES = np.array([[0.9, 0.1, 0.5, 0.7, 0.3],
                   [0.2, 0.2, 0.8, 0.2, 0.6]])
TARGETS = np.array([2, 1])
HISTORIES = [np.array([0]), np.array([1, 2])]      # user 1's target is also in its history


def test_full_ranking_metrics_equal_hand_computed_values():
    # user 0: item 0 excluded, ranking 3, 2, ... -> rank 1.  user 1: item 2 excluded (not the
    # target 1), ranking 4, then the tie at 0.2 counts against the target -> rank 3.
    got = next_item_metrics(SCORES, TARGETS, HISTORIES, k=2)
    assert got["hit_rate"] == pytest.approx(0.5)
    assert got["ndcg"] == pytest.approx((1 / np.log2(3) + 0) / 2)
    assert got["mrr"] == pytest.approx((1 / 2 + 1 / 4) / 2)
    wide = next_item_metrics(SCORES, TARGETS, HISTORIES, k=5)
    assert wide["ndcg"] == pytest.approx((1 / np.log2(3) + 1 / np.log2(5)) / 2)
    # nothing excluded: user 0's target is third (rank 2), user 1's fifth (rank 4: below items 2, 4 and the ties)
    plain = next_item_metrics(SCORES, TARGETS, k=3)
    assert plain["hit_rate"] == pytest.approx(0.5)
    assert plain["ndcg"] == pytest.approx(0.5 / np.log2(4))
    assert plain["mrr"] == pytest.approx((1 / 3 + 1 / 5) / 2)


def test_they_are_the_ranking_metrics_of_one_relevant_item():
    rng = np.random.default_rng(0)
    scores, targets = rng.normal(size=(20, 30)), rng.integers(0, 30, 20)
    relevant = np.zeros(scores.shape, dtype=bool)
    relevant[np.arange(20), targets] = True
    reference = ranking_metrics(scores, relevant, 10)
    got = next_item_metrics(scores, targets, k=10)
    for name in ("hit_rate", "ndcg", "mrr"):
        assert got[name] == pytest.approx(reference[name], rel=1e-12)


class _FixedScores:
    """score_next gives each item its id as score: higher ids rank first."""

    n_items = 40

    def score_next(self, histories):
        return np.broadcast_to(np.arange(self.n_items, dtype=np.float64), (len(histories), self.n_items))


def test_full_and_sampled_evaluation_of_a_model():
    model, targets = _FixedScores(), np.array([39, 30, 10])
    histories = [np.array([1, 2]), np.array([35, 36, 37]), np.array([], dtype=np.int64)]
    full = evaluate_next_item(model, histories, targets, k=5)
    ranks = np.array([0, 9 - 3, 29])                 # items above the target, less the history ones
    assert full["mrr"] == pytest.approx(np.mean(1 / (ranks + 1)))
    assert full["hit_rate"] == pytest.approx(1 / 3)

    sampled = evaluate_next_item(model, histories, targets, k=5, candidates="sampled", negatives=20, seed=4)
    seen = [np.append(h, t) for h, t in zip(histories, targets)]
    drawn = sample_unseen_items(seen, 40, 20, distinct=True, seed=4)
    assert all(not np.isin(row, s).any() for row, s in zip(drawn, seen))
    sampled_ranks = (drawn > targets[:, None]).sum(axis=1)
    assert sampled["mrr"] == pytest.approx(np.mean(1 / (sampled_ranks + 1)))
    assert sampled["ndcg"] == pytest.approx(np.mean(np.where(sampled_ranks < 5, 1 / np.log2(sampled_ranks + 2), 0)))
    assert sampled["mrr"] > full["mrr"]              # fewer candidates: an optimistic rank
    with pytest.raises(ValueError, match="candidates"):
        evaluate_next_item(model, histories, targets, candidates="some")
