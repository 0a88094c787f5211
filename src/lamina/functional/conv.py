"""2-D convolution on NHWC images: im2col + GEMM (default) or the convolution theorem (FFT).

Notation (course notes, convolutional layer): input x of shape (N, h, w, c_in), K filters
w of shape (K, f_h, f_w, c_in / groups), one bias per filter, output v = x * w + b of shape
(N, (h + 2p - f_h) / s + 1, (w + 2p - f_w) / s + 1, K) (floor). As in every deep-learning
library, ``*`` is cross-correlation:

    v[n, y, x, k] = b[k] + sum_{i, j, c} xpad[n, y s + i, x s + j, c] w[k, i, j, c].

Backward, with the upstream gradient dJ/dv:

    dJ/db = sum over n, y, x of dJ/dv
    dJ/dw = x * dJ/dv          (each weight sees a sliding window of the input)
    dJ/dx = pad(dJ/dv) * rot180(w)   (stride 1; with a stride, dJ/dv is dilated first)

Vectorization (course notes, "Vectorized implementation"): the windows are laid out as the
rows of a matrix (im2col) so that the convolution is one matrix product with the weights
reshaped to (K, f_h f_w c_in). How the rows are built is chosen by shape (see ``_dense_*``).
"""

from __future__ import annotations

import math

from lamina import backend
from lamina.autograd import Function, Tensor, graph
from lamina.errors import ShapeError
from lamina.functional import _parallel
from lamina.functional.im2col import clipped, conv_pads, offset_view, out_size, pad_nhwc, pair, patches

# -- dense (groups == 1) kernels on raw arrays -----------------------------------------------
#
# Three ways of turning the windows into matrix products, picked by ``_plan``:
#
# "1x1"   1x1 kernels: the image itself, (N h w, c_in), is the patch matrix: one GEMM, no copy.
# "rows"  stride 1: the patch matrix is never built. R[n, y, x, (j, c)] = xpad[n, y, x + j, c]
#         (an f_w-fold copy instead of f_h f_w-fold) over *all* padded rows y; for kernel row
#         i the rows of R shifted down by i image rows are exactly the windows' i-th rows, so
#         v = sum_i R[shifted by i] @ W_i: f_h GEMMs on contiguous slices, no im2col copy.
#         Outputs land on the padded-height grid; the rows past h_out are dropped.
# "im2col" everything else: the (N h_out w_out, f_h f_w c_in) patch matrix, built as one
#         as_strided view of the padded input and one copy, times the weight matrix.


def _plan(kernel: tuple[int, int], stride: tuple[int, int], c_in: int) -> str:
    if kernel == (1, 1):
        return "1x1"
    if stride == (1, 1) and kernel[1] * c_in < 16:
        return "flat"
    if stride == (1, 1) and kernel[0] > 1 and c_in >= 8:
        return "rows"
    return "im2col"


def _flat_image(x, pads, tail: int):
    """x as channel-major rows (C, N hp wp + tail), zero padded: pixel (n, y, x) of the padded
    image at column (n hp + y) wp + x, so kernel offset (i, j) is a shift by i wp + j."""
    xp = backend.xp
    n, h, wd, c = x.shape
    pt, pb, pl, pr = pads
    hp, wp = h + pt + pb, wd + pl + pr
    size = n * hp * wp
    flat = xp.zeros((c, size + tail), dtype=x.dtype)
    flat[:, :size].reshape(c, n, hp, wp)[:, :, pt:pt + h, pl:pl + wd] = x.transpose(3, 0, 1, 2)
    return flat


