"""A layered drawing of a directed acyclic graph (the Sugiyama method, simplified).

1. Layers: a node with no incoming edge (a source) would sit in layer 0 and every other
   node one layer below the deepest of its predecessors (the longest path from the
   sources), so every edge points down. Sources are then moved down to just above their
   first consumer, which keeps the edges pointing down and makes them shorter (a bias used
   only by the last layer is drawn beside it, not at the top).
2. Long edges: an edge spanning several layers is cut into one-layer steps through
   invisible waypoints, so the ordering step can keep it straight.
3. Order within the layers: a few sweeps down and up the layers, each placing a node at
   the barycentre (mean position) of its neighbours in the layer before it; the order with
   the fewest edge crossings is kept.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

SWEEPS = 8


@dataclass(frozen=True)
class Layout:
    """Where each node goes: ``layer[key]`` (0 at the top) and ``x[key]`` (its position in
    the drawing, centred on 0); ``routes[i]`` the points edge ``i`` passes through, from its
    start to its end, as (x, layer) pairs; ``crossings`` the edge crossings that remain."""

    layer: dict[str, int]
    x: dict[str, float]
    routes: list[list[tuple[float, int]]]
    crossings: int


def layered_layout(keys: list[str], edges: list[tuple[str, str]], sweeps: int = SWEEPS) -> Layout:
    """The layout of the DAG with nodes ``keys`` and ``edges`` (from, to): see the module's docstring."""
    layer = _layers(keys, edges)
    rows, steps, chains = _split_long_edges(keys, edges, layer)
    rows = _order(rows, steps, sweeps)
    position = {key: i - (len(row) - 1) / 2 for row in rows for i, key in enumerate(row)}
    routes = [[(position[k], depth) for k, depth in chain] for chain in chains]
    return Layout({k: layer[k] for k in keys}, {k: position[k] for k in keys}, routes,
                  _total_crossings(rows, steps))


def _layers(keys: list[str], edges: list[tuple[str, str]]) -> dict[str, int]:
    predecessors, successors = defaultdict(list), defaultdict(list)
    for source, target in edges:
        predecessors[target].append(source)
        successors[source].append(target)
    layer: dict[str, int] = {}
    for key in _topological(keys, predecessors, successors):
        layer[key] = 1 + max((layer[p] for p in predecessors[key]), default=-1)
    for key in keys:
        if not predecessors[key] and successors[key]:
            layer[key] = min(layer[s] for s in successors[key]) - 1
    return layer


def _topological(keys, predecessors, successors) -> list[str]:
    waiting = {key: len(predecessors[key]) for key in keys}
    ready = [key for key in keys if waiting[key] == 0]
    order = []
    while ready:
        key = ready.pop()
        order.append(key)
        for s in successors[key]:
            waiting[s] -= 1
            if waiting[s] == 0:
                ready.append(s)
    if len(order) != len(keys):
        raise ValueError("layered_layout: the graph has a cycle")
    return order


def _split_long_edges(keys, edges, layer):
    """The nodes of each layer (waypoints included), the one-layer steps between them, and
    for each edge the chain of (key, layer) it passes through."""
    depth = max(layer.values(), default=0)
    rows: list[list[str]] = [[] for _ in range(depth + 1)]
    for key in keys:
        rows[layer[key]].append(key)
    steps: list[tuple[str, str]] = []
    chains = []
    for i, (source, target) in enumerate(edges):
        chain = [(source, layer[source])]
        for d in range(layer[source] + 1, layer[target]):
            waypoint = f"\0{i}:{d}"
            rows[d].append(waypoint)
            chain.append((waypoint, d))
        chain.append((target, layer[target]))
        steps += [(a, b) for (a, _), (b, _) in zip(chain, chain[1:])]
        chains.append(chain)
    return rows, steps, chains


def _order(rows: list[list[str]], steps: list[tuple[str, str]], sweeps: int) -> list[list[str]]:
    above, below = defaultdict(list), defaultdict(list)
    for a, b in steps:
        below[a].append(b)
        above[b].append(a)
    best, fewest = [list(row) for row in rows], _total_crossings(rows, steps)
    for sweep in range(sweeps):
        downward = sweep % 2 == 0
        indices = range(1, len(rows)) if downward else range(len(rows) - 2, -1, -1)
        for i in indices:
            fixed = rows[i - 1] if downward else rows[i + 1]
            rank = {key: j for j, key in enumerate(fixed)}
            neighbours = above if downward else below
            rows[i] = _by_barycentre(rows[i], neighbours, rank)
        crossings = _total_crossings(rows, steps)
        if crossings < fewest:
            best, fewest = [list(row) for row in rows], crossings
    return best


def _by_barycentre(row: list[str], neighbours, rank: dict[str, int]) -> list[str]:
    """``row`` sorted by the mean rank of each node's neighbours in the fixed layer; a node
    with none keeps its place (sorted by its current index)."""
    def centre(item):
        index, key = item
        ranks = [rank[n] for n in neighbours[key] if n in rank]
        return (sum(ranks) / len(ranks) if ranks else index, index)

    return [key for _, key in sorted(enumerate(row), key=centre)]


def _total_crossings(rows: list[list[str]], steps: list[tuple[str, str]]) -> int:
    """Pairs of one-layer steps between the same two layers whose ends are in opposite orders."""
    where = {key: (d, i) for d, row in enumerate(rows) for i, key in enumerate(row)}
    by_layer = defaultdict(list)
    for a, b in steps:
        by_layer[where[a][0]].append((where[a][1], where[b][1]))
    total = 0
    for pairs in by_layer.values():
        for i, (a1, b1) in enumerate(pairs):
            for a2, b2 in pairs[i + 1:]:
                total += (a1 - a2) * (b1 - b2) < 0
    return total
