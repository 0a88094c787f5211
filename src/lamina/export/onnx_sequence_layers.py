"""ONNX forms of the 1-D pools, of :class:`lamina.nn.TimeDistributed` and of the course
notes' attention layers (dot-product :class:`lamina.nn.Attention` and Bahdanau's
:class:`lamina.nn.AdditiveAttention`).

Sequences stay (N, T, C), as lamina holds them. The pools run ONNX's 1-D MaxPool and
AveragePool on the sequence transposed to (N, C, T) and back; no node fixes N or T.

TimeDistributed folds the steps into the batch axis, (N, T, ...) -> (N T, ...), writes the
wrapped layer's nodes on that, and unfolds its output, (N T, ...out) -> (N, T, ...out), with
N and T read from the input at run time: no node fixes them.

The attention layers are called on a list, ``layer([query, value])`` or
``layer([query, value, key])``, so they cannot be a layer of a ``Sequential``, whose layers
take one input. Their converters take that list of values, as ``Add`` and ``Concatenate``
do: the converter of a block that holds one calls ``convert(graph, block.attention,
[query, value])``, or :func:`dot_product_attention` for a causal call. Masks and
``return_weights`` are call-time arguments that no converter receives; they have no form
here. For queries q^<t> (N, T_q, d_q), attended activations a^<t'> (N, T_v, d_v) and keys
k^<t'> (default: the activations):

    alpha^<t,t'> = softmax over t' of e^<t,t'>,   c^<t> = sum_t' alpha^<t,t'> a^<t'>
    Attention:          e^<t,t'> = s q^<t> . k^<t'>              (s the learned scale, or 1)
    AdditiveAttention:  e^<t,t'> = v^T tanh(q^<t> W_q + k^<t'> W_k + b)
"""

from __future__ import annotations

import numpy as np

from lamina import nn
from lamina.errors import ShapeError
from lamina.export.onnx_graph import Graph, Value, convert, label, register_converter
from lamina.export.onnx_layers import onnx_ceil_mode, refuse_divisor_override

__all__ = ["additive_attention", "dot_product_attention"]

_CHANNELS_FIRST = [0, 2, 1]       # (N, T, C) <-> (N, C, T)


# -- pooling ---------------------------------------------------------------------------------
def _pool1d(op: str, **extra):
    """Windows of f steps moved by s over the sequence with p steps of padding at both ends
    (-inf for the max, zeros counted in the mean) and lamina's ceil_mode rule (a ceil_mode
    pool that drops a last window starting in the padding is written with ONNX's ceil_mode
    0 for the exported T: see :func:`lamina.export.onnx_layers.onnx_ceil_mode`)."""
    def write(graph: Graph, layer, value: Value) -> Value:
        hint = label(layer)
        shape = layer.compute_output_shape(value.shape)
        ceil_mode = onnx_ceil_mode(value.shape[1:2], [layer.pool_size], [layer.stride], [layer.padding], shape[1:2],
                                   layer.ceil_mode)
        channels_first = graph.node("Transpose", [value.name], f"{hint}_ncl", perm=_CHANNELS_FIRST)
        pooled = graph.node(op, [channels_first], f"{hint}_pool", kernel_shape=[layer.pool_size],
                            strides=[layer.stride], pads=[layer.padding, layer.padding], ceil_mode=ceil_mode, **extra)
        out = graph.node("Transpose", [pooled], hint, perm=_CHANNELS_FIRST)
        return Value(out, shape)
    return write


register_converter(nn.MaxPool1D)(_pool1d("MaxPool"))


@register_converter(nn.AvgPool1D)
def _avg_pool1d(graph: Graph, layer, value: Value) -> Value:
    refuse_divisor_override(layer)
    return _pool1d("AveragePool", count_include_pad=int(layer.count_include_pad))(graph, layer, value)


def _global_pool1d(op: str):
    """(N, T, C) -> (N, C): the mean or the maximum over all T steps of each channel."""
    def write(graph: Graph, layer, value: Value) -> Value:
        hint = label(layer)
        channels_first = graph.node("Transpose", [value.name], f"{hint}_ncl", perm=_CHANNELS_FIRST)
        pooled = graph.node(op, [channels_first], f"{hint}_pool")                  # (N, C, 1)
        out = graph.node("Flatten", [pooled], hint, axis=1)
        return Value(out, layer.compute_output_shape(value.shape))
    return write


