"""Adaptive pooling: pooling of NHWC images to a fixed output size, whatever the input size.

A classifier head that pools to (o_h, o_w) takes images of any size (ResNet's and VGG's
adaptive average pooling before the dense layers). The windows are PyTorch's: along an
axis of length n pooled to o values, output i covers the input indices

    start_i = floor(i n / o)  <=  k  <  end_i = ceil((i + 1) n / o),

so neighbouring windows may overlap, and differ in size, when o does not divide n;
for o > n, inputs are repeated. Where o_h divides H and o_w divides W the windows are the
disjoint (H / o_h, W / o_w) windows of plain pooling, which does the work.

Otherwise the average over window (i, j) factors into a mean over rows then over columns,
y = A_h x A_w^T per channel, A (o, n) holding 1 / (end_i - start_i) on window i's inputs:
two matrix products forward, their transposes backward (where the forward's products leave a
NaN or inf, the windows are summed again one by one, so that it reaches only the windows that
hold it rather than every output through 0 * NaN). The maximum factors the same way,
over columns first (keeping the first column of each row's maximum), then over rows
(keeping the first row): that is the first maximum in row-major window order, where
PyTorch sends the gradient. Each step is one reduction per output column or row, never a
loop over pixels.

Both backwards are differentiable (``grad(..., create_graph=True)``): the average is linear
in x, and the maximum's backward is linear in dJ/dy with its routing frozen
(:class:`lamina.functional.pooling.FixedRouting`).
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional.im2col import check_nhwc
from lamina.functional.interpolate import resize_taps, tap_sum
from lamina.functional.pooling import FixedRouting, avg_pool2d, max_pool2d
from lamina.functional.shape import reshape

__all__ = [
    "adaptive_avg_pool1d", "adaptive_avg_pool2d", "adaptive_max_pool1d", "adaptive_max_pool1d_with_indices",
    "adaptive_max_pool2d", "adaptive_max_pool2d_with_indices", "adaptive_output_size", "adaptive_windows",
    "maxima_positions",
]


def adaptive_windows(n: int, o: int) -> list[tuple[int, int]]:
    """The (start, end) input range of each of ``o`` windows over an axis of length ``n``:
    start_i = floor(i n / o), end_i = ceil((i + 1) n / o)."""
    return [(i * n // o, -(-(i + 1) * n // o)) for i in range(o)]


def adaptive_output_size(output_size, in_hw: tuple[int, ...], op: str) -> tuple[int, ...]:
    """``output_size`` (an int, or one entry per spatial axis, None keeping that axis's
    input size) as a tuple of positive ints, one per axis of ``in_hw``."""
    entries = output_size if isinstance(output_size, (tuple, list)) else (output_size,) * len(in_hw)
    if len(entries) != len(in_hw):
        raise ValueError(f"{op}: output_size must be an int or {len(in_hw)} ints (or None), got {output_size!r}")
    sizes = []
    for entry, n in zip(entries, in_hw):
        if entry is None:
            entry = n
        if isinstance(entry, bool) or not isinstance(entry, int) or entry < 1:
            raise ValueError(f"{op}: output_size must hold positive ints (or None), got {output_size!r}")
        sizes.append(int(entry))
    return tuple(sizes)


def _mean_matrix(n: int, o: int, dtype):
    """A (o, n): row i holds 1 / (end_i - start_i) over window i's inputs, 0 elsewhere."""
    a = backend.xp.zeros((o, n), dtype=dtype)
    for i, (start, end) in enumerate(adaptive_windows(n, o)):
        a[i, start:end] = 1.0 / (end - start)
    return a


class AdaptiveAvgPool2d(Function):
    """y[n, i, j, c] = sum_{p, q} A_h[i, p] x[n, p, q, c] A_w[j, q];
    dJ/dx[n, p, q, c] = sum_{i, j} A_h[i, p] dJ/dy[n, i, j, c] A_w[j, q]."""

    def forward(self, x):
        xp = backend.xp
        n, h, w, c = x.shape
        oh, ow = self.outs
        self.x_shape = x.shape
        self.rows, self.cols = _mean_matrix(h, oh, x.dtype), _mean_matrix(w, ow, x.dtype)
        over_rows = xp.matmul(self.rows, x.reshape(n, h, w * c))                  # (n, oh, w c)
        out = xp.matmul(self.cols, over_rows.reshape(n * oh, w, c))               # (n oh, ow, c)
        if not xp.isfinite(out).all():
            over_rows = tap_sum(x, *resize_taps(oh, h, "area"), axis=1)
            return tap_sum(over_rows, *resize_taps(ow, w, "area"), axis=2)
        return out.reshape(n, oh, ow, c)

    def backward(self, dy):
        xp = backend.xp
        n, h, w, c = self.x_shape
        oh, ow = self.outs
        over_rows = xp.matmul(self.cols.T, dy.reshape(n * oh, ow, c))             # (n oh, w, c)
        dx = xp.matmul(self.rows.T, over_rows.reshape(n, oh, w * c))              # (n, h, w c)
        return (dx.reshape(self.x_shape),)

    backward_graph = Function.linear_backward_graph


