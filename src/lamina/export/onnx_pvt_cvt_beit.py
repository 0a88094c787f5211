"""ONNX forms (evaluation mode) of PVT v2, CvT and BEiT's classifier, their blocks and their
attentions. Maps stay NHWC (token grids) except inside convolutions; every geometry is that of
the exported input size, and the batch axis stays free. Per head the attention is written out
as softmax(Q K^T + B) V with MatMul and Softmax, the scale folded into W_q (and b_q):

    OverlapPatchEmbed / ConvEmbed   Conv, LayerNormalization
    SpatialReductionAttention       Q = x W_q / sqrt(d) on the (N, H W, C) tokens; K, V from
                                    x' = LN(conv_{R x R, stride R}(x)) (R > 1), x'= GELU(LN(
                                    conv_{1x1}(AdaptiveAvgPool_{7x7}(x)))) (linear) or x; the
                                    heads joined back into the (N, H, W, C) map, then W_o
    PVTv2FFN                        MatMul, [Relu], depthwise Conv, Gelu (erf), MatMul
    PVTv2Block / CvTBlock           x + attn(LN(x)), then x + mlp(LN(x)) (stochastic depth is
                                    the identity)
    PVTv2                           the stages, ReduceMean over (h, w) of the last map, head
    ConvProjectionAttention         Q, K, V: depthwise Conv, BatchNormalization (running
                                    statistics), Reshape to tokens, [cls;] MatMul; logits
                                    scaled by 1 / sqrt(C) (the full width)
    CvT                             the stages; in the last the class token (Expanded to the
                                    run-time batch) goes beside the map through every block;
                                    then LayerNormalization and head on it
    BEiTAttention                   x W_qkv + [b_q; 0; b_v]; B (heads, T, T) = T[idx] is
                                    gathered at export into one constant
    BEiTBlock                       x + ls1 attn(LN(x)), then x + ls2 mlp(LN(x))
    BEiT (num_classes)              patch Conv, [cls; patches], the blocks, the mean of the
                                    patch tokens (Slice, ReduceMean), fc_norm, head

Refused with a NotImplementedError naming the layer: a CvT block or attention made
``with_cls_token`` on its own (it reads two inputs; the whole CvT exports), a BEiT made only
for masked image modelling (no ``num_classes``) and a BEiT at another image size than it was
made for (its relative position bias belongs to that patch grid).
"""

from __future__ import annotations

import numpy as np

from lamina.export import onnx_layers, onnx_recent_layers, onnx_spatial_layers  # noqa: F401  (converters used)
from lamina.export.onnx_branching import add_values
from lamina.export.onnx_graph import Graph, Value, convert, convert_chain, label, register_converter
from lamina.models.beit import BEiT, BEiTAttention, BEiTBlock
from lamina.models.cvt import ConvEmbed, ConvProjectionAttention, CvT, CvTBlock
from lamina.models.pvt import OverlapPatchEmbed, PVTv2, PVTv2Block, PVTv2FFN, SpatialReductionAttention

__all__: list[str] = []


def _ints(graph: Graph, values, hint: str) -> str:
    return graph.constant(list(values), hint, np.int64)


def _mean(graph: Graph, name: str, axes: list[int], hint: str) -> str:
    """ReduceMean over ``axes``, not kept (the axes an input from opset 18)."""
    if (graph.opset or 17) >= 18:
        return graph.node("ReduceMean", [name, _ints(graph, axes, f"{hint}_axes")], hint, keepdims=0)
    return graph.node("ReduceMean", [name], hint, axes=list(axes), keepdims=0)


def _tokens(graph: Graph, value: Value, hint: str) -> Value:
    """An NHWC map (N, h, w, C) as tokens (N, h w, C)."""
    value = graph.layout(value, "nhwc")
    batch, height, width, channels = value.shape
    out = graph.node("Reshape", [value.name, _ints(graph, [0, height * width, channels], f"{hint}_shape")], hint)
    return Value(out, (batch, height * width, channels))


