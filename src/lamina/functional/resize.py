"""Resizing NHWC feature maps: the upsampling, zero padding and cropping of encoder-decoder
networks (U-Net, autoencoders, FCN), as Keras's UpSampling2D, ZeroPadding2D and Cropping2D.

None has weights. Each is one node whose backward is the transpose (adjoint) of its
forward: upsampling sums dJ/dy back over the outputs each input pixel fed, padding keeps
dJ/dy on the original pixels, cropping puts dJ/dy back into zeros.
"""

from __future__ import annotations

import numbers

from lamina import backend, parallel
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional.interpolate import resize_taps, tap_sum
from lamina.functional.shape import Pad

__all__ = ["INTERPOLATIONS", "bilinear_weights", "crop2d", "edge_pairs", "scale_pair", "upsample2d",
           "zero_pad2d"]

INTERPOLATIONS = ("nearest", "bilinear")


def _tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


def _check_images(x, op: str) -> tuple[int, int, int, int]:
    if len(x.shape) != 4:
        raise ShapeError(f"{op}: expected images of shape (N, H, W, C), got shape {tuple(x.shape)}")
    return tuple(x.shape)


def _int(value, what: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{what}: expected ints, got {value!r}")
    return int(value)


def scale_pair(size, what: str = "upsample2d size") -> tuple[int, int]:
    """``size`` (s or (s_h, s_w)) as a pair of positive ints."""
    if isinstance(size, (tuple, list)):
        if len(size) != 2:
            raise ValueError(f"{what}: expected an int or a pair (s_h, s_w), got {size!r}")
        pair = (_int(size[0], what), _int(size[1], what))
    else:
        pair = (_int(size, what),) * 2
    if min(pair) < 1:
        raise ValueError(f"{what}: the scale factors must be positive integers, got {size!r}")
    return pair


def edge_pairs(value, what: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """Keras's padding/cropping argument as ((top, bottom), (left, right)): an int p (every
    side), a pair (p_h, p_w) (top and bottom p_h, left and right p_w), or the pairs
    themselves; every entry a non-negative int."""
    shape_hint = "an int, (p_h, p_w) or ((top, bottom), (left, right))"
    if isinstance(value, (tuple, list)):
        if len(value) != 2:
            raise ValueError(f"{what}: expected {shape_hint}, got {value!r}")
        axes = []
        for item in value:
            if isinstance(item, (tuple, list)):
                if len(item) != 2:
                    raise ValueError(f"{what}: expected {shape_hint}, got {value!r}")
                axes.append((_int(item[0], what), _int(item[1], what)))
            else:
                axes.append((_int(item, what),) * 2)
        pairs = (axes[0], axes[1])
    else:
        p = _int(value, what)
        pairs = ((p, p), (p, p))
    if min(min(pairs[0]), min(pairs[1])) < 0:
        raise ValueError(f"{what}: expected non-negative sizes, got {value!r}")
    return pairs


# -- upsampling --------------------------------------------------------------------------
def bilinear_weights(n: int, s: int, dtype=None):
    """The (n s, n) matrix A of linear interpolation by s along one axis of length n with
    half-pixel centres: output i reads the input at

        u_i = max((i + 1/2) / s - 1/2, 0),    A[i, floor(u_i)] = 1 - frac(u_i),
                                              A[i, min(floor(u_i) + 1, n - 1)] += frac(u_i)

    (PyTorch's ``interpolate(..., align_corners=False)``, ``tf.image.resize``). Each row sums
    to 1 (the two weights fall on the same pixel at the bottom edge); s = 1 gives the
    identity."""
    xp = backend.xp
    src = xp.maximum((xp.arange(n * s) + 0.5) / s - 0.5, 0.0)[:, None]
    lo = xp.floor(src)
    hi = xp.minimum(lo + 1, n - 1)
    frac = src - lo
    cols = xp.arange(n)[None, :]
    a = (1.0 - frac) * (cols == lo) + frac * (cols == hi)
    return a if dtype is None else a.astype(dtype)


class UpsampleNearest(Function):
    """y[n, i, j, c] = x[n, floor(i / s_h), floor(j / s_w), c]: each pixel repeated as an
    s_h x s_w block. Backward: dJ/dx[n, p, q, c] = the sum of dJ/dy over the block of (p, q),
    dy viewed as (N, H, s_h, W, s_w, C) and summed over the two block axes."""

    def forward(self, x):
        n, h, w, c = x.shape
        sh, sw = self.size
        self.in_shape = x.shape
        out = backend.xp.empty((n, h, sh, w, sw, c), dtype=x.dtype)
        out[...] = x[:, :, None, :, None, :]
        return out.reshape(n, h * sh, w * sw, c)

    def backward(self, dy):
        n, h, w, c = self.in_shape
        sh, sw = self.size
        return (dy.reshape(n, h, sh, w, sw, c).sum(axis=(2, 4)),)

    backward_graph = Function.linear_backward_graph


class UpsampleBilinear(Function):
    """y = A_h x A_w^T per image and channel, A the (n s, n) interpolation matrices of
    :func:`bilinear_weights`: every output value the weighted sum of the (up to) four input
    pixels around its source point. Applied separably as two matrix products, along H
    (x viewed as (N, H, W C)) and then along W (viewed as (N H_out, W, C)); where that leaves a
    NaN or inf, the two taps of each output are summed again alone (so that only the outputs
    reading a non-finite pixel are non-finite, as in PyTorch). Backward is the transpose:
    dJ/dx = A_h^T dJ/dy A_w, the products with A_w^T then A_h^T in reverse order."""

    def forward(self, x):
        n, h, w, c = x.shape
        sh, sw = self.size
        self.in_shape = x.shape
        self.a_h = bilinear_weights(h, sh, x.dtype) if sh > 1 else None
        self.a_w = bilinear_weights(w, sw, x.dtype) if sw > 1 else None
        y = x
        if self.a_h is not None:
            y = parallel.matmul(self.a_h, y.reshape(n, h, w * c))
        y = y.reshape(n * h * sh, w, c)
        if self.a_w is not None:
            y = parallel.matmul(self.a_w, y)
        y = y.reshape(n, h * sh, w * sw, c)
        if backend.xp.isfinite(x).all():          # the input is non-finite exactly when the output is
            return y
        y = tap_sum(x, *resize_taps(h * sh, h, "bilinear", 1 / sh), axis=1) if sh > 1 else x
        return tap_sum(y, *resize_taps(w * sw, w, "bilinear", 1 / sw), axis=2) if sw > 1 else y

    def backward(self, dy):
        n, h, w, c = self.in_shape
        sh, sw = self.size
        g = dy.reshape(n * h * sh, w * sw, c)
        if self.a_w is not None:
            g = parallel.matmul(self.a_w.T, g)
        g = g.reshape(n, h * sh, w * c)
        if self.a_h is not None:
            g = parallel.matmul(self.a_h.T, g)
        return (g.reshape(self.in_shape),)

    backward_graph = Function.linear_backward_graph


def upsample2d(x, size=2, interpolation: str = "nearest") -> Tensor:
    """(N, H, W, C) -> (N, s_h H, s_w W, C) for integer scale factors ``size`` (s or
    (s_h, s_w)), as Keras's UpSampling2D.

    'nearest': y[n, i, j, c] = x[n, floor(i / s_h), floor(j / s_w), c] (every pixel
    repeated s_h x s_w times). 'bilinear': half-pixel centres, output row i reading input
    row u_i = max((i + 1/2) / s_h - 1/2, 0) and likewise along W,

        y[i, j] = sum over p, q of A_h[i, p] A_w[j, q] x[p, q],
        A[i, floor(u_i)] = 1 - frac(u_i),  A[i, min(floor(u_i) + 1, n - 1)] += frac(u_i),

    which is PyTorch's ``F.interpolate(mode='bilinear', align_corners=False)`` and
    ``tf.image.resize`` (at the borders the edge pixel is repeated). Backward: the sum of
    dJ/dy over each s_h x s_w block (nearest), A_h^T dJ/dy A_w (bilinear).
    """
    x = _tensor(x)
    _check_images(x, "upsample2d")
    pair = scale_pair(size)
    mode = interpolation.lower() if isinstance(interpolation, str) else interpolation
    if mode not in INTERPOLATIONS:
        raise ValueError(f"upsample2d: interpolation must be one of {list(INTERPOLATIONS)}, got {interpolation!r}")
    if pair == (1, 1):
        return UpsampleNearest.apply(x, size=pair)
    cls = UpsampleNearest if mode == "nearest" else UpsampleBilinear
    return cls.apply(x, size=pair)


# -- padding and cropping -----------------------------------------------------------------
def zero_pad2d(x, padding=1) -> Tensor:
    """(N, H, W, C) -> (N, top + H + bottom, left + W + right, C) with zeros around the
    images (Keras's ZeroPadding2D): y[n, top + p, left + q, c] = x[n, p, q, c], 0 elsewhere.
    ``padding``: p, (p_h, p_w) or ((top, bottom), (left, right)). Backward keeps the part of
    dJ/dy over the original pixels: dJ/dx = dJ/dy[:, top:top + H, left:left + W]."""
    x = _tensor(x)
    _check_images(x, "zero_pad2d")
    (top, bottom), (left, right) = edge_pairs(padding, "zero_pad2d padding")
    return Pad.apply(x, pad_width=((0, 0), (top, bottom), (left, right), (0, 0)), value=0.0)


class Crop2D(Function):
    """y = x[:, top:H - bottom, left:W - right] (a contiguous copy). Backward puts dJ/dy back
    at the kept pixels of zeros of the input's shape: the cropped-away pixels get 0."""

    def forward(self, x):
        (top, bottom), (left, right) = self.cropping
        _, h, w, _ = x.shape
        self.in_shape = x.shape
        self.window = (slice(None), slice(top, h - bottom), slice(left, w - right))
        return backend.xp.ascontiguousarray(x[self.window])

    def backward(self, dy):
        dx = backend.xp.zeros(self.in_shape, dtype=dy.dtype)
        dx[self.window] = dy
        return (dx,)

    backward_graph = Function.linear_backward_graph


def crop2d(x, cropping=0) -> Tensor:
    """(N, H, W, C) -> (N, H - top - bottom, W - left - right, C): the rows and columns at
    the edges removed (Keras's Cropping2D), y[n, p, q, c] = x[n, top + p, left + q, c].
    ``cropping``: c, (c_h, c_w) or ((top, bottom), (left, right)); at least one row and one
    column must remain. Backward: dJ/dx is dJ/dy padded back with zeros."""
    x = _tensor(x)
    _, h, w, _ = _check_images(x, "crop2d")
    pairs = edge_pairs(cropping, "crop2d cropping")
    (top, bottom), (left, right) = pairs
    if top + bottom >= h or left + right >= w:
        raise ShapeError(f"crop2d: cropping {pairs} removes every row or column of images of shape "
                         f"{tuple(x.shape)}; expected at most H - 1 = {h - 1} rows and W - 1 = {w - 1} "
                         "columns cropped")
    return Crop2D.apply(x, cropping=pairs)