def _flat_forward(x, w, pads, bias, keep: bool):
    """Stride 1, few input channels: columns (i, j, c) of the patch matrix are shifted copies of
    the flat channel rows (one contiguous copy each); v = patches @ W^T over the padded grid."""
    xp = backend.xp
    n, h, wd, c = x.shape
    k, fh, fw, _ = w.shape
    pt, pb, pl, pr = pads
    hp, wp = h + pt + pb, wd + pl + pr
    size, tail = n * hp * wp, (fh - 1) * wp + fw - 1
    flat = _flat_image(x, pads, tail)
    step = flat.strides[1]
    view = backend.xp.lib.stride_tricks.as_strided(
        flat, (fh, fw, c, size), (wp * step, step, flat.strides[0], step), writeable=False)
    cols_t = _parallel.contiguous(view).reshape(fh * fw * c, size)      # (F, grid)
    del flat, view
    grid = xp.matmul(cols_t.T, w.reshape(k, -1).T).reshape(n, hp, wp, k)
    valid = grid[:, :hp - fh + 1, :wp - fw + 1]
    out = xp.add(valid, bias) if bias is not None else xp.ascontiguousarray(valid)
    return out, (cols_t if keep else None)


def _flat_backward(cols_t, dy, w, x_shape, pads, need_x: bool, need_w: bool):
    xp = backend.xp
    n, h, wd, c = x_shape
    k, fh, fw, _ = w.shape
    pt, pb, pl, pr = pads
    hp, wp = h + pt + pb, wd + pl + pr
    size, tail = n * hp * wp, (fh - 1) * wp + fw - 1
    ho, wo = dy.shape[1:3]
    grid = xp.zeros((n, hp, wp, k), dtype=dy.dtype)
    grid[:, :ho, :wo] = dy
    g2 = grid.reshape(size, k)
    dw = dx = None
    if need_w:                                   # dJ/dw = x * dJ/dv
        dw = xp.ascontiguousarray(xp.matmul(cols_t, g2).T).reshape(w.shape)
    if need_x:                                   # col2im: shift-add each column back
        dcols = xp.matmul(w.reshape(k, -1).T, g2.T).reshape(fh, fw, c, size)
        flat = xp.zeros((c, size + tail), dtype=dy.dtype)
        for i in range(fh):
            for j in range(fw):
                shift = i * wp + j
                flat[:, shift:shift + size] += dcols[i, j]
        del dcols
        image = flat[:, :size].reshape(c, n, hp, wp)[:, :, pt:pt + h, pl:pl + wd]
        dx = xp.ascontiguousarray(image.transpose(1, 2, 3, 0))
    return dx, dw


def _row_matrix(xpad, fw: int, wo: int):
    """R = xpad expanded along W: (N hp wo, fw c); xpad itself (reshaped) when fw == 1."""
    n, hp, wp, c = xpad.shape
    if fw == 1 and wo == wp and xpad.flags.c_contiguous:
        return xpad.reshape(n * hp * wo, c)
    as_strided = backend.xp.lib.stride_tricks.as_strided
    sn, s_h, s_w, s_c = xpad.strides
    view = as_strided(xpad, (n, hp, wo, fw, c), (sn, s_h, s_w, s_w, s_c), writeable=False)
    return _parallel.contiguous(view).reshape(n * hp * wo, fw * c)


def _rows_forward(r2, w, n: int, hp: int, ho: int, wo: int, bias=None):
    """v = sum_i R[i wo :] @ W_i^T on the padded-height grid, cropped to h_out (stride 1)."""
    xp = backend.xp
    k, fh = w.shape[0], w.shape[1]
    rows = (n * hp - fh + 1) * wo          # grid rows that every kernel row can reach
    acc = xp.empty((n * hp * wo, k), dtype=r2.dtype)
    xp.matmul(r2[:rows], w[:, 0].reshape(k, -1).T, out=acc[:rows])
    acc4 = acc.reshape(n, hp, wo, k)[:, :ho]
    if fh == 1:
        out = xp.ascontiguousarray(acc4)
    else:
        part = xp.empty((n * hp * wo, k), dtype=r2.dtype)
        for i in range(1, fh):
            xp.matmul(r2[i * wo:i * wo + rows], w[:, i].reshape(k, -1).T, out=part[:rows])
            if i < fh - 1:
                _parallel.add(acc[:rows], part[:rows], out=acc[:rows])
        part4 = part.reshape(n, hp, wo, k)[:, :ho]
        out = xp.empty(acc4.shape, dtype=acc.dtype)

        def chunk(lo, hi):
            xp.add(acc4[lo:hi], part4[lo:hi], out=out[lo:hi])
            if bias is not None:
                out[lo:hi] += bias

        _parallel.split(chunk, n, out.size)
        return out
    if bias is not None:
        out += bias
    return out


