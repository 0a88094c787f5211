"""ONNX forms of the zoo's timm-named models (evaluation mode): MLP-Mixer and ResMLP blocks,
ResMLP's Affine, ConvMixer's residual and DeiT (its attention, blocks and the whole network).

    Affine             alpha x + beta: Mul, Add
    MixerBlock         U = X + MLP_tokens(LN(X)^T)^T, Y = U + MLP_channels(LN(U)); the token
                       MLP runs between two Transposes (0, 2, 1)
    ResMLPBlock        U = X + ls1 (A Aff(X)^T)^T, Y = U + ls2 MLP_channels(Aff(U))
    ConvMixerResidual  fn(x) + x
    DeiTAttention      [Q K V] = x W_qkv + b (the 1 / sqrt(d) folded into the Q columns), each
                       split into heads; softmax(Q K^T) V joined, then proj
    DeiTBlock          z += attn(norm1(z)); z += mlp(norm2(z))
    DeiT               [cls; (dist;) patches] + pos_embed (the tokens Expanded to the runtime
                       batch), the blocks, norm, head of token 0 (distilled: the mean of head
                       of token 0 and head_dist of token 1)

The Mixer, ResMLP and ConvMixer networks are Sequentials of these and of the built-in layers.
"""

from __future__ import annotations

import numpy as np

from lamina.export import onnx_layers, onnx_sequence_layers  # noqa: F401  (the converters used below)
from lamina.export.onnx_branching import add_values
from lamina.export.onnx_graph import Graph, Value, convert, label, register_converter
from lamina.models.convmixer import ConvMixerResidual
from lamina.models.deit import DeiT, DeiTAttention, DeiTBlock
from lamina.models.mlp_mixer import Affine, MixerBlock, ResMLPBlock

__all__: list[str] = []


def _ints(graph: Graph, values, hint: str) -> str:
    return graph.constant(list(values), hint, np.int64)


def _swap_last_two(graph: Graph, value: Value, hint: str) -> Value:
    n, a, b = value.shape
    return Value(graph.node("Transpose", [value.name], hint, perm=[0, 2, 1]), (n, b, a))


def _across_patches(graph: Graph, layer, value: Value, hint: str) -> Value:
    """``layer`` applied over the patch axis of (N, P, D) tokens."""
    out = convert(graph, layer, _swap_last_two(graph, value, f"{hint}_patches_last"))
    return _swap_last_two(graph, out, f"{hint}_patches_back")


def _scaled(graph: Graph, value: Value, scale: np.ndarray, hint: str) -> Value:
    return Value(graph.node("Mul", [value.name, graph.constant(scale, f"{hint}_scale")], hint), value.shape)


@register_converter(Affine)
def _affine(graph: Graph, layer, value: Value) -> Value:
    hint = label(layer)
    scaled = graph.node("Mul", [value.name, graph.constant(layer.alpha.numpy(), f"{hint}_alpha")], f"{hint}_scaled")
    return graph.like(value, graph.node("Add", [scaled, graph.constant(layer.beta.numpy(), f"{hint}_beta")], hint))


@register_converter(MixerBlock)
def _mixer_block(graph: Graph, layer, value: Value) -> Value:
    hint = label(layer)
    tokens = _across_patches(graph, layer.mlp_tokens, convert(graph, layer.norm1, value), f"{hint}_tokens")
    x = add_values(graph, [value, tokens], f"{hint}_residual1")
    return add_values(graph, [x, convert(graph, layer.mlp_channels, convert(graph, layer.norm2, x))],
                      f"{hint}_residual2")


@register_converter(ResMLPBlock)
def _resmlp_block(graph: Graph, layer, value: Value) -> Value:
    hint = label(layer)
    tokens = _across_patches(graph, layer.linear_tokens, convert(graph, layer.norm1, value), f"{hint}_tokens")
    x = add_values(graph, [value, _scaled(graph, tokens, layer.ls1.numpy(), f"{hint}_ls1")], f"{hint}_residual1")
    channels = convert(graph, layer.mlp_channels, convert(graph, layer.norm2, x))
    return add_values(graph, [x, _scaled(graph, channels, layer.ls2.numpy(), f"{hint}_ls2")], f"{hint}_residual2")


