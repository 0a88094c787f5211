"""Resizing NHWC images to any size, PyTorch's ``F.interpolate`` for 4-D inputs.

Every mode is linear in the image and separable: along each spatial axis the output is a
fixed matrix times the input, so

    y[n, :, :, c] = A_h x[n, :, :, c] A_w^T,      A_h (H_out, H), A_w (W_out, W),

and the backward is dJ/dx = A_h^T dJ/dy A_w: two batched matrix products each way. The
modes differ only in the rows of A. For output index i, with scale r = n_in / n_out (or
1 / scale_factor when a scale factor is given, as PyTorch does),

    nearest         source floor(i r)                              (PyTorch's 'nearest')
    nearest-exact   source floor((i + 1/2) r)                      (the pixel whose centre is nearest)
                    (with a size, in exact integer arithmetic: floor(i n_in / n_out) lands on the
                    integer when i n_in / n_out is one; with a scale factor, as PyTorch's CPU kernels
                    round it, below)
    bilinear        u = (i + 1/2) r - 1/2 clamped at 0, the two pixels around u weighted by
                    distance; with align_corners u = i (n_in - 1) / (n_out - 1); an axis whose
                    size is unchanged is copied (row i reads only pixel i), even with a scale factor
    bicubic         the four pixels around u (not clamped) with Keys' cubic weights (a = -0.75),
                    indices clamped to the image
    area            the mean over the window [floor(i r), ceil((i + 1) r)) (adaptive average pooling)

The nearest modes with a scale factor round as PyTorch's CPU kernels on the channels-last
(NHWC) batch. Its channels-last kernel, taken when C > 3 or H_out + W_out <= 128, computes in
float32 whatever the dtype: r = 1 / scale_factor rounded to float32, 'nearest' floors the
float32 product i r and copies rows at n_out = n_in and repeats each twice at n_out = 2 n_in,
'nearest-exact' floors (i + 1/2) r rounded to float32. Its generic kernel, taken otherwise,
computes r and the source in the input's dtype (float64 for float64), with no special sizes:
'nearest' floors i r and 'nearest-exact' floors max((i + 1/2) r - 1/2, 0) + 1/2, each rounded
to float32 first.

Output size: ``size`` (H_out, W_out), or floor(n scale_factor) per axis.
"""

from __future__ import annotations

import math
import numbers

import numpy

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError

MODES = ("nearest", "nearest-exact", "bilinear", "bicubic", "area")
_CUBIC_A = -0.75


def _cubic(t):
    """Keys' cubic convolution kernel at distances |t| < 2."""
    t = numpy.abs(t)
    a = _CUBIC_A
    near = ((a + 2) * t - (a + 3)) * t * t + 1
    far = ((a * t - 5 * a) * t + 8 * a) * t - 4 * a
    return numpy.where(t <= 1, near, numpy.where(t < 2, far, 0.0))


def _source(n_out: int, n_in: int, ratio: float, align_corners: bool):
    """Fractional source coordinate of each output index for the linear modes."""
    i = numpy.arange(n_out, dtype=numpy.float64)
    if align_corners:
        return i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else numpy.zeros(n_out)
    return (i + 0.5) * ratio - 0.5


def _nearest_source(n_out: int, n_in: int, exact: bool, ratio: float | None, precision: type | None = None):
    """The source index of each output index for 'nearest' (``exact`` False) and 'nearest-exact'
    (module docstring); ``ratio`` is 1 / scale_factor, or None for the exact n_in / n_out.
    ``precision`` is the float type of PyTorch's generic kernel, or None for its channels-last one."""
    i = numpy.arange(n_out)
    if ratio is None:
        src = ((2 * i + int(exact)) * n_in) // (2 * n_out)
    elif precision is not None:
        r, f, half = precision(ratio), i.astype(precision), precision(0.5)
        product = numpy.maximum(r * (f + half) - half, 0) + half if exact else r * f
        src = numpy.floor(product.astype(numpy.float32)).astype(int)
    elif not exact and n_out in (n_in, 2 * n_in):
        src = i * n_in // n_out
    else:
        r = numpy.float32(ratio)
        product = (i + 0.5) * numpy.float64(r) if exact else i.astype(numpy.float32) * r
        src = numpy.floor(product.astype(numpy.float32)).astype(int)
    return numpy.minimum(src, n_in - 1)


