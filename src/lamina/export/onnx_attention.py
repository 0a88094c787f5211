"""ONNX forms of the Transformer's layers: MultiHeadAttention (self-attention),
TransformerEncoderLayer, PositionalEncoding and PositionEmbedding.

Sequences stay (N, T, E), as lamina holds them, and no node fixes N or T: the position
tables are sliced to the runtime length and the causal mask is built from it, so one
export takes any batch size and any length (up to the position layers' ``max_len``).

Self-attention with h heads of d = E / h features (Vaswani et al.):

    Q_i = x W_q[:, i] + b_q,  K_i = x W_k[:, i] + b_k,  V_i = x W_v[:, i] + b_v
    head_i = softmax(Q_i K_i^T / sqrt(d) + M) V_i,   out = concat(head_1..head_h) W_o + b_o

with M = -inf above the diagonal when causal (query t sees keys t' <= t) and 0 otherwise;
the 1 / sqrt(d) is folded into W_q and b_q. Cross-attention (a separate key or value) and
masks given at call time do not reach a layer inside a ``Sequential``, so they have no form
here.
"""

from __future__ import annotations

import numpy as np

from lamina import nn
from lamina.export import onnx_layers  # noqa: F401  (the Dense and LayerNorm converters used below)
from lamina.export.onnx_branching import add_values
from lamina.export.onnx_graph import Graph, Value, convert, label, register_converter

__all__: list[str] = []

_HEADS_FIRST = (0, 2, 1, 3)          # (N, T, h, d) -> (N, h, T, d)
_KEYS_TRANSPOSED = (0, 2, 3, 1)      # (N, T, h, d) -> (N, h, d, T)


def _heads(graph: Graph, x: str, weight: np.ndarray, bias, layer, perm: tuple, hint: str) -> str:
    """x W + b (N, T, E) split into the h heads and transposed by ``perm``."""
    y = graph.node("MatMul", [x, graph.constant(weight, f"{hint}_weight")], f"{hint}_matmul")
    if bias is not None:
        y = graph.node("Add", [y, graph.constant(bias, f"{hint}_bias")], f"{hint}_biased")
    split = graph.constant([0, 0, layer.num_heads, layer.head_dim], f"{hint}_split", np.int64)
    y = graph.node("Reshape", [y, split], f"{hint}_split_heads")
    return graph.node("Transpose", [y], hint, perm=list(perm))


def _steps(graph: Graph, x: str, hint: str, scalar: bool) -> str:
    """The runtime length T of ``x`` (N, T, ...): a 0-d int64, or a 1-D [T] if not ``scalar``."""
    shape = graph.node("Shape", [x], f"{hint}_shape")
    index = graph.scalar(1, f"{hint}_time_axis") if scalar else graph.constant(
        [1], f"{hint}_time_axis", np.int64)
    return graph.node("Gather", [shape, index], f"{hint}_steps", axis=0)


def _causal_keep(graph: Graph, x: str, hint: str) -> str:
    """(T, T) booleans, keep[t, t'] = t' <= t, for the runtime length T of ``x``."""
    steps = _steps(graph, x, hint, scalar=True)
    zero, one = (graph.scalar(v, f"{hint}_{what}") for v, what in ((0, "zero"), (1, "one")))
    positions = graph.node("Range", [zero, steps, one], f"{hint}_positions")
    column = graph.node("Unsqueeze", [positions, graph.constant([1], f"{hint}_axis", np.int64)], f"{hint}_queries")
    return graph.node("LessOrEqual", [positions, column], f"{hint}_keep")