@register_converter(ConvMixerResidual)
def _convmixer_residual(graph: Graph, layer, value: Value) -> Value:
    return add_values(graph, [convert(graph, layer.fn, value), value], f"{label(layer)}_residual")


@register_converter(DeiTAttention)
def _deit_attention(graph: Graph, layer, value: Value) -> Value:
    hint, dim, heads, d = label(layer), layer.dim, layer.num_heads, layer.head_dim
    weight, bias = layer.qkv.weight.numpy(), layer.qkv.bias.numpy()
    split = _ints(graph, [0, 0, heads, d], f"{hint}_split")

    def part(k: int, scale: float, perm: list[int]) -> str:
        cols = slice(k * dim, (k + 1) * dim)
        y = graph.node("MatMul", [value.name, graph.constant(weight[:, cols] * scale, f"{hint}_w{k}")],
                       f"{hint}_matmul{k}")
        y = graph.node("Add", [y, graph.constant(bias[cols] * scale, f"{hint}_b{k}")], f"{hint}_part{k}")
        return graph.node("Transpose", [graph.node("Reshape", [y, split], f"{hint}_heads{k}")], f"{hint}_t{k}",
                          perm=perm)

    q = part(0, d ** -0.5, [0, 2, 1, 3])                     # (N, h, T, d)
    k = part(1, 1.0, [0, 2, 3, 1])                           # (N, h, d, T)
    v = part(2, 1.0, [0, 2, 1, 3])
    weights = graph.node("Softmax", [graph.node("MatMul", [q, k], f"{hint}_scores")], f"{hint}_weights", axis=-1)
    context = graph.node("Transpose", [graph.node("MatMul", [weights, v], f"{hint}_context")],
                         f"{hint}_context_tokens", perm=[0, 2, 1, 3])
    joined = graph.node("Reshape", [context, _ints(graph, [0, 0, dim], f"{hint}_join")], f"{hint}_joined")
    return convert(graph, layer.proj, Value(joined, value.shape))


@register_converter(DeiTBlock)
def _deit_block(graph: Graph, layer, value: Value) -> Value:
    hint = label(layer)
    x = add_values(graph, [value, convert(graph, layer.attn, convert(graph, layer.norm1, value))],
                   f"{hint}_residual1")
    return add_values(graph, [x, convert(graph, layer.mlp, convert(graph, layer.norm2, x))], f"{hint}_residual2")


def _token(graph: Graph, z: Value, index: int, hint: str) -> Value:
    gathered = graph.node("Gather", [z.name, graph.scalar(index, f"{hint}_index")], hint, axis=1)
    return Value(gathered, (z.shape[0], z.shape[2]))


@register_converter(DeiT)
def _deit(graph: Graph, model, value: Value) -> Value:
    hint, dim = label(model), model.dim
    patches = graph.layout(convert(graph, model.patch_embed, value), "nhwc")
    shape = graph.node("Shape", [patches.name], f"{hint}_shape")
    batch = graph.node("Gather", [shape, _ints(graph, [0], f"{hint}_batch_axis")], f"{hint}_batch", axis=0)
    token_shape = graph.node("Concat", [batch, _ints(graph, [1, dim], f"{hint}_token_dims")], f"{hint}_token_shape",
                             axis=0)
    prefix = [graph.node("Expand", [graph.constant(token.numpy(), f"{hint}_token{k}"), token_shape],
                         f"{hint}_tokens{k}") for k, token in enumerate(model.prefix_tokens())]
    z = graph.node("Concat", [*prefix, patches.name], f"{hint}_tokens", axis=1)
    z = graph.node("Add", [z, graph.constant(model.pos_embed.numpy(), f"{hint}_pos_embed")], f"{hint}_embedded")
    rows = model.num_patches + model.num_prefix_tokens
    z = convert(graph, model.norm, convert(graph, model.blocks, Value(z, (value.shape[0], rows, dim))))
    scores = convert(graph, model.head, _token(graph, z, 0, f"{hint}_class_state"))
    if not model.distilled:
        return scores
    scores_dist = convert(graph, model.head_dist, _token(graph, z, 1, f"{hint}_dist_state"))
    total = add_values(graph, [scores, scores_dist], f"{hint}_sum")
    return _scaled(graph, total, np.asarray(0.5), f"{hint}_mean")
