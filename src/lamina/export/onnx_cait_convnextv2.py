"""ONNX forms (evaluation mode) of the whole CaiT classifier and of ConvNeXt V2's block and its
global response normalization:

    CaiT                patch_embed, + pos_embed (the patches only), the self-attention blocks,
                        [cls; patches] (the class token Expanded to the runtime batch and joined
                        by Concat), the class-attention blocks, then norm and head on the class
                        token (Gather); the blocks use :mod:`lamina.export.onnx_recent_layers`
    GlobalResponseNorm  G = sqrt(sum_{h, w} x^2) per channel, N = G / (mean_c G + eps),
                        y = gamma (x N) + beta + x, on the NHWC map
    ConvNeXtV2Block     x + block(x) (stochastic depth is the identity)
"""

from __future__ import annotations

import numpy as np

from lamina import nn
from lamina.export import onnx_recent_layers  # noqa: F401  (CaiT's block converters)
from lamina.export.onnx_branching import add_values
from lamina.export.onnx_graph import Graph, Value, convert, label, register_converter
from lamina.models.cait import CaiT
from lamina.models.convnext import ConvNeXtV2Block

__all__: list[str] = []


def _ints(graph: Graph, values, hint: str) -> str:
    return graph.constant(list(values), hint, np.int64)


def _reduce_kept(graph: Graph, op: str, name: str, axes: list[int], hint: str) -> str:
    """``op`` over ``axes``, kept (the axes an input from opset 13 for ReduceSum, 18 for the others)."""
    if (graph.opset or 17) >= (13 if op == "ReduceSum" else 18):
        return graph.node(op, [name, _ints(graph, axes, f"{hint}_axes")], hint, keepdims=1)
    return graph.node(op, [name], hint, axes=list(axes), keepdims=1)


@register_converter(CaiT)
def _cait(graph: Graph, model: CaiT, value: Value) -> Value:
    hint, dim = label(model), model.dim
    patches = graph.layout(convert(graph, model.patch_embed, value), "nhwc")
    if patches.shape[1] != model.num_patches:
        raise NotImplementedError(f"export_onnx: {model._label()} (CaiT) was built for {model.num_patches} patches; "
                                  f"the input shape {value.shape[1:]} gives {patches.shape[1]}")
    shape = (patches.shape[0], model.num_patches, dim)
    embedded = graph.node("Add", [patches.name, graph.constant(model.pos_embed.numpy(), f"{hint}_pos_embed")],
                          f"{hint}_embedded")
    patches = convert(graph, model.blocks, Value(embedded, shape))
    batch = graph.node("Gather", [graph.node("Shape", [patches.name], f"{hint}_shape"),
                                  _ints(graph, [0], f"{hint}_batch_axis")], f"{hint}_batch", axis=0)
    token_shape = graph.node("Concat", [batch, _ints(graph, [1, dim], f"{hint}_token_dims")],
                             f"{hint}_token_shape", axis=0)
    cls = graph.node("Expand", [graph.constant(model.cls_token.numpy(), f"{hint}_cls_token"), token_shape],
                     f"{hint}_cls")
    tokens = graph.node("Concat", [cls, patches.name], f"{hint}_tokens", axis=1)
    tokens = convert(graph, model.blocks_token_only, Value(tokens, (shape[0], shape[1] + 1, dim)))
    state = graph.node("Gather", [tokens.name, graph.scalar(0, f"{hint}_cls_index")], f"{hint}_cls_state", axis=1)
    return convert(graph, model.head, convert(graph, model.norm, Value(state, (shape[0], dim))))


@register_converter(nn.GlobalResponseNorm)
def _global_response_norm(graph: Graph, layer: nn.GlobalResponseNorm, value: Value) -> Value:
    if len(value.shape) != 4 or value.shape[-1] != layer.channels:
        raise NotImplementedError(f"export_onnx: {layer._label()} (GlobalResponseNorm) reads maps (batch, h, w, "
                                  f"{layer.channels}); got a value of shape {value.shape}")
    hint = label(layer)
    x = graph.layout(value, "nhwc")
    squares = graph.node("Mul", [x.name, x.name], f"{hint}_squares")
    response = graph.node("Sqrt", [_reduce_kept(graph, "ReduceSum", squares, [1, 2], f"{hint}_sums")],
                          f"{hint}_response")
    mean = _reduce_kept(graph, "ReduceMean", response, [-1], f"{hint}_mean_response")
    shifted = graph.node("Add", [mean, graph.constant(layer.eps, f"{hint}_eps")], f"{hint}_mean_eps")
    normalized = graph.node("Div", [response, shifted], f"{hint}_normalized")
    scaled = graph.node("Mul", [graph.node("Mul", [x.name, normalized], f"{hint}_x_normalized"),
                                graph.constant(layer.gamma.numpy(), f"{hint}_gamma")], f"{hint}_scaled")
    shifted_out = graph.node("Add", [scaled, graph.constant(layer.beta.numpy(), f"{hint}_beta")], f"{hint}_shifted")
    return graph.like(x, graph.node("Add", [shifted_out, x.name], hint))


@register_converter(ConvNeXtV2Block)
def _convnextv2_block(graph: Graph, layer: ConvNeXtV2Block, value: Value) -> Value:
    """out = x + block(x)."""
    return add_values(graph, [convert(graph, layer.block, value), value], f"{label(layer)}_add")