def _project(graph: Graph, tokens: str, weight: np.ndarray, bias, hint: str) -> str:
    """tokens W (+ b) on the last axis."""
    out = graph.node("MatMul", [tokens, graph.constant(weight, f"{hint}_weight")], f"{hint}_matmul"
                     if bias is not None else hint)
    if bias is not None:
        out = graph.node("Add", [out, graph.constant(bias, f"{hint}_bias")], hint)
    return out


def _split_heads(graph: Graph, tokens: str, heads: int, d: int, perm, hint: str) -> str:
    """(N, L, heads d) -> (N, L, heads, d) transposed by ``perm`` ((0, 2, 1, 3): (N, heads, L, d))."""
    split = graph.node("Reshape", [tokens, _ints(graph, [0, 0, heads, d], f"{hint}_split")], f"{hint}_split_heads")
    return graph.node("Transpose", [split], hint, perm=list(perm))


def _attend(graph: Graph, q: str, k: str, v: str, tokens: int, width: int, hint: str, bias: str | None = None) -> str:
    """softmax(Q K^T (+ B)) V for Q (N, heads, L, d), K given as (N, heads, d, S), V (N, heads,
    S, d); the heads joined back: (N, ``tokens``, ``width``)."""
    scores = graph.node("MatMul", [q, k], f"{hint}_scores")
    if bias is not None:
        scores = graph.node("Add", [scores, bias], f"{hint}_biased_scores")
    weights = graph.node("Softmax", [scores], f"{hint}_weights", axis=-1)
    context = graph.node("Transpose", [graph.node("MatMul", [weights, v], f"{hint}_context")],
                         f"{hint}_context_tokens", perm=[0, 2, 1, 3])
    return graph.node("Reshape", [context, _ints(graph, [0, tokens, width], f"{hint}_join")], f"{hint}_joined")


def _bias(dense) -> np.ndarray | None:
    return dense.bias.numpy() if dense.use_bias else None


def _scaled(bias, scale: float):
    return None if bias is None else bias * scale


def _residual(graph: Graph, x: Value, branch, norm, hint: str) -> Value:
    """x + branch(norm(x)) (stochastic depth is the identity in evaluation)."""
    return add_values(graph, [graph.layout(x, "nhwc"), graph.layout(convert_chain(graph, (norm, branch), x), "nhwc")],
                      hint)


# -- PVT v2 ------------------------------------------------------------------------------------
@register_converter(OverlapPatchEmbed, ConvEmbed)
def _patch_embed(graph: Graph, layer, value: Value) -> Value:
    return convert_chain(graph, (layer.proj, layer.norm), value)


def _reduced_layers(layer: SpatialReductionAttention) -> tuple:
    if layer.linear:
        return layer.pool, layer.sr, layer.norm, layer.act
    return (layer.sr, layer.norm) if layer.sr_ratio > 1 else ()


