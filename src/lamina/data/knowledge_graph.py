"""Knowledge graphs as (head, relation, tail) id triples: a reader of the standard triples
TSV format and a synthetic graph with known structure.

The TSV format (FB15k-237, WN18RR, PyKEEN) has one fact a line, ``head<TAB>relation<TAB>tail``,
by label. :func:`read_triples` maps the labels to ids (sorted labels get 0, 1, ... as in
PyKEEN), or reuses the maps of the training file for the validation and test files.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = ["KnowledgeGraph", "read_triples", "split_triples", "synthetic_knowledge_graph", "TREE_RELATIONS"]

TREE_RELATIONS = ("parent", "child", "sibling", "grandparent")


@dataclass
class KnowledgeGraph:
    """``triples`` (B, 3) int64 ids; ``entity_to_id`` and ``relation_to_id``: label -> id."""

    triples: np.ndarray
    entity_to_id: dict[str, int]
    relation_to_id: dict[str, int]

    @property
    def n_entities(self) -> int:
        return len(self.entity_to_id)

    @property
    def n_relations(self) -> int:
        return len(self.relation_to_id)


def read_triples(path, entity_to_id: dict[str, int] | None = None,
                 relation_to_id: dict[str, int] | None = None) -> KnowledgeGraph:
    """The triples of a TSV file. Without maps, ids are given to the sorted labels; with maps
    (those of the training file), a label missing from them is an error naming the line."""
    path = Path(path)
    rows = []
    with path.open(encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            line = line.rstrip("\r\n")
            if not line.strip():
                continue
            fields = line.split("\t")
            if len(fields) != 3:
                raise ValueError(f"read_triples: {path}:{number}: expected head<TAB>relation<TAB>tail, got "
                                 f"{len(fields)} field(s): {line[:80]!r}")
            rows.append(fields)
    if entity_to_id is None:
        labels = sorted({row[0] for row in rows} | {row[2] for row in rows})
        entity_to_id = {label: i for i, label in enumerate(labels)}
    if relation_to_id is None:
        relation_to_id = {label: i for i, label in enumerate(sorted({row[1] for row in rows}))}
    triples = np.zeros((len(rows), 3), dtype=np.int64)
    for i, (head, relation, tail) in enumerate(rows):
        for column, label, table, what in ((0, head, entity_to_id, "entity"), (1, relation, relation_to_id,
                                                                                 "relation"),
                                           (2, tail, entity_to_id, "entity")):
            if label not in table:
                raise KeyError(f"read_triples: {path}: unknown {what} {label!r} in triple {i}; it is not in the "
                               f"given {what} map")
            triples[i, column] = table[label]
    return KnowledgeGraph(triples, dict(entity_to_id), dict(relation_to_id))


def synthetic_knowledge_graph(branching: int = 3, depth: int = 3) -> KnowledgeGraph:
    """A complete tree of ``branching`` children per node, ``depth`` levels below the root,
    with the relations (ids in :data:`TREE_RELATIONS` order):

        parent       child -> its parent
        child        parent -> each child              (the inverse of parent)
        sibling      between distinct children of one parent, both ways (symmetric)
        grandparent  node -> its parent's parent        (the composition parent o parent)

    Entities are labelled 'n0' (the root), 'n1', ... in breadth-first order."""
    if branching < 2 or depth < 2:
        raise ValueError(f"synthetic_knowledge_graph: need branching >= 2 and depth >= 2 (so siblings and "
                         f"grandparents exist), got branching={branching}, depth={depth}")
    n_nodes = sum(branching ** level for level in range(depth + 1))
    parent_of = {node: (node - 1) // branching for node in range(1, n_nodes)}
    parent, child, sibling, grandparent = range(4)
    triples = []
    for node, up in parent_of.items():
        triples += [(node, parent, up), (up, child, node)]
        if up in parent_of:
            triples.append((node, grandparent, parent_of[up]))
        first = up * branching + 1
        triples += [(node, sibling, other) for other in range(first, first + branching) if other != node]
    entity_to_id = {f"n{node}": node for node in range(n_nodes)}
    relation_to_id = {name: i for i, name in enumerate(TREE_RELATIONS)}
    return KnowledgeGraph(np.array(sorted(triples), dtype=np.int64), entity_to_id, relation_to_id)


def split_triples(triples, fractions=(0.8, 0.1, 0.1), seed=None) -> list[np.ndarray]:
    """The rows of ``triples`` shuffled (seeded) and cut into parts of the given fractions."""
    triples = np.asarray(triples)
    fractions = np.asarray(fractions, dtype=np.float64)
    if (fractions < 0).any() or not np.isclose(fractions.sum(), 1.0):
        raise ValueError(f"split_triples: fractions must be >= 0 and sum to 1, got {fractions.tolist()}")
    order = np.random.default_rng(seed).permutation(len(triples))
    cuts = np.round(np.cumsum(fractions)[:-1] * len(triples)).astype(int)
    return [triples[part] for part in np.split(order, cuts)]
