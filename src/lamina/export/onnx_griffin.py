"""ONNX forms (evaluation mode, a whole sequence from a zero state) of the RG-LRU, Griffin's
recurrent block and the Hawk and Griffin language models (:mod:`lamina.models.griffin`); one
export takes any batch size and any length:

    RGLRU                  r_t = sigma(x_t W_a + b_a), i_t = sigma(x_t W_x + b_x) (the block-
                           diagonal gate weights written out whole), a_t = exp(k r_t) with
                           k = -c softplus(-Lambda) folded at export, b_t = sqrt(1 - a_t^2)
                           i_t x_t (the root in float64, as lamina's expm1 keeps its digits),
                           then the ONNX Scan of h_t = a_t h_{t-1} + b_t from h_0 = 0 that
                           minGRU's export uses (:mod:`lamina.export.onnx_new_sequence_layers`)
    GriffinRecurrentBlock  W_out (GeLU_tanh(W_y x) * RGLRU(conv(W_x x))), conv the causal
                           depthwise Conv over time (k - 1 zeros in front, a group per feature)
    LocalMQAttention       one key and value head broadcast to every query head by MatMul,
                           rotary positions on each head's first rope_dim features ("rotate
                           half"), the causal sliding window built from the run-time length
    GriffinResidualBlock   x + mix(RMSNorm(x)), then x + W_down (GeLU_tanh(W_gate h) * W_up h)
    Hawk / Griffin         h = sqrt(D) E[x] (int64 ids), the blocks, RMSNorm, E^T (tied),
                           cap tanh(z / cap) when cap > 0

A call that continues a cached sequence (``cache``, ``generate``) has no form: the graph
starts every sequence afresh.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import nn
from lamina.export import onnx_zoo_layers  # noqa: F401  (RMSNorm's converter)
from lamina.export.onnx_activations import ACTIVATIONS
from lamina.export.onnx_attention_positions import causal_keep, offsets, rotary_tables, rotate, step_positions
from lamina.export.onnx_branching import add_values
from lamina.export.onnx_graph import Graph, Value, convert, label, register_converter
from lamina.export.onnx_new_sequence_layers import _scan
from lamina.models.griffin import Griffin, GriffinResidualBlock, LocalMQAttention

__all__ = ["ID_MODELS", "SEQUENCE_LAYERS"]

ID_MODELS = (Griffin,)
"""The models of this module whose graph input is int64 token ids (Hawk is a Griffin)."""

SEQUENCE_LAYERS = (nn.RGLRU, nn.GriffinRecurrentBlock, LocalMQAttention)
"""The layers of this module that read (N, T, features) with T free."""


def _ints(graph: Graph, values, hint: str) -> str:
    return graph.constant(list(values), hint, np.int64)


def _check_sequence(layer, value: Value, width: int) -> None:
    if len(value.shape) != 3 or value.shape[-1] != width:
        raise NotImplementedError(f"export_onnx: {layer._label()} ({type(layer).__name__}) reads sequences (batch, "
                                  f"time, {width}); got a value of shape {value.shape}")


def _block_diagonal(blocks: np.ndarray) -> np.ndarray:
    """The (B b, B b) matrix with the B (b, b) ``blocks`` on its diagonal."""
    count, size, _ = blocks.shape
    full = np.zeros((count * size, count * size), dtype=blocks.dtype)
    for i, block in enumerate(blocks):
        full[i * size:(i + 1) * size, i * size:(i + 1) * size] = block
    return full


def _gate(graph: Graph, layer: nn.RGLRU, x: str, which: str, hint: str) -> str:
    weight = _block_diagonal(getattr(layer, f"gate_{which}_weight").numpy())
    mixed = graph.node("MatMul", [x, graph.constant(weight, f"{hint}_weight")], f"{hint}_mixed")
    biased = graph.node("Add", [mixed, graph.constant(getattr(layer, f"gate_{which}_bias").numpy(), f"{hint}_bias")],
                        f"{hint}_biased")
    return graph.node("Sigmoid", [biased], hint)


@register_converter(nn.RGLRU)
def _rglru(graph: Graph, layer: nn.RGLRU, value: Value) -> Value:
    _check_sequence(layer, value, layer.width)
    hint, x = label(layer), value.name
    recurrence, update = _gate(graph, layer, x, "a", f"{hint}_gate_a"), _gate(graph, layer, x, "x", f"{hint}_gate_x")
    rate = -layer.c * np.logaddexp(0.0, -layer.a_param.numpy().astype(np.float64))    # -c softplus(-Lambda)
    log_a = graph.node("Mul", [recurrence, graph.constant(rate, f"{hint}_rate")], f"{hint}_log_a")
    a = graph.node("Exp", [log_a], f"{hint}_a")
    doubled = graph.node("Cast", [a], f"{hint}_a_double", to=graph.onnx.TensorProto.DOUBLE)
    one_minus = graph.node("Sub", [graph.constant([1.0], f"{hint}_one", np.float64),
                                   graph.node("Mul", [doubled, doubled], f"{hint}_a_squared")], f"{hint}_one_minus")
    floored = graph.node("Max", [one_minus, graph.constant([1e-12], f"{hint}_floor", np.float64)], f"{hint}_floored")
    root = graph.node("Cast", [graph.node("Sqrt", [floored], f"{hint}_root_double")], f"{hint}_root",
                      to=graph.helper.np_dtype_to_tensor_dtype(graph.dtype))
    gated = graph.node("Mul", [update, x], f"{hint}_gated_input")
    b = graph.node("Mul", [root, gated], f"{hint}_b")
    return Value(_scan(graph, a, b, layer.width, hint), value.shape)


def _causal_depthwise_conv(graph: Graph, block: nn.GriffinRecurrentBlock, x: str, hint: str) -> str:
    """out_t = sum_i w_i x_{t - (k - 1) + i} + bias on (N, T, L), as a Conv over (N, L, T)."""
    k, width = block.conv_width, block.lru_width
    channels_first = graph.node("Transpose", [x], f"{hint}_channels_first", perm=[0, 2, 1])
    weight = block.conv_weight.numpy().T.reshape(width, 1, k)
    out = graph.node("Conv", [channels_first, graph.constant(weight, f"{hint}_weight"),
                              graph.constant(block.conv_bias.numpy(), f"{hint}_bias")], f"{hint}_conv",
                     kernel_shape=[k], pads=[k - 1, 0], group=width)
    return graph.node("Transpose", [out], hint, perm=[0, 2, 1])


@register_converter(nn.GriffinRecurrentBlock)
def _griffin_recurrent_block(graph: Graph, block: nn.GriffinRecurrentBlock, value: Value) -> Value:
    _check_sequence(block, value, block.width)
    hint = label(block)
    inner = (*value.shape[:-1], block.lru_width)
    gate = ACTIVATIONS["gelu_tanh"](graph, convert(graph, block.linear_y, value), f"{hint}_gate")
    inputs = convert(graph, block.linear_x, value)
    mixed = Value(_causal_depthwise_conv(graph, block, inputs.name, f"{hint}_conv"), inner)
    states = convert(graph, block.rg_lru, mixed)
    product = graph.node("Mul", [states.name, gate.name], f"{hint}_gated")
    return convert(graph, block.linear_out, Value(product, inner))


def _rotated(graph: Graph, heads: str, layer: LocalMQAttention, tables, hint: str) -> str:
    """Rotary positions on the first rope_dim features of heads (N, h, T, head_dim)."""
    rope, d = layer.rope_dim, layer.head_dim
    if rope == 0:
        return heads
    axis = _ints(graph, [-1], f"{hint}_feature_axis")
    first = graph.node("Slice", [heads, _ints(graph, [0], f"{hint}_from"), _ints(graph, [rope], f"{hint}_to"), axis],
                       f"{hint}_rotary_part")
    turned = rotate(graph, first, tables, rope, hint)
    if rope == d:
        return turned
    rest = graph.node("Slice", [heads, _ints(graph, [rope], f"{hint}_rest_from"), _ints(graph, [d], f"{hint}_rest_to"),
                                axis], f"{hint}_plain_part")
    return graph.node("Concat", [turned, rest], f"{hint}_with_positions", axis=-1)


@register_converter(LocalMQAttention)
def _local_mq_attention(graph: Graph, layer: LocalMQAttention, value: Value) -> Value:
    _check_sequence(layer, value, layer.width)
    hint, heads, d = label(layer), layer.num_heads, layer.head_dim
    x = value.name
    q = graph.node("MatMul", [x, graph.constant(layer.q.weight.numpy() / math.sqrt(d), f"{hint}_q_weight")],
                   f"{hint}_q")
    q = graph.node("Transpose", [graph.node("Reshape", [q, _ints(graph, [0, 0, heads, d], f"{hint}_split")],
                                            f"{hint}_q_split")], f"{hint}_q_heads", perm=[0, 2, 1, 3])
    one_head = _ints(graph, [1], f"{hint}_head_axis")
    k, v = (graph.node("Unsqueeze", [graph.node("MatMul", [x, graph.constant(dense.weight.numpy(),
                                                                             f"{hint}_{which}_weight")],
                                                f"{hint}_{which}"), one_head], f"{hint}_{which}_head")
            for which, dense in (("k", layer.k), ("v", layer.v)))                       # (N, 1, T, d)
    positions = step_positions(graph, x, hint)
    tables = rotary_tables(graph, positions, layer.rope_dim, layer.rope_base, f"{hint}_rotary") if layer.rope_dim \
        else None
    q, k = _rotated(graph, q, layer, tables, f"{hint}_q_rope"), _rotated(graph, k, layer, tables, f"{hint}_k_rope")
    scores = graph.node("MatMul", [q, graph.node("Transpose", [k], f"{hint}_k_transposed", perm=[0, 1, 3, 2])],
                        f"{hint}_scores")
    keep = causal_keep(graph, offsets(graph, positions, hint), hint, layer.window)
    masked = graph.node("Where", [keep, scores, graph.constant(-1e30, f"{hint}_masked_score")], f"{hint}_masked")
    weights = graph.node("Softmax", [masked], f"{hint}_weights", axis=-1)
    context = graph.node("Transpose", [graph.node("MatMul", [weights, v], f"{hint}_context")],
                         f"{hint}_context_steps", perm=[0, 2, 1, 3])
    joined = graph.node("Reshape", [context, _ints(graph, [0, 0, layer.width], f"{hint}_join")], f"{hint}_joined")
    return convert(graph, layer.out, Value(joined, value.shape))


@register_converter(GriffinResidualBlock)
def _griffin_residual_block(graph: Graph, block: GriffinResidualBlock, value: Value) -> Value:
    hint = label(block)
    x = add_values(graph, [value, convert(graph, block.mixer, convert(graph, block.norm_mix, value))],
                   f"{hint}_mix_residual")
    h = convert(graph, block.norm_mlp, x)
    gate = ACTIVATIONS["gelu_tanh"](graph, convert(graph, block.mlp_gate, h), f"{hint}_mlp_gelu")
    product = graph.node("Mul", [gate.name, convert(graph, block.mlp_up, h).name], f"{hint}_mlp_product")
    down = convert(graph, block.mlp_down, Value(product, gate.shape))
    return add_values(graph, [x, down], f"{hint}_mlp_residual")


@register_converter(Griffin)
def _griffin(graph: Graph, model: Griffin, ids: Value) -> Value:
    hint = label(model)
    table = graph.constant(model.embed.weight.numpy(), f"{hint}_embed_weight")
    embedded = graph.node("Gather", [table, ids.name], f"{hint}_embed", axis=0)
    scaled = graph.node("Mul", [embedded, graph.constant(math.sqrt(model.width), f"{hint}_embed_scale")],
                        f"{hint}_scaled_embeddings")
    x = Value(scaled, (*ids.shape, model.width))
    for block in model.blocks:
        x = convert(graph, block, x)
    x = convert(graph, model.norm, x)
    logits = graph.node("MatMul", [x.name, graph.node("Transpose", [table], f"{hint}_table_transposed", perm=[1, 0])],
                        f"{hint}_logits")
    cap = model.logits_soft_cap
    if cap > 0:
        shrunk = graph.node("Mul", [logits, graph.constant(1.0 / cap, f"{hint}_inverse_cap")], f"{hint}_shrunk")
        logits = graph.node("Mul", [graph.node("Tanh", [shrunk], f"{hint}_tanh_logits"),
                                    graph.constant(cap, f"{hint}_cap")], f"{hint}_capped")
    return Value(logits, (*ids.shape, model.vocab_size))
