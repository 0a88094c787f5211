"""Volumetric pooling on NDHWC batches (batch, depth, height, width, channels), the 3-D
form of max and average pooling: every window of the padded input is read through one
strided view and reduced over its three axes (maximum, or sum / (f_d f_h f_w)); along each
axis floor((n + 2p - f) / s) + 1 windows. Max pooling sends each window's gradient to its
first maximum; average pooling counts the zero padding in the window (PyTorch's default).
Both backwards are differentiable (``grad(..., create_graph=True)``): average pooling is
linear, max pooling's backward linear in dJ/dv with its routing frozen
(:class:`lamina.functional.pooling.FixedRouting`).
"""

from __future__ import annotations

import math

from lamina import backend
from lamina.autograd import Function, Tensor, graph
from lamina.errors import ShapeError
from lamina.functional.conv3d import Triple, _check_ndhwc, _crop, _offset_view, _pad, _shape_of, _taps, triple
from lamina.functional.im2col import strided_view, strides_of
from lamina.functional.pooling import FixedRouting, first_inside_where_all_neg_inf
from lamina.functional.reduce import mean

__all__ = ["avg_pool3d", "global_avg_pool3d", "max_pool3d"]


def _pool_geometry(shape: tuple, pool_size, stride, padding, op: str):
    """(window, stride, pads, output size) of a pooling; errors name ``op`` and the shapes."""
    _check_ndhwc(shape, op)
    f = triple(pool_size, "pool_size", op)
    s = f if stride is None else triple(stride, "stride", op)
    if min(f) < 1 or min(s) < 1:
        raise ValueError(f"{op}: pool_size and stride must be positive, got {f} and {s}")
    if isinstance(padding, str):
        if padding.lower() != "valid":
            raise ValueError(f"{op}: padding must be 'valid', an int or 3 ints, got {padding!r}")
        padding = 0
    p = triple(padding, "padding", op)
    if min(p) < 0 or any(2 * q > fi for q, fi in zip(p, f)):
        raise ValueError(f"{op}: padding {p} must be non-negative and at most half the pool size {f}")
    spatial = shape[1:4]
    if any(fi > n + 2 * q for fi, n, q in zip(f, spatial, p)):
        padded = "x".join(str(n + 2 * q) for n, q in zip(spatial, p))
        raise ShapeError(f"{op}: pool {f[0]}x{f[1]}x{f[2]} is larger than the padded input {padded} "
                         f"(x of shape {tuple(shape)}, padding {p})")
    outs = tuple((n + 2 * q - fi) // si + 1 for n, q, fi, si in zip(spatial, p, f, s))
    return f, s, tuple((q, q) for q in p), outs


def _window_view(a, f: Triple, outs: Triple, s: Triple, writeable: bool = False):
    """Every window of the padded volume ``a`` as one (N, D', H', W', f_d, f_h, f_w, C) view
    (no copy); writeable only where the windows do not overlap."""
    s_n, s_d, s_h, s_w, s_c = strides_of(a)
    shape = (a.shape[0],) + tuple(outs) + tuple(f) + (a.shape[4],)
    strides = (s_n, s_d * s[0], s_h * s[1], s_w * s[2], s_d, s_h, s_w, s_c)
    if writeable:
        return backend.xp.lib.stride_tricks.as_strided(a, shape, strides)
    return strided_view(a, shape, strides)


def _spread(windows, dxpad, f: Triple, outs: Triple, s: Triple) -> None:
    """Add ``windows`` (N, D', H', W', f_d, f_h, f_w, C), one gradient per window element,
    onto the padded positions they were read from: one assignment when the windows are
    disjoint, else one slice add per tap."""
    if all(si >= fi for si, fi in zip(s, f)):
        _window_view(dxpad, f, outs, s, writeable=True)[...] = windows
        return
    for a, b, c in _taps(f):
        _offset_view(dxpad, (a, b, c), outs, s)[...] += windows[:, :, :, :, a, b, c]


class MaxPool3d(Function):
    """The maximum of each window (padding reads -inf). For backward, forward also records
    which tap holds each window's first maximum (argmax over the window in row-major order:
    PyTorch's choice on ties; the first tap inside the input where every input value of the
    window is -inf); backward sends dJ/dv there."""

    def forward(self, x):
        xp = backend.xp
        xpad = _pad(x, self.pads, -xp.inf)
        windows = _window_view(xpad, self.f, self.outs, self.s)
        self.x_shape, self.padded_shape, self.index = x.shape, xpad.shape, None
        if not self.track:
            return windows.max(axis=(4, 5, 6))
        # (N, D', H', W', C, f_d f_h f_w): each window's values contiguous, for argmax
        rows = xp.ascontiguousarray(windows.transpose(0, 1, 2, 3, 7, 4, 5, 6)).reshape(
            windows.shape[:4] + (windows.shape[7], math.prod(self.f)))
        self.index = rows.argmax(axis=-1).astype(xp.min_scalar_type(rows.shape[-1] - 1))
        out = rows.max(axis=-1)
        first_inside_where_all_neg_inf(out, self.index, tuple(p for p, _ in self.pads), self.s, self.f)
        return out

    def backward(self, dy):
        xp = backend.xp
        taps = math.prod(self.f)
        hits = self.index[..., None] == xp.arange(taps, dtype=self.index.dtype)
        per_tap = (hits * dy[..., None]).reshape(dy.shape + tuple(self.f))        # (N, D', H', W', C, f...)
        del hits
        dxpad = xp.zeros(self.padded_shape, dtype=dy.dtype)
        _spread(per_tap.transpose(0, 1, 2, 3, 5, 6, 7, 4), dxpad, self.f, self.outs, self.s)
        return (_crop(dxpad, self.pads, self.x_shape),)

    def backward_graph(self, dy):
        return FixedRouting(self, _read_maxima).recorded(dy)


def _read_maxima(pool: MaxPool3d, u):
    """u read at each window's first maximum (the tap the forward recorded)."""
    xp = backend.xp
    upad = _pad(u, pool.pads, 0.0)
    out = xp.zeros(pool.index.shape, dtype=u.dtype)
    for t, start in enumerate(_taps(pool.f)):
        out = xp.where(pool.index == t, _offset_view(upad, start, pool.outs, pool.s), out)
    return out


def _inside_counts(outs: Triple, s: Triple, f: Triple, pads, spatial: Triple, dtype):
    """(D', H', W', 1): how many input values (not padding) each window holds, the product
    of the per-axis counts min(start + f, n) - max(start, 0)."""
    xp = backend.xp
    axes = [xp.asarray([min(i * si - p + fi, n) - max(i * si - p, 0) for i in range(o)], dtype=dtype)
            for o, si, fi, (p, _), n in zip(outs, s, f, pads, spatial)]
    return (axes[0][:, None, None] * axes[1][None, :, None] * axes[2][None, None, :])[..., None]


class AvgPool3d(Function):
    """The sum of each window times ``scale``: 1 / ``divisor`` when one is given, else
    1 / (f_d f_h f_w) with the zero padding counted (``include_pad``, PyTorch's
    count_include_pad=True), or 1 / (the window's input values) without."""

    def forward(self, x):
        xpad = _pad(x, self.pads)
        windows = _window_view(xpad, self.f, self.outs, self.s)
        self.x_shape, self.padded_shape = x.shape, xpad.shape
        divisor, include_pad = getattr(self, "divisor", None), getattr(self, "include_pad", True)
        if divisor is not None:
            self.scale = x.dtype.type(1.0 / divisor)
        elif include_pad or not any(q for pair in self.pads for q in pair):
            self.scale = x.dtype.type(1.0 / math.prod(self.f))
        else:
            self.scale = 1.0 / _inside_counts(self.outs, self.s, self.f, self.pads, x.shape[1:4], x.dtype)
        out = windows.sum(axis=(4, 5, 6))
        out *= self.scale
        return out

    def backward(self, dy):
        xp = backend.xp
        share = dy * self.scale
        dxpad = xp.zeros(self.padded_shape, dtype=dy.dtype)
        windows = xp.broadcast_to(share[:, :, :, :, None, None, None, :], share.shape[:4] + tuple(self.f)
                                  + share.shape[4:])
        _spread(windows, dxpad, self.f, self.outs, self.s)
        return (_crop(dxpad, self.pads, self.x_shape),)

    backward_graph = Function.linear_backward_graph


def max_pool3d(x: Tensor, pool_size: int | Triple, stride: int | Triple | None = None,
               padding: int | Triple = 0) -> Tensor:
    """Max pooling of NDHWC volumes: (N, d, h, w, C) -> (N, d', h', w', C).

    pool_size f or (f_d, f_h, f_w); stride s (default f); padding p or (p_d, p_h, p_w), at
    most f / 2, filled with -inf. Per axis n' = floor((n + 2p - f) / s) + 1. dJ/dx: each
    window's upstream gradient goes to its maximum, the first one (row-major over the
    window) on ties, as PyTorch.
    """
    f, s, pads, outs = _pool_geometry(_shape_of(x), pool_size, stride, padding, "max_pool3d")
    track = graph.is_grad_enabled() and bool(getattr(x, "requires_grad", False))
    return MaxPool3d.apply(x, f=f, s=s, pads=pads, outs=outs, track=track)


def avg_pool3d(x: Tensor, pool_size: int | Triple, stride: int | Triple | None = None,
               padding: int | Triple = 0, count_include_pad: bool = True,
               divisor_override: int | None = None) -> Tensor:
    """Average pooling of NDHWC volumes, arguments as :func:`max_pool3d`. With
    ``count_include_pad=True`` (the default, as PyTorch) the zero padding counts in the
    window size: every window is divided by f_d f_h f_w; with ``False`` by its input values
    alone; ``divisor_override`` d divides every window's sum by d instead. dJ/dx: each input
    of a window gets its upstream gradient over that divisor."""
    op = "avg_pool3d"
    f, s, pads, outs = _pool_geometry(_shape_of(x), pool_size, stride, padding, op)
    if divisor_override is not None and (isinstance(divisor_override, bool) or not isinstance(divisor_override, int)
                                         or divisor_override < 1):
        raise ValueError(f"{op}: divisor_override must be a positive int or None, got {divisor_override!r}")
    return AvgPool3d.apply(x, f=f, s=s, pads=pads, outs=outs, include_pad=bool(count_include_pad),
                           divisor=divisor_override)


def global_avg_pool3d(x: Tensor) -> Tensor:
    """The mean of each channel over the whole volume: (N, d, h, w, C) -> (N, C)."""
    _check_ndhwc(_shape_of(x), "global_avg_pool3d")
    return mean(x, axis=(1, 2, 3))