class AdaptiveMaxPool2d(Function):
    """y[n, i, j, c] = max over window (i, j) of x[n, :, :, c]; dJ/dy goes to the first
    maximum in row-major order (the last NaN in a window holding one, as PyTorch), added up
    where overlapping windows pick the same input."""

    def forward(self, x):
        out = self._pool(x, _argmax)
        if backend.xp.isnan(out).any():     # route to each window's last NaN instead, as PyTorch
            out = self._pool(x, _argmax_last_nan)
        return out

    def _pool(self, x, argmax):
        """The maxima, keeping in ``row`` and ``col`` the input ``argmax`` picks in each window."""
        xp = backend.xp
        n, h, w, c = x.shape
        oh, ow = self.outs
        col_max = xp.empty((n, h, ow, c), dtype=x.dtype)
        col_arg = xp.empty((n, h, ow, c), dtype=xp.intp)      # the column of each row's maximum
        for j, (start, end) in enumerate(adaptive_windows(w, ow)):
            window = x[:, :, start:end]
            col_arg[:, :, j] = argmax(window, 2) + start
            col_max[:, :, j] = window.max(axis=2)
        out = xp.empty((n, oh, ow, c), dtype=x.dtype)
        self.row = xp.empty((n, oh, ow, c), dtype=xp.intp)
        for i, (start, end) in enumerate(adaptive_windows(h, oh)):
            window = col_max[:, start:end]
            self.row[:, i] = argmax(window, 1) + start
            out[:, i] = window.max(axis=1)
        self.col = xp.take_along_axis(col_arg, self.row, axis=1)
        self.x_shape = x.shape
        return out

    def backward(self, dy):
        xp = backend.xp
        n, h, w, c = self.x_shape
        dx = xp.zeros(self.x_shape, dtype=dy.dtype)
        batch = xp.arange(n).reshape(n, 1, 1, 1)
        channel = xp.arange(c).reshape(1, 1, 1, c)
        xp.add.at(dx, (batch, self.row, self.col, channel), dy)
        return (dx,)

    def backward_graph(self, dy):
        return FixedRouting(self, _read_maxima).recorded(dy)


def _argmax(window, axis: int):
    return window.argmax(axis=axis)


def _argmax_last_nan(window, axis: int):
    """The first maximum's index along ``axis``, but the last NaN's where there is one: over
    columns then rows, the last NaN of a window in row-major order."""
    xp = backend.xp
    nan = xp.isnan(window)
    last = window.shape[axis] - 1 - xp.flip(nan, axis=axis).argmax(axis=axis)
    return xp.where(nan.any(axis=axis), last, window.argmax(axis=axis))


def _read_maxima(pool: AdaptiveMaxPool2d, u):
    """u read at each window's maximum: the adjoint of the backward's scatter."""
    xp = backend.xp
    n, c = u.shape[0], u.shape[3]
    return u[xp.arange(n).reshape(n, 1, 1, 1), pool.row, pool.col, xp.arange(c).reshape(1, 1, 1, c)]


def _divides(in_hw, outs) -> bool:
    return all(n % o == 0 for n, o in zip(in_hw, outs))


