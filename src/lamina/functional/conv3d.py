"""Volumetric convolution and pooling on NDHWC batches (batch, depth, height, width, channels).

The 2-D rules of the course notes carry over axis by axis. K filters of (f_d, f_h, f_w, c_in)
slide over a (d, h, w, c_in) volume; along each spatial axis an input of length n, padded by
p on both sides and scanned with stride s by a kernel whose taps are spaced dilation apart
(extent e = dilation (f - 1) + 1), gives floor((n + 2p - e) / s) + 1 outputs.

Convolution is im2col + GEMM ("Vectorized implementation"): every window of the padded input
is one row of a patch matrix of f_d f_h f_w c_in / groups columns, read through one strided
view and copied once, so that v = patches W^T + b is one matrix product per group. Backward:

    dJ/dW = patches^T dJ/dv        dJ/db = sum of dJ/dv over n, z, y, x
    dJ/dx: dJ/dpatches = dJ/dv W, each kernel offset's column block added back onto the
           input positions it was read from (col2im)

The patch matrices are kept from forward for dJ/dW (only when W needs a gradient) and
dropped as soon as it is computed. col2im forms dJ/dpatches one kernel offset at a time,
dJ/dv W_offset (rows, c_in), so that each block is contiguous and its slice add runs over
whole (w', c_in) rows; the full dJ/dpatches matrix is never held.

For derivatives of the gradients (``grad(..., create_graph=True)``) the same three formulas
are recorded as ops: the patch matrices P(x) as a linear map (its adjoint is col2im), and
matrix products, dJ/dW = P(x)^T dJ/dv and dJ/dx = P^T(dJ/dv W), bilinear in (x, w).

For one group and stride 1 in depth (and the kernel shapes :func:`algorithm` names) the
convolution runs by depth planes instead (:mod:`lamina.functional.conv3d_planes`): only each
plane's (h, w) windows are copied and the depth taps become the column blocks of one fatter
product (1.5-1.8x faster for the forward and backward of a 3x3x3 convolution with 16 filters).

Pooling is in :mod:`lamina.functional.pool3d`.
"""

from __future__ import annotations

import math

from lamina import backend, parallel
from lamina.autograd import Function, Tensor, graph
from lamina.autograd.function import LinearMap
from lamina.errors import ShapeError
from lamina.functional import conv3d_planes as planes
from lamina.functional._util import channel_sums
from lamina.functional.im2col import strided_view, strides_of

__all__ = ["conv3d"]

Triple = tuple[int, int, int]
Pads = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]


# -- geometry ---------------------------------------------------------------------------------


def _is_int(value) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)) or (
        hasattr(value, "dtype") and getattr(value, "ndim", 1) == 0 and value.dtype.kind in "iu")


def triple(value, name: str, op: str) -> Triple:
    """``value`` (an int, or three ints for depth, height, width) as three ints."""
    if isinstance(value, (tuple, list)):
        if len(value) != 3 or not all(_is_int(v) for v in value):
            raise ValueError(f"{op}: {name} must be an int or 3 ints (depth, height, width), got {value!r}")
        return int(value[0]), int(value[1]), int(value[2])
    if not _is_int(value):
        raise ValueError(f"{op}: {name} must be an int or 3 ints (depth, height, width), got {value!r}")
    return int(value), int(value), int(value)


