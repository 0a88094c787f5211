"""ONNX forms of SegFormer's blocks (:mod:`lamina.models.segformer`), so that
:class:`~lamina.models.SegformerForSemanticSegmentation` exports. Maps stay NHWC (token grids);
the geometry is that of the exported input size:

    OverlapPatchEmbeddings    Conv, LayerNormalization
    EfficientSelfAttention    Q from the tokens (N, h w, C) with 1 / sqrt(d) folded into W_q;
                              K and V from the map through the R x R Conv of stride R and
                              LayerNormalization (R > 1); per head softmax(Q K^T) V by MatMul and
                              Softmax, the heads joined back into the (N, h, w, C) map
    MixFFN                    MatMul, depthwise Conv (group = channels), Gelu (erf form), MatMul
    Layer                     x + attention(layer_norm_1(x)), then x + mlp(layer_norm_2(x))
    the whole model           the four stages, each map through linear_c.i and Resize (linear,
                              half-pixel) to the first map's size, Concat in the reversed order,
                              then linear_fuse, BatchNormalization, Relu and the classifier Conv

Dropout and stochastic depth are the identity (evaluation mode).
"""

from __future__ import annotations

import numpy as np

from lamina.export import onnx_layers, onnx_zoo_layers  # noqa: F401  (Dense, LayerNorm, Conv, GELU ... converters)
from lamina.export.onnx_branching import add_values, concat_values
from lamina.export.onnx_graph import Graph, Value, convert, convert_chain, label, register_converter
from lamina.export.onnx_zoo_layers import _resize_bilinear
from lamina.models.segformer import (
    SegformerAttention,
    SegformerEfficientSelfAttention,
    SegformerForSemanticSegmentation,
    SegformerLayer,
    SegformerMixFFN,
    SegformerOverlapPatchEmbeddings,
)

__all__: list[str] = []


def _ints(graph: Graph, values, hint: str) -> str:
    return graph.constant(list(values), hint, np.int64)


@register_converter(SegformerOverlapPatchEmbeddings)
def _patch_embeddings(graph: Graph, layer, value: Value) -> Value:
    return convert_chain(graph, (layer.proj, layer.layer_norm), value)


def _heads(graph: Graph, tokens: str, weight: np.ndarray, bias: np.ndarray, heads: int, perm, hint: str) -> str:
    """x W + b on (N, L, C) tokens, split into heads: (N, L, h, d) transposed by ``perm``."""
    y = graph.node("MatMul", [tokens, graph.constant(weight, f"{hint}_weight")], f"{hint}_matmul")
    y = graph.node("Add", [y, graph.constant(bias, f"{hint}_bias")], f"{hint}_biased")
    d = weight.shape[1] // heads
    y = graph.node("Reshape", [y, _ints(graph, [0, 0, heads, d], f"{hint}_split")], f"{hint}_split_heads")
    return graph.node("Transpose", [y], hint, perm=list(perm))


def _tokens(graph: Graph, value: Value, hint: str) -> str:
    """An NHWC map as (N, h w, C) tokens."""
    value = graph.layout(value, "nhwc")
    _, height, width, channels = value.shape
    return graph.node("Reshape", [value.name, _ints(graph, [0, height * width, channels], f"{hint}_shape")], hint)


@register_converter(SegformerEfficientSelfAttention)
def _efficient_attention(graph: Graph, layer, value: Value) -> Value:
    hint = label(layer)
    value = graph.layout(value, "nhwc")
    _, height, width, channels = value.shape
    heads = layer.num_attention_heads
    scale = (channels // heads) ** -0.5
    reduced = convert_chain(graph, (layer.sr, layer.layer_norm), value) if layer.sr_ratio > 1 else value
    queries, keys = _tokens(graph, value, f"{hint}_queries_in"), _tokens(graph, reduced, f"{hint}_keys_in")
    q = _heads(graph, queries, layer.query.weight.numpy() * scale, layer.query.bias.numpy() * scale, heads,
               (0, 2, 1, 3), f"{hint}_q")                                               # (N, h, L, d)
    k = _heads(graph, keys, layer.key.weight.numpy(), layer.key.bias.numpy(), heads, (0, 2, 3, 1), f"{hint}_k")
    v = _heads(graph, keys, layer.value.weight.numpy(), layer.value.bias.numpy(), heads, (0, 2, 1, 3), f"{hint}_v")
    weights = graph.node("Softmax", [graph.node("MatMul", [q, k], f"{hint}_scores")], f"{hint}_weights", axis=-1)
    context = graph.node("Transpose", [graph.node("MatMul", [weights, v], f"{hint}_context")],
                         f"{hint}_context_tokens", perm=[0, 2, 1, 3])
    out = graph.node("Reshape", [context, _ints(graph, [0, height, width, channels], f"{hint}_map_shape")], hint)
    return Value(out, value.shape)


@register_converter(SegformerAttention)
def _attention(graph: Graph, layer, value: Value) -> Value:
    return convert_chain(graph, (layer.efficient_attention, layer.output), value)


@register_converter(SegformerMixFFN)
def _mix_ffn(graph: Graph, layer, value: Value) -> Value:
    return convert_chain(graph, (layer.dense1, layer.dwconv, layer.intermediate_act_fn, layer.dense2), value)


@register_converter(SegformerLayer)
def _segformer_layer(graph: Graph, layer, value: Value) -> Value:
    hint = label(layer)
    value = graph.layout(value, "nhwc")
    x = add_values(graph, [value, convert_chain(graph, (layer.layer_norm_1, layer.attention), value)],
                   f"{hint}_attention_residual")
    return add_values(graph, [x, convert_chain(graph, (layer.layer_norm_2, layer.mlp), x)], f"{hint}_mlp_residual")


@register_converter(SegformerForSemanticSegmentation)
def _segformer(graph: Graph, layer, value: Value) -> Value:
    """The encoder's four maps, then the decode head (module docstring)."""
    encoder, head = layer.segformer.encoder, layer.decode_head
    maps = []
    for embedding, blocks, norm in zip(encoder.patch_embeddings, encoder.block, encoder.layer_norm):
        value = convert_chain(graph, (embedding, *blocks, norm), value)
        maps.append(value)
    size = maps[0].shape[1:3]
    projected = []
    for i, (mlp, stage_map) in enumerate(zip(head.linear_c, maps)):
        stage_map = convert(graph, mlp, stage_map)
        if tuple(stage_map.shape[1:3]) != tuple(size):
            stage_map = _resize_bilinear(graph, stage_map, size, f"linear_c_{i}_resized")
        projected.append(stage_map)
    joined = concat_values(graph, projected[::-1], "decode_head_joined")
    return convert_chain(graph, (head.linear_fuse, head.batch_norm, head.activation, head.dropout, head.classifier),
                    joined)