def self_attention(graph: Graph, layer: nn.MultiHeadAttention, value: Value, causal: bool, hint: str) -> Value:
    """``layer(x, causal=causal)`` (evaluation mode: no dropout) for x = ``value`` (N, T, E)."""
    if layer.rotary:
        raise NotImplementedError(f"export_onnx: {layer._label()} has rotary positions, which have no ONNX form "
                                  "in lamina's exporter yet")
    for option, used in (("grouped-query heads (num_kv_heads)", layer.num_kv_heads != layer.num_heads),
                         ("ALiBi biases (alibi=True)", layer.alibi), ("a sliding window (window)", layer.window)):
        if used:
            raise NotImplementedError(f"export_onnx: {layer._label()} has {option}, which have no ONNX form in "
                                      "lamina's exporter yet")
    if any(name.startswith("lora_") for name in layer._modules):
        raise NotImplementedError(f"export_onnx: {layer._label()} has LoRA adapters; fold them into the weights "
                                  "with lamina.nn.merge_lora(model, unload=True) first")
    if len(value.shape) != 3:
        raise NotImplementedError(f"export_onnx: {layer._label()} expects a sequence (batch, time, features), got "
                                  f"a value of shape {value.shape}")
    e, x = layer.embed_dim, value.name
    scale = 1.0 / np.sqrt(layer.head_dim)
    w = layer.in_weight.numpy()
    b = layer.in_bias.numpy() if layer.use_bias else None

    def part(k: int):
        cols = slice(k * e, (k + 1) * e)
        return w[:, cols], None if b is None else b[cols]

    (w_q, b_q), (w_k, b_k), (w_v, b_v) = part(0), part(1), part(2)
    q = _heads(graph, x, w_q * scale, None if b_q is None else b_q * scale, layer, _HEADS_FIRST, f"{hint}_q")
    k = _heads(graph, x, w_k, b_k, layer, _KEYS_TRANSPOSED, f"{hint}_k")
    v = _heads(graph, x, w_v, b_v, layer, _HEADS_FIRST, f"{hint}_v")
    scores = graph.node("MatMul", [q, k], f"{hint}_scores")                        # (N, h, T, T)
    if causal:
        masked = graph.constant(-np.inf, f"{hint}_masked")
        scores = graph.node("Where", [_causal_keep(graph, x, hint), scores, masked], f"{hint}_causal")
    weights = graph.node("Softmax", [scores], f"{hint}_weights", axis=-1)
    context = graph.node("MatMul", [weights, v], f"{hint}_context")                # (N, h, T, d)
    context = graph.node("Transpose", [context], f"{hint}_context_steps", perm=list(_HEADS_FIRST))
    joined = graph.node("Reshape", [context, graph.constant([0, 0, e], f"{hint}_join", np.int64)],
                        f"{hint}_joined")
    out_weight = graph.constant(layer.out_weight.numpy(), f"{hint}_out_weight")
    if not layer.use_bias:
        return graph.like(value, graph.node("MatMul", [joined, out_weight], hint))
    out = graph.node("MatMul", [joined, out_weight], f"{hint}_out_matmul")
    return graph.like(value, graph.node("Add", [out, graph.constant(layer.out_bias.numpy(), f"{hint}_out_bias")],
                                        hint))


@register_converter(nn.MultiHeadAttention)
def _multi_head_attention(graph: Graph, layer, value: Value) -> Value:
    return self_attention(graph, layer, value, causal=False, hint=label(layer))


@register_converter(nn.TransformerEncoderLayer)
def _encoder_layer(graph: Graph, layer, value: Value) -> Value:
    """Post-norm: x = norm1(x + attention(x)), x = norm2(x + ffn(x)); pre-norm:
    x = x + attention(norm1(x)), x = x + ffn(norm2(x)), with ffn(x) = linear2(linear1(x))."""
    hint = label(layer)

    def attend(x: Value) -> Value:
        return self_attention(graph, layer.self_attention, x, layer.causal, f"{hint}_attention")

    def feed_forward(x: Value) -> Value:
        return convert(graph, layer.linear2, convert(graph, layer.linear1, x))

    if layer.norm_first:
        x = add_values(graph, [value, attend(convert(graph, layer.norm1, value))], f"{hint}_residual1")
        return add_values(graph, [x, feed_forward(convert(graph, layer.norm2, x))], f"{hint}_residual2")
    x = convert(graph, layer.norm1, add_values(graph, [value, attend(value)], f"{hint}_residual1"))
    return convert(graph, layer.norm2, add_values(graph, [x, feed_forward(x)], f"{hint}_residual2"))


@register_converter(nn.PositionalEncoding, nn.PositionEmbedding)
def _positions(graph: Graph, layer, value: Value) -> Value:
    """x[:, p] + P[p] for p < T, the (max_len, d) table P sliced to the runtime length T."""
    table = layer.encoding if isinstance(layer, nn.PositionalEncoding) else layer.weight.numpy()
    hint = label(layer)
    steps = _steps(graph, value.name, hint, scalar=False)
    start, axis = (graph.constant([0], f"{hint}_{what}", np.int64) for what in ("start", "axis"))
    rows = graph.node("Slice", [graph.constant(np.asarray(table), f"{hint}_table"), start, steps, axis],
                      f"{hint}_rows")
    return graph.like(value, graph.node("Add", [value.name, rows], hint))
