"""ONNX forms of adaptive pooling (AdaptiveAvgPool2D / AdaptiveMaxPool2D and their 1-D
forms), of ``PixelUnshuffle`` and of ``SpatialTransformer``.

Adaptive pooling uses PyTorch's windows (:mod:`lamina.functional.adaptive_pool`): along an
axis of n inputs pooled to o outputs, output i covers start_i = floor(i n / o) <= k <
end_i = ceil((i + 1) n / o). Windows may differ in size and overlap where o does not divide
n, which no single ONNX pool expresses, so:

    2-D max   a Gather along each axis lays the windows end to end, each padded to the
              longest window K by repeating its last index (a repeat leaves a maximum as
              it is), then MaxPool with kernel and stride (K_h, K_w); where o divides n
              the Gather picks every index in order, is left out, and this is plain MaxPool
    2-D mean  where o_h divides H and o_w divides W, AveragePool with window and stride
              (H / o_h, W / o_w); otherwise y = A_h x A_w^T per channel, two MatMuls by
              constants, A (o, n) holding 1 / (end_i - start_i) on window i's inputs
    1-D       (N, T, C): the windows are computed in the graph from the length T read at
              run time, as a mask inside[i, t] = (start_i <= t < end_i); the mean is
              (inside / (end - start)) x, one MatMul; the maximum takes the inputs outside
              the window to -inf (Where) and the largest over t (TopK, k = 1)

The 1-D pools follow the length at run time because a sequence model's time axis is left
free in the file (:func:`lamina.export.onnx._free_length`); an image's height and width are
fixed there, so the 2-D windows are constants. The 1-D maximum holds an (N, o, T, C) tensor
for a moment. No ReduceMax or ReduceMean is written: their axes moved from an attribute to
an input at opset 18, and the converters do not know the opset.

``PixelUnshuffle(r)`` is ONNX's SpaceToDepth, which puts x[n, h r + i, w r + j, c] in
channel (i r + j) C + c, followed by a Gather along the channels into lamina's (and
PyTorch's) order c r^2 + i r + j.

``SpatialTransformer``: theta from the localization network (converted like any layer),
the affine grid grid[n, i, j] = theta[n] (x_j, y_i, 1)^T as one MatMul of lamina's base grid
(:func:`lamina.functional.grid_sample.base_grid`, a constant for the output size and
``align_corners``) by theta^T (AffineGrid is opset 20), then GridSample (opset 16) with the
layer's mode, padding mode and ``align_corners`` (its mode 'bilinear' is named 'linear' from
opset 20 on). ONNX Runtime's GridSample takes float32, not float64.

Importing this module replaces the AdaptiveAvgPool2D converter of
:mod:`lamina.export.onnx_layers`, which took only sizes that divide.
"""

from __future__ import annotations

import numpy as np

from lamina import backend, nn
from lamina.errors import ShapeError
from lamina.export import onnx_layers  # noqa: F401  (registered first, so that AdaptiveAvgPool2D is replaced here)
from lamina.export.onnx_graph import Graph, Value, convert, label, register_converter
from lamina.functional.adaptive_pool import adaptive_windows
from lamina.functional.grid_sample import base_grid

__all__: list[str] = []


# -- adaptive pooling of images ------------------------------------------------------------
def _padded_windows(n: int, o: int) -> tuple[np.ndarray, int]:
    """The input indices of the ``o`` windows over ``n`` inputs end to end, each padded to the
    longest window's length K by repeating its last index: (o K,) indices, and K."""
    windows = adaptive_windows(n, o)
    longest = max(end - start for start, end in windows)
    indices = [min(start + t, end - 1) for start, end in windows for t in range(longest)]
    return np.array(indices, dtype=np.int64), longest


def _mean_matrix(n: int, o: int) -> np.ndarray:
    """A (o, n): row i holds 1 / (end_i - start_i) on window i's inputs, 0 elsewhere."""
    a = np.zeros((o, n))
    for i, (start, end) in enumerate(adaptive_windows(n, o)):
        a[i, start:end] = 1.0 / (end - start)
    return a


@register_converter(nn.AdaptiveMaxPool2D)
def _adaptive_max_pool2d(graph: Graph, layer, value: Value) -> Value:
    """y[n, i, j, c] = max of x[n, p, q, c] over window (i, j): the windows gathered end to
    end along each axis, then MaxPool with kernel and stride (K_h, K_w) (module docstring)."""
    shape = layer.compute_output_shape(value.shape)
    value = graph.layout(value, "nchw")
    hint = label(layer)
    out, kernel = value.name, []
    for axis, n, o in zip((2, 3), value.shape[1:3], shape[1:3]):
        indices, longest = _padded_windows(n, o)
        if not np.array_equal(indices, np.arange(n)):
            out = graph.node("Gather", [out, graph.constant(indices, f"{hint}_windows_{axis}", np.int64)],
                             f"{hint}_gathered_{axis}", axis=axis)
        kernel.append(longest)
    if kernel != [1, 1]:
        out = graph.node("MaxPool", [out], hint, kernel_shape=kernel, strides=kernel)
    return Value(out, shape, "nchw")


