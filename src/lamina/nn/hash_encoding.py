"""The multiresolution hash encoding of Instant-NGP (Muller et al. 2022): a fast, trainable input
encoding for coordinate networks.

A point x in [0, 1]^d (d = 2 or 3) is looked up on L grids of growing resolution
N_l = floor(N_min b^l), b = exp((ln N_max - ln N_min) / (L - 1)) (or given as ``per_level_scale``).
On level l the 2^d corners of the cell holding x N_l each read a feature vector (F values) from
the level's table: by their position sum_i c_i (N_l + 1)^i when the level's (N_l + 1)^d vertices
fit the table of T = 2^``log2_hashmap_size`` rows, else by the spatial hash

    h(c) = (c_1 pi_1 XOR c_2 pi_2 XOR c_3 pi_3) mod T,  pi = (1, 2654435761, 805459861)

(in unsigned 32-bit arithmetic). The corner features are blended with the (bi/tri)linear weights
w_c = prod_i (f_i if c_i is the upper corner else 1 - f_i), f = x N_l - floor(x N_l), and the
levels' results are concatenated: (..., L F). Colliding corners share a row, and their gradients
add up there. The tables start as U(-1e-4, 1e-4).

Inputs outside ``bounds`` (``(0, 1)`` by default; points are mapped linearly from the bounds to
[0, 1]) raise a ``ValueError``: they are not clamped. A point on the upper border uses the last
cell (fraction 1).

:class:`HashGridMLP` is the encoding followed by a small ReLU MLP, the Instant-NGP network for an
image (coordinates -> colour). The NeRF MLP (:class:`lamina.models.NeRF`) takes pre-encoded
points, so ``NeRF(input_ch=encoding.out_features, use_viewdirs=False)`` runs on ``encoding(points)``
(or, with view directions, on the encoded points joined to the encoded directions).
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.autograd.function import Function, cast
from lamina.errors import ShapeError
from lamina.nn.containers import ModuleList
from lamina.nn.dense import Dense
from lamina.nn.layer import register_layer
from lamina.nn.module import Module, as_tensor, read_parameter

__all__ = ["HASH_PRIMES", "HashGridEncoding", "HashGridMLP", "hash_grid_encode", "hash_grid_levels"]

HASH_PRIMES = (1, 2654435761, 805459861)
_LOW_32_BITS = numpy.uint64(0xFFFFFFFF)


def hash_grid_levels(in_dim: int, num_levels: int, log2_hashmap_size: int, base_resolution: int,
                     per_level_scale: float) -> list[tuple[int, int, bool]]:
    """``(resolution N_l, table rows, hashed)`` for each level: N_l = floor(N_min b^l) (a tiny
    allowance absorbs rounding of b^l), rows = (N_l + 1)^d when that fits 2^log2_hashmap_size
    (indexed directly), else 2^log2_hashmap_size (hashed)."""
    capacity = 2 ** log2_hashmap_size
    levels = []
    for level in range(num_levels):
        resolution = int(math.floor(base_resolution * per_level_scale ** level + 1e-9))
        vertices = (resolution + 1) ** in_dim
        levels.append((resolution, min(vertices, capacity), vertices > capacity))
    return levels


def _corner_bits(in_dim: int) -> numpy.ndarray:
    """(2^d, d): corner k's offset along axis i is bit i of k."""
    corners = numpy.arange(2 ** in_dim)
    return ((corners[:, None] >> numpy.arange(in_dim)[None, :]) & 1).astype(numpy.int64)


def _corner_rows(cell: numpy.ndarray, bits: numpy.ndarray, resolution: int, rows: int, hashed: bool) -> numpy.ndarray:
    """The table rows (n, 2^d) of the corners of each point's cell (n, d)."""
    in_dim = cell.shape[1]
    if hashed:
        mixed = numpy.zeros((cell.shape[0], bits.shape[0]), numpy.uint64)
        for i in range(in_dim):
            coordinate = (cell[:, i:i + 1] + bits[None, :, i]).astype(numpy.uint64)
            mixed ^= (coordinate * numpy.uint64(HASH_PRIMES[i])) & _LOW_32_BITS
        return (mixed % numpy.uint64(rows)).astype(numpy.int64)
    index = numpy.zeros((cell.shape[0], bits.shape[0]), numpy.int64)
    stride = 1
    for i in range(in_dim):
        index += (cell[:, i:i + 1] + bits[None, :, i]) * stride
        stride *= resolution + 1
    return index


