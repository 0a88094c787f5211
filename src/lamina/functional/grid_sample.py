"""Spatial transformer sampling (Jaderberg et al. 2015) on NHWC batches.

A spatial transformer warps its input U by a transform T_theta: every output pixel i reads
the input at a source point (x_i^s, y_i^s) = T_theta(x_i^t, y_i^t) of the output pixel's own
coordinates, by a kernel that is differentiable in the input and in the source point.

    affine_grid(theta, size)  the source points of an affine map, (N, H_o, W_o, 2)
    grid_sample(x, grid)      x read at those points, (N, H_o, W_o, C)

Coordinates follow PyTorch (``torch.nn.functional.affine_grid`` / ``grid_sample``) so code
ports unchanged, images being NHWC here: a grid point holds (x, y), the column and row,
normalised to [-1, 1] over the image. With ``align_corners=True`` -1 and 1 are the centres
of the corner pixels; with False (the default) they are the outer edges of the corner
pixels, which makes the sampling independent of the resolution.

Sampling is linear in x: out = S x, S a sparse (N H_o W_o, N H W) matrix with at most four
non-zeros per row (the bilinear weights; one for 'nearest'). The forward pass builds S once,
and backward uses it twice: dJ/dx = S^T dJ/dy, and dJ/dgrid from the same sparsity pattern
with the weights' derivatives in place of the weights.
"""

from __future__ import annotations

import math
import numbers

import numpy

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError

__all__ = ["MODES", "PADDING_MODES", "SamplingMatrix", "affine_grid", "base_grid", "grid_sample", "source_pixels"]

MODES = ("bilinear", "nearest")
PADDING_MODES = ("zeros", "border", "reflection")


def _tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


# -- the affine grid ------------------------------------------------------------------------
def _normalised_centres(n: int, align_corners: bool, dtype):
    """The normalised coordinates of the n pixel centres along one axis: -1 + 2 i / (n - 1)
    with aligned corners, (2 i + 1) / n - 1 otherwise; 0 for a single pixel."""
    xp = backend.xp
    if n == 1:
        return xp.zeros(1, dtype=dtype)
    steps = xp.linspace(-1.0, 1.0, n, dtype=dtype)
    return steps if align_corners else steps * ((n - 1) / n)


def base_grid(h: int, w: int, align_corners: bool = False, dtype=None):
    """The (h, w, 3) target coordinates (x_j, y_i, 1) of an h x w output: x along the
    columns, y along the rows, both normalised to [-1, 1], and a 1 for the translation."""
    xp = backend.xp
    dtype = backend.get_default_dtype() if dtype is None else dtype
    grid = xp.ones((h, w, 3), dtype=dtype)
    grid[:, :, 0] = _normalised_centres(w, align_corners, dtype)[None, :]
    grid[:, :, 1] = _normalised_centres(h, align_corners, dtype)[:, None]
    return grid


class AffineGrid(Function):
    """grid[n, i, j] = theta[n] (x_j, y_i, 1)^T: the base grid B, as a (h w, 3) matrix, times
    theta[n]^T. Backward: dJ/dtheta[n] = dJ/dgrid[n]^T B, dJ/dgrid[n] viewed as (h w, 2)."""

    def forward(self, theta):
        h, w = self.out_hw
        self.base = base_grid(h, w, self.align_corners, theta.dtype).reshape(h * w, 3)
        grid = backend.xp.matmul(self.base, theta.transpose(0, 2, 1))
        return grid.reshape(theta.shape[0], h, w, 2)

    def backward(self, dgrid):
        rows = dgrid.reshape(dgrid.shape[0], -1, 2)
        return (backend.xp.matmul(rows.transpose(0, 2, 1), self.base),)

    backward_graph = Function.linear_backward_graph


def _check_floating(t: Tensor, what: str, op: str) -> None:
    if t.dtype.kind != "f":
        raise ValueError(f"{op}: expected a floating-point {what}, got dtype {t.dtype} (convert it first, e.g. "
                         "with .astype(numpy.float32))")


