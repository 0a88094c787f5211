"""Poincaré embeddings (Nickel and Kiela 2017): the tree helpers, the metrics on hand-made
distances, and 2-D hyperbolic embeddings of a tree beating 2-D Euclidean ones; the README's
example runs."""


import numpy as np
import pytest

from helpers import run_readme_section
from lamina.models import (
    balanced_tree,
    reconstruction_metrics,
    train_poincare_embeddings,
    transitive_closure,
)


def test_tree_and_closure():
    edges = balanced_tree(2, 2)                       # 0 -> 1, 2; 1 -> 3, 4; 2 -> 5, 6
    assert edges.tolist() == [[1, 0], [2, 0], [3, 1], [4, 1], [5, 2], [6, 2]]
    closure = transitive_closure(edges)
    assert len(closure) == 2 * 1 + 4 * 2
    assert {(3, 1), (3, 0), (6, 2), (6, 0)} <= set(map(tuple, closure.tolist()))
    with pytest.raises(ValueError, match="cycle"):
        transitive_closure([[1, 0], [0, 1]])
    with pytest.raises(ValueError, match="two parents"):
        transitive_closure([[2, 0], [2, 1]])


def test_metrics_on_hand_made_distances():
    pairs = np.array([[1, 0], [2, 0]])                # star: 0 related to 1 and 2, not 3
    perfect = np.array([[0, 1, 1, 5], [1, 0, 3, 6], [1, 3, 0, 6], [5, 6, 6, 0]], dtype=float)
    assert reconstruction_metrics(perfect, pairs) == (1.0, 1.0)
    # node 2 moved beyond node 3 as seen from 0 (d = 5.5 > 5): the pairs (0, 2) and (2, 0)
    # rank 2 (node 3, resp. node 1, comes first); APs: node 0 (1 + 2/3) / 2, node 1 1, node 2 1/2
    worse = perfect.copy()
    worse[0, 2] = worse[2, 0] = 5.5
    mean_rank, mean_ap = reconstruction_metrics(worse, pairs)
    assert mean_rank == pytest.approx((1 + 2 + 1 + 2) / 4)
    assert mean_ap == pytest.approx(((1 + 2 / 3) / 2 + 1 + 1 / 2) / 3)


def test_poincare_beats_euclidean_in_two_dimensions():
    closure = transitive_closure(balanced_tree(3, 3))
    scores = {}
    for geometry in ("poincare", "euclidean"):
        result = train_poincare_embeddings(closure, dim=2, epochs=80, geometry=geometry, seed=1)
        assert result.losses[-1] < result.losses[0]
        scores[geometry] = reconstruction_metrics(result.distances(), closure)
        if geometry == "poincare":
            assert np.linalg.norm(result.embeddings, axis=1).max() < 1.0
    (rank_h, map_h), (rank_e, map_e) = scores["poincare"], scores["euclidean"]
    assert rank_h < 1.5 and map_h > 0.9, scores
    assert rank_e > rank_h + 0.8 and map_e < map_h - 0.15, scores


def test_bad_arguments():
    with pytest.raises(ValueError, match="geometry"):
        train_poincare_embeddings([[1, 0]], geometry="spherical")
    with pytest.raises(ValueError, match="node ids"):
        train_poincare_embeddings([[1, 0]], num_nodes=1)


def test_readme_example_runs():
    printed, _ = run_readme_section("Hyperbolic embeddings and Riemannian optimisation")
    lines = [line.split() for line in printed.splitlines()]
    (_, rank_h, map_h), (_, rank_e, map_e) = lines
    assert float(rank_h) < float(rank_e) and float(map_h) > float(map_e)