def _corner_factors(frac: numpy.ndarray, bits: numpy.ndarray) -> list[numpy.ndarray]:
    """Per axis i, (n, 2^d): f_i for the corners on the upper side, 1 - f_i for the others."""
    return [numpy.where(bits[None, :, i] == 1, frac[:, i:i + 1], 1.0 - frac[:, i:i + 1])
            for i in range(frac.shape[1])]


class HashGridEncode(Function):
    """y[:, l] = sum_c w_c(x) table[offset_l + row_l(c)] over the levels (module docstring).
    Inputs: points x (n, d) already inside [low, high], the stacked tables (rows, F).
    Hyperparameters: ``levels`` (from :func:`hash_grid_levels`), ``low``, ``high``."""

    def forward(self, x, table):
        bits = _corner_bits(x.shape[1])
        scale = 1.0 / (self.high - self.low)
        unit = numpy.clip((x - self.low) * scale, 0.0, 1.0)
        self.bits, self.table_shape, self.table_dtype = bits, table.shape, table.dtype
        self.fracs, self.rows, self.x_dtype = [], [], x.dtype
        out = numpy.empty((x.shape[0], len(self.levels), table.shape[1]), table.dtype)
        offset = 0
        for level, (resolution, size, hashed) in enumerate(self.levels):
            position = unit * resolution
            cell = numpy.minimum(numpy.floor(position), resolution - 1).astype(numpy.int64)
            frac = position - cell
            rows = _corner_rows(cell, bits, resolution, size, hashed) + offset
            weights = numpy.prod(numpy.stack(_corner_factors(frac, bits)), axis=0).astype(table.dtype)
            out[:, level] = numpy.einsum("nc,ncf->nf", weights, table[rows])
            self.fracs.append(frac)
            self.rows.append(rows)
            offset += size
        self.table = table
        return out.reshape(x.shape[0], -1)

    def backward(self, dy):
        n, features = dy.shape[0], self.table_shape[1]
        dy = dy.reshape(n, len(self.levels), features)
        dx = dtable = None
        if self.needs_grad[1]:
            rows = numpy.stack(self.rows)                                    # (L, n, 2^d)
            weights = numpy.stack([numpy.prod(numpy.stack(_corner_factors(f, self.bits)), axis=0)
                                   for f in self.fracs])                     # (L, n, 2^d)
            spread = weights[..., None] * dy.transpose(1, 0, 2)[:, :, None, :]  # (L, n, 2^d, F)
            flat = (rows[..., None] * features + numpy.arange(features)).ravel()
            summed = numpy.bincount(flat, weights=spread.ravel(), minlength=self.table_shape[0] * features)
            dtable = summed.reshape(self.table_shape).astype(self.table_dtype, copy=False)
        if self.needs_grad[0]:
            dx = numpy.zeros((n, self.bits.shape[1]), numpy.float64)
            for level, (resolution, _, _) in enumerate(self.levels):
                along = numpy.einsum("ncf,nf->nc", self.table[self.rows[level]], dy[:, level])  # (n, 2^d)
                factors = _corner_factors(self.fracs[level], self.bits)
                for i in range(self.bits.shape[1]):
                    slope = numpy.where(self.bits[:, i] == 1, 1.0, -1.0)[None, :]
                    for j, factor in enumerate(factors):
                        if j != i:
                            slope = slope * factor
                    dx[:, i] += resolution * numpy.sum(along * slope, axis=1)
            dx = (dx / (self.high - self.low)).astype(self.x_dtype, copy=False)
        return dx, dtable

    def backward_graph(self, dy: Tensor) -> tuple:
        return self.composite_backward_graph(dy)

    def composite(self, x: Tensor, table: Tensor) -> Tensor:
        """The same values from primitive ops (row gathers, products), for second derivatives."""
        bits, outputs, offset = self.bits, [], 0
        unit = (x - self.low) * (1.0 / (self.high - self.low))
        n, in_dim, features = x.shape[0], x.shape[1], table.shape[1]
        for resolution, size, hashed in self.levels:
            position = unit * float(resolution)
            cell = numpy.minimum(numpy.floor(backend.to_numpy(position.data)), resolution - 1)
            frac = position - Tensor._wrap(backend.xp.asarray(cell.astype(x.dtype)))
            rows = _corner_rows(cell.astype(numpy.int64), bits, resolution, size, hashed) + offset
            weights = None
            for i in range(in_dim):
                f = frac[:, i:i + 1]
                upper = Tensor._wrap(backend.xp.asarray(bits[None, :, i].astype(x.dtype)))
                factor = f * upper + (1.0 - f) * (1.0 - upper)                 # (n, 2^d)
                weights = factor if weights is None else weights * factor
            corners = F.take_rows(table, backend.xp.asarray(rows.ravel())).reshape(n, bits.shape[0], features)
            outputs.append((cast(weights, table.dtype).reshape(n, bits.shape[0], 1) * corners).sum(axis=1))
            offset += size
        return F.concat(outputs, axis=-1)