def _nhwc_size(size, op: str) -> tuple[int, int, int, int]:
    if not isinstance(size, (tuple, list)) or len(size) != 4 or not all(
            isinstance(s, numbers.Integral) and not isinstance(s, bool) for s in size):
        raise ValueError(f"{op}: expected size as 4 ints (N, H, W, C), got {size!r}")
    size = tuple(int(s) for s in size)
    if min(size) < 0 or min(size[1:3]) < 1:
        raise ValueError(f"{op}: expected a size (N, H, W, C) with H, W >= 1 and N, C >= 0, got {size}")
    return size


def affine_grid(theta, size, align_corners: bool = False) -> Tensor:
    """The sampling grid of the affine maps ``theta`` (N, 2, 3) for an output of ``size``
    (N, H, W, C), NHWC: (N, H, W, 2), point (i, j) of image n being

        (x^s, y^s) = theta[n] (x_j^t, y_i^t, 1)^T,

    (x^t, y^t) the normalised target coordinates of pixel (i, j) (see :func:`base_grid`).
    The identity theta = [[1, 0, 0], [0, 1, 0]] gives every pixel its own centre; theta[:, :, 2]
    translates, in half image widths and heights. As ``torch.nn.functional.affine_grid(theta,
    (N, C, H, W))``; differentiable in theta.
    """
    theta = _tensor(theta)
    if len(theta.shape) != 3 or tuple(theta.shape[1:]) != (2, 3):
        raise ShapeError(f"affine_grid: expected theta of shape (N, 2, 3), got shape {tuple(theta.shape)}")
    _check_floating(theta, "theta", "affine_grid")
    n, h, w, _ = _nhwc_size(size, "affine_grid")
    if n != theta.shape[0]:
        raise ShapeError(f"affine_grid: theta of shape {tuple(theta.shape)} holds {theta.shape[0]} transforms "
                         f"but size {tuple(size)} asks for a batch of {n}; expected equal batch sizes")
    return AffineGrid.apply(theta, out_hw=(h, w), align_corners=bool(align_corners))


# -- from normalised coordinates to pixels ------------------------------------------------
def _reflect(coord, twice_low: int, twice_high: int):
    """``coord`` folded back and forth into [low, high] (as a mirror at each end), and the
    sign of d(folded)/d(coord). The bounds come doubled so that they stay integers."""
    xp = backend.xp
    if twice_low == twice_high:
        return xp.zeros_like(coord), xp.zeros_like(coord)
    low = twice_low / 2
    span = (twice_high - twice_low) / 2
    shifted = coord - low
    sign = xp.where(shifted < 0, -1.0, 1.0).astype(coord.dtype)
    shifted = xp.abs(shifted)
    extra = xp.fmod(shifted, span)
    even = xp.floor(shifted / span) % 2 == 0
    folded = xp.where(even, extra + low, span - extra + low)
    return folded, xp.where(even, sign, -sign)


def source_pixels(coord, size: int, padding_mode: str = "zeros", align_corners: bool = False):
    """Normalised coordinates along an axis of ``size`` pixels as pixel coordinates, and the
    derivative of the pixel coordinate with respect to the normalised one:

        u = (c + 1) (size - 1) / 2    (align_corners)     u = ((c + 1) size - 1) / 2    (otherwise)

    'border' then clips u into [0, size - 1] (derivative 0 where clipped); 'reflection'
    mirrors u at the borders (at the corner pixels' centres with aligned corners, at the
    image's outer edges otherwise) until it falls inside, then clips; 'zeros' leaves u as it is.
    """
    xp = backend.xp
    if align_corners:
        pixel = (coord + 1) / 2 * (size - 1)
        slope = xp.full(coord.shape, (size - 1) / 2, dtype=coord.dtype)
    else:
        pixel = ((coord + 1) * size - 1) / 2
        slope = xp.full(coord.shape, size / 2, dtype=coord.dtype)
    if padding_mode == "reflection":
        pixel, sign = _reflect(pixel, 0, 2 * (size - 1)) if align_corners else _reflect(pixel, -1, 2 * size - 1)
        slope = slope * sign
    if padding_mode in ("border", "reflection"):
        slope = slope * ((pixel > 0) & (pixel < size - 1))
        pixel = xp.clip(pixel, 0, size - 1)
    return pixel, slope


