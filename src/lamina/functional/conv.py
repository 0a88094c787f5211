"""2-D convolution of NHWC images: im2col + GEMM (default) or the convolution theorem (FFT).

Notation (course notes, convolutional layer): input x of shape (N, h, w, c_in), K filters
w of shape (K, f_h, f_w, c_in / groups), one bias per filter (broadcast), output
v = x * w + b of shape (N, (h + 2p - f_h) / s + 1, (w + 2p - f_w) / s + 1, K), floor. As in
every deep-learning library, ``*`` is cross-correlation:

    v[n, y, x, k] = b[k] + sum_{i, j, c} xpad[n, y s + i, x s + j, c] w[k, i, j, c]

Backward, from the upstream gradient dJ/dv:

    dJ/db = sum over n, y, x of dJ/dv
    dJ/dw = x * dJ/dv               (each weight meets a sliding window of the input)
    dJ/dx = pad(dJ/dv) * rot180(w)  (dJ/dv padded by f - 1 - p; with a stride, dilated first)

Vectorization (course notes, "Vectorized implementation"): the windows are the rows of a
patch matrix (im2col), so v is one matrix product with w reshaped to (K, f_h f_w c_in), and
dJ/dw = patches^T dJ/dv. The batch is processed in chunks of images whose patch matrix
fits in the cache (CHUNK_BYTES). By default backward rebuilds each chunk's patch matrix
from the input instead of keeping it from forward (KEEP_PATCHES), so a convolution holds
nothing but its input and weights between forward and backward.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Function, Tensor, graph
from lamina.errors import ShapeError
from lamina.functional.im2col import clipped, conv_pads, offset_view, out_size, pad_nhwc, pair, patches

CHUNK_BYTES = 4 << 20
"""Target size of the largest per-chunk temporary (a chunk's patch matrix)."""

KEEP_PATCHES = False
"""Keep the patch matrices from forward for dJ/dw (faster); False rebuilds them in backward
(a 3x3 convolution 32->32 on 32x32 images, batch 64: 27 MB less held between forward and
backward, about 8% slower)."""

# -- how the windows become matrix products ---------------------------------------------------
#
# "1x1"    1x1 kernels: the image itself, (N h w, c_in), is the patch matrix: a plain GEMM.
# "rows"   stride 1, c_in >= 16: the f_h f_w-fold patch matrix is never built.
#          R[n, y, x, (j, c)] = xpad[n, y, x + j, c] is an f_w-fold copy over *all* padded rows
#          y; shifted down by i image rows, R holds the windows' i-th kernel rows, so
#          v = sum_i R[+i] @ W_i:
#          one GEMM R @ [W_0 | ... | W_fh-1], then shifted adds of its column blocks. Outputs
#          land on the padded-height grid and the rows past h_out are dropped. dJ/dx is the
#          same computation on pad(dJ/dv) with rot180(w), channels swapped.
# "flat"   stride 1, c_in < 16 (e.g. a first layer): channel-major rows, where kernel offset
#          (i, j) is a flat shift by i w_pad + j, so every column of the patch matrix is one
#          contiguous copy and col2im is f_h f_w contiguous adds; outputs are computed at
#          every padded pixel, so it is used only when that waste is small (or c_in f_w < 16).
# "im2col" the rest (strides, moderate c_in): the (N h_out w_out, f_h f_w c_in) patch matrix,
#          one as_strided view of the padded input and one copy; dJ/dx by col2im, one GEMM
#          per kernel offset into a contiguous buffer and one slice-add.
#
# Measured on 2 cores, forward + backward, against the full patch matrix: "rows" 1.27x faster
# on a 3x3 convolution 32->32 channels (1.12x with 64, 1.23x with 16); "flat" 2.1x faster on
# LeNet's first layer (1 channel, 5x5) and 1.2x on a 3x3 convolution of 8 channels, but 0.93x
# on LeNet's second (6 channels, 5x5 on 14x14, where the padded grid is twice the output).


def _plan(kernel: tuple[int, int], stride: tuple[int, int], c_in: int, waste: float) -> str:
    """The path for a dense convolution; ``waste`` is (padded input area) / (output area),
    the extra work of "flat", which computes an output at every padded pixel."""
    if kernel == (1, 1):
        return "1x1"
    if stride != (1, 1):
        return "im2col"
    if c_in >= 16:
        return "rows"
    return "flat" if kernel[1] * c_in < 16 or waste <= 1.5 else "im2col"


def _plan_for(x_shape, w_shape, pads, stride) -> str:
    _, h, wd, c = x_shape
    _, fh, fw, _ = w_shape
    hp, wp = h + pads[0] + pads[1], wd + pads[2] + pads[3]
    return _plan((fh, fw), stride, c, hp * wp / ((hp - fh + 1) * (wp - fw + 1)))


def _chunks(n: int, bytes_per_image: int) -> list[tuple[int, int]]:
    size = max(1, min(n, CHUNK_BYTES // max(bytes_per_image, 1)))
    return [(lo, min(n, lo + size)) for lo in range(0, n, size)]


# "1x1" --------------------------------------------------------------------------------------


def _pixels(xpad, stride, out_hw):
    """The pixels a 1x1 kernel reads, as an (N h_out w_out, c) matrix."""
    (sh, sw), (ho, wo) = stride, out_hw
    sub = xpad if stride == (1, 1) else xpad[:, :sh * (ho - 1) + 1:sh, :sw * (wo - 1) + 1:sw]
    return backend.xp.ascontiguousarray(sub).reshape(-1, xpad.shape[3])


def _forward_1x1(x, w, pads, stride, out, bias, keep):
    xp = backend.xp
    k = w.shape[0]
    xp.matmul(_pixels(pad_nhwc(x, pads), stride, out.shape[1:3]), w.reshape(k, -1).T, out=out.reshape(-1, k))
    if bias is not None:
        out += bias
    return None                              # the pixels are x itself: nothing to keep


def _backward_1x1(x, w, dy, pads, stride, dx, need_w, box):
    xp = backend.xp
    n, h, wd, c = x.shape
    _, ho, wo, k = dy.shape
    dy2 = dy.reshape(-1, k)
    dw = None
    if need_w:
        dw = xp.matmul(_pixels(pad_nhwc(x, pads), stride, (ho, wo)).T, dy2).T.reshape(w.shape)
    if dx is not None:
        if stride == (1, 1) and (ho, wo) == (h, wd):
            xp.matmul(dy2, w.reshape(k, c), out=dx.reshape(-1, c))
        else:
            lo_h, hi_h, rows = clipped(ho, -pads[0], stride[0], h)
            lo_w, hi_w, cols = clipped(wo, -pads[2], stride[1], wd)
            dx[...] = 0
            dx[:, rows, cols] = xp.matmul(dy2, w.reshape(k, c)).reshape(n, ho, wo, c)[:, lo_h:hi_h, lo_w:hi_w]
    return dw


# "rows" -------------------------------------------------------------------------------------


def _row_matrix(xpad, fw: int, wo: int):
    """R = xpad expanded along W, (N hp wo, f_w c); xpad itself, reshaped, when f_w == 1."""
    n, hp, wp, c = xpad.shape
    if fw == 1 and wo == wp and xpad.flags.c_contiguous:
        return xpad.reshape(n * hp * wo, c)
    sn, s_h, s_w, s_c = xpad.strides
    view = backend.xp.lib.stride_tricks.as_strided(
        xpad, (n, hp, wo, fw, c), (sn, s_h, s_w, s_w, s_c), writeable=False)
    return backend.xp.ascontiguousarray(view).reshape(n * hp * wo, fw * c)


def _rows_correlate(xpad, w, out, bias=None):
    """Valid stride-1 correlation of xpad with w into ``out``; returns R.

    v[y] = sum_i R[y + i] @ W_i, computed as one GEMM Z = R @ [W_0 | W_1 | ...] (wider, so
    faster than f_h narrow ones) whose column blocks are then added, shifted by i rows.
    """
    xp = backend.xp
    n, hp, wp, _ = xpad.shape
    k, fh, fw, c = w.shape
    ho, wo = hp - fh + 1, wp - fw + 1
    r2 = _row_matrix(xpad, fw, wo)
    z = xp.matmul(r2, w.transpose(2, 3, 1, 0).reshape(fw * c, fh * k)).reshape(n, hp, wo, fh, k)
    if fh == 1:
        out[...] = z[:, :, :, 0]
    else:
        xp.add(z[:, 0:ho, :, 0], z[:, 1:1 + ho, :, 1], out=out)
        for i in range(2, fh):
            out += z[:, i:i + ho, :, i]
    if bias is not None:
        out += bias
    return r2


def _forward_rows(x, w, pads, stride, out, bias, keep):
    r2 = _rows_correlate(pad_nhwc(x, pads), w, out, bias)
    return r2 if keep else None


def _backward_rows(x, w, dy, pads, stride, dx, need_w, box):
    xp = backend.xp
    n, h, wd, c = x.shape
    _, ho, wo, k = dy.shape
    _, fh, fw, _ = w.shape
    pt, pb, pl, pr = pads
    dw = None
    if need_w:
        # dJ/dw = x * dJ/dv: dJ/dv on the padded-height grid (zero rows past h_out), then
        # dJ/dW_i = R[+i]^T @ dJ/dv, one GEMM per kernel row (R^T @ g: OpenBLAS's faster side)
        hp = h + pt + pb
        r2 = box.pop()
        if r2 is None:
            r2 = _row_matrix(pad_nhwc(x, pads), fw, wo)
        rows = (n * hp - fh + 1) * wo
        grid = xp.empty((n, hp, wo, k), dtype=dy.dtype)
        grid[:, :ho] = dy
        grid[:, ho:] = 0
        g2 = grid.reshape(-1, k)[:rows]
        dw_t = xp.empty((fh, fw * c, k), dtype=dy.dtype)
        for i in range(fh):
            xp.matmul(r2[i * wo:i * wo + rows].T, g2, out=dw_t[i])
        dw = dw_t.transpose(2, 0, 1).reshape(w.shape)
        del r2, grid, g2
    if dx is not None:
        # dJ/dx = pad(dJ/dv) * rot180(w): dJ/dv padded by f - 1 - p (a negative pad crops the
        # outputs that only saw padding) and correlated with w'[c, i, j, k] = w[k, -i, -j, c]
        top, left = fh - 1 - pt, fw - 1 - pl
        dyq = pad_nhwc(dy, (top, h + fh - 1 - ho - top, left, wd + fw - 1 - wo - left))
        flipped = xp.ascontiguousarray(w[:, ::-1, ::-1, :].transpose(3, 1, 2, 0))
        _rows_correlate(dyq, flipped, dx)
    return dw


# "flat" -------------------------------------------------------------------------------------


def _flat_columns(x, fh: int, fw: int, pads):
    """Transposed patch matrix (f_h f_w c, N hp wp) over the whole padded grid: column
    (i, j, c) is channel c of the channel-major padded image shifted by i wp + j."""
    xp = backend.xp
    n, h, wd, c = x.shape
    pt, pb, pl, pr = pads
    hp, wp = h + pt + pb, wd + pl + pr
    size = n * hp * wp
    flat = xp.zeros((c, size + (fh - 1) * wp + fw - 1), dtype=x.dtype)
    flat[:, :size].reshape(c, n, hp, wp)[:, :, pt:pt + h, pl:pl + wd] = x.transpose(3, 0, 1, 2)
    step = flat.strides[1]
    view = xp.lib.stride_tricks.as_strided(
        flat, (fh, fw, c, size), (wp * step, step, flat.strides[0], step), writeable=False)
    return xp.ascontiguousarray(view).reshape(fh * fw * c, size)


def _forward_flat(x, w, pads, stride, out, bias, keep):
    xp = backend.xp
    n, h, wd, _ = x.shape
    k, fh, fw, _ = w.shape
    hp, wp = h + pads[0] + pads[1], wd + pads[2] + pads[3]
    cols_t = _flat_columns(x, fh, fw, pads)
    grid = xp.matmul(cols_t.T, w.reshape(k, -1).T).reshape(n, hp, wp, k)
    valid = grid[:, :hp - fh + 1, :wp - fw + 1]
    if bias is None:
        out[...] = valid
    else:
        xp.add(valid, bias, out=out)
    return cols_t if keep else None


def _backward_flat(x, w, dy, pads, stride, dx, need_w, box):
    xp = backend.xp
    n, h, wd, c = x.shape
    k, fh, fw, _ = w.shape
    pt, pb, pl, pr = pads
    hp, wp = h + pt + pb, wd + pl + pr
    size = n * hp * wp
    _, ho, wo, _ = dy.shape
    grid = xp.zeros((n, hp, wp, k), dtype=dy.dtype)
    grid[:, :ho, :wo] = dy
    g2 = grid.reshape(size, k)
    dw = None
    if need_w:                               # dJ/dw = x * dJ/dv = patches^T dJ/dv
        cols_t = box.pop()
        if cols_t is None:
            cols_t = _flat_columns(x, fh, fw, pads)
        dw = xp.matmul(cols_t, g2).T.reshape(w.shape)
        del cols_t
    if dx is not None:                       # col2im: each column shifted back and added
        dcols = xp.matmul(w.reshape(k, -1).T, g2.T).reshape(fh, fw, c, size)
        flat = xp.zeros((c, size + (fh - 1) * wp + fw - 1), dtype=dy.dtype)
        for i in range(fh):
            for j in range(fw):
                flat[:, i * wp + j:i * wp + j + size] += dcols[i, j]
        del dcols
        dx[...] = flat[:, :size].reshape(c, n, hp, wp)[:, :, pt:pt + h, pl:pl + wd].transpose(1, 2, 3, 0)
    return dw


# "im2col" -----------------------------------------------------------------------------------


def _patch_matrix(x, w_shape, pads, stride, out_hw):
    """(N h_out w_out, f_h f_w c) windows: one as_strided view of the padded input, one copy."""
    xpad = pad_nhwc(x, pads)
    view = patches(xpad, w_shape[1:3], out_hw, stride)
    return backend.xp.ascontiguousarray(view).reshape(-1, w_shape[1] * w_shape[2] * w_shape[3])


def _forward_im2col(x, w, pads, stride, out, bias, keep):
    k = w.shape[0]
    cols = _patch_matrix(x, w.shape, pads, stride, out.shape[1:3])
    backend.xp.matmul(cols, w.reshape(k, -1).T, out=out.reshape(-1, k))
    if bias is not None:
        out += bias
    return cols if keep else None


def _backward_im2col(x, w, dy, pads, stride, dx, need_w, box):
    xp = backend.xp
    n, h, wd, c = x.shape
    _, ho, wo, k = dy.shape
    _, fh, fw, _ = w.shape
    dy2 = dy.reshape(-1, k)
    dw = None
    if need_w:                               # dJ/dw = patches^T dJ/dv
        cols = box.pop()
        if cols is None:
            cols = _patch_matrix(x, w.shape, pads, stride, (ho, wo))
        dw = xp.matmul(cols.T, dy2).T.reshape(w.shape)
        del cols
    if dx is not None:                       # col2im
        dx[...] = 0
        buf = xp.empty((n * ho * wo, c), dtype=dy.dtype)
        buf4 = buf.reshape(n, ho, wo, c)
        for i in range(fh):
            lo_h, hi_h, rows = clipped(ho, i - pads[0], stride[0], h)
            for j in range(fw):
                lo_w, hi_w, cols = clipped(wo, j - pads[2], stride[1], wd)
                if hi_h > lo_h and hi_w > lo_w:
                    xp.matmul(dy2, w[:, i, j, :], out=buf)
                    dx[:, rows, cols] += buf4[:, lo_h:hi_h, lo_w:hi_w]
    return dw


_KERNELS = {
    "1x1": (_forward_1x1, _backward_1x1),
    "rows": (_forward_rows, _backward_rows),
    "flat": (_forward_flat, _backward_flat),
    "im2col": (_forward_im2col, _backward_im2col),
}


def _chunk_bytes(plan, x_shape, w_shape, pads, out_hw, itemsize) -> int:
    """Bytes per image of the plan's largest temporary (its patch matrix)."""
    _, h, wd, c = x_shape
    _, fh, fw, _ = w_shape
    hp, wp = h + pads[0] + pads[1], wd + pads[2] + pads[3]
    if plan == "1x1":
        return 0
    if plan == "rows":
        return hp * out_hw[1] * fw * c * itemsize
    if plan == "flat":
        return fh * fw * c * hp * wp * itemsize
    return out_hw[0] * out_hw[1] * fh * fw * c * itemsize


def _dense_forward(x, w, bias, pads, stride, out, keep: bool) -> list:
    """v into ``out``, chunk by chunk of images; returns [(lo, hi, [patch matrix or None])]."""
    plan = _plan_for(x.shape, w.shape, pads, stride)
    forward = _KERNELS[plan][0]
    per_image = _chunk_bytes(plan, x.shape, w.shape, pads, out.shape[1:3], x.itemsize)
    return [(lo, hi, [forward(x[lo:hi], w, pads, stride, out[lo:hi], bias, keep)])
            for lo, hi in _chunks(x.shape[0], per_image)]


def _dense_backward(x, w, dy, pads, stride, dx, need_w: bool, chunks: list):
    """dJ/dw (returned, or None) and dJ/dx (written into ``dx`` unless it is None), over the
    forward's chunks; each saved patch matrix is dropped as soon as it has been used."""
    backward = _KERNELS[_plan_for(x.shape, w.shape, pads, stride)][1]
    dw = backend.xp.zeros(w.shape, dtype=dy.dtype) if need_w else None
    for lo, hi, box in chunks:
        # the kernel takes the patch matrix out of its one-item list, so that nothing else
        # holds it and it is freed as soon as dJ/dw has used it
        part = backward(x[lo:hi], w, dy[lo:hi], pads, stride, None if dx is None else dx[lo:hi], need_w, box)
        box.clear()
        if part is not None:
            dw += part
    return dw


# -- depthwise (groups == c_in): one multiply-add per kernel offset ---------------------------


def _depthwise_forward(x, w, bias, pads, stride, out):
    xp = backend.xp
    n, _, _, c = x.shape
    k, fh, fw, _ = w.shape
    xpad = pad_nhwc(x, pads)
    out5 = out.reshape(n, out.shape[1], out.shape[2], c, k // c)
    tmp = xp.empty_like(out5)
    out5[...] = 0
    for i in range(fh):
        for j in range(fw):
            view = offset_view(xpad, i, j, out.shape[1:3], stride)
            xp.multiply(view[..., None], w[:, i, j, 0].reshape(c, -1), out=tmp)
            out5 += tmp
    if bias is not None:
        out += bias


def _depthwise_backward(x, w, dy, pads, stride, dx, need_w: bool):
    xp = backend.xp
    n, h, wd, c = x.shape
    _, ho, wo, k = dy.shape
    _, fh, fw, _ = w.shape
    dy5 = dy.reshape(n, ho, wo, c, k // c)
    dw = None
    if need_w:                               # dJ/dw[k, i, j] = sum of window (i, j) times dJ/dv
        xpad = pad_nhwc(x, pads)
        dw = xp.empty(w.shape, dtype=dy.dtype)
        for i in range(fh):
            for j in range(fw):
                view = offset_view(xpad, i, j, (ho, wo), stride)
                dw[:, i, j, 0] = xp.einsum("nhwc,nhwcm->cm", view, dy5).reshape(k)
    if dx is not None:                       # each window offset hands dJ/dv w back to its pixels
        dx[...] = 0
        for i in range(fh):
            lo_h, hi_h, rows = clipped(ho, i - pads[0], stride[0], h)
            for j in range(fw):
                lo_w, hi_w, cols = clipped(wo, j - pads[2], stride[1], wd)
                if hi_h > lo_h and hi_w > lo_w:
                    part = dy5[:, lo_h:hi_h, lo_w:hi_w]
                    dx[:, rows, cols] += xp.einsum("nhwcm,cm->nhwc", part, w[:, i, j, 0].reshape(c, -1))
    return dw


def _sum_rows(dy):
    """dJ/db = sum over n, y, x of dJ/dv, as one GEMV (faster than a strided reduction)."""
    xp = backend.xp
    dy2 = dy.reshape(-1, dy.shape[-1])
    return xp.matmul(xp.ones(dy2.shape[0], dtype=dy2.dtype), dy2)


class Conv2d(Function):
    """v = x * w + b by im2col + GEMM; hyperparameters ``stride`` (s_h, s_w), ``pads``
    (top, bottom, left, right), ``groups`` and ``keep`` (whether dJ/dw will be needed, so
    that the patch matrices are kept for it; they are rebuilt when missing)."""

    def forward(self, x, w, b=None):
        xp = backend.xp
        n, h, wd, c = x.shape
        k, fh, fw, cg = w.shape
        (sh, sw), (pt, pb, pl, pr), g = self.stride, self.pads, self.groups
        out = xp.empty((n, out_size(h, fh, sh, pt, pb), out_size(wd, fw, sw, pl, pr), k),
                       dtype=xp.result_type(x, w))
        keep = getattr(self, "keep", True)
        self.x, self.w, self.chunks = x, w, []
        if g == 1:
            self.chunks = _dense_forward(x, w, b, self.pads, self.stride, out, keep)
        elif cg == 1:
            _depthwise_forward(x, w, b, self.pads, self.stride, out)
        else:
            kg = k // g
            for gi in range(g):
                bias = None if b is None else b[gi * kg:(gi + 1) * kg]
                part = xp.empty(out.shape[:3] + (kg,), dtype=out.dtype)
                self.chunks.append(_dense_forward(x[..., gi * cg:(gi + 1) * cg], w[gi * kg:(gi + 1) * kg],
                                                  bias, self.pads, self.stride, part, keep))
                out[..., gi * kg:(gi + 1) * kg] = part
        return out

    def backward(self, dy):
        xp = backend.xp
        x, w, g, needs = self.x, self.w, self.groups, self.needs_grad
        k, _, _, cg = w.shape
        dy = xp.ascontiguousarray(dy)
        db = _sum_rows(dy) if len(needs) > 2 and needs[2] else None
        dx = xp.empty(x.shape, dtype=dy.dtype) if needs[0] else None
        dw = None
        if g == 1:
            dw = _dense_backward(x, w, dy, self.pads, self.stride, dx, needs[1], self.chunks)
        elif cg == 1:
            dw = _depthwise_backward(x, w, dy, self.pads, self.stride, dx, needs[1])
        else:
            kg = k // g
            dw = xp.empty(w.shape, dtype=dy.dtype) if needs[1] else None
            for gi in range(g):
                dx_g = None if dx is None else xp.empty(x.shape[:3] + (cg,), dtype=dy.dtype)
                dw_g = _dense_backward(x[..., gi * cg:(gi + 1) * cg], w[gi * kg:(gi + 1) * kg],
                                       xp.ascontiguousarray(dy[..., gi * kg:(gi + 1) * kg]),
                                       self.pads, self.stride, dx_g, needs[1], self.chunks[gi])
                if dx is not None:
                    dx[..., gi * cg:(gi + 1) * cg] = dx_g
                if dw is not None:
                    dw[gi * kg:(gi + 1) * kg] = dw_g
        self.x = self.w = self.chunks = None
        return dx, dw, db


# -- FFT: the convolution theorem, F{x * w} = F{x} conj(F{w}) for a correlation --------------


def _fft():
    import scipy.fft

    return scipy.fft


def _spectral_matmul(a, b):
    """Per frequency and group: a (N, F, g, p) @ b (F, g, p, q) -> (N, F, g, q)."""
    return backend.xp.matmul(a.transpose(1, 2, 0, 3), b).transpose(2, 0, 1, 3)


class Conv2dFFT(Function):
    """v = x * w + b through the convolution theorem: V = F{xpad} conj(F{w}), summed over
    the input channels, v = F^-1{V} (course notes: V_in * w = F^-1{F{V_in} . F{w}}).

    The spectra have size L >= the padded input over (H, W), so the circular correlation
    equals the linear one on every valid output; a stride keeps every s-th output.
    Backward: dJ/dw = x * dJ/dv is F{xpad} conj(F{dJ/dv}) summed over the batch, and
    dJ/dx = pad(dJ/dv) * rot180(w) is the convolution F{dJ/dv} F{w}, dJ/dv dilated by the
    stride first.
    """

    def forward(self, x, w, b=None):
        fft, xp = _fft(), backend.xp
        n = x.shape[0]
        k, fh, fw, cg = w.shape
        g, (sh, sw) = self.groups, self.stride
        xpad = pad_nhwc(x, self.pads)
        hp, wp = xpad.shape[1:3]
        l1, l2 = fft.next_fast_len(hp, real=True), fft.next_fast_len(wp, real=True)
        self.full = (hp - fh + 1, wp - fw + 1)           # stride-1 output size
        self.sizes, self.x_shape, self.w_shape = (l1, l2), x.shape, w.shape
        xf = fft.rfft2(xpad, s=(l1, l2), axes=(1, 2))      # (N, l1, l2 // 2 + 1, C)
        del xpad
        wf = fft.rfft2(w, s=(l1, l2), axes=(1, 2))         # (K, l1, l2 // 2 + 1, C / g)
        bins = xf.shape[1] * xf.shape[2]
        self.xf = xf.reshape(n, bins, g, cg)
        self.wf = wf.reshape(g, k // g, bins, cg).transpose(2, 0, 3, 1)   # (F, g, C/g, K/g)
        vf = _spectral_matmul(self.xf, xp.conj(self.wf)).reshape(n, l1, l2 // 2 + 1, k)
        v = fft.irfft2(vf, s=(l1, l2), axes=(1, 2))
        del vf
        out = xp.ascontiguousarray(v[:, :self.full[0]:sh, :self.full[1]:sw], dtype=xp.result_type(x, w))
        if b is not None:
            out += b
        return out

    def backward(self, dy):
        fft, xp = _fft(), backend.xp
        needs = self.needs_grad
        n, h, wd, c = self.x_shape
        k, fh, fw, cg = self.w_shape
        g, (sh, sw), (pt, _, pl, _) = self.groups, self.stride, self.pads
        l1, l2 = self.sizes
        dy = xp.ascontiguousarray(dy)
        db = _sum_rows(dy) if len(needs) > 2 and needs[2] else None
        full = xp.zeros((n,) + self.full + (k,), dtype=dy.dtype)    # dJ/dv on the stride-1 grid
        full[:, ::sh, ::sw] = dy
        dyf = fft.rfft2(full, s=(l1, l2), axes=(1, 2))
        del full
        dyg = dyf.reshape(n, l1 * (l2 // 2 + 1), g, k // g)
        dx = dw = None
        if needs[1]:
            prod = xp.matmul(xp.conj(dyg).transpose(1, 2, 3, 0), self.xf.transpose(1, 2, 0, 3))
            prod = prod.transpose(1, 2, 0, 3).reshape(k, l1, l2 // 2 + 1, cg)   # (g, K/g, F, C/g)
            dw = xp.ascontiguousarray(fft.irfft2(prod, s=(l1, l2), axes=(1, 2))[:, :fh, :fw], dtype=dy.dtype)
        if needs[0]:
            prod = _spectral_matmul(dyg, self.wf.transpose(0, 1, 3, 2)).reshape(n, l1, l2 // 2 + 1, c)
            dxp = fft.irfft2(prod, s=(l1, l2), axes=(1, 2))
            dx = xp.ascontiguousarray(dxp[:, pt:pt + h, pl:pl + wd], dtype=dy.dtype)
        self.xf = self.wf = None
        return dx, dw, db


# -- the public function ----------------------------------------------------------------------


def _shape_of(a) -> tuple[int, ...]:
    return tuple(a.shape) if hasattr(a, "shape") else tuple(backend.xp.shape(a))


def conv2d(x: Tensor, w: Tensor, b: Tensor | None = None, stride: int | tuple[int, int] = 1,
           padding: str | int | tuple[int, int] = 0, groups: int = 1, algorithm: str = "im2col") -> Tensor:
    """2-D convolution (cross-correlation) of NHWC images: v = x * w + b.

    x: (N, h, w, c_in). w: (K, f_h, f_w, c_in / groups). b: (K,) or None. (Arrays are
    accepted too, as constants.)
    stride: s or (s_h, s_w). padding: ``'valid'`` (none); ``'same'`` (TF/Keras: output
    ceil(h / s), so for stride 1 the input size, the extra pixel of an even kernel's padding
    going bottom/right); p or (p_h, p_w) (symmetric zeros).
    Output: (N, floor((h + 2p - f_h) / s_h) + 1, floor((w + 2p - f_w) / s_w) + 1, K).
    groups: channels split into ``groups`` independent convolutions; ``groups = c_in`` is
    depthwise (K = c_in times a channel multiplier).
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
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1:
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
        keep = KEEP_PATCHES and graph.is_grad_enabled() and bool(getattr(w, "requires_grad", False))
        return Conv2d.apply(*inputs, stride=stride, pads=pads, groups=groups, keep=keep)
    if algorithm == "fft":
        return Conv2dFFT.apply(*inputs, stride=stride, pads=pads, groups=groups)
    raise ValueError(f"{op}: algorithm must be 'im2col' or 'fft', got {algorithm!r}")