def adaptive_avg_pool2d(x: Tensor, output_size: int | tuple[int | None, int | None]) -> Tensor:
    """(N, H, W, C) -> (N, o_h, o_w, C): the mean of each window (start_i, end_i) of the
    module docstring, per channel. ``output_size``: o, or (o_h, o_w) with None keeping that
    input size. dJ/dx: each window's dJ/dy shared equally among its inputs."""
    check_nhwc(tuple(x.shape), "adaptive_avg_pool2d")
    outs = _checked_outs(x, output_size, "adaptive_avg_pool2d")
    if _divides(x.shape[1:3], outs):
        return avg_pool2d(x, (x.shape[1] // outs[0], x.shape[2] // outs[1]))
    return AdaptiveAvgPool2d.apply(x, outs=outs)


def adaptive_max_pool2d(x: Tensor, output_size: int | tuple[int | None, int | None],
                        return_indices: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """(N, H, W, C) -> (N, o_h, o_w, C): the maximum of each window of the module
    docstring, per channel. dJ/dx: dJ/dy to each window's first maximum (row-major).
    ``return_indices``: also the int64 positions i W + j of those maxima in each channel's
    H x W image (PyTorch's indices, for ``max_unpool2d``)."""
    check_nhwc(tuple(x.shape), "adaptive_max_pool2d")
    outs = _checked_outs(x, output_size, "adaptive_max_pool2d")
    if _divides(x.shape[1:3], outs):
        out = max_pool2d(x, (x.shape[1] // outs[0], x.shape[2] // outs[1]))
    else:
        out = AdaptiveMaxPool2d.apply(x, outs=outs)
    if not return_indices:
        return out
    return out, Tensor(maxima_positions(x.data if isinstance(x, Tensor) else backend.xp.asarray(x), outs))


def maxima_positions(x, outs: tuple[int, int]):
    """The flat positions i W + j (int64, (N, o_h, o_w, C)) of the maxima that
    :func:`adaptive_max_pool2d` picks in the (N, H, W, C) array ``x``: each window's first
    maximum in row-major order, or its last NaN."""
    xp = backend.xp
    pool = AdaptiveMaxPool2d.__new__(AdaptiveMaxPool2d)
    pool.outs = outs
    if xp.isnan(pool._pool(x, _argmax)).any():
        pool._pool(x, _argmax_last_nan)
    return (pool.row * x.shape[2] + pool.col).astype(xp.int64)


def _checked_outs(x, output_size, op: str) -> tuple[int, int]:
    h, w = x.shape[1], x.shape[2]
    if h == 0 or w == 0:
        raise ShapeError(f"{op}: x of shape {tuple(x.shape)} has no pixels to pool; expected H, W >= 1")
    return adaptive_output_size(output_size, (h, w), op)


def _sequence_pool(pool2d, x: Tensor, output_size: int | None, op: str, **options) -> Tensor:
    """A 1-D pool on (N, T, C) as the 2-D one on the image (N, 1, T, C)."""
    if len(x.shape) != 3:
        raise ShapeError(f"{op}: expected x of shape (N, T, C) (3-D, channels last), got shape {tuple(x.shape)}")
    if isinstance(output_size, (tuple, list)):
        if len(output_size) != 1:
            raise ValueError(f"{op}: output_size must be an int (or None), got {output_size!r}")
        output_size = output_size[0]
    n, t, c = x.shape
    if t == 0:
        raise ShapeError(f"{op}: x of shape {tuple(x.shape)} has no steps to pool; expected T >= 1")
    (steps,) = adaptive_output_size(output_size, (t,), op)
    pooled = pool2d(reshape(x, (n, 1, t, c)), (1, steps), **options)
    if isinstance(pooled, tuple):                     # (maxima, their steps)
        return tuple(reshape(p, (n, steps, c)) for p in pooled)
    return reshape(pooled, (n, steps, c))


def adaptive_avg_pool1d(x: Tensor, output_size: int | None) -> Tensor:
    """(N, T, C) -> (N, o, C): the mean of each of o windows over the steps (the windows of
    :func:`adaptive_avg_pool2d` along one axis)."""
    return _sequence_pool(adaptive_avg_pool2d, x, output_size, "adaptive_avg_pool1d")


def adaptive_max_pool1d(x: Tensor, output_size: int | None,
                        return_indices: bool = False) -> Tensor | tuple[Tensor, Tensor]:
    """(N, T, C) -> (N, o, C): the maximum of each of o windows over the steps; dJ/dy goes
    to each window's first maximum. ``return_indices``: also their steps (int64)."""
    return _sequence_pool(adaptive_max_pool2d, x, output_size, "adaptive_max_pool1d", return_indices=return_indices)


def adaptive_max_pool1d_with_indices(x: Tensor, output_size: int | None,
                                     return_indices: bool = False) -> tuple[Tensor, Tensor]:
    """PyTorch's name: :func:`adaptive_max_pool1d` with its indices, (maxima, steps)."""
    return adaptive_max_pool1d(x, output_size, return_indices=True)


def adaptive_max_pool2d_with_indices(x: Tensor, output_size: int | tuple[int | None, int | None],
                                     return_indices: bool = False) -> tuple[Tensor, Tensor]:
    """PyTorch's name: :func:`adaptive_max_pool2d` with its indices, (maxima, positions i W + j)."""
    return adaptive_max_pool2d(x, output_size, return_indices=True)
