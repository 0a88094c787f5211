"""Sliding windows as rows (``unfold``, im2col exposed) and the adjoint that adds rows back
into an image (``fold``, col2im), PyTorch's ``F.unfold``/``F.fold`` in channels-last form.

For an NHWC image x of shape (N, H, W, C), kernel (f_h, f_w), stride s, padding p (zeros
on both sides) and dilation d (taps d pixels apart), the windows are

    h_out = floor((H + 2 p_h - d_h (f_h - 1) - 1) / s_h) + 1     (the same for w_out),

and ``unfold(x)`` is (N, L, f_h f_w C) with L = h_out w_out windows in row-major order,
each window flattened in (i, j, c) order, the order of a conv weight (K, f_h, f_w, c_in):
a convolution is ``unfold(x) @ w.reshape(K, -1).T``. PyTorch's (N, C f_h f_w, L) layout
is ``cols.reshape(N, L, f_h, f_w, C).transpose(0, 4, 2, 3, 1).reshape(N, -1, L)``.

``fold(cols, (H, W), ...)`` puts each row back in its window and adds where windows
overlap; it is the transpose of ``unfold``, so each is the other's backward. ``fold(unfold(x))``
is x times the number of windows that cover each pixel.

Both are linear, so they are differentiable to any order, and they record a convolution's
own gradients as ops (:func:`conv_gradients_graph`): with P(x) the patch rows of the padded
input per group and W_g the group's filters as rows, v_g = P(x) W_g^T, so

    dJ/dW_g = (dJ/dv_g)^T P(x),    dJ/dx = P^T(dJ/dv_g W_g),    dJ/db = sum of dJ/dv,

bilinear in (x, w) and linear in dJ/dv: differentiating them again gives the same three
maps (the second derivatives of a CNN, such as a gradient penalty's).
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional.im2col import check_nhwc, pad_nhwc, pair, strided_view, strides_of
from lamina.functional.shape import pad


def _windows(size: int, f: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (f - 1) - 1) // s + 1


class WindowGeometry:
    """Kernel, dilation, padding and stride of one unfold/fold, as pairs."""

    def __init__(self, op: str, kernel_size, dilation, padding, stride):
        self.op = op
        self.kernel = pair(kernel_size, "kernel_size", op)
        self.dilation = pair(dilation, "dilation", op)
        self.padding = pair(padding, "padding", op)
        self.stride = pair(stride, "stride", op)
        for name in ("kernel", "dilation", "stride"):
            if min(getattr(self, name)) < 1:
                raise ValueError(f"{op}: {name} must be positive, got {getattr(self, name)}")
        if min(self.padding) < 0:
            raise ValueError(f"{op}: padding must be non-negative, got {self.padding}")

    def out_hw(self, hw: tuple[int, int], what: str) -> tuple[int, int]:
        out = tuple(_windows(n, f, s, p, d) for n, f, s, p, d in
                    zip(hw, self.kernel, self.stride, self.padding, self.dilation))
        if min(out) < 1:
            extent = tuple(d * (f - 1) + 1 for f, d in zip(self.kernel, self.dilation))
            raise ShapeError(f"{self.op}: a window of {extent} pixels (kernel {self.kernel}, dilation "
                             f"{self.dilation}) does not fit {what} {hw} padded by {self.padding}")
        return out

    def config(self) -> dict:
        return {"kernel_size": self.kernel, "dilation": self.dilation, "padding": self.padding, "stride": self.stride}


def unfold_array(x, g: WindowGeometry):
    """The (N, L, f_h f_w C) rows of the windows of an NHWC array (one copy of a strided view)."""
    n, h, w, c = x.shape
    ho, wo = g.out_hw((h, w), "the input of shape (H, W) =")
    (ph, pw), (fh, fw), (sh, sw), (dh, dw) = g.padding, g.kernel, g.stride, g.dilation
    xpad = backend.xp.ascontiguousarray(pad_nhwc(x, (ph, ph, pw, pw)))
    sn, s_h, s_w, s_c = strides_of(xpad)
    view = strided_view(xpad, (n, ho, wo, fh, fw, c), (sn, s_h * sh, s_w * sw, s_h * dh, s_w * dw, s_c))
    return view.reshape(n, ho * wo, fh * fw * c)


def fold_array(cols, hw: tuple[int, int], g: WindowGeometry):
    """The NHWC image of size ``hw`` whose windows' rows add up to ``cols`` (N, L, f_h f_w C)."""
    xp = backend.xp
    n, _, k = cols.shape
    (fh, fw), (ph, pw), (sh, sw), (dh, dw) = g.kernel, g.padding, g.stride, g.dilation
    ho, wo = g.out_hw(hw, "the output size")
    c = k // (fh * fw)
    windows = cols.reshape(n, ho, wo, fh, fw, c)
    out = xp.zeros((n, hw[0] + 2 * ph, hw[1] + 2 * pw, c), dtype=cols.dtype)
    for i in range(fh):
        for j in range(fw):
            out[:, i * dh:i * dh + sh * (ho - 1) + 1:sh, j * dw:j * dw + sw * (wo - 1) + 1:sw] += windows[:, :, :, i, j]
    return out[:, ph:ph + hw[0], pw:pw + hw[1]]