register_converter(nn.GlobalAvgPool1D)(_global_pool1d("GlobalAveragePool"))
register_converter(nn.GlobalMaxPool1D)(_global_pool1d("GlobalMaxPool"))


# -- time-distributed layers -------------------------------------------------------------------
@register_converter(nn.TimeDistributed)
def _time_distributed(graph: Graph, layer, value: Value) -> Value:
    """out[:, t] = layer(x[:, t]): Reshape to (N T, ...) (-1 for N T), the wrapped layer,
    then Reshape to (N, T, ...out) with (N, T) taken from the input's Shape."""
    if len(value.shape) < 3:
        raise ShapeError(f"export_onnx: {layer._label()} expects a value (batch, time, ...) with at least 3 axes, "
                         f"got a value of shape {value.shape}")
    value = graph.layout(value, "nhwc")
    hint = label(layer)
    n, t, *step = value.shape
    fold = graph.constant([-1, *step], f"{hint}_fold_shape", np.int64)
    folded = Value(graph.node("Reshape", [value.name, fold], f"{hint}_folded"), (n * t, *step))
    out = graph.layout(convert(graph, layer.layer, folded), "nhwc")
    batch_and_time = graph.node("Slice", [graph.node("Shape", [value.name], f"{hint}_input_shape"),
                                          graph.constant([0], f"{hint}_from", np.int64),
                                          graph.constant([2], f"{hint}_to", np.int64)], f"{hint}_batch_and_time")
    step_out = list(out.shape[1:])
    target = batch_and_time
    if step_out:
        target = graph.node("Concat", [batch_and_time, graph.constant(step_out, f"{hint}_step_shape", np.int64)],
                            f"{hint}_unfold_shape", axis=0)
    return Value(graph.node("Reshape", [out.name, target], hint), (n, t, *step_out))


# -- attention -------------------------------------------------------------------------------
def _query_value_key(layer, inputs) -> tuple[Value, Value, Value]:
    """(query, value, key) from [query, value] or [query, value, key], each (N, T, features)."""
    if not isinstance(inputs, (list, tuple)) or len(inputs) not in (2, 3):
        got = f"{len(inputs)} values" if isinstance(inputs, (list, tuple)) else f"one value of shape {inputs.shape}"
        raise ShapeError(f"export_onnx: {layer._label()} takes a list [query, value] or [query, value, key], got "
                         f"{got}; it cannot be a layer of a Sequential: the converter of the block that calls it "
                         "passes the list (convert(graph, layer, [query, value]))")
    query, value = inputs[0], inputs[1]
    key = inputs[2] if len(inputs) == 3 else value
    for what, x in (("query", query), ("value", value), ("key", key)):
        if len(x.shape) != 3:
            raise ShapeError(f"export_onnx: {layer._label()} expects a {what} of shape (batch, time, features), "
                             f"got a value of shape {x.shape}")
    return query, value, key


def _steps(graph: Graph, x: str, hint: str) -> str:
    """0, 1, ..., T - 1 for the runtime length T of ``x`` (N, T, ...)."""
    shape = graph.node("Shape", [x], f"{hint}_shape")
    steps = graph.node("Gather", [shape, graph.scalar(1, f"{hint}_time_axis")], f"{hint}_steps", axis=0)
    zero, one = graph.scalar(0, f"{hint}_zero"), graph.scalar(1, f"{hint}_one")
    return graph.node("Range", [zero, steps, one], f"{hint}_positions")


def _causal(graph: Graph, scores: str, query: str, key: str, hint: str) -> str:
    """The scores with e^<t,t'> = -inf where t' > t (lamina's causal mask, the queries and
    keys aligned at their first steps), for the runtime lengths of ``query`` and ``key``."""
    queries = _steps(graph, query, f"{hint}_query")
    keys = _steps(graph, key, f"{hint}_key")
    column = graph.node("Unsqueeze", [queries, graph.constant([1], f"{hint}_axis", np.int64)], f"{hint}_column")
    keep = graph.node("LessOrEqual", [keys, column], f"{hint}_keep")                # (T_q, T_k)
    return graph.node("Where", [keep, scores, graph.constant(-np.inf, f"{hint}_masked")], f"{hint}_causal")


