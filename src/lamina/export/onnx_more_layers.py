"""ONNX forms of the volumetric layers (Conv3D, MaxPool3D, AvgPool3D, GlobalAvgPool3D),
of ``Upsample``, of instance normalization and of ``Unfold``/``Fold``.

Volumes travel the graph as lamina holds them, NDHWC (batch, depth, height, width,
channels): :meth:`Graph.layout` moves 4-D values only, so each 3-D layer transposes its
input to NCDHW, writes ONNX's Conv or pool, and transposes back. Between two 3-D layers
the pair of transposes cancels; ONNX Runtime's graph optimizer removes such pairs when it
loads the model.

``Upsample`` follows each mode of :func:`lamina.functional.interpolate` (for output index
i and scale r = n_in / n_out, or 1 / scale_factor when a scale factor is given):

    nearest         source floor(i r)                      Gather of lamina's source pixels
    nearest-exact   source floor((i + 1/2) r)              Gather of lamina's source pixels
    bilinear        u = (i + 1/2) r - 1/2, clamped         Resize: linear, half_pixel
    bicubic         Keys' cubic, a = -0.75, the indices    Resize: cubic, half_pixel,
                    clamped to the image                   cubic_coeff_a -0.75, exclude_outside 0
    align_corners   u = i (n_in - 1) / (n_out - 1)         Resize: align_corners

The nearest modes pick one pixel per output, and a Gather of the indices lamina computes
picks the same ones exactly. Resize (asymmetric + floor for 'nearest', half_pixel +
round_prefer_ceil for 'nearest-exact') recomputes them in float32 and, for a factor such
as 1.3, picks the neighbour where i r falls on a pixel boundary. For the linear modes a
``scale_factor`` goes in as Resize's ``scales`` (the coordinates then use 1 / s, as lamina
does), a ``size`` as its ``sizes``, after the input's (N, C) read at run time. 'area'
averages the window [floor(i n_in / n_out), ceil((i + 1) n_in / n_out)): where n_out
divides n_in that is AveragePool with window and stride n_in / n_out, where n_in divides
n_out the window is one pixel (a Gather); other sizes have no exact ONNX form and raise
NotImplementedError. ONNX Runtime (1.2x, default graph optimizations) refuses to load a
cubic Resize that shrinks the image when it is the model's first node: its layout
optimizer moves the input's Transpose past the Resize, into the channels-last form its
cubic kernel rejects. The file is valid; it loads with ``graph_optimization_level``
ORT_ENABLE_BASIC.

``Unfold`` is a Conv whose f_h f_w C filters are one-hot, filter (i, j, c) picking tap
(i, j) of channel c, then reshaped to lamina's (N, L, f_h f_w C); ``Fold``, its adjoint,
is ConvTranspose with the same kernel. ``MaxUnpool2D`` takes two inputs (the values and
the indices of ``MaxPool2D(return_indices=True)``), so it cannot be a layer of a
``Sequential``; it has no converter and the exporter names it.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import nn
from lamina.errors import ShapeError
from lamina.export.onnx_activations import layer_activation
from lamina.export.onnx_graph import Graph, Value, label, register_converter
from lamina.export.onnx_layers import refuse_divisor_override
from lamina.functional.conv3d import conv3d_pads
from lamina.functional.interpolate import output_size, resize_matrix

__all__: list[str] = []

_CHANNELS_FIRST = {3: [0, 2, 1], 5: [0, 4, 1, 2, 3]}     # (N, T, C) -> (N, C, T); NDHWC -> NCDHW
_CHANNELS_LAST = {3: [0, 2, 1], 5: [0, 2, 3, 4, 1]}


def _check_rank(layer, value: Value, rank: int, expected: str) -> None:
    if len(value.shape) != rank:
        raise ShapeError(f"export_onnx: {layer._label()} expects {expected}, got a value of shape {value.shape}")


def _channels_first(graph: Graph, value: Value, hint: str) -> str:
    """The name of ``value`` (N, ..., C) transposed to (N, C, ...), for 3-D and 5-D values."""
    return graph.node("Transpose", [value.name], f"{hint}_channels_first", perm=_CHANNELS_FIRST[len(value.shape)])


def _channels_last(graph: Graph, name: str, shape: tuple, hint: str) -> Value:
    """The (N, C, ...) tensor ``name`` transposed back to lamina's (N, ..., C) ``shape``."""
    return Value(graph.node("Transpose", [name], hint, perm=_CHANNELS_LAST[len(shape)]), tuple(shape))


