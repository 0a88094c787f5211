"""Retrieval metrics on hand-made rankings, as sentence-transformers' InformationRetrievalEvaluator."""

import math

import numpy as np
import pytest

from lamina.train import ndcg_at_k, recall_at_k, retrieval_metrics, retrieval_metrics_from_rankings

RANKINGS = {"q1": ["d3", "d1", "d7", "d2"], "q2": ["d5", "d6", "d4", "d1"], "q3": ["d1"]}
RELEVANT = {"q1": {"d1", "d2"}, "q2": {"d4"}, "q3": set()}


def test_metrics_by_hand():
    m = retrieval_metrics_from_rankings(RANKINGS, RELEVANT, k_values=[1, 3, 4])
    assert m["accuracy@1"] == 0.0 and m["accuracy@3"] == 1.0            # q3 has nothing relevant: left out
    assert m["precision@3"] == pytest.approx((1 / 3 + 1 / 3) / 2)
    assert m["recall@3"] == pytest.approx((1 / 2 + 1) / 2)
    assert m["recall@4"] == pytest.approx(1.0)
    assert m["mrr@1"] == 0.0
    assert m["mrr@3"] == pytest.approx((1 / 2 + 1 / 3) / 2)
    ndcg_q1 = (1 / math.log2(3) + 1 / math.log2(5)) / (1 + 1 / math.log2(3))
    ndcg_q2 = (1 / math.log2(4)) / 1.0
    assert m["ndcg@4"] == pytest.approx((ndcg_q1 + ndcg_q2) / 2)
    map_q1 = (1 / 2 + 2 / 4) / 2
    map_q2 = 1 / 3
    assert m["map@4"] == pytest.approx((map_q1 + map_q2) / 2)
    assert m["map@3"] == pytest.approx(((1 / 2) / 2 + 1 / 3) / 2)


def test_average_precision_divides_by_the_smaller_of_k_and_the_relevant_count():
    m = retrieval_metrics_from_rankings({"q": ["d1", "d5", "d2"]}, {"q": {"d1", "d2", "d9"}}, k_values=[1, 3])
    assert m["map@1"] == 1.0
    assert m["map@3"] == pytest.approx((1 + 2 / 3) / 3)
    assert m["precision@3"] == pytest.approx(2 / 3) and m["recall@1"] == pytest.approx(1 / 3)


def test_ndcg_and_recall_equal_the_ranking_metrics():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((6, 9))
    relevant = rng.random((6, 9)) < 0.3
    relevant[:, 0] = True
    rankings = {u: list(np.argsort(-row)) for u, row in enumerate(scores)}
    marks = {u: set(np.flatnonzero(row)) for u, row in enumerate(relevant)}
    ours = retrieval_metrics_from_rankings(rankings, marks, k_values=[3, 5])
    for k in (3, 5):
        assert ours[f"ndcg@{k}"] == pytest.approx(ndcg_at_k(scores, relevant, k=k))
        assert ours[f"recall@{k}"] == pytest.approx(recall_at_k(scores, relevant, k=k))


class Lookup:
    def __init__(self, vectors):
        self.vectors = vectors

    def encode(self, items, batch_size=32):
        return np.stack([self.vectors[i] for i in items])


def test_retrieval_metrics_encodes_and_ranks():
    vectors = {"a": [1.0, 0.0], "b": [0.0, 1.0], "x": [0.9, 0.1], "y": [0.1, 0.9], "z": [-1.0, 0.0]}
    queries, corpus = {"q1": "a", "q2": "b"}, {"c1": "z", "c2": "y", "c3": "x"}
    m = retrieval_metrics(Lookup(vectors), queries, corpus, {"q1": {"c3"}, "q2": {"c3"}}, k_values=[1, 2])
    assert m["accuracy@1"] == 0.5 and m["mrr@2"] == pytest.approx(0.75)
    with pytest.raises(ValueError, match="k_values must be ints >= 1"):
        retrieval_metrics_from_rankings(RANKINGS, RELEVANT, k_values=[0])
