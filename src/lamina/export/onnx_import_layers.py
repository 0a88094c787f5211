"""ONNX's image operators on NCHW values, run by lamina's NHWC kernels
(:mod:`lamina.export.onnx_import`): Conv, ConvTranspose, the poolings, the normalizations
and Resize. One-dimensional (N, C, L) inputs run as images of height 1; volumes
(N, C, D, H, W), dilated poolings and transposed convolutions and MaxPool's Indices output
are in :mod:`lamina.export.onnx_import_volumes`.

Cost of the layout: a convolution reads its input channels-last; when that input comes from
another convolution, pooling, normalization or elementwise op it already is (see
:class:`~lamina.export.onnx_import_values.Permuted`), otherwise one transpose is made. The
output is handed on untransposed; it is transposed to NCHW only for an op that needs the
logical layout (Reshape, Flatten, MatMul, Softmax...), once.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import functional as F
from lamina.errors import ShapeError
from lamina.export.onnx_import_values import (
    Node,
    Permuted,
    array,
    channels_last,
    constant,
    from_channels_last,
    held,
    logical,
    register_onnx_op,
)
from lamina.export.onnx_import_volumes import (
    conv3d_node,
    conv_transpose_nd,
    explicit_pads,
    per_axis,
    pool_nd,
    split_pads,
)
from lamina.nn.layer_functions import batch_norm


def _spatial(node: Node, x, what: str = "input"):
    """x as an NHWC tensor, and whether it was 1-D: (N, C, L) runs as (N, 1, L, C)."""
    rank = held(x).ndim
    if rank == 4:
        return channels_last(x), False
    if rank == 3:
        t = logical(x)
        return F.reshape(F.transpose(t, (0, 2, 1)), (t.shape[0], 1, t.shape[2], t.shape[1])), True
    raise ShapeError(f"{node.where()}: expected an {what} of shape (N, C, L), (N, C, H, W) or (N, C, D, H, W), "
                     f"got shape {held(x).shape}")


def _back(y, one_d: bool):
    """An NHWC result as the ONNX value: (N, C, H, W), or (N, C, L) for a 1-D input."""
    if one_d:
        return Permuted(F.reshape(y, (y.shape[0], y.shape[2], y.shape[3])), (0, 2, 1))
    return from_channels_last(y)


def _padding(node: Node, sizes, kernel, strides, dilations) -> list[tuple[int, int]]:
    """(begin, end) padding per spatial axis: explicit pads, or auto_pad's SAME_UPPER /
    SAME_LOWER (output ceil(n / s), the odd pixel at the end / the start) or VALID."""
    dims = len(sizes)
    mode = node.attr("auto_pad", "NOTSET")
    if mode in ("SAME_UPPER", "SAME_LOWER"):
        return split_pads([max((math.ceil(n / s) - 1) * s + (f - 1) * d + 1 - n, 0)
                           for n, f, s, d in zip(sizes, kernel, strides, dilations)], mode)
    return explicit_pads(node, dims)


def _as_2d(values: list, one_d: bool, filler) -> list:
    return [filler, *values] if one_d else values


# -- convolutions ---------------------------------------------------------------------------------
@register_onnx_op("Conv", layout_aware=True)
def _conv(node: Node, x, w, b=None):
    """y = conv(x, w) + b with groups, strides, dilations and padding (explicit or auto_pad);
    ONNX's weights (K, C / g, kh, kw) are lamina's (K, kh, kw, C / g) transposed."""
    if held(x).ndim == 5:
        sizes, kernel = held(x).shape[2:], logical(w).shape[2:]
        pads = _padding(node, sizes, kernel, per_axis(node, "strides", 1, 3), per_axis(node, "dilations", 1, 3))
        return conv3d_node(node, x, w, b, pads)
    xt, one_d = _spatial(node, x)
    w = logical(w)
    if one_d:
        w = F.reshape(w, (w.shape[0], w.shape[1], 1, w.shape[2]))
    kernel = list(w.shape[2:])
    dims = 1 if one_d else 2
    strides = _as_2d(per_axis(node, "strides", 1, dims), one_d, 1)
    dilations = _as_2d(per_axis(node, "dilations", 1, dims), one_d, 1)
    pads = _as_2d(_padding(node, xt.shape[2:3] if one_d else xt.shape[1:3], kernel[-dims:], strides[-dims:],
                           dilations[-dims:]), one_d, (0, 0))
    kernel_last = F.transpose(w, (0, 2, 3, 1))
    bias = logical(b) if b is not None else None
    if dilations != [1, 1] and strides != [1, 1]:
        # lamina's dilated kernel takes stride 1: every s-th output of the stride-1 result
        y = F.conv2d(xt, kernel_last, bias, 1, tuple(pads), node.attr("group", 1), dilation=tuple(dilations))
        y = F.getitem(y, (slice(None), slice(None, None, strides[0]), slice(None, None, strides[1])))
    else:
        y = F.conv2d(xt, kernel_last, bias, tuple(strides), tuple(pads), node.attr("group", 1),
                     dilation=tuple(dilations))
    return _back(y, one_d)


@register_onnx_op("ConvTranspose", layout_aware=True)
def _conv_transpose(node: Node, x, w, b=None):
    """The adjoint of a convolution: the full output ((n - 1) s + f per axis) of lamina's
    transposed convolution, grown by output_padding at the end and cropped by the pads
    (from ``output_shape`` when given: total = s (n - 1) + output_padding + f - out, split
    as auto_pad says). Groups run one by one."""
    dims = held(x).ndim - 2
    if dims == 3 or per_axis(node, "dilations", 1, dims) != [1] * dims:
        return conv_transpose_nd(node, x, w, b)
    xt, one_d = _spatial(node, x)
    w = logical(w)
    if one_d:
        w = F.reshape(w, (w.shape[0], w.shape[1], 1, w.shape[2]))
    strides = _as_2d(per_axis(node, "strides", 1, dims), one_d, 1)
    extra = _as_2d(per_axis(node, "output_padding", 0, dims), one_d, 0)
    sizes, kernel = list(xt.shape[1:3]), list(w.shape[2:])
    full = [(n - 1) * s + f for n, s, f in zip(sizes, strides, kernel)]
    pads = _transpose_pads(node, sizes, full, extra, one_d)
    groups = node.attr("group", 1)
    kernel_last = F.transpose(w, (0, 2, 3, 1))                      # (C_in, kh, kw, C_out / g)
    step_in, outs = xt.shape[3] // groups, []
    for g in range(groups):
        part = slice(g * step_in, (g + 1) * step_in)
        xg = xt if groups == 1 else F.getitem(xt, (Ellipsis, part))
        wg = kernel_last if groups == 1 else F.getitem(kernel_last, (part,))
        outs.append(F.conv_transpose2d(xg, wg, None, tuple(strides), "valid"))
    y = outs[0] if groups == 1 else F.concat(outs, axis=3)
    if any(extra):
        y = F.pad(y, ((0, 0), (0, extra[0]), (0, extra[1]), (0, 0)))
    index = (slice(None),) + tuple(slice(p0, n + e - p1) for (p0, p1), n, e in zip(pads, full, extra))
    if any(p0 or p1 for p0, p1 in pads):
        y = F.getitem(y, index)
    if b is not None:
        y = y + logical(b)
    return _back(y, one_d)


def _transpose_pads(node: Node, sizes, full, extra, one_d: bool) -> list[tuple[int, int]]:
    """(begin, end) crop per axis of the full transposed-convolution output."""
    dims = 1 if one_d else 2
    wanted = node.attr("output_shape")
    mode = node.attr("auto_pad", "NOTSET")
    if not wanted and mode in ("SAME_UPPER", "SAME_LOWER"):
        strides = _as_2d(per_axis(node, "strides", 1, dims), one_d, 1)
        wanted = [n * s for n, s in zip(sizes, strides)][-dims:]
    if wanted:
        return split_pads([n + e - out for n, e, out in zip(full, extra, _as_2d(list(wanted[-dims:]), one_d, 1))],
                          mode)
    return _as_2d(explicit_pads(node, dims), one_d, (0, 0))


# -- pooling ----------------------------------------------------------------------------------------
def _pool_geometry(node: Node, sizes, kernel, strides, pads) -> tuple[list, list]:
    """Output sizes and the (begin, end) padding actually read per axis: the pads plus, in
    ceil mode, what the last window reaches past them (a window must start inside the input
    or its leading padding)."""
    ceil = bool(node.attr("ceil_mode", 0))
    outs, reads = [], []
    for n, f, s, (p0, p1) in zip(sizes, kernel, strides, pads):
        span = n + p0 + p1 - f
        if span < 0:
            raise ShapeError(f"{node.where()}: kernel {kernel} is larger than the padded input {sizes}")
        out = -(-span // s) + 1 if ceil else span // s + 1
        if ceil and (out - 1) * s >= n + p0:
            out -= 1
        outs.append(out)
        reads.append((p0, max((out - 1) * s + f - n - p0, 0)))
    return outs, reads


def _volume_geometry(node: Node, x) -> tuple:
    """(kernel, strides, dilations, sizes, outs, reads, pads) per spatial axis, for any rank."""
    sizes = list(held(x).shape[2:])
    dims = len(sizes)
    kernel = list(node.attr("kernel_shape"))
    strides = per_axis(node, "strides", 1, dims)
    dilations = per_axis(node, "dilations", 1, dims)
    pads = _padding(node, sizes, kernel, strides, dilations)
    extents = [d * (f - 1) + 1 for f, d in zip(kernel, dilations)]
    outs, reads = _pool_geometry(node, sizes, extents, strides, pads)
    return kernel, strides, dilations, sizes, outs, reads, pads


def _needs_volume(node: Node, x) -> bool:
    dims = held(x).ndim - 2
    return dims == 3 or per_axis(node, "dilations", 1, dims) != [1] * dims


def _pool_input(node: Node, x):
    xt, one_d = _spatial(node, x)
    dims = 1 if one_d else 2
    kernel = _as_2d(list(node.attr("kernel_shape")), one_d, 1)
    strides = _as_2d(per_axis(node, "strides", 1, dims), one_d, 1)
    sizes = list(xt.shape[1:3])
    pads = _as_2d(_padding(node, sizes[-dims:], kernel[-dims:], strides[-dims:], [1] * dims), one_d, (0, 0))
    outs, reads = _pool_geometry(node, sizes, kernel, strides, pads)
    return xt, one_d, kernel, strides, sizes, outs, reads, pads


@register_onnx_op("MaxPool", layout_aware=True)
def _max_pool(node: Node, x):
    """The maximum of each window; padding reads as -inf. Indices (a second output): ONNX's
    flat NCHW position of each maximum."""
    if node.outputs > 1 or _needs_volume(node, x):
        return pool_nd(node, x, _volume_geometry(node, x), take_max=True)
    xt, one_d, kernel, strides, _, _, reads, _ = _pool_input(node, x)
    if any(a or b for a, b in reads):
        xt = F.pad(xt, ((0, 0), *reads, (0, 0)), value=-np.inf)
    return _back(F.max_pool2d(xt, tuple(kernel), tuple(strides)), one_d)


@register_onnx_op("AveragePool", layout_aware=True)
def _average_pool(node: Node, x):
    """Window sums over the number of elements counted: those of the input, or with
    count_include_pad also the padding (not the ceil-mode overhang past it)."""
    if _needs_volume(node, x):
        return pool_nd(node, x, _volume_geometry(node, x), take_max=False)
    xt, one_d, kernel, strides, sizes, outs, reads, pads = _pool_input(node, x)
    if any(a or b for a, b in reads):
        xt = F.pad(xt, ((0, 0), *reads, (0, 0)))
    y = F.avg_pool2d(xt, tuple(kernel), tuple(strides))
    include = bool(node.attr("count_include_pad", 0))
    counts = [_window_counts(o, n, f, s, p, include) for o, n, f, s, p in zip(outs, sizes, kernel, strides, pads)]
    divisor = np.outer(*counts)
    if np.any(divisor != kernel[0] * kernel[1]):
        scale = (kernel[0] * kernel[1] / divisor).astype(xt.dtype)
        y = y * constant(scale[None, :, :, None])
    return _back(y, one_d)


def _window_counts(outs: int, n: int, f: int, s: int, pads: tuple[int, int], include_pad: bool) -> np.ndarray:
    """How many elements each window along one axis counts: those in [0, n), or in
    [-p_begin, n + p_end) with the padding."""
    low, high = (-pads[0], n + pads[1]) if include_pad else (0, n)
    starts = np.arange(outs) * s - pads[0]
    return (np.minimum(starts + f, high) - np.maximum(starts, low)).astype(np.float64)


def _global(reduce):
    def run(node: Node, x):
        """The mean / maximum over every spatial axis, kept as axes of size 1."""
        v = held(x)
        axes = tuple(v.perm[2:])
        return Permuted(reduce(v.tensor, axis=axes, keepdims=True), v.perm)
    return run


register_onnx_op("GlobalAveragePool", _global(F.mean), layout_aware=True)
register_onnx_op("GlobalMaxPool", _global(F.max), layout_aware=True)


# -- normalization ------------------------------------------------------------------------------------
def _channel_vector(v: Permuted, vector):
    """A per-channel (C,) vector shaped to broadcast along the held tensor's channel axis."""
    shape = [1] * v.ndim
    shape[v.perm[1]] = -1
    return F.reshape(logical(vector), tuple(shape))


