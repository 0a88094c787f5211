"""ONNX's convolutions and poolings for any number of spatial axes
(:mod:`lamina.export.onnx_import_layers` hands them over): 3-D Conv, ConvTranspose, MaxPool
and AveragePool on (N, C, D, H, W) values by lamina's NDHWC kernels, dilated ConvTranspose
and pooling, and MaxPool's Indices output.

A dilated pooling reads the taps of each window through strided slices,
x[o s + t d] for the window's offsets t = 0 .. f - 1 along each axis, and reduces the stack of
them (maximum, or sum over the elements counted). MaxPool's indices are ONNX's flat positions
in the NCHW input, ((n C + c) D + z) H W + y W + x (storage_order=1: the spatial axes in the
reverse order, y + x H for 2-D).
"""

from __future__ import annotations

import functools
import itertools

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.export.onnx_import_values import Node, Permuted, constant, held, logical, transposed


def channels_last(value) -> Tensor:
    """An (N, C, *spatial) value as the tensor (N, *spatial, C); free when held that way."""
    v = held(value)
    order = (0, *range(2, v.ndim), 1)
    return transposed(v.tensor, [v.perm[i] for i in order])


def from_channels_last(y: Tensor) -> Permuted:
    """A channels-last result (N, *spatial, C) as the ONNX value (N, C, *spatial), untransposed."""
    return Permuted(y, (0, y.ndim - 1, *range(1, y.ndim - 1)))


def per_axis(node: Node, key: str, default, dims: int) -> list[int]:
    value = node.attr(key)
    return list(value) if value else [default] * dims


