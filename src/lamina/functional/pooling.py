"""Pooling on NHWC images: max, average and global average.

Course notes, pooling layer: each channel is pooled independently over (f, f) windows
moved with stride s; only the spatial size changes, to (h + 2p - f) / s + 1 (floor, or
ceil with ``ceil_mode``); there are no learned parameters. Max pooling routes the
upstream gradient to the largest input of each window (the first one, in row-major
window order, on ties), like the max node of a computation graph; average pooling
hands each input of a window 1/(window size) of it.

Every window offset (i, j) is one strided view of the (padded) input, so pooling is f_h f_w
element-wise ``maximum`` / ``add`` calls over whole arrays, whatever the stride: no
reshape-max, no Python loop over windows.

Differentiable backwards (``grad(..., create_graph=True)``): average pooling is linear in x,
so its backward is recorded as the adjoint linear map. Max pooling's backward dJ/dx =
R^T dJ/dv is linear in dJ/dv for the routing R (which input each window's maximum came
from) fixed: R is piecewise constant in x, so it is recorded as that linear map
(:class:`FixedRouting`), whose own derivative is R.
"""

from __future__ import annotations

import copy
import functools

from lamina import backend, parallel
from lamina.autograd import Function, Tensor, graph
from lamina.autograd.function import LinearMap
from lamina.errors import ShapeError
from lamina.functional.im2col import check_nhwc, offset_view, pad_nhwc, pair