def conv3d_pads(padding, in_dhw: Triple, extents: Triple, stride: Triple, op: str) -> Pads:
    """Padding as ((front, back), (top, bottom), (left, right)).

    ``'valid'``: none. ``'same'``: out = ceil(n / s) per axis, the total padding
    max((out - 1) s + e - n, 0) split with the odd one at the back/bottom/right (TF/Keras).
    An int p or (p_d, p_h, p_w): symmetric. Three pairs: each side's own.
    """
    if isinstance(padding, str):
        mode = padding.lower()
        if mode == "valid":
            return (0, 0), (0, 0), (0, 0)
        if mode != "same":
            raise ValueError(f"{op}: padding must be 'valid', 'same', an int or 3 ints, got {padding!r}")
        pads = []
        for n, e, s in zip(in_dhw, extents, stride):
            total = max((-(-n // s) - 1) * s + e - n, 0)
            pads.append((total // 2, total - total // 2))
        return pads[0], pads[1], pads[2]
    if (isinstance(padding, (tuple, list)) and len(padding) == 3
            and all(isinstance(side, (tuple, list)) for side in padding)):
        if not all(len(side) == 2 and all(_is_int(v) for v in side) for side in padding):
            raise ValueError(f"{op}: padding as pairs must be 3 pairs of ints (before, after), got {padding!r}")
        sides = tuple((int(a), int(b)) for a, b in padding)
    else:
        p = triple(padding, "padding", op)
        sides = tuple((q, q) for q in p)
    if min(min(side) for side in sides) < 0:
        raise ValueError(f"{op}: padding must be non-negative, got {padding!r}")
    return sides[0], sides[1], sides[2]


def _check_ndhwc(shape: tuple, op: str, what: str = "x") -> None:
    if len(shape) != 5:
        hint = " (for images use the 2-D ops)" if len(shape) == 4 else ""
        raise ShapeError(f"{op}: expected {what} of shape (N, D, H, W, C) (5-D, channels last), "
                         f"got shape {tuple(shape)} ({len(shape)}-D){hint}")


def _pad(x, pads: Pads, value: float = 0.0):
    """``x`` (N, D, H, W, C) with ``value`` around D, H and W; ``x`` itself without padding."""
    if not any(p for side in pads for p in side):
        return x
    xp = backend.xp
    (fr, bk), (tp, bt), (lf, rt) = pads
    n, d, h, w, c = x.shape
    out = xp.full((n, d + fr + bk, h + tp + bt, w + lf + rt, c), value, dtype=x.dtype)
    out[:, fr:fr + d, tp:tp + h, lf:lf + w] = x
    return out


def _crop(xpad, pads: Pads, shape: tuple):
    """The inverse of :func:`_pad`: the part of ``xpad`` that lies over the input."""
    if tuple(xpad.shape) == tuple(shape):
        return xpad
    (fr, _), (tp, _), (lf, _) = pads
    _, d, h, w, _ = shape
    return backend.xp.ascontiguousarray(xpad[:, fr:fr + d, tp:tp + h, lf:lf + w])


def _offset_view(xpad, start: Triple, out_dhw: Triple, stride: Triple):
    """The (N, D', H', W', C) view of ``xpad`` read by the kernel tap at ``start``."""
    (a, b, c), (do, ho, wo), (sd, sh, sw) = start, out_dhw, stride
    return xpad[:, a:a + sd * (do - 1) + 1:sd, b:b + sh * (ho - 1) + 1:sh, c:c + sw * (wo - 1) + 1:sw]


def _taps(kernel: Triple, dilation: Triple = (1, 1, 1)) -> list[Triple]:
    """Where each kernel tap sits in the window, in (depth, height, width) row-major order."""
    return [(i * dilation[0], j * dilation[1], k * dilation[2])
            for i in range(kernel[0]) for j in range(kernel[1]) for k in range(kernel[2])]


# -- convolution ------------------------------------------------------------------------------


def _patches(xpad, kernel: Triple, out_dhw: Triple, stride: Triple, dilation: Triple, groups: int):
    """The patch matrices, one per group: (groups, N D' H' W', f_d f_h f_w c_in / groups), a
    row per window, its columns in the weights' (f_d, f_h, f_w, c) order. One strided view of
    ``xpad`` (no copy), copied once into a contiguous buffer."""
    n, c = xpad.shape[0], xpad.shape[4]
    cg = c // groups
    s_n, s_d, s_h, s_w, s_c = strides_of(xpad)
    view = strided_view(
        xpad,
        (groups, n) + tuple(out_dhw) + tuple(kernel) + (cg,),
        (cg * s_c, s_n, s_d * stride[0], s_h * stride[1], s_w * stride[2],
         s_d * dilation[0], s_h * dilation[1], s_w * dilation[2], s_c),
    )
    rows = n * math.prod(out_dhw)
    return backend.xp.ascontiguousarray(view).reshape(groups, rows, math.prod(kernel) * cg)


def _per_group(w, groups: int):
    """W as (groups, K / groups, f_d f_h f_w c_in / groups): each filter a row."""
    return w.reshape(groups, w.shape[0] // groups, -1)


def _matmul(a, b, out):
    """``out`` (rows, groups c) = a @ b per group, a (groups, rows, k), b (groups, k, c): the
    groups' products side by side, as the channels lie (one GEMM, through lamina's thread
    policy, when there is one group)."""
    groups, rows, c = a.shape[0], a.shape[1], b.shape[2]
    if groups == 1:
        return parallel.matmul(a[0], b[0], out=out)
    return backend.xp.matmul(a, b, out=out.reshape(rows, groups, c).transpose(1, 0, 2))


def algorithm(kernel: Triple, stride: Triple, groups: int, padded_depth: int, out_depth: int) -> str:
    """How :class:`Conv3d` computes: ``"planes"`` (:mod:`lamina.functional.conv3d_planes`:
    (h, w) windows of every depth plane, the depth taps side by side in one product) or
    ``"im2col"`` (one patch matrix per group). Planes need one group, stride 1 and more than
    one tap in depth (their product computes every tap for every padded plane: fewer than
    twice as many padded planes as output planes) and an (h, w) window of more than one tap
    (with a (f_d, 1, 1) kernel the im2col product is the less thin one). Measured on 2 cores:
    3x3x3, 16 -> 16 channels, 16^3, forward + backward 1.5-1.8x faster; 1.1-1.2x with 4 input
    channels, a depth of 4 or a 3x1x3 kernel; (3, 1, 1) kernels and a padded depth of 3 output
    planes per plane were slower (0.4-0.6x) and stay with im2col."""
    if groups == 1 and stride[0] == 1 and kernel[0] > 1 and kernel[1] * kernel[2] > 1 and padded_depth < 2 * out_depth:
        return "planes"
    return "im2col"


class Conv3d(Function):
    """v = x * w + b, by depth planes or by im2col + GEMM as :func:`algorithm` chooses.
    Hyperparameters: ``stride``, ``dilation`` (triples), ``pads`` (three (before, after)
    pairs), ``groups`` and ``keep`` (keep the patch matrices, or the planes' Q, for dJ/dw;
    backward rebuilds them from x when they are missing)."""
    value_used_for = {0: (1,), 1: (0,), 2: ()}   # x serves dJ/dw, w serves dJ/dx, the bias neither

    def forward(self, x, w, b=None):
        xp = backend.xp
        n = x.shape[0]
        k, fd, fh, fw, _ = w.shape
        kernel = (fd, fh, fw)
        xpad = _pad(x, self.pads)
        out_dhw = tuple((p - self.dilation[i] * (f - 1) - 1) // self.stride[i] + 1
                        for i, (p, f) in enumerate(zip(xpad.shape[1:4], kernel)))
        self.x, self.w, self.out_dhw = x, w, out_dhw
        self.algorithm = algorithm(kernel, self.stride, self.groups, xpad.shape[1], out_dhw[0])
        if self.algorithm == "planes":
            self.geometry = planes.PlaneGeometry(kernel, self.stride, self.dilation, out_dhw, xpad.shape[1:4])
            out, self.patches = planes.forward(xpad, w, b, self.geometry, getattr(self, "keep", True))
            return out
        patches = _patches(xpad, kernel, out_dhw, self.stride, self.dilation, self.groups)
        del xpad
        out = xp.empty((patches.shape[1], k), dtype=xp.result_type(x, w))
        _matmul(patches, _per_group(w, self.groups).transpose(0, 2, 1), out)
        if b is not None:
            out += b
        self.patches = patches if getattr(self, "keep", True) else None
        return out.reshape((n,) + out_dhw + (k,))

    def backward(self, dy):
        xp = backend.xp
        x, w, groups, needs = self.x, self.w, self.groups, self.needs_grad
        k = w.shape[0]
        dy = xp.ascontiguousarray(dy)
        db = channel_sums(dy) if len(needs) > 2 and needs[2] else None
        if self.algorithm == "planes":
            patches, self.patches = self.patches, None                              # freed once dJ/dw has it
            dy_pads = planes.transposed_pads(w.shape[1:4], self.stride, self.dilation, self.pads) if needs[0] else None
            dxpad, dw = planes.backward(dy, lambda lo, hi: _pad(x[lo:hi], self.pads), w, patches, self.geometry,
                                        needs[0] and dy_pads is None, needs[1])
            del patches
            if dy_pads is not None:
                return planes.input_gradient(_pad(dy, dy_pads), w, self.dilation, x.shape[1:4]), dw, db
            return (None if dxpad is None else _crop(dxpad, self.pads, x.shape)), dw, db
        dy_groups = dy.reshape(-1, groups, k // groups).transpose(1, 0, 2)         # (groups, rows, K / groups)
        dw = None
        if needs[1]:
            patches = self.patches
            self.patches = None                  # freed once dJ/dw has it
            if patches is None:
                patches = _patches(_pad(x, self.pads), w.shape[1:4], self.out_dhw, self.stride, self.dilation,
                                   groups)
            columns = patches.shape[2]
            dw_t = xp.empty((columns, k), dtype=dy.dtype)                            # dJ/dW^T, group by group
            _matmul(patches.transpose(0, 2, 1), dy_groups, dw_t)
            del patches
            dw = xp.ascontiguousarray(dw_t.reshape(columns, groups, k // groups).transpose(1, 2, 0)).reshape(w.shape)
        dx = _col2im(dy_groups, w, x.shape, self) if needs[0] else None
        return dx, dw, db

    def backward_graph(self, dy):
        x, w = self.inputs[:2]
        needs, groups, k = self.needs_grad, self.groups, w.shape[0]
        patch_map = _PatchMap(x.shape, w.shape[1:4], self)
        dy_groups = dy.reshape(-1, groups, k // groups).transpose(1, 0, 2)        # (groups, rows, K / groups)
        dx = dw = db = None
        if needs[0]:
            dx = LinearMap.apply(dy_groups @ _per_group(w, groups), op=patch_map, adjoint=True)
        if needs[1]:
            patches = LinearMap.apply(x, op=patch_map, adjoint=False)
            dw = (dy_groups.swapaxes(1, 2) @ patches).reshape(w.shape)
        if len(needs) > 2 and needs[2]:
            db = dy.sum(axis=(0, 1, 2, 3))
        return dx, dw, db


class _PatchMap(Function):
    """x -> P(x), the patch matrices (groups, rows, f_d f_h f_w c_in / groups) of a
    convolution's geometry, as a linear op for :class:`LinearMap`; the adjoint (backward)
    adds each tap's column block back onto the positions it was read from (col2im)."""

    def __init__(self, x_shape, kernel: Triple, conv: Conv3d):
        self.x_shape, self.kernel = tuple(x_shape), tuple(kernel)
        self.pads, self.stride, self.dilation = conv.pads, conv.stride, conv.dilation
        self.groups, self.out_dhw = conv.groups, conv.out_dhw

    def forward(self, x):
        return _patches(_pad(x, self.pads), self.kernel, self.out_dhw, self.stride, self.dilation, self.groups)

    def backward(self, d_patches):
        xp = backend.xp
        n, d, h, wd, c = self.x_shape
        (fr, bk), (tp, bt), (lf, rt) = self.pads
        taps = _taps(self.kernel, self.dilation)
        groups, rows, _ = d_patches.shape
        per_tap = d_patches.reshape(groups, rows, len(taps), c // groups)
        dxpad = xp.zeros((n, d + fr + bk, h + tp + bt, wd + lf + rt, c), dtype=d_patches.dtype)
        for t, start in enumerate(taps):
            block = per_tap[:, :, t].transpose(1, 0, 2).reshape((n,) + tuple(self.out_dhw) + (c,))
            _offset_view(dxpad, start, self.out_dhw, self.stride)[...] += block
        return (_crop(dxpad, self.pads, self.x_shape),)


def _col2im(dy_groups, w, x_shape, conv: Conv3d):
    """dJ/dx. Tap by tap, that tap's block of dJ/dpatches, dJ/dv W_tap (rows, c_in), is
    computed and added with one slice add onto the padded input positions the tap read;
    then the padding is cut off. In parallel over chunks of images."""
    xp = backend.xp
    n, d, h, wd, c = x_shape
    k, fd, fh, fw, cg = w.shape
    groups, out_dhw, stride = conv.groups, conv.out_dhw, conv.stride
    taps = _taps((fd, fh, fw), conv.dilation)
    w_taps = w.reshape(groups, k // groups, len(taps), cg)                          # W_tap: w_taps[:, :, t]
    (fr, bk), (tp, bt), (lf, rt) = conv.pads
    dxpad = xp.zeros((n, d + fr + bk, h + tp + bt, wd + lf + rt, c), dtype=dy_groups.dtype)
    per_image = math.prod(out_dhw)

    def chunk(lo, hi):
        rows = dy_groups[:, lo * per_image:hi * per_image]
        block = xp.empty((rows.shape[1], c), dtype=dxpad.dtype)
        shaped = block.reshape((hi - lo,) + tuple(out_dhw) + (c,))
        for t, start in enumerate(taps):
            _matmul(rows, w_taps[:, :, t], block)
            _offset_view(dxpad[lo:hi], start, out_dhw, stride)[...] += shaped

    parallel.split(chunk, n, dxpad.size * len(taps))
    return _crop(dxpad, conv.pads, x_shape)


def _shape_of(a) -> tuple[int, ...]:
    return tuple(a.shape) if hasattr(a, "shape") else tuple(backend.xp.shape(a))


def conv3d(x: Tensor, w: Tensor, b: Tensor | None = None, stride: int | Triple = 1,
           padding: str | int | tuple = 0, groups: int = 1, dilation: int | Triple = 1) -> Tensor:
    """3-D convolution (cross-correlation) of NDHWC volumes: v = x * w + b.

    x: (N, d, h, w, c_in). w: (K, f_d, f_h, f_w, c_in / groups). b: (K,) or None. (Arrays are
    accepted too, as constants.) PyTorch's Conv3d weight is w.transpose(0, 4, 1, 2, 3).

    v[n, z, y, x, k] = b[k] + sum_{i, j, l, c} xpad[n, s_d z + d_d i, s_h y + d_h j, s_w x + d_w l, c]
    w[k, i, j, l, c] (c over the filter's group of channels).

    stride s or (s_d, s_h, s_w); dilation likewise (the taps' spacing: a kernel extent of
    e = dilation (f - 1) + 1; any stride). padding: ``'valid'``; ``'same'`` (ceil(n / s)
    outputs per axis, the odd padding value at the back/bottom/right, as TF/Keras); p or
    (p_d, p_h, p_w) (symmetric zeros); ((front, back), (top, bottom), (left, right)).
    Output length per axis: floor((n + 2p - e) / s) + 1. groups: channels and filters split
    into independent convolutions (groups = c_in: depthwise, K = c_in times a multiplier).
    """
    op = "conv3d"
    xs, ws = _shape_of(x), _shape_of(w)
    _check_ndhwc(xs, op)
    if len(ws) != 5:
        raise ShapeError(f"{op}: expected weights of shape (K, f_d, f_h, f_w, C_in // groups) (5-D), "
                         f"got shape {ws}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    n, d, h, wd, c = xs
    k, fd, fh, fw, cg = ws
    if c % groups or k % groups:
        raise ShapeError(f"{op}: groups={groups} must divide both C_in={c} (x of shape {xs}) and "
                         f"K={k} (weights of shape {ws})")
    if cg * groups != c:
        raise ShapeError(f"{op}: x of shape {xs} has C_in={c} channels but weights of shape {ws} with "
                         f"groups={groups} expect C_in = {cg} * {groups} = {cg * groups}")
    if b is not None and _shape_of(b) != (k,):
        raise ShapeError(f"{op}: expected a bias of shape ({k},) for weights of shape {ws}, got shape {_shape_of(b)}")
    stride = triple(stride, "stride", op)
    dilation = triple(dilation, "dilation", op)
    if min(stride) < 1 or min(dilation) < 1 or min(fd, fh, fw) < 1:
        raise ValueError(f"{op}: stride, dilation and kernel size must be positive, got stride {stride}, "
                         f"dilation {dilation}, kernel {(fd, fh, fw)}")
    extents = tuple(q * (f - 1) + 1 for q, f in zip(dilation, (fd, fh, fw)))
    pads = conv3d_pads(padding, (d, h, wd), extents, stride, op)
    padded = tuple(n_in + sum(side) for n_in, side in zip((d, h, wd), pads))
    if any(e > p for e, p in zip(extents, padded)):
        spread = f" (dilated by {dilation}: {'x'.join(map(str, extents))})" if dilation != (1, 1, 1) else ""
        raise ShapeError(f"{op}: kernel {fd}x{fh}x{fw}{spread} (weights of shape {ws}) is larger than the padded "
                         f"input {'x'.join(map(str, padded))} (x of shape {xs}, padding {padding!r})")
    keep = graph.is_grad_enabled() and bool(getattr(w, "requires_grad", False))
    inputs = (x, w) if b is None else (x, w, b)
    return Conv3d.apply(*inputs, stride=stride, dilation=dilation, pads=pads, groups=groups, keep=keep)
