"""Max pooling that also returns where each maximum was, and its partial inverse, max
unpooling (SegNet's decoder; PyTorch's ``max_pool2d(return_indices=True)`` and
``max_unpool2d``), on NHWC images.

``indices[n, i, j, c]`` is the flat position row * W + col, in the (H, W) plane of channel c
of sample n, of the first maximum of window (i, j): PyTorch's convention, so the indices
carry over after the layout change. ``max_unpool2d(v, indices, output_size)`` puts each
value back at its position in an otherwise zero image; its gradient reads dJ/dx at those
positions (where two windows share a maximum, the later one's value is kept, as in PyTorch).
That gradient is linear in dJ/dx, the positions constant: its differentiable form
(``grad(..., create_graph=True)``) is that reading as a linear map, whose adjoint adds each
value back at its position.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional.im2col import pair, strided_view, strides_of
from lamina.functional.pooling import (
    FixedRouting,
    _geometry,
    _shape_of,
    first_inside_where_all_neg_inf,
    max_pool2d,
)


def _window_argmax(x, f, s, pads, outs):
    """Flat (row * W + col) positions of each window's first maximum, (N, h_out, w_out, C); a
    window of -inf input values only gets its first position inside the input (PyTorch's)."""
    xp = backend.xp
    n, h, w, c = x.shape
    pt, pb, pl, pr = pads
    xpad = xp.full((n, h + pt + pb, w + pl + pr, c), -xp.inf, dtype=x.dtype)
    xpad[:, pt:pt + h, pl:pl + w] = x
    sn, s_h, s_w, s_c = strides_of(xpad)
    windows = strided_view(xpad, (n, outs[0], outs[1], f[0], f[1], c),
                           (sn, s_h * s[0], s_w * s[1], s_h, s_w, s_c))
    flat = windows.reshape(n, outs[0], outs[1], f[0] * f[1], c)
    k = flat.argmax(axis=3)
    first_inside_where_all_neg_inf(flat.max(axis=3), k, (pt, pl), s, f)
    i, j = xp.divmod(k, f[1])
    rows = (xp.arange(outs[0]) * s[0] - pt)[None, :, None, None] + i
    cols = (xp.arange(outs[1]) * s[1] - pl)[None, None, :, None] + j
    return (rows * w + cols).astype(xp.int64)


def max_pool2d_with_indices(x, pool_size, stride=None, padding=0, ceil_mode: bool = False) -> tuple[Tensor, object]:
    """:func:`lamina.functional.max_pool2d` and the positions of the maxima (an int64 array,
    PyTorch's flat row * W + col per channel), for :func:`max_unpool2d`."""
    f, s, pads, outs, _ = _geometry(_shape_of(x), pool_size, stride, padding, ceil_mode, "max_pool2d")
    data = x.data if isinstance(x, Tensor) else backend.xp.asarray(x)
    return max_pool2d(x, pool_size, stride, padding, ceil_mode), _window_argmax(data, f, s, pads, outs)


class MaxUnpool2d(Function):
    def forward(self, v):
        xp = backend.xp
        n, c = v.shape[0], v.shape[3]
        h, w = self.size
        out = xp.zeros((n, h * w, c), dtype=v.dtype)
        self.flat = self.indices.reshape(n, -1, c)
        xp.put_along_axis(out, self.flat, v.reshape(n, -1, c), axis=1)
        return out.reshape(n, h, w, c)

    def backward(self, dy):
        n, c = dy.shape[0], dy.shape[3]
        dv = backend.xp.take_along_axis(dy.reshape(n, -1, c), self.flat, axis=1)
        return (dv.reshape(self.indices.shape),)

    def backward_graph(self, dy):
        return FixedRouting(self, _add_at_positions).recorded(dy)


def _add_at_positions(unpool: MaxUnpool2d, u):
    """The adjoint of the backward's reading: each value of u added at its position in a
    zero image (summed where positions repeat, unlike the forward, which keeps the last)."""
    xp = backend.xp
    n, c = u.shape[0], u.shape[3]
    h, w = unpool.size
    out = xp.zeros((n, h * w, c), dtype=u.dtype)
    xp.add.at(out, (xp.arange(n)[:, None, None], unpool.flat, xp.arange(c)[None, None, :]), u.reshape(n, -1, c))
    return out.reshape(n, h, w, c)


def max_unpool2d(x, indices, pool_size, stride=None, padding=0, output_size=None) -> Tensor:
    """Each value of the NHWC batch ``x`` (N, h, w, C) put back at its position ``indices``
    in a zero image of (N, H, W, C). (H, W) is ``output_size`` or, by default, the smallest
    input the pooling could have read: ((h - 1) s_h - 2 p_h + f_h, (w - 1) s_w - 2 p_w + f_w)."""
    x = x if isinstance(x, Tensor) else Tensor(x)
    xp = backend.xp
    indices = xp.asarray(indices.data if isinstance(indices, Tensor) else indices)
    if x.ndim != 4 or indices.shape != x.shape:
        raise ShapeError(f"max_unpool2d: expected x of shape (N, h, w, C) and indices of the same shape, got "
                         f"x {tuple(x.shape)} and indices {tuple(indices.shape)}")
    if indices.dtype.kind not in "iu":
        raise ValueError(f"max_unpool2d: indices must be integers, got dtype {indices.dtype}")
    f = pair(pool_size, "pool_size", "max_unpool2d")
    s = f if stride is None else pair(stride, "stride", "max_unpool2d")
    p = pair(padding, "padding", "max_unpool2d")
    if output_size is None:
        size = tuple((n - 1) * si - 2 * pi + fi for n, si, pi, fi in zip(x.shape[1:3], s, p, f))
    else:
        size = pair(tuple(output_size)[-3:-1] if len(tuple(output_size)) == 4 else output_size,
                    "output_size", "max_unpool2d")
    if indices.size and (int(indices.min()) < 0 or int(indices.max()) >= size[0] * size[1]):
        raise ValueError(f"max_unpool2d: indices must lie in [0, {size[0] * size[1]}) for an output of {size}, "
                         f"got {int(indices.min())}..{int(indices.max())}")
    return MaxUnpool2d.apply(x, indices=indices, size=size)