@register_converter(SpatialReductionAttention)
def _spatial_reduction_attention(graph: Graph, layer: SpatialReductionAttention, value: Value) -> Value:
    if len(value.shape) != 4 or value.shape[-1] != layer.dim:
        raise NotImplementedError(f"export_onnx: {layer._label()} (SpatialReductionAttention) reads maps (batch, h, "
                                  f"w, {layer.dim}); got a value of shape {value.shape}")
    if not layer.linear and min(value.shape[1:3]) < layer.sr_ratio:
        raise NotImplementedError(f"export_onnx: {layer._label()} (SpatialReductionAttention) needs maps of at least "
                                  f"sr_ratio={layer.sr_ratio} a side; got a value of shape {value.shape}")
    hint, dim, heads = label(layer), layer.dim, layer.num_heads
    d = dim // heads
    value = graph.layout(value, "nhwc")
    queries = _tokens(graph, value, f"{hint}_queries_in")
    keys = _tokens(graph, convert_chain(graph, _reduced_layers(layer), value), f"{hint}_keys_in")
    scale = d ** -0.5
    kv_weight, kv_bias = layer.kv.weight.numpy(), _bias(layer.kv)
    q = _project(graph, queries.name, layer.q.weight.numpy() * scale, _scaled(_bias(layer.q), scale), f"{hint}_q")
    k = _project(graph, keys.name, kv_weight[:, :dim], None if kv_bias is None else kv_bias[:dim], f"{hint}_k")
    v = _project(graph, keys.name, kv_weight[:, dim:], None if kv_bias is None else kv_bias[dim:], f"{hint}_v")
    out = _attend(graph, _split_heads(graph, q, heads, d, (0, 2, 1, 3), f"{hint}_q_heads"),
                  _split_heads(graph, k, heads, d, (0, 2, 3, 1), f"{hint}_k_heads"),
                  _split_heads(graph, v, heads, d, (0, 2, 1, 3), f"{hint}_v_heads"), queries.shape[1], dim, hint)
    grid = graph.node("Reshape", [out, _ints(graph, [0, *value.shape[1:]], f"{hint}_map_shape")], f"{hint}_map")
    return convert(graph, layer.proj, Value(grid, value.shape))


@register_converter(PVTv2FFN)
def _pvt_ffn(graph: Graph, layer: PVTv2FFN, value: Value) -> Value:
    return convert_chain(graph, (layer.fc1, layer.relu, layer.dwconv, layer.act, layer.fc2), value)


@register_converter(PVTv2Block)
def _pvt_block(graph: Graph, layer: PVTv2Block, value: Value) -> Value:
    hint = label(layer)
    x = _residual(graph, value, layer.attn, layer.norm1, f"{hint}_attention_residual")
    return _residual(graph, x, layer.mlp, layer.norm2, f"{hint}_mlp_residual")


@register_converter(PVTv2)
def _pvt_v2(graph: Graph, model: PVTv2, value: Value) -> Value:
    for embed, blocks, norm in model._stages():
        value = convert_chain(graph, (embed, blocks, norm), value)
    value = graph.layout(value, "nhwc")
    pooled = _mean(graph, value.name, [1, 2], f"{label(model)}_pooled")
    return convert(graph, model.head, Value(pooled, (value.shape[0], value.shape[3])))


# -- CvT -----------------------------------------------------------------------------------------
def _refuse_cls(layer) -> None:
    if layer.with_cls_token:
        raise NotImplementedError(f"export_onnx: {layer._label()} ({type(layer).__name__}) was made with_cls_token "
                                  "and reads two inputs (the map and the class token); export the whole CvT instead")


def _conv_attention(graph: Graph, layer: ConvProjectionAttention, value: Value,
                    cls: Value | None) -> tuple[Value, Value | None]:
    """The attention's (map, class token) for the map ``value`` and the class token ``cls``
    (N, 1, C) or None."""
    hint, dim, heads = label(layer), layer.dim, layer.num_heads
    if len(value.shape) != 4 or value.shape[-1] != dim:
        raise NotImplementedError(f"export_onnx: {layer._label()} (ConvProjectionAttention) reads maps (batch, h, w, "
                                  f"{dim}); got a value of shape {value.shape}")
    scale = dim ** -0.5
    projected = []
    for which, conv, dense in (("q", layer.conv_proj_q, layer.proj_q), ("k", layer.conv_proj_k, layer.proj_k),
                               ("v", layer.conv_proj_v, layer.proj_v)):
        tokens = _tokens(graph, convert(graph, conv, value), f"{hint}_{which}_tokens")
        if cls is not None:
            joined = graph.node("Concat", [cls.name, tokens.name], f"{hint}_{which}_with_cls", axis=1)
            tokens = Value(joined, (tokens.shape[0], tokens.shape[1] + 1, dim))
        factor = scale if which == "q" else 1.0
        out = _project(graph, tokens.name, dense.weight.numpy() * factor, _scaled(_bias(dense), factor),
                       f"{hint}_{which}")
        projected.append((out, tokens.shape[1]))
    (q, length), (k, _), (v, _) = projected
    d = dim // heads
    out = _attend(graph, _split_heads(graph, q, heads, d, (0, 2, 1, 3), f"{hint}_q_heads"),
                  _split_heads(graph, k, heads, d, (0, 2, 3, 1), f"{hint}_k_heads"),
                  _split_heads(graph, v, heads, d, (0, 2, 1, 3), f"{hint}_v_heads"), length, dim, hint)
    out = convert(graph, layer.proj, Value(out, (value.shape[0], length, dim)))
    grid_shape = (value.shape[0], *value.shape[1:3], dim)
    if cls is None:
        grid = graph.node("Reshape", [out.name, _ints(graph, [0, *grid_shape[1:]], f"{hint}_map_shape")], f"{hint}_map")
        return Value(grid, grid_shape), None
    starts, ends, axis = (_ints(graph, [n], f"{hint}_{what}") for n, what in ((1, "from"), (length, "to"), (1, "axis")))
    patches = graph.node("Slice", [out.name, starts, ends, axis], f"{hint}_patch_tokens")
    grid = graph.node("Reshape", [patches, _ints(graph, [0, *grid_shape[1:]], f"{hint}_map_shape")], f"{hint}_map")
    token = graph.node("Slice", [out.name, _ints(graph, [0], f"{hint}_cls_from"), starts, axis], f"{hint}_cls")
    return Value(grid, grid_shape), Value(token, cls.shape)


