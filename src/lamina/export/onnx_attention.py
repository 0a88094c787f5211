"""ONNX forms of the Transformer's layers: MultiHeadAttention (self-attention),
TransformerEncoderLayer, PositionalEncoding and PositionEmbedding.

Sequences stay (N, T, E), as lamina holds them, and no node fixes N or T: the position
tables are sliced to the runtime length and the causal mask is built from it, so one
export takes any batch size and any length (up to the position layers' ``max_len``).

Self-attention with h heads of d = E / h features (Vaswani et al.):

    Q_i = x W_q[:, i] + b_q,  K_i = x W_k[:, i] + b_k,  V_i = x W_v[:, i] + b_v
    head_i = softmax(Q_i K_i^T / sqrt(d) + M) V_i,   out = concat(head_1..head_h) W_o + b_o

with M = -inf above the diagonal when causal (query t sees keys t' <= t) and 0 otherwise;
the 1 / sqrt(d) is folded into W_q and b_q. The layer's options export too (see
:mod:`lamina.export.onnx_attention_positions`): rotary positions turn Q and K by angles
computed from the runtime length, grouped-query heads (g key/value heads) are repeated to
the h query heads by Expand, ALiBi adds -m_h |t - t'| to the scores and a sliding window of
w keeps t - w < t' <= t. The options of published language models export as well: a
``scale`` in place of 1 / sqrt(d) (folded the same way), ``logit_softcap`` c turning the
scores into c tanh(s / c) before any bias or mask, ``rotary_dims`` r < d turning only the
first r features of each head (Slice, the rotary turn, Concat) and ``out_bias`` giving the
output projection a bias or none on its own. LoRA adapters not yet merged are folded into
W_q, W_k or W_v, W + (alpha / r) A B, and IA3 vectors not yet merged scale the columns (and
biases) of their projection, (x W + b) * l = x (W diag(l)) + b * l. Prefix keys and values
(prefix tuning) are refused. Cross-attention (a separate key or value) and masks given at call time
do not reach a layer inside a ``Sequential``, so they have no form here.
"""

from __future__ import annotations

import numpy as np

from lamina import nn
from lamina.export import onnx_layers  # noqa: F401  (the Dense and LayerNorm converters used below)
from lamina.export.onnx_attention_positions import (
    alibi_bias,
    causal_keep,
    offsets,
    rotary_tables,
    rotate,
    step_positions,
)
from lamina.export.onnx_branching import add_values
from lamina.export.onnx_graph import Graph, Value, convert, label, register_converter
from lamina.functional.rotary import rope_depends_on_length
from lamina.nn.multi_head_attention import IA3_SCALES, LORA_ADAPTERS

__all__: list[str] = []

_HEADS_FIRST = (0, 2, 1, 3)          # (N, T, h, d) -> (N, h, T, d)
_KEYS_TRANSPOSED = (0, 2, 3, 1)      # (N, T, h, d) -> (N, h, d, T)


def _heads(graph: Graph, x: str, weight: np.ndarray, bias, heads: int, head_dim: int, perm: tuple,
           hint: str) -> str:
    """x W + b (N, T, heads d) split into the heads and transposed by ``perm``."""
    y = graph.node("MatMul", [x, graph.constant(weight, f"{hint}_weight")], f"{hint}_matmul")
    if bias is not None:
        y = graph.node("Add", [y, graph.constant(bias, f"{hint}_bias")], f"{hint}_biased")
    split = graph.constant([0, 0, heads, head_dim], f"{hint}_split", np.int64)
    y = graph.node("Reshape", [y, split], f"{hint}_split_heads")
    return graph.node("Transpose", [y], hint, perm=list(perm))


def _steps(graph: Graph, x: str, hint: str, scalar: bool) -> str:
    """The runtime length T of ``x`` (N, T, ...): a 0-d int64, or a 1-D [T] if not ``scalar``."""
    shape = graph.node("Shape", [x], f"{hint}_shape")
    index = graph.scalar(1, f"{hint}_time_axis") if scalar else graph.constant(
        [1], f"{hint}_time_axis", np.int64)
    return graph.node("Gather", [shape, index], f"{hint}_steps", axis=0)


