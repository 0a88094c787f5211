"""Transposed convolution (fractionally strided convolution, "deconvolution"): the adjoint
of a convolution, which upsamples by its stride (autoencoders, segmentation, generators).

For a convolution v = conv(X, w) of stride s and padding p from an (H, W, c) input to an
(h, w, K) output, the transposed convolution with the same w maps (h, w, K) back to
(H, W, c): y = conv^T(x, w) + b,

    y[n, s i + a - p, s j + b - p, c] += sum_k x[n, i, j, k] w[k, a, b, c],

which is the convolution's dJ/dx with dJ/dv = x (course notes: pad(dJ/dv) * rot180(w)),
computed by the same kernels (col2im). Its own gradients are convolutions again:
dJ/dx = conv(dJ/dy, w) and dJ/dw = the convolution's weight gradient with dJ/dy as its
input and x as its output gradient.

The weights keep the convolution's layout, w: (K, f_h, f_w, c) with K the transposed
convolution's input channels and c its output channels (PyTorch's ConvTranspose2d weight
(in, out, f_h, f_w) is w.transpose(0, 3, 1, 2); Keras's kernel (f_h, f_w, out, in) is
w.transpose(1, 2, 3, 0)). Output size: H = (h - 1) s - p_top - p_bottom + f + output_padding.
With a dilation q (taps q pixels apart: f becomes q (f - 1) + 1) or groups, the weights are
(K, f_h, f_w, c / groups) and it is computed as in :mod:`lamina.functional.conv_transpose_nd`.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional import conv_gemm
from lamina.functional._util import per_channel
from lamina.functional.conv import Conv2d
from lamina.functional.conv_transpose_nd import spread_conv_transpose
from lamina.functional.fold import conv_patch_rows
from lamina.functional.im2col import conv_pads, pair


class ConvTranspose2d(Function):
    """y = conv^T(x, w) + b with hyperparameters ``stride``, ``pads`` (top, bottom, left,
    right: the padding of the convolution it is the adjoint of) and ``out_hw`` (H, W)."""

    def forward(self, x, w, b=None):
        xp = backend.xp
        n = x.shape[0]
        c = w.shape[3]
        out = xp.empty((n, *self.out_hw, c), dtype=xp.result_type(x, w))
        x = xp.ascontiguousarray(x)
        conv_gemm.input_gradient(out.shape, w, x, self.pads, self.stride, out)
        if b is not None:
            per_channel(xp.add, out, b, out)
        self.x, self.w = x, w
        return out

    def backward(self, dy):
        xp = backend.xp
        x, w, needs = self.x, self.w, self.needs_grad
        dy = xp.ascontiguousarray(dy)
        dx = dw = db = None
        chunks = None
        if needs[0]:                         # dJ/dx = conv(dJ/dy, w)
            conv = Conv2d.__new__(Conv2d)
            conv.__dict__.update(stride=self.stride, pads=self.pads, groups=1,
                                 keep=conv_gemm.KEEP_PATCHES and needs[1])
            dx = conv.forward(dy, w)
            chunks = conv.chunks
        if needs[1]:                         # dJ/dw: dJ/dy as the convolution's input, x as its dJ/dv
            if chunks is None:
                chunks = conv_gemm.unkept_chunks(dy.shape, w, self.pads, self.stride, x.shape[1:3])
            dw = conv_gemm.gemm_backward(dy, w, x, self.pads, self.stride, None, True, chunks)
        if len(needs) > 2 and needs[2]:
            db = conv_gemm.sum_rows(dy)
        return dx, dw, db

    def backward_graph(self, dy):
        """The same gradients by recorded ops: y = P^T(x W) with P the patch rows of the
        convolution this is the adjoint of and W the filters as rows (K, f_h f_w c), so
        dJ/dx = P(dJ/dy) W^T and dJ/dw = x^T P(dJ/dy)."""
        x, w = self.inputs[:2]
        needs = self.needs_grad
        k = x.shape[3]
        dx = dw = db = None
        if needs[0] or needs[1]:
            rows = conv_patch_rows(dy, w.shape[1:3], self.pads, self.stride, (1, 1), 1).reshape(-1, w.size // k)
            if needs[0]:
                dx = (rows @ w.reshape(k, -1).T).reshape(x.shape)
            if needs[1]:
                dw = (x.reshape(-1, k).T @ rows).reshape(w.shape)
        if len(needs) > 2 and needs[2]:
            db = dy.sum(axis=(0, 1, 2))
        return dx, dw, db


def _shape_of(a) -> tuple[int, ...]:
    return tuple(a.shape) if hasattr(a, "shape") else tuple(backend.xp.shape(a))


def _as_tensors(*inputs) -> list[Tensor | None]:
    """The inputs as tensors, as the fused kernel's inputs become: arrays take the dtype of
    the first tensor among them (the default dtype if none is one); None stays None."""
    dtype = next((a.dtype for a in inputs if isinstance(a, Tensor)), None)
    return [a if a is None or isinstance(a, Tensor) else Tensor(backend.xp.asarray(a), dtype=dtype) for a in inputs]


def transpose_geometry(in_hw: tuple[int, int], kernel: tuple[int, int], stride: tuple[int, int], padding,
                       output_padding, op: str, dilation: tuple[int, int] = (1, 1)
                       ) -> tuple[tuple[int, int, int, int], tuple[int, int]]:
    """The adjoint convolution's (top, bottom, left, right) padding and the output (H, W) of
    a transposed convolution whose kernel taps are ``dilation`` q apart (an extent of
    F = q (f - 1) + 1).

    ``'valid'``: no padding, H = (h - 1) s + F. ``'same'``: H = h s, the adjoint of a 'same'
    convolution from h s to h (TF/Keras's rule, the odd pixel cropped at the bottom/right).
    p or (p_h, p_w): p cropped from each side, H = (h - 1) s - 2p + F + output_padding, where
    output_padding (0 <= it < max(s, q), PyTorch's rule) adds rows at the bottom to choose
    among the sizes that a stride-s convolution maps to h."""
    extra = pair(output_padding, "output_padding", op)
    kernel = tuple(q * (f - 1) + 1 for f, q in zip(kernel, dilation))
    if isinstance(padding, str) and padding.lower() == "same":
        if extra != (0, 0):
            raise ValueError(f"{op}: padding='same' sets the output to h s; output_padding must be 0, got "
                             f"{output_padding!r}")
        hw = (in_hw[0] * stride[0], in_hw[1] * stride[1])
        pads = conv_pads("same", hw, kernel, stride, op)
        return pads, hw
    pads = conv_pads(padding, (0, 0), kernel, stride, op)
    if any(not 0 <= e < max(s, q) for e, s, q in zip(extra, stride, dilation)):
        raise ValueError(f"{op}: output_padding must be at least 0 and smaller than the stride {stride} or the "
                         f"dilation {dilation} along each axis, got {output_padding!r}")
    hw = tuple((n - 1) * s + f - before - after + e
               for n, f, s, before, after, e in zip(in_hw, kernel, stride, pads[0::2], pads[1::2], extra))
    return pads, hw


def conv_transpose2d(x: Tensor, w: Tensor, b: Tensor | None = None, stride: int | tuple[int, int] = 1,
                     padding: str | int | tuple[int, int] = 0, output_padding: int | tuple[int, int] = 0,
                     groups: int = 1, dilation: int | tuple[int, int] = 1) -> Tensor:
    """Transposed 2-D convolution of NHWC images: y = conv^T(x, w) + b (see the module), with
    PyTorch's conv_transpose2d arguments in the same order.

    x: (N, h, w, K). w: (K, f_h, f_w, c / groups), the layout of the convolution from c to K
    channels that this is the adjoint of. b: (c,) or None. stride: s or (s_h, s_w), the
    upsampling factor. padding: 'valid', 'same' (output h s x w s) or p / (p_h, p_w).
    output_padding: extra rows/columns at the bottom/right, smaller than the stride or the
    dilation. groups: K and c split into ``groups`` independent transposed convolutions.
    dilation: q or (q_h, q_w), the spacing of the kernel's taps.
    Output: (N, (h - 1) s_h - 2 p_h + q_h (f_h - 1) + output_padding + 1, ..., c).

    Gradients: dJ/dx = conv(dJ/dy, w) with the same stride, padding and dilation;
    dJ/dw[k, a, b, c] = sum over n, i, j of x[n, i, j, k] dJ/dy[n, s i + q a - p, s j + q b - p, c];
    dJ/db = sum of dJ/dy. Without dilation and groups a fused kernel computes it; with them,
    the stride-1 convolution of :func:`lamina.functional.conv_transpose_nd.spread_conv_transpose`.
    """
    op = "conv_transpose2d"
    xs, ws = _shape_of(x), _shape_of(w)
    if len(xs) != 4:
        raise ShapeError(f"{op}: expected x of shape (N, H, W, C_in) (4-D, NHWC), got shape {xs}")
    if len(ws) != 4:
        raise ShapeError(f"{op}: expected weights of shape (C_in, f_h, f_w, C_out) (4-D), got shape {ws}")
    if xs[3] != ws[0]:
        raise ShapeError(f"{op}: x of shape {xs} has C_in={xs[3]} channels but weights of shape {ws} expect "
                         f"C_in={ws[0]} (their first axis)")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    if xs[3] % groups:
        raise ShapeError(f"{op}: groups={groups} must divide C_in={xs[3]} (x of shape {xs})")
    c_out = ws[3] * groups
    if b is not None and _shape_of(b) != (c_out,):
        raise ShapeError(f"{op}: expected a bias of shape ({c_out},) for weights of shape {ws} and groups={groups}, "
                         f"got shape {_shape_of(b)}")
    stride = pair(stride, "stride", op)
    if min(stride) < 1:
        raise ValueError(f"{op}: stride must be positive, got {stride}")
    dilation = pair(dilation, "dilation", op)
    if min(dilation) < 1:
        raise ValueError(f"{op}: dilation must be positive, got {dilation}")
    if min(ws[1:3]) < 1 or min(xs[1:3]) < 1:
        raise ShapeError(f"{op}: empty input or kernel: x of shape {xs}, weights of shape {ws}")
    pads, out_hw = transpose_geometry(xs[1:3], ws[1:3], stride, padding, output_padding, op, dilation)
    if min(out_hw) < 1:
        raise ShapeError(f"{op}: padding {padding!r} crops the whole output of x of shape {xs} with weights "
                         f"of shape {ws}, stride {stride} and dilation {dilation}: its size would be {out_hw}")
    if dilation != (1, 1) or groups != 1:
        extra = tuple(out - ((n - 1) * s + q * (f - 1) + 1 - before - after) for out, n, s, q, f, before, after in
                      zip(out_hw, xs[1:3], stride, dilation, ws[1:3], pads[0::2], pads[1::2]))
        x, w, b = _as_tensors(x, w, b)
        return spread_conv_transpose(x, w, b, stride, (pads[:2], pads[2:]), extra, dilation, groups)
    inputs = (x, w) if b is None else (x, w, b)
    return ConvTranspose2d.apply(*inputs, stride=stride, pads=pads, out_hw=out_hw)
