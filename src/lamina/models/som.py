"""Kohonen's self-organizing map (Kohonen 1982; the update and decays as in MiniSom).

A grid of rows x cols units, each with a weight vector w_u (dim). For an input x, the winner
(best-matching unit) is c = argmin_u |x - w_u|, and every unit moves towards x by its
neighbourhood to the winner on the grid (grid distance d = |r_u - r_c| of unit positions):

    w_u <- w_u + lr(t) h(d, sigma(t)) (x - w_u)

    gaussian:     h = exp(-d^2 / (2 sigma^2))
    bubble:       h = 1 if d <= sigma else 0
    mexican_hat:  h = (1 - d^2 / sigma^2) exp(-d^2 / (2 sigma^2))

Both rates decay with the step t of T: sigma(t) = sigma / (1 + 2 t / T), lr(t) = lr / (1 + 2 t / T).
Unit positions: (row, col) on a 'rectangular' grid; on a 'hexagonal' one odd rows shift by 1/2
and rows lie sqrt(3)/2 apart, so each unit has six neighbours at distance 1.

Quality: the quantization error is the mean |x - w_c|; the topographic error the fraction of
inputs whose two best units are not grid neighbours (rectangular: the 8 around; hexagonal: the
6 around); :meth:`SelfOrganizingMap.distance_map` is the U-matrix (mean weight distance of each
unit to its grid neighbours, scaled to a maximum of 1).
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina.errors import ShapeError
from lamina.nn.layer import positive_int

__all__ = ["SelfOrganizingMap"]

NEIGHBORHOODS = ("gaussian", "bubble", "mexican_hat")
TOPOLOGIES = ("rectangular", "hexagonal")
_NEIGHBOUR_DISTANCE = {"rectangular": math.sqrt(2) + 1e-6, "hexagonal": 1 + 1e-6}


def neighborhood(distance: numpy.ndarray, sigma: float, kind: str) -> numpy.ndarray:
    """h(d, sigma) of the module docstring for grid distances ``distance``."""
    squared = distance ** 2
    if kind == "gaussian":
        return numpy.exp(-squared / (2 * sigma ** 2))
    if kind == "bubble":
        return (distance <= sigma).astype(numpy.float64)
    return (1 - squared / sigma ** 2) * numpy.exp(-squared / (2 * sigma ** 2))


class SelfOrganizingMap:
    """A rows x cols self-organizing map of ``dim``-dimensional weights (module docstring).

    ``fit(x, num_iterations)`` presents one input per step (in shuffled passes over ``x``);
    ``winner(x)`` gives the (row, col) of the best unit of each input. Attributes ``weights``
    (rows, cols, dim) and ``positions`` (rows, cols, 2), the grid coordinates.

    Example::

        som = SelfOrganizingMap(10, 10, 64, sigma=3.0, lr=0.5, seed=0).fit(x, 5000)
        som.quantization_error(x), som.topographic_error(x), som.distance_map()
    """

    def __init__(self, rows: int, cols: int, dim: int, sigma: float = 1.0, lr: float = 0.5,
                 neighborhood: str = "gaussian", topology: str = "rectangular", seed: int | None = None):
        self.rows = positive_int(rows, "SelfOrganizingMap: rows")
        self.cols = positive_int(cols, "SelfOrganizingMap: cols")
        self.dim = positive_int(dim, "SelfOrganizingMap: dim")
        for value, what in ((sigma, "sigma"), (lr, "lr")):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
                raise ValueError(f"SelfOrganizingMap: {what} must be a positive number, got {value!r}")
        if neighborhood not in NEIGHBORHOODS:
            raise ValueError(f"SelfOrganizingMap: neighborhood must be one of {NEIGHBORHOODS}, got {neighborhood!r}")
        if topology not in TOPOLOGIES:
            raise ValueError(f"SelfOrganizingMap: topology must be one of {TOPOLOGIES}, got {topology!r}")
        self.sigma, self.lr = float(sigma), float(lr)
        self.neighborhood, self.topology = neighborhood, topology
        self._rng = backend.rng() if seed is None else numpy.random.default_rng(seed)
        self.weights = self._rng.uniform(-1.0, 1.0, (rows, cols, dim))
        grid_rows, grid_cols = numpy.meshgrid(numpy.arange(rows, dtype=numpy.float64),
                                              numpy.arange(cols, dtype=numpy.float64), indexing="ij")
        if topology == "hexagonal":
            grid_cols = grid_cols + 0.5 * (grid_rows % 2)
            grid_rows = grid_rows * (math.sqrt(3) / 2)
        self.positions = numpy.stack([grid_rows, grid_cols], axis=-1)
        self.history: dict[str, list[float]] = {}

    # -- inputs and winners ------------------------------------------------------------------
    def _inputs(self, x) -> numpy.ndarray:
        x = numpy.asarray(x, dtype=numpy.float64)
        if x.ndim == 1:
            x = x[None]
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise ShapeError(f"SelfOrganizingMap: inputs must be (n, dim={self.dim}) or (dim,); got shape {x.shape}")
        return x

    def _distances(self, x: numpy.ndarray) -> numpy.ndarray:
        """|x - w_u| for every input and unit, (n, rows * cols)."""
        flat = self.weights.reshape(-1, self.dim)
        squared = (x ** 2).sum(axis=1)[:, None] - 2 * x @ flat.T + (flat ** 2).sum(axis=1)[None]
        return numpy.sqrt(numpy.maximum(squared, 0.0))

    def winner(self, x) -> numpy.ndarray:
        """The (row, col) of the best-matching unit of each input, (n, 2) ints ((2,) for one input)."""
        one = numpy.asarray(x).ndim == 1
        index = self._distances(self._inputs(x)).argmin(axis=1)
        cells = numpy.stack(numpy.unravel_index(index, (self.rows, self.cols)), axis=1)
        return cells[0] if one else cells

    def initialize_from_data(self, x, seed: int | None = None) -> SelfOrganizingMap:
        """Weights set to inputs drawn at random from ``x`` (MiniSom's random_weights_init)."""
        x = self._inputs(x)
        rng = self._rng if seed is None else numpy.random.default_rng(seed)
        self.weights = x[rng.integers(0, len(x), self.rows * self.cols)].reshape(self.rows, self.cols, self.dim).copy()
        return self

    # -- learning ------------------------------------------------------------------------------
    def rates(self, t: int, num_iterations: int) -> tuple[float, float]:
        """(sigma(t), lr(t)) at step ``t`` of ``num_iterations``."""
        decay = 1.0 + 2.0 * t / num_iterations
        return self.sigma / decay, self.lr / decay

    def update(self, x, t: int, num_iterations: int) -> None:
        """One step of the update rule for the single input ``x`` (dim,) at step ``t``."""
        x = self._inputs(x)[0]
        sigma, lr = self.rates(t, num_iterations)
        row, col = self.winner(x)
        distance = numpy.linalg.norm(self.positions - self.positions[row, col], axis=-1)
        h = neighborhood(distance, sigma, self.neighborhood)
        self.weights += lr * h[..., None] * (x - self.weights)

    def fit(self, x, num_iterations: int, shuffle: bool = True) -> SelfOrganizingMap:
        """``num_iterations`` updates, one input each, taken in passes over ``x`` (each pass
        shuffled when ``shuffle``). Appends the quantization error after each pass to
        ``history['quantization_error']``."""
        x = self._inputs(x)
        num_iterations = positive_int(num_iterations, "SelfOrganizingMap.fit: num_iterations")
        self.history = {"quantization_error": []}
        order = numpy.arange(len(x))
        for t in range(num_iterations):
            if t % len(x) == 0:
                if t:
                    self.history["quantization_error"].append(self.quantization_error(x))
                order = self._rng.permutation(len(x)) if shuffle else numpy.arange(len(x))
            self.update(x[order[t % len(x)]], t, num_iterations)
        self.history["quantization_error"].append(self.quantization_error(x))
        return self

    # -- quality --------------------------------------------------------------------------------
    def quantization_error(self, x) -> float:
        """The mean distance of the inputs to their winners' weights."""
        return float(self._distances(self._inputs(x)).min(axis=1).mean())

    def _grid_distance(self, first: numpy.ndarray, second: numpy.ndarray) -> numpy.ndarray:
        flat = self.positions.reshape(-1, 2)
        return numpy.linalg.norm(flat[first] - flat[second], axis=-1)

    def topographic_error(self, x) -> float:
        """The fraction of inputs whose best and second-best units are not grid neighbours."""
        x = self._inputs(x)
        if self.rows * self.cols < 2:
            raise ValueError("SelfOrganizingMap.topographic_error: needs a map of at least two units")
        best_two = numpy.argsort(self._distances(x), axis=1)[:, :2]
        apart = self._grid_distance(best_two[:, 0], best_two[:, 1]) > _NEIGHBOUR_DISTANCE[self.topology]
        return float(apart.mean())

    def distance_map(self) -> numpy.ndarray:
        """The U-matrix (rows, cols): each unit's mean weight distance to its grid neighbours,
        divided by the largest such mean."""
        flat_positions = self.positions.reshape(-1, 2)
        flat_weights = self.weights.reshape(-1, self.dim)
        grid = numpy.linalg.norm(flat_positions[:, None] - flat_positions[None], axis=-1)
        neighbours = (grid > 0) & (grid <= _NEIGHBOUR_DISTANCE[self.topology])
        weight_distance = numpy.linalg.norm(flat_weights[:, None] - flat_weights[None], axis=-1)
        counts = numpy.maximum(neighbours.sum(axis=1), 1)
        means = (weight_distance * neighbours).sum(axis=1) / counts
        top = means.max()
        return (means / top if top > 0 else means).reshape(self.rows, self.cols)

    def __repr__(self) -> str:
        return (f"SelfOrganizingMap(rows={self.rows}, cols={self.cols}, dim={self.dim}, sigma={self.sigma}, "
                f"lr={self.lr}, neighborhood={self.neighborhood!r}, topology={self.topology!r})")
