"""Convolution through banded (Toeplitz) matrices of the weights, for stride 1.

Along one image row, a correlation with a kernel row is a product with a band matrix:
M[(x, k), (x', c)] = w[k, i, x' - x, c] (zero off the band). Two uses:

- the "toeplitz" plan (few input channels, e.g. LeNet's two layers): each output row in blocks
  of b pixels, all multiplied by the same band matrix, forward and dJ/dw
  (:func:`forward_toeplitz`, :func:`backward_toeplitz`);
- dJ/dx = pad(dJ/dv) * rot180(w) a whole row at a time on narrow images
  (:func:`dx_by_rows`), for the "toeplitz" and "im2col" plans.

See :mod:`lamina.functional.conv_kernels` for how the plans compare.
"""

from __future__ import annotations

from lamina import backend
from lamina.functional._util import per_channel
from lamina.functional.im2col import pad_nhwc, strided_view, strides_of

TOEPLITZ_MAX = 1 << 18
"""The most values a row or band matrix (:func:`toeplitz_weights`) may have. dJ/dx goes
through whole rows when the row matrix is within it and TOEPLITZ_WASTE_MAX allows."""

TOEPLITZ_WASTE_MAX = 3
"""... and the padded width is at most this many times the kernel's: the row matrix is
mostly zeros, and its GEMM does w_p / f_w times the useful work."""


def toeplitz_weights(w, wo: int, wp: int):
    """The (w_out K, f_h w_p c) matrix M[(x, k), (i, x', c)] = w[k, i, x' - x, c] (zero
    unless 0 <= x' - x < f_w): one row of dJ/dv times M gives, for each kernel row i, that
    row's whole contribution to a (padded) row of dJ/dx."""
    xp = backend.xp
    k, fh, fw, c = w.shape
    m = xp.zeros((wo, k, fh, wp, c), dtype=w.dtype)
    for x in range(wo):
        m[x, :, :, x:x + fw] = w
    return m.reshape(wo * k, fh * wp * c)


def toeplitz_for(x_shape, w, pads, stride, wo: int):
    """:func:`toeplitz_weights` for this convolution, or None where TOEPLITZ_MAX,
    TOEPLITZ_WASTE_MAX or a stride other than 1 rule them out."""
    _, _, wd, c = x_shape
    k, fh, fw, _ = w.shape
    wp = wd + pads[2] + pads[3]
    if stride != (1, 1) or wp > TOEPLITZ_WASTE_MAX * fw or wo * k * fh * wp * c > TOEPLITZ_MAX:
        return None
    return toeplitz_weights(w, wo, wp)


def dx_by_rows(dy, toeplitz, pads, dx):
    """dJ/dx = pad(dJ/dv) * rot180(w) for stride 1, a row at a time: Z = dJ/dv rows @ M
    (:func:`toeplitz_weights`), and padded row y + i of dJ/dx gets block i of Z's row y."""
    xp = backend.xp
    n, ho, wo, k = dy.shape
    _, h, wd, c = dx.shape
    pt, pb, pl, pr = pads
    hp, wp = h + pt + pb, wd + pl + pr
    fh = toeplitz.shape[1] // (wp * c)
    z = xp.matmul(dy.reshape(n * ho, wo * k), toeplitz).reshape(n, ho, fh, wp * c)
    padded = dx if hp == h and wp == wd else xp.empty((n, hp, wp, c), dtype=dx.dtype)
    rows = padded.reshape(n, hp, wp * c)
    rows[:, :ho] = z[:, :, 0]
    rows[:, ho:] = 0
    for i in range(1, fh):
        rows[:, i:i + ho] += z[:, :, i]
    if padded is not dx:
        dx[...] = padded[:, pt:pt + h, pl:pl + wd]


# the "toeplitz" plan ---------------------------------------------------------------------------

TOEPLITZ_MIN_COLUMNS = 32
"""The "toeplitz" plan cuts each output row into blocks of b pixels, all multiplied by the
same band matrix, with b the smallest divisor of w_out from 2 up whose b K product columns
reach this many (the whole row if none does): its GEMM then does (b + f_w - 1) / f_w times
the useful work, not w_out / f_w, while staying wide enough to run at speed."""

TOEPLITZ_FORWARD_WASTE_MAX = 3
"""... and is taken when that ratio is at most this (and its band matrix within TOEPLITZ_MAX)."""


def toeplitz_block(wo: int, k: int) -> int:
    """The output pixels per block of the "toeplitz" plan (see TOEPLITZ_MIN_COLUMNS)."""
    return next((b for b in range(2, wo) if wo % b == 0 and b * k >= TOEPLITZ_MIN_COLUMNS), wo)


def _input_rows(x, pads, fh: int, fw: int, ho: int, block: int):
    """X[(n, y, b), (i, x', c)] = xpad[n, y + i, b block + x', c], x' < block + f_w - 1: the
    input under each block of output pixels, f_h rows side by side (one copy)."""
    xp = backend.xp
    xpad = xp.ascontiguousarray(pad_nhwc(x, pads))
    n, _, wp, c = xpad.shape
    blocks = (wp - fw + 1) // block
    sn, s_h, s_w, s_c = strides_of(xpad)
    view = strided_view(xpad, (n, ho, blocks, fh, (block + fw - 1) * c), (sn, s_h, block * s_w, s_h, s_c))
    return xp.ascontiguousarray(view).reshape(n * ho * blocks, fh * (block + fw - 1) * c)


def forward_toeplitz(x, w, pads, stride, out, bias, keep, band=None):
    """``band``: :func:`toeplitz_weights` for one block, (block K, f_h (block + f_w - 1) c)."""
    xp = backend.xp
    k, fh, fw, _ = w.shape
    block = band.shape[0] // k
    rows = _input_rows(x, pads, fh, fw, out.shape[1], block)
    xp.matmul(rows, band.T, out=out.reshape(-1, block * k))
    if bias is not None:
        per_channel(xp.add, out, bias, out)
    return rows if keep else None


def backward_toeplitz(x, w, dy, pads, stride, dx, need_w, box, band=None, dx_kernel=None):
    """``dx_kernel(x, w, dy, pads, stride, dx)`` writes dJ/dx (chosen by the caller: by whole
    rows with :func:`dx_by_rows`, or another plan's col2im)."""
    xp = backend.xp
    _, ho, _, k = dy.shape
    _, fh, fw, c = w.shape
    block = band.shape[0] // k
    dw = None
    if need_w:
        # B = X^T @ dJ/dv blocks holds, at [(i, x', c), (x, k)], the sum over n, y and the
        # blocks of x[n, y + i, x' + block offset, c] dJ/dv[n, y, x + block offset, k];
        # dJ/dw[k, i, j, c] adds its band x' = x + j
        rows = box.pop()
        if rows is None:
            rows = _input_rows(x, pads, fh, fw, ho, block)
        b = xp.matmul(rows.T, dy.reshape(-1, block * k)).reshape(fh, block + fw - 1, c, block, k)
        del rows
        s = strides_of(b)
        diagonals = strided_view(b, (fh, fw, c, block, k), (s[0], s[1], s[2], s[1] + s[3], s[4]))
        dw = diagonals.sum(axis=3).reshape(fh * fw * c, k)
    if dx is not None:
        dx_kernel(x, w, dy, pads, stride, dx)
    return dw
