"""Graded-relevance ranking metrics on hand-made lists against hand-computed values: ties,
padding, queries without a relevant item, cutoffs and errors."""

import math

import numpy as np
import pytest

from lamina.errors import ShapeError
from lamina.train import dcg, err, ltr_metrics, map_at_k, mrr, ndcg, ndcg_at_k, precision_at_k

# scores already in decreasing order: the rank of each item is its position
DOWN = np.array([3.0, 2.0, 1.0, 0.0])
LABELS = np.array([2.0, 0.0, 1.0, 3.0])


def test_dcg_and_ndcg_by_hand():
    found = 3 + 0 + 1 / 2 + 7 / math.log2(5)                       # gains 2^y - 1 = 3, 0, 1, 7
    ideal = 7 + 3 / math.log2(3) + 1 / 2 + 0
    assert dcg(DOWN, LABELS) == pytest.approx(found, rel=1e-12)
    assert ndcg(DOWN, LABELS) == pytest.approx(found / ideal, rel=1e-12)
    assert ndcg(DOWN, LABELS, k=2) == pytest.approx(3 / (7 + 3 / math.log2(3)), rel=1e-12)
    linear = (2 + 1 / 2 + 3 / math.log2(5)) / (3 + 2 / math.log2(3) + 1 / 2)
    assert ndcg(DOWN, LABELS, gain="linear") == pytest.approx(linear, rel=1e-12)
    assert ndcg(DOWN, LABELS, k=100) == ndcg(DOWN, LABELS)          # k past the list: the whole list
    # the order, not the scale, of the scores counts
    assert ndcg(DOWN[::-1], LABELS[::-1]) == pytest.approx(ndcg(np.exp(DOWN), LABELS), rel=1e-12)


def test_ties_keep_their_positions():
    tied = np.array([1.0, 1.0, 0.0])
    assert dcg(tied, np.array([0.0, 2.0, 1.0])) == pytest.approx(3 / math.log2(3) + 1 / 2, rel=1e-12)
    assert dcg(tied, np.array([2.0, 0.0, 1.0])) == pytest.approx(3 + 1 / 2, rel=1e-12)
    assert mrr(np.zeros(4), np.array([0.0, 0, 1, 1])) == pytest.approx(1 / 3)
    assert precision_at_k(np.zeros(4), np.array([1.0, 0, 0, 1]), k=1) == 1.0
    assert precision_at_k(np.zeros(4), np.array([0.0, 1, 0, 1]), k=1) == 0.0


def test_padding_is_left_out():
    scores = np.array([[5.0, 1.0, 2.0, 9.0], [0.3, 0.1, 0.2, 0.0]])
    labels = np.array([[1.0, 0.0, 2.0, -1.0], [1.0, 2.0, 0.0, 3.0]])
    # query 0 ranks items 0, 2, 1 (the padded one of score 9 is not there): labels 1, 2, 0
    assert dcg(scores, labels, per_query=True)[0] == pytest.approx(1 + 3 / math.log2(3), rel=1e-12)
    mask = labels != -1
    with_mask = ndcg(scores, np.where(mask, labels, 4.0), mask=mask, per_query=True)
    np.testing.assert_allclose(with_mask, ndcg(scores, labels, per_query=True), rtol=1e-14)
    assert precision_at_k(scores[:1], labels[:1], k=10) == pytest.approx(2 / 3)   # 3 real items shown


def test_queries_without_a_relevant_item():
    scores = np.array([[0.5, 0.1, 0.9], [0.5, 0.1, 0.9]])
    labels = np.array([[0.0, 0.0, 0.0], [0.0, 1.0, -1.0]])
    np.testing.assert_allclose(ndcg(scores, labels, per_query=True), [1.0, 1 / math.log2(3)])
    np.testing.assert_allclose(ndcg(scores, labels, empty=0.0, per_query=True), [0.0, 1 / math.log2(3)])
    np.testing.assert_allclose(map_at_k(scores, labels, per_query=True), [1.0, 1 / 2])
    np.testing.assert_allclose(mrr(scores, labels, per_query=True), [0.0, 1 / 2])
    np.testing.assert_allclose(err(scores, labels, per_query=True), [0.0, (1 / 16) / 2])
    np.testing.assert_allclose(precision_at_k(scores, labels, 1, per_query=True), [0.0, 0.0])
    assert ndcg(scores, labels) == pytest.approx((1 + 1 / math.log2(3)) / 2)


