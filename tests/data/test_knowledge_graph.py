"""The triples TSV reader and the synthetic tree knowledge graph."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.data import TREE_RELATIONS, read_triples, split_triples, synthetic_knowledge_graph


def _facts(kg, relation: str) -> set[tuple[int, int]]:
    rows = kg.triples[kg.triples[:, 1] == kg.relation_to_id[relation]]
    return {(h, t) for h, _, t in rows.tolist()}


def test_synthetic_graph_structure():
    kg = synthetic_knowledge_graph(branching=3, depth=3)
    assert kg.n_entities == 1 + 3 + 9 + 27 and kg.n_relations == len(TREE_RELATIONS)
    parent, child = _facts(kg, "parent"), _facts(kg, "child")
    sibling, grandparent = _facts(kg, "sibling"), _facts(kg, "grandparent")
    assert len(parent) == kg.n_entities - 1
    assert child == {(t, h) for h, t in parent}                                      # inverse
    assert sibling == {(t, h) for h, t in sibling} and len(sibling) == 13 * 3 * 2    # symmetric, 6 per family
    up = dict(parent)
    assert grandparent == {(a, up[b]) for a, b in parent if b in up}                 # composition
    assert len(np.unique(kg.triples, axis=0)) == len(kg.triples)
    with pytest.raises(ValueError, match="synthetic_knowledge_graph: need branching >= 2"):
        synthetic_knowledge_graph(branching=1)


def test_split_is_a_seeded_partition():
    triples = synthetic_knowledge_graph(2, 3).triples
    parts = split_triples(triples, (0.8, 0.1, 0.1), seed=3)
    assert [len(p) for p in parts] == [round(0.8 * len(triples)), round(0.9 * len(triples)) - round(0.8 * len(triples)),
                                       len(triples) - round(0.9 * len(triples))]
    assert np.array_equal(np.sort(np.concatenate(parts), axis=0), np.sort(triples, axis=0))
    assert all(np.array_equal(a, b) for a, b in zip(parts, split_triples(triples, (0.8, 0.1, 0.1), seed=3)))
    with pytest.raises(ValueError, match="split_triples: fractions"):
        split_triples(triples, (0.5, 0.2))


def test_read_triples_maps_sorted_labels_and_reuses_maps(tmp_path):
    train = tmp_path / "train.txt"
    train.write_text("paris\tcapital_of\tfrance\nberlin\tcapital_of\tgermany\n\nfrance\tborders\tgermany\n")
    kg = read_triples(train)
    assert kg.entity_to_id == {"berlin": 0, "france": 1, "germany": 2, "paris": 3}
    assert kg.relation_to_id == {"borders": 0, "capital_of": 1}
    assert kg.triples.tolist() == [[3, 1, 1], [0, 1, 2], [1, 0, 2]]
    test = tmp_path / "test.txt"
    test.write_text("germany\tborders\tfrance\n")
    assert read_triples(test, kg.entity_to_id, kg.relation_to_id).triples.tolist() == [[2, 0, 1]]
    test.write_text("rome\tcapital_of\titaly\n")
    with pytest.raises(KeyError, match="unknown entity 'rome'"):
        read_triples(test, kg.entity_to_id, kg.relation_to_id)
    test.write_text("a\tb\n")
    with pytest.raises(ValueError, match=r"test.txt:1: expected head<TAB>relation<TAB>tail, got 2 field"):
        read_triples(test)