def hash_grid_encode(x, table, levels: list[tuple[int, int, bool]], bounds: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """The hash-grid encoding (module docstring) of the points ``x`` (..., d) with the stacked
    level tables ``table`` (rows, F) laid out as ``levels`` (:func:`hash_grid_levels`): (..., L F).
    Points outside ``bounds`` raise a ``ValueError``."""
    x, table = as_tensor(x), as_tensor(table)
    low, high = float(bounds[0]), float(bounds[1])
    if x.ndim < 1 or x.shape[-1] not in (2, 3):
        raise ShapeError(f"hash_grid_encode: expected points (..., 2) or (..., 3), got shape {tuple(x.shape)}")
    rows = sum(size for _, size, _ in levels)
    if table.ndim != 2 or table.shape[0] != rows:
        raise ShapeError(f"hash_grid_encode: expected a table ({rows}, F) for the levels given, "
                         f"got shape {tuple(table.shape)}")
    values = backend.to_numpy(x.data)
    if values.size and not (numpy.all(values >= low) and numpy.all(values <= high)):
        raise ValueError(f"hash_grid_encode: points must lie in [{low}, {high}] (they are not clamped); "
                         f"got values in [{float(numpy.min(values))}, {float(numpy.max(values))}]")
    lead = tuple(x.shape[:-1])
    flat = x.reshape(-1, x.shape[-1])
    out = HashGridEncode.apply(flat, table, levels=list(levels), low=low, high=high)
    return out.reshape(*lead, out.shape[-1])


def _positive_int(value, what: str, who: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or value < 1:
        raise ValueError(f"{who}: {what} must be a positive int, got {value!r}")
    return int(value)


@register_layer
class HashGridEncoding(Module):
    """Points (..., ``in_dim``) in ``bounds`` -> features (..., ``num_levels`` ``features_per_level``)
    by the multiresolution hash encoding (module docstring). The growth factor b is
    ``per_level_scale``, or derived from ``finest_resolution`` (N_max), or 2 when neither is given.
    The parameter ``table`` stacks the levels' tables, (sum of rows, F), coarse level first."""

    streamable = True

    def __init__(self, in_dim: int, num_levels: int = 16, features_per_level: int = 2, log2_hashmap_size: int = 19,
                 base_resolution: int = 16, finest_resolution: int | None = None, per_level_scale: float | None = None,
                 bounds: tuple[float, float] = (0.0, 1.0), name: str | None = None):
        super().__init__(name=name)
        who = "HashGridEncoding"
        if in_dim not in (2, 3) or isinstance(in_dim, bool):
            raise ValueError(f"{who}: in_dim must be 2 or 3, got {in_dim!r}")
        self.in_dim = int(in_dim)
        self.num_levels = _positive_int(num_levels, "num_levels", who)
        self.features_per_level = _positive_int(features_per_level, "features_per_level", who)
        self.log2_hashmap_size = _positive_int(log2_hashmap_size, "log2_hashmap_size", who)
        self.base_resolution = _positive_int(base_resolution, "base_resolution", who)
        if finest_resolution is not None and per_level_scale is not None:
            raise ValueError(f"{who}: give finest_resolution or per_level_scale, not both")
        self.finest_resolution = None if finest_resolution is None else _positive_int(
            finest_resolution, "finest_resolution", who)
        if per_level_scale is not None and not per_level_scale >= 1.0:
            raise ValueError(f"{who}: per_level_scale must be >= 1, got {per_level_scale!r}")
        self.per_level_scale = None if per_level_scale is None else float(per_level_scale)
        low, high = (float(b) for b in bounds)
        if not high > low:
            raise ValueError(f"{who}: bounds must be (low, high) with high > low, got {bounds!r}")
        self.bounds = (low, high)
        self.levels = hash_grid_levels(self.in_dim, self.num_levels, self.log2_hashmap_size, self.base_resolution,
                                       self.growth_factor)
        rows = sum(size for _, size, _ in self.levels)
        dtype = backend.get_default_dtype()
        init = backend.rng().uniform(-1e-4, 1e-4, (rows, self.features_per_level)).astype(dtype)
        self.add_parameter("table", backend.xp.asarray(init))
        self.built = True

    @property
    def growth_factor(self) -> float:
        """b: N_l = floor(N_min b^l)."""
        if self.per_level_scale is not None:
            return self.per_level_scale
        if self.finest_resolution is None:
            return 2.0
        if self.num_levels == 1:
            return 1.0
        return math.exp((math.log(self.finest_resolution) - math.log(self.base_resolution)) / (self.num_levels - 1))

    @property
    def resolutions(self) -> list[int]:
        return [resolution for resolution, _, _ in self.levels]

    @property
    def out_features(self) -> int:
        return self.num_levels * self.features_per_level

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim < 1 or x.shape[-1] != self.in_dim:
            raise ShapeError(f"{self._label()}: expected points (..., {self.in_dim}), got shape {tuple(x.shape)}")
        return hash_grid_encode(x, read_parameter(self, "table"), self.levels, self.bounds)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.out_features,)

    def get_config(self) -> dict:
        return {"in_dim": self.in_dim, "num_levels": self.num_levels, "features_per_level": self.features_per_level,
                "log2_hashmap_size": self.log2_hashmap_size, "base_resolution": self.base_resolution,
                "finest_resolution": self.finest_resolution, "per_level_scale": self.per_level_scale,
                "bounds": list(self.bounds), "name": self.name}

    def extra_repr(self) -> str:
        return (f"{self.in_dim} -> {self.out_features}, levels={self.num_levels}, "
                f"resolutions {self.resolutions[0]}..{self.resolutions[-1]}, table rows={self.table.shape[0]}")


@register_layer
class HashGridMLP(Module):
    """:class:`HashGridEncoding` followed by ``hidden_layers`` ReLU layers of width ``hidden`` and a
    linear layer to ``out_features``: the Instant-NGP coordinate network (e.g. for an image,
    points (n, 2) -> colours (n, c)). ``encoding`` holds the encoding's keyword arguments (its
    config keeps all of them, defaults filled in)."""

    def __init__(self, in_dim: int, out_features: int, hidden: int = 64, hidden_layers: int = 1,
                 encoding: dict | None = None, name: str | None = None):
        super().__init__(name=name)
        who = "HashGridMLP"
        self.in_dim, self.out_features = in_dim, _positive_int(out_features, "out_features", who)
        self.hidden = _positive_int(hidden, "hidden", who)
        if isinstance(hidden_layers, bool) or not isinstance(hidden_layers, int) or hidden_layers < 0:
            raise ValueError(f"{who}: hidden_layers must be an int >= 0, got {hidden_layers!r}")
        self.hidden_layers = hidden_layers
        self.encoding = HashGridEncoding(in_dim, **dict(encoding or {}))
        self.encoding_config = {k: v for k, v in self.encoding.get_config().items() if k not in ("in_dim", "name")}
        layers = [Dense(self.hidden, activation="relu") for _ in range(hidden_layers)] + [Dense(self.out_features)]
        width = self.encoding.out_features
        for layer in layers:
            layer.build((None, width))
            width = layer.units
        self.layers = ModuleList(layers)
        self.built = True

    def forward(self, x) -> Tensor:
        h = self.encoding(x)
        for layer in self.layers:
            h = layer(h)
        return h

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.out_features,)

    def get_config(self) -> dict:
        return {"in_dim": self.in_dim, "out_features": self.out_features, "hidden": self.hidden,
                "hidden_layers": self.hidden_layers, "encoding": dict(self.encoding_config), "name": self.name}
