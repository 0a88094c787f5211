"""Max pooling with indices and max unpooling of sequences (N, L, C) and volumes
(N, D, H, W, C), the 1-D and 3-D forms of :mod:`lamina.functional.unpool` (PyTorch's
``max_pool1d/3d(return_indices=True)``, ``max_unpool1d/3d``).

An index is the flat position of a window's first maximum within its channel's plane: the
step l for sequences, (d * H + h) * W + w for volumes, as PyTorch's. Unpooling puts each
value back at its position in a zero output. Both unpoolings are the 2-D one on a reshaped
batch: a sequence is a (1, L) image, a volume a (D * H, W) image, with the same flat indices.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.conv3d import triple
from lamina.functional.pool3d import _pool_geometry, _window_view, max_pool3d
from lamina.functional.pooling import first_inside_where_all_neg_inf
from lamina.functional.shape import reshape
from lamina.functional.unpool import MaxUnpool2d, max_pool2d_with_indices

__all__ = ["max_pool1d_with_indices", "max_pool3d_with_indices", "max_unpool1d", "max_unpool3d"]


def _single(value, what: str, op: str) -> int:
    if isinstance(value, (tuple, list)):
        if len(value) != 1:
            raise ValueError(f"{op}: {what} must be an int or a 1-tuple, got {value!r}")
        value = value[0]
    return int(value)


def _array(indices):
    return backend.xp.asarray(indices.data if isinstance(indices, Tensor) else indices)


def max_pool1d_with_indices(x, pool_size, stride=None, padding=0, ceil_mode: bool = False) -> tuple[Tensor, object]:
    """Max pooling of (N, L, C) sequences and the step of each window's first maximum
    (int64, (N, L', C)), for :func:`max_unpool1d`."""
    x = x if isinstance(x, Tensor) else Tensor(x)
    if x.ndim != 3:
        raise ShapeError(f"max_pool1d_with_indices: expected x of shape (N, L, C), got {tuple(x.shape)}")
    f = _single(pool_size, "pool_size", "max_pool1d_with_indices")
    s = f if stride is None else _single(stride, "stride", "max_pool1d_with_indices")
    p = _single(padding, "padding", "max_pool1d_with_indices")
    n, length, c = x.shape
    pooled, indices = max_pool2d_with_indices(reshape(x, (n, 1, length, c)), (1, f), (1, s), (0, p), ceil_mode)
    return reshape(pooled, (n, pooled.shape[2], c)), indices[:, 0]


def max_pool3d_with_indices(x, pool_size, stride=None, padding=0) -> tuple[Tensor, object]:
    """:func:`lamina.functional.max_pool3d` and the flat (d * H + h) * W + w position of each
    window's first maximum (int64, (N, D', H', W', C)), for :func:`max_unpool3d`."""
    xp = backend.xp
    data = x.data if isinstance(x, Tensor) else xp.asarray(x)
    f, s, pads, outs = _pool_geometry(tuple(data.shape), pool_size, stride, padding, "max_pool3d_with_indices")
    n, depth, height, width, c = data.shape
    xpad = xp.full((n,) + tuple(size + 2 * p[0] for size, p in zip(data.shape[1:4], pads)) + (c,), -xp.inf,
                   dtype=data.dtype)
    (pd, _), (ph, _), (pw, _) = pads
    xpad[:, pd:pd + depth, ph:ph + height, pw:pw + width] = data
    windows = _window_view(xpad, f, outs, s).reshape((n,) + tuple(outs) + (-1, c))
    first = windows.argmax(axis=4)
    first_inside_where_all_neg_inf(windows.max(axis=4), first, (pd, ph, pw), s, f)
    a, b, k = xp.unravel_index(first, f)
    starts = [(xp.arange(o) * si - p[0]) for o, si, p in zip(outs, s, pads)]
    d = starts[0][None, :, None, None, None] + a
    h = starts[1][None, None, :, None, None] + b
    w = starts[2][None, None, None, :, None] + k
    return max_pool3d(x, f, s, tuple(p[0] for p in pads)), ((d * height + h) * width + w).astype(xp.int64)


def _unpooled(op: str, x: Tensor, indices, image: tuple, size: tuple, out_shape: tuple) -> Tensor:
    """x and its indices seen as an (N, h, w, C) image, unpooled into ``size`` (H, W) and
    reshaped to ``out_shape``."""
    positions = size[0] * size[1]
    if indices.dtype.kind not in "iu":
        raise ValueError(f"{op}: indices must be integers, got dtype {indices.dtype}")
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= positions):
        raise ValueError(f"{op}: indices must lie in [0, {positions}) for an output of {out_shape[1:-1]}, got "
                         f"{int(indices.min())}..{int(indices.max())}")
    y = MaxUnpool2d.apply(reshape(x, image), indices=indices.reshape(image), size=size)
    return reshape(y, out_shape)


def max_unpool1d(x, indices, pool_size, stride=None, padding=0, output_size=None) -> Tensor:
    """Each value of ``x`` (N, l, C) put back at its step ``indices`` in a zero (N, L, C)
    sequence; L is ``output_size`` (an int, or (N, L, C)) or (l - 1) s - 2p + f."""
    x = x if isinstance(x, Tensor) else Tensor(x)
    indices = _array(indices)
    if x.ndim != 3 or tuple(indices.shape) != tuple(x.shape):
        raise ShapeError(f"max_unpool1d: expected x of shape (N, l, C) and indices of the same shape, got "
                         f"x {tuple(x.shape)} and indices {tuple(indices.shape)}")
    f = _single(pool_size, "pool_size", "max_unpool1d")
    s = f if stride is None else _single(stride, "stride", "max_unpool1d")
    p = _single(padding, "padding", "max_unpool1d")
    n, steps, c = x.shape
    if output_size is None:
        length = (steps - 1) * s - 2 * p + f
    else:
        sizes = tuple(output_size) if isinstance(output_size, (tuple, list)) else (output_size,)
        length = int(sizes[1] if len(sizes) == 3 else sizes[-1])
    return _unpooled("max_unpool1d", x, indices, (n, 1, steps, c), (1, length), (n, length, c))


def max_unpool3d(x, indices, pool_size, stride=None, padding=0, output_size=None) -> Tensor:
    """Each value of ``x`` (N, d, h, w, C) put back at its flat position ``indices`` in a zero
    (N, D, H, W, C) volume; (D, H, W) is ``output_size`` (3 ints, or the NDHWC shape) or, per
    axis, (n - 1) s - 2p + f."""
    x = x if isinstance(x, Tensor) else Tensor(x)
    indices = _array(indices)
    if x.ndim != 5 or tuple(indices.shape) != tuple(x.shape):
        raise ShapeError(f"max_unpool3d: expected x of shape (N, d, h, w, C) and indices of the same shape, got "
                         f"x {tuple(x.shape)} and indices {tuple(indices.shape)}")
    f = triple(pool_size, "pool_size", "max_unpool3d")
    s = f if stride is None else triple(stride, "stride", "max_unpool3d")
    p = triple(padding, "padding", "max_unpool3d")
    n, d, h, w, c = x.shape
    if output_size is None:
        size = tuple((m - 1) * si - 2 * pi + fi for m, si, pi, fi in zip((d, h, w), s, p, f))
    else:
        sizes = tuple(output_size)
        size = triple(sizes[1:4] if len(sizes) == 5 else sizes, "output_size", "max_unpool3d")
    return _unpooled("max_unpool3d", x, indices, (n, d * h, w, c), (size[0] * size[1], size[2]), (n,) + size + (c,))