def split_pads(totals, mode: str) -> list[tuple[int, int]]:
    """Each axis's total padding as (begin, end): the odd pixel at the end for auto_pad
    SAME_UPPER, at the start otherwise (SAME_LOWER, and a transposed convolution's
    output_shape)."""
    return [(t // 2, t - t // 2) if mode == "SAME_UPPER" else (t - t // 2, t // 2) for t in totals]


def explicit_pads(node: Node, dims: int) -> list[tuple[int, int]]:
    """(begin, end) per axis: none for auto_pad VALID, else the ``pads`` attribute (all the
    begins, then all the ends; zeros when absent)."""
    if node.attr("auto_pad", "NOTSET") == "VALID":
        return [(0, 0)] * dims
    pads = per_axis(node, "pads", 0, 2 * dims)
    return list(zip(pads[:dims], pads[dims:]))


def _kernel_last(w, dims: int):
    """ONNX weights (A, B, *kernel) as lamina's (A, *kernel, B)."""
    return F.transpose(logical(w), (0, *range(2, dims + 2), 1))


# -- convolutions -------------------------------------------------------------------------------------
def conv3d_node(node: Node, x, w, b, pads) -> Permuted:
    """Conv on (N, C, D, H, W): lamina's conv3d with ONNX's weights (K, C / g, kd, kh, kw)."""
    xt = channels_last(x)
    y = F.conv3d(xt, _kernel_last(w, 3), logical(b) if b is not None else None,
                 tuple(per_axis(node, "strides", 1, 3)), tuple(pads), node.attr("group", 1),
                 dilation=tuple(per_axis(node, "dilations", 1, 3)))
    return from_channels_last(y)


def conv_transpose_nd(node: Node, x, w, b=None) -> Permuted:
    """ConvTranspose for 1 to 3 spatial axes with dilations: the full output
    ((n - 1) s + d (f - 1) + 1 per axis) of lamina's transposed convolution, grown by
    output_padding at the end and cropped by the pads (from ``output_shape`` when given:
    total = full + output_padding - out, split as auto_pad says)."""
    xt = channels_last(x)
    dims = xt.ndim - 2
    strides = per_axis(node, "strides", 1, dims)
    dilations = per_axis(node, "dilations", 1, dims)
    extra = per_axis(node, "output_padding", 0, dims)
    weights = _kernel_last(w, dims)                                 # (C_in, *kernel, C_out / g)
    kernel = list(weights.shape[1:-1])
    sizes = list(xt.shape[1:-1])
    full = [(n - 1) * s + d * (f - 1) + 1 for n, s, d, f in zip(sizes, strides, dilations, kernel)]
    groups = node.attr("group", 1)
    if dims == 1:
        y = F.conv_transpose1d(xt, weights, None, strides[0], 0, 0, groups, dilations[0])
    elif dims == 2:                                                 # a volume of depth 1
        y = F.conv_transpose3d(F.reshape(xt, (xt.shape[0], 1, *xt.shape[1:])),
                               F.reshape(weights, (weights.shape[0], 1, *weights.shape[1:])), None,
                               (1, *strides), 0, 0, groups, (1, *dilations))
        y = F.reshape(y, (y.shape[0], *y.shape[2:]))
    else:
        y = F.conv_transpose3d(xt, weights, None, tuple(strides), 0, 0, groups, tuple(dilations))
    if any(extra):
        y = F.pad(y, ((0, 0), *[(0, e) for e in extra], (0, 0)))
    pads = _transpose_pads(node, sizes, strides, full, extra)
    if any(p0 or p1 for p0, p1 in pads):
        y = F.getitem(y, (slice(None), *[slice(p0, n + e - p1) for (p0, p1), n, e in zip(pads, full, extra)]))
    if b is not None:
        y = y + logical(b)
    return from_channels_last(y)


def _transpose_pads(node: Node, sizes, strides, full, extra) -> list[tuple[int, int]]:
    """(begin, end) crop per axis of the full transposed-convolution output."""
    dims = len(sizes)
    wanted = node.attr("output_shape")
    mode = node.attr("auto_pad", "NOTSET")
    if not wanted and mode in ("SAME_UPPER", "SAME_LOWER"):
        wanted = [n * s for n, s in zip(sizes, strides)]
    if wanted:
        return split_pads([n + e - out for n, e, out in zip(full, extra, list(wanted)[-dims:])], mode)
    return explicit_pads(node, dims)


# -- pooling ------------------------------------------------------------------------------------------
def pool_nd(node: Node, x, geometry, take_max: bool):
    """MaxPool (with its Indices when asked) or AveragePool for any number of spatial axes.
    ``geometry`` is (kernel, strides, dilations, sizes, outs, reads, pads) per spatial axis,
    ``reads`` the padding actually read (the pads and ceil mode's overhang)."""
    kernel, strides, dilations, sizes, outs, reads, pads = geometry
    xt = channels_last(x)
    if any(a or b for a, b in reads):
        xt = F.pad(xt, ((0, 0), *reads, (0, 0)), value=-np.inf if take_max else 0.0)
    plain_3d = len(kernel) == 3 and dilations == [1, 1, 1]
    if take_max:
        if plain_3d and node.outputs == 1:
            return from_channels_last(F.max_pool3d(xt, tuple(kernel), tuple(strides)))
        taps = _taps(xt, kernel, strides, dilations, outs)
        y = F.max(F.stack(taps, axis=-1), axis=-1)
        if node.outputs == 1:
            return from_channels_last(y)
        return from_channels_last(y), _max_indices(node, taps, kernel, strides, dilations, sizes, reads)
    include = bool(node.attr("count_include_pad", 0))
    counts = [_window_counts(*axis, include) for axis in zip(outs, sizes, kernel, strides, dilations, pads)]
    divisor = functools.reduce(np.multiply.outer, counts)
    if plain_3d:
        y = F.avg_pool3d(xt, tuple(kernel), tuple(strides)) * float(np.prod(kernel))
    else:
        y = F.sum(F.stack(_taps(xt, kernel, strides, dilations, outs), axis=-1), axis=-1)
    return from_channels_last(y * constant((1.0 / divisor).astype(xt.dtype)[None, ..., None]))


def _taps(xt, kernel, strides, dilations, outs) -> list:
    """For each window offset t (row-major over the window), the slice x[o s + t d] of the
    padded channels-last input, shaped like the output."""
    taps = []
    for offsets in itertools.product(*[range(f) for f in kernel]):
        index = [slice(t * d, t * d + (o - 1) * s + 1, s) for t, d, o, s in zip(offsets, dilations, outs, strides)]
        taps.append(F.getitem(xt, (slice(None), *index, slice(None))))
    return taps


def _max_indices(node: Node, taps, kernel, strides, dilations, sizes, reads):
    """ONNX's flat NCHW position of each window's first maximum, int64 (N, C, *outs)."""
    stacked = np.stack([np.asarray(t.data) for t in taps], axis=-1)
    offsets = np.unravel_index(stacked.argmax(axis=-1), kernel)     # per axis, shaped (N, *outs, C)
    n, *outs, c = stacked.shape[:-1]
    spatial = []
    for axis, (t, s, d, (p0, _)) in enumerate(zip(offsets, strides, dilations, reads)):
        start = (np.arange(outs[axis]) * s - p0).reshape((1,) + (1,) * axis + (-1,) + (1,) * (len(outs) - axis))
        spatial.append(start + t * d)
    order = range(len(sizes)) if node.attr("storage_order", 0) == 0 else reversed(range(len(sizes)))
    flat = np.zeros(stacked.shape[:-1], dtype=np.int64)
    for axis in order:
        flat = flat * sizes[axis] + spatial[axis]
    batch = np.arange(n).reshape((-1,) + (1,) * (len(outs) + 1))
    channel = np.arange(c).reshape((1,) * (len(outs) + 1) + (-1,))
    flat = flat + (batch * c + channel) * int(np.prod(sizes))
    return constant(np.moveaxis(flat, -1, 1))


def _window_counts(outs: int, n: int, f: int, s: int, d: int, pads: tuple[int, int], include_pad: bool):
    """How many taps of each window along one axis are counted: those in [0, n), or in
    [-p_begin, n + p_end) with the padding."""
    low, high = (-pads[0], n + pads[1]) if include_pad else (0, n)
    positions = (np.arange(outs) * s - pads[0])[:, None] + np.arange(f) * d
    return ((positions >= low) & (positions < high)).sum(axis=1).astype(np.float64)
