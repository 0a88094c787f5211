"""Padding of channel-last sequences (N, L, C) and volumes (N, D, H, W, C) by mode, the 1-D
and 3-D companions of :func:`lamina.functional.padding.pad2d` (same modes, same limits):

    constant    ``value`` (0 by default)
    reflect     mirror about the edge, not repeating it   ... x2 x1 | x0 x1 x2 ...
    replicate   repeat the edge                           ... x0 x0 | x0 x1 x2 ...
    circular    wrap around                               ... x4 x5 | x0 x1 x2 ...

Amounts are listed outer axis first, each axis (before, after): (left, right) for a sequence,
(front, back, top, bottom, left, right) for a volume, where PyTorch's ``F.pad`` lists the last
axis first. Each non-constant mode reads y = x[..., r(p), ...] along each padded axis (an
index selection), so dJ/dx adds every border gradient back to the value it copied.
"""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.indexing import index_select
from lamina.functional.padding import PAD_MODES, _index_map
from lamina.functional.shape import pad

__all__ = ["pad1d", "pad3d", "pad_amounts", "pad_axes"]

_LIMITS = {
    "reflect": ("less than", lambda amount, size: amount < size),
    "circular": ("at most", lambda amount, size: amount <= size),
    "replicate": ("(any amount) with at least one value on", lambda amount, size: size >= 1),
}


def pad_amounts(padding, spatial: int, op: str) -> tuple[tuple[int, int], ...]:
    """``padding`` as one (before, after) pair per spatial axis: an int p (everywhere), one int
    per axis (both sides), 2 * spatial ints (before, after of each axis, outer axis first) or
    one (before, after) pair per axis; non-negative ints."""
    expected = (f"an int, {spatial} ints (one per axis), {2 * spatial} ints (before, after per axis, outer "
                f"axis first) or {spatial} (before, after) pairs")
    if isinstance(padding, (tuple, list)):
        items = list(padding)
        if len(items) == spatial and all(isinstance(p, (tuple, list)) and len(p) == 2 for p in items):
            flat = [v for p in items for v in p]
        elif len(items) == spatial and spatial > 1 or len(items) == 1:
            flat = [v for p in items for v in (p, p)]
        elif len(items) == 2 * spatial:
            flat = items
        else:
            raise ValueError(f"{op}: padding must be {expected}, got {padding!r}")
    else:
        flat = [padding] * (2 * spatial)
    if any(isinstance(p, bool) or not isinstance(p, int) or p < 0 for p in flat):
        raise ValueError(f"{op}: padding must be {expected}, of non-negative ints, got {padding!r}")
    return tuple((int(flat[2 * k]), int(flat[2 * k + 1])) for k in range(spatial))


def check_pad_fits(shape: tuple, amounts, mode: str, op: str) -> None:
    """PyTorch's limits for ``mode``: reflect needs each amount below the axis length,
    circular at most the length, replicate a non-empty axis."""
    if mode not in _LIMITS:
        return
    relation, fits = _LIMITS[mode]
    for axis, (size, (before, after)) in enumerate(zip(shape[1:-1], amounts), start=1):
        largest = max(before, after)
        if size is not None and largest and not fits(largest, size):
            raise ShapeError(f"{op}: {mode} padding {amounts} (before, after per axis) does not fit an input of "
                             f"shape {tuple(shape)}; expected each amount {relation} the length {size} of axis {axis}")


def pad_axes(x: Tensor, amounts, mode: str = "constant", value: float = 0.0, op: str = "pad_axes") -> Tensor:
    """(N, n_1, ..., n_d, C) -> (N, b_1 + n_1 + a_1, ..., C) for ``amounts`` one (b_k, a_k)
    pair per spatial axis, the border filled by ``mode``."""
    if mode not in PAD_MODES:
        raise ValueError(f"{op}: mode must be one of {list(PAD_MODES)}, got {mode!r}")
    amounts = tuple(amounts)
    if x.ndim != len(amounts) + 2:
        raise ShapeError(f"{op}: expected an input of {len(amounts) + 2} axes (batch, {len(amounts)} spatial, "
                         f"channels), got shape {tuple(x.shape)}")
    if mode == "constant":
        return pad(x, ((0, 0), *amounts, (0, 0)), value=value)
    if value != 0:
        raise ValueError(f"{op}: value={value!r} is only used by mode='constant', not {mode!r}")
    check_pad_fits(tuple(x.shape), amounts, mode, op)
    for axis, (before, after) in enumerate(amounts, start=1):
        if before or after:
            x = index_select(x, axis, _index_map(x.shape[axis], before, after, mode))
    return x


def pad1d(x: Tensor, padding, mode: str = "constant", value: float = 0.0) -> Tensor:
    """(N, L, C) -> (N, left + L + right, C); ``padding`` p or (left, right)."""
    return pad_axes(x, pad_amounts(padding, 1, "pad1d"), mode, value, "pad1d")


def pad3d(x: Tensor, padding, mode: str = "constant", value: float = 0.0) -> Tensor:
    """(N, D, H, W, C) -> (N, front + D + back, top + H + bottom, left + W + right, C);
    ``padding`` p, (p_d, p_h, p_w), (front, back, top, bottom, left, right) or
    ((front, back), (top, bottom), (left, right))."""
    return pad_axes(x, pad_amounts(padding, 3, "pad3d"), mode, value, "pad3d")
