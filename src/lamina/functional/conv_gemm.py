"""Convolution as matrix products (course notes, "Vectorized implementation").

The windows of the input are the rows of a patch matrix (im2col), so v = x * w is one
matrix product with w reshaped to (K, f_h f_w c_in), and dJ/dw = patches^T dJ/dv. The
batch is processed in chunks of images whose patch matrix fits in the cache
(CHUNK_BYTES). By default backward rebuilds each chunk's patch matrix from the input
instead of keeping it from forward (KEEP_PATCHES), so a convolution holds nothing but its
input and weights between forward and backward. Five ways of forming the products are
chosen by shape (:mod:`lamina.functional.conv_kernels`); :func:`gemm_forward` and
:func:`gemm_backward` run the chosen one over the chunks.
"""

from __future__ import annotations

import functools

from lamina import backend, parallel
from lamina.functional import conv_kernels as K
from lamina.functional import conv_toeplitz
from lamina.functional._util import channel_sums

CHUNK_BYTES = 1 << 20
"""Target size of the largest per-chunk temporary (a chunk's patch matrix). The "im2col"
path takes chunks IM2COL_CHUNK_FACTOR times larger: its col2im costs one GEMM and one add
per kernel offset and chunk, whatever the chunk's size."""

IM2COL_CHUNK_FACTOR = 4

BACKWARD_TEMPORARIES = 2
"""Without kept patches, the "rows" backward cuts the batch for this many temporaries of
the patch matrix's size alive at once (the "im2col" kernels cut their own runs, see
conv_kernels.PATCH_RUN_BYTES; the "flat" backward holds one at a time)."""

KEEP_PATCHES = False
"""Keep the patch matrices from forward for dJ/dw (faster); False rebuilds them in backward
(a 3x3 convolution 32->32 on 32x32 images, batch 64: 27 MB less held between forward and
backward, about 8% slower)."""


ROWS_CHANNELS = (16, 128)
ROWS_WASTE_MAX = 1.15
"""The "rows" plan is taken for c_in in ROWS_CHANNELS (from, up to) when h_p / h_out, the
extra work of computing its outputs on the padded-height grid, is at most ROWS_WASTE_MAX
(a 3x3 'same' convolution on 16x16 images is 1.125, on 8x8 1.25); otherwise the full patch
matrix. Measured on 2 cores, forward + backward, "im2col" against "rows": 0.78-0.88x the
time on 8x8 and smaller images; with c_in >= 128 0.74-0.87x on 7x7 to 32x32; with c_in of
32 to 96 on 16x16 and 32x32, 0.95-1.07x."""


def _flat_suits(kernel: tuple[int, int], c_in: int, waste: float) -> bool:
    """Whether "flat" (or its col2im, for dJ/dx) beats the full patch matrix: narrow kernel
    rows (f_w c_in < 16), or little waste."""
    return kernel[1] * c_in < 16 or waste <= 1.5


def _plan(kernel: tuple[int, int], stride: tuple[int, int], c_in: int, waste: float, toeplitz_ok: bool,
          rows_waste: float) -> str:
    """The path for a dense convolution; ``waste`` is (padded input area) / (output area),
    the extra work of "flat", which computes an output at every padded pixel;
    ``toeplitz_ok``: the band matrix of "toeplitz" is small enough and its waste allowed;
    ``rows_waste``: h_p / h_out, the extra work of "rows"."""
    if kernel == (1, 1):
        return "1x1"
    if stride != (1, 1):
        return "im2col"
    if c_in >= ROWS_CHANNELS[0]:
        return "rows" if c_in < ROWS_CHANNELS[1] and rows_waste <= ROWS_WASTE_MAX else "im2col"
    if toeplitz_ok:
        return "toeplitz"
    return "flat" if _flat_suits(kernel, c_in, waste) else "im2col"