# -- the sampling matrix --------------------------------------------------------------------
def _bilinear_taps(u, v, h: int, w: int, first_pixel):
    """The four neighbours of each source point (u, v) = (column, row): their flat indices
    (P, 4) into the (N H W) pixels, their weights (1 - f_u or f_u) (1 - f_v or f_v), the
    weights' derivatives in u and in v, and whether they lie inside the image. Neighbours
    outside the image get weight 0 (and the index of a pixel inside it)."""
    xp = backend.xp
    u0, v0 = xp.floor(u), xp.floor(v)
    fu, fv = u - u0, v - v0
    along_u = ((u0, 1 - fu, -1.0), (u0 + 1, fu, 1.0))
    along_v = ((v0, 1 - fv, -1.0), (v0 + 1, fv, 1.0))
    index, weight, d_u, d_v, within = [], [], [], [], []
    for row, wv, sv in along_v:
        for col, wu, su in along_u:
            within.append((row >= 0) & (row < h) & (col >= 0) & (col < w))
            inside = within[-1].astype(u.dtype)
            index.append(first_pixel + xp.clip(row, 0, h - 1).astype(xp.intp) * w
                         + xp.clip(col, 0, w - 1).astype(xp.intp))
            weight.append(wu * wv * inside)
            d_u.append(su * wv * inside)
            d_v.append(wu * sv * inside)
    return [xp.stack(taps, axis=1) for taps in (index, weight, d_u, d_v, within)]


def _nearest_tap(u, v, h: int, w: int, first_pixel):
    """The pixel nearest each source point (halves rounded to even, as ``rint``): its flat
    index (P, 1) and weight (1 inside the image, 0 outside)."""
    xp = backend.xp
    col, row = xp.rint(u), xp.rint(v)
    inside = ((row >= 0) & (row < h) & (col >= 0) & (col < w)).astype(u.dtype)
    index = first_pixel + xp.clip(row, 0, h - 1).astype(xp.intp) * w + xp.clip(col, 0, w - 1).astype(xp.intp)
    return index[:, None], inside[:, None]


def _inside_taps(index, values, inside, pixels):
    """S x summed over the taps inside the image alone: a NaN or inf pixel then reaches only
    the points with a tap on it (0 * NaN where that tap's weight is 0, as in PyTorch), not
    the points whose weight-0 taps outside the image were clipped onto it."""
    xp = backend.xp
    out = None
    for t in range(index.shape[1]):
        term = xp.where(inside[:, t, None], values[:, t, None] * pixels[index[:, t]], 0)
        out = term if out is None else out + term
    return out


class SamplingMatrix:
    """A (P, M) matrix with k entries per row, ``values[p, t]`` in column ``index[p, t]``
    (repeated columns add up): the sampling S of :class:`GridSample`. On NumPy arrays it is a
    SciPy CSR matrix (products in compiled loops, the transpose product in one pass); on
    other array libraries, gathers for S a and ``bincount`` per channel for S^T b."""

    def __init__(self, index, values, num_columns: int):
        self.index, self.values, self.num_columns = index, values, num_columns
        self.sparse = None
        if type(values) is numpy.ndarray:
            from scipy import sparse

            p, k = index.shape
            self.sparse = sparse.csr_matrix((values.reshape(-1), index.reshape(-1), numpy.arange(0, p * k + 1, k)),
                                            shape=(p, num_columns))

    def with_values(self, values) -> SamplingMatrix:
        """The matrix with the same pattern and other entries."""
        return SamplingMatrix(self.index, values, self.num_columns)

    def times(self, a):
        """S a for a of shape (M, C): (P, C)."""
        if self.sparse is not None:
            return numpy.asarray(self.sparse @ a)
        out = self.values[:, 0, None] * a[self.index[:, 0]]
        for t in range(1, self.index.shape[1]):
            out += self.values[:, t, None] * a[self.index[:, t]]
        return out

    def transpose_times(self, b):
        """S^T b for b of shape (P, C): (M, C), each row b[p] added into the columns of row p."""
        if self.sparse is not None:
            return numpy.asarray(self.sparse.T @ b)
        xp = backend.xp
        flat_index = self.index.reshape(-1)
        out = xp.empty((self.num_columns, b.shape[1]), dtype=b.dtype)
        for c in range(b.shape[1]):
            out[:, c] = xp.bincount(flat_index, weights=(self.values * b[:, c, None]).reshape(-1),
                                    minlength=self.num_columns)
        return out


