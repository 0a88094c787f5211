"""More ops after PyTorch: combinations, histogram, index_reduce, atleast_1d/2d/3d, nan_to_num, isin.

All are composites of getitem, reshape, where and scatter_reduce (which carry first and second
derivatives) or return arrays with no gradient (histogram, isin).
"""

from __future__ import annotations

import itertools

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.elementwise import where
from lamina.functional.indexing import _raw, _shape_of, _whole_number
from lamina.functional.indexing_parity import _slice_index, scatter_reduce
from lamina.functional.math_parity import as_tensor
from lamina.functional.shape import getitem, reshape

__all__ = ["atleast_1d", "atleast_2d", "atleast_3d", "combinations", "histogram", "index_reduce", "isin",
           "nan_to_num"]


def combinations(x, r: int = 2, with_replacement: bool = False) -> Tensor:
    """The length-``r`` combinations of the 1-D x's entries (with repeats when ``with_replacement``),
    in lexicographic order of their positions, as rows of an (N, r) tensor (shape (0,) for r = 0),
    as ``torch.combinations``."""
    shape = tuple(_shape_of(x))
    if len(shape) != 1:
        raise ShapeError(f"combinations: x must be 1-D, got shape {shape}")
    r = _whole_number(r, "combinations", "r")
    if r == 0:
        return getitem(x, backend.xp.zeros(0, dtype=backend.xp.int64))
    pick = itertools.combinations_with_replacement if with_replacement else itertools.combinations
    rows = list(pick(range(shape[0]), r))
    index = backend.xp.asarray(rows, dtype=backend.xp.int64).reshape(len(rows), r)
    return getitem(x, index)


def histogram(x, bins=100, range: tuple[float, float] | None = None, weight=None,  # noqa: A002
              density: bool = False) -> tuple[Tensor, Tensor]:
    """(hist, bin_edges) of x's values, as ``torch.histogram``: ``bins`` equal bins over ``range``
    (x's min and max by default) or the increasing edges given as a 1-D tensor; each bin holds
    [e_i, e_{i+1}), the last also its top edge. ``weight`` sums weights instead of counting;
    ``density`` divides by the total times the bin width. Constant tensors of x's dtype."""
    xp = backend.xp
    values = _raw(x)
    if values.dtype.kind != "f":
        raise TypeError(f"histogram: x must be a floating tensor, got dtype {values.dtype}")
    weights = None if weight is None else _raw(weight)
    if weights is not None and weights.shape != values.shape:
        raise ShapeError(f"histogram: weight of shape {weights.shape} must match x of shape {values.shape}")
    if isinstance(bins, int):
        bins = _whole_number(bins, "histogram", "bins", low=1)
        if range is not None and float(range[0]) > float(range[1]):
            raise ValueError(f"histogram: range {range} must be increasing")
        edges = bins
    else:
        edges = xp.asarray(_raw(bins), dtype=values.dtype)
        if edges.ndim != 1 or edges.size < 2:
            raise ShapeError(f"histogram: bin edges must be 1-D with at least 2 entries, got shape {edges.shape}")
        if (xp.diff(edges) < 0).any():
            raise ValueError("histogram: bin edges must be increasing")
        range = None  # noqa: A001
    hist, bin_edges = xp.histogram(values.reshape(-1), bins=edges, range=range,
                                   weights=None if weights is None else weights.reshape(-1), density=density)
    return Tensor._wrap(hist.astype(values.dtype)), Tensor._wrap(bin_edges.astype(values.dtype))


_INDEX_REDUCTIONS = ("prod", "mean", "amax", "amin")


def index_reduce(x, axis: int, index, source, reduce: str, include_self: bool = True) -> Tensor:
    """x with the slices source[.., j, ..] reduced into x[.., index[j], ..] along ``axis`` by
    ``reduce`` ("prod", "mean", "amax" or "amin"), x's own slice taking part when ``include_self``,
    as ``torch.index_reduce``; gradients as PyTorch's (see :func:`scatter_reduce`)."""
    if reduce not in _INDEX_REDUCTIONS:
        raise ValueError(f"index_reduce: reduce must be one of {_INDEX_REDUCTIONS}, got {reduce!r}")
    axis, spread = _slice_index(x, axis, index, source, "index_reduce")
    return scatter_reduce(x, axis, spread, source, reduce, include_self=include_self)


def _at_least(tensors, shape_for, op: str):
    if len(tensors) == 1 and isinstance(tensors[0], (list, tuple)):
        tensors = tuple(tensors[0])
    if not tensors:
        raise ValueError(f"{op}: expected at least one tensor")
    out = []
    for t in tensors:
        t = as_tensor(t)
        shape = tuple(_shape_of(t))
        wanted = shape_for(shape)
        out.append(t if wanted == shape else reshape(t, wanted))
    return out[0] if len(out) == 1 else tuple(out)


def atleast_1d(*tensors):
    """Each tensor viewed with at least one axis (a scalar becomes shape (1,)), as ``torch.atleast_1d``;
    one tensor in, one out, otherwise a tuple."""
    return _at_least(tensors, lambda s: s if len(s) >= 1 else (1,), "atleast_1d")


def atleast_2d(*tensors):
    """Each tensor viewed with at least two axes: () -> (1, 1), (n,) -> (1, n), as ``torch.atleast_2d``."""
    return _at_least(tensors, lambda s: s if len(s) >= 2 else (1,) * (2 - len(s)) + s, "atleast_2d")


def atleast_3d(*tensors):
    """Each tensor viewed with at least three axes: () -> (1, 1, 1), (n,) -> (1, n, 1),
    (m, n) -> (m, n, 1), as ``torch.atleast_3d``."""
    def widen(s):
        return {0: (1, 1, 1), 1: (1, *s, 1), 2: (*s, 1)}.get(len(s), s)
    return _at_least(tensors, widen, "atleast_3d")


def nan_to_num(x, nan: float = 0.0, posinf: float | None = None, neginf: float | None = None) -> Tensor:
    """x with NaN replaced by ``nan``, +inf by ``posinf`` and -inf by ``neginf`` (the dtype's
    largest and lowest finite values by default), as ``torch.nan_to_num``; the gradient is zero
    at the replaced entries."""
    xp = backend.xp
    x = as_tensor(x)
    values = x.data
    if values.dtype.kind != "f":
        return x
    info = xp.finfo(values.dtype)
    out = x
    for mask, value in ((xp.isnan(values), nan), (xp.isposinf(values), info.max if posinf is None else posinf),
                        (xp.isneginf(values), info.min if neginf is None else neginf)):
        if mask.any():
            out = where(mask, xp.asarray(value, dtype=values.dtype), out)
    return out


def isin(elements, test_elements, assume_unique: bool = False, invert: bool = False) -> Tensor:
    """Whether each of ``elements`` occurs among ``test_elements`` (either may be a scalar), as a
    boolean tensor of elements' shape; negated with ``invert``, as ``torch.isin``."""
    xp = backend.xp
    a = xp.asarray(_raw(elements))
    b = xp.asarray(_raw(test_elements))
    return Tensor._wrap(xp.asarray(xp.isin(a, b, assume_unique=assume_unique, invert=invert)))