def test_mrr_err_precision_and_map_by_hand():
    ranked = np.array([0.0, 0.0, 2.0, 1.0])                       # labels in rank order
    assert mrr(DOWN, ranked) == pytest.approx(1 / 3)
    assert mrr(DOWN, ranked, k=2) == 0.0
    assert mrr(DOWN, ranked, threshold=2) == pytest.approx(1 / 3)
    assert mrr(DOWN, np.array([0.0, 1.0, 2.0, 0.0]), threshold=2) == pytest.approx(1 / 3)
    # ERR with R = (2^y - 1) / 4 = 3/4, 0, 1/4: 3/4 + (1/4)(1/3)(1 - 3/4)(1 - 0)
    assert err(DOWN[:3], np.array([2.0, 0.0, 1.0]), max_label=2) == pytest.approx(3 / 4 + 1 / 48, rel=1e-12)
    assert err(DOWN[:3], np.array([2.0, 0.0, 1.0]), k=1, max_label=2) == pytest.approx(3 / 4)
    five = np.arange(5.0)[::-1]
    relevance = np.array([1.0, 0.0, 3.0, 0.0, 1.0])                 # relevant at ranks 1, 3, 5
    assert precision_at_k(five, relevance, k=2) == pytest.approx(1 / 2)
    assert precision_at_k(five, relevance, k=3) == pytest.approx(2 / 3)
    assert map_at_k(five, relevance) == pytest.approx((1 / 1 + 2 / 3 + 3 / 5) / 3, rel=1e-12)
    assert map_at_k(five, relevance, k=2) == pytest.approx(1 / 2)
    assert map_at_k(five, relevance, k=3) == pytest.approx((1 + 2 / 3) / 3)
    assert map_at_k(five, relevance, threshold=2) == pytest.approx(1 / 3)
    metrics = ltr_metrics(five, relevance, k=3)
    assert metrics["map"] == pytest.approx((1 + 2 / 3) / 3) and metrics["mrr"] == 1.0


def test_binary_ndcg_equals_the_recommender_metric_without_ties():
    rng = np.random.default_rng(0)
    scores = rng.standard_normal((20, 12))
    labels = (rng.random((20, 12)) < 0.25).astype(np.float64)
    labels[0] = 0.0                                                 # left out by ndcg_at_k: NaN there
    ours = ndcg(scores, labels, k=5, per_query=True)
    theirs = ndcg_at_k(scores, labels.astype(bool), k=5, per_user=True)
    np.testing.assert_allclose(ours[1:], theirs[1:], rtol=1e-12)
    assert ours[0] == 1.0 and np.isnan(theirs[0])


@pytest.mark.parametrize("metric", [dcg, ndcg, mrr, err, map_at_k, precision_at_k])
def test_errors_name_the_problem(metric):
    with pytest.raises(ShapeError, match=f"{metric.__name__}: scores and labels must have the same shape"):
        metric(np.zeros((2, 3)), np.zeros((2, 4)), k=2)
    with pytest.raises(ValueError, match=r"labels must be >= 0 \(or -1 for padding\); got -3.0 at \(0, 1\)"):
        metric(np.zeros((2, 3)), np.array([[0.0, -3.0, 1.0], [0, 0, 0]]), k=2)
    for k in (0, -2):
        with pytest.raises(ValueError, match=f"{metric.__name__}: k must be an int >= 1"):
            metric(np.zeros(3), np.zeros(3), k=k)
    with pytest.raises(ValueError, match="scores hold NaN"):
        metric(np.array([0.0, np.nan]), np.zeros(2), k=1)


def test_err_needs_the_top_grade():
    with pytest.raises(ValueError, match="exceeds max_label=4"):
        err(np.zeros(2), np.array([5.0, 0.0]))
