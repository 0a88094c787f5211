"""ONNX forms of the Swin Transformer's (v1) blocks (:mod:`lamina.models.swin`), so that
``swin_t`` and the other Swin models export. Maps stay NHWC (lamina's token grids) and the
geometry is that of the exported input size:

    ShiftedWindowAttention  pad the map to multiples of M (Pad); roll it by (-s, -s): along
                            each axis [x[s:], x[:s]] (Slice + Concat); windows by Reshape
                            (N, H/M, M, W/M, M, C), Transpose and Reshape (N, windows, M^2, C);
                            per head softmax(Q K^T / sqrt(d) + B + mask) V with the 1 / sqrt(d)
                            folded into W_q, B + mask one constant (windows, heads, N, N): the
                            relative position bias gathered from its table by the fixed index,
                            plus the shift mask; then the projection, the windows put back,
                            the roll undone ([x[n - s:], x[:n - s]]) and the padding cropped
    SwinTransformerBlock    x + attn(norm1(x)), then x + mlp(norm2(x))
    PatchMerging            the four pixels of each 2x2 cell (strided Slices, in lamina's
                            order), Concat, LayerNorm, the reduction Dense

Only these classes are written here: a subclass (another Swin version) needs its own converter;
Swin V2's are in :mod:`lamina.export.onnx_swin_v2`, built from the helpers below
(:func:`window_attention`, :func:`qkv_parts`, :func:`window_heads`, :func:`attend_and_project`,
:func:`merged_cells`, :func:`only_exactly`).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lamina import nn
from lamina.autograd import no_grad
from lamina.export import onnx_layers  # noqa: F401  (the Dense and LayerNorm converters used below)
from lamina.export.onnx_branching import add_values
from lamina.export.onnx_graph import Graph, Value, convert, label, register_converter
from lamina.models.swin import PatchMerging, ShiftedWindowAttention, SwinTransformerBlock, shifted_window_mask

__all__: list[str] = []

_BIG = np.iinfo(np.int64).max                            # a Slice's "to the end"


def _ints(graph: Graph, values, hint: str) -> str:
    return graph.constant(list(values), hint, np.int64)


def _slice(graph: Graph, x: str, axes, starts, ends, hint: str, steps=None) -> str:
    inputs = [x, _ints(graph, starts, f"{hint}_starts"), _ints(graph, ends, f"{hint}_ends"),
              _ints(graph, axes, f"{hint}_axes")]
    if steps is not None:
        inputs.append(_ints(graph, steps, f"{hint}_steps"))
    return graph.node("Slice", inputs, hint)


def only_exactly(layer: nn.Module, cls: type, version: str) -> None:
    """Refuse a subclass of ``cls``: it computes something else (another Swin version)."""
    if type(layer) is not cls:
        raise NotImplementedError(f"export_onnx: {layer._label()} ({type(layer).__name__}) has no ONNX converter; "
                                  f"the one of {cls.__name__} writes Swin {version} blocks only")


def _roll(graph: Graph, x: str, shifts: tuple[int, int], sizes: tuple[int, int], hint: str) -> str:
    """x rolled by ``shifts`` along axes 1 and 2 (as numpy's roll): out[i] = x[(i - s) mod n],
    the two pieces x[n - s:] and x[:n - s] joined."""
    for axis, shift, n in zip((1, 2), shifts, sizes):
        cut = (-shift) % n
        if cut == 0:
            continue
        tail = _slice(graph, x, [axis], [cut], [_BIG], f"{hint}_tail_{axis}")
        head = _slice(graph, x, [axis], [0], [cut], f"{hint}_head_{axis}")
        x = graph.node("Concat", [tail, head], f"{hint}_rolled_{axis}", axis=axis)
    return x


def _score_offsets(layer: ShiftedWindowAttention, ph: int, pw: int, shift: tuple[int, int], dtype) -> np.ndarray:
    """What lamina adds to the scores: the layer's position bias B (heads, N, N) (v1: gathered
    from its table by the relative position index), plus the shift mask (windows, 1, N, N)
    when the map is shifted."""
    with no_grad():
        bias = layer.relative_position_bias().numpy()
    if any(shift):
        bias = bias[None] + shifted_window_mask(ph, pw, layer.window_size, shift)[:, None]
    return bias.astype(dtype)


def window_heads(graph: Graph, windows: str, weight, bias, heads: int, head_dim: int, perm, hint: str) -> str:
    """x W + b on the windows (N, windows, M^2, C), split into heads and transposed by ``perm``."""
    y = graph.node("MatMul", [windows, graph.constant(weight, f"{hint}_weight")], f"{hint}_matmul")
    if bias is not None:
        y = graph.node("Add", [y, graph.constant(bias, f"{hint}_bias")], f"{hint}_biased")
    y = graph.node("Reshape", [y, _ints(graph, [0, 0, 0, heads, head_dim], f"{hint}_split")], f"{hint}_split_heads")
    return graph.node("Transpose", [y], hint, perm=list(perm))


def qkv_parts(layer: ShiftedWindowAttention) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(W, b) of the queries, keys and values: the thirds of the ``qkv`` layer (b None without bias)."""
    channels = layer.dim
    w = layer.qkv.weight.numpy()
    b = layer.qkv.bias.numpy() if layer.qkv.use_bias else None
    thirds = [slice(k * channels, (k + 1) * channels) for k in range(3)]
    return [(w[:, cols], None if b is None else b[cols]) for cols in thirds]


