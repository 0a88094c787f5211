"""Multi-scale deformable attention (Zhu et al. 2021, "Deformable DETR").

A query attends to a few sampled points on each of L feature maps instead of to every
pixel. For query q and head m, with value maps V_l of head dimension D (level l of size
H_l x W_l), P points per level at normalised locations (x, y) in [0, 1] and attention
weights A (usually a softmax over the L P points):

    out[n, q, m] = sum over l, p of A[n, q, m, l, p] V_l[n, :, :, m](W_l x - 1/2, H_l y - 1/2)

V_l(u, v) the bilinear interpolation at column u, row v of its four neighbouring pixels,
neighbours outside the map counting as 0: ``grid_sample`` with ``align_corners=False`` and
zero padding at the grid point 2 (x, y) - 1, as the paper's reference code.

The value maps come flattened and concatenated: value (N, S, M, D), S = sum of H_l W_l, level
l in rows level_start_index[l] .. + H_l W_l (row-major over (H_l, W_l)). Viewing value as
(N S M, D) rows, the output is one sparse product out = S_A value with 4 L P entries per
output row (n, q, m): A times the bilinear weights of each corner. Backward, from dJ/dout:

    dJ/dvalue = S_A^T dJ/dout,
    dJ/dA[.., l, p] = sum over the corners t of b_t <dJ/dout[n, q, m], value row of t>,
    dJ/dx[.., l, p] = A W_l sum over t of (db_t/du) <dJ/dout[n, q, m], value row of t>

(y alike with H_l and db_t/dv), b_t the bare bilinear weights and their derivatives taken
from the right at whole pixels, as grid_sample's.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional.grid_sample import SamplingMatrix
from lamina.functional.segment import take_rows

__all__ = ["MSDeformAttn", "deformable_reference_points", "ms_deform_attn"]


def _level_grid(shapes):
    """Per-level int arrays (L,) of the heights, the widths and the first rows."""
    xp = backend.xp
    heights = xp.asarray([h for h, _ in shapes])
    widths = xp.asarray([w for _, w in shapes])
    starts = xp.concatenate([xp.zeros(1, dtype=heights.dtype), xp.cumsum(heights * widths)[:-1]])
    return heights, widths, starts


def _axis_taps(coord, size):
    """Along one axis, for pixel coordinates ``coord`` and map sizes ``size`` (broadcast):
    the lower and upper neighbours (..., 2) (0 where outside the map, their weight being 0),
    their weights 1 - f and f (0 outside the map) and the weights' slopes -1 and 1 (0 outside)."""
    xp = backend.xp
    low = xp.floor(coord)
    frac = coord - low
    low = low.astype(xp.intp)
    inside = xp.stack([(low >= 0) & (low < size), (low >= -1) & (low < size - 1)], axis=-1)
    neighbours = xp.stack([low, low + 1], axis=-1) * inside
    weights = xp.stack([1 - frac, frac], axis=-1) * inside
    slopes = inside * xp.asarray([-1, 1], dtype=coord.dtype)
    return neighbours, weights, slopes


