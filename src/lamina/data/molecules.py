"""Point sets as graphs, and a synthetic molecule-like regression set with a rotation-invariant
target, for equivariant networks (EGNN, SchNet).

``radius_graph`` links every pair of distinct points of the same graph closer than r (both
directions, PyTorch Geometric's edge layout: row 0 sources, row 1 targets).

``spring_molecules`` draws point sets of ``num_atoms`` atoms of ``num_types`` species in a box
and gives each the energy of harmonic springs between all pairs:

    E = sum_{i<j} k_{z_i z_j} (d_ij - r0)^2 / 2,       F_i = -dE/dx_i

with k symmetric per species pair. E depends on distances only: invariant under rotations,
reflections, translations and permutations of the atoms; the forces rotate with the points.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lamina.errors import ShapeError

__all__ = ["SpringMolecules", "batch_point_sets", "radius_graph", "spring_molecules"]


def radius_graph(pos, r: float, batch=None, loop: bool = False) -> np.ndarray:
    """(2, E) int64 edges j -> i between the points of ``pos`` (N, D) of the same graph
    (``batch`` (N,), None: one graph) with ||pos_i - pos_j|| < r; self-loops only with ``loop``.
    All N^2 distances are formed at once: meant for small molecules and batches of them."""
    pos = np.asarray(getattr(pos, "data", pos), dtype=np.float64)
    if pos.ndim != 2:
        raise ShapeError(f"radius_graph: pos must have shape (num_points, dims), got shape {pos.shape}")
    if not r > 0:
        raise ValueError(f"radius_graph: r must be positive, got {r!r}")
    batch = np.zeros(pos.shape[0], dtype=np.int64) if batch is None else np.asarray(batch)
    if batch.shape != (pos.shape[0],):
        raise ShapeError(f"radius_graph: batch of shape {batch.shape} must have one entry per point of pos "
                         f"of shape {pos.shape}")
    squared = ((pos[:, None, :] - pos[None, :, :]) ** 2).sum(axis=-1)
    linked = (squared < r * r) & (batch[:, None] == batch[None, :])
    if not loop:
        np.fill_diagonal(linked, False)
    target, source = np.nonzero(linked)
    return np.stack([source, target]).astype(np.int64)


@dataclass
class SpringMolecules:
    """G point sets of n atoms: ``positions`` (G, n, D), ``types`` (G, n) ints, ``energies``
    (G,) and ``forces`` (G, n, D) = -dE/dx; ``stiffness`` (T, T) the spring constants."""

    positions: np.ndarray
    types: np.ndarray
    energies: np.ndarray
    forces: np.ndarray
    stiffness: np.ndarray

    def __len__(self) -> int:
        return self.positions.shape[0]


def spring_energy_and_forces(positions: np.ndarray, types: np.ndarray, stiffness: np.ndarray,
                             rest_length: float) -> tuple[np.ndarray, np.ndarray]:
    """Energies (G,) and forces (G, n, D) of harmonic springs between all pairs (module docstring)."""
    diff = positions[:, :, None, :] - positions[:, None, :, :]              # x_i - x_j
    d = np.sqrt((diff ** 2).sum(axis=-1))
    k = stiffness[types[:, :, None], types[:, None, :]]
    n = positions.shape[1]
    off_diagonal = ~np.eye(n, dtype=bool)
    stretch = np.where(off_diagonal, d - rest_length, 0.0)
    energies = 0.25 * (k * stretch ** 2).sum(axis=(1, 2))                 # each pair counted twice
    unit = diff / np.where(off_diagonal, d, 1.0)[..., None]
    forces = -(k * stretch)[..., None] * unit
    return energies, forces.sum(axis=2)


def spring_molecules(num_graphs: int, num_atoms: int = 6, num_types: int = 3, dims: int = 3, box: float = 2.0,
                     rest_length: float = 1.0, seed: int = 0) -> SpringMolecules:
    """A seeded :class:`SpringMolecules` set: atoms uniform in [0, box]^dims, random species,
    spring constants uniform in [0.5, 2] per species pair."""
    rng = np.random.default_rng(seed)
    upper = rng.uniform(0.5, 2.0, (num_types, num_types))
    stiffness = np.triu(upper) + np.triu(upper, 1).T
    positions = rng.uniform(0.0, box, (num_graphs, num_atoms, dims))
    types = rng.integers(0, num_types, (num_graphs, num_atoms))
    energies, forces = spring_energy_and_forces(positions, types, stiffness, rest_length)
    return SpringMolecules(positions, types, energies, forces, stiffness)


def batch_point_sets(positions, r: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """G point sets (G, n, D) as one disconnected graph: (pos (G n, D), batch (G n,), radius-graph
    edges (2, E))."""
    positions = np.asarray(positions)
    if positions.ndim != 3:
        raise ShapeError(f"batch_point_sets: positions must have shape (graphs, points, dims), got shape "
                         f"{positions.shape}")
    g, n, dims = positions.shape
    pos = positions.reshape(g * n, dims)
    batch = np.repeat(np.arange(g), n)
    return pos, batch, radius_graph(pos, r, batch)
