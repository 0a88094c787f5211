"""Volumetric convolution by depth planes: a thinner patch copy and a fatter matrix product.

With K filters of (f_d, f_h, f_w, c_in), im2col copies f_d f_h f_w c_in values per output
and multiplies by a (f_d f_h f_w c_in, K) matrix: with few filters (K = 16) that product is
too thin for BLAS and the copy is f_d f_h f_w times the input. Here only the (h, w) window of each
depth plane is copied: Q[n, z_p, y, x] holds the f_h f_w c_in values of plane z_p of the
padded input under output position (y, x), for every plane z_p (a copy of f_h f_w times the
padded input). The depth taps i are the column blocks of one product

    Z = Q [W_0 | W_1 | ... | W_{f_d - 1}]       (rows, f_h f_w c_in) x (f_h f_w c_in, f_d K)

(W_i: the filters' depth slice i as an (f_h f_w c_in, K) matrix), and an output plane adds
the blocks of the planes it reads:

    v[n, z] = b + sum_i Z[n, s_d z + d_d i, :, i]

Backward, with dY_i the output gradient placed on the planes tap i read from (zeros
elsewhere), S = [dY_0 | ... | dY_{f_d - 1}] (rows, f_d K):

    dJ/d[W_0 | ... | W_{f_d - 1}] = Q^T S
    dJ/dQ = S [W_0 | ... | W_{f_d - 1}]^T, each (h, w) tap's column block added back onto the
            padded input positions it was read from (col2im over f_h f_w taps)

With stride 1 on every axis dJ/dx is itself a convolution computed the same way, with no
col2im: dJ/dv padded by e - 1 - p on each side (e = dilation (f - 1) + 1, p the forward's padding
on that side) correlated with the filters flipped in depth, height and width, K and c_in
swapped (:func:`input_gradient`).

Z computes f_d K values for every padded plane where im2col needs them only for the planes
read, so it pays when the output has about as many planes as the padded input: stride 1 in
depth (:func:`lamina.functional.conv3d.algorithm` makes the choice).
"""

from __future__ import annotations

from lamina import backend, parallel
from lamina.functional.im2col import strided_view, strides_of


def stacked_weights(w):
    """[W_0 | ... | W_{f_d - 1}]: (f_h f_w c_in, f_d K) from w (K, f_d, f_h, f_w, c_in)."""
    k, fd, fh, fw, c = w.shape
    return backend.xp.ascontiguousarray(w.transpose(2, 3, 4, 1, 0)).reshape(fh * fw * c, fd * k)


def unstacked_weights(stacked, w_shape):
    """The inverse of :func:`stacked_weights`: (K, f_d, f_h, f_w, c_in)."""
    k, fd, fh, fw, c = w_shape
    return backend.xp.ascontiguousarray(stacked.reshape(fh, fw, c, fd, k).transpose(4, 3, 0, 1, 2))


class PlaneGeometry:
    """Where the windows of a convolution lie: ``kernel``, ``stride`` and ``dilation``
    triples, ``out_dhw`` the output size, ``padded`` the (D_p, H_p, W_p) of the padded input."""

    def __init__(self, kernel, stride, dilation, out_dhw, padded):
        self.kernel, self.stride, self.dilation = tuple(kernel), tuple(stride), tuple(dilation)
        self.out_dhw, self.padded = tuple(out_dhw), tuple(padded)
        self.plane_rows = out_dhw[1] * out_dhw[2]                   # rows of Q per plane: H' W'
        self.window_taps = kernel[1] * kernel[2]                   # f_h f_w

    def plane_view(self, xpad):
        """(N, D_p, H', W', f_h, f_w, c_in): the (h, w) windows of every plane of ``xpad``,
        a strided view (no copy)."""
        n, dp, _, _, c = xpad.shape
        (_, fh, fw), (_, sh, sw), (_, dh, dw) = self.kernel, self.stride, self.dilation
        s_n, s_d, s_h, s_w, s_c = strides_of(xpad)
        return strided_view(xpad, (n, dp, self.out_dhw[1], self.out_dhw[2], fh, fw, c),
                            (s_n, s_d, s_h * sh, s_w * sw, s_h * dh, s_w * dw, s_c))

    def tap_planes(self, i: int) -> slice:
        """The padded planes read by depth tap ``i``, one per output plane."""
        start, sd, do = i * self.dilation[0], self.stride[0], self.out_dhw[0]
        return slice(start, start + sd * (do - 1) + 1, sd)


def plane_patches(xpad, geometry: PlaneGeometry, out=None):
    """Q: (N, D_p, H' W', f_h f_w c_in), the copy of :meth:`PlaneGeometry.plane_view` (into
    ``out`` when given)."""
    view = geometry.plane_view(xpad)
    if out is None:
        out = backend.xp.empty(view.shape[:2] + (geometry.plane_rows, geometry.window_taps * xpad.shape[4]),
                               dtype=xpad.dtype)
    out.reshape(view.shape)[...] = view
    return out


