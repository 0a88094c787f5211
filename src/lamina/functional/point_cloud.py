"""Sampling, grouping and interpolation ops of point-cloud networks (PointNet++ of Qi et al.
2017, DGCNN of Wang et al. 2019). Points are (B, N, C) arrays, channels last; coordinates
``xyz`` are (B, N, 3).

* :func:`farthest_point_sample`: indices (B, S) of S points, each the farthest (in squared
  Euclidean distance) from those picked before it; the first is point 0 of each cloud, as
  in the reference kernels, so the result is deterministic.
* :func:`ball_query`: for each centre, the first ``nsample`` points (in index order) with
  squared distance < radius^2; fewer found are padded with the first one found, and a
  centre with none gets index 0 everywhere (the reference's zero-initialised output).
* :func:`knn`: the k nearest points of every point by pairwise squared distance
  ||x_i||^2 - 2 x_i.x_j + ||x_j||^2, the point itself included, nearest first.
* :func:`group_points`: y[b, s, k] = x[b, idx[b, s, k]], differentiable in x (the backward
  adds each gradient back to the row it came from).
* :func:`three_nn` and :func:`three_interpolate`: the three nearest known points of every
  unknown point, and y[b, n] = sum_k w[b, n, k] x[b, idx[b, n, k]];
  :func:`inverse_distance_weights` gives w_k = (1 / d_k) / sum_j (1 / d_j).

The index ops work on raw values (indices are constants, no gradient); the gathers are built
from :func:`~lamina.functional.index_select`, so they have gradients of every order.
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.arithmetic import mul
from lamina.functional.indexing import index_select
from lamina.functional.reduce import sum as reduce_sum
from lamina.functional.shape import expand_dims, reshape

__all__ = ["ball_query", "farthest_point_sample", "group_points", "interpolate_features", "inverse_distance_weights",
           "knn", "three_interpolate", "three_nn"]


def _values(x):
    return x.data if isinstance(x, Tensor) else backend.xp.asarray(x)


def _points(x, op: str, name: str, dims: int | None = None):
    """``x`` as a raw (B, N, C) array, C = ``dims`` when given."""
    array = _values(x)
    if array.ndim != 3 or (dims is not None and array.shape[2] != dims):
        expected = f"(batch, points, {dims})" if dims is not None else "(batch, points, channels)"
        raise ShapeError(f"{op}: {name} of shape {tuple(array.shape)} must be {expected}")
    return array


def _count(value, op: str, name: str, most: int, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, numpy.integer)) or value < 1:
        raise ValueError(f"{op}: {name} must be a positive int, got {value!r}")
    if value > most:
        raise ValueError(f"{op}: {name}={value} is more than the {most} {what}")
    return int(value)


def _same_batch(a, b, op: str, names: tuple[str, str]) -> None:
    if a.shape[0] != b.shape[0]:
        raise ShapeError(f"{op}: {names[0]} of shape {tuple(a.shape)} and {names[1]} of shape {tuple(b.shape)} "
                         "must have the same batch size")


def square_distances(a, b):
    """D[b, i, j] = ||a[b, i] - b[b, j]||^2 for raw (B, N, C) and (B, M, C) arrays (clipped at 0)."""
    xp = backend.xp
    cross = a @ b.transpose(0, 2, 1)
    d = (a * a).sum(-1)[:, :, None] - 2 * cross + (b * b).sum(-1)[:, None, :]
    return xp.maximum(d, 0)


def farthest_point_sample(xyz, npoint: int):
    """Indices (B, npoint) of farthest point sampling of ``xyz`` (B, N, 3), starting at point 0:
    s_0 = 0, s_t = argmax_i min_{u < t} ||x_i - x_{s_u}||^2 (the first such i on ties)."""
    points = _points(xyz, "farthest_point_sample", "xyz", 3)
    batch, n = points.shape[:2]
    npoint = _count(npoint, "farthest_point_sample", "npoint", n, "points of each cloud")
    xp = backend.xp
    picked = xp.zeros((batch, npoint), dtype=xp.int64)
    nearest = xp.full((batch, n), xp.inf)
    rows = xp.arange(batch)
    last = xp.zeros(batch, dtype=xp.int64)
    for t in range(1, npoint):
        step = points - points[rows, last][:, None, :]
        nearest = xp.minimum(nearest, (step * step).sum(-1))
        last = nearest.argmax(axis=1)
        picked[:, t] = last
    return picked


def ball_query(radius: float, nsample: int, xyz, new_xyz):
    """Indices (B, S, nsample) of the points of ``xyz`` (B, N, 3) within ``radius`` of each centre
    of ``new_xyz`` (B, S, 3): the first ``nsample`` with ||x - c||^2 < radius^2 in index order,
    padded with the first one found (index 0 throughout where none is)."""
    points = _points(xyz, "ball_query", "xyz", 3)
    centres = _points(new_xyz, "ball_query", "new_xyz", 3)
    _same_batch(points, centres, "ball_query", ("xyz", "new_xyz"))
    if not radius > 0:
        raise ValueError(f"ball_query: radius must be positive, got {radius!r}")
    n = points.shape[1]
    nsample = _count(nsample, "ball_query", "nsample", n, "points of each cloud")
    xp = backend.xp
    inside = square_distances(centres, points) < radius * radius
    order = xp.where(inside, xp.arange(n), n)                  # outside points sort after every inside one
    first = xp.sort(order, axis=-1)[..., :nsample]
    padded = xp.where(first == n, first[..., :1], first)
    return xp.where(padded == n, 0, padded).astype(xp.int64)


def knn(x, k: int):
    """Indices (B, N, k) of the k nearest points of every point of ``x`` (B, N, C) by squared
    Euclidean distance, nearest first; each point is its own nearest (distance 0)."""
    points = _points(x, "knn", "x")
    k = _count(k, "knn", "k", points.shape[1], "points of each cloud")
    xp = backend.xp
    d = square_distances(points, points)
    near = xp.argpartition(d, k - 1, axis=-1)[..., :k] if k < points.shape[1] else xp.broadcast_to(
        xp.arange(points.shape[1]), d.shape).copy()
    order = xp.argsort(xp.take_along_axis(d, near, axis=-1), axis=-1, kind="stable")
    return xp.take_along_axis(near, order, axis=-1).astype(xp.int64)


def group_points(x, idx) -> Tensor:
    """y[b, ..] = x[b, idx[b, ..]] for points ``x`` (B, N, C) and integer ``idx`` (B, ...):
    y has shape idx.shape + (C,). Gradients go back to x, added up over repeated indices."""
    points = _points(x, "group_points", "x")
    index = _values(idx)
    if index.dtype.kind not in "iu":
        raise ValueError(f"group_points: idx must hold integers, got dtype {index.dtype}")
    if index.ndim < 1 or index.shape[0] != points.shape[0]:
        raise ShapeError(f"group_points: idx of shape {tuple(index.shape)} must start with the batch axis of x "
                         f"of shape {tuple(points.shape)}")
    batch, n, c = points.shape
    if index.size and (int(index.min()) < 0 or int(index.max()) >= n):
        raise ValueError(f"group_points: idx holds values in [{int(index.min())}, {int(index.max())}]; expected "
                         f"indices in [0, {n}) into the {n} points of x")
    xp = backend.xp
    offsets = (xp.arange(batch) * n).reshape((batch,) + (1,) * (index.ndim - 1))
    rows = index_select(reshape(x, (batch * n, c)), 0, (index + offsets).reshape(-1))
    return reshape(rows, tuple(index.shape) + (c,))


def three_nn(unknown, known):
    """(dist, idx), each (B, n, 3): the Euclidean distances to and indices of the three nearest
    points of ``known`` (B, m, 3) to each point of ``unknown`` (B, n, 3), nearest first."""
    targets = _points(unknown, "three_nn", "unknown", 3)
    sources = _points(known, "three_nn", "known", 3)
    _same_batch(targets, sources, "three_nn", ("unknown", "known"))
    if sources.shape[1] < 3:
        raise ValueError(f"three_nn: known of shape {tuple(sources.shape)} has fewer than 3 points")
    xp = backend.xp
    d = square_distances(targets, sources)
    near = xp.argpartition(d, 2, axis=-1)[..., :3] if sources.shape[1] > 3 else xp.broadcast_to(
        xp.arange(3), d.shape).copy()
    near_d = xp.take_along_axis(d, near, axis=-1)
    order = xp.argsort(near_d, axis=-1, kind="stable")
    return xp.sqrt(xp.take_along_axis(near_d, order, axis=-1)), xp.take_along_axis(near, order, axis=-1)


def inverse_distance_weights(dist, eps: float = 1e-8):
    """w_k = (1 / (d_k + eps)) / sum_j 1 / (d_j + eps) over the last axis of raw distances."""
    inverse = 1.0 / (backend.xp.asarray(dist) + eps)
    return inverse / inverse.sum(axis=-1, keepdims=True)


def three_interpolate(x, idx, weight) -> Tensor:
    """y[b, i] = sum_k weight[b, i, k] x[b, idx[b, i, k]] for features ``x`` (B, m, C), integer
    ``idx`` (B, n, K) and ``weight`` (B, n, K): (B, n, C). Differentiable in x and weight."""
    index = _values(idx)
    w = _values(weight)
    if index.ndim != 3 or w.shape != index.shape:
        raise ShapeError(f"three_interpolate: idx of shape {tuple(index.shape)} and weight of shape "
                         f"{tuple(w.shape)} must both be (batch, points, neighbours)")
    grouped = group_points(x, index)                              # (B, n, K, C)
    return reduce_sum(mul(grouped, expand_dims(weight, -1)), axis=2)


def interpolate_features(unknown, known, features, eps: float = 1e-8) -> Tensor:
    """PointNet++'s feature propagation: the features (B, m, C) of ``known`` carried to ``unknown``
    by inverse-distance weighting of the three nearest known points."""
    dist, idx = three_nn(unknown, known)
    return three_interpolate(features, idx, inverse_distance_weights(dist, eps).astype(_values(features).dtype))