@register_onnx_op("BatchNormalization", layout_aware=True)
def _batch_norm(node: Node, x, scale, bias, mean, var):
    """Inference form: y = scale (x - mean) / sqrt(var + eps) + bias, per channel (axis 1);
    lamina's batch-norm op when the channels are the held tensor's last axis (the output of
    a convolution), elementwise ops otherwise."""
    if node.attr("training_mode", 0):
        raise NotImplementedError(f"{node.where()}: training_mode=1 is not supported (inference form only)")
    v = held(x)
    eps = node.attr("epsilon", 1e-5)
    if v.ndim > 2 and v.perm[1] == v.ndim - 1 and v.tensor.dtype.kind == "f":
        y = batch_norm(v.tensor, array(mean), array(var), logical(scale), logical(bias), training=False, eps=eps)
        return Permuted(y, v.perm)
    factor = _channel_vector(v, scale) / F.sqrt(_channel_vector(v, var) + eps)
    y = (v.tensor - _channel_vector(v, mean)) * factor + _channel_vector(v, bias)
    return Permuted(y, v.perm)


@register_onnx_op("InstanceNormalization", layout_aware=True)
def _instance_norm(node: Node, x, scale, bias):
    """y = scale (x - mu) / sqrt(sigma^2 + eps) + bias, mu and the biased sigma^2 over each
    sample's and channel's positions."""
    v = held(x)
    axes = tuple(v.perm[2:])
    centred = v.tensor - F.mean(v.tensor, axis=axes, keepdims=True)
    variance = F.mean(centred * centred, axis=axes, keepdims=True)
    y = centred / F.sqrt(variance + node.attr("epsilon", 1e-5))
    return Permuted(y * _channel_vector(v, scale) + _channel_vector(v, bias), v.perm)


