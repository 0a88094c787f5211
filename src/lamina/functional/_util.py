"""Helpers shared by the ops."""

from __future__ import annotations

import math

from lamina import backend, parallel
from lamina.errors import ShapeError

CHANNEL_ROW = 512
"""A per-channel operand is tiled to rows of about this many values (see :func:`per_channel`)."""

PER_CHANNEL_MIN = 1 << 15
"""Arrays smaller than this take the plain broadcast in :func:`per_channel`: below it the
tiling costs more than it saves (about 20 us, measured at C = 6 to 64)."""

CHANNEL_SUMS_MIN = 1 << 13
"""Arrays smaller than this take the plain reduction in :func:`channel_sums`."""

SCALAR_ROW = 1024
""":func:`with_scalar` views its array as rows of this many values."""

_scalar_rows: dict = {}


def merged_rows(arrays, c: int, target: int):
    """The ``arrays`` (all of one shape) as views whose last axis has length r c, at most
    ``target``, with r > 1: their flat values cut into rows when all are C-contiguous, else
    their last two axes merged; None where neither is possible."""
    if all(a.flags.c_contiguous for a in arrays):
        rows = arrays[0].size // c
        for r in range(min(rows, target // c), 1, -1):
            if rows % r == 0:
                return [a.reshape(rows // r, r * c) for a in arrays]
        return None
    shape = arrays[0].shape
    if len(shape) < 3 or shape[-2] * c > target or any(a.strides[-2] != c * a.strides[-1] for a in arrays):
        return None
    return [a.reshape(shape[:-2] + (shape[-2] * c,)) for a in arrays]


def channel_sums(a):
    """The sum over every axis of ``a`` but the last, as one GEMV over rows of about
    CHANNEL_ROW values (the bias rule, dJ/db = sum of dJ/dv over n, y, x); a strided
    reduction, or a GEMV over rows of only C values, runs several times slower."""
    xp = backend.xp
    c = a.shape[-1]
    rows = a.reshape(-1, c) if a.flags.c_contiguous else None
    if rows is None or xp.__name__ != "numpy" or c >= CHANNEL_ROW or a.size < CHANNEL_SUMS_MIN:
        return xp.add.reduce(a.reshape(-1, c), axis=0)
    merged = merged_rows([rows], c, CHANNEL_ROW)
    if merged is not None:
        rows = merged[0]
    total = parallel.matmul(xp.ones(rows.shape[0], dtype=rows.dtype), rows)
    return total.reshape(-1, c).sum(axis=0)


def repeated(v, r: int):
    """The vector ``v`` repeated ``r`` times end to end, as ``tile(v, r)`` (a copy), without
    ``tile``'s Python overhead (about 7 us of its 9.5 on a short vector)."""
    out = backend.xp.empty((r, v.shape[-1]), dtype=v.dtype)
    out[...] = v
    return out.reshape(-1)


def per_channel(ufunc, x, v, out=None):
    """``ufunc(x, v, out=out)`` for ``v`` one value per channel (x's last axis, NHWC).

    NumPy's inner loop runs along the last axis, so with few channels (C = 6 or 16) it is
    called once per pixel and the pass runs 2-5x slower than a plain one. Here x and out
    are viewed with rows of about CHANNEL_ROW values and ``v`` tiled to match, so the pass
    runs at memory speed; ``out`` may be ``x`` (in place). Returns ``out``.
    """
    xp = backend.xp
    if out is None:
        out = xp.empty(x.shape, dtype=xp.result_type(x, v))
    c = x.shape[-1] if x.ndim else 0
    if (xp.__name__ == "numpy" and x.ndim >= 2 and 1 < c < CHANNEL_ROW and v.shape == (c,)
            and out.shape == x.shape and x.size >= PER_CHANNEL_MIN):
        rows = merged_rows([x] if out is x else [x, out], c, CHANNEL_ROW)
        if rows is not None:
            ufunc(rows[0], repeated(v, rows[0].shape[-1] // c), out=rows[-1])
            return out
    ufunc(x, v, out=out)
    return out


def sum_to(t, shape: tuple[int, ...]):
    """:func:`unbroadcast` for a tensor, by recorded ops (for ``backward_graph``): ``t`` summed
    over the axes that broadcasting added or stretched, so that it has ``shape``."""
    shape = tuple(shape)
    if t.shape == shape:
        return t
    extra = t.ndim - len(shape)
    axes = tuple(range(extra)) + tuple(extra + i for i, n in enumerate(shape) if n == 1 and t.shape[extra + i] != 1)
    if axes:
        t = t.sum(axis=axes, keepdims=True)
    return t.reshape(shape)


def unbroadcast(grad, shape: tuple[int, ...]):
    """Sum ``grad`` down to ``shape``, undoing NumPy broadcasting (the bias rule:
    dJ/db = sum over the samples of dJ/dz)."""
    if grad.shape == shape:
        return grad
    if len(shape) == 1 and grad.ndim >= 2 and shape[0] == grad.shape[-1] > 1:
        return channel_sums(grad)            # a vector along the last axis: the bias case
    extra = grad.ndim - len(shape)
    if extra:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad


def normalize_axes(axis, ndim: int, op: str) -> tuple[int, ...]:
    """``axis`` (None, int or tuple, negatives allowed) as a sorted tuple of axes."""
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, int) else tuple(axis)
    out = []
    for a in axes:
        if not -ndim <= a < ndim:
            raise ShapeError(f"{op}: axis {a} is out of range for an input of {ndim} dimensions")
        out.append(a % ndim)
    if len(set(out)) != len(out):
        raise ShapeError(f"{op}: repeated axis in {axis}")
    return tuple(sorted(out))


def shape_error(op: str, *shapes) -> ShapeError:
    listed = " and ".join(str(tuple(s)) for s in shapes)
    return ShapeError(f"{op}: operands of shapes {listed} cannot be broadcast together")


def with_scalar(ufunc, x, value: float, out=None):
    """``ufunc(x, value, out=out)`` for a scalar ``value``, such as max(z, 0).

    NumPy runs maximum and minimum against a scalar (an operand of stride 0) one element
    at a time, 3-4x slower than against an array. So x and ``out`` (which may be x itself)
    are viewed as rows of SCALAR_ROW values and ``value`` as one such row, broadcast down
    them: the same values, computed at SIMD speed. Returns ``out``.
    """
    xp = backend.xp
    if out is None:
        out = xp.empty(x.shape, dtype=xp.result_type(x.dtype, value))
    if (xp.__name__ != "numpy" or x.size < SCALAR_ROW or out.dtype != x.dtype
            or not (x.flags.c_contiguous and out.flags.c_contiguous)):
        ufunc(x, value, out=out)
        return out
    key = (x.dtype.str, value)
    row = _scalar_rows.get(key)
    if row is None:
        if len(_scalar_rows) > 64:
            _scalar_rows.clear()
        row = xp.full(SCALAR_ROW, value, dtype=x.dtype)
        row.flags.writeable = False
        _scalar_rows[key] = row
    src, dst = x.reshape(-1), out.reshape(-1)
    body = src.size - src.size % SCALAR_ROW
    ufunc(src[:body].reshape(-1, SCALAR_ROW), row, out=dst[:body].reshape(-1, SCALAR_ROW))
    if body < src.size:
        ufunc(src[body:], row[:src.size - body], out=dst[body:])
    return out


def fill_value(value, dtype, op: str):
    """The number ``value`` as a 0-d array of ``dtype``, converted as PyTorch converts a number
    meeting a tensor: a float truncated toward zero for an integer dtype, then an integer
    wrapping around modulo 2^bits (-1 is 255 in uint8) when it lies in [min, max] of a signed
    dtype or [-max, max] of an unsigned one; anything is True or False in bool. NaN or
    infinity in an integer dtype, or an integer out of that range, raises ValueError."""
    xp = backend.xp
    dtype = xp.dtype(dtype)
    if dtype.kind not in "iu":
        return xp.asarray(value, dtype=dtype)
    number = value.item() if hasattr(value, "item") else value
    if isinstance(number, float):
        if not math.isfinite(number):
            raise ValueError(f"{op}: cannot put {number} into a tensor of dtype {dtype}; "
                             f"expected a finite number")
        number = int(number)
    limits = xp.iinfo(dtype)
    low = limits.min if dtype.kind == "i" else -limits.max
    if not low <= number <= limits.max:
        raise ValueError(f"{op}: value {number} does not fit dtype {dtype}; expected a number in "
                         f"[{low}, {limits.max}]")
    return xp.asarray(number % (limits.max + 1) if number < 0 and dtype.kind == "u" else number, dtype=dtype)