def attend_and_project(graph: Graph, layer: ShiftedWindowAttention, scores: str, v: str, offsets: np.ndarray,
                       hint: str) -> str:
    """softmax(scores + offsets) V per window and head (V: (N, windows, h, M^2, d)), the heads
    joined and ``proj``."""
    channels = layer.dim
    scores = graph.node("Add", [scores, graph.constant(offsets, f"{hint}_bias_and_mask")], f"{hint}_biased_scores")
    weights = graph.node("Softmax", [scores], f"{hint}_weights", axis=-1)
    context = graph.node("Transpose", [graph.node("MatMul", [weights, v], f"{hint}_context")],
                         f"{hint}_context_tokens", perm=[0, 1, 3, 2, 4])
    joined = graph.node("Reshape", [context, _ints(graph, [0, 0, 0, channels], f"{hint}_join")], f"{hint}_joined")
    out = convert(graph, layer.proj, Value(joined, (1, 1, 1, channels)))
    return out.name


def _attend(graph: Graph, layer: ShiftedWindowAttention, windows: str, offsets: np.ndarray, hint: str) -> str:
    """softmax(Q K^T / sqrt(d) + offsets) V per window and head, joined and projected."""
    heads = layer.num_heads
    d = layer.dim // heads
    (w_q, b_q), (w_k, b_k), (w_v, b_v) = qkv_parts(layer)
    scale = d ** -0.5
    q = window_heads(graph, windows, w_q * scale, None if b_q is None else b_q * scale, heads, d,
                     (0, 1, 3, 2, 4), f"{hint}_q")                                  # (N, windows, h, N, d)
    k = window_heads(graph, windows, w_k, b_k, heads, d, (0, 1, 3, 4, 2), f"{hint}_k")  # (N, windows, h, d, N)
    v = window_heads(graph, windows, w_v, b_v, heads, d, (0, 1, 3, 2, 4), f"{hint}_v")
    scores = graph.node("MatMul", [q, k], f"{hint}_scores")
    return attend_and_project(graph, layer, scores, v, offsets, hint)


Attend = Callable[[Graph, ShiftedWindowAttention, str, np.ndarray, str], str]