# -- volumes ----------------------------------------------------------------------------------
_VOLUMES = "NDHWC volumes (batch, depth, height, width, channels)"


@register_converter(nn.Conv3D)
def _conv3d(graph: Graph, layer, value: Value) -> Value:
    """v[n, z, y, x, k] = b[k] + sum xpad[n, z s_d + d_d a, y s_h + d_h i, x s_w + d_w j, c]
    w[k, a, i, j, c]: ONNX's Conv on NCDHW with the weight (K, c_in / groups, f_d, f_h, f_w);
    'same' resolved for this input (the odd padding value at the back, bottom and right)."""
    _check_rank(layer, value, 5, _VOLUMES)
    hint = label(layer)
    pads = conv3d_pads(layer.padding, value.shape[1:4], layer.extent, layer.stride, "export_onnx")
    before, after = zip(*pads)
    inputs = [_channels_first(graph, value, hint),
              graph.constant(layer.weight.numpy().transpose(0, 4, 1, 2, 3), f"{hint}_weight")]
    if layer.use_bias:
        inputs.append(graph.constant(layer.bias.numpy(), f"{hint}_bias"))
    conv = graph.node("Conv", inputs, f"{hint}_conv", kernel_shape=list(layer.kernel_size),
                      strides=list(layer.stride), pads=[*before, *after], dilations=list(layer.dilation),
                      group=layer.groups)
    out = _channels_last(graph, conv, layer.compute_output_shape(value.shape), hint)
    return layer_activation(graph, layer, out)


def _pool3d(op: str, **extra):
    """A window of f_d x f_h x f_w moved by the stride, p on both sides of each axis (-inf
    for the max, zeros counted in the mean unless the layer's count_include_pad is False)."""
    def write(graph: Graph, layer, value: Value) -> Value:
        _check_rank(layer, value, 5, _VOLUMES)
        hint = label(layer)
        pooled = graph.node(op, [_channels_first(graph, value, hint)], f"{hint}_pool",
                            kernel_shape=list(layer.pool_size), strides=list(layer.stride),
                            pads=[*layer.padding, *layer.padding], **extra)
        return _channels_last(graph, pooled, layer.compute_output_shape(value.shape), hint)
    return write


register_converter(nn.MaxPool3D)(_pool3d("MaxPool"))


@register_converter(nn.AvgPool3D)
def _avg_pool3d(graph: Graph, layer, value: Value) -> Value:
    refuse_divisor_override(layer)
    return _pool3d("AveragePool", count_include_pad=int(layer.count_include_pad))(graph, layer, value)


@register_converter(nn.GlobalAvgPool3D)
def _global_avg_pool3d(graph: Graph, layer, value: Value) -> Value:
    """(N, D, H, W, C) -> (N, C): the mean of each channel over the volume."""
    _check_rank(layer, value, 5, _VOLUMES)
    hint = label(layer)
    pooled = graph.node("GlobalAveragePool", [_channels_first(graph, value, hint)], f"{hint}_pool")
    return Value(graph.node("Flatten", [pooled], hint, axis=1), (value.shape[0], value.shape[4]))


# -- resizing ---------------------------------------------------------------------------------
_RESIZE_MODES = {
    "bilinear": {"mode": "linear", "coordinate_transformation_mode": "half_pixel"},
    "bicubic": {"mode": "cubic", "coordinate_transformation_mode": "half_pixel", "cubic_coeff_a": -0.75,
                "exclude_outside": 0},
}


