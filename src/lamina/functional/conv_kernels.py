"""The five ways of forming a convolution's matrix products, one forward and one backward
kernel each, on one chunk of images (:mod:`lamina.functional.conv_gemm` chooses the way by
shape and runs the chunks).

Every forward kernel writes v into ``out`` and returns the patch matrix it built when
``keep`` (else None); every backward kernel returns dJ/dw transposed, (f_h f_w c, K), and
writes dJ/dx into ``dx`` unless it is None.
"""

from __future__ import annotations

from lamina import backend, parallel
from lamina.functional import conv_toeplitz
from lamina.functional._util import per_channel
from lamina.functional.im2col import clipped, gradient_pads, pad_nhwc, patches, strided_view, strides_of

PATCH_RUN_BYTES = 1 << 20
"""The "im2col" kernels build their patch matrices for runs of images of at most this size."""


# -- how the windows become matrix products ---------------------------------------------------
#
# "1x1"    1x1 kernels: the image itself, (N h w, c_in), is the patch matrix: a plain GEMM.
# "rows"   stride 1, 16 <= c_in < 128, h_p / h_out small (conv_gemm.ROWS_CHANNELS and
#          ROWS_WASTE_MAX): the f_h f_w-fold patch matrix is never built.
#          R[n, y, x, (j, c)] = xpad[n, y, x + j, c] is an f_w-fold copy over *all* padded rows
#          y; shifted down by i image rows, R holds the windows' i-th kernel rows, so
#          v = sum_i R[+i] @ W_i:
#          one GEMM R @ [W_0 | ... | W_fh-1], then shifted adds of its column blocks. Outputs
#          land on the padded-height grid and the rows past h_out are dropped. dJ/dx is the
#          same computation on pad(dJ/dv) with rot180(w), channels swapped.
# "toeplitz" stride 1, c_in < 16 (first layers, LeNet's both): each output row is cut into
#          blocks of b pixels (toeplitz_block); the input under a block, f_h rows side by side,
#          X[(n, y, blk), (i, x', c)] = xpad[n, y + i, blk b + x', c] (a copy about f_h times
#          the size of x, no f_h f_w-fold patch matrix), times one band matrix M of w
#          (toeplitz_weights): v = X @ M^T comes out already NHWC; dJ/dw is the band of
#          X^T @ dJ/dv. The GEMM does (b + f_w - 1) / f_w times the useful work, in one
#          well-shaped product instead of a narrow one. dJ/dx: by whole rows (below) on
#          narrow images, else flat's col2im or im2col's.
# "flat"   stride 1, c_in < 16 where "toeplitz" is ruled out: channel-major rows, where kernel
#          offset (i, j) is a flat shift by i w_pad + j, so every column of the patch matrix is
#          one contiguous copy and col2im is f_h f_w contiguous adds; outputs are computed at
#          every padded pixel, so it is used only when that waste is small (or c_in f_w < 16).
# "im2col" the rest (strides; short images or c_in >= 128 at stride 1): the (N h_out w_out,
#          f_h f_w c_in) patch matrix, one strided view of the padded input and one copy;
#          dJ/dx by col2im, one GEMM per kernel offset into a contiguous buffer and one
#          slice-add. With stride 1 on narrow images, dJ/dx instead comes a whole row at a
#          time: dJ/dv rows times a banded (Toeplitz) row matrix of w, then f_h shifted row
#          adds (toeplitz_weights).
#
# Measured on 2 cores, forward + backward, against the full patch matrix: "rows" 1.27x faster
# on a 3x3 convolution 32->32 channels (1.12x with 64, 1.23x with 16); "flat" 2.1x faster on
# LeNet's first layer (1 channel, 5x5) and 1.2x on a 3x3 convolution of 8 channels, but 0.93x
# on LeNet's second (6 channels, 5x5 on 14x14, where the padded grid is twice the output).
# Forward + dJ/dw of "toeplitz" against the better of "flat" and "im2col": 2.2x on LeNet's
# first layer, 1.03x on its second, 1.4x on a 3x3 one-channel layer on 28x28 and 1.06x on a
# 3x3 three-channel one on 32x32; no case measured was slower.


# "1x1" --------------------------------------------------------------------------------------


def _pixels(xpad, stride, out_hw):
    """The pixels a 1x1 kernel reads, as an (N h_out w_out, c) matrix."""
    (sh, sw), (ho, wo) = stride, out_hw
    sub = xpad if stride == (1, 1) else xpad[:, :sh * (ho - 1) + 1:sh, :sw * (wo - 1) + 1:sw]
    return backend.xp.ascontiguousarray(sub).reshape(-1, xpad.shape[3])