def _repeat_heads(graph: Graph, heads: str, layer: nn.MultiHeadAttention, hint: str) -> str:
    """Grouped-query attention: (N, g, T, d) -> (N, h, T, d), key/value head k repeated for
    the h / g query heads k h / g .. (k + 1) h / g - 1 that share it."""
    group = layer.num_heads // layer.num_kv_heads
    if group == 1:
        return heads
    spread = graph.node("Unsqueeze", [heads, graph.constant([2], f"{hint}_group_axis", np.int64)],
                        f"{hint}_grouped")
    copies = graph.node("Expand", [spread, graph.constant([1, 1, group, 1, 1], f"{hint}_copies", np.int64)],
                        f"{hint}_repeated")
    shape = graph.constant([0, layer.num_heads, -1, layer.head_dim], f"{hint}_all_heads", np.int64)
    return graph.node("Reshape", [copies, shape], f"{hint}_heads")


def _effective_in_projection(layer: nn.MultiHeadAttention) -> tuple[np.ndarray, np.ndarray | None]:
    """(``in_weight``, ``in_bias`` or None) as the layer computes them in evaluation, copies
    with the adapters not yet merged folded in: on the columns of each adapted projection
    W + (alpha / r) A B (LoRA), then W diag(l) and b * l (IA3, which scales the projection
    after the LoRA term)."""
    weight = np.array(layer.in_weight.numpy())
    bias = np.array(layer.in_bias.numpy()) if layer.use_bias else None
    for part, name in enumerate(LORA_ADAPTERS):
        adapter = layer._modules.get(name)
        if adapter is not None and not adapter.merged:
            weight[:, layer.projection_columns(part)] += np.asarray(adapter.delta_weight())
    for part, name in enumerate(IA3_SCALES):
        scale = layer._modules.get(name)
        if scale is not None and not scale.merged:
            columns = layer.projection_columns(part)
            weight[:, columns] *= scale.scaling.numpy()
            if bias is not None:
                bias[columns] *= scale.scaling.numpy()
    return weight, bias


def _rotate_heads(graph: Graph, heads: str, tables: tuple[str, str], layer: nn.MultiHeadAttention,
                  hint: str) -> str:
    """The rotary turn of ``heads`` (N, h, T, d); with partial rotary (r = ``rotary_dims`` < d)
    only the first r features turn, [rotate(x[..., :r]), x[..., r:]]."""
    r, d = layer.rotary_dims, layer.head_dim
    if r == d:
        return rotate(graph, heads, tables, d, hint)
    axis = graph.constant([-1], f"{hint}_rotary_axis", np.int64)
    bounds = [graph.constant([edge], f"{hint}_rotary_edge{i}", np.int64) for i, edge in enumerate((0, r, d))]
    turning = graph.node("Slice", [heads, bounds[0], bounds[1], axis], f"{hint}_rotary_part")
    passing = graph.node("Slice", [heads, bounds[1], bounds[2], axis], f"{hint}_pass_part")
    return graph.node("Concat", [rotate(graph, turning, tables, r, f"{hint}_part"), passing],
                      f"{hint}_partly_rotated", axis=-1)


def _soft_cap(graph: Graph, scores: str, cap: float, hint: str) -> str:
    """c tanh(s / c) of the scores, before any bias or mask."""
    shrunk = graph.node("Mul", [scores, graph.constant(1.0 / cap, f"{hint}_inverse_cap")], f"{hint}_shrunk_scores")
    return graph.node("Mul", [graph.node("Tanh", [shrunk], f"{hint}_tanh_scores"),
                              graph.constant(cap, f"{hint}_cap")], f"{hint}_capped_scores")


def _check_attention(layer: nn.MultiHeadAttention, value: Value, causal: bool) -> None:
    if len(value.shape) != 3:
        raise NotImplementedError(f"export_onnx: {layer._label()} expects a sequence (batch, time, features), got "
                                  f"a value of shape {value.shape}")
    if layer.__dict__.get("prefix_keys_values") is not None:
        raise NotImplementedError(f"export_onnx: {layer._label()} has prefix keys and values attached (prefix "
                                  "tuning, PrefixTuningLM); they have no ONNX form: export the model without them")
    extras = [option for option in ("add_bias_kv", "add_zero_attn") if getattr(layer, option, False)]
    if extras or getattr(layer, "separate_projections", False):
        what = ", ".join(extras) if extras else "kdim/vdim different from embed_dim"
        raise NotImplementedError(f"export_onnx: {layer._label()} has {what}, which the export does not "
                                  "write; export a layer without it")
    if layer.rotary and rope_depends_on_length(layer.rotary_scaling):
        kind = layer.rotary_scaling.get("rope_type", layer.rotary_scaling.get("type"))
        raise NotImplementedError(f"export_onnx: {layer._label()} has a {kind!r} rope_scaling, whose rotary "
                                  "frequencies change with the length of each call; the export fixes them, so "
                                  "it takes the static kinds only ('default', 'linear', 'llama3', 'yarn')")
    if layer.window is not None and not causal:
        raise ValueError(f"export_onnx: {layer._label()} has a sliding window (window={layer.window}), which is "
                         "causal; it runs inside a causal TransformerEncoderLayer only")