class GridSample(Function):
    """out[n, i, j] = sum over the taps t of w_t x[n, v_t, u_t]: the input read at the source
    point of ``grid[n, i, j]`` (pixel coordinates from :func:`source_pixels`), as out = S x
    with x viewed as (N H W, C) (:class:`SamplingMatrix`).

    Backward: dJ/dx = S^T dJ/dy; for the grid (bilinear), dJ/du = sum over c of
    (S_u x)[p, c] dJ/dy[p, c], S_u holding dw_t/du in place of w_t (and likewise for v), times
    du/dgrid. Nearest sampling is piecewise constant in the grid: its grid gradient is 0.
    """

    def forward(self, x, grid):
        xp = backend.xp
        n, h, w, c = x.shape
        _, ho, wo, _ = grid.shape
        points = grid.reshape(-1, 2)
        u, self.slope_u = source_pixels(points[:, 0], w, self.padding_mode, self.align_corners)
        v, self.slope_v = source_pixels(points[:, 1], h, self.padding_mode, self.align_corners)
        first_pixel = xp.repeat(xp.arange(n, dtype=xp.intp) * (h * w), ho * wo)
        if self.mode == "nearest":
            index, weight = _nearest_tap(u, v, h, w, first_pixel)
            inside = weight != 0
            self.d_u = self.d_v = None
        else:
            index, weight, self.d_u, self.d_v, inside = _bilinear_taps(u, v, h, w, first_pixel)
        self.matrix = SamplingMatrix(index, weight.astype(x.dtype, copy=False), n * h * w)
        self.pixels = x.reshape(n * h * w, c)
        self.shapes, self.grid_dtype = (x.shape, grid.shape), grid.dtype
        out = self.matrix.times(self.pixels)
        if not xp.isfinite(out).all():
            out = _inside_taps(index, self.matrix.values, inside, self.pixels)
        return out.reshape(n, ho, wo, c)

    def backward(self, dy):
        xp = backend.xp
        x_shape, grid_shape = self.shapes
        rows = dy.reshape(-1, x_shape[3])
        dx = self.matrix.transpose_times(rows).reshape(x_shape) if self.needs_grad[0] else None
        dgrid = None
        if self.needs_grad[1]:
            if self.d_u is None:
                dgrid = xp.zeros(grid_shape, dtype=self.grid_dtype)
            else:
                dgrid = xp.empty((rows.shape[0], 2), dtype=self.grid_dtype)
                for axis, (d_weight, slope) in enumerate(((self.d_u, self.slope_u), (self.d_v, self.slope_v))):
                    along = self.matrix.with_values(d_weight.astype(dy.dtype, copy=False)).times(self.pixels)
                    dgrid[:, axis] = (along * rows).sum(axis=1) * slope
                dgrid = dgrid.reshape(grid_shape)
        return dx, dgrid


    def composite(self, x, grid):
        """The same sampling by recorded ops (for gradients of gradients): the neighbours'
        values gathered from x, times weights computed from the grid tensor. The pixel
        coordinate is piecewise linear in the grid, u = slope * g + (u - slope * g) with the
        slope and offset of this point's piece as constants; which pixels are neighbours and
        whether they lie inside the image are constants too."""
        n, h, w, c = x.shape
        pixels = x.reshape(n * h * w, c)
        index = self.matrix.index
        if self.mode == "nearest":
            return (pixels[index[:, 0]] * self.matrix.values[:, :1]).reshape(n, *grid.shape[1:3], c)
        points = grid.reshape(-1, 2)
        coords = []
        for axis, size in ((0, w), (1, h)):
            values, slope = source_pixels(points.data[:, axis], size, self.padding_mode, self.align_corners)
            coords.append((points[:, axis] * slope + (values - slope * points.data[:, axis]), values))
        (u, u_values), (v, v_values) = coords
        u0, v0 = backend.xp.floor(u_values), backend.xp.floor(v_values)
        fu, fv = u - u0, v - v0
        out, tap = None, 0
        for row, wv in ((v0, 1 - fv), (v0 + 1, fv)):
            for col, wu in ((u0, 1 - fu), (u0 + 1, fu)):
                inside = (row >= 0) & (row < h) & (col >= 0) & (col < w)
                term = pixels[index[:, tap]] * (wu * wv * inside).reshape(-1, 1)
                out = term if out is None else out + term
                tap += 1
        return out.reshape(n, *grid.shape[1:3], c)

    backward_graph = Function.composite_backward_graph