@register_converter(nn.AdaptiveAvgPool2D)
def _adaptive_avg_pool2d(graph: Graph, layer, value: Value) -> Value:
    """y[n, i, j, c] = sum_{p, q} A_h[i, p] x[n, p, q, c] A_w[j, q]: AveragePool where the
    sizes divide, else a MatMul by the constant A_w^T and one by A_h on the NCHW tensor."""
    shape = layer.compute_output_shape(value.shape)
    value = graph.layout(value, "nchw")
    hint = label(layer)
    (h, w), (oh, ow) = value.shape[1:3], shape[1:3]
    if h % oh == 0 and w % ow == 0:
        window = [h // oh, w // ow]
        return Value(graph.node("AveragePool", [value.name], hint, kernel_shape=window, strides=window), shape, "nchw")
    out = value.name
    if ow != w:
        columns = graph.constant(_mean_matrix(w, ow).T, f"{hint}_columns")
        out = graph.node("MatMul", [out, columns], f"{hint}_over_columns" if oh != h else hint)
    if oh != h:
        out = graph.node("MatMul", [graph.constant(_mean_matrix(h, oh), f"{hint}_rows"), out], hint)
    return Value(out, shape, "nchw")


# -- adaptive pooling of sequences ---------------------------------------------------------
def _sequence_windows(graph: Graph, x: str, steps: int, hint: str) -> tuple[str, str]:
    """For the (N, T, C) tensor ``x``, with T read at run time: the (steps, T) bool mask
    inside[i, t] = start_i <= t < end_i, start_i = floor(i T / steps), end_i = ceil((i + 1) T /
    steps) = floor(((i + 1) T + steps - 1) / steps), and the (steps, 1) window lengths."""
    length = graph.node("Gather", [graph.node("Shape", [x], f"{hint}_shape"), graph.scalar(1, f"{hint}_time_axis")],
                        f"{hint}_length", axis=0)
    positions = graph.node("Range", [graph.scalar(0, f"{hint}_zero"), length, graph.scalar(1, f"{hint}_one")],
                           f"{hint}_positions")
    windows = np.arange(steps).reshape(steps, 1)
    count = graph.scalar(steps, f"{hint}_steps")
    starts = graph.node("Div", [graph.node("Mul", [graph.constant(windows, f"{hint}_windows", np.int64), length],
                                           f"{hint}_start_times_steps"), count], f"{hint}_starts")
    past_ends = graph.node("Mul", [graph.constant(windows + 1, f"{hint}_next_windows", np.int64), length],
                           f"{hint}_end_times_steps")
    ends = graph.node("Div", [graph.node("Add", [past_ends, graph.scalar(steps - 1, f"{hint}_round_up")],
                                         f"{hint}_rounded_up"), count], f"{hint}_ends")
    inside = graph.node("And", [graph.node("GreaterOrEqual", [positions, starts], f"{hint}_from_start"),
                                graph.node("Less", [positions, ends], f"{hint}_before_end")], f"{hint}_inside")
    return inside, graph.node("Sub", [ends, starts], f"{hint}_lengths")


def _sequence_input(layer, value: Value) -> tuple:
    if len(value.shape) != 3:
        raise ShapeError(f"export_onnx: {layer._label()} expects a 3-D batch of sequences (batch, steps, channels), "
                         f"got a value of shape {value.shape}")
    return layer.compute_output_shape(value.shape)


@register_converter(nn.AdaptiveAvgPool1D)
def _adaptive_avg_pool1d(graph: Graph, layer, value: Value) -> Value:
    """y[n, i, c] = sum_t x[n, t, c] [start_i <= t < end_i] / (end_i - start_i), the weights
    built in the graph for the length at run time, then one MatMul."""
    shape = _sequence_input(layer, value)
    if layer.output_size is None:
        return value
    hint = label(layer)
    inside, lengths = _sequence_windows(graph, value.name, shape[1], hint)
    to = graph.helper.np_dtype_to_tensor_dtype(graph.dtype)
    weights = graph.node("Div", [graph.node("Cast", [inside], f"{hint}_ones", to=to),
                                 graph.node("Cast", [lengths], f"{hint}_sizes", to=to)], f"{hint}_weights")
    return Value(graph.node("MatMul", [weights, value.name], hint), shape)


@register_converter(nn.AdaptiveMaxPool1D)
def _adaptive_max_pool1d(graph: Graph, layer, value: Value) -> Value:
    """y[n, i, c] = max over start_i <= t < end_i of x[n, t, c]: x broadcast to (N, o, T, C)
    with -inf outside each window, then the largest over t (TopK with k = 1)."""
    shape = _sequence_input(layer, value)
    if layer.output_size is None:
        return value
    hint = label(layer)
    steps, channels = shape[1:]
    inside, _ = _sequence_windows(graph, value.name, steps, hint)
    mask = graph.node("Reshape", [inside, graph.constant([steps, -1, 1], f"{hint}_mask_shape", np.int64)],
                      f"{hint}_mask")
    spread = graph.node("Reshape", [value.name, graph.constant([0, 1, -1, channels], f"{hint}_spread_shape",
                                                               np.int64)], f"{hint}_spread")
    masked = graph.node("Where", [mask, spread, graph.constant(-np.inf, f"{hint}_minus_infinity")], f"{hint}_masked")
    largest, position = graph.fresh(f"{hint}_largest"), graph.fresh(f"{hint}_position")
    graph.nodes.append(graph.helper.make_node("TopK", [masked, graph.constant([1], f"{hint}_k", np.int64)],
                                              [largest, position], name=largest, axis=2))
    out = graph.node("Reshape", [largest, graph.constant([0, steps, channels], f"{hint}_shape", np.int64)], hint)
    return Value(out, shape)


# -- pixel unshuffle -------------------------------------------------------------------------
@register_converter(nn.PixelUnshuffle)
def _pixel_unshuffle(graph: Graph, layer, value: Value) -> Value:
    """y[n, h, w, c r^2 + i r + j] = x[n, h r + i, w r + j, c]: SpaceToDepth, which writes
    that pixel to channel (i r + j) C + c, then a Gather of the channels into this order."""
    shape = layer.compute_output_shape(value.shape)
    value = graph.layout(value, "nchw")
    hint = label(layer)
    r, channels = layer.downscale_factor, value.shape[3]
    blocks = graph.node("SpaceToDepth", [value.name], hint if channels == 1 else f"{hint}_blocks", blocksize=r)
    if channels == 1:                                   # one channel: the two orders agree
        return Value(blocks, shape, "nchw")
    order = (np.arange(channels)[:, None] + channels * np.arange(r * r)[None, :]).reshape(-1)
    out = graph.node("Gather", [blocks, graph.constant(order, f"{hint}_order", np.int64)], hint, axis=1)
    return Value(out, shape, "nchw")


# -- spatial transformer ---------------------------------------------------------------------
def _grid_sample_mode(mode: str, opset: int | None) -> str:
    """GridSample's name for ``mode``: opset 20 renamed 'bilinear' to 'linear'."""
    return "linear" if mode == "bilinear" and opset is not None and opset >= 20 else mode


@register_converter(nn.SpatialTransformer)
def _spatial_transformer(graph: Graph, layer, value: Value) -> Value:
    """V = grid_sample(U, affine_grid(theta, size)), theta = localization(U): the grid as
    B theta[n]^T, B the (H_o W_o, 3) base grid of target points (x_j, y_i, 1), then GridSample."""
    shape = layer.compute_output_shape(value.shape)
    hint = label(layer)
    theta = graph.layout(convert(graph, layer.localization, value), "nhwc")
    if tuple(theta.shape[1:]) not in ((6,), (2, 3)):
        raise ShapeError(f"export_onnx: {layer._label()}: the localization network {layer.localization._label()} "
                         f"gives a value of shape {theta.shape}; expected theta of shape (batch, 6) or (batch, 2, 3)")
    ho, wo = shape[1:3]
    rows = graph.node("Reshape", [theta.name, graph.constant([0, 2, 3], f"{hint}_theta_shape", np.int64)],
                      f"{hint}_theta")
    columns = graph.node("Transpose", [rows], f"{hint}_theta_transposed", perm=[0, 2, 1])
    targets = backend.to_numpy(base_grid(ho, wo, layer.align_corners, graph.dtype)).reshape(ho * wo, 3)
    points = graph.node("MatMul", [graph.constant(targets, f"{hint}_base_grid"), columns], f"{hint}_points")
    grid = graph.node("Reshape", [points, graph.constant([0, ho, wo, 2], f"{hint}_grid_shape", np.int64)],
                      f"{hint}_grid")
    image = graph.layout(value, "nchw")
    out = graph.node("GridSample", [image.name, grid], hint, mode=_grid_sample_mode(layer.mode, graph.opset),
                     padding_mode=layer.padding_mode, align_corners=int(layer.align_corners))
    return Value(out, shape, "nchw")