class Unfold(Function):
    def forward(self, x):
        self.hw = x.shape[1:3]
        return unfold_array(x, self.geometry)

    def backward(self, dy):
        return (fold_array(dy, self.hw, self.geometry),)

    backward_graph = Function.linear_backward_graph


class Fold(Function):
    def forward(self, cols):
        return fold_array(cols, self.hw, self.geometry)

    def backward(self, dy):
        return (unfold_array(dy, self.geometry),)

    backward_graph = Function.linear_backward_graph


# -- a convolution's gradients as recorded ops ------------------------------------------------


def _geometry_of(kernel, stride, dilation) -> WindowGeometry:
    return WindowGeometry("conv2d backward", kernel, dilation, 0, stride)


def conv_patch_rows(x: Tensor, kernel, pads, stride, dilation, groups: int) -> Tensor:
    """P(x) by recorded ops: (groups, N L, f_h f_w C / groups), a row per window of x zero
    padded by ``pads`` (top, bottom, left, right), the columns of group g in a weight's
    (i, j, c) order over that group's channels."""
    pt, pb, pl, pr = pads
    if any(pads):
        x = pad(x, ((0, 0), (pt, pb), (pl, pr), (0, 0)))
    cols = Unfold.apply(x, geometry=_geometry_of(kernel, stride, dilation))          # (N, L, f_h f_w C)
    n, windows, width = cols.shape
    if groups == 1:
        return cols.reshape(1, n * windows, width)
    taps = kernel[0] * kernel[1]
    per_group = cols.reshape(n * windows, taps, groups, width // (taps * groups)).transpose(2, 0, 1, 3)
    return per_group.reshape(groups, n * windows, width // groups)


def conv_patch_rows_adjoint(rows: Tensor, x_shape, kernel, pads, stride, dilation) -> Tensor:
    """P^T(rows): each row of (groups, N L, f_h f_w C / groups) added back onto the pixels of
    its window (col2im), the padding cut off: the image of shape ``x_shape``."""
    n, h, w, c = x_shape
    pt, pb, pl, pr = pads
    groups, count, width = rows.shape
    taps = kernel[0] * kernel[1]
    if groups == 1:
        cols = rows.reshape(n, count // n, width)
    else:
        cols = rows.reshape(groups, count, taps, width // taps).transpose(1, 2, 0, 3).reshape(n, count // n, taps * c)
    padded = Fold.apply(cols, geometry=_geometry_of(kernel, stride, dilation), hw=(h + pt + pb, w + pl + pr))
    return padded[:, pt:pt + h, pl:pl + w] if any(pads) else padded


def conv_gradients_graph(x: Tensor, w: Tensor, dy: Tensor, pads, stride, dilation, groups: int, needs) -> tuple:
    """(dJ/dx, dJ/dw, dJ/db) of v = x * w + b (module docstring) by recorded ops, ``None``
    where ``needs`` (one flag per input, two without a bias) says no gradient is wanted."""
    n, ho, wo, k = dy.shape
    kernel = w.shape[1:3]
    # dJ/dv_g (groups, N L, K / groups) and W_g (groups, K / groups, f_h f_w C / groups)
    dy_g = dy.reshape(n * ho * wo, groups, k // groups).transpose(1, 0, 2)
    w_g = w.reshape(groups, k // groups, -1)
    dx = dw = db = None
    if needs[0]:
        dx = conv_patch_rows_adjoint(dy_g @ w_g, x.shape, kernel, pads, stride, dilation)
    if needs[1]:
        rows = conv_patch_rows(x, kernel, pads, stride, dilation, groups)
        dw = (dy_g.swapaxes(1, 2) @ rows).reshape(w.shape)
    if len(needs) > 2 and needs[2]:
        db = dy.sum(axis=(0, 1, 2))
    return dx, dw, db


def unfold(x, kernel_size, dilation=1, padding=0, stride=1) -> Tensor:
    """The windows of an NHWC batch as rows: (N, H, W, C) -> (N, L, f_h f_w C) (module docstring)."""
    x = x if isinstance(x, Tensor) else Tensor(x)
    check_nhwc(x.shape, "unfold")
    return Unfold.apply(x, geometry=WindowGeometry("unfold", kernel_size, dilation, padding, stride))


def fold(cols, output_size, kernel_size, dilation=1, padding=0, stride=1) -> Tensor:
    """Rows of windows added back into an NHWC batch: (N, L, f_h f_w C) -> (N, H, W, C),
    ``output_size`` = (H, W); the adjoint of :func:`unfold` (module docstring)."""
    cols = cols if isinstance(cols, Tensor) else Tensor(cols)
    g = WindowGeometry("fold", kernel_size, dilation, padding, stride)
    hw = pair(output_size, "output_size", "fold")
    if cols.ndim != 3:
        raise ShapeError(f"fold: expected rows of shape (N, L, f_h f_w C) (3-D), got shape {tuple(cols.shape)}")
    ho, wo = g.out_hw(hw, "the output size")
    taps = g.kernel[0] * g.kernel[1]
    if cols.shape[1] != ho * wo or cols.shape[2] % taps:
        raise ShapeError(f"fold: rows of shape {tuple(cols.shape)} do not fit output size {hw} with kernel "
                         f"{g.kernel}: expected (N, {ho * wo}, a multiple of {taps}), {ho} x {wo} windows")
    return Fold.apply(cols, geometry=g, hw=hw)