def window_attention(graph: Graph, layer: ShiftedWindowAttention, value: Value, attend: Attend) -> Value:
    """The map padded, rolled and cut into windows (N, windows, M^2, C); ``attend(graph, layer,
    windows, offsets, hint)`` writes the attention on them (offsets: bias and shift mask); the
    windows put back, the roll undone, the padding cropped."""
    value = graph.layout(value, "nhwc")
    hint = label(layer)
    _, height, width, channels = value.shape
    (wh, ww) = layer.window_size
    ph, pw, shift = layer._geometry(height, width)
    x = value.name
    if (ph, pw) != (height, width):
        pads = _ints(graph, [0, 0, 0, 0, 0, ph - height, pw - width, 0], f"{hint}_pads")
        x = graph.node("Pad", [x, pads], f"{hint}_padded", mode="constant")
    x = _roll(graph, x, (-shift[0], -shift[1]), (ph, pw), f"{hint}_shift")
    rows, cols = ph // wh, pw // ww
    grid = graph.node("Reshape", [x, _ints(graph, [0, rows, wh, cols, ww, channels], f"{hint}_grid_shape")],
                      f"{hint}_grid")
    cells = graph.node("Transpose", [grid], f"{hint}_cells", perm=[0, 1, 3, 2, 4, 5])
    windows = graph.node("Reshape", [cells, _ints(graph, [0, rows * cols, wh * ww, channels], f"{hint}_windows")],
                         f"{hint}_window_tokens")
    out = attend(graph, layer, windows, _score_offsets(layer, ph, pw, shift, graph.dtype), hint)
    cells = graph.node("Reshape", [out, _ints(graph, [0, rows, cols, wh, ww, channels], f"{hint}_cells_shape")],
                       f"{hint}_out_cells")
    grid = graph.node("Transpose", [cells], f"{hint}_out_grid", perm=[0, 1, 3, 2, 4, 5])
    x = graph.node("Reshape", [grid, _ints(graph, [0, ph, pw, channels], f"{hint}_map_shape")], f"{hint}_map")
    x = _roll(graph, x, shift, (ph, pw), f"{hint}_unshift")
    if (ph, pw) != (height, width):
        x = _slice(graph, x, [1, 2], [0, 0], [height, width], f"{hint}_cropped")
    return Value(graph.node("Identity", [x], hint), value.shape)


@register_converter(ShiftedWindowAttention)
def _shifted_window_attention(graph: Graph, layer, value: Value) -> Value:
    only_exactly(layer, ShiftedWindowAttention, "v1")
    return window_attention(graph, layer, value, _attend)


@register_converter(SwinTransformerBlock)
def _swin_block(graph: Graph, layer, value: Value) -> Value:
    """x + attn(norm1(x)), then x + mlp(norm2(x)) (stochastic depth: the identity)."""
    only_exactly(layer, SwinTransformerBlock, "v1")
    only_exactly(layer.attn, ShiftedWindowAttention, "v1")
    hint = label(layer)
    value = graph.layout(value, "nhwc")
    x = add_values(graph, [value, convert(graph, layer.attn, convert(graph, layer.norm1, value))],
                   f"{hint}_attention_residual")
    return add_values(graph, [x, convert(graph, layer.mlp, convert(graph, layer.norm2, x))], f"{hint}_mlp_residual")


def merged_cells(graph: Graph, layer: PatchMerging, value: Value) -> Value:
    """(H, W, C) -> (ceil(H / 2), ceil(W / 2), 4C): the map zero-padded to even sides, the
    2x2 cells' pixels (0, 0), (1, 0), (0, 1), (1, 1) concatenated."""
    value = graph.layout(value, "nhwc")
    hint = label(layer)
    _, height, width, channels = value.shape
    x = value.name
    if height % 2 or width % 2:
        pads = _ints(graph, [0, 0, 0, 0, 0, height % 2, width % 2, 0], f"{hint}_pads")
        x = graph.node("Pad", [x, pads], f"{hint}_padded", mode="constant")
    cells = [_slice(graph, x, [1, 2], [row, col], [_BIG, _BIG], f"{hint}_pixels_{row}{col}", steps=[2, 2])
             for row, col in ((0, 0), (1, 0), (0, 1), (1, 1))]
    shape = (value.shape[0], -(-height // 2), -(-width // 2), 4 * channels)
    return Value(graph.node("Concat", cells, f"{hint}_cells", axis=-1), shape)


@register_converter(PatchMerging)
def _patch_merging(graph: Graph, layer, value: Value) -> Value:
    """(H, W, C) -> (ceil(H / 2), ceil(W / 2), 2C): the merged cells, LayerNorm, Dense."""
    only_exactly(layer, PatchMerging, "v1")
    return convert(graph, layer.reduction, convert(graph, layer.norm, merged_cells(graph, layer, value)))