def forward_1x1(x, w, pads, stride, out, bias, keep):
    xp = backend.xp
    k = w.shape[0]
    xp.matmul(_pixels(pad_nhwc(x, pads), stride, out.shape[1:3]), w.reshape(k, -1).T, out=out.reshape(-1, k))
    if bias is not None:
        per_channel(xp.add, out, bias, out)
    return None                              # the pixels are x itself: nothing to keep


def backward_1x1(x, w, dy, pads, stride, dx, need_w, box):
    xp = backend.xp
    n, h, wd, c = x.shape
    _, ho, wo, k = dy.shape
    dy2 = dy.reshape(-1, k)
    dw = None
    if need_w:
        dw = xp.matmul(_pixels(pad_nhwc(x, pads), stride, (ho, wo)).T, dy2)
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
    sn, s_h, s_w, s_c = strides_of(xpad)
    view = strided_view(xpad, (n, hp, wo, fw, c), (sn, s_h, s_w, s_w, s_c))
    return backend.xp.ascontiguousarray(view).reshape(n * hp * wo, fw * c)


WIDE_WEIGHTS_MAX = 1 << 18
"""The "rows" path multiplies by [W_0 | W_1 | ...] in one GEMM when the weights have at most
this many values; larger ones (where building that matrix, a strided gather, costs more
than the narrower GEMMs save) are used in place, one GEMM per kernel row."""


def rows_weights(w):
    """[W_0 | W_1 | ...], the (f_w c, f_h K) matrix of the "rows" GEMM (a copy: build it once
    per convolution, not once per chunk); None for weights above WIDE_WEIGHTS_MAX."""
    k, fh, fw, c = w.shape
    if w.size > WIDE_WEIGHTS_MAX:
        return None
    return w.transpose(2, 3, 1, 0).reshape(fw * c, fh * k)


def flipped_weights(w):
    """w'[c, i, j, k] = w[k, -i, -j, c]: the kernel of dJ/dx = pad(dJ/dv) * rot180(w)."""
    return backend.xp.ascontiguousarray(w[:, ::-1, ::-1, :].transpose(3, 1, 2, 0))


def _rows_correlate(xpad, w, out, bias=None, wm=None):
    """Valid stride-1 correlation of xpad with w into ``out``; returns R.

    v[y] = sum_i R[y + i] @ W_i, computed as one GEMM Z = R @ [W_0 | W_1 | ...] (wider, so
    faster than f_h narrow ones) whose column blocks are then added, shifted by i rows.
    ``wm``: :func:`rows_weights` of w, if already built.
    """
    xp = backend.xp
    n, hp, wp, _ = xpad.shape
    k, fh, fw, c = w.shape
    ho, wo = hp - fh + 1, wp - fw + 1
    r2 = _row_matrix(xpad, fw, wo)
    if wm is None:
        wm = rows_weights(w)
    if wm is None:                           # W_i = w[:, i] as a strided (K, f_w c) view
        for i in range(fh):
            z = xp.matmul(r2, w[:, i].reshape(k, fw * c).T).reshape(n, hp, wo, k)
            if i == 0:
                out[...] = z[:, 0:ho]
            else:
                out += z[:, i:i + ho]
    else:
        z = xp.matmul(r2, wm).reshape(n, hp, wo, fh, k)
        if fh == 1:
            out[...] = z[:, :, :, 0]
        else:
            xp.add(z[:, 0:ho, :, 0], z[:, 1:1 + ho, :, 1], out=out)
            for i in range(2, fh):
                out += z[:, i:i + ho, :, i]
    if bias is not None:
        per_channel(xp.add, out, bias, out)
    return r2


def forward_rows(x, w, pads, stride, out, bias, keep, wm=None):
    r2 = _rows_correlate(pad_nhwc(x, pads), w, out, bias, wm)
    return r2 if keep else None


def backward_rows(x, w, dy, pads, stride, dx, need_w, box, flipped=None, wm=None):
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
        if w.size <= WIDE_WEIGHTS_MAX:
            # one wider GEMM: R^T @ G with G[n, s, x, i] = dJ/dv[n, s - i, x] (zero outside),
            # whose column block i is dJ/dW_i
            g3 = xp.zeros((n, hp, wo, fh, k), dtype=dy.dtype)
            for i in range(fh):
                g3[:, i:i + ho, :, i] = dy
            full = xp.matmul(r2.T, g3.reshape(-1, fh * k))
            dw = full.reshape(fw * c, fh, k).transpose(1, 0, 2).reshape(fh * fw * c, k)
            del g3
        else:
            rows = (n * hp - fh + 1) * wo
            grid = xp.empty((n, hp, wo, k), dtype=dy.dtype)
            grid[:, :ho] = dy
            grid[:, ho:] = 0
            g2 = grid.reshape(-1, k)[:rows]
            dw_t = xp.empty((fh, fw * c, k), dtype=dy.dtype)
            for i in range(fh):
                xp.matmul(r2[i * wo:i * wo + rows].T, g2, out=dw_t[i])
            dw = dw_t.reshape(fh * fw * c, k)
            del grid, g2
        del r2
    if dx is not None:
        # dJ/dx = pad(dJ/dv) * rot180(w), correlated with w'[c, i, j, k] = w[k, -i, -j, c]
        dyq = pad_nhwc(dy, gradient_pads((h, wd), (fh, fw), (ho, wo), pads))
        if flipped is None:
            flipped = flipped_weights(w)
        _rows_correlate(dyq, flipped, dx, wm=wm)
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
    strides = strides_of(flat)
    step = strides[1]
    view = strided_view(flat, (fh, fw, c, size), (wp * step, step, strides[0], step))
    return xp.ascontiguousarray(view).reshape(fh * fw * c, size)