def resize_taps(n_out: int, n_in: int, mode: str, ratio: float | None = None,
                align_corners: bool = False, precision: type | None = None) -> tuple[numpy.ndarray, numpy.ndarray]:
    """The input indices (n_out, k) each output index of one axis reads and their float64
    weights (module docstring), one column per tap as PyTorch reads them: clamped indices
    repeat, a weight may be 0, and -1 pads the shorter 'area' windows. ``ratio`` defaults
    to n_in / n_out; ``precision`` (nearest modes): the float type PyTorch's generic kernel
    computes the source in, None for its channels-last kernel's float32."""
    r = n_in / n_out if ratio is None else ratio
    rows = numpy.arange(n_out)
    if mode in ("nearest", "nearest-exact"):
        source = _nearest_source(n_out, n_in, mode == "nearest-exact", ratio, precision)
        return source[:, None], numpy.ones((n_out, 1))
    if mode == "bilinear" and n_out == n_in:
        return numpy.stack([rows, rows], 1), numpy.stack([numpy.ones(n_out), numpy.zeros(n_out)], 1)
    if mode == "bilinear":
        u = numpy.maximum(_source(n_out, n_in, r, align_corners), 0.0)
        low = numpy.minimum(numpy.floor(u).astype(int), n_in - 1)
        frac = u - low
        return numpy.stack([low, numpy.minimum(low + 1, n_in - 1)], 1), numpy.stack([1 - frac, frac], 1)
    if mode == "bicubic":
        u = _source(n_out, n_in, r, align_corners)
        base = numpy.floor(u).astype(int)
        taps = base[:, None] + numpy.arange(-1, 3)
        return numpy.clip(taps, 0, n_in - 1), _cubic(u[:, None] - taps)
    if mode == "area":
        lo, hi = (rows * n_in) // n_out, -(-((rows + 1) * n_in) // n_out)
        taps = lo[:, None] + numpy.arange((hi - lo).max())
        inside = taps < hi[:, None]
        return numpy.where(inside, taps, -1), inside / (hi - lo)[:, None]
    raise ValueError(f"interpolate: mode must be one of {list(MODES)}, got {mode!r}")


def taps_matrix(index: numpy.ndarray, weight: numpy.ndarray, n_in: int) -> numpy.ndarray:
    """The (n_out, n_in) matrix of taps (:func:`resize_taps`): the weights of repeated indices added."""
    a = numpy.zeros((index.shape[0], n_in))
    rows = numpy.broadcast_to(numpy.arange(index.shape[0])[:, None], index.shape)
    used = index >= 0
    numpy.add.at(a, (rows[used], index[used]), weight[used])
    return a


def resize_matrix(n_out: int, n_in: int, mode: str, ratio: float | None = None,
                  align_corners: bool = False) -> numpy.ndarray:
    """The (n_out, n_in) float64 matrix A of one axis (module docstring); ``ratio`` defaults
    to n_in / n_out."""
    return taps_matrix(*resize_taps(n_out, n_in, mode, ratio, align_corners), n_in)


def tap_sum(x, index, weight, axis: int):
    """sum over k of weight[:, k] x[index[:, k]] along ``axis`` of x (an index of -1 reads
    nothing): what a matrix of these taps computes, but each output reads its own taps only,
    so that a NaN or inf reaches just the outputs with a tap on it (0 * NaN where the tap's
    weight is 0, as in PyTorch), not every output as 0 * NaN in the matrix product does."""
    xp = backend.xp
    shape = [1] * x.ndim
    shape[axis] = -1
    out = None
    for k in range(index.shape[1]):
        column = index[:, k]
        term = xp.take(x, xp.asarray(numpy.maximum(column, 0)), axis=axis)
        term = term * xp.asarray(weight[:, k], dtype=x.dtype).reshape(shape)
        if (column < 0).any():
            term = xp.where(xp.asarray(column >= 0).reshape(shape), term, 0)
        out = term if out is None else out + term
    return out


