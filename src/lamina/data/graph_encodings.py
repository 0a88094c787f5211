"""Positional and structural node encodings for graph transformers (GPS, Rampasek et al. 2022).

- :func:`laplacian_pe`: the eigenvectors of the ``k`` smallest non-trivial eigenvalues of the
  graph Laplacian L = I - D^-1/2 A D^-1/2 ('sym') or L = D - A (None), A symmetrised. An
  eigenvector's sign is arbitrary, so training flips each column's sign at random
  (:func:`random_sign_flip`).
- :func:`random_walk_pe`: RWSE, node i's return probabilities (M^k)_ii for k = 1..walk_length,
  M = D^-1 A the random-walk matrix (row i: the out-edges of i, a row of zeros for a node
  without out-edges).
- :func:`shortest_path_distances`: hop counts along the edges, Graphormer's spatial encoding
  (Ying et al. 2021).
"""

from __future__ import annotations

import numbers

import numpy as np

from lamina.data.graphs import check_edge_index

__all__ = ["laplacian_pe", "random_sign_flip", "random_walk_pe", "shortest_path_distances"]


def _positive(value, name: str, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 1:
        raise ValueError(f"{who}: {name} must be a positive integer, got {value!r}")
    return int(value)


def _adjacency(edge_index, num_nodes: int, who: str) -> np.ndarray:
    edge_index = check_edge_index(edge_index, num_nodes, who)
    a = np.zeros((num_nodes, num_nodes))
    np.add.at(a, (edge_index[0], edge_index[1]), 1.0)          # a[j, i]: the edges j -> i
    return a


def laplacian_pe(edge_index, num_nodes: int, k: int, normalization: str | None = "sym") -> np.ndarray:
    """(num_nodes, k) eigenvectors (unit norm, columns) of the k smallest eigenvalues after the
    first of the Laplacian of the undirected graph; k must be below num_nodes."""
    who = "laplacian_pe"
    k = _positive(k, "k", who)
    if k >= num_nodes:
        raise ValueError(f"{who}: k = {k} eigenvectors need a graph of more than k nodes, got {num_nodes}")
    if normalization not in ("sym", None):
        raise ValueError(f"{who}: normalization must be 'sym' or None, got {normalization!r}")
    a = _adjacency(edge_index, num_nodes, who)
    a = np.maximum(a, a.T)
    np.fill_diagonal(a, 0.0)
    deg = a.sum(axis=1)
    if normalization == "sym":
        inv_sqrt = np.where(deg > 0, 1.0 / np.sqrt(np.where(deg > 0, deg, 1.0)), 0.0)
        laplacian = np.eye(num_nodes) - inv_sqrt[:, None] * a * inv_sqrt[None, :]
    else:
        laplacian = np.diag(deg) - a
    _, vectors = np.linalg.eigh(laplacian)
    return vectors[:, 1:k + 1]


def random_sign_flip(pe: np.ndarray, rng: np.random.Generator | int | None = None) -> np.ndarray:
    """``pe`` with every column multiplied by an independent random sign."""
    rng = rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)
    pe = np.asarray(pe)
    return pe * rng.choice([-1.0, 1.0], size=pe.shape[-1]).astype(pe.dtype)


def random_walk_pe(edge_index, num_nodes: int, walk_length: int) -> np.ndarray:
    """(num_nodes, walk_length) return probabilities diag(M^k), k = 1..walk_length."""
    who = "random_walk_pe"
    walk_length = _positive(walk_length, "walk_length", who)
    a = _adjacency(edge_index, num_nodes, who)
    out_degree = a.sum(axis=1, keepdims=True)
    walk = np.divide(a, out_degree, out=np.zeros_like(a), where=out_degree > 0)
    power, columns = np.eye(num_nodes), []
    for _ in range(walk_length):
        power = power @ walk
        columns.append(np.diag(power).copy())
    return np.stack(columns, axis=1)


def shortest_path_distances(edge_index, num_nodes: int) -> np.ndarray:
    """(num_nodes, num_nodes) int64: entry [i, j] the fewest edges on a path from i to j
    following the edges' directions (0 on the diagonal, -1 when j cannot be reached);
    breadth-first from all nodes at once on the dense adjacency, for small graphs."""
    a = _adjacency(edge_index, num_nodes, "shortest_path_distances") > 0
    distance = np.where(np.eye(num_nodes, dtype=bool), 0, -1).astype(np.int64)
    frontier, hops = np.eye(num_nodes, dtype=bool), 0
    while frontier.any():
        hops += 1
        frontier = (frontier.astype(np.int64) @ a.astype(np.int64) > 0) & (distance < 0)
        distance[frontier] = hops
    return distance