@register_onnx_op("GroupNormalization")
def _group_norm(node: Node, x, scale, bias):
    """y = scale (x - mu) / sqrt(sigma^2 + eps) + bias, mu and the biased sigma^2 over each
    sample's group of C / G channels and all its positions; scale and bias per channel
    (opset 21) or per group (opset 18)."""
    x = logical(x)
    groups = node.attr("num_groups")
    n, c = x.shape[:2]
    grouped = F.reshape(x, (n, groups, -1))
    centred = grouped - F.mean(grouped, axis=2, keepdims=True)
    variance = F.mean(centred * centred, axis=2, keepdims=True)
    y = F.reshape(centred / F.sqrt(variance + node.attr("epsilon", 1e-5)), tuple(x.shape))
    scale, bias = logical(scale), logical(bias)
    if scale.shape[0] != c:                 # per group: each value for its C / G channels
        per_channel = np.repeat(np.arange(groups), c // groups)
        scale, bias = F.index_select(scale, 0, per_channel), F.index_select(bias, 0, per_channel)
    shape = (c,) + (1,) * (x.ndim - 2)
    return y * F.reshape(scale, shape) + F.reshape(bias, shape)


@register_onnx_op("LayerNormalization")
def _layer_norm(node: Node, x, scale, bias=None):
    """y = scale (x - mu) / sqrt(sigma^2 + eps) + bias over the axes from ``axis`` on;
    optional outputs mu and 1 / sqrt(sigma^2 + eps)."""
    axis = node.attr("axis", -1)
    axis = axis + x.ndim if axis < 0 else axis
    axes = tuple(range(axis, x.ndim))
    mu = F.mean(x, axis=axes, keepdims=True)
    centred = x - mu
    inv_std = 1.0 / F.sqrt(F.mean(centred * centred, axis=axes, keepdims=True) + node.attr("epsilon", 1e-5))
    y = centred * inv_std * scale
    if bias is not None:
        y = y + bias
    return (y, mu, inv_std)[:node.outputs] if node.outputs > 1 else y


# -- Resize -----------------------------------------------------------------------------------------------
def _source_coordinates(node: Node, out: int, n: int, scale: float) -> np.ndarray:
    """Where each output index i samples the input, by coordinate_transformation_mode."""
    i = np.arange(out, dtype=np.float64)
    mode = node.attr("coordinate_transformation_mode", "half_pixel" if node.opset >= 11 else "asymmetric")
    if mode == "half_pixel":
        return (i + 0.5) / scale - 0.5
    if mode == "pytorch_half_pixel":
        return (i + 0.5) / scale - 0.5 if out > 1 else np.zeros(out)
    if mode == "align_corners":
        return i * (n - 1) / (out - 1) if out > 1 else np.zeros(out)
    if mode == "asymmetric":
        return i / scale
    if mode == "half_pixel_symmetric":
        adjustment = out / (scale * n)
        return n / 2 * (1 - adjustment) + (i + 0.5) / scale - 0.5
    raise NotImplementedError(f"{node.where()}: coordinate_transformation_mode {mode!r} is not supported")


def _nearest(node: Node, u: np.ndarray, scale: float) -> np.ndarray:
    if node.opset < 11:                     # before opset 11: down when enlarging, up when shrinking
        return np.floor(u) if scale >= 1 else np.ceil(u)
    mode = node.attr("nearest_mode", "round_prefer_floor")
    if mode == "floor":
        return np.floor(u)
    if mode == "ceil":
        return np.ceil(u)
    halfway = np.isclose(u - np.floor(u), 0.5)
    if mode == "round_prefer_ceil":
        return np.where(halfway, np.ceil(u), np.round(u))
    return np.where(halfway, np.floor(u), np.round(u))


def _cubic_weights(t: np.ndarray, a: float) -> np.ndarray:
    """Keys' cubic kernel at distances 1 + t, t, 1 - t, 2 - t (taps -1, 0, 1, 2)."""
    d = np.abs(np.stack([1 + t, t, 1 - t, 2 - t], axis=-1))
    near = ((a + 2) * d - (a + 3)) * d * d + 1
    far = ((a * d - 5 * a) * d + 8 * a) * d - 4 * a
    return np.where(d <= 1, near, np.where(d < 2, far, 0.0))


def resize_matrix(node: Node, out: int, n: int, scale: float) -> np.ndarray:
    """A (out, n) with y = A x along one axis, for Resize's mode and coordinate rules."""
    u = _source_coordinates(node, out, n, scale)
    mode = node.attr("mode", "nearest")
    a = np.zeros((out, n))
    rows = np.arange(out)
    if mode == "nearest":
        a[rows, np.clip(_nearest(node, u, scale), 0, n - 1).astype(np.int64)] = 1.0
    elif mode == "linear":
        u = np.clip(u, 0, n - 1)
        low = np.floor(u).astype(np.int64)
        high = np.minimum(low + 1, n - 1)
        np.add.at(a, (rows, low), 1 - (u - low))
        np.add.at(a, (rows, high), u - low)
    elif mode == "cubic":
        low = np.floor(u).astype(np.int64)
        weights = _cubic_weights(u - low, node.attr("cubic_coeff_a", -0.75))
        taps = low[:, None] + np.arange(-1, 3)
        if node.attr("exclude_outside", 0):
            weights = np.where((taps >= 0) & (taps < n), weights, 0.0)
            weights /= weights.sum(axis=1, keepdims=True)
        np.add.at(a, (np.repeat(rows, 4), np.clip(taps, 0, n - 1).reshape(-1)), weights.reshape(-1))
    else:
        raise NotImplementedError(f"{node.where()}: mode {mode!r} is not supported")
    return a


@register_onnx_op("Resize")
@register_onnx_op("Upsample")
def _resize(node: Node, x, roi=None, scales=None, sizes=None):
    """Each resized axis is a matrix product y = A x along it (:func:`resize_matrix`), so
    gradients flow to x. Before opset 11 (and in Upsample) the inputs are (X, scales)."""
    if node.opset < 11 or node.op_type == "Upsample":
        scales, roi = roi, None
    if node.attr("antialias", 0) or node.attr("keep_aspect_ratio_policy", "stretch") != "stretch":
        raise NotImplementedError(f"{node.where()}: antialias and keep_aspect_ratio_policy are not supported")
    axes = node.attr("axes") or list(range(x.ndim))
    axes = [a % x.ndim for a in axes]
    if sizes is not None and array(sizes).size:
        outs = [int(v) for v in array(sizes)]
        factors = [o / x.shape[a] for o, a in zip(outs, axes)]
    elif scales is not None and array(scales).size:
        factors = [float(v) for v in array(scales)]
        outs = [int(math.floor(x.shape[a] * f)) for a, f in zip(axes, factors)]
    else:
        raise ValueError(f"{node.where()}: needs scales or sizes")
    y = x
    for a, out, factor in zip(axes, outs, factors):
        n = x.shape[a]
        if out == n and factor == 1.0:
            continue
        matrix = constant(resize_matrix(node, out, n, factor).astype(x.dtype))
        if a == y.ndim - 1:
            y = F.matmul(y, F.transpose(matrix, (1, 0)))
        else:
            moved = F.swapaxes(y, a, y.ndim - 2)
            y = F.swapaxes(F.matmul(matrix, moved), a, y.ndim - 2)
    return y