def _dense_forward(xpad, w, stride, out_hw, plan: str, bias, keep: bool):
    """Forward of one dense convolution; returns (v, what backward needs for dJ/dw)."""
    xp = backend.xp
    n, hp, wp, c = xpad.shape
    k, fh, fw, _ = w.shape
    ho, wo = out_hw
    if plan == "1x1":
        sh, sw = stride
        sub = xpad if stride == (1, 1) else xpad[:, :sh * (ho - 1) + 1:sh, :sw * (wo - 1) + 1:sw]
        x2 = xp.ascontiguousarray(sub).reshape(n * ho * wo, c)
        out = xp.matmul(x2, w.reshape(k, c).T)
        if bias is not None:
            out += bias
        return out.reshape(n, ho, wo, k), (x2 if keep else None)
    if plan == "rows":
        r2 = _row_matrix(xpad, fw, wo)
        out = _rows_forward(r2, w, n, hp, ho, wo, bias)
        return out, (r2 if keep else None)
    cols = _parallel.contiguous(patches(xpad, (fh, fw), out_hw, stride)).reshape(n * ho * wo, fh * fw * c)
    out = xp.matmul(cols, w.reshape(k, -1).T)
    if bias is not None:
        out += bias
    return out.reshape(n, ho, wo, k), (cols if keep else None)


def _dense_grad_w(saved, dy, w_shape, plan: str, hp: int):
    """dJ/dw = x * dJ/dv as GEMMs of the saved patch rows with dJ/dv (computed as
    patches^T @ dJ/dv, the faster orientation for OpenBLAS, then transposed: it is small)."""
    xp = backend.xp
    n, ho, wo, k = dy.shape
    _, fh, fw, c = w_shape
    if plan != "rows":
        return xp.ascontiguousarray(xp.matmul(saved.T, dy.reshape(-1, k)).T).reshape(w_shape)
    # dJ/dv on the padded-height grid (zero rows past h_out), then one GEMM per kernel row.
    rows = (n * hp - fh + 1) * wo
    grid = xp.empty((n, hp, wo, k), dtype=dy.dtype)
    _parallel.copy(grid[:, :ho], dy)
    grid[:, ho:] = 0
    g2 = grid.reshape(-1, k)[:rows]
    dw = xp.empty((fh, fw * c, k), dtype=dy.dtype)
    for i in range(fh):
        xp.matmul(saved[i * wo:i * wo + rows].T, g2, out=dw[i])
    return xp.ascontiguousarray(dw.transpose(2, 0, 1)).reshape(w_shape)