class Resize(Function):
    """y = A_h x A_w^T per sample and channel; hyperparameters ``a_h`` and ``a_w``, and ``taps``
    ((index, weight) of each axis, :func:`resize_taps`): where the products leave a NaN or
    inf, y is summed again tap by tap (:func:`tap_sum`), so only the outputs that read a
    non-finite input are non-finite."""

    def forward(self, x):
        n, h, w, c = x.shape
        ho, wo = self.a_h.shape[0], self.a_w.shape[0]
        rows = (self.a_h @ x.reshape(n, h, w * c)).reshape(n * ho, w, c)
        out = (self.a_w @ rows).reshape(n, ho, wo, c)
        if backend.xp.isfinite(x if x.size <= out.size else out).all():   # either is non-finite iff the other is
            return out
        (index_h, weight_h), (index_w, weight_w) = self.taps
        return tap_sum(tap_sum(x, index_h, weight_h, 1), index_w, weight_w, 2)

    def backward(self, dy):
        n, ho, wo, c = dy.shape
        h, w = self.a_h.shape[1], self.a_w.shape[1]
        d_rows = (self.a_w.T @ dy.reshape(n * ho, wo, c)).reshape(n, ho, w * c)
        return ((self.a_h.T @ d_rows).reshape(n, h, w, c),)

    backward_graph = Function.linear_backward_graph


def _pair(value, kind) -> tuple | None:
    """``value`` as a pair of ``kind`` numbers (one repeated, or a sequence of two), bools
    refused; None when it is neither."""
    def ok(v):
        return isinstance(v, kind) and not isinstance(v, bool)
    if ok(value):
        return (value, value)
    if isinstance(value, tuple | list | numpy.ndarray) and len(value) == 2 and all(ok(v) for v in value):
        return tuple(value)
    return None


def output_size(hw, size, scale_factor) -> tuple[tuple[int, int], tuple[float | None, float | None]]:
    """((H_out, W_out), (1 / scale_h, 1 / scale_w) or (None, None)) for an input of spatial
    shape ``hw`` and exactly one of ``size`` and ``scale_factor`` (ints and reals, NumPy's
    included, one or a pair)."""
    if (size is None) == (scale_factor is None):
        raise ValueError(f"interpolate: give exactly one of size and scale_factor, got size={size!r}, "
                         f"scale_factor={scale_factor!r}")
    if size is not None:
        out = _pair(size, numbers.Integral)
        if out is None or min(out) <= 0:
            raise ValueError(f"interpolate: size must be a positive int or a pair of them, got {size!r}")
        return (int(out[0]), int(out[1])), (None, None)
    scales = _pair(scale_factor, numbers.Real)
    if scales is None or not all(s > 0 for s in scales):
        raise ValueError(f"interpolate: scale_factor must be positive, one or a pair, got {scale_factor!r}")
    scales = tuple(float(s) for s in scales)
    out = tuple(int(math.floor(n * s)) for n, s in zip(hw, scales))
    if min(out) < 1:
        raise ShapeError(f"interpolate: scale_factor {scale_factor!r} leaves no pixel of an input of {hw}")
    return out, tuple(1.0 / s for s in scales)


def interpolate(x, size=None, scale_factor=None, mode: str = "nearest", align_corners: bool | None = None) -> Tensor:
    """Resize an NHWC batch (N, H, W, C) to (N, H_out, W_out, C) (module docstring), as
    ``torch.nn.functional.interpolate`` on the NCHW batch."""
    x = x if isinstance(x, Tensor) else Tensor(x)
    if x.ndim != 4:
        raise ShapeError(f"interpolate: expected x of shape (N, H, W, C) (4-D, channels last), got shape "
                         f"{tuple(x.shape)}")
    if mode not in MODES:
        raise ValueError(f"interpolate: mode must be one of {list(MODES)}, got {mode!r}")
    if align_corners is not None and mode not in ("bilinear", "bicubic"):
        raise ValueError(f"interpolate: align_corners applies to 'bilinear' and 'bicubic' only, not {mode!r}")
    (ho, wo), ratios = output_size(x.shape[1:3], size, scale_factor)
    if mode == "area":
        ratios = (None, None)
    corners = bool(align_corners)
    dtype = x.dtype
    precision = None if x.shape[3] > 3 or ho + wo <= 128 else (numpy.float64 if dtype == numpy.float64
                                                                 else numpy.float32)
    taps = tuple(resize_taps(o, n, mode, None if corners else r, corners, precision)
                 for o, n, r in zip((ho, wo), x.shape[1:3], ratios))
    a_h, a_w = (backend.xp.asarray(taps_matrix(*t, n).astype(dtype)) for t, n in zip(taps, x.shape[1:3]))
    return Resize.apply(x, a_h=a_h, a_w=a_w, taps=taps)