def forward(xpad, w, b, geometry: PlaneGeometry, keep: bool):
    """(v (N, D', H', W', K), Q or None): the convolution of the padded input, Q kept when
    ``keep``. In parallel over chunks of images, each copying, multiplying and adding its own."""
    xp = backend.xp
    n, dp = xpad.shape[:2]
    k, fd = w.shape[:2]
    rows, do = geometry.plane_rows, geometry.out_dhw[0]
    stacked = stacked_weights(w)
    out = xp.empty((n, do, rows, k), dtype=xp.result_type(xpad, w))
    kept = xp.empty((n, dp, rows, stacked.shape[0]), dtype=xpad.dtype) if keep else None

    def chunk(lo, hi):
        q = plane_patches(xpad[lo:hi], geometry, None if kept is None else kept[lo:hi])
        z = parallel.matmul(q.reshape(-1, q.shape[3]), stacked).reshape(hi - lo, dp, rows, fd, k)
        v = out[lo:hi]
        v[...] = z[:, geometry.tap_planes(0), :, 0]
        for i in range(1, fd):
            v += z[:, geometry.tap_planes(i), :, i]
        if b is not None:
            v += b

    parallel.split(chunk, n, out.size * fd + n * dp * rows * stacked.shape[0])
    return out.reshape((n,) + geometry.out_dhw + (k,)), kept


def transposed_pads(kernel, stride, dilation, pads):
    """The padding of dJ/dv for :func:`input_gradient`: e - 1 - p before and after on each
    axis. None when that convolution does not apply: a stride above 1, or a padding wider
    than e - 1 (the padded input's edge planes then reach no output)."""
    if tuple(stride) != (1, 1, 1):
        return None
    spread = [(d * (f - 1) - before, d * (f - 1) - after) for d, f, (before, after) in zip(dilation, kernel, pads)]
    if min(min(side) for side in spread) < 0:
        return None
    return tuple(spread)


def input_gradient(dy_padded, w, dilation, x_dhw):
    """dJ/dx (N, D, H, W, c_in) of a stride-1 convolution: ``dy_padded`` (dJ/dv padded by
    :func:`transposed_pads`) correlated with the flipped, transposed filters
    w[:, ::-1, ::-1, ::-1, :] as (c_in, f_d, f_h, f_w, K)."""
    flipped = w[:, ::-1, ::-1, ::-1, :].transpose(4, 1, 2, 3, 0)
    geometry = PlaneGeometry(w.shape[1:4], (1, 1, 1), dilation, x_dhw, dy_padded.shape[1:4])
    return forward(dy_padded, flipped, None, geometry, keep=False)[0]


def backward(dy, xpad_of, w, patches, geometry: PlaneGeometry, need_x: bool, need_w: bool):
    """(dJ/dx_padded or None, dJ/dw or None) for the output gradient ``dy`` (N, D', H', W',
    K). ``patches``: Q from forward, or None to rebuild each image's from ``xpad_of(lo, hi)``
    (the padded images lo..hi - 1). dJ/dx_padded only when ``need_x``: by col2im, for the
    strides and paddings :func:`input_gradient` does not take. One image at a time, the
    images shared among threads, dJ/dw summed in a fixed order."""
    xp = backend.xp
    n = dy.shape[0]
    k, fd, fh, fw, c = w.shape
    dp, rows = geometry.padded[0], geometry.plane_rows
    stacked = stacked_weights(w)
    dy = xp.ascontiguousarray(dy).reshape(n, geometry.out_dhw[0], rows, k)
    dxpad = xp.zeros((n,) + geometry.padded + (c,), dtype=dy.dtype) if need_x else None
    _, sh, sw = geometry.stride
    _, dil_h, dil_w = geometry.dilation
    ho, wo = geometry.out_dhw[1:]

    def image(m):
        spread = xp.zeros((dp, rows, fd, k), dtype=dy.dtype)                 # S for this image
        for i in range(fd):
            spread[geometry.tap_planes(i), :, i] = dy[m]
        spread = spread.reshape(-1, fd * k)
        if need_x:
            d_patches = parallel.matmul(spread, stacked.T).reshape(dp, ho, wo, fh, fw, c)
            for j in range(fh):
                for l in range(fw):
                    top, left = j * dil_h, l * dil_w
                    dxpad[m, :, top:top + sh * (ho - 1) + 1:sh, left:left + sw * (wo - 1) + 1:sw] += \
                        d_patches[:, :, :, j, l]
        if not need_w:
            return None
        q = patches[m] if patches is not None else plane_patches(xpad_of(m, m + 1), geometry)[0]
        return parallel.matmul(q.reshape(-1, q.shape[2]).T, spread)

    work = n * dp * rows * (fd * k + fh * fw * c)
    d_stacked = parallel.map_sum(image, n, work)
    if need_w and d_stacked is None:            # no images (N = 0): dJ/dw = 0
        d_stacked = xp.zeros(stacked.shape, dtype=dy.dtype)
    return dxpad, (unstacked_weights(d_stacked, w.shape) if need_w else None)
