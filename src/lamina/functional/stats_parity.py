"""Reductions and statistics under PyTorch's names: amax, amin, aminmax, nansum, nanmean,
median, nanmedian, kthvalue, mode, quantile, nanquantile, std_mean, var_mean, count_nonzero,
all, any, cov, corrcoef, renorm and dist.

All are built from existing ops, so each has a gradient and second derivatives. The choices
that decide which element gets the gradient follow PyTorch:

- amax/amin, and median/nanmedian over all values (no axis), split the gradient evenly among
  the elements equal to the result: y + sum(where(hit, x - y, 0)) / count has the value y
  and exactly that gradient.
- median, nanmedian, kthvalue and mode along an axis return (values, indices); the gradient
  goes to the element at the index. The median of an even count is the lower of the two middle
  values, and its index is the position it takes in a stable sort; a line with a NaN has median
  NaN at its first NaN. :mod:`lamina.functional._selection` gives kthvalue's and mode's index,
  and nanmedian's on a line of NaN alone.
- quantile sorts, then interpolates between the sorted values at floor and ceil of
  q (n - 1) ('linear', 'lower', 'higher', 'midpoint' or 'nearest', which rounds halves to
  even); a line with a NaN gives NaN, which nanquantile skips.
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional._selection import (
    INSERTION_RUN,
    equal_selection_position,
    introsort_order,
    quickselect_position,
)
from lamina.functional._util import normalize_axes
from lamina.functional.elementwise import abs as absolute
from lamina.functional.elementwise import plain_number, sqrt, where
from lamina.functional.indexing import gather
from lamina.functional.linalg_structure import diagonal
from lamina.functional.math_parity import as_tensor, clamp
from lamina.functional.reduce import in_float32, mean, var
from lamina.functional.reduce import sum as add_up
from lamina.functional.reduce_more import norm, std
from lamina.functional.shape import reshape, transpose

QUANTILE_MODES = ("linear", "lower", "higher", "midpoint", "nearest")


# -- helpers -------------------------------------------------------------------------------
def _axis(axis, ndim: int, op: str) -> int:
    if isinstance(axis, bool) or not isinstance(axis, int):
        raise ValueError(f"{op}: axis must be an int, got {axis!r}")
    return normalize_axes(axis, max(ndim, 1), op)[0]


def _to_last(x: Tensor, axis: int) -> Tensor:
    """x with ``axis`` moved to the end (a 0-d x becomes a line of one value)."""
    if x.ndim == 0:
        return reshape(x, (1,))
    order = [i for i in range(x.ndim) if i != axis] + [axis]
    return transpose(x, order) if order != list(range(x.ndim)) else x


def _kept_shape(shape, axes) -> tuple[int, ...]:
    return tuple(1 if i in axes else n for i, n in enumerate(shape))


class SpreadGradient(Function):
    """y = ``value`` (the extreme, computed already, keepdims shape); dJ/dx = dJ/dy / count where
    ``hit`` (the elements equal to it, ``count`` of them per line) and 0 elsewhere. A node of its
    own, so that an infinite extreme stays infinite (no x - y term)."""

    def forward(self, x):
        return self.value

    def backward(self, dy):
        return (backend.xp.where(self.hit, dy / self.count, 0).astype(dy.dtype, copy=False),)

    def backward_graph(self, dy):
        return (where(self.hit, dy / Tensor._wrap(self.count), 0.0),)


def _spread(x: Tensor, value, hit, axes, keepdims: bool) -> Tensor:
    """``value`` (an array of the keepdims shape) as a tensor whose gradient is split evenly
    among the elements of x where ``hit`` holds."""
    count = backend.xp.maximum(hit.sum(axis=axes, keepdims=True), 1).astype(x.dtype)
    out = SpreadGradient.apply(x, value=backend.xp.asarray(value, dtype=x.dtype), hit=hit, count=count)
    return out if keepdims else reshape(out, tuple(n for i, n in enumerate(x.shape) if i not in axes))


def _hits(a, value):
    """Where ``a`` equals ``value``; where the value is NaN, where a is NaN."""
    xp = backend.xp
    return xp.where(xp.isnan(value), xp.isnan(a), a == value) if a.dtype.kind == "f" else a == value


def _pick(x: Tensor, axis: int, index, keepdims: bool) -> Tensor:
    """The values of x at ``index`` (one per line along ``axis``, of the reduced shape)."""
    kept = backend.xp.expand_dims(index, axis) if x.ndim else index
    if x.ndim == 0:
        return x
    picked = gather(x, axis, kept)
    return picked if keepdims else reshape(picked, tuple(n for i, n in enumerate(x.shape) if i != axis))


def _indices_out(index, x_ndim: int, axis: int, keepdims: bool):
    return backend.xp.expand_dims(index, axis) if keepdims and x_ndim else index


# -- extremes and sums ---------------------------------------------------------------------
def _extreme(x, axis, keepdims: bool, largest: bool, op: str) -> Tensor:
    x = as_tensor(x)
    axes = normalize_axes(axis, x.ndim, op)
    if 0 in (x.shape[i] for i in axes):
        raise ShapeError(f"{op}: cannot reduce an empty axis: input of shape {x.shape}, axes {axes}")
    a = x.data
    value = a.max(axis=axes, keepdims=True) if largest else a.min(axis=axes, keepdims=True)
    return _spread(x, value, _hits(a, value), axes, keepdims)


def amax(x, axis=None, keepdims: bool = False) -> Tensor:
    """The largest value over ``axis`` (None: every axis; an int or a tuple); NaN wins. The
    gradient is split evenly among the elements that equal it (unlike :func:`max`)."""
    return _extreme(x, axis, keepdims, True, "amax")


def amin(x, axis=None, keepdims: bool = False) -> Tensor:
    """The smallest value over ``axis``; the gradient is split evenly among its ties."""
    return _extreme(x, axis, keepdims, False, "amin")


def aminmax(x, axis=None, keepdims: bool = False) -> tuple[Tensor, Tensor]:
    """(amin, amax) over ``axis``."""
    return amin(x, axis, keepdims), amax(x, axis, keepdims)


def nansum(x, axis=None, keepdims: bool = False) -> Tensor:
    """The sum over ``axis`` with NaN counted as 0 (NaN elements get gradient 0); bool and
    integers give int64, float16 is added up in float32, as :func:`lamina.functional.sum`."""
    x = as_tensor(x)
    if x.dtype.kind not in "fc":                  # integers hold no NaN: a plain sum
        return add_up(x, axis=axis, keepdims=keepdims)
    return add_up(where(backend.xp.isnan(x.data), 0.0, x), axis=axis, keepdims=keepdims)


def nanmean(x, axis=None, keepdims: bool = False) -> Tensor:
    """The mean over ``axis`` of the values that are not NaN (NaN where all are). NaN values
    get no gradient, also in a slice that is all NaN (where PyTorch's gradient is NaN).

    float16 is worked in float32 and rounded back. Bool and integers hold no NaN: they get
    :func:`lamina.functional.mean`'s result (which PyTorch refuses, for both).
    """
    x = as_tensor(x)
    if x.dtype.kind in "biu":
        return mean(x, axis=axis, keepdims=keepdims)
    if x.dtype == backend.xp.float16:
        return in_float32(lambda t: nanmean(t, axis, keepdims), x)
    valid = ~backend.xp.isnan(x.data)
    count = valid.sum(axis=normalize_axes(axis, x.ndim, "nanmean"), keepdims=keepdims).astype(x.dtype)
    share = backend.xp.where(count > 0, 1 / backend.xp.maximum(count, 1), backend.xp.nan)   # NaN: all NaN
    return nansum(x, axis, keepdims) * Tensor._wrap(share.astype(x.dtype))


# -- order statistics ----------------------------------------------------------------------
def _median(x, axis, keepdims: bool, ignore_nan: bool, op: str):
    x = as_tensor(x)
    xp = backend.xp
    if axis is None:
        if x.size == 0:
            raise ShapeError(f"{op}: cannot reduce an empty input of shape {x.shape}")
        flat = x.data.reshape(-1)
        nan = xp.isnan(flat)
        if not ignore_nan and nan.any():
            value = xp.asarray(xp.nan, dtype=x.dtype)
        else:
            ordered = xp.sort(flat)
            valid = flat.size - int(nan.sum())
            value = ordered[max(valid - 1, 0) // 2]
        axes = tuple(range(x.ndim))
        value = xp.asarray(value, dtype=x.dtype).reshape((1,) * x.ndim)
        return _spread(x, value, _hits(x.data, value), axes, keepdims)
    axis = _axis(axis, x.ndim, op)
    a = xp.moveaxis(x.data, axis, -1) if x.ndim else x.data.reshape(1)
    n = a.shape[-1]
    if n == 0:
        raise ShapeError(f"{op}: cannot reduce an empty axis: input of shape {x.shape}, axis {axis}")
    order = xp.argsort(a, axis=-1, kind="stable")                  # NaN last, ties in place
    nan = xp.isnan(a)
    valid = (~nan).sum(axis=-1) if ignore_nan else xp.full(a.shape[:-1], n)
    index = xp.take_along_axis(order, (xp.maximum(valid - 1, 0) // 2)[..., None], axis=-1)[..., 0]
    if not ignore_nan:
        index = xp.where(nan.any(axis=-1), nan.argmax(axis=-1), index)
    elif a.dtype.kind == "f":
        index = xp.where(valid == 0, equal_selection_position(n), index)   # a line of NaN alone
    return _pick(x, axis, index, keepdims), _indices_out(index, x.ndim, axis, keepdims)


def median(x, axis=None, keepdims: bool = False):
    """The lower median over ``axis``: for an even count n, the (n/2)-th smallest value.

    With ``axis=None`` (all values) it returns the value alone, its gradient split evenly
    among the elements equal to it. With an int ``axis`` it returns (values, indices), indices
    an integer array, the gradient going to the element at the index. NaN anywhere in a line
    makes its median NaN.
    """
    return _median(x, axis, keepdims, False, "median")


def nanmedian(x, axis=None, keepdims: bool = False):
    """:func:`median` of the values that are not NaN (NaN where all are)."""
    return _median(x, axis, keepdims, True, "nanmedian")


def kthvalue(x, k: int, axis: int = -1, keepdims: bool = False):
    """(values, indices) of the k-th smallest value (k from 1) along ``axis``; NaN counts as
    the largest value. Of equal values, the index is the one PyTorch reports."""
    x = as_tensor(x)
    xp = backend.xp
    axis = _axis(axis, x.ndim, "kthvalue")
    a = xp.moveaxis(x.data, axis, -1) if x.ndim else x.data.reshape(1)
    n = a.shape[-1]
    if isinstance(k, bool) or not isinstance(k, int) or not 1 <= k <= n:
        raise ValueError(f"kthvalue: k must be an int in [1, {n}] for axis {axis} of x of shape {x.shape}, got {k!r}")
    value = xp.partition(a, k - 1, axis=-1)[..., k - 1:k]
    hits = _hits(a, value)
    index = xp.asarray(hits.argmax(axis=-1))       # an array even for one line, so that the writes below land
    repeated = hits.sum(axis=-1) > 1
    rows, flat_index = a.reshape(-1, n), index.reshape(-1)
    for r in xp.flatnonzero(repeated.reshape(-1)).tolist():
        flat_index[r] = quickselect_position(rows[r].tolist(), k - 1)
    return _pick(x, axis, index, keepdims), _indices_out(index, x.ndim, axis, keepdims)


def _mode_lines(a):
    """The most frequent value of each line of the 2-D ``a`` (the smallest of equally
    frequent ones) and how often it occurs."""
    xp = backend.xp
    s = xp.sort(a, axis=-1)
    n = s.shape[-1]
    position = xp.arange(n)
    starts = xp.ones(s.shape, dtype=bool)
    starts[:, 1:] = s[:, 1:] != s[:, :-1]
    run = position - xp.maximum.accumulate(xp.where(starts, position, 0), axis=-1) + 1
    ends = xp.ones(s.shape, dtype=bool)
    ends[:, :-1] = starts[:, 1:]
    best = xp.where(ends, run, 0).argmax(axis=-1)
    return s[xp.arange(s.shape[0]), best], run[xp.arange(s.shape[0]), best]


def mode(x, axis: int = -1, keepdims: bool = False):
    """(values, indices) of the most frequent value along ``axis``, the smallest of equally
    frequent ones. Of its occurrences, the index is the one PyTorch reports (the last one on
    lines of up to 16 values)."""
    x = as_tensor(x)
    xp = backend.xp
    axis = _axis(axis, x.ndim, "mode")
    a = xp.moveaxis(x.data, axis, -1) if x.ndim else x.data.reshape(1)
    n = a.shape[-1]
    if n == 0:
        raise ShapeError(f"mode: cannot reduce an empty axis: input of shape {x.shape}, axis {axis}")
    rows = a.reshape(-1, n)
    value, count = _mode_lines(rows)
    last = n - 1 - (rows == value[:, None])[:, ::-1].argmax(axis=-1)
    index = last.copy()
    if n > INSERTION_RUN:
        for r in xp.flatnonzero(count > 1).tolist():
            line = rows[r].tolist()
            order = introsort_order(line)
            sorted_values = [line[i] for i in order]
            index[r] = order[max(i for i, v in enumerate(sorted_values) if v == value[r])]
    index = index.reshape(a.shape[:-1])
    return _pick(x, axis, index, keepdims), _indices_out(index, x.ndim, axis, keepdims)


def _quantile(x, q, axis, keepdims: bool, interpolation: str, ignore_nan: bool, op: str) -> Tensor:
    x = as_tensor(x)
    xp = backend.xp
    if interpolation not in QUANTILE_MODES:
        raise ValueError(f"{op}: interpolation must be one of {QUANTILE_MODES}, got {interpolation!r}")
    if x.dtype.kind != "f":
        raise TypeError(f"{op}: x must be floating, got dtype {x.dtype}")
    qs = xp.asarray(q.data if isinstance(q, Tensor) else q, dtype=x.dtype)
    if qs.ndim > 1:
        raise ShapeError(f"{op}: q must be a number or 1-D, got shape {qs.shape}")
    if qs.size and (not bool(((qs >= 0) & (qs <= 1)).all())):
        raise ValueError(f"{op}: q must lie in [0, 1], got {qs.tolist()}")
    if axis is None:
        line, axes = reshape(x, (-1,)), tuple(range(x.ndim))
    else:
        ax = _axis(axis, x.ndim, op)
        line, axes = _to_last(x, ax), (ax,)
    n = line.shape[-1]
    if n == 0:
        raise ShapeError(f"{op}: cannot reduce an empty input of shape {x.shape} over axes {axes}")
    sorted_line = gather(line, -1, xp.argsort(line.data, axis=-1, kind="stable"))
    nan = xp.isnan(line.data)
    last = xp.asarray(n - 1, dtype=x.dtype)
    if ignore_nan:
        valid = (~nan).sum(axis=-1, keepdims=True).astype(x.dtype)
        ranks = xp.where(valid == 0, last, qs.reshape(-1) * (valid - 1))
    else:
        ranks = xp.where(nan.any(axis=-1, keepdims=True), last, qs.reshape(-1) * last)
    ranks = ranks.astype(x.dtype)
    if interpolation in ("lower", "higher", "nearest"):
        rounding = {"lower": xp.floor, "higher": xp.ceil, "nearest": xp.round}[interpolation]
        out = gather(sorted_line, -1, rounding(ranks).astype(xp.int64))
    else:
        below = xp.floor(ranks)
        low = gather(sorted_line, -1, below.astype(xp.int64))
        high = gather(sorted_line, -1, xp.ceil(ranks).astype(xp.int64))
        weight = xp.full(ranks.shape, 0.5, dtype=x.dtype) if interpolation == "midpoint" else ranks - below
        out = low + Tensor._wrap(weight) * (high - low)
    reduced = [n for i, n in enumerate(x.shape) if i not in axes] if axis is not None else []
    shape = list(_kept_shape(x.shape, axes)) if keepdims else reduced
    if qs.ndim == 0:
        return reshape(out, tuple(shape))
    out = transpose(out, [out.ndim - 1] + list(range(out.ndim - 1)))
    return reshape(out, tuple([qs.size] + shape))


def quantile(x, q, axis=None, keepdims: bool = False, interpolation: str = "linear") -> Tensor:
    """The q-quantile(s) over ``axis`` (None: all values), q a number or 1-D in [0, 1] (a 1-D
    q puts its axis first). 'linear' takes sorted[r] + (r - floor r)(sorted[ceil r] - sorted[r])
    at r = q (n - 1); 'lower', 'higher', 'nearest' take the value at floor r, ceil r or the
    nearest, 'midpoint' the mean of those at floor r and ceil r. A line with a NaN gives NaN."""
    return _quantile(x, q, axis, keepdims, interpolation, False, "quantile")


def nanquantile(x, q, axis=None, keepdims: bool = False, interpolation: str = "linear") -> Tensor:
    """:func:`quantile` of the values that are not NaN (NaN where all are)."""
    return _quantile(x, q, axis, keepdims, interpolation, True, "nanquantile")


# -- moments -------------------------------------------------------------------------------
def _degrees(x, axis, correction, op: str) -> None:
    if isinstance(correction, bool) or not isinstance(correction, int) or correction < 0:
        raise ValueError(f"{op}: correction must be an int >= 0, got {correction!r}")
    axes = normalize_axes(axis, x.ndim, op)
    n = math.prod(x.shape[i] for i in axes)
    if n - correction <= 0:
        raise ValueError(f"{op}: correction={correction} leaves n - correction = {n - correction} for n = {n} "
                         f"values (input of shape {x.shape}, axes {axes}); expected n - correction > 0")


def std_mean(x, axis=None, correction: int = 1, keepdims: bool = False) -> tuple[Tensor, Tensor]:
    """(std, mean) over ``axis``, std = sqrt(sum (x - mean)^2 / (n - correction)); the
    default correction=1 is PyTorch's (the unbiased variance)."""
    x = as_tensor(x)
    _degrees(x, axis, correction, "std_mean")
    return std(x, axis=axis, keepdims=keepdims, ddof=correction), mean(x, axis=axis, keepdims=keepdims)


def var_mean(x, axis=None, correction: int = 1, keepdims: bool = False) -> tuple[Tensor, Tensor]:
    """(var, mean) over ``axis``, var = sum (x - mean)^2 / (n - correction), correction=1 by default."""
    x = as_tensor(x)
    _degrees(x, axis, correction, "var_mean")
    return var(x, axis=axis, keepdims=keepdims, ddof=correction), mean(x, axis=axis, keepdims=keepdims)


# -- counts and truth (no gradient) --------------------------------------------------------
def count_nonzero(x, axis=None) -> Tensor:
    """How many values over ``axis`` are not zero, as an int64 tensor."""
    a = as_tensor(x).data
    axes = normalize_axes(axis, a.ndim, "count_nonzero")
    return Tensor._wrap(backend.xp.asarray(backend.xp.count_nonzero(a, axis=axes), dtype=backend.xp.int64))


def all(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001 - PyTorch's name
    """Whether every value over ``axis`` is nonzero, as a boolean tensor."""
    a = as_tensor(x).data
    return Tensor._wrap(backend.xp.asarray(a.all(axis=normalize_axes(axis, a.ndim, "all"), keepdims=keepdims)))


def any(x, axis=None, keepdims: bool = False) -> Tensor:  # noqa: A001 - PyTorch's name
    """Whether some value over ``axis`` is nonzero, as a boolean tensor."""
    a = as_tensor(x).data
    return Tensor._wrap(backend.xp.asarray(a.any(axis=normalize_axes(axis, a.ndim, "any"), keepdims=keepdims)))


# -- covariance ----------------------------------------------------------------------------
def cov(x, correction: int = 1, fweights=None, aweights=None) -> Tensor:
    """The covariance matrix of the variables in the rows of ``x`` (variables, observations),
    or the variance of a 1-D x or of a single row (a 0-d result), as ``torch.cov``.

    With weights w = fweights * aweights (integer frequencies, float importances; either may
    be None), mean = sum_j w_j x_j / W, W = sum_j w_j, and
    C = sum_j w_j (x_j - mean)(x_j - mean)^T / (W - correction sum_j w_j a_j / W)
    (W - correction without aweights; N - correction without weights).
    """
    x = as_tensor(x)
    if x.ndim > 2:
        raise ShapeError(f"cov: x must be 1-D or 2-D (variables, observations), got shape {x.shape}")
    rows = reshape(x, (1, -1)) if x.ndim < 2 else x
    n = rows.shape[1]
    weight = None
    if fweights is not None:
        f = as_tensor(fweights).data
        if f.dtype.kind not in "iu" or f.shape != (n,):
            raise ValueError(f"cov: fweights must be 1-D integers of length {n} (the observations), "
                             f"got shape {f.shape} and dtype {f.dtype}")
        if (f < 0).any():
            raise ValueError("cov: fweights must be >= 0")
        weight = Tensor._wrap(f.astype(x.dtype))
    if aweights is not None:
        a = as_tensor(aweights, x)
        if a.ndim != 1 or a.shape[0] != n:
            raise ShapeError(f"cov: aweights must be 1-D of length {n} (the observations), got shape {a.shape}")
        if (a.data < 0).any():
            raise ValueError("cov: aweights must be >= 0")
        weight = a if weight is None else weight * a
    if weight is None:
        centred = rows - mean(rows, axis=1, keepdims=True)
        scaled, factor = centred, n - correction
    else:
        total = add_up(weight)
        centred = rows - add_up(rows * weight, axis=1, keepdims=True) / total
        scaled = centred * weight
        if correction == 0:
            factor = total
        elif aweights is None:
            factor = total - correction
        else:
            factor = total - correction * add_up(weight * as_tensor(aweights, x)) / total
    factor = clamp(factor, min=0.0) if isinstance(factor, Tensor) else max(factor, 0)
    with numpy.errstate(divide="ignore", invalid="ignore"):
        c = (scaled @ centred.T) / factor
    return reshape(c, ()) if rows.shape[0] == 1 else c        # one variable: 0-d, as torch squeezes it


def corrcoef(x) -> Tensor:
    """Pearson's correlation matrix of the rows of ``x``: C_ij / sqrt(C_ii C_jj), C = cov(x),
    clipped to [-1, 1] as PyTorch does."""
    c = cov(x)
    if c.ndim == 0:
        return c / c
    d = sqrt(diagonal(c))
    return clamp(c / reshape(d, (-1, 1)) / reshape(d, (1, -1)), -1.0, 1.0)


# -- norms ---------------------------------------------------------------------------------
def vector_norm(x: Tensor, p: float, axes, keepdims: bool) -> Tensor:
    """(sum |x|^p)^(1/p) over ``axes`` for any p > 0 (max |x| for inf, as :func:`norm` for 1 and 2).
    Where every value is 0 the norm is 0 with a zero gradient, as PyTorch's (the root's slope
    there is infinite: it is kept out of the graph)."""
    if p in (1, 2, math.inf):
        return norm(x, ord=p, axis=axes, keepdims=keepdims)
    total = add_up(absolute(x) ** p, axis=axes, keepdims=keepdims)
    empty = total.data == 0
    if not empty.any():
        return total ** (1.0 / p)
    return where(empty, 0.0, where(empty, 1.0, total) ** (1.0 / p))


def renorm(x, p: float, axis: int, maxnorm: float) -> Tensor:
    """x with each slice along ``axis`` (x[.., i, ..]) whose p-norm exceeds ``maxnorm`` scaled
    down to norm maxnorm: slice * maxnorm / (norm + 1e-7), as ``torch.renorm``."""
    x = as_tensor(x)
    if not isinstance(p, (int, float)) or isinstance(p, bool) or p <= 0:
        raise ValueError(f"renorm: p must be a number > 0, got {p!r}")
    if maxnorm < 0:
        raise ValueError(f"renorm: maxnorm must be >= 0, got {maxnorm!r}")
    axis = _axis(axis, x.ndim, "renorm")
    others = tuple(i for i in range(x.ndim) if i != axis)
    size = vector_norm(x, p, others, keepdims=True)
    too_long = size.data > maxnorm
    return x * where(too_long, maxnorm / (where(too_long, size, 1.0) + 1e-7), 1.0)


def _small_power_norm(difference: Tensor, p: float) -> Tensor:
    """(sum |d|^p)^(1/p) for p < 1 (p != 0), negative p included, with |0|^p taken as 0 (p > 0)
    or inf (p < 0) and no gradient to a zero difference, as PyTorch's norm backward masks it:
    for p < 0 a zero difference makes the sum inf and the result 0, with a zero gradient."""
    zero = difference.data == 0
    safe = where(zero, 1.0, absolute(difference))        # keeps 0^p, and its gradient, out of the graph
    powers = where(zero, 0.0 if p > 0 else math.inf, safe ** p)
    return add_up(powers) ** (1.0 / p)


def dist(a, b, p: float = 2) -> Tensor:
    """The p-norm of a - b over all values (broadcast), as ``torch.dist``: (sum |a - b|^p)^(1/p)
    for any finite p != 0 (for 0 < p < 1 and p < 0 not a norm, but torch's formula; p < 0 gives
    0 when a difference is 0); p = 0 counts the nonzero differences (no gradient), p = inf takes
    max |a - b| and p = -inf min |a - b| (the gradient shared evenly among tied differences)."""
    a = as_tensor(a, b)
    difference = a - b
    p = plain_number(p)
    if not isinstance(p, (int, float)) or isinstance(p, bool) or math.isnan(p):
        raise ValueError(f"dist: p must be a real number (inf and -inf included), got {p!r}")
    if p == 0:
        return Tensor._wrap(backend.xp.asarray(backend.xp.count_nonzero(difference.data), dtype=difference.dtype))
    if p < 0 and difference.size == 0:
        raise ValueError(f"dist: p={p} of empty inputs (difference of shape {difference.shape}) has no value: "
                         "a negative p needs at least one difference")
    if difference.size == 1:                 # one difference: its size, whatever p (no overflow of |d|^p)
        return reshape(absolute(difference), ())
    if p == -math.inf:
        return amin(absolute(difference))
    if p < 1:
        return _small_power_norm(difference, p)
    return vector_norm(difference, p, None, keepdims=False)