def _dense_grad_x(dy, w, x_hw, pads, stride, plan: str):
    """dJ/dx = pad(dJ/dv) * rot180(w): per kernel offset one GEMM dJ/dv @ w[:, i, j, :]
    into a contiguous buffer, then one slice-add into dJ/dx (col2im)."""
    xp = backend.xp
    n, ho, wo, k = dy.shape
    _, fh, fw, c = w.shape
    h, wd = x_hw
    pt, _, pl, _ = pads
    sh, sw = stride
    if plan == "1x1":
        dx2 = xp.matmul(dy.reshape(-1, k), w.reshape(k, c))
        if stride == (1, 1) and ho == h and wo == wd:
            return dx2.reshape(n, h, wd, c)
        dx = xp.zeros((n, h, wd, c), dtype=dx2.dtype)
        lo_h, hi_h, rs = clipped(ho, -pt, sh, h)
        lo_w, hi_w, cs = clipped(wo, -pl, sw, wd)
        dx[:, rs, cs] = dx2.reshape(n, ho, wo, c)[:, lo_h:hi_h, lo_w:hi_w]
        return dx
    if plan == "rows" and pt <= fh - 1 and pl <= fw - 1:
        # stride 1: a valid correlation of dJ/dv padded by f - 1 - p with the flipped,
        # channel-swapped kernel, w'[c, i, j, k] = w[k, f_h-1-i, f_w-1-j, c].
        pb = (h + fh - 1) - ho - (fh - 1 - pt)
        pr = (wd + fw - 1) - wo - (fw - 1 - pl)
        dyq = pad_nhwc(dy, (fh - 1 - pt, pb, fw - 1 - pl, pr))
        wt = xp.ascontiguousarray(w[:, ::-1, ::-1, :].transpose(3, 1, 2, 0))
        r2 = _row_matrix(dyq, fw, wd)
        dx = _rows_forward(r2, wt, n, dyq.shape[1], h, wd)
        return dx
    dy2 = dy.reshape(-1, k)
    dx = xp.zeros((n, h, wd, c), dtype=dy.dtype)
    buf = xp.empty((n * ho * wo, c), dtype=dy.dtype)
    buf4 = buf.reshape(n, ho, wo, c)
    for i in range(fh):
        lo_h, hi_h, rs = clipped(ho, i - pt, sh, h)
        if hi_h <= lo_h:
            continue
        for j in range(fw):
            lo_w, hi_w, cs = clipped(wo, j - pl, sw, wd)
            if hi_w <= lo_w:
                continue
            xp.matmul(dy2, w[:, i, j, :], out=buf)
            dx[:, rs, cs] += buf4[:, lo_h:hi_h, lo_w:hi_w]
    return dx


# -- depthwise (groups == c_in) kernels: one multiply-add per kernel offset ------------------


def _depthwise_forward(xpad, w, stride, out_hw, bias):
    xp = backend.xp
    n, _, _, c = xpad.shape
    k, fh, fw, _ = w.shape
    m = k // c
    ho, wo = out_hw
    out = xp.zeros((n, ho, wo, c, m), dtype=xpad.dtype)
    tmp = xp.empty_like(out)
    for i in range(fh):
        for j in range(fw):
            view = offset_view(xpad, i, j, out_hw, stride)
            xp.multiply(view[..., None], w[:, i, j, 0].reshape(c, m), out=tmp)
            out += tmp
    out = out.reshape(n, ho, wo, k)
    if bias is not None:
        out += bias
    return out


