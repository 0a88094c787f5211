"""Deformable convolution (DCNv1, Dai et al. 2017) and its modulated form (DCNv2, Zhu et al. 2019), NHWC.

Each kernel tap (i, j) of output pixel (y, x) reads the input at a learned fractional position

    r = y s_h - p_h + i d_h + dy[n, y, x, g, i, j],    q = x s_w - p_w + j d_w + dx[n, y, x, g, i, j]

by bilinear interpolation of its four neighbouring pixels, neighbours outside the image counting
as 0 (so the sample is 0 whenever (r, q) lies outside (-1, H) x (-1, W), and near the border each
corner is weighted on its own: torchvision's convention), scales it by the modulation
m[n, y, x, g, i, j] (1 without a mask) and convolves as Conv2D would:

    v[n, y, x, k] = b[k] + sum_{i, j, c} m[.., g(c), i, j] x~[n, r, q, c] w[k, i, j, c]

The C input channels form ``offset_groups`` = G consecutive groups of C / G, each with its own
offsets and masks. Layout (torchvision's NCHW channel order, moved to the last axis):

    offset (N, H_out, W_out, 2 G f_h f_w): channel 2 (g f_h f_w + i f_w + j) is dy (down the rows),
        channel 2 (g f_h f_w + i f_w + j) + 1 is dx (along the columns), for group g and tap (i, j);
    mask (N, H_out, W_out, G f_h f_w): channel g f_h f_w + i f_w + j.

As im2col, the samples form a patch matrix V of N H_out W_out rows and f_h f_w C columns (ordered
as the weights (K, f_h, f_w, C) flatten) and v = V W^T + b is one matrix product. The samples of
group g are V_g = S_g x_g, S_g a sparse matrix with four entries a row (the bilinear weights
times the mask) and x_g the group's channels as (N H W, C / G) rows. Backward, from dJ/dv:

    dJ/dW = dJ/dv^T V,   dJ/dV = dJ/dv W,   dJ/dx_g = S_g^T dJ/dV_g,
    dJ/dm = sum over c of dJ/dV (B_g x_g),   dJ/d(dy) = m sum over c of dJ/dV (B^r_g x_g),

B_g holding the bare bilinear weights and B^r_g their derivatives in r (dx likewise, in q); at a
whole-pixel position these are the derivatives from the right, and on the edges r = -1 or q = -1
they are 0, as torchvision's.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Function, Tensor
from lamina.errors import ShapeError
from lamina.functional.grid_sample import SamplingMatrix, _bilinear_taps
from lamina.functional.im2col import pair
from lamina.functional.segment import take_rows
from lamina.functional.shape import concat
from lamina.parallel import matmul

__all__ = ["DeformConv2d", "deform_conv2d"]


def _tap_positions(out_hw, kernel, stride, padding, dilation):
    """Rows r and columns q (each (H_out, W_out, f_h f_w)) every tap reads before its offset."""
    xp = backend.xp
    (ho, wo), (fh, fw) = out_hw, kernel
    rows = xp.arange(ho)[:, None] * stride[0] - padding[0] + xp.arange(fh)[None, :] * dilation[0]
    cols = xp.arange(wo)[:, None] * stride[1] - padding[1] + xp.arange(fw)[None, :] * dilation[1]
    shape = (ho, wo, fh, fw)
    r = xp.broadcast_to(rows[:, None, :, None], shape).reshape(ho, wo, fh * fw)
    q = xp.broadcast_to(cols[None, :, None, :], shape).reshape(ho, wo, fh * fw)
    return r, q


class DeformConv2d(Function):
    """v = V W^T + b with V the deformed patch matrix (module docstring). Inputs x, offset,
    weight, then the mask when ``has_mask`` and the bias when ``has_bias``; hyperparameters
    ``stride``, ``padding``, ``dilation`` (pairs) and ``groups`` (the offset groups)."""

    def _split(self, arrays):
        x, offset, weight, rest = arrays[0], arrays[1], arrays[2], list(arrays[3:])
        mask = rest.pop(0) if self.has_mask else None
        bias = rest.pop(0) if self.has_bias else None
        return x, offset, weight, mask, bias

    def forward(self, *arrays):
        xp = backend.xp
        x, offset, weight, mask, bias = self._split(arrays)
        n, h, w, c = x.shape
        kout, fh, fw, _ = weight.shape
        _, ho, wo, _ = offset.shape
        g_count, taps = self.groups, fh * fw
        cg = c // g_count
        dtype = xp.result_type(x, offset, weight)
        r0, q0 = _tap_positions((ho, wo), (fh, fw), self.stride, self.padding, self.dilation)
        pairs = offset.reshape(n, ho, wo, g_count, taps, 2)
        rows = r0[None, :, :, None, :] + pairs[..., 0]              # (N, H_out, W_out, G, taps)
        cols = q0[None, :, :, None, :] + pairs[..., 1]
        self.mask = None if mask is None else mask.reshape(n, ho, wo, g_count, taps)
        first_pixel = xp.repeat(xp.arange(n, dtype=xp.intp) * (h * w), ho * wo * taps)
        patches = xp.empty((n * ho * wo, taps, c), dtype=dtype)
        self.samplers = []
        for g in range(g_count):
            r, q = rows[..., g, :].reshape(-1).astype(dtype), cols[..., g, :].reshape(-1).astype(dtype)
            index, bare, d_q, d_r, _ = _bilinear_taps(q, r, h, w, first_pixel)
            # the slopes too are 0 on the edges r = -1, q = -1 of the open range (torchvision's)
            in_range = _in_range(r, q, h, w)[:, None]
            bare, d_r, d_q = bare * in_range, d_r * in_range, d_q * in_range
            values = bare if mask is None else bare * self.mask[..., g, :].reshape(-1, 1)
            sampler = SamplingMatrix(index, values, n * h * w)
            x_g = x[..., g * cg:(g + 1) * cg].reshape(n * h * w, cg).astype(dtype, copy=False)
            patches[:, :, g * cg:(g + 1) * cg] = sampler.times(x_g).reshape(n * ho * wo, taps, cg)
            self.samplers.append((sampler, bare, d_r, d_q))
        self.patches = patches.reshape(n * ho * wo, taps * c)
        self.x, self.weight_matrix = x, weight.reshape(kout, taps * c).astype(dtype, copy=False)
        self.offset_shape = offset.shape
        out = matmul(self.patches, xp.ascontiguousarray(self.weight_matrix.T))
        if bias is not None:
            out += bias
        return out.reshape(n, ho, wo, kout)

    def backward(self, dy):
        xp = backend.xp
        needs = dict(zip(("x", "offset", "weight"), self.needs_grad[:3]))
        extra = list(self.needs_grad[3:])
        needs["mask"] = extra.pop(0) if self.has_mask else False
        needs["bias"] = extra.pop(0) if self.has_bias else False
        x = self.x
        n, h, w, c = x.shape
        _, ho, wo, _ = self.offset_shape
        g_count, cg = self.groups, c // self.groups
        taps = self.weight_matrix.shape[1] // c
        rows_out = xp.ascontiguousarray(dy).reshape(n * ho * wo, -1)
        grads = {"x": None, "offset": None, "mask": None, "weight": None}
        if needs["weight"]:
            grads["weight"] = matmul(xp.ascontiguousarray(rows_out.T), self.patches).reshape(self.inputs[2].shape)
        grads["bias"] = rows_out.sum(axis=0) if needs["bias"] else None
        if needs["x"] or needs["offset"] or needs["mask"]:
            d_patches = matmul(rows_out, self.weight_matrix).reshape(n * ho * wo * taps, c)
            dx = xp.zeros(x.shape, dtype=d_patches.dtype) if needs["x"] else None
            d_offset = xp.empty((n, ho, wo, g_count, taps, 2), dtype=d_patches.dtype) if needs["offset"] else None
            d_mask = xp.empty((n, ho, wo, g_count, taps), dtype=d_patches.dtype) if needs["mask"] else None
            for g, (sampler, bare, d_r, d_q) in enumerate(self.samplers):
                d_g = d_patches[:, g * cg:(g + 1) * cg]
                if dx is not None:
                    dx[..., g * cg:(g + 1) * cg] = sampler.transpose_times(d_g).reshape(n, h, w, cg)
                if d_offset is None and d_mask is None:
                    continue
                # dJ/dV times each of the four corner pixels: (P, 4), shared by the mask and offset gradients
                x_g = x[..., g * cg:(g + 1) * cg].reshape(n * h * w, cg)
                per_corner = xp.einsum("pc,ptc->pt", d_g, x_g[sampler.index], optimize=False)
                if d_mask is not None:
                    d_mask[..., g, :] = (per_corner * bare).sum(axis=1).reshape(n, ho, wo, taps)
                if d_offset is not None:
                    if self.mask is not None:
                        per_corner *= self.mask[..., g, :].reshape(-1, 1)
                    for axis, slopes in ((0, d_r), (1, d_q)):
                        d_offset[..., g, :, axis] = (per_corner * slopes).sum(axis=1).reshape(n, ho, wo, taps)
            grads["x"] = dx
            grads["offset"] = None if d_offset is None else d_offset.reshape(self.offset_shape)
            grads["mask"] = None if d_mask is None else d_mask.reshape(n, ho, wo, g_count * taps)
        order = ["x", "offset", "weight"] + (["mask"] if self.has_mask else []) + (["bias"] if self.has_bias else [])
        return tuple(_cast_like(grads[name], t) for name, t in zip(order, self.inputs))

    def composite(self, *tensors) -> Tensor:
        """The same values from primitive ops (row gathers, products, one matmul): the
        differentiable backward of the fused op."""
        x, offset, weight, mask, bias = self._split(tensors)
        return _composite(x, offset, weight, mask, bias, self.stride, self.padding, self.dilation, self.groups)

    backward_graph = Function.composite_backward_graph


def _in_range(r, q, h: int, w: int):
    """1 where the position (r, q) lies in the open range (-1, H) x (-1, W), else 0."""
    return ((r > -1) & (r < h) & (q > -1) & (q < w)).astype(r.dtype)


def _cast_like(grad, t):
    return grad if grad is None or grad.dtype == t.dtype else grad.astype(t.dtype)


def _composite(x, offset, weight, mask, bias, stride, padding, dilation, g_count) -> Tensor:
    """deform_conv2d written with recorded ops: per group, the four corner rows of x gathered
    (``take_rows``) and weighted by bilinear weights that are tensors of the offsets."""
    xp = backend.xp
    n, h, w, c = x.shape
    kout, fh, fw, _ = weight.shape
    _, ho, wo, _ = offset.shape
    taps, cg = fh * fw, c // g_count
    r0, q0 = _tap_positions((ho, wo), (fh, fw), stride, padding, dilation)
    pairs = offset.reshape(n, ho, wo, g_count, taps, 2)
    first_pixel = xp.repeat(xp.arange(n, dtype=xp.intp) * (h * w), ho * wo * taps)
    pieces = []
    for g in range(g_count):
        r = pairs[:, :, :, g, :, 0] + r0[None].astype(offset.dtype)
        q = pairs[:, :, :, g, :, 1] + q0[None].astype(offset.dtype)
        r, q = r.reshape(-1), q.reshape(-1)
        r_low, q_low = xp.floor(r.data), xp.floor(q.data)
        fr, fq = r - r_low, q - q_low
        x_g = x[..., g * cg:(g + 1) * cg].reshape(n * h * w, cg)
        in_range = _in_range(r.data, q.data, h, w)
        sample = None
        for row, w_r in ((r_low, 1 - fr), (r_low + 1, fr)):
            for col, w_q in ((q_low, 1 - fq), (q_low + 1, fq)):
                inside = ((row >= 0) & (row < h) & (col >= 0) & (col < w)).astype(x.dtype) * in_range
                pixel = xp.clip(row, 0, h - 1).astype(xp.intp) * w + xp.clip(col, 0, w - 1).astype(xp.intp)
                index = first_pixel + pixel
                term = (w_r * w_q * inside).reshape(-1, 1) * take_rows(x_g, index)
                sample = term if sample is None else sample + term
        if mask is not None:
            sample = sample * mask.reshape(n, ho, wo, g_count, taps)[:, :, :, g, :].reshape(-1, 1)
        pieces.append(sample.reshape(n * ho * wo, taps, cg))
    patches = (pieces[0] if g_count == 1 else concat(pieces, axis=2)).reshape(n * ho * wo, taps * c)
    out = patches @ weight.reshape(kout, taps * c).T
    if bias is not None:
        out = out + bias
    return out.reshape(n, ho, wo, kout)


def _shape_of(a) -> tuple[int, ...]:
    return tuple(a.shape) if hasattr(a, "shape") else tuple(backend.xp.shape(a))


def _check(xs, offs, ws, mask_shape, bias_shape, stride, padding, dilation, groups):
    """The output size (H_out, W_out), or an error naming what does not fit."""
    op = "deform_conv2d"
    if len(xs) != 4:
        raise ShapeError(f"{op}: expected x of shape (N, H, W, C) (4-D, NHWC), got shape {xs}")
    if len(ws) != 4:
        raise ShapeError(f"{op}: expected weights of shape (K, f_h, f_w, C) (4-D), got shape {ws}")
    n, h, w, c = xs
    kout, fh, fw, cw = ws
    if cw != c:
        raise ShapeError(f"{op}: weights of shape {ws} expect C={cw} input channels, x of shape {xs} has {c}")
    if isinstance(groups, bool) or not isinstance(groups, int) or groups < 1 or c % groups:
        raise ValueError(f"{op}: offset_groups must be a positive int dividing C={c} (x of shape {xs}), "
                         f"got {groups!r}")
    if min(stride) < 1 or min(dilation) < 1 or min(padding) < 0:
        raise ValueError(f"{op}: stride and dilation must be positive and padding non-negative, got stride "
                         f"{stride}, padding {padding}, dilation {dilation}")
    ho = (h + 2 * padding[0] - dilation[0] * (fh - 1) - 1) // stride[0] + 1
    wo = (w + 2 * padding[1] - dilation[1] * (fw - 1) - 1) // stride[1] + 1
    if ho < 1 or wo < 1:
        raise ShapeError(f"{op}: the {fh}x{fw} kernel (dilation {dilation}) is larger than the padded input "
                         f"(x of shape {xs}, padding {padding})")
    want = (n, ho, wo, 2 * groups * fh * fw)
    if offs != want:
        raise ShapeError(f"{op}: expected offsets of shape {want} (N, H_out, W_out, 2 offset_groups f_h f_w) "
                         f"for x of shape {xs} and weights of shape {ws}, got shape {offs}")
    if mask_shape is not None and mask_shape != want[:3] + (groups * fh * fw,):
        raise ShapeError(f"{op}: expected a mask of shape {want[:3] + (groups * fh * fw,)} "
                         f"(N, H_out, W_out, offset_groups f_h f_w), got shape {mask_shape}")
    if bias_shape is not None and bias_shape != (kout,):
        raise ShapeError(f"{op}: expected a bias of shape ({kout},) for weights of shape {ws}, got shape "
                         f"{bias_shape}")


def deform_conv2d(x: Tensor, offset: Tensor, weight: Tensor, bias: Tensor | None = None,
                  stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0,
                  dilation: int | tuple[int, int] = 1, mask: Tensor | None = None,
                  offset_groups: int = 1) -> Tensor:
    """Deformable 2-D convolution of NHWC images (torchvision.ops.deform_conv2d's semantics).

    x: (N, H, W, C). offset: (N, H_out, W_out, 2 offset_groups f_h f_w), for group g and tap
    (i, j) the pair (dy, dx) in channels 2 (g f_h f_w + i f_w + j) and the next.
    weight: (K, f_h, f_w, C). bias: (K,) or None. mask (DCNv2 modulation, usually a sigmoid):
    (N, H_out, W_out, offset_groups f_h f_w), channel g f_h f_w + i f_w + j; None means 1.
    stride, padding (zeros, symmetric), dilation: an int or a pair. Output (N, H_out, W_out, K),
    H_out = floor((H + 2 p_h - d_h (f_h - 1) - 1) / s_h) + 1 (as Conv2D).

    Tap (i, j) of output (y, x) samples x at (y s_h - p_h + i d_h + dy, x s_w - p_w + j d_w + dx)
    bilinearly, pixels outside the image being 0; with zero offsets and no mask this is conv2d.
    """
    tensors = [t for t in (x, offset, weight, mask, bias) if t is not None]
    stride, padding, dilation = (pair(v, name, "deform_conv2d") for v, name in
                                 ((stride, "stride"), (padding, "padding"), (dilation, "dilation")))
    _check(_shape_of(x), _shape_of(offset), _shape_of(weight), None if mask is None else _shape_of(mask),
           None if bias is None else _shape_of(bias), stride, padding, dilation, offset_groups)
    return DeformConv2d.apply(*tensors, stride=stride, padding=padding, dilation=dilation, groups=offset_groups,
                              has_mask=mask is not None, has_bias=bias is not None)