def _shape_facts(x_shape, w_shape, pads):
    """(flat's waste, whether "toeplitz" is allowed, rows' waste) for a stride-1 convolution."""
    _, h, wd, c = x_shape
    k, fh, fw, _ = w_shape
    hp, wp = h + pads[0] + pads[1], wd + pads[2] + pads[3]
    wo = wp - fw + 1
    block = conv_toeplitz.toeplitz_block(wo, k)
    toeplitz_ok = (block + fw - 1 <= conv_toeplitz.TOEPLITZ_FORWARD_WASTE_MAX * fw
                   and block * k * fh * (block + fw - 1) * c <= conv_toeplitz.TOEPLITZ_MAX)
    return hp * wp / ((hp - fh + 1) * wo), toeplitz_ok, hp / (hp - fh + 1)


def plan_for(x_shape, w_shape, pads, stride) -> str:
    return _plan(tuple(w_shape[1:3]), stride, x_shape[3], *_shape_facts(x_shape, w_shape, pads))


def _chunks(n: int, bytes_per_image: int, plan: str) -> list[tuple[int, int]]:
    target = CHUNK_BYTES * (IM2COL_CHUNK_FACTOR if plan == "im2col" else 1)
    return parallel.chunk_bounds(n, bytes_per_image, target)


def _chunk_bytes(plan, x_shape, w_shape, pads, out_hw, itemsize) -> int:
    """Bytes per image of the plan's largest temporary (its patch matrix; for 1x1 kernels,
    which have none, the output, so that an epilogue finds its chunk in the cache)."""
    _, h, wd, c = x_shape
    k, fh, fw, _ = w_shape
    hp, wp = h + pads[0] + pads[1], wd + pads[2] + pads[3]
    if plan == "1x1":
        return out_hw[0] * out_hw[1] * k * itemsize
    if plan == "toeplitz":
        block = conv_toeplitz.toeplitz_block(out_hw[1], k)
        return out_hw[0] * (out_hw[1] // block) * fh * (block + fw - 1) * c * itemsize
    if plan == "rows":
        return hp * out_hw[1] * fw * c * itemsize
    if plan == "flat":
        return fh * fw * c * hp * wp * itemsize
    return out_hw[0] * out_hw[1] * fh * fw * c * itemsize


def gemm_forward(x, w, bias, pads, stride, out, keep: bool, epilogue=None) -> list:
    """v into ``out``, chunk by chunk of images; returns [(lo, hi, [patch matrix or None])].
    ``epilogue``, if given, is applied in place to each finished chunk of ``out`` while it is
    still in the cache."""
    plan = plan_for(x.shape, w.shape, pads, stride)
    forward = K.KERNELS[plan][0]
    if plan == "rows":
        forward = functools.partial(K.forward_rows, wm=K.rows_weights(w))
    if plan == "toeplitz":
        forward = functools.partial(conv_toeplitz.forward_toeplitz, band=_band(w, out.shape[2]))
    per_image = _chunk_bytes(plan, x.shape, w.shape, pads, out.shape[1:3], x.itemsize)
    chunks = _chunks(x.shape[0], per_image, plan)

    def one(i):
        lo, hi = chunks[i]
        box = [forward(x[lo:hi], w, pads, stride, out[lo:hi], bias, keep)]
        if epilogue is not None:
            epilogue(out[lo:hi])
        return lo, hi, box
    return parallel.map_chunks(one, len(chunks), per_image * x.shape[0] // x.itemsize + out.size)


def gemm_backward(x, w, dy, pads, stride, dx, need_w: bool, chunks: list):
    """dJ/dw (returned, or None) and dJ/dx (written into ``dx`` unless it is None), over the
    forward's chunks; each saved patch matrix is dropped as soon as it has been used. The
    kernels return dJ/dw transposed, (f_h f_w c, K), as their GEMMs give it; the chunks'
    parts are added in that layout and turned into (K, f_h, f_w, c) once."""
    plan = plan_for(x.shape, w.shape, pads, stride)
    backward = K.KERNELS[plan][1]
    if plan == "rows" and dx is not None:
        flipped = K.flipped_weights(w)
        backward = functools.partial(K.backward_rows, flipped=flipped, wm=K.rows_weights(flipped))
    if plan == "toeplitz":
        backward = functools.partial(conv_toeplitz.backward_toeplitz, band=_band(w, dy.shape[2]),
                                     dx_kernel=None if dx is None else _toeplitz_dx(x.shape, w, pads, dy.shape[2]))
    if plan == "im2col" and dx is not None:
        toeplitz = conv_toeplitz.toeplitz_for(x.shape, w, pads, stride, dy.shape[2])
        if toeplitz is not None:
            backward = functools.partial(K.backward_im2col, toeplitz=toeplitz)
    per_image = _chunk_bytes(plan, x.shape, w.shape, pads, dy.shape[1:3], x.itemsize)
    if plan == "rows" and all(len(box) == 1 and box[0] is None for _, _, box in chunks):
        # nothing kept from forward: backward takes its own, smaller chunks, as it holds two
        # temporaries of the patch matrix's size at once (R and G, or the dJ/dx correlation's
        # R and product)
        chunks = [(lo, hi, [None]) for lo, hi in _chunks(x.shape[0], BACKWARD_TEMPORARIES * per_image, plan)]

    def one(i):
        # the kernel takes the patch matrix out of its one-item list, so that nothing else
        # holds it and it is freed as soon as dJ/dw has used it
        lo, hi, box = chunks[i]
        if not box:                          # a second backward (retain_graph): rebuilt
            box.append(None)
        part = backward(x[lo:hi], w, dy[lo:hi], pads, stride, None if dx is None else dx[lo:hi], need_w, box)
        box.clear()
        return part
    dw_t = parallel.map_sum(one, len(chunks), per_image * x.shape[0] // x.itemsize + dy.size)
    return None if dw_t is None else dw_t.T.reshape(w.shape)


def _toeplitz_dx(x_shape, w, pads, wo: int):
    """dJ/dx for the "toeplitz" plan: by whole rows where the row matrix is allowed, else
    flat's col2im where it suits, else im2col's."""
    row_matrix = conv_toeplitz.toeplitz_for(x_shape, w, pads, (1, 1), wo)
    if row_matrix is not None:
        return lambda x, w, dy, pads, stride, dx: conv_toeplitz.dx_by_rows(dy, row_matrix, pads, dx)
    if _flat_suits(w.shape[1:3], x_shape[3], _shape_facts(x_shape, w.shape, pads)[0]):
        # in flat's own, smaller chunks: its column matrix is f_h f_w times the padded input
        step = max(1, CHUNK_BYTES // _chunk_bytes("flat", x_shape, w.shape, pads, None, w.itemsize))

        def flat_dx(x, w, dy, pads, stride, dx):
            for lo in range(0, x.shape[0], step):
                K.backward_flat(x[lo:lo + step], w, dy[lo:lo + step], pads, stride, dx[lo:lo + step], False, [None])
        return flat_dx
    return lambda x, w, dy, pads, stride, dx: K.col2im(dy, w, pads, stride, dx)


def _band(w, wo: int):
    """The "toeplitz" plan's band matrix for one block of output pixels."""
    block = conv_toeplitz.toeplitz_block(wo, w.shape[0])
    return conv_toeplitz.toeplitz_weights(w, block, block + w.shape[2] - 1)


def sum_rows(dy):
    """dJ/db = sum over n, y, x of dJ/dv."""
    return channel_sums(dy)


def unkept_chunks(x_shape, w, pads, stride, out_hw) -> list:
    """The chunks :func:`gemm_forward` would use, holding no patch matrices: for a backward
    whose forward never ran (:func:`gemm_backward` then rebuilds what dJ/dw needs)."""
    plan = plan_for(x_shape, w.shape, pads, stride)
    per_image = _chunk_bytes(plan, x_shape, w.shape, pads, out_hw, w.itemsize)
    return [(lo, hi, [None]) for lo, hi in _chunks(x_shape[0], per_image, plan)]


def input_gradient(x_shape, w, dy, pads, stride, dx) -> None:
    """dJ/dx alone into ``dx`` for a convolution whose forward never ran (the forward of a
    transposed convolution): the kernels read only the input's shape when dJ/dw is not
    wanted, so the input is a zero-strided stand-in of ``x_shape``."""
    xp = backend.xp
    stand_in = xp.broadcast_to(xp.zeros((), dtype=w.dtype), x_shape)
    chunks = unkept_chunks(x_shape, w, pads, stride, dy.shape[1:3])
    gemm_backward(stand_in, w, dy, pads, stride, dx, False, chunks)
