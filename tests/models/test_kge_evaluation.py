"""Filtered link-prediction ranks against a brute-force count, tie conventions, and the metrics."""

from __future__ import annotations

import numpy as np
import pytest

from helpers import assert_close
from lamina.models import DistMult, evaluate_link_prediction, filtered_ranks, link_prediction_metrics
from lamina.train import mean_reciprocal_rank

N_ENTITIES = 9


def _tied_model():
    """DistMult with small integer embeddings: many candidates share a score."""
    model = DistMult(N_ENTITIES, 2, 3)
    rng = np.random.default_rng(0)
    model.entities.weight.data[...] = rng.integers(-1, 2, size=(N_ENTITIES, 3))
    model.relations.weight.data[...] = rng.integers(0, 2, size=(2, 3))
    return model


def _graph():
    rng = np.random.default_rng(1)
    triples = np.unique(np.stack([rng.integers(0, N_ENTITIES, 60), rng.integers(0, 2, 60),
                                  rng.integers(0, N_ENTITIES, 60)], axis=1), axis=0)
    return triples[:40], triples[40:]


def _brute_force_ranks(model, test, known, ties):
    """Score each candidate triple one by one; count better and tied candidates that are not
    other known triples."""
    known_set = {tuple(row) for part in known for row in part.tolist()}
    ranks = {"tail": [], "head": []}
    for h, r, t in test.tolist():
        for side in ("tail", "head"):
            true = float(model(np.array([h]), np.array([r]), np.array([t])).numpy()[0])
            better = tied = 0
            for e in range(N_ENTITIES):
                candidate = (h, r, e) if side == "tail" else (e, r, t)
                if candidate == (h, r, t) or candidate in known_set:
                    continue
                score = float(model(*(np.array([i]) for i in candidate)).numpy()[0])
                better += score > true
                tied += score == true
            ranks[side].append({"optimistic": 1 + better, "pessimistic": 1 + better + tied,
                                "realistic": 1 + better + tied / 2}[ties])
    return np.array(ranks["tail"] + ranks["head"], dtype=np.float64)


@pytest.mark.parametrize("ties", ["realistic", "optimistic", "pessimistic"])
@pytest.mark.parametrize("filtered", [True, False])
def test_filtered_ranks_equal_brute_force(ties, filtered):
    model = _tied_model()
    train, test = _graph()
    known = [train, test] if filtered else []
    ranks = filtered_ranks(model, test, known, side="both", ties=ties, batch_size=7)
    expected = _brute_force_ranks(model, test, known, ties)
    assert np.array_equal(ranks, expected)
    assert np.array_equal(filtered_ranks(model, test, known, side="tail", ties=ties), expected[:len(test)])
    assert np.array_equal(filtered_ranks(model, test, known, side="head", ties=ties), expected[len(test):])


def test_ties_matter_and_filtering_only_helps():
    model = _tied_model()
    train, test = _graph()
    optimistic = filtered_ranks(model, test, [train, test], ties="optimistic")
    pessimistic = filtered_ranks(model, test, [train, test], ties="pessimistic")
    assert (optimistic < pessimistic).any()
    assert (filtered_ranks(model, test, [train, test]) <= filtered_ranks(model, test, [])).all()


def test_pessimistic_mrr_equals_the_recommender_metric():
    model = _tied_model()
    train, test = _graph()
    scores = model.score_t(test[:, 0], test[:, 1]).numpy()
    relevant = np.zeros(scores.shape, dtype=bool)
    relevant[np.arange(len(test)), test[:, 2]] = True
    exclude = np.zeros_like(relevant)
    for row, (h, r, t) in enumerate(test.tolist()):
        for other in np.concatenate([train, test]).tolist():
            if other[0] == h and other[1] == r and other[2] != t:
                exclude[row, other[2]] = True
    ranks = filtered_ranks(model, test, [train, test], side="tail", ties="pessimistic")
    assert_close(np.mean(1 / ranks), mean_reciprocal_rank(scores, relevant, exclude), 1e-12, "MRR")


def test_constant_model_gets_the_middle_rank():
    model = DistMult(N_ENTITIES, 2, 3)
    model.entities.weight.data[...] = 0.0
    test = np.array([[0, 0, 1], [4, 1, 8]])
    assert np.array_equal(filtered_ranks(model, test), np.full(4, (1 + N_ENTITIES) / 2))


def test_metrics_of_known_ranks():
    ranks = np.array([1.0, 2.5, 4.0, 12.0])
    metrics = link_prediction_metrics(ranks, ks=(1, 3, 10))
    assert_close(metrics["mrr"], (1 + 1 / 2.5 + 1 / 4 + 1 / 12) / 4, 1e-14, "MRR")
    assert metrics["mean_rank"] == pytest.approx(19.5 / 4)
    assert (metrics["hits@1"], metrics["hits@3"], metrics["hits@10"]) == (0.25, 0.5, 0.75)
    with pytest.raises(ValueError, match="link_prediction_metrics: expected a non-empty 1-D array of ranks >= 1"):
        link_prediction_metrics(np.array([0.0, 2.0]))


def test_errors():
    model = _tied_model()
    with pytest.raises(ValueError, match=r"filtered_ranks: tail id 9 is out of range"):
        filtered_ranks(model, np.array([[0, 0, 9]]))
    with pytest.raises(ValueError, match="filtered_ranks: side must be"):
        filtered_ranks(model, np.array([[0, 0, 1]]), side="tails")
    with pytest.raises(ValueError, match="ties must be one of"):
        evaluate_link_prediction(model, np.array([[0, 0, 1]]), ties="average")