def _depthwise_grad_w(xpad, dy, w_shape, stride):
    xp = backend.xp
    n, ho, wo, k = dy.shape
    _, fh, fw, _ = w_shape
    c = xpad.shape[3]
    dy5 = dy.reshape(n, ho, wo, c, k // c)
    dw = xp.empty(w_shape, dtype=dy.dtype)
    for i in range(fh):
        for j in range(fw):
            view = offset_view(xpad, i, j, (ho, wo), stride)
            dw[:, i, j, 0] = xp.einsum("nhwc,nhwcm->cm", view, dy5).reshape(k)
    return dw


def _depthwise_grad_x(dy, w, x_shape, pads, stride):
    xp = backend.xp
    n, h, wd, c = x_shape
    _, ho, wo, k = dy.shape
    fh, fw = w.shape[1], w.shape[2]
    m = k // c
    pt, _, pl, _ = pads
    sh, sw = stride
    dy5 = dy.reshape(n, ho, wo, c, m)
    dx = xp.zeros(x_shape, dtype=dy.dtype)
    for i in range(fh):
        lo_h, hi_h, rs = clipped(ho, i - pt, sh, h)
        for j in range(fw):
            lo_w, hi_w, cs = clipped(wo, j - pl, sw, wd)
            if hi_h <= lo_h or hi_w <= lo_w:
                continue
            part = dy5[:, lo_h:hi_h, lo_w:hi_w]
            wij = w[:, i, j, 0].reshape(c, m)
            if m == 1:
                dx[:, rs, cs] += part[..., 0] * wij[:, 0]
            else:
                dx[:, rs, cs] += xp.einsum("nhwcm,cm->nhwc", part, wij)
    return dx


def _sum_rows(dy):
    """dJ/db = sum over n, y, x of dJ/dv, as one GEMV (faster than a strided reduction)."""
    xp = backend.xp
    dy2 = dy.reshape(-1, dy.shape[-1])
    return xp.matmul(xp.ones(dy2.shape[0], dtype=dy2.dtype), dy2)


class Conv2d(Function):
    """v = x * w + b by im2col + GEMM; hyperparameters ``stride`` (s_h, s_w), ``pads``
    (top, bottom, left, right), ``groups`` and ``keep`` (save the patches for dJ/dw)."""

    def forward(self, x, w, b=None):
        n, h, wd, c = x.shape
        k, fh, fw, cg = w.shape
        (sh, sw), (pt, pb, pl, pr), g = self.stride, self.pads, self.groups
        ho, wo = out_size(h, fh, sh, pt, pb), out_size(wd, fw, sw, pl, pr)
        keep = getattr(self, "keep", True)
        self.x_shape, self.w, self.hp = x.shape, w, h + pt + pb
        if g == 1:
            self.plan = _plan((fh, fw), self.stride, c)
            if self.plan == "flat":
                out, self.saved = _flat_forward(x, w, self.pads, b, keep)
                return out
            xpad = pad_nhwc(x, self.pads)
            out, self.saved = _dense_forward(xpad, w, self.stride, (ho, wo), self.plan, b, keep)
            return out
        xpad = pad_nhwc(x, self.pads)
        if cg == 1:
            self.plan = "depthwise"
            self.saved = xpad if keep else None
            return _depthwise_forward(xpad, w, self.stride, (ho, wo), b)
        self.plan = _plan((fh, fw), self.stride, max(cg, 16))    # no "flat" per group
        kg = k // g
        outs, self.saved = [], []
        for gi in range(g):
            bias = None if b is None else b[gi * kg:(gi + 1) * kg]
            o, s = _dense_forward(xpad[..., gi * cg:(gi + 1) * cg], w[gi * kg:(gi + 1) * kg],
                                  self.stride, (ho, wo), self.plan, bias, keep)
            outs.append(o)
            self.saved.append(s)
        return backend.xp.concatenate(outs, axis=-1)

    def backward(self, dy):
        xp = backend.xp
        dy = xp.ascontiguousarray(dy)
        needs = self.needs_grad
        w, plan, g = self.w, self.plan, self.groups
        k, _, _, cg = w.shape
        db = _sum_rows(dy) if len(needs) > 2 and needs[2] else None
        dx = dw = None
        x_hw = self.x_shape[1:3]
        if plan == "flat":
            dx, dw = _flat_backward(self.saved, dy, w, self.x_shape, self.pads, needs[0], needs[1])
            self.saved = None
        elif g == 1:
            if needs[1]:
                dw = _dense_grad_w(self.saved, dy, w.shape, plan, self.hp)
            self.saved = None
            if needs[0]:
                dx = _dense_grad_x(dy, w, x_hw, self.pads, self.stride, plan)
        elif plan == "depthwise":
            if needs[1]:
                dw = _depthwise_grad_w(self.saved, dy, w.shape, self.stride)
            self.saved = None
            if needs[0]:
                dx = _depthwise_grad_x(dy, w, self.x_shape, self.pads, self.stride)
        else:
            kg = k // g
            if needs[1]:
                dw = xp.empty(w.shape, dtype=dy.dtype)
            if needs[0]:
                dx = xp.empty(self.x_shape, dtype=dy.dtype)
            for gi in range(g):
                dyg = xp.ascontiguousarray(dy[..., gi * kg:(gi + 1) * kg])
                wg = w[gi * kg:(gi + 1) * kg]
                if needs[1]:
                    dw[gi * kg:(gi + 1) * kg] = _dense_grad_w(self.saved[gi], dyg, wg.shape, plan, self.hp)
                    self.saved[gi] = None
                if needs[0]:
                    dx[..., gi * cg:(gi + 1) * cg] = _dense_grad_x(dyg, wg, x_hw, self.pads, self.stride, plan)
        return dx, dw, db


# -- FFT: the convolution theorem F{x * w} = F{x} . conj(F{w}) (correlation) ------------------


def _fft():
    import scipy.fft

    return scipy.fft


def _group_matmul(a, b, g: int, conj_b: bool = False):
    """Per frequency and group, a (N, F, g, p) @ b (F, g, p, q) -> (N, F, g, q)."""
    xp = backend.xp
    if conj_b:
        b = xp.conj(b)
    return xp.matmul(a.transpose(1, 2, 0, 3), b).transpose(2, 0, 1, 3)


class Conv2dFFT(Function):
    """v = x * w + b through the convolution theorem: F{x * w} = F{x} conj(F{w}).

    Spectra over (H, W) of size L >= the padded input, so the circular correlation equals
    the linear one on every valid output; the stride keeps every s-th output.
    """

    def forward(self, x, w, b=None):
        fft = _fft()
        xp = backend.xp
        n, h, wd, c = x.shape
        k, fh, fw, cg = w.shape
        g = self.groups
        (sh, sw), (pt, pb, pl, pr) = self.stride, self.pads
        xpad = pad_nhwc(x, self.pads)
        hp, wp = xpad.shape[1:3]
        l1, l2 = fft.next_fast_len(hp, real=True), fft.next_fast_len(wp, real=True)
        self.full = (hp - fh + 1, wp - fw + 1)           # stride-1 output size
        self.sizes, self.x_shape, self.w_shape = (l1, l2), x.shape, w.shape
        xf = fft.rfft2(xpad, s=(l1, l2), axes=(1, 2))      # (N, l1, l2r, C)
        wf = fft.rfft2(w, s=(l1, l2), axes=(1, 2))         # (K, l1, l2r, C/g)
        del xpad
        f = l1 * xf.shape[2]
        xg = xf.reshape(n, f, g, cg)
        wg = wf.reshape(g, k // g, f, cg).transpose(2, 0, 3, 1)   # (F, g, C/g, K/g)
        vf = _group_matmul(xg, wg, g, conj_b=True).reshape(n, l1, -1, k)
        v = fft.irfft2(vf, s=(l1, l2), axes=(1, 2))
        del vf
        out = xp.ascontiguousarray(v[:, :self.full[0]:sh, :self.full[1]:sw])
        if out.dtype != x.dtype:
            out = out.astype(x.dtype)
        if b is not None:
            out += b
        if graph.is_grad_enabled():
            self.xf, self.wf = xg, wg
        return out

    def backward(self, dy):
        fft = _fft()
        xp = backend.xp
        needs = self.needs_grad
        n, h, wd, c = self.x_shape
        k, fh, fw, cg = self.w_shape
        g = self.groups
        (sh, sw), (pt, pb, pl, pr) = self.stride, self.pads
        l1, l2 = self.sizes
        db = _sum_rows(xp.ascontiguousarray(dy)) if len(needs) > 2 and needs[2] else None
        # dJ/dv dilated back onto the stride-1 grid, then to the frequency domain
        full = xp.zeros((n,) + self.full + (k,), dtype=dy.dtype)
        full[:, ::sh, ::sw] = dy
        dyf = fft.rfft2(full, s=(l1, l2), axes=(1, 2))
        del full
        f = dyf.shape[1] * dyf.shape[2]
        dyg = dyf.reshape(n, f, g, k // g)
        dx = dw = None
        if needs[1]:
            # dJ/dw = x * dJ/dv: correlation, F = F{x} conj(F{dJ/dv}), summed over the batch
            xg = self.xf                                            # (N, F, g, C/g)
            prod = xp.matmul(xp.conj(dyg).transpose(1, 2, 3, 0), xg.transpose(1, 2, 0, 3))
            prod = prod.transpose(1, 2, 0, 3).reshape(k, l1, -1, cg)   # (g, K/g, F, C/g) -> (K, ...)
            dw = fft.irfft2(prod, s=(l1, l2), axes=(1, 2))[:, :fh, :fw]
            dw = xp.ascontiguousarray(dw, dtype=dy.dtype)
        if needs[0]:
            # dJ/dx = pad(dJ/dv) * rot180(w): a convolution, F = F{dJ/dv} F{w}
            wg = self.wf                                             # (F, g, C/g, K/g)
            prod = _group_matmul(dyg, wg.transpose(0, 1, 3, 2), g).reshape(n, l1, -1, c)
            dxp = fft.irfft2(prod, s=(l1, l2), axes=(1, 2))
            dx = xp.ascontiguousarray(dxp[:, pt:pt + h, pl:pl + wd], dtype=dy.dtype)
        self.xf = self.wf = None
        return dx, dw, db


# -- the public function ----------------------------------------------------------------------


def _shape_of(a) -> tuple[int, ...]:
    return tuple(a.shape) if hasattr(a, "shape") else tuple(backend.xp.shape(a))


def conv2d(x, w, b=None, stride=1, padding=0, groups: int = 1, algorithm: str = "im2col") -> Tensor:
    """2-D convolution (cross-correlation) of NHWC images: v = x * w + b.

    x: (N, h, w, c_in). w: (K, f_h, f_w, c_in / groups). b: (K,) or None.
    stride: s or (s_h, s_w). padding: ``'valid'`` (none), ``'same'`` (TF/Keras: output
    ceil(h / s); for stride 1 the output keeps the input size, the extra pixel of an even
    kernel going bottom/right), p or (p_h, p_w) (symmetric zeros).
    Output: (N, floor((h + 2p - f_h) / s_h) + 1, floor((w + 2p - f_w) / s_w) + 1, K).
    groups: the channels split into ``groups`` independent convolutions (``groups = c_in``
    is depthwise, with K = c_in times a channel multiplier).
    algorithm: ``'im2col'`` (patch matrix + GEMM) or ``'fft'`` (convolution theorem).

    Gradients: dJ/dw = x * dJ/dv, dJ/dx = pad(dJ/dv) * rot180(w), dJ/db = sum of dJ/dv.
    """
    op = "conv2d"
    xs, ws = _shape_of(x), _shape_of(w)
    if len(xs) != 4:
        raise ShapeError(f"{op}: expected x of shape (N, H, W, C_in) (4-D, NHWC), got shape {xs}")
    if len(ws) != 4:
        raise ShapeError(f"{op}: expected weights of shape (K, f_h, f_w, C_in // groups) (4-D), "
                         f"got shape {ws}")
    if not isinstance(groups, int) or groups < 1:
        raise ValueError(f"{op}: groups must be a positive int, got {groups!r}")
    n, h, wd, c = xs
    k, fh, fw, cg = ws
    if c % groups or k % groups:
        raise ShapeError(f"{op}: groups={groups} must divide both C_in={c} (x of shape {xs}) and "
                         f"K={k} (weights of shape {ws})")
    if cg * groups != c:
        raise ShapeError(f"{op}: x of shape {xs} has C_in={c} channels but weights of shape {ws} with "
                         f"groups={groups} expect C_in = {cg} * {groups} = {cg * groups}")
    if b is not None and _shape_of(b) != (k,):
        raise ShapeError(f"{op}: expected a bias of shape ({k},) for weights of shape {ws}, "
                         f"got shape {_shape_of(b)}")
    stride = pair(stride, "stride", op)
    if min(stride) < 1:
        raise ValueError(f"{op}: stride must be positive, got {stride}")
    pads = conv_pads(padding, (h, wd), (fh, fw), stride, op)
    hp, wp = h + pads[0] + pads[1], wd + pads[2] + pads[3]
    if fh > hp or fw > wp or min(fh, fw) < 1:
        raise ShapeError(f"{op}: kernel {fh}x{fw} (weights of shape {ws}) is larger than the padded "
                         f"input {hp}x{wp} (x of shape {xs}, padding {padding!r})")
    inputs = (x, w) if b is None else (x, w, b)
    if algorithm == "im2col":
        keep = graph.is_grad_enabled() and bool(getattr(w, "requires_grad", False))
        return Conv2d.apply(*inputs, stride=stride, pads=pads, groups=groups, keep=keep)
    if algorithm == "fft":
        return Conv2dFFT.apply(*inputs, stride=stride, pads=pads, groups=groups)
    raise ValueError(f"{op}: algorithm must be 'im2col' or 'fft', got {algorithm!r}")