def forward_flat(x, w, pads, stride, out, bias, keep):
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
        per_channel(xp.add, valid, bias, out)
    return cols_t if keep else None


def backward_flat(x, w, dy, pads, stride, dx, need_w, box):
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
        dw = xp.matmul(cols_t, g2)
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
    """(N h_out w_out, f_h f_w c) windows: one strided view of the padded input, one copy."""
    xpad = pad_nhwc(x, pads)
    view = patches(xpad, w_shape[1:3], out_hw, stride)
    return backend.xp.ascontiguousarray(view).reshape(-1, w_shape[1] * w_shape[2] * w_shape[3])


def _blocks(n: int, per_image: int) -> list[tuple[int, int]]:
    """``range(n)`` in consecutive runs of images whose patch matrices take at most
    PATCH_RUN_BYTES (one image at least): the "im2col" kernels build their patch matrices
    one run at a time, so that their larger chunks cost no more memory."""
    limit = PATCH_RUN_BYTES if backend.xp.__name__ == "numpy" else parallel.GPU_CHUNK_BYTES
    step = max(1, limit // max(per_image, 1))
    return [(lo, min(n, lo + step)) for lo in range(0, n, step)]


def forward_im2col(x, w, pads, stride, out, bias, keep):
    xp = backend.xp
    k = w.shape[0]
    weights = w.reshape(k, -1).T
    per_image = out.shape[1] * out.shape[2] * weights.shape[0] * x.itemsize
    cols = None
    for lo, hi in [(0, x.shape[0])] if keep else _blocks(x.shape[0], per_image):
        cols = _patch_matrix(x[lo:hi], w.shape, pads, stride, out.shape[1:3])
        xp.matmul(cols, weights, out=out[lo:hi].reshape(-1, k))
    if bias is not None:
        per_channel(xp.add, out, bias, out)
    return cols if keep else None


def backward_im2col(x, w, dy, pads, stride, dx, need_w, box, toeplitz=None):
    """``toeplitz``: the row matrix of w (conv_toeplitz.toeplitz_weights), given when dJ/dx
    is to come from whole rows instead of one small GEMM and one add per kernel offset."""
    xp = backend.xp
    n, h, wd, c = x.shape
    _, ho, wo, k = dy.shape
    _, fh, fw, _ = w.shape
    dy2 = dy.reshape(-1, k)
    dw = None
    if need_w:                               # dJ/dw = patches^T dJ/dv
        cols = box.pop()
        if cols is not None:
            dw = xp.matmul(cols.T, dy2)
        else:                                # rebuilt one run of images at a time
            dw = xp.zeros((fh * fw * c, k), dtype=dy.dtype)
            for lo, hi in _blocks(n, ho * wo * fh * fw * c * x.itemsize):
                cols = _patch_matrix(x[lo:hi], w.shape, pads, stride, (ho, wo))
                dw += xp.matmul(cols.T, dy[lo:hi].reshape(-1, k))
        del cols
    if dx is not None and toeplitz is not None:
        conv_toeplitz.dx_by_rows(dy, toeplitz, pads, dx)
    elif dx is not None:
        col2im(dy, w, pads, stride, dx)
    return dw


def col2im(dy, w, pads, stride, dx):
    """dJ/dx from dJ/dv: for each kernel offset, one GEMM into a contiguous buffer and one
    add of its slice into dJ/dx."""
    xp = backend.xp
    _, h, wd, c = dx.shape
    n, ho, wo, k = dy.shape
    _, fh, fw, _ = w.shape
    dy2 = dy.reshape(-1, k)
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


KERNELS = {
    "toeplitz": (conv_toeplitz.forward_toeplitz, conv_toeplitz.backward_toeplitz),
    "1x1": (forward_1x1, backward_1x1),
    "rows": (forward_rows, backward_rows),
    "flat": (forward_flat, backward_flat),
    "im2col": (forward_im2col, backward_im2col),
}
