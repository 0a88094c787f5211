"""Miners against brute-force loops over every pair and triplet."""

import itertools

import numpy as np
import pytest
from tests.helpers import randn

import lamina
import lamina.functional as F
from lamina.errors import ShapeError
from lamina.functional.miners import DISTANCES

LABELS = np.array([0, 1, 0, 2, 1, 0, 2, 1, 2, 1])
X = randn(len(LABELS), 3, seed=0)


def loop_distance(u, v, distance):
    if distance == "cosine":
        return 1 - u @ v / (np.linalg.norm(u) * np.linalg.norm(v))
    sq = float(((u - v) ** 2).sum())
    return sq if distance == "squared_euclidean" else np.sqrt(sq)


def loop_triplets(x, y, kind, margin, distance):
    found = []
    for a, p, n in itertools.product(range(len(y)), repeat=3):
        if a == p or y[a] != y[p] or y[a] == y[n]:
            continue
        gap = loop_distance(x[a], x[n], distance) - loop_distance(x[a], x[p], distance)
        keep = {"all": gap <= margin, "hard": gap <= 0, "semihard": 0 < gap <= margin, "easy": gap > margin}[kind]
        if keep:
            found.append((a, p, n))
    return found


@pytest.mark.parametrize("distance", DISTANCES)
@pytest.mark.parametrize("kind", ["all", "hard", "semihard", "easy"])
def test_triplets_equal_brute_force(kind, distance):
    margin = 0.3 if distance == "cosine" else 0.8
    a, p, n = F.mine_triplets(lamina.tensor(X), LABELS, kind, margin=margin, distance=distance)
    expected = loop_triplets(X, LABELS, kind, margin, distance)
    assert list(zip(a.tolist(), p.tolist(), n.tolist())) == expected
    assert len(expected) > 0


def test_triplet_types_partition_the_valid_triplets():
    counts = {kind: len(F.mine_triplets(X, LABELS, kind, margin=0.5)[0]) for kind in ("hard", "semihard", "easy")}
    valid = sum(1 for a, p, n in itertools.product(range(len(LABELS)), repeat=3)
                if a != p and LABELS[a] == LABELS[p] and LABELS[a] != LABELS[n])
    assert sum(counts.values()) == valid
    assert counts["hard"] + counts["semihard"] == len(F.mine_triplets(X, LABELS, "all", margin=0.5)[0])


@pytest.mark.parametrize("distance", ["euclidean", "cosine"])
def test_pairs_equal_brute_force(distance):
    pos_margin, neg_margin = (0.2, 0.9) if distance == "cosine" else (1.0, 2.0)
    a1, p, a2, n = F.mine_pairs(X, LABELS, pos_margin, neg_margin, distance=distance)
    positives, negatives = [], []
    for i, j in itertools.product(range(len(LABELS)), repeat=2):
        d = loop_distance(X[i], X[j], distance)
        if i != j and LABELS[i] == LABELS[j] and d > pos_margin:
            positives.append((i, j))
        if LABELS[i] != LABELS[j] and d < neg_margin:
            negatives.append((i, j))
    assert list(zip(a1.tolist(), p.tolist())) == positives and positives
    assert list(zip(a2.tolist(), n.tolist())) == negatives and negatives


def test_mined_triplets_feed_the_triplet_loss():
    x = lamina.tensor(X, requires_grad=True)
    a, p, n = F.mine_triplets(x, LABELS, "semihard", margin=0.8)
    loss = F.triplet_margin_loss(x[a], x[p], x[n], margin=0.8)
    loss.backward()
    assert loss.item() > 0 and np.abs(x.grad).sum() > 0


def test_miner_errors():
    with pytest.raises(ValueError, match="type must be one of"):
        F.mine_triplets(X, LABELS, "hardest")
    with pytest.raises(ValueError, match="margin must be >= 0"):
        F.mine_triplets(X, LABELS, margin=-0.1)
    with pytest.raises(ValueError, match="distance must be one of"):
        F.mine_pairs(X, LABELS, distance="manhattan")
    with pytest.raises(ShapeError, match=r"labels must have shape \(10,\)"):
        F.mine_pairs(X, LABELS[:3])
