"""ONNX forms (evaluation mode) of the scaled weight-standardized convolution, SAGAN's
self-attention block, the noisy Dense, the Linformer and Nystromformer attentions and CaiT's
LayerScale, talking-heads and class attention:

    ScaledStdConv2D        one Conv with W_hat = g gamma (W - mean W) / (sqrt(N) sqrt(var W + eps)),
                           computed from the weights and gains at export
    SelfAttention2D        the query, key and value projections (MatMuls on the channel axis),
                           the 2x2 MaxPool of keys and values when pooled, softmax(q k^T) v, the
                           output projection and x + gamma o(.)
    NoisyDense             x mu_W + mu_b and the activation (evaluation uses the mean weights);
                           a layer in training mode, which adds weight noise, is refused
    LinformerAttention     per head softmax(Q (E K)^T / sqrt(d)) (F V) with the first T columns
                           of E and F, T the exported length (at most max_seq_len)
    NystromAttention       the segment-mean landmarks, the three softmax kernels and the
                           pseudo-inverse iteration Z <- Z (13 I - AZ (15 I - AZ (7 I - AZ))) / 4
                           unrolled as MatMuls from Z_0 = A^T / (|A|_1 |A|_inf); the depthwise
                           value convolution as a grouped Conv over (time, head features)
    LayerScale             x gamma
    TalkingHeadsAttention  A = P_w softmax(P_l (Q K^T / sqrt(d))), the heads mixed by MatMuls
                           on a heads-last axis; then A V and the output projection
    ClassAttention         the class token's query against all tokens' keys and values:
                           (N, 1 + P, D) -> (N, 1, D)
    CaiTBlock,             the two LayerScale'd residual branches (stochastic depth is the
    ClassAttentionBlock    identity); the class-attention block updates the class token and
                           joins it again to the patches by Concat

Linformer's and Nystromformer's graphs hold the sequence length they were exported for.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import nn
from lamina.autograd import no_grad
from lamina.export.onnx_activations import layer_activation
from lamina.export.onnx_graph import Graph, Value, convert, label, register_converter
from lamina.export.onnx_layers import _conv
from lamina.models.cait import CaiTBlock, ClassAttention, ClassAttentionBlock, LayerScale, TalkingHeadsAttention

__all__: list[str] = []


def _reshape(graph: Graph, name: str, target, hint: str) -> str:
    return graph.node("Reshape", [name, graph.constant(list(target), f"{hint}_shape", np.int64)], hint)


def _scaled(graph: Graph, name: str, factor: float, hint: str) -> str:
    return graph.node("Mul", [name, graph.constant(factor, f"{hint}_factor")], hint)


def _softmax(graph: Graph, name: str, hint: str, axis: int = -1) -> str:
    return graph.node("Softmax", [name], hint, axis=axis)


def _keys_last(graph: Graph, name: str, hint: str) -> str:
    """(N, H, T, d) -> (N, H, d, T)."""
    return graph.node("Transpose", [name], hint, perm=[0, 1, 3, 2])


def _attention(graph: Graph, q: str, k: str, v: str, scale: float, hint: str) -> str:
    """softmax(scale q k^T) v over the last two axes."""
    scores = _scaled(graph, graph.node("MatMul", [q, _keys_last(graph, k, f"{hint}_keys_t")], f"{hint}_qk"),
                     scale, f"{hint}_scores")
    return graph.node("MatMul", [_softmax(graph, scores, f"{hint}_weights"), v], hint)


def _split_heads(graph: Graph, name: str, tokens: int, heads: int, width: int, hint: str) -> str:
    """(N, T, H d) -> (N, H, T, d)."""
    split = _reshape(graph, name, (0, tokens, heads, width // heads), f"{hint}_split")
    return graph.node("Transpose", [split], hint, perm=[0, 2, 1, 3])


def _merge_heads(graph: Graph, name: str, tokens: int, width: int, hint: str) -> str:
    """(N, H, T, d) -> (N, T, H d)."""
    joined = graph.node("Transpose", [name], f"{hint}_tokens_first", perm=[0, 2, 1, 3])
    return _reshape(graph, joined, (0, tokens, width), hint)


def _check_tokens(layer, value: Value, width: int) -> None:
    if len(value.shape) != 3 or value.shape[-1] != width:
        raise NotImplementedError(f"export_onnx: {layer._label()} ({type(layer).__name__}) reads tokens (batch, "
                                  f"time, {width}); got a value of shape {value.shape}")


# -- convolution, self-attention on images, noisy Dense ------------------------------------------
@register_converter(nn.ScaledStdConv2D)
def _scaled_std_conv2d(graph: Graph, layer: nn.ScaledStdConv2D, value: Value) -> Value:
    with no_grad():
        weight = layer.standardized_weight().numpy()
    bias = layer.bias.numpy() if layer.use_bias else None
    out = _conv(graph, value, weight, bias, layer.groups, label(layer), layer.stride, layer.padding, layer.dilation)
    return layer_activation(graph, layer, out)


def _max_pool_2x2(graph: Graph, value: Value, hint: str) -> Value:
    value = graph.layout(value, "nchw")
    n, h, w, c = value.shape
    pooled = graph.node("MaxPool", [value.name], hint, kernel_shape=[2, 2], strides=[2, 2])
    return graph.layout(Value(pooled, (n, h // 2, w // 2, c), "nchw"), "nhwc")


@register_converter(nn.SelfAttention2D)
def _self_attention2d(graph: Graph, layer: nn.SelfAttention2D, value: Value) -> Value:
    if len(value.shape) != 4 or value.shape[-1] != layer.channels:
        raise NotImplementedError(f"export_onnx: {layer._label()} (SelfAttention2D) reads images (batch, h, w, "
                                  f"{layer.channels}); got a value of shape {value.shape}")
    hint = label(layer)
    x = graph.layout(value, "nhwc")
    n, h, w, c = x.shape
    queries, keys, values = (convert(graph, projection, x) for projection in (layer.query, layer.key, layer.value))
    if layer.pooled:
        keys = _max_pool_2x2(graph, keys, f"{hint}_key_pool")
        values = _max_pool_2x2(graph, values, f"{hint}_value_pool")
    q = _reshape(graph, queries.name, (0, h * w, queries.shape[-1]), f"{hint}_queries")
    flat_keys, flat_values = ((0, kv.shape[1] * kv.shape[2], kv.shape[3]) for kv in (keys, values))
    k = graph.node("Transpose", [_reshape(graph, keys.name, flat_keys, f"{hint}_keys")], f"{hint}_keys_t",
                   perm=[0, 2, 1])
    weights = _softmax(graph, graph.node("MatMul", [q, k], f"{hint}_scores"), f"{hint}_weights")
    attended = graph.node("MatMul", [weights, _reshape(graph, values.name, flat_values, f"{hint}_values")],
                          f"{hint}_attended")
    attended = Value(_reshape(graph, attended, (0, h, w, values.shape[-1]), f"{hint}_attended_map"),
                     (n, h, w, values.shape[-1]))
    out = graph.layout(convert(graph, layer.output, attended), "nhwc")
    gated = graph.node("Mul", [out.name, graph.constant(layer.gamma.numpy(), f"{hint}_gamma")], f"{hint}_gated")
    return Value(graph.node("Add", [x.name, gated], hint), x.shape)


@register_converter(nn.NoisyDense)
def _noisy_dense(graph: Graph, layer: nn.NoisyDense, value: Value) -> Value:
    """Evaluation mode: y = g(x mu_W + mu_b)."""
    if layer.training:
        raise NotImplementedError(f"export_onnx: {layer._label()} (NoisyDense) is in training mode, where it adds "
                                  "the weight noise sigma * eps; the export writes the mean weights mu of evaluation: "
                                  "call model.eval() first")
    value = graph.layout(value, "nhwc")
    hint = label(layer)
    product = graph.node("MatMul", [value.name, graph.constant(layer.weight_mu.numpy(), f"{hint}_weight_mu")],
                         f"{hint}_matmul")
    out = graph.node("Add", [product, graph.constant(layer.bias_mu.numpy(), f"{hint}_bias_mu")], hint)
    return layer_activation(graph, layer, Value(out, (*value.shape[:-1], layer.units)))


# -- Linformer and Nystromformer ----------------------------------------------------------------
def _head_projections(graph: Graph, layer, value: Value, names: tuple, hint: str) -> list[str]:
    tokens = value.shape[1]
    return [_split_heads(graph, convert(graph, getattr(layer, p), value).name, tokens, layer.num_heads,
                         layer.embed_dim, f"{hint}_{p}_heads") for p in names]


def _output_projection(graph: Graph, layer, heads: str, value: Value, hint: str) -> Value:
    merged = _merge_heads(graph, heads, value.shape[1], layer.embed_dim, f"{hint}_merged")
    return convert(graph, layer.out_proj, Value(merged, value.shape))


@register_converter(nn.LinformerAttention)
def _linformer(graph: Graph, layer: nn.LinformerAttention, value: Value) -> Value:
    _check_tokens(layer, value, layer.embed_dim)
    tokens = value.shape[1]
    if tokens > layer.max_seq_len:
        raise NotImplementedError(f"export_onnx: {layer._label()} (LinformerAttention) takes at most max_seq_len "
                                  f"{layer.max_seq_len} steps; got a value of shape {value.shape}")
    hint = label(layer)
    q, k, v = _head_projections(graph, layer, value, ("q_proj", "k_proj", "v_proj"), hint)
    e = layer.key_projection.numpy()[:, :tokens]
    f = e if layer.sharing != "none" else layer.value_projection.numpy()[:, :tokens]
    keys = graph.node("MatMul", [graph.constant(e, f"{hint}_e"), k], f"{hint}_projected_keys")
    values = graph.node("MatMul", [graph.constant(f, f"{hint}_f"), v], f"{hint}_projected_values")
    heads = _attention(graph, q, keys, values, 1.0 / math.sqrt(layer.head_dim), f"{hint}_heads")
    return _output_projection(graph, layer, heads, value, hint)


def _reduce_kept(graph: Graph, op: str, name: str, axis: int, hint: str) -> str:
    """``op`` over one axis, kept (the axes an input from opset 13 for ReduceSum, 18 for the others)."""
    if (graph.opset or 17) >= (13 if op == "ReduceSum" else 18):
        return graph.node(op, [name, graph.constant([axis], f"{hint}_axes", np.int64)], hint, keepdims=1)
    return graph.node(op, [name], hint, axes=[axis], keepdims=1)


def _segment_means(graph: Graph, name: str, heads: int, tokens: int, width: int, landmarks: int, hint: str) -> str:
    """(N, H, T, d) -> (N, H, m, d): the means of m consecutive segments of T / m steps."""
    segments = _reshape(graph, name, (0, heads, landmarks, tokens // landmarks, width), f"{hint}_segments")
    means = _reduce_kept(graph, "ReduceMean", segments, 3, f"{hint}_mean")
    return _reshape(graph, means, (0, heads, landmarks, width), hint)


def _pseudo_inverse(graph: Graph, a: str, size: int, iterations: int, hint: str) -> str:
    """The Nystromformer iteration from Z_0 = A^T / (max column sum |A| * max row sum |A|)."""
    magnitude = graph.node("Abs", [a], f"{hint}_abs")
    column = _reduce_kept(graph, "ReduceMax", _reduce_kept(graph, "ReduceSum", magnitude, -2, f"{hint}_col_sums"),
                          -1, f"{hint}_col_norm")
    row = _reduce_kept(graph, "ReduceMax", _reduce_kept(graph, "ReduceSum", magnitude, -1, f"{hint}_row_sums"),
                       -2, f"{hint}_row_norm")
    norms = graph.node("Mul", [column, row], f"{hint}_norms")
    z = graph.node("Div", [_keys_last(graph, a, f"{hint}_a_t"), norms], f"{hint}_z0")
    eye = np.eye(size)
    seven, fifteen, thirteen = (graph.constant(c * eye, f"{hint}_{c}_eye") for c in (7, 15, 13))
    for i in range(iterations):
        step = f"{hint}_step{i}"
        az = graph.node("MatMul", [a, z], f"{step}_az")
        inner = graph.node("MatMul", [az, graph.node("Sub", [seven, az], f"{step}_7")], f"{step}_az7")
        middle = graph.node("MatMul", [az, graph.node("Sub", [fifteen, inner], f"{step}_15")], f"{step}_az15")
        z = _scaled(graph, graph.node("MatMul", [z, graph.node("Sub", [thirteen, middle], f"{step}_13")],
                                      f"{step}_product"), 0.25, f"{step}_z")
    return z


@register_converter(nn.NystromAttention)
def _nystrom(graph: Graph, layer: nn.NystromAttention, value: Value) -> Value:
    _check_tokens(layer, value, layer.embed_dim)
    tokens, m = value.shape[1], layer.num_landmarks
    if tokens % m:
        raise NotImplementedError(f"export_onnx: {layer._label()} (NystromAttention) needs num_landmarks {m} to "
                                  f"divide the sequence length; got a value of shape {value.shape}")
    hint = label(layer)
    heads, d = layer.num_heads, layer.head_dim
    q, k, v = _head_projections(graph, layer, value, ("q_proj", "k_proj", "v_proj"), hint)
    q_marks = _segment_means(graph, q, heads, tokens, d, m, f"{hint}_q_landmarks")
    k_marks = _segment_means(graph, k, heads, tokens, d, m, f"{hint}_k_landmarks")
    scale = 1.0 / math.sqrt(d)

    def kernel(a: str, b: str, name: str) -> str:
        scores = graph.node("MatMul", [a, _keys_last(graph, b, f"{hint}_{name}_t")], f"{hint}_{name}_qk")
        return _softmax(graph, _scaled(graph, scores, scale, f"{hint}_{name}_scores"), f"{hint}_{name}")

    inverse = _pseudo_inverse(graph, kernel(q_marks, k_marks, "kernel2"), m, layer.pinv_iterations, f"{hint}_pinv")
    left = graph.node("MatMul", [kernel(q, k_marks, "kernel1"), inverse], f"{hint}_left")
    right = graph.node("MatMul", [kernel(q_marks, k, "kernel3"), v], f"{hint}_right")
    out = graph.node("MatMul", [left, right], f"{hint}_heads")
    if layer.conv_kernel_size is not None:
        size = layer.conv_kernel_size
        before = (size - 1) // 2
        weight = layer.conv_kernel.numpy().reshape(heads, 1, size, 1)
        conv = graph.node("Conv", [v, graph.constant(weight, f"{hint}_conv_weight")], f"{hint}_value_conv",
                          kernel_shape=[size, 1], pads=[before, 0, size - 1 - before, 0], group=heads)
        out = graph.node("Add", [out, conv], f"{hint}_heads_conv")
    return _output_projection(graph, layer, out, value, hint)


# -- CaiT's blocks -----------------------------------------------------------------------------
@register_converter(LayerScale)
def _layer_scale(graph: Graph, layer: LayerScale, value: Value) -> Value:
    value = graph.layout(value, "nhwc")
    return graph.like(value, graph.node("Mul", [value.name, graph.constant(layer.gamma.numpy(),
                                                                           f"{label(layer)}_gamma")], label(layer)))


def _dense_on(graph: Graph, dense: nn.Dense, name: str, shape: tuple) -> str:
    return convert(graph, dense, Value(name, shape)).name


@register_converter(TalkingHeadsAttention)
def _talking_heads(graph: Graph, layer: TalkingHeadsAttention, value: Value) -> Value:
    _check_tokens(layer, value, layer.dim)
    hint = label(layer)
    n, tokens, dim = value.shape
    heads = layer.num_heads
    qkv = convert(graph, layer.qkv, value).name
    split = _reshape(graph, qkv, (0, tokens, 3, heads, dim // heads), f"{hint}_qkv_split")
    stacked = graph.node("Transpose", [split], f"{hint}_qkv_heads", perm=[2, 0, 3, 1, 4])
    q, k, v = (graph.node("Gather", [stacked, graph.scalar(i, f"{hint}_index{i}")], f"{hint}_{part}", axis=0)
               for i, part in enumerate("qkv"))
    logits = graph.node("MatMul", [_scaled(graph, q, layer.scale, f"{hint}_q_scaled"),
                                   _keys_last(graph, k, f"{hint}_k_t")], f"{hint}_logits")
    pairs = (n, tokens, tokens, heads)
    heads_last = graph.node("Transpose", [logits], f"{hint}_heads_last", perm=[0, 2, 3, 1])
    mixed = _dense_on(graph, layer.proj_l, heads_last, pairs)
    weights = _dense_on(graph, layer.proj_w, _softmax(graph, mixed, f"{hint}_softmax", axis=2), pairs)
    weights = graph.node("Transpose", [weights], f"{hint}_weights", perm=[0, 3, 1, 2])
    attended = graph.node("MatMul", [weights, v], f"{hint}_attended")
    return convert(graph, layer.proj, Value(_merge_heads(graph, attended, tokens, dim, f"{hint}_merged"),
                                            value.shape))


@register_converter(ClassAttention)
def _class_attention(graph: Graph, layer: ClassAttention, value: Value) -> Value:
    _check_tokens(layer, value, layer.dim)
    hint = label(layer)
    n, tokens, dim = value.shape
    cls = graph.node("Slice", [value.name, graph.constant([0], f"{hint}_start", np.int64),
                               graph.constant([1], f"{hint}_end", np.int64),
                               graph.constant([1], f"{hint}_token_axis", np.int64)], f"{hint}_cls")
    query = _split_heads(graph, _dense_on(graph, layer.q, cls, (n, 1, dim)), 1, layer.num_heads, dim, f"{hint}_q")
    k, v = (_split_heads(graph, convert(graph, dense, value).name, tokens, layer.num_heads, dim, f"{hint}_{part}")
            for dense, part in ((layer.k, "k"), (layer.v, "v")))
    heads = _attention(graph, query, k, v, 1.0 / math.sqrt(dim // layer.num_heads), f"{hint}_heads")
    merged = _merge_heads(graph, heads, 1, dim, f"{hint}_merged")
    return convert(graph, layer.proj, Value(merged, (n, 1, dim)))


def _branch(graph: Graph, parts: tuple, value: Value, hint: str) -> Value:
    """value + the chain of ``parts`` applied to ``value``."""
    out = value
    for part in parts:
        out = convert(graph, part, out)
    return graph.like(value, graph.node("Add", [value.name, graph.layout(out, "nhwc").name], hint))


@register_converter(CaiTBlock)
def _cait_block(graph: Graph, block: CaiTBlock, value: Value) -> Value:
    _check_tokens(block, value, block.dim)
    hint = label(block)
    x = _branch(graph, (block.norm1, block.attn, block.ls1, block.drop_path), value, f"{hint}_attention_residual")
    return _branch(graph, (block.norm2, block.mlp, block.ls2, block.drop_path), x, hint)


@register_converter(ClassAttentionBlock)
def _class_attention_block(graph: Graph, block: ClassAttentionBlock, value: Value) -> Value:
    _check_tokens(block, value, block.dim)
    hint = label(block)
    n, tokens, dim = value.shape

    def tokens_slice(start: int, end: int, name: str) -> str:
        return graph.node("Slice", [value.name, graph.constant([start], f"{hint}_{name}_start", np.int64),
                                    graph.constant([end], f"{hint}_{name}_end", np.int64),
                                    graph.constant([1], f"{hint}_{name}_axis", np.int64)], f"{hint}_{name}")

    update = value
    for part in (block.norm1, block.attn, block.ls1, block.drop_path):
        update = convert(graph, part, update)
    cls = Value(graph.node("Add", [tokens_slice(0, 1, "cls"), update.name], f"{hint}_cls_attended"), (n, 1, dim))
    cls = _branch(graph, (block.norm2, block.mlp, block.ls2, block.drop_path), cls, f"{hint}_cls_out")
    joined = graph.node("Concat", [cls.name, tokens_slice(1, tokens, "patches")], hint, axis=1)
    return Value(joined, value.shape)