def _scales(layer, in_hw: tuple[int, int], out_hw: tuple[int, int]) -> list[float]:
    """Resize's float32 scales for the layer's scale factors: the nearest float32, moved by
    a few units in the last place where n s rounds across an integer, so that the size a
    runtime derives, floor(n s) in float32 or float64 arithmetic, is lamina's (floor(n s) in
    float64). The source coordinates move by about 1e-7 of their value."""
    factor = layer.scale_factor
    scales = []
    for n, n_out, s in zip(in_hw, out_hw, factor if isinstance(factor, (list, tuple)) else (factor, factor)):
        f = np.float32(s)
        for _ in range(16):
            sizes = {math.floor(np.float32(n) * f), math.floor(n * float(f))}
            if sizes == {n_out}:
                break
            f = np.nextafter(f, np.float32(0.0 if max(sizes) > n_out else np.inf))
        else:
            raise NotImplementedError(f"export_onnx: {layer._label()}: no float32 scale turns {n} pixels into "
                                      f"{n_out} as scale_factor {s} does; give the layer a size instead")
        scales.append(float(f))
    return scales


def _sizes(graph: Graph, x: str, hw: tuple[int, int], hint: str) -> str:
    """Resize's ``sizes`` for the NCHW tensor ``x``: its runtime (N, C), then ``hw``."""
    bounds = [graph.constant([0], f"{hint}_from", np.int64), graph.constant([2], f"{hint}_to", np.int64)]
    shape = graph.node("Shape", [x], f"{hint}_input_shape")
    batch_and_channels = graph.node("Slice", [shape, *bounds], f"{hint}_batch_and_channels")
    return graph.node("Concat", [batch_and_channels, graph.constant(list(hw), f"{hint}_hw", np.int64)],
                      f"{hint}_sizes", axis=0)


def _pick(graph: Graph, value: Value, sources: list[np.ndarray], shape: tuple, hint: str) -> Value:
    """y[n, i, j, c] = x[n, src_h[i], src_w[j], c]: a Gather along each axis whose sources
    are not simply 0, 1, ..., n - 1, in the value's own layout."""
    axes = (2, 3) if value.layout == "nchw" else (1, 2)
    moves = [(axis, src) for axis, src, n in zip(axes, sources, value.shape[1:3])
             if not np.array_equal(src, np.arange(n))]
    out = value.name
    for k, (axis, src) in enumerate(moves):
        indices = graph.constant(src, f"{hint}_sources_{axis}", np.int64)
        out = graph.node("Gather", [out, indices], hint if k == len(moves) - 1 else f"{hint}_axis_{axis}", axis=axis)
    return graph.like(value, out, shape)


@register_converter(nn.Upsample)
def _upsample(graph: Graph, layer, value: Value) -> Value:
    """The nearest modes: Gather of the source pixels lamina picks; bilinear and bicubic:
    ONNX's Resize with the coordinate rule of the mode; 'area': :func:`_area` (module
    docstring)."""
    _check_rank(layer, value, 4, "a 4-D NHWC batch (batch, height, width, channels)")
    (h_out, w_out), ratios = output_size(value.shape[1:3], layer.size, layer.scale_factor)
    shape = (value.shape[0], h_out, w_out, value.shape[3])
    hint = label(layer)
    if layer.mode in ("nearest", "nearest-exact"):
        sources = [resize_matrix(n_out, n, layer.mode, ratio).argmax(axis=1)
                   for n_out, n, ratio in zip((h_out, w_out), value.shape[1:3], ratios)]
        return _pick(graph, value, sources, shape, hint)
    if layer.mode == "area":
        return _area(graph, layer, value, shape)
    value = graph.layout(value, "nchw")
    modes = dict(_RESIZE_MODES[layer.mode])
    if layer.align_corners:
        modes["coordinate_transformation_mode"] = "align_corners"
    if layer.scale_factor is not None:
        scales = _scales(layer, value.shape[1:3], (h_out, w_out))
        inputs = [value.name, "", graph.constant([1.0, 1.0, *scales], f"{hint}_scales", np.float32)]
    else:
        inputs = [value.name, "", "", _sizes(graph, value.name, (h_out, w_out), hint)]
    return Value(graph.node("Resize", inputs, hint, **modes), shape, "nchw")