@register_converter(ConvProjectionAttention)
def _conv_projection_attention(graph: Graph, layer: ConvProjectionAttention, value: Value) -> Value:
    _refuse_cls(layer)
    return _conv_attention(graph, layer, value, None)[0]


def _cvt_block(graph: Graph, block: CvTBlock, x: Value, cls: Value | None) -> tuple[Value, Value | None]:
    hint = label(block)
    x = graph.layout(x, "nhwc")
    grid, token = _conv_attention(graph, block.attn, convert(graph, block.norm1, x),
                                  None if cls is None else convert(graph, block.norm1, cls))
    x = add_values(graph, [x, grid], f"{hint}_attention_residual")
    x = _residual(graph, x, block.mlp, block.norm2, f"{hint}_mlp_residual")
    if cls is None:
        return x, None
    cls = add_values(graph, [cls, token], f"{hint}_cls_attention_residual")
    return x, _residual(graph, cls, block.mlp, block.norm2, f"{hint}_cls_mlp_residual")


@register_converter(CvTBlock)
def _cvt_block_alone(graph: Graph, block: CvTBlock, value: Value) -> Value:
    _refuse_cls(block)
    return _cvt_block(graph, block, value, None)[0]


def _class_token(graph: Graph, token: np.ndarray, like: str, hint: str) -> str:
    """The (1, 1, D) ``token`` Expanded to (N, 1, D), N the batch of ``like`` at run time."""
    size = graph.node("Shape", [like], f"{hint}_shape")
    batch = graph.node("Gather", [size, _ints(graph, [0], f"{hint}_batch_axis")], f"{hint}_batch", axis=0)
    shape = graph.node("Concat", [batch, _ints(graph, token.shape[1:], f"{hint}_token_dims")], f"{hint}_token_shape",
                       axis=0)
    return graph.node("Expand", [graph.constant(token, f"{hint}_token"), shape], f"{hint}_cls")


@register_converter(CvT)
def _cvt(graph: Graph, model: CvT, value: Value) -> Value:
    hint, last = label(model), model.num_stages - 1
    cls = None
    for i in range(model.num_stages):
        value = graph.layout(convert(graph, getattr(model, f"patch_embed{i}"), value), "nhwc")
        if i == last:
            token = _class_token(graph, model.cls_token.numpy(), value.name, hint)
            cls = Value(token, (value.shape[0], 1, model.embed_dims[-1]))
        for block in getattr(model, f"blocks{i}"):
            value, cls = _cvt_block(graph, block, value, cls)
    state = graph.node("Gather", [cls.name, graph.scalar(0, f"{hint}_cls_index")], f"{hint}_cls_state", axis=1)
    return convert(graph, model.head, convert(graph, model.norm, Value(state, (value.shape[0], model.embed_dims[-1]))))