def pool_output_length(n: int | None, f: int, s: int, p: int, ceil_mode: bool = False) -> int | None:
    """Windows along one axis of length ``n`` (None stays None): floor((n + 2p - f) / s) + 1,
    or with ``ceil_mode`` ceil((n + 2p - f) / s) + 1 less one if the last window would start
    in the right padding (PyTorch's rule: a window may reach past the padding by less than s,
    even where f > n + 2p); 0 where none fits."""
    if n is None:
        return None
    span = n + 2 * p - f
    if not ceil_mode:
        return span // s + 1 if span >= 0 else 0
    out = -(-span // s) + 1
    if (out - 1) * s >= n + p:  # the last window would start inside the right padding
        out -= 1
    return max(out, 0)


def _geometry(shape, pool_size, stride, padding, ceil_mode: bool, op: str):
    """Window sizes, strides, the (top, bottom, left, right) padding actually read (the
    bottom/right part may cover ceil-mode windows past the padding), the output size and
    the symmetric padding (p_h, p_w)."""
    check_nhwc(shape, op)
    n, h, w, c = shape
    f = pair(pool_size, "pool_size", op)
    s = f if stride is None else pair(stride, "stride", op)
    if min(f) < 1 or min(s) < 1:
        raise ValueError(f"{op}: pool_size and stride must be positive, got {f} and {s}")
    if isinstance(padding, str):
        if padding.lower() != "valid":
            raise ValueError(f"{op}: padding must be 'valid', an int or a pair of ints, got {padding!r}")
        padding = 0
    p = pair(padding, "padding", op)
    if min(p) < 0 or p[0] > f[0] // 2 or p[1] > f[1] // 2:
        raise ValueError(f"{op}: padding {p} must be non-negative and at most half the pool size {f}")
    outs, pads = [], []
    for n_in, fi, si, pi, name in zip((h, w), f, s, p, ("height", "width")):
        o = pool_output_length(n_in, fi, si, pi, ceil_mode)
        if o < 1:
            raise ShapeError(f"{op}: pool {f[0]}x{f[1]} is larger than the padded input "
                             f"{h + 2 * p[0]}x{w + 2 * p[1]} ({name}) of x with shape {tuple(shape)}, "
                             f"padding {p}" + (f", stride {s} (ceil mode)" if ceil_mode else ""))
        outs.append(o)
        pads += [pi, max((o - 1) * si + fi - n_in - pi, 0)]
    return f, s, tuple(pads), tuple(outs), p


def _exact_tiling(f, s, pads, outs, shape) -> bool:
    """Windows are disjoint and cover every (padded) input element exactly once."""
    return (f == s and outs[0] * f[0] == shape[1] + pads[0] + pads[1]
            and outs[1] * f[1] == shape[2] + pads[2] + pads[3])


def _crop(dxpad, pads, shape):
    pt, _, pl, _ = pads
    if dxpad.shape == tuple(shape):
        return dxpad
    return backend.xp.ascontiguousarray(dxpad[:, pt:pt + shape[1], pl:pl + shape[2]])


_BLOCK_BYTES = 1 << 20
"""(Padded) input bytes per inner block of max pooling: the block stays in the (L2) cache
from the maxima to the marks, and from the routed gradients to the sums of overlapping windows."""


def _blocks(first: int, last: int, image_bytes: int):
    """(lo, hi) runs of images from ``first`` to ``last`` of about _BLOCK_BYTES each (the
    whole range on a GPU, where each block would cost a launch per kernel)."""
    step = last - first
    if backend.xp.__name__ == "numpy":
        step = max(1, _BLOCK_BYTES // max(image_bytes, 1))
    return [(lo, min(last, lo + step)) for lo in range(first, last, max(step, 1))]


def _offsets(f):
    return [(i, j) for i in range(f[0]) for j in range(f[1])]


class FixedRouting(Function):
    """The backward of an op that only routes values (a max pooling's maxima, unpooling's
    positions) with the routing frozen, dJ/dx = R^T dJ/dv, as the op of a :class:`LinearMap`:
    ``backward`` is the op's own (on a copy of the node, so that freeing the node leaves it
    intact) and ``forward`` its adjoint R u, computed by ``adjoint(op, u)``."""

    def __init__(self, op: Function, adjoint):
        self.op, self.adjoint = copy.copy(op), adjoint

    def forward(self, u):
        return self.adjoint(self.op, u)

    def backward(self, dy):
        return self.op.backward(dy)

    def recorded(self, dy: Tensor) -> tuple:
        """(dJ/dx,) = R^T dy recorded on the graph."""
        return (LinearMap.apply(dy, op=self, adjoint=True),)


def _read_maxima(pool: MaxPool2d, u):
    """R u for a max pooling: each window's value of u at the offset of its first maximum."""
    xp = backend.xp
    upad = pad_nhwc(u, pool.pads, 0.0)
    out = xp.zeros(pool.index.shape, dtype=u.dtype)
    for k, (i, j) in enumerate(_offsets(pool.f)):
        out = xp.where(pool.index == k, offset_view(upad, i, j, pool.outs, pool.s), out)
    return out


class MaxPool2d(Function):
    """Max over each window; hyperparameters ``f``, ``s``, ``pads``, ``outs`` and ``track``
    (whether a backward will follow).

    While the input is still in the cache, the forward also records which window offset
    holds each window's first maximum: with ne_k = [view_k != max] for the f_h f_w offsets
    k in order, that index is ne_0 (1 + ne_1 (1 + ... (1 + ne_{n-2}))), one small integer
    per output value (a byte for windows of up to 256 values); a window whose input values
    are all -inf (tied with the -inf padding) gets its first offset inside the input, and one
    holding a NaN (its maximum) the offset of its last NaN, as PyTorch. Backward sends dJ/dv
    to offset k where the index is k.
    """

    def forward(self, x):
        xp = backend.xp
        f, s, outs = self.f, self.s, self.outs
        xpad = pad_nhwc(x, self.pads, -xp.inf)
        n, c = x.shape[0], x.shape[3]
        out = xp.empty((n,) + outs + (c,), dtype=x.dtype)
        offsets = _offsets(f)
        track = getattr(self, "track", True)
        index = xp.empty(out.shape, dtype=xp.min_scalar_type(len(offsets) - 1)) if track else None

        def chunk(first, last):
            for lo, hi in _blocks(first, last, xpad[0:1].nbytes):
                block(lo, hi)

        def block(lo, hi):
            views = [offset_view(xpad[lo:hi], i, j, outs, s) for i, j in offsets]
            o = out[lo:hi]
            if len(views) == 1:
                o[...] = views[0]
            else:
                xp.maximum(views[0], views[1], out=o)
                for view in views[2:]:
                    xp.maximum(o, view, out=o)
            if index is not None:
                _first_maximum(views, o, index[lo:hi])
                if xp.isnan(o.sum()):              # a NaN maximum (or maxima of inf and -inf: no NaN to find)
                    _last_nan(views, index[lo:hi])
                first_inside_where_all_neg_inf(o, index[lo:hi], (self.pads[0], self.pads[2]), s, f)

        parallel.split(chunk, n, xpad.size)
        self.x_shape, self.padded_shape, self.index = x.shape, xpad.shape, index
        return out

    def backward(self, dy):
        dxpad = backend.xp.empty(self.padded_shape, dtype=dy.dtype)

        def chunk(first, last):
            for lo, hi in _blocks(first, last, dxpad[0:1].nbytes):
                self._route(dy[lo:hi], self.index[lo:hi], dxpad[lo:hi])

        parallel.split(chunk, dy.shape[0], dxpad.size)
        return (_crop(dxpad, self.pads, self.x_shape),)

    def _route(self, g, index, dx) -> None:
        """dJ/dx for a block of images: offset k's view of dx gets g where the index is k.
        The offsets (i < s_h, j < s_w) cover disjoint positions, so these views are set
        (after zeroing what none of them covers); the offsets of overlapping windows past
        the stride are added to them."""
        xp = backend.xp
        f, s, outs = self.f, self.s, self.outs
        _zero_uncovered(dx, f, s, outs)
        offsets = list(enumerate(_offsets(f)))
        setting = [(k, (i, j)) for k, (i, j) in offsets if i < s[0] and j < s[1]]
        adding = [(k, (i, j)) for k, (i, j) in offsets if i >= s[0] or j >= s[1]]
        hit = xp.empty(g.shape, dtype=bool)
        for k, (i, j) in setting:
            xp.equal(index, k, out=hit)
            xp.multiply(g, hit, out=offset_view(dx, i, j, outs, s))
        routed = xp.empty(g.shape, dtype=g.dtype) if adding else None
        for k, (i, j) in adding:
            xp.equal(index, k, out=hit)
            xp.multiply(g, hit, out=routed)
            target = offset_view(dx, i, j, outs, s)
            xp.add(target, routed, out=target)

    def backward_graph(self, dy):
        return FixedRouting(self, _read_maxima).recorded(dy)


def _zero_uncovered(dx, f, s, outs) -> None:
    """Zero the positions of ``dx`` that no offset (i < s_h, j < s_w) of a window reaches:
    the rows and columns past the last stride, and the gaps between windows when the
    stride exceeds the pool size."""
    if s[0] > f[0] or s[1] > f[1]:
        dx.fill(0)
        return
    dx[:, outs[0] * s[0]:] = 0
    dx[:, :, outs[1] * s[1]:] = 0


def _first_maximum(views: list, maximum, index) -> None:
    """Into ``index``: for each value of ``maximum``, the first k with views[k] equal to it
    (the last view's index where none is, as for a NaN maximum)."""
    xp = backend.xp
    if len(views) == 1:
        index.fill(0)
        return
    differs = xp.empty(maximum.shape, dtype=bool)
    flags = differs.view(xp.uint8)          # the same 0/1 bytes: integer arithmetic without a cast
    xp.not_equal(views[-2], maximum, out=differs)
    index[...] = flags
    for view in reversed(views[:-2]):
        index += 1
        xp.not_equal(view, maximum, out=differs)
        index *= flags


def _last_nan(views: list, index) -> None:
    """Into ``index``, for each window holding a NaN (whose maximum is NaN): the last k with
    views[k] NaN, where PyTorch sends the gradient."""
    xp = backend.xp
    for k, view in enumerate(views):
        index[xp.isnan(view)] = k


def first_inside_where_all_neg_inf(maximum, index, lead: tuple, s: tuple, f: tuple) -> None:
    """Into ``index`` (N, *outs, C), window offsets in row-major order: for the windows that
    reach into the leading padding ``lead`` (before each spatial axis) and whose ``maximum``
    is -inf (every input value -inf, tied with the padding), the first offset inside the
    input, PyTorch's choice, in place of the padding's. Along an axis that offset is
    max(p - o s, 0) for window o; only the first ceil(p / s) windows reach into the padding,
    so only those are read."""
    if not any(lead):
        return
    xp = backend.xp
    outs = maximum.shape[1:-1]
    first = xp.zeros((), dtype=xp.int64)
    for p, o, si, fi in zip(lead, outs, s, f):
        first = first[..., None] * fi + xp.maximum(p - xp.arange(o) * si, 0)
    border = [-(-p // si) for p, si in zip(lead, s)]
    for axis, edge in enumerate(border):
        if edge == 0:
            continue
        region = tuple(slice(b, None) for b in border[:axis]) + (slice(0, edge),)
        where = (slice(None),) + region
        xp.copyto(index[where], first[region][None, ..., None].astype(index.dtype), where=xp.isneginf(maximum[where]))


SMALL_C = 16
"""Average pooling over fewer channels than this takes the row-sum + GEMM path."""


class AvgPool2d(Function):
    """Sum over each window times ``scale``: 1 / ``divisor`` when one is given, else 1 / (the
    window size), counting the zero padding when ``include_pad`` (PyTorch's
    count_include_pad=True) and only the input values otherwise."""

    def forward(self, x):
        xp = backend.xp
        f, s, outs, (ph, pw) = self.f, self.s, self.outs, self.p
        include_pad, divisor = getattr(self, "include_pad", True), getattr(self, "divisor", None)
        n, h, w, c = x.shape
        # window size counted up to the end of the padding (not the ceil-mode overhang)
        whole = _last_window_whole(outs[0], s[0], f[0], h, ph) and _last_window_whole(outs[1], s[1], f[1], w, pw)
        uniform = whole and (include_pad or not any(self.p))
        if divisor is not None:
            self.scale = 1.0 / divisor
        elif uniform:
            self.scale = 1.0 / (f[0] * f[1])
        else:
            size_h = _window_sizes(outs[0], s[0], f[0], h, ph, include_pad)
            size_w = _window_sizes(outs[1], s[1], f[1], w, pw, include_pad)
            sizes = xp.asarray(size_h, dtype=x.dtype)[:, None] * xp.asarray(size_w, dtype=x.dtype)[None, :]
            self.scale = (1.0 / sizes)[:, :, None]
        self.x_shape = x.shape
        out = xp.empty((n,) + outs + (c,), dtype=x.dtype)
        if self._few_channels():
            tiled = self._tiled_identity(x.dtype)

            def tiles(lo, hi):
                rows = x[lo:hi].reshape(hi - lo, outs[0], f[0], w * c)
                r = xp.add(rows[:, :, 0], rows[:, :, 1]) if f[0] > 1 else xp.array(rows[:, :, 0])
                for i in range(2, f[0]):
                    r += rows[:, :, i]
                o = out[lo:hi].reshape(-1, c)
                xp.matmul(r.reshape(-1, f[1] * c), tiled, out=o)
                if not xp.isfinite(o).all():        # the product's 0 * NaN spread a NaN to every channel
                    xp.multiply(r.reshape(-1, f[1], c).sum(axis=1), tiled.dtype.type(self.scale), out=o)
            parallel.split(tiles, n, x.size)
            return out
        xpad = pad_nhwc(x, self.pads, 0.0)

        def chunk(lo, hi):
            views = [offset_view(xpad[lo:hi], i, j, outs, s) for i, j in _offsets(f)]
            o = out[lo:hi]
            if len(views) == 1:
                o[...] = views[0]
            else:
                xp.add(views[0], views[1], out=o)
            for view in views[2:]:
                o += view
            o *= self.scale

        parallel.split(chunk, n, xpad.size)
        self.padded_shape = xpad.shape
        return out

    def _few_channels(self) -> bool:
        """Disjoint windows tiling the unpadded input, over fewer than SMALL_C channels: the
        sums then run over whole rows, and a tiny GEMM adds the f_w columns of each window
        (NumPy's strided adds over a handful of channels are slow). Where that leaves a
        non-finite value (the GEMM's 0 * NaN reaches every channel), the block is summed again
        channel by channel, each way."""
        return (self.f == self.s and not any(self.pads) and self.x_shape[3] < SMALL_C
                and _exact_tiling(self.f, self.s, self.pads, self.outs, self.x_shape))

    def _tiled_identity(self, dtype):
        """P = [I; I; ...] (f_w blocks of the c x c identity) / (f_h f_w): (row sums) @ P is
        the windows' mean."""
        return _tiled_identity(backend.xp.__name__, self.x_shape[3], self.f[1], self.scale, dtype.str)

    def backward(self, dy):
        xp = backend.xp
        f, s, outs = self.f, self.s, self.outs
        if self._few_channels():
            n, h, w, c = self.x_shape
            dx = xp.empty(self.x_shape, dtype=dy.dtype)
            spread = self._tiled_identity(dy.dtype).T

            def tiles(lo, hi):
                g = dy[lo:hi].reshape(-1, c)
                if xp.isfinite(g).all():
                    row = xp.matmul(g, spread).reshape(hi - lo, outs[0], w * c)
                else:                               # each channel's own NaN or inf, not 0 * NaN in the others
                    scaled = (g * spread.dtype.type(self.scale)).reshape(hi - lo, outs[0], outs[1], 1, c)
                    row = xp.broadcast_to(scaled, scaled.shape[:3] + (f[1], c)).reshape(hi - lo, outs[0], w * c)
                rows = dx[lo:hi].reshape(hi - lo, outs[0], f[0], w * c)
                for i in range(f[0]):
                    rows[:, :, i] = row
            parallel.split(tiles, n, dx.size)
            return (dx,)
        disjoint = s[0] >= f[0] and s[1] >= f[1]
        exact = _exact_tiling(f, s, self.pads, outs, self.x_shape)
        shape = self.padded_shape
        dxpad = xp.empty(shape, dtype=dy.dtype) if exact else xp.zeros(shape, dtype=dy.dtype)

        def chunk(lo, hi):
            g = dy[lo:hi] * self.scale
            for i, j in _offsets(f):
                target = offset_view(dxpad[lo:hi], i, j, outs, s)
                if disjoint:
                    target[...] = g
                else:
                    target += g

        parallel.split(chunk, dy.shape[0], dxpad.size)
        return (_crop(dxpad, self.pads, self.x_shape),)

    backward_graph = Function.linear_backward_graph


def _last_window_whole(count: int, stride: int, f: int, size: int, pad: int) -> bool:
    """Whether every window along one axis holds f values (the last one reaches furthest)."""
    return (count - 1) * stride - pad + f <= size + pad


def _window_sizes(count: int, stride: int, f: int, size: int, pad: int, include_pad: bool = True) -> list[int]:
    """The number of (input or padding) values in each of ``count`` windows along one axis:
    f, but less for a ceil-mode window that runs past the padding; without ``include_pad``,
    the input values alone."""
    starts = [i * stride - pad for i in range(count)]
    if include_pad:
        return [min(start + f, size + pad) - start for start in starts]
    return [min(start + f, size) - max(start, 0) for start in starts]


@functools.lru_cache(maxsize=32)
def _tiled_identity(array_module: str, c: int, fw: int, scale: float, dtype: str):
    """[I; I; ...] (``fw`` blocks of the c x c identity) times ``scale``, made once per
    shape (the array module's name keeps NumPy's and CuPy's apart). Read, never written."""
    xp = backend.xp
    dt = xp.dtype(dtype)
    tiled = xp.tile(xp.eye(c, dtype=dt), (fw, 1)) * dt.type(scale)
    if array_module == "numpy":
        tiled.flags.writeable = False           # shared by every call of this shape
    return tiled


class GlobalAvgPool2d(Function):
    """(N, H, W, C) -> (N, C): the mean over H and W; dJ/dx = dJ/dy / (H W) everywhere."""

    def forward(self, x):
        self.x_shape = x.shape
        return x.mean(axis=(1, 2))

    def backward(self, dy):
        n, h, w, c = self.x_shape
        dx = backend.xp.empty(self.x_shape, dtype=dy.dtype)
        dx[...] = (dy * (1.0 / (h * w)))[:, None, None, :]
        return (dx,)

    backward_graph = Function.linear_backward_graph


def _shape_of(a) -> tuple[int, ...]:
    return tuple(a.shape) if hasattr(a, "shape") else tuple(backend.xp.shape(a))


def max_pool2d(x: Tensor, pool_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
               padding: int | tuple[int, int] = 0, ceil_mode: bool = False) -> Tensor:
    """Max pooling of NHWC images x: (N, h, w, C) -> (N, h_out, w_out, C).

    pool_size f or (f_h, f_w); stride s (default f); padding p or (p_h, p_w), at most f/2,
    filled with -inf. h_out = floor((h + 2p - f) / s) + 1 (ceil with ``ceil_mode``, PyTorch's
    rule: the last window starts inside the input or the left padding, and may reach past
    the padding by less than s, so that f may exceed h + 2p by up to s - 1).
    dJ/dx: each window's upstream gradient goes to its maximum (the first one on ties).
    """
    f, s, pads, outs, _ = _geometry(_shape_of(x), pool_size, stride, padding, ceil_mode, "max_pool2d")
    track = graph.is_grad_enabled() and bool(getattr(x, "requires_grad", False))
    return MaxPool2d.apply(x, f=f, s=s, pads=pads, outs=outs, track=track)


def avg_pool2d(x: Tensor, pool_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
               padding: int | tuple[int, int] = 0, ceil_mode: bool = False, count_include_pad: bool = True,
               divisor_override: int | None = None) -> Tensor:
    """Average pooling of NHWC images, arguments as :func:`max_pool2d`: each window's sum
    divided by its size. ``count_include_pad=True`` (the default, as PyTorch) counts the zero
    padding in that size, ``False`` the input values alone; the ceil-mode overhang past the
    padding is never counted. ``divisor_override`` d: every sum divided by d instead.
    dJ/dx: each window's upstream gradient over that divisor to every input of the window."""
    op = "avg_pool2d"
    f, s, pads, outs, p = _geometry(_shape_of(x), pool_size, stride, padding, ceil_mode, op)
    if divisor_override is not None and (isinstance(divisor_override, bool) or not isinstance(divisor_override, int)
                                         or divisor_override < 1):
        raise ValueError(f"{op}: divisor_override must be a positive int or None, got {divisor_override!r}")
    return AvgPool2d.apply(x, f=f, s=s, pads=pads, outs=outs, p=p, include_pad=bool(count_include_pad),
                           divisor=divisor_override)


def global_avg_pool2d(x: Tensor) -> Tensor:
    """The mean of each channel over the whole image: (N, h, w, C) -> (N, C)."""
    check_nhwc(_shape_of(x), "global_avg_pool2d")
    return GlobalAvgPool2d.apply(x)
