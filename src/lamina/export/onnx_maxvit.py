"""ONNX forms of MaxViT's blocks (:mod:`lamina.models.maxvit`), so that ``maxvit_t`` exports
(evaluation mode; the geometry is that of the exported input size):

    MaxVitMBConv          shortcut (the input, or the ``proj`` Sequential) + the ``layers``
                          Sequential (BatchNorm, convolutions, squeeze-and-excitation)
    PartitionAttention    the map (N, H, W, C) cut into sequences by Reshape, Transpose,
                          Reshape: (N, H/P, P, W/P, P, C) -> (N, H/P, W/P, P, P, C) for
                          windows, (N, P, H/P, P, W/P, C) -> (N, H/P, W/P, P, P, C) for the grid;
                          x + attn_layer(x), x + mlp_layer(x); the inverse reshapes
    RelativePositionalMultiHeadAttention
                          per head softmax(Q (K / sqrt(C))^T + B) V, the key scale folded into
                          W_k and b_k and the bias B (heads, P^2, P^2) one constant gathered
                          from its table; the heads joined, then ``merge``
    MaxVitLayer           its ``layers`` Sequential
"""

from __future__ import annotations

import numpy as np

from lamina.export import (
    onnx_layers,  # noqa: F401  (the Dense, LayerNorm and BatchNorm converters used)
    onnx_zoo_layers,  # noqa: F401  (squeeze-and-excitation, stochastic depth)
)
from lamina.export.onnx_branching import add_values
from lamina.export.onnx_graph import Graph, Value, convert, label, register_converter
from lamina.models.maxvit import MaxVitLayer, MaxVitMBConv, PartitionAttention, RelativePositionalMultiHeadAttention

__all__: list[str] = []


def _ints(graph: Graph, values, hint: str) -> str:
    return graph.constant(list(values), hint, np.int64)


def _reshape(graph: Graph, x: str, shape, hint: str) -> str:
    return graph.node("Reshape", [x, _ints(graph, shape, f"{hint}_shape")], hint)


@register_converter(MaxVitMBConv)
def _mbconv(graph: Graph, layer, value: Value) -> Value:
    branch = convert(graph, layer.layers, value)
    shortcut = convert(graph, layer.proj, value) if layer.has_projection else value
    return add_values(graph, [shortcut, branch], f"{label(layer)}_residual")


@register_converter(MaxVitLayer)
def _maxvit_layer(graph: Graph, layer, value: Value) -> Value:
    return convert(graph, layer.layers, value)


def _heads(graph: Graph, tokens: str, weight, bias, heads: int, perm, hint: str) -> str:
    """x W + b on (N, G, P^2, C) tokens, split into heads of C / heads features, transposed by ``perm``."""
    y = graph.node("MatMul", [tokens, graph.constant(weight, f"{hint}_weight")], f"{hint}_matmul")
    y = graph.node("Add", [y, graph.constant(bias, f"{hint}_bias")], f"{hint}_biased")
    y = _reshape(graph, y, [0, 0, 0, heads, weight.shape[1] // heads], f"{hint}_split_heads")
    return graph.node("Transpose", [y], hint, perm=list(perm))


@register_converter(RelativePositionalMultiHeadAttention)
def _relative_attention(graph: Graph, layer, value: Value) -> Value:
    hint, channels, heads = label(layer), layer.feat_dim, layer.num_heads
    w, b = layer.to_qkv.weight.numpy(), layer.to_qkv.bias.numpy()
    part = [slice(k * channels, (k + 1) * channels) for k in range(3)]
    key_scale = channels ** -0.5
    q = _heads(graph, value.name, w[:, part[0]], b[part[0]], heads, (0, 1, 3, 2, 4), f"{hint}_q")
    k = _heads(graph, value.name, w[:, part[1]] * key_scale, b[part[1]] * key_scale, heads, (0, 1, 3, 4, 2),
               f"{hint}_k")
    v = _heads(graph, value.name, w[:, part[2]], b[part[2]], heads, (0, 1, 3, 2, 4), f"{hint}_v")
    scores = graph.node("MatMul", [q, k], f"{hint}_scores")
    bias = layer.relative_position_bias().numpy()
    scores = graph.node("Add", [scores, graph.constant(bias, f"{hint}_position_bias")], f"{hint}_biased_scores")
    weights = graph.node("Softmax", [scores], f"{hint}_weights", axis=-1)
    context = graph.node("Transpose", [graph.node("MatMul", [weights, v], f"{hint}_context")],
                         f"{hint}_context_tokens", perm=[0, 1, 3, 2, 4])
    joined = _reshape(graph, context, [0, 0, 0, channels], f"{hint}_joined")
    return convert(graph, layer.merge, Value(joined, value.shape))


@register_converter(PartitionAttention)
def _partition_attention(graph: Graph, layer, value: Value) -> Value:
    """Partition, the two pre-norm residual branches (stochastic depth: the identity), departition."""
    value = graph.layout(value, "nhwc")
    layer._partitioned_shape(value.shape)
    hint, p = label(layer), layer.partition_size
    _, height, width, channels = value.shape
    rows, cols = height // p, width // p
    if layer.partition_type == "window":
        split, to_cells, from_cells = [0, rows, p, cols, p, channels], [0, 1, 3, 2, 4, 5], [0, 1, 3, 2, 4, 5]
    else:
        split, to_cells, from_cells = [0, p, rows, p, cols, channels], [0, 2, 4, 1, 3, 5], [0, 3, 1, 4, 2, 5]
    cells = graph.node("Transpose", [_reshape(graph, value.name, split, f"{hint}_split")], f"{hint}_cells",
                       perm=to_cells)
    tokens = Value(_reshape(graph, cells, [0, rows * cols, p * p, channels], f"{hint}_tokens"),
                   (value.shape[0], rows * cols, p * p, channels))
    x = add_values(graph, [tokens, convert(graph, layer.attn_layer, tokens)], f"{hint}_attention_residual")
    x = add_values(graph, [x, convert(graph, layer.mlp_layer, x)], f"{hint}_mlp_residual")
    cells = _reshape(graph, x.name, [0, rows, cols, p, p, channels], f"{hint}_out_cells")
    grid = graph.node("Transpose", [cells], f"{hint}_out_grid", perm=from_cells)
    return Value(_reshape(graph, grid, [0, height, width, channels], hint), value.shape)