def self_attention(graph: Graph, layer: nn.MultiHeadAttention, value: Value, causal: bool, hint: str) -> Value:
    """``layer(x, causal=causal)`` (evaluation mode: no dropout) for x = ``value`` (N, T, E),
    with the layer's rotary positions, grouped key/value heads, ALiBi biases and sliding
    window (:mod:`lamina.export.onnx_attention_positions`) and its LoRA and IA3 adapters
    folded into the projections."""
    _check_attention(layer, value, causal)
    d, x = layer.head_dim, value.name
    scale = 1.0 / np.sqrt(d) if layer.scale is None else layer.scale
    w, b = _effective_in_projection(layer)

    def part(k: int):
        cols = layer.projection_columns(k)
        return w[:, cols], None if b is None else b[cols]

    (w_q, b_q), (w_k, b_k), (w_v, b_v) = part(0), part(1), part(2)
    h, g = layer.num_heads, layer.num_kv_heads
    needs_positions = layer.rotary or layer.alibi or causal
    positions = step_positions(graph, x, hint) if needs_positions else None
    q = _heads(graph, x, w_q * scale, None if b_q is None else b_q * scale, h, d, _HEADS_FIRST, f"{hint}_q")
    if layer.rotary or g != h:
        k = _heads(graph, x, w_k, b_k, g, d, _HEADS_FIRST, f"{hint}_k_heads")
        if layer.rotary:
            tables = rotary_tables(graph, positions, layer.rotary_dims, layer.rotary_base, f"{hint}_rotary",
                                   layer.rotary_frequencies, layer.rotary_attention_factor)
            q = _rotate_heads(graph, q, tables, layer, f"{hint}_q")
            k = _rotate_heads(graph, k, tables, layer, f"{hint}_k")
        k = graph.node("Transpose", [_repeat_heads(graph, k, layer, f"{hint}_k")], f"{hint}_k",
                       perm=[0, 1, 3, 2])
    else:
        k = _heads(graph, x, w_k, b_k, g, d, _KEYS_TRANSPOSED, f"{hint}_k")
    v = _repeat_heads(graph, _heads(graph, x, w_v, b_v, g, d, _HEADS_FIRST, f"{hint}_v"), layer, f"{hint}_v")
    scores = graph.node("MatMul", [q, k], f"{hint}_scores")                        # (N, h, T, T)
    if layer.logit_softcap is not None:
        scores = _soft_cap(graph, scores, layer.logit_softcap, hint)
    offset = offsets(graph, positions, hint) if layer.alibi or causal else None
    if layer.alibi:
        scores = graph.node("Add", [scores, alibi_bias(graph, offset, h, hint)], f"{hint}_biased_scores")
    if causal:
        masked = graph.constant(-np.inf, f"{hint}_masked")
        keep = causal_keep(graph, offset, hint, layer.window)
        scores = graph.node("Where", [keep, scores, masked], f"{hint}_causal")
    weights = graph.node("Softmax", [scores], f"{hint}_weights", axis=-1)
    context = graph.node("MatMul", [weights, v], f"{hint}_context")                # (N, h, T, d)
    context = graph.node("Transpose", [context], f"{hint}_context_steps", perm=list(_HEADS_FIRST))
    joined = graph.node("Reshape", [context, graph.constant([0, 0, layer.query_dim], f"{hint}_join", np.int64)],
                        f"{hint}_joined")
    out_weight = graph.constant(layer.out_weight.numpy(), f"{hint}_out_weight")
    if not layer.use_out_bias:
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
    x = x + attention(norm1(x)), x = x + ffn(norm2(x)), with ffn(x) = linear2(linear1(x)).
    The sub-layers ``dropout1`` and ``dropout2`` after each branch are converted too: the
    identity, or a bottleneck adapter (:class:`lamina.nn.WithAdapter`) in their place."""
    hint = label(layer)

    def attend(x: Value) -> Value:
        attended = self_attention(graph, layer.self_attention, x, layer.causal, f"{hint}_attention")
        return convert(graph, layer.dropout1, attended)        # identity, or a WithAdapter

    def feed_forward(x: Value) -> Value:
        return convert(graph, layer.dropout2, convert(graph, layer.linear2, convert(graph, layer.linear1, x)))

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