def _area(graph: Graph, layer, value: Value, shape: tuple) -> Value:
    """'area' along an axis: AveragePool by n_in / n_out where n_out divides n_in; where
    n_in divides n_out each window is the one pixel floor(i n_in / n_out), picked by Gather."""
    sizes = list(zip(value.shape[1:3], shape[1:3]))
    if any(n_in % n_out and n_out % n_in for n_in, n_out in sizes):
        raise NotImplementedError(f"export_onnx: {layer._label()} in mode 'area' resizes {value.shape[1:3]} to "
                                  f"{shape[1:3]}; only sizes that divide one another along each axis export "
                                  "(as AveragePool or a copy of one pixel per window)")
    hint = label(layer)
    window = [n_in // n_out if n_in % n_out == 0 else 1 for n_in, n_out in sizes]
    if window != [1, 1]:
        value = graph.layout(value, "nchw")
        pooled = graph.node("AveragePool", [value.name], f"{hint}_pool", kernel_shape=window, strides=window)
        pooled_hw = tuple(n // f for n, f in zip(value.shape[1:3], window))
        value = Value(pooled, (shape[0], *pooled_hw, shape[3]), "nchw")
    sources = [np.arange(n_out) * n_in // n_out for n_in, n_out in zip(value.shape[1:3], shape[1:3])]
    return _pick(graph, value, sources, shape, hint)


# -- instance normalization -------------------------------------------------------------------
@register_converter(nn.InstanceNorm1D, nn.InstanceNorm2D)
def _instance_norm(graph: Graph, layer, value: Value) -> Value:
    """y = gamma (x - mu) / sqrt(var + eps) + beta per channel (gamma = 1, beta = 0 without
    ``affine``). mu and var: each sample's own over its positions (InstanceNormalization),
    or with ``track_running_stats`` the running ones, as evaluation uses them
    (BatchNormalization)."""
    rank = layer.spatial_axes + 2
    _check_rank(layer, value, rank, layer._EXPECTED)
    hint = label(layer)
    channels = layer.num_features
    gamma = layer.weight.numpy() if layer.affine else np.ones(channels)
    beta = layer.bias.numpy() if layer.affine else np.zeros(channels)
    if rank == 4:
        value = graph.layout(value, "nchw")
        x = value.name
    else:
        x = _channels_first(graph, value, hint)
    inputs = [x, graph.constant(gamma, f"{hint}_scale"), graph.constant(beta, f"{hint}_bias")]
    if layer.track_running_stats:
        inputs += [graph.constant(np.asarray(layer.running_mean), f"{hint}_mean"),
                   graph.constant(np.asarray(layer.running_var), f"{hint}_var")]
        op = "BatchNormalization"
    else:
        op = "InstanceNormalization"
    if rank == 4:
        return graph.like(value, graph.node(op, inputs, hint, epsilon=layer.eps))
    return _channels_last(graph, graph.node(op, inputs, f"{hint}_normalized", epsilon=layer.eps), value.shape, hint)


# -- sliding windows --------------------------------------------------------------------------
def _one_hot_kernel(kernel: tuple[int, int], channels: int) -> np.ndarray:
    """(f_h f_w C, C, f_h, f_w): filter (i f_w + j) C + c is 1 at tap (i, j) of channel c."""
    fh, fw = kernel
    rows = fh * fw * channels
    return np.eye(rows).reshape(rows, fh, fw, channels).transpose(0, 3, 1, 2)


def _windows(layer, hw: tuple[int, int]) -> tuple[int, int]:
    """(h_out, w_out) = floor((n + 2 p - d (f - 1) - 1) / s) + 1 per axis."""
    out = tuple((n + 2 * p - d * (f - 1) - 1) // s + 1
                for n, f, s, p, d in zip(hw, layer.kernel_size, layer.stride, layer.padding, layer.dilation))
    if min(out) < 1:
        raise ShapeError(f"export_onnx: {layer._label()}: a {layer.kernel_size} window (dilation {layer.dilation}) "
                         f"does not fit {hw} padded by {layer.padding}")
    return out


def _window_attributes(layer) -> dict:
    ph, pw = layer.padding
    return {"kernel_shape": list(layer.kernel_size), "strides": list(layer.stride),
            "dilations": list(layer.dilation), "pads": [ph, pw, ph, pw]}


@register_converter(nn.Unfold)
def _unfold(graph: Graph, layer, value: Value) -> Value:
    """cols[n, y w_out + x, (i f_w + j) C + c] = xpad[n, y s_h + i d_h, x s_w + j d_w, c]:
    the one-hot Conv, its NHWC output (N, h_out, w_out, f_h f_w C) reshaped to (N, L, ...)."""
    _check_rank(layer, value, 4, "a 4-D NHWC batch (batch, height, width, channels)")
    hint = label(layer)
    value = graph.layout(value, "nchw")
    channels = value.shape[3]
    h_out, w_out = _windows(layer, value.shape[1:3])
    features = math.prod(layer.kernel_size) * channels
    kernel = graph.constant(_one_hot_kernel(layer.kernel_size, channels), f"{hint}_kernel")
    conv = Value(graph.node("Conv", [value.name, kernel], f"{hint}_windows", **_window_attributes(layer)),
                 (value.shape[0], h_out, w_out, features), "nchw")
    rows = graph.layout(conv, "nhwc")
    target = graph.constant([0, -1, features], f"{hint}_shape", np.int64)
    return Value(graph.node("Reshape", [rows.name, target], hint), (value.shape[0], h_out * w_out, features))


@register_converter(nn.Fold)
def _fold(graph: Graph, layer, value: Value) -> Value:
    """x[n, y s_h + i d_h - p_h, x s_w + j d_w - p_w, c] += cols[n, y w_out + x, (i f_w + j) C + c]:
    the rows reshaped to (N, h_out, w_out, f_h f_w C), then ConvTranspose with the one-hot
    kernel of :func:`_unfold`; ``output_padding`` adds the rows and columns at the bottom
    and right that no window reaches."""
    h, w = layer.output_size
    h_out, w_out = _windows(layer, (h, w))
    taps = math.prod(layer.kernel_size)
    if len(value.shape) != 3 or value.shape[1] != h_out * w_out or value.shape[2] % taps:
        raise ShapeError(f"export_onnx: {layer._label()} expects rows (batch, {h_out * w_out}, f_h f_w C) with "
                         f"f_h f_w = {taps} (the {h_out}x{w_out} windows of {(h, w)}), got a value of shape "
                         f"{value.shape}")
    hint = label(layer)
    features = value.shape[2]
    channels = features // taps
    grid_shape = graph.constant([0, h_out, w_out, features], f"{hint}_grid_shape", np.int64)
    grid = Value(graph.node("Reshape", [value.name, grid_shape], f"{hint}_grid"),
                 (value.shape[0], h_out, w_out, features))
    grid = graph.layout(grid, "nchw")
    reached = [(n - 1) * s + d * (f - 1) + 1 for n, s, d, f in
               zip((h_out, w_out), layer.stride, layer.dilation, layer.kernel_size)]
    extra = [size + 2 * p - r for size, p, r in zip((h, w), layer.padding, reached)]
    kernel = graph.constant(_one_hot_kernel(layer.kernel_size, channels), f"{hint}_kernel")
    out = graph.node("ConvTranspose", [grid.name, kernel], hint, output_padding=extra, **_window_attributes(layer))
    return Value(out, (value.shape[0], h, w, channels), "nchw")
