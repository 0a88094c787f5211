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
patch matrix (im2col), so v is one matrix product (:mod:`lamina.functional.conv_gemm`);
depthwise convolutions are one multiply-add per kernel offset (here),
``algorithm='fft'`` uses the convolution theorem (:mod:`lamina.functional.conv_fft`), and a
dilated convolution runs as an undilated one on the input's phases
(:mod:`lamina.functional.conv_dilated`).
"""

from __future__ import annotations

from lamina import backend, parallel
from lamina.autograd import Function, Tensor, graph
from lamina.errors import ShapeError
from lamina.functional import conv_gemm
from lamina.functional._util import per_channel, repeated
from lamina.functional.conv_dilated import DilatedConv2d, strided_dilated_conv2d
from lamina.functional.conv_fft import Conv2dFFT
from lamina.functional.fold import conv_gradients_graph
from lamina.functional.im2col import clipped, conv_pads, gradient_pads, offset_view, out_size, pad_nhwc, pair

# -- depthwise (groups == c_in): one multiply-add per kernel offset ---------------------------


DEPTHWISE_CHUNK_BYTES = 1 << 20
"""Images per depthwise chunk: about this much output each (the chunks share the threads)."""

BLOCK_BYTES = 512 << 10
"""Depthwise forward sums the f_h f_w products over blocks of output rows of about this size."""


def _depthwise_chunks(out_shape, itemsize: int) -> list[tuple[int, int]]:
    n = out_shape[0]
    per_image = out_shape[1] * out_shape[2] * out_shape[3] * itemsize
    return parallel.chunk_bounds(n, per_image, DEPTHWISE_CHUNK_BYTES)


def _padded_rows(x, first: int, last: int, pads, buffer):
    """Rows [first, last) of the zero-padded x (padded coordinates), written into ``buffer``:
    a block of rows padded in the cache instead of a padded copy of the whole input."""
    pt, _, pl, _ = pads
    h, wd = x.shape[1:3]
    block = buffer[:, :last - first]
    top, bottom = max(first - pt, 0), min(last - pt, h)           # the rows of x in the block
    begin, end = top + pt - first, bottom + pt - first
    block[:, :begin] = 0
    block[:, end:] = 0
    block[:, begin:end, :pl] = 0
    block[:, begin:end, pl + wd:] = 0
    block[:, begin:end, pl:pl + wd] = x[:, top:bottom]
    return block


def _depthwise_forward(x, w, bias, pads, stride, out, epilogue=None):
    xp = backend.xp
    n, _, wd, c = x.shape
    k, fh, fw, _ = w.shape
    chunks = _depthwise_chunks(out.shape, out.itemsize)
    ho, wo = out.shape[1:3]
    (sh, sw), m = stride, k // c
    rows_per_block = max(1, BLOCK_BYTES // max(1, (chunks[0][1] - chunks[0][0]) * wo * k * out.itemsize))

    # With one filter per channel, each output row's (w_out, c) values are contiguous, and so
    # are each window row's once the padded rows are split into their s_w column phases
    # (column j + x s_w of the rows is column j // s_w + x of phase j % s_w): the products run
    # over whole rows against a weight row tiled w_out times (4x faster than broadcasting c
    # weights along every pixel).
    by_rows = m == 1
    if by_rows:
        taps = {(i, j): repeated(w[:, i, j, 0], wo) for i in range(fh) for j in range(fw)}
    else:
        taps = {(i, j): w[:, i, j, 0].reshape(c, m) for i in range(fh) for j in range(fw)}

    def shaped(block, window):
        if by_rows:
            rows = block.shape[:2] + (wo * k,)
            return block.reshape(rows), window.reshape(rows)
        return block.reshape(block.shape[:3] + (c, m)), window[..., None]

    def chunk(index):
        # output rows in blocks of about BLOCK_BYTES, so that the running sum stays in cache
        lo, hi = chunks[index]
        tmp = xp.empty((hi - lo, min(rows_per_block, ho), wo, k), dtype=out.dtype)
        window = xp.empty((hi - lo, (min(rows_per_block, ho) - 1) * sh + fh, wd + pads[2] + pads[3], c), dtype=x.dtype)
        for r0 in range(0, ho, rows_per_block):
            r1 = min(ho, r0 + rows_per_block)
            src = _padded_rows(x[lo:hi], r0 * sh, (r1 - 1) * sh + fh, pads, window)
            phases = [src] if sw == 1 else [xp.ascontiguousarray(src[:, :, p::sw]) for p in range(sw)]
            block = out[lo:hi, r0:r1]
            for i in range(fh):
                for j in range(fw):
                    if by_rows:
                        q = j // sw
                        window_ij = phases[j % sw][:, i:i + (r1 - r0 - 1) * sh + 1:sh, q:q + wo]
                    else:
                        window_ij = offset_view(src, i, j, (r1 - r0, wo), stride)
                    acc, view = shaped(block, window_ij)
                    if i == j == 0:
                        xp.multiply(view, taps[0, 0], out=acc)
                    else:
                        t, _ = shaped(tmp[:, :r1 - r0], view)
                        xp.multiply(view, taps[i, j], out=t)
                        acc += t
            if bias is not None:
                per_channel(xp.add, block, bias, block)
            if epilogue is not None:
                epilogue(block)
    parallel.map_chunks(chunk, len(chunks), out.size * fh * fw)


def _depthwise_backward(x, w, dy, pads, stride, dx, need_w: bool):
    xp = backend.xp
    n, h, wd, c = x.shape
    _, ho, wo, k = dy.shape
    _, fh, fw, _ = w.shape
    dx_pads = gradient_pads((h, wd), (fh, fw), (ho, wo), pads)
    if dx is not None and stride == (1, 1) and k == c and min(dx_pads) >= 0:
        # dJ/dx = pad(dJ/dv) * rot180(w), channel by channel: a depthwise correlation, run by
        # the forward's own kernel (whole rows against tiled weights) instead of one
        # broadcast multiply-add per kernel offset below
        _depthwise_forward(dy, xp.ascontiguousarray(w[:, ::-1, ::-1]), None, dx_pads, (1, 1), dx)
        dx = None
    if dx is None and not need_w:
        return None
    xpad = pad_nhwc(x, pads) if need_w else None
    chunks = _depthwise_chunks(dy.shape, dy.itemsize)

    def chunk(index):
        lo, hi = chunks[index]
        dy5 = dy[lo:hi].reshape(hi - lo, ho, wo, c, k // c)
        dw = None
        if need_w:                           # dJ/dw[k, i, j] = sum of window (i, j) times dJ/dv
            dw = xp.empty(w.shape, dtype=dy.dtype)
            for i in range(fh):
                for j in range(fw):
                    view = offset_view(xpad[lo:hi], i, j, (ho, wo), stride)
                    dw[:, i, j, 0] = xp.einsum("nhwc,nhwcm->cm", view, dy5).reshape(k)
        if dx is not None:                   # each window offset hands dJ/dv w back to its pixels
            part_dx = dx[lo:hi]
            part_dx[...] = 0
            for i in range(fh):
                lo_h, hi_h, rows = clipped(ho, i - pads[0], stride[0], h)
                for j in range(fw):
                    lo_w, hi_w, cols = clipped(wo, j - pads[2], stride[1], wd)
                    if hi_h > lo_h and hi_w > lo_w:
                        part = dy5[:, lo_h:hi_h, lo_w:hi_w]
                        part_dx[:, rows, cols] += xp.einsum("nhwcm,cm->nhwc", part, w[:, i, j, 0].reshape(c, -1))
        return dw
    return parallel.map_sum(chunk, len(chunks), dy.size * fh * fw * 2)


class Conv2d(Function):
    """v = x * w + b by im2col + GEMM; hyperparameters ``stride`` (s_h, s_w), ``pads``
    (top, bottom, left, right), ``groups`` and ``keep`` (whether dJ/dw will be needed, so
    that the patch matrices are kept for it; they are rebuilt when missing)."""
    value_used_for = {0: (1,), 1: (0,), 2: ()}   # x serves dJ/dw, w serves dJ/dx, the bias neither

    def forward(self, x, w, b=None):
        xp = backend.xp
        n, h, wd, c = x.shape
        k, fh, fw, cg = w.shape
        (sh, sw), (pt, pb, pl, pr), g = self.stride, self.pads, self.groups
        out = xp.empty((n, out_size(h, fh, sh, pt, pb), out_size(wd, fw, sw, pl, pr), k),
                       dtype=xp.result_type(x, w))
        keep = getattr(self, "keep", True)
        epilogue = getattr(self, "epilogue", None)
        self.x, self.w, self.chunks = x, w, []
        if g == 1:
            self.chunks = conv_gemm.gemm_forward(x, w, b, self.pads, self.stride, out, keep, epilogue)
            return out
        if cg == 1:
            _depthwise_forward(x, w, b, self.pads, self.stride, out, epilogue)
        else:
            kg = k // g
            for gi in range(g):
                bias = None if b is None else b[gi * kg:(gi + 1) * kg]
                part = xp.empty(out.shape[:3] + (kg,), dtype=out.dtype)
                self.chunks.append(conv_gemm.gemm_forward(x[..., gi * cg:(gi + 1) * cg], w[gi * kg:(gi + 1) * kg],
                                                  bias, self.pads, self.stride, part, keep))
                out[..., gi * kg:(gi + 1) * kg] = part
            if epilogue is not None:
                epilogue(out)
        return out

    def backward(self, dy):
        xp = backend.xp
        x, w, g, needs = self.x, self.w, self.groups, self.needs_grad
        k, _, _, cg = w.shape
        dy = xp.ascontiguousarray(dy)
        db = conv_gemm.sum_rows(dy) if len(needs) > 2 and needs[2] else None
        dx = xp.empty(x.shape, dtype=dy.dtype) if needs[0] else None
        dw = None
        if g == 1:
            dw = conv_gemm.gemm_backward(x, w, dy, self.pads, self.stride, dx, needs[1], self.chunks)
        elif cg == 1:
            dw = _depthwise_backward(x, w, dy, self.pads, self.stride, dx, needs[1])
        else:
            kg = k // g
            dw = xp.empty(w.shape, dtype=dy.dtype) if needs[1] else None
            for gi in range(g):
                dx_g = None if dx is None else xp.empty(x.shape[:3] + (cg,), dtype=dy.dtype)
                dw_g = conv_gemm.gemm_backward(x[..., gi * cg:(gi + 1) * cg], w[gi * kg:(gi + 1) * kg],
                                       xp.ascontiguousarray(dy[..., gi * kg:(gi + 1) * kg]),
                                       self.pads, self.stride, dx_g, needs[1], self.chunks[gi])
                if dx is not None:
                    dx[..., gi * cg:(gi + 1) * cg] = dx_g
                if dw is not None:
                    dw[gi * kg:(gi + 1) * kg] = dw_g
        return dx, dw, db

    def backward_graph(self, dy):
        """The same three gradients by recorded ops (patch rows and matrix products)."""
        x, w = self.inputs[:2]
        return conv_gradients_graph(x, w, dy, self.pads, self.stride, (1, 1), self.groups, self.needs_grad)


# -- the public function ----------------------------------------------------------------------


def _shape_of(a) -> tuple[int, ...]:
    return tuple(a.shape) if hasattr(a, "shape") else tuple(backend.xp.shape(a))


def conv2d(x: Tensor, w: Tensor, b: Tensor | None = None, stride: int | tuple[int, int] = 1,
           padding: str | int | tuple = 0, groups: int = 1, algorithm: str = "im2col",
           epilogue=None, dilation: int | tuple[int, int] = 1) -> Tensor:
    """2-D convolution (cross-correlation) of NHWC images: v = x * w + b.

    x: (N, h, w, c_in). w: (K, f_h, f_w, c_in / groups). b: (K,) or None. (Arrays are
    accepted too, as constants.)
    stride: s or (s_h, s_w). padding: ``'valid'`` (none); ``'same'`` (TF/Keras: output
    ceil(h / s), so for stride 1 the input size, the extra pixel of an even kernel's padding
    going bottom/right); p or (p_h, p_w) (symmetric zeros); ((top, bottom), (left, right)).
    Output: (N, floor((h + 2p - f_h) / s_h) + 1, floor((w + 2p - f_w) / s_w) + 1, K).
    groups: channels split into ``groups`` independent convolutions; ``groups = c_in`` is
    depthwise (K = c_in times a channel multiplier).
    algorithm: ``'im2col'`` (patch matrix + GEMM) or ``'fft'`` (convolution theorem).
    dilation: d or (d_h, d_w), the spacing of the kernel's taps (atrous convolution):
    v[n, y, x, k] = b[k] + sum_{i, j, c} xpad[n, y + d_h i, x + d_w j, c] w[k, i, j, c], a
    kernel of extent d (f - 1) + 1 in place of f in the output size and in 'same':
    floor((h + 2p - d_h (f_h - 1) - 1) / s_h) + 1 rows. Any stride (as PyTorch); with both a
    stride and a dilation the windows are gathered as patch rows
    (:func:`lamina.functional.conv_dilated.strided_dilated_conv2d`), whatever ``algorithm``.

    epilogue: for inference only (no gradient), a function applied in place to each finished
    chunk of v while it is in the cache, such as a batch norm's multiply-add and a ReLU
    (:mod:`lamina.nn.fusion`); it saves those layers' passes over the whole output.

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
    dilation = pair(dilation, "dilation", op)
    if min(dilation) < 1:
        raise ValueError(f"{op}: dilation must be positive, got {dilation}")
    eh, ew = dilation[0] * (fh - 1) + 1, dilation[1] * (fw - 1) + 1
    pads = conv_pads(padding, (h, wd), (eh, ew), stride, op)
    hp, wp = h + pads[0] + pads[1], wd + pads[2] + pads[3]
    if eh > hp or ew > wp or min(fh, fw) < 1:
        extent = f" (dilated by {dilation}: {eh}x{ew})" if dilation != (1, 1) else ""
        raise ShapeError(f"{op}: kernel {fh}x{fw}{extent} (weights of shape {ws}) is larger than the padded "
                         f"input {hp}x{wp} (x of shape {xs}, padding {padding!r})")
    inputs = (x, w) if b is None else (x, w, b)
    if epilogue is not None:
        if graph.is_grad_enabled() and any(getattr(a, "requires_grad", False) for a in inputs):
            raise ValueError(f"{op}: an epilogue is for inference only; run it under lamina.no_grad()")
        if algorithm != "im2col":
            raise ValueError(f"{op}: an epilogue needs algorithm='im2col', got {algorithm!r}")
        kind, params = Conv2d, {"keep": False, "epilogue": epilogue}
    elif algorithm == "im2col":
        keep = conv_gemm.KEEP_PATCHES and graph.is_grad_enabled() and bool(getattr(w, "requires_grad", False))
        kind, params = Conv2d, {"keep": keep}
    elif algorithm == "fft":
        kind, params = Conv2dFFT, {}
    else:
        raise ValueError(f"{op}: algorithm must be 'im2col' or 'fft', got {algorithm!r}")
    if dilation != (1, 1) and stride != (1, 1):
        out_hw = (out_size(hp, eh, stride[0], 0, 0), out_size(wp, ew, stride[1], 0, 0))
        v = strided_dilated_conv2d(x, w, b, pads, stride, dilation, groups, out_hw)
        if epilogue is not None:
            epilogue(v.data)
        return v
    if dilation != (1, 1):
        return DilatedConv2d.apply(*inputs, pads=pads, dilation=dilation, groups=groups, inner=kind,
                                   inner_params=params)
    return kind.apply(*inputs, stride=stride, pads=pads, groups=groups, **params)
