"""precision@1, R-precision, MAP@R, NMI and AMI against hand computation and brute-force loops."""

import math

import numpy as np
import pytest
from tests.helpers import randn

from lamina.analysis import cluster_scores, embedding_accuracy, kmeans, mean_average_precision_at_r, r_precision
from lamina.errors import ShapeError


def test_r_precision_and_map_at_r_by_hand():
    queries = np.array([0, 1, 2])
    retrieved = np.array([[0, 1, 0, 0],      # R = 3: rel 1 0 1 -> RP 2/3, MAP (1 + 2/3) / 3
                          [2, 1, 1, 1],      # R = 2: rel 0 1   -> RP 1/2, MAP (1/2) / 2
                          [0, 1, 0, 1]])     # R = 0: left out
    r = np.array([3, 2, 0])
    assert math.isclose(r_precision(queries, retrieved, r), (2 / 3 + 1 / 2) / 2)
    assert math.isclose(mean_average_precision_at_r(queries, retrieved, r), ((1 + 2 / 3) / 3 + 1 / 4) / 2)


def test_map_at_r_rewards_early_hits_where_r_precision_does_not():
    queries = np.array([5, 5])
    early, late = np.array([[5, 5, 7, 7]]), np.array([[7, 7, 5, 5]])
    assert r_precision(queries[:1], early, 4) == r_precision(queries[:1], late, 4) == 0.5
    assert math.isclose(mean_average_precision_at_r(queries[:1], early, 4), (1 + 1) / 4)
    assert math.isclose(mean_average_precision_at_r(queries[:1], late, 4), (1 / 3 + 2 / 4) / 4)


def test_hand_made_embeddings():
    """Points on a line; each query's neighbours (itself left out), R and the scores by hand."""
    x = np.array([[0.0], [1.0], [2.2], [3.0], [10.0]])
    y = np.array([0, 0, 1, 1, 1])
    # neighbours' labels: q0 [0, 1], q1 [0, 1], q2 [1, 0], q3 [1, 0], q4 [1, 1]
    # R: 1, 1, 2, 2, 2
    scores = embedding_accuracy(x, y, include=("precision_at_1", "r_precision", "mean_average_precision_at_r"))
    assert math.isclose(scores["precision_at_1"], 1.0)
    assert math.isclose(scores["r_precision"], (1 + 1 + 0.5 + 0.5 + 1) / 5)
    assert math.isclose(scores["mean_average_precision_at_r"], (1 + 1 + 0.5 + 0.5 + 1) / 5)


def brute_force(query, q_labels, reference, r_labels, same_set):
    p1, rp, map_r = [], [], []
    for i, (q, label) in enumerate(zip(query, q_labels)):
        d = np.linalg.norm(reference - q, axis=1)
        order = [j for j in sorted(range(len(reference)), key=lambda j: (d[j], j)) if not (same_set and j == i)]
        r = sum(1 for j in order if r_labels[j] == label)
        rel = [r_labels[j] == label for j in order]
        if r == 0:
            continue
        p1.append(rel[0])
        rp.append(sum(rel[:r]) / r)
        map_r.append(sum(sum(rel[:k + 1]) / (k + 1) for k in range(r) if rel[k]) / r)
    return np.mean(p1), np.mean(rp), np.mean(map_r)


@pytest.mark.parametrize("separate_reference", [False, True])
def test_matches_brute_force(separate_reference):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 30)
    x = randn(30, 3, seed=1) + y[:, None] * 0.7
    if separate_reference:
        ref_y = np.append(rng.integers(0, 4, 25), 9)
        ref = randn(26, 3, seed=2) + ref_y[:, None] * 0.7
        y[0] = 7                                   # a query without any relevant reference
        scores = embedding_accuracy(x, y, ref, ref_y, include=("precision_at_1", "r_precision",
                                                               "mean_average_precision_at_r"))
        expected = brute_force(x, y, ref, ref_y, False)
    else:
        scores = embedding_accuracy(x, y, include=("precision_at_1", "r_precision", "mean_average_precision_at_r"))
        expected = brute_force(x, y, x, y, True)
    got = (scores["precision_at_1"], scores["r_precision"], scores["mean_average_precision_at_r"])
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_cluster_scores():
    y = np.repeat(np.arange(3), 10)
    separated = randn(30, 2, seed=0, scale=0.1) + np.array([[0, 0], [5, 0], [0, 5]])[y]
    assert cluster_scores(separated, y) == pytest.approx((1.0, 1.0))
    nmi, ami = cluster_scores(randn(30, 2, seed=3), y)
    assert nmi < 0.5 and ami < 0.3
    scores = embedding_accuracy(separated, y, include=("nmi", "ami"))
    assert scores == pytest.approx({"nmi": 1.0, "ami": 1.0})


def test_kmeans_ends_at_a_fixed_point_of_lloyds_step():
    x = randn(60, 3, seed=4)
    clusters = kmeans(x, 4, n_init=3)
    centres = np.array([x[clusters == j].mean(axis=0) for j in range(4)])
    nearest = ((x[:, None, :] - centres[None]) ** 2).sum(-1).argmin(axis=1)
    np.testing.assert_array_equal(nearest, clusters)


def test_errors():
    with pytest.raises(ShapeError, match="retrieve at least max R"):
        r_precision(np.array([0]), np.array([[0, 0]]), 3)
    with pytest.raises(ValueError, match="no query has a relevant item"):
        mean_average_precision_at_r(np.array([0]), np.array([[1]]), 0)
    with pytest.raises(ValueError, match="unknown metrics"):
        embedding_accuracy(randn(4, 2), np.arange(4), include=("recall",))
    with pytest.raises(ShapeError, match=r"query_labels must have shape \(4,\)"):
        embedding_accuracy(randn(4, 2), np.arange(3))
    with pytest.raises(ValueError, match="give reference and reference_labels together"):
        embedding_accuracy(randn(4, 2), np.arange(4), reference=randn(4, 2))