def _choice(value, allowed: tuple[str, ...], what: str) -> str:
    if not isinstance(value, str) or value.lower() not in allowed:
        raise ValueError(f"grid_sample: {what} must be one of {list(allowed)}, got {value!r}")
    return value.lower()


def grid_sample(x, grid, mode: str = "bilinear", padding_mode: str = "zeros", align_corners: bool = False) -> Tensor:
    """The images x (N, H, W, C) read at the points of ``grid`` (N, H_o, W_o, 2), normalised
    (x, y) in [-1, 1]: (N, H_o, W_o, C). As ``torch.nn.functional.grid_sample`` on the NCHW
    layout.

    A point becomes pixel coordinates (u, v) (:func:`source_pixels`). 'bilinear' weighs the
    four neighbours,

        out = sum over (p, q) of x[v_p, u_q] (1 - |v - v_p|) (1 - |u - u_q|),
        v_p in {floor(v), floor(v) + 1}, u_q in {floor(u), floor(u) + 1},

    and 'nearest' takes the nearest pixel. ``padding_mode`` says what lies outside the image:
    'zeros' (neighbours outside count as 0), 'border' (the source point clipped to the
    image: edge pixels repeat) or 'reflection' (the image mirrored at its borders).
    Differentiable in x and, for 'bilinear', in the grid (Jaderberg et al.'s sub-gradients:
    the bilinear kernel is not differentiable where u or v is a whole pixel).
    """
    x, grid = _tensor(x), _tensor(grid)
    mode = _choice(mode, MODES, "mode")
    padding_mode = _choice(padding_mode, PADDING_MODES, "padding_mode")
    if len(x.shape) != 4 or 0 in x.shape[1:3]:
        raise ShapeError(f"grid_sample: expected images x of shape (N, H, W, C) with H, W >= 1, got shape "
                         f"{tuple(x.shape)}")
    if len(grid.shape) != 4 or grid.shape[3] != 2 or grid.shape[0] != x.shape[0]:
        raise ShapeError(f"grid_sample: expected a grid of shape (N, H_o, W_o, 2) with N = {x.shape[0]} for x of "
                         f"shape {tuple(x.shape)}, got shape {tuple(grid.shape)}")
    _check_floating(x, "x", "grid_sample")
    _check_floating(grid, "grid", "grid_sample")
    if math.prod(grid.shape) and not bool(backend.xp.isfinite(grid.data).all()):
        raise ValueError(f"grid_sample: the grid of shape {tuple(grid.shape)} holds NaN or infinite coordinates")
    return GridSample.apply(x, grid, mode=mode, padding_mode=padding_mode, align_corners=bool(align_corners))