def _taps(value_shape, shapes, locations):
    """The four neighbours of every sampling point (N Lq M L P of them), in the order
    (upper-left, upper-right, lower-left, lower-right): rows (., 4) of value viewed as
    (N S M, D) and their bilinear weights (., 4); and, for the derivatives, the weights and
    slopes (., 2) along x and along y, and the widths and heights (.,) (du/dx and dv/dy)."""
    xp = backend.xp
    n, s, m, _ = value_shape
    heights, widths, starts = _level_grid(shapes)
    per_level_h, per_level_w = heights[:, None], widths[:, None]          # against (N, Lq, M, L, P)
    cols, weights_x, slopes_x = _axis_taps(locations[..., 0] * per_level_w.astype(locations.dtype) - 0.5, per_level_w)
    rows, weights_y, slopes_y = _axis_taps(locations[..., 1] * per_level_h.astype(locations.dtype) - 0.5, per_level_h)
    pixel = rows[..., :, None] * widths[:, None, None, None] + cols[..., None, :]
    first = (xp.arange(n)[:, None, None, None, None] * s + starts[:, None]) * m + xp.arange(m)[:, None, None]
    value_rows = (first[..., None, None] + pixel * m).reshape(-1, 4)
    bare = (weights_y[..., :, None] * weights_x[..., None, :]).reshape(-1, 4)
    size = locations.shape[:5]
    scale_x = xp.broadcast_to(per_level_w, size).reshape(-1).astype(locations.dtype)
    scale_y = xp.broadcast_to(per_level_h, size).reshape(-1).astype(locations.dtype)
    along = [a.reshape(-1, 2) for a in (weights_x, slopes_x, weights_y, slopes_y)]
    return value_rows, bare, along, scale_x, scale_y


