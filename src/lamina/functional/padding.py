"""Ops that only move the pixels of NHWC images: padding by mode, and pixel (un)shuffle.

Padding (course notes, padding) adds rows and columns around each image; besides zeros (or
another constant) the new border can copy the image:

    reflect     mirror about the edge pixel, not repeating it: ... x2 x1 | x0 x1 x2 ...
    replicate   repeat the edge pixel:                          ... x0 x0 | x0 x1 x2 ...
    circular    wrap around, as on a torus:                     ... x4 x5 | x0 x1 x2 ...

Each output pixel reads one input pixel, y[n, p, q, c] = x[n, r(p), s(q), c] with r, s the
index maps along H and W, so the backward adds dJ/dy back into the pixels read:
dJ/dx[n, a, b, c] = sum over p with r(p) = a, q with s(q) = b of dJ/dy[n, p, q, c]. The
interior maps to itself; only the few border rows and columns fold back.

Pixel shuffle (depth to space) moves channels into space: (N, H, W, C r^2) ->
(N, H r, W r, C), with PyTorch's channel order

    y[n, h r + i, w r + j, c] = x[n, h, w, c r^2 + i r + j],

the sub-pixel convolution's upsampling (ESPCN); pixel unshuffle (space to depth) is its
inverse. Both are a reshape and a transpose, so their gradients are too.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional.im2col import check_nhwc
from lamina.functional.shape import Pad, reshape, transpose

__all__ = ["PAD_MODES", "pad2d", "pad_sides", "pixel_shuffle", "pixel_unshuffle"]

PAD_MODES = ("constant", "reflect", "replicate", "circular")


def pad_sides(padding, op: str) -> tuple[int, int, int, int]:
    """``padding`` as (top, bottom, left, right): an int p (every side), (p_h, p_w) (p_h rows
    above and below, p_w columns left and right), (top, bottom, left, right), or
    ((top, bottom), (left, right)); every amount a non-negative int."""
    expected = "an int, (p_h, p_w), (top, bottom, left, right) or ((top, bottom), (left, right))"
    if isinstance(padding, (tuple, list)):
        if len(padding) == 2 and all(isinstance(side, (tuple, list)) for side in padding):
            if any(len(side) != 2 for side in padding):
                raise ValueError(f"{op}: padding must be {expected}, got {padding!r}")
            sides = (*padding[0], *padding[1])
        elif len(padding) == 2:
            sides = (padding[0], padding[0], padding[1], padding[1])
        elif len(padding) == 4:
            sides = tuple(padding)
        else:
            raise ValueError(f"{op}: padding must be {expected}, got {padding!r}")
    else:
        sides = (padding,) * 4
    if any(isinstance(p, bool) or not isinstance(p, int) or p < 0 for p in sides):
        raise ValueError(f"{op}: padding must be {expected} of non-negative ints, got {padding!r}")
    return tuple(int(p) for p in sides)


def _index_map(size: int, before: int, after: int, mode: str):
    """r(p) for the size + before + after positions p along one axis."""
    xp = backend.xp
    positions = xp.arange(-before, size + after)
    if mode == "reflect":
        positions = xp.abs(positions)                                   # -k -> k
        return xp.where(positions >= size, 2 * (size - 1) - positions, positions)   # size - 1 + k -> size - 1 - k
    if mode == "replicate":
        return xp.clip(positions, 0, size - 1)
    return positions % size                                             # circular


def _fold(grad, axis: int, index, before: int, size: int):
    """The sum of ``grad``'s slices along ``axis`` into the ``size`` positions they were
    read from (``index``): the interior slice as it is, plus each border slice."""
    lead = (slice(None),) * axis
    folded = grad[lead + (slice(before, before + size),)].copy()
    for p in [*range(before), *range(before + size, grad.shape[axis])]:
        folded[lead + (int(index[p]),)] += grad[lead + (p,)]
    return folded


class IndexPad2d(Function):
    """y = x[:, r(p), s(q)] for the index maps ``rows`` and ``cols``; backward folds dJ/dy
    back along W, then along H."""

    def forward(self, x):
        self.x_shape = x.shape
        return x[:, self.rows[:, None], self.cols[None, :]]

    def backward(self, dy):
        _, h, w, _ = self.x_shape
        top, _, left, _ = self.sides
        dx = _fold(dy, 2, self.cols, left, w)
        return (_fold(dx, 1, self.rows, top, h),)

    backward_graph = Function.linear_backward_graph


def _check_fits(x_shape, sides, mode: str) -> None:
    """PyTorch's limits: reflect needs each amount below the axis length (the mirror never
    reaches past the far edge), circular at most the length (one wrap), replicate a
    non-empty axis."""
    top, bottom, left, right = sides
    for size, largest, axis in ((x_shape[1], max(top, bottom), "height"), (x_shape[2], max(left, right), "width")):
        if largest == 0:
            continue
        if mode == "reflect" and largest >= size:
            expected = f"each {axis} padding less than the {axis} {size}"
        elif mode == "circular" and largest > size:
            expected = f"each {axis} padding at most the {axis} {size}"
        elif mode == "replicate" and size == 0:
            expected = f"a {axis} of at least 1 to replicate"
        else:
            continue
        raise ShapeError(f"pad2d: {mode} padding (top, bottom, left, right) = {sides} does not fit x of shape "
                         f"{tuple(x_shape)}; expected {expected}")


def pad2d(x: Tensor, padding, mode: str = "constant", value: float = 0.0) -> Tensor:
    """(N, H, W, C) -> (N, top + H + bottom, left + W + right, C), the border filled by
    ``mode`` (see the module docstring): 'constant' (``value``, 0 by default), 'reflect'
    (each amount less than the axis length, as PyTorch), 'replicate' or 'circular' (at most
    the axis length). ``padding``: p, (p_h, p_w), (top, bottom, left, right) or
    ((top, bottom), (left, right)); note PyTorch's ``F.pad`` lists (left, right, top, bottom).
    dJ/dx: dJ/dy over the interior plus the border gradients added back to the pixels they
    copied."""
    check_nhwc(tuple(x.shape), "pad2d")
    if mode not in PAD_MODES:
        raise ValueError(f"pad2d: mode must be one of {list(PAD_MODES)}, got {mode!r}")
    sides = pad_sides(padding, "pad2d")
    top, bottom, left, right = sides
    if mode == "constant":
        return Pad.apply(x, pad_width=((0, 0), (top, bottom), (left, right), (0, 0)), value=value)
    if value != 0:
        raise ValueError(f"pad2d: value={value!r} is only used by mode='constant', not {mode!r}")
    _check_fits(x.shape, sides, mode)
    h, w = x.shape[1], x.shape[2]
    return IndexPad2d.apply(x, rows=_index_map(h, top, bottom, mode), cols=_index_map(w, left, right, mode),
                            sides=sides)


def _factor(r, op: str) -> int:
    if isinstance(r, bool) or not isinstance(r, int) or r < 1:
        raise ValueError(f"{op}: the factor r must be a positive int, got {r!r}")
    return r


def pixel_shuffle(x: Tensor, r: int) -> Tensor:
    """Depth to space: (N, H, W, C r^2) -> (N, H r, W r, C), y[n, h r + i, w r + j, c] =
    x[n, h, w, c r^2 + i r + j] (PyTorch's order, so the NCHW view of y is
    ``torch.nn.functional.pixel_shuffle`` of x's)."""
    op = "pixel_shuffle"
    check_nhwc(tuple(x.shape), op)
    r = _factor(r, op)
    n, h, w, channels = x.shape
    if channels % (r * r):
        raise ShapeError(f"{op}: the {channels} channels of x with shape {tuple(x.shape)} are not a multiple of "
                         f"r^2 = {r * r}; expected C r^2 channels")
    c = channels // (r * r)
    blocks = reshape(x, (n, h, w, c, r, r))                      # [n, h, w, c, i, j]
    return reshape(transpose(blocks, (0, 1, 4, 2, 5, 3)), (n, h * r, w * r, c))


def pixel_unshuffle(x: Tensor, r: int) -> Tensor:
    """Space to depth, the inverse of :func:`pixel_shuffle`: (N, H r, W r, C) ->
    (N, H, W, C r^2), y[n, h, w, c r^2 + i r + j] = x[n, h r + i, w r + j, c]."""
    op = "pixel_unshuffle"
    check_nhwc(tuple(x.shape), op)
    r = _factor(r, op)
    n, hr, wr, c = x.shape
    if hr % r or wr % r:
        raise ShapeError(f"{op}: the height {hr} and width {wr} of x with shape {tuple(x.shape)} must both be "
                         f"multiples of r = {r}")
    h, w = hr // r, wr // r
    blocks = reshape(x, (n, h, r, w, r, c))                      # [n, h, i, w, j, c]
    return reshape(transpose(blocks, (0, 1, 3, 5, 2, 4)), (n, h, w, c * r * r))