def _contexts(graph: Graph, scores: str, query: Value, value: Value, hint: str) -> Value:
    """c = alpha a with alpha = softmax over the keys of the scores (N, T_q, T_v)."""
    weights = graph.node("Softmax", [scores], f"{hint}_weights", axis=-1)
    out = graph.node("MatMul", [weights, value.name], hint)
    return Value(out, (*query.shape[:2], value.shape[2]))


def dot_product_attention(graph: Graph, layer: nn.Attention, inputs: list[Value], causal: bool = False) -> Value:
    """``layer(inputs, causal=causal)``: e = s q k^T (s the learned ``scale`` with
    ``use_scale``, else 1; never 1 / sqrt(d)), alpha = softmax over the keys, c = alpha a."""
    query, value, key = _query_value_key(layer, inputs)
    if query.shape[-1] != key.shape[-1]:
        raise ShapeError(f"export_onnx: {layer._label()}: the query {query.shape} and the key {key.shape} must "
                         "share their feature size")
    hint = label(layer)
    q = query.name
    if layer.use_scale:
        q = graph.node("Mul", [q, graph.constant(layer.scale.numpy(), f"{hint}_scale")], f"{hint}_scaled_query")
    keys_transposed = graph.node("Transpose", [key.name], f"{hint}_keys", perm=_CHANNELS_FIRST)
    scores = graph.node("MatMul", [q, keys_transposed], f"{hint}_scores")                  # (N, T_q, T_v)
    if causal:
        scores = _causal(graph, scores, query.name, key.name, hint)
    return _contexts(graph, scores, query, value, hint)


def additive_attention(graph: Graph, layer: nn.AdditiveAttention, inputs: list[Value]) -> Value:
    """``layer(inputs)``: e = v^T tanh(q W_q + k W_k + b) for every (t, t') pair, formed as
    (N, T_q, 1, u) + (N, 1, T_v, u); alpha = softmax over the keys, c = alpha a."""
    query, value, key = _query_value_key(layer, inputs)
    for what, x, weight in (("query", query, layer.query_kernel), ("key", key, layer.key_kernel)):
        if x.shape[-1] != weight.shape[0]:
            raise ShapeError(f"export_onnx: {layer._label()} was built for a {what} of {weight.shape[0]} "
                             f"features, got a value of shape {x.shape}")
    hint = label(layer)
    q = graph.node("MatMul", [query.name, graph.constant(layer.query_kernel.numpy(), f"{hint}_query_kernel")],
                   f"{hint}_query")
    if layer.use_bias:
        q = graph.node("Add", [q, graph.constant(layer.bias.numpy(), f"{hint}_bias")], f"{hint}_query_biased")
    k = graph.node("MatMul", [key.name, graph.constant(layer.key_kernel.numpy(), f"{hint}_key_kernel")],
                   f"{hint}_key")
    q = graph.node("Unsqueeze", [q, graph.constant([2], f"{hint}_query_axis", np.int64)], f"{hint}_query_rows")
    k = graph.node("Unsqueeze", [k, graph.constant([1], f"{hint}_key_axis", np.int64)], f"{hint}_key_columns")
    hidden = graph.node("Tanh", [graph.node("Add", [q, k], f"{hint}_pairs")], f"{hint}_hidden")   # (N, T_q, T_v, u)
    # a 1-D right operand: MatMul contracts the last axis, leaving (N, T_q, T_v)
    scores = graph.node("MatMul", [hidden, graph.constant(layer.score_vector.numpy(), f"{hint}_score_vector")],
                        f"{hint}_scores")
    return _contexts(graph, scores, query, value, hint)


@register_converter(nn.Attention)
def _attention(graph: Graph, layer, inputs) -> Value:
    return dot_product_attention(graph, layer, inputs)


@register_converter(nn.AdditiveAttention)
def _additive_attention(graph: Graph, layer, inputs) -> Value:
    return additive_attention(graph, layer, inputs)
