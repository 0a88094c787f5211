"""ONNX forms of the Swin Transformer V2's blocks (:mod:`lamina.models.swin`), so that
``swin_v2_t`` and the other V2 models export. The windows (padding, cyclic shift, partition,
shift mask) are written as for v1 (:mod:`lamina.export.onnx_swin`); what differs:

    ShiftedWindowAttentionV2  per head softmax(cos(q, k) t + B + mask) V: q and k divided by
                              max(||.||, 1e-12) (Mul, ReduceSum, Sqrt, Max, Div), the
                              temperature t = exp(min(logit_scale, log 100)) one constant per
                              head folded into the unit queries; the key has no bias; B =
                              16 sigmoid(cpb_mlp(relative_coords_table)) gathered by the
                              relative position index, evaluated at export time and joined
                              with the shift mask into one constant (windows, heads, N, N)
    SwinTransformerBlockV2    post-norm: x + norm1(attn(x)), then x + norm2(mlp(x))
    PatchMergingV2            the merged 2x2 cells, the reduction Dense, then LayerNorm

Only these classes are written here: a subclass needs its own converter.
"""

from __future__ import annotations

import math

import numpy as np

from lamina.export import onnx_layers  # noqa: F401  (the Dense and LayerNorm converters used below)
from lamina.export.onnx_branching import add_values
from lamina.export.onnx_graph import Graph, Value, convert, label, register_converter
from lamina.export.onnx_swin import (
    attend_and_project,
    merged_cells,
    only_exactly,
    qkv_parts,
    window_attention,
    window_heads,
)
from lamina.models.swin import MAX_LOGIT_SCALE, PatchMergingV2, ShiftedWindowAttentionV2, SwinTransformerBlockV2

__all__: list[str] = []

NORMALIZE_EPS = 1e-12     # F.normalize's floor on the norm, as the layer uses it


def _unit_vectors(graph: Graph, x: str, axis: int, hint: str) -> str:
    """x / max(||x||_2, eps) along ``axis``."""
    squares = graph.node("Mul", [x, x], f"{hint}_squares")
    total = graph.node("ReduceSum", [squares, graph.constant([axis], f"{hint}_norm_axis", np.int64)],
                       f"{hint}_sum_of_squares", keepdims=1)
    norm = graph.node("Sqrt", [total], f"{hint}_norm")
    floor = graph.node("Max", [norm, graph.constant(NORMALIZE_EPS, f"{hint}_eps")], f"{hint}_norm_floored")
    return graph.node("Div", [x, floor], f"{hint}_unit")


def _temperatures(layer: ShiftedWindowAttentionV2) -> np.ndarray:
    """exp(min(logit_scale, log 100)) of every head, (heads, 1, 1)."""
    scale = layer._parameters["logit_scale"].numpy()
    return np.exp(np.minimum(scale, math.log(MAX_LOGIT_SCALE)))


def _cosine_attend(graph: Graph, layer: ShiftedWindowAttentionV2, windows: str, offsets: np.ndarray,
                   hint: str) -> str:
    """softmax(cos(q, k) t + offsets) V per window and head, joined and projected."""
    heads = layer.num_heads
    d = layer.dim // heads
    (w_q, b_q), (w_k, _), (w_v, b_v) = qkv_parts(layer)                              # the key's bias: unused
    q = window_heads(graph, windows, w_q, b_q, heads, d, (0, 1, 3, 2, 4), f"{hint}_q")  # (N, windows, h, N, d)
    k = window_heads(graph, windows, w_k, None, heads, d, (0, 1, 3, 4, 2), f"{hint}_k")  # (N, windows, h, d, N)
    v = window_heads(graph, windows, w_v, b_v, heads, d, (0, 1, 3, 2, 4), f"{hint}_v")
    q = _unit_vectors(graph, q, -1, f"{hint}_q")
    q = graph.node("Mul", [q, graph.constant(_temperatures(layer), f"{hint}_temperature")], f"{hint}_q_scaled")
    k = _unit_vectors(graph, k, -2, f"{hint}_k")
    scores = graph.node("MatMul", [q, k], f"{hint}_scores")
    return attend_and_project(graph, layer, scores, v, offsets, hint)


@register_converter(ShiftedWindowAttentionV2)
def _shifted_window_attention_v2(graph: Graph, layer, value: Value) -> Value:
    only_exactly(layer, ShiftedWindowAttentionV2, "V2")
    return window_attention(graph, layer, value, _cosine_attend)


@register_converter(SwinTransformerBlockV2)
def _swin_block_v2(graph: Graph, layer, value: Value) -> Value:
    """x + norm1(attn(x)), then x + norm2(mlp(x)) (stochastic depth: the identity)."""
    only_exactly(layer, SwinTransformerBlockV2, "V2")
    only_exactly(layer.attn, ShiftedWindowAttentionV2, "V2")
    hint = label(layer)
    value = graph.layout(value, "nhwc")
    x = add_values(graph, [value, convert(graph, layer.norm1, convert(graph, layer.attn, value))],
                   f"{hint}_attention_residual")
    return add_values(graph, [x, convert(graph, layer.norm2, convert(graph, layer.mlp, x))], f"{hint}_mlp_residual")


@register_converter(PatchMergingV2)
def _patch_merging_v2(graph: Graph, layer, value: Value) -> Value:
    """(H, W, C) -> (ceil(H / 2), ceil(W / 2), 2C): the merged cells, Dense, LayerNorm."""
    only_exactly(layer, PatchMergingV2, "V2")
    return convert(graph, layer.norm, convert(graph, layer.reduction, merged_cells(graph, layer, value)))
