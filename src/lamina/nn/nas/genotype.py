"""A discrete DARTS cell (a genotype) and its derivation from the softmax weights.

A genotype lists, for each intermediate node in turn, its two incoming edges as
(operation, input node) pairs; nodes 0 and 1 are the cell inputs, node 2 + i the i-th
intermediate node. DARTS keeps for node i the two predecessors j with the strongest
non-'none' weight max_{o != none} w_(j,i),o, and on each the operation of that weight.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy

from lamina.nn.nas.operations import PRIMITIVES

__all__ = ["Genotype", "derive_genotype", "parse_cell"]


class Genotype(NamedTuple):
    """The normal and reduction cells: (operation, input node) pairs, two per node, and the
    nodes concatenated into the cell output."""

    normal: list
    normal_concat: list
    reduce: list
    reduce_concat: list


def parse_cell(weights, steps: int, primitives=PRIMITIVES, edges_per_node: int = 2) -> list[tuple[str, int]]:
    """The discrete cell of ``weights`` (edges x operations, rows in DARTS's order: node 0's
    2 inputs, node 1's 3, ...): per node the ``edges_per_node`` predecessors with the largest
    non-'none' weight, strongest first (ties to the earlier input), each with its strongest
    non-'none' operation."""
    weights = numpy.asarray(weights, dtype=numpy.float64)
    primitives = tuple(primitives)
    expected = (sum(2 + i for i in range(steps)), len(primitives))
    if weights.shape != expected:
        raise ValueError(f"parse_cell: weights of shape {weights.shape} do not fit steps={steps} and "
                         f"{len(primitives)} operations; expected {expected}")
    usable = numpy.array([p != "none" for p in primitives])
    if not usable.any():
        raise ValueError(f"parse_cell: no operation but 'none' among {list(primitives)}")
    masked = numpy.where(usable, weights, -numpy.inf)
    gene, start = [], 0
    for i in range(steps):
        rows = masked[start:start + 2 + i]
        strength = rows.max(axis=1)
        chosen = numpy.argsort(-strength, kind="stable")[:edges_per_node]
        for j in chosen:
            gene.append((primitives[int(numpy.argmax(rows[j]))], int(j)))
        start += 2 + i
    return gene


def derive_genotype(weights_normal, weights_reduce, steps: int = 4, multiplier: int = 4,
                    primitives=PRIMITIVES) -> Genotype:
    """The genotype of a search network's softmax weights; both cells concatenate the last
    ``multiplier`` nodes."""
    concat = list(range(2 + steps - multiplier, 2 + steps))
    return Genotype(parse_cell(weights_normal, steps, primitives), concat,
                    parse_cell(weights_reduce, steps, primitives), concat)