# -- BEiT ----------------------------------------------------------------------------------------
@register_converter(BEiTAttention)
def _beit_attention(graph: Graph, layer: BEiTAttention, value: Value) -> Value:
    if len(value.shape) != 3 or tuple(value.shape[1:]) != (layer.tokens, layer.dim):
        raise NotImplementedError(f"export_onnx: {layer._label()} (BEiTAttention) reads tokens (batch, {layer.tokens}, "
                                  f"{layer.dim}) of its {layer.grid_size} patch grid; got a value of shape "
                                  f"{value.shape}")
    hint, dim, heads, tokens = label(layer), layer.dim, layer.num_heads, layer.tokens
    d = dim // heads
    weight = layer.qkv.weight.numpy()
    biases = ((layer.q_bias.numpy(), None, layer.v_bias.numpy()) if layer.qkv_bias else (None, None, None))
    parts = []
    for i, (which, perm) in enumerate((("q", (0, 2, 1, 3)), ("k", (0, 2, 3, 1)), ("v", (0, 2, 1, 3)))):
        factor = layer.scale if which == "q" else 1.0
        out = _project(graph, value.name, weight[:, i * dim:(i + 1) * dim] * factor, _scaled(biases[i], factor),
                       f"{hint}_{which}")
        parts.append(_split_heads(graph, out, heads, d, perm, f"{hint}_{which}_heads"))
    table = layer.relative_position_bias_table.numpy()
    bias = table[layer.relative_position_index.reshape(-1)].reshape(tokens, tokens, heads).transpose(2, 0, 1)
    out = _attend(graph, *parts, tokens, dim, hint, graph.constant(bias, f"{hint}_relative_position_bias"))
    return convert(graph, layer.proj, Value(out, value.shape))


@register_converter(BEiTBlock)
def _beit_block(graph: Graph, block: BEiTBlock, value: Value) -> Value:
    hint = label(block)
    x = add_values(graph, [value, convert_chain(graph, (block.norm1, block.attn, block.ls1), value)],
                   f"{hint}_attention_residual")
    return add_values(graph, [x, convert_chain(graph, (block.norm2, block.mlp, block.ls2), x)],
                      f"{hint}_mlp_residual")


@register_converter(BEiT)
def _beit(graph: Graph, model: BEiT, value: Value) -> Value:
    if model.num_classes is None:
        raise NotImplementedError(f"export_onnx: {model._label()} (BEiT) was made for masked image modelling only "
                                  "(no num_classes); only the classifier exports")
    expected = (*model.image_size, model.channels)
    if tuple(value.shape[1:]) != expected:
        raise NotImplementedError(f"export_onnx: {model._label()} (BEiT) was made for images {expected} (the patch "
                                  f"grid of its relative position bias); got the input shape {value.shape[1:]}")
    hint, dim, patches = label(model), model.dim, model.num_patches
    embedded = graph.layout(convert(graph, model.patch_embed, value), "nhwc")
    cls = _class_token(graph, model.cls_token.numpy(), embedded.name, hint)
    tokens = graph.node("Concat", [cls, embedded.name], f"{hint}_tokens", axis=1)
    tokens = convert(graph, model.blocks, Value(tokens, (value.shape[0], patches + 1, dim)))
    patch_tokens = graph.node("Slice", [tokens.name, _ints(graph, [1], f"{hint}_from"),
                                        _ints(graph, [patches + 1], f"{hint}_to"), _ints(graph, [1], f"{hint}_axis")],
                              f"{hint}_patch_tokens")
    pooled = _mean(graph, patch_tokens, [1], f"{hint}_pooled")
    return convert_chain(graph, (model.fc_norm, model.head), Value(pooled, (value.shape[0], dim)))