def _corner_products(value_rows, index, out_rows, gathered_rows: int = 16384):
    """<out_rows[r], value_rows[index[r, k]]> for every output row r and entry k: (R, K).
    Gathered in blocks of about ``gathered_rows`` value rows, which stay in cache."""
    xp = backend.xp
    per_block = max(1, gathered_rows // index.shape[1])
    products = xp.empty(index.shape, dtype=xp.result_type(value_rows, out_rows))
    for start in range(0, index.shape[0], per_block):
        block = slice(start, start + per_block)
        gathered = xp.take(value_rows, index[block], axis=0)                      # (r, K, D)
        products[block] = xp.matmul(gathered, out_rows[block, :, None])[..., 0]
    return products


class MSDeformAttn(Function):
    """out = S_A value (module docstring). Inputs value (N, S, M, D), sampling locations
    (N, Lq, M, L, P, 2) and attention weights (N, Lq, M, L, P); hyperparameter ``shapes``,
    the L pairs (H_l, W_l)."""

    def forward(self, value, locations, weights):
        xp = backend.xp
        n, s, m, d = value.shape
        _, lq, _, levels, points, _ = locations.shape
        dtype = xp.result_type(value, locations, weights)
        rows, bare, along, scale_x, scale_y = _taps(value.shape, self.shapes, locations.astype(dtype, copy=False))
        flat_weights = weights.reshape(-1, 1).astype(dtype, copy=False)
        k = 4 * levels * points
        self.sampler = SamplingMatrix(rows.reshape(-1, k), (bare * flat_weights).reshape(-1, k), n * s * m)
        self.saved = (rows, bare, along, scale_x, scale_y, flat_weights)
        self.value_rows = value.reshape(n * s * m, d).astype(dtype, copy=False)
        return self.sampler.times(self.value_rows).reshape(n, lq, m * d)

    def backward(self, dout):
        xp = backend.xp
        value, locations, weights = self.inputs
        d = value.shape[3]
        _, bare, (weights_x, slopes_x, weights_y, slopes_y), scale_x, scale_y, flat_weights = self.saved
        out_rows = xp.ascontiguousarray(dout).reshape(-1, d)
        d_value = self.sampler.transpose_times(out_rows).reshape(value.shape) if self.needs_grad[0] else None
        d_locations = d_weights = None
        if self.needs_grad[1] or self.needs_grad[2]:
            per_corner = _corner_products(self.value_rows, self.sampler.index, out_rows).reshape(-1, 4)
            if self.needs_grad[2]:
                d_weights = (per_corner * bare).sum(axis=1).reshape(weights.shape).astype(weights.dtype, copy=False)
            if self.needs_grad[1]:
                d_bare_dx = (weights_y[:, :, None] * slopes_x[:, None, :]).reshape(-1, 4)
                d_bare_dy = (slopes_y[:, :, None] * weights_x[:, None, :]).reshape(-1, 4)
                d_x = (per_corner * d_bare_dx).sum(axis=1) * scale_x
                d_y = (per_corner * d_bare_dy).sum(axis=1) * scale_y
                d_locations = xp.stack([d_x, d_y], axis=1) * flat_weights
                d_locations = d_locations.reshape(locations.shape).astype(locations.dtype, copy=False)
        if d_value is not None:
            d_value = d_value.astype(value.dtype, copy=False)
        return d_value, d_locations, d_weights

    def composite(self, value, locations, weights) -> Tensor:
        """The same values from recorded ops (row gathers and products): the differentiable
        backward of the fused op. Which pixels are neighbours, and which lie inside the map,
        are constants of the forward pass."""
        xp = backend.xp
        n, s, m, d = value.shape
        _, lq, _, levels, points, _ = locations.shape
        heights, widths, _ = _level_grid(self.shapes)
        size = (n, lq, m, levels, points)
        per_point_h = xp.broadcast_to(heights[:, None], size).reshape(-1).astype(locations.dtype)
        per_point_w = xp.broadcast_to(widths[:, None], size).reshape(-1).astype(locations.dtype)
        u = locations[..., 0].reshape(-1) * per_point_w - 0.5
        v = locations[..., 1].reshape(-1) * per_point_h - 0.5
        u0, v0 = xp.floor(u.data), xp.floor(v.data)
        fu, fv = u - u0, v - v0
        rows = self.saved[0]
        value_rows = value.reshape(n * s * m, d)
        flat_weights = weights.reshape(-1)
        out, tap = None, 0
        for row, wv in ((v0, 1 - fv), (v0 + 1, fv)):
            for col, wu in ((u0, 1 - fu), (u0 + 1, fu)):
                inside = ((row >= 0) & (row < per_point_h) & (col >= 0) & (col < per_point_w)).astype(value.dtype)
                term = (wu * wv * inside * flat_weights).reshape(-1, 1) * take_rows(value_rows, rows[:, tap])
                out = term if out is None else out + term
                tap += 1
        return out.reshape(n * lq * m, levels * points, d).sum(axis=1).reshape(n, lq, m * d)

    backward_graph = Function.composite_backward_graph


def _shape_of(a) -> tuple[int, ...]:
    return tuple(a.shape) if hasattr(a, "shape") else tuple(backend.xp.shape(a))


def _int_array(a, what: str):
    xp = backend.xp
    data = a.data if isinstance(a, Tensor) else a
    if hasattr(data, "detach"):         # a torch tensor
        data = data.detach().cpu().numpy()
    array = xp.asarray(data)
    if array.size and not xp.all(array == xp.round(array)):
        raise ValueError(f"ms_deform_attn: {what} must hold integers, got {array.tolist()}")
    return array.astype(xp.int64)


def spatial_shape_list(spatial_shapes, what: str = "ms_deform_attn") -> list[tuple[int, int]]:
    """``spatial_shapes`` ((L, 2) rows (H_l, W_l): an array, tensor or nested list) as a list
    of int pairs, each positive."""
    shapes = _int_array(spatial_shapes, "spatial_shapes")
    if shapes.ndim != 2 or shapes.shape[1] != 2 or shapes.shape[0] < 1 or (shapes < 1).any():
        raise ShapeError(f"{what}: spatial_shapes must be (L, 2) rows (H_l, W_l) of positive ints, L >= 1, "
                         f"got {shapes.tolist()}")
    return [(int(h), int(w)) for h, w in shapes]


def _check(vs, ls, ws, shapes, starts) -> None:
    op = "ms_deform_attn"
    if len(vs) != 4:
        raise ShapeError(f"{op}: expected value of shape (N, S, M, D), got shape {vs}")
    n, s, m, _ = vs
    total = sum(h * w for h, w in shapes)
    if s != total:
        raise ShapeError(f"{op}: value of shape {vs} has S={s} rows, the spatial shapes {shapes} sum to {total}")
    if len(ls) != 6 or ls[0] != n or ls[2] != m or ls[3] != len(shapes) or ls[5] != 2:
        raise ShapeError(f"{op}: expected sampling_locations of shape (N={n}, Lq, M={m}, L={len(shapes)}, P, 2) "
                         f"for value of shape {vs}, got shape {ls}")
    if ws != ls[:5]:
        raise ShapeError(f"{op}: expected attention_weights of shape {ls[:5]} (N, Lq, M, L, P) for "
                         f"sampling_locations of shape {ls}, got shape {ws}")
    expected = [0]
    for h, w in shapes[:-1]:
        expected.append(expected[-1] + h * w)
    if starts is not None and starts != expected:
        raise ValueError(f"{op}: level_start_index {starts} does not match the spatial shapes {shapes} "
                         f"(expected {expected})")


def ms_deform_attn(value: Tensor, spatial_shapes, level_start_index, sampling_locations: Tensor,
                   attention_weights: Tensor) -> Tensor:
    """Multi-scale deformable attention (module docstring), the reference code's
    ``ms_deform_attn_core_pytorch`` / ``MSDeformAttnFunction``.

    value (N, S, M, D): the L value maps flattened (row-major) and concatenated, M heads of
    dimension D. spatial_shapes (L, 2): rows (H_l, W_l). level_start_index (L,): each level's
    first row in S (checked against the shapes; None computes it). sampling_locations
    (N, Lq, M, L, P, 2): (x, y) in [0, 1] over each map (outside reads zeros).
    attention_weights (N, Lq, M, L, P). Returns (N, Lq, M D), the heads concatenated.
    Differentiable in value, locations and weights (twice, by the composite).
    """
    shapes = spatial_shape_list(spatial_shapes)
    starts = None if level_start_index is None else _int_array(level_start_index, "level_start_index").tolist()
    _check(_shape_of(value), _shape_of(sampling_locations), _shape_of(attention_weights), shapes, starts)
    return MSDeformAttn.apply(value, sampling_locations, attention_weights, shapes=tuple(shapes))


def deformable_reference_points(spatial_shapes, valid_ratios, dtype=None) -> Tensor:
    """The encoder's reference points: every pixel centre of every level, normalised to the
    valid (unpadded) part of its map and then mapped onto each level, as the reference code's
    ``get_reference_points``.

    valid_ratios (N, L, 2): for each image and level, the valid fraction (x, y) of the map's
    width and height (1 without padding). For pixel (i, j) of level l the point is
    r = ((j + 1/2) / (rx_l W_l), (i + 1/2) / (ry_l H_l)), and the output (N, S, L, 2) holds
    r * valid_ratios[n, l'] for every level l' (a constant tensor of ``dtype``, by default the
    default float type).
    """
    xp = backend.xp
    shapes = spatial_shape_list(spatial_shapes, "deformable_reference_points")
    ratios = xp.asarray(valid_ratios.data if isinstance(valid_ratios, Tensor) else valid_ratios)
    if ratios.ndim != 3 or ratios.shape[1:] != (len(shapes), 2):
        raise ShapeError(f"deformable_reference_points: expected valid_ratios of shape (N, {len(shapes)}, 2) for "
                         f"{len(shapes)} levels, got shape {tuple(ratios.shape)}")
    dtype = backend.get_default_dtype() if dtype is None else xp.dtype(dtype)
    ratios = ratios.astype(dtype)
    per_level = []
    for level, (h, w) in enumerate(shapes):
        rows, cols = xp.meshgrid(xp.arange(h, dtype=dtype) + 0.5, xp.arange(w, dtype=dtype) + 0.5, indexing="ij")
        x = cols.reshape(1, -1) / (ratios[:, level, 0:1] * w)
        y = rows.reshape(1, -1) / (ratios[:, level, 1:2] * h)
        per_level.append(xp.stack([x, y], axis=-1))
    points = xp.concatenate(per_level, axis=1)
    return Tensor(points[:, :, None, :] * ratios[:, None, :, :], dtype=dtype)
