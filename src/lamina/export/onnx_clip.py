"""ONNX forms of CLIP's towers (:class:`~lamina.models.CLIP` with its ViT image tower,
:class:`~lamina.models.ResNetCLIP` with OpenAI's ModifiedResNet), written by
:func:`export_clip_onnx` as two graphs, each taking any batch size (evaluation mode):

    image graph:  pixel_values (batch, H, W, C) float, NHWC  ->  image_embeds (batch, D)
    text graph:   input_ids (batch, sequence) int64          ->  text_embeds (batch, D)

the embeddings of ``get_image_features`` and ``get_text_features``, not normalised. The ViT
tower is the patch convolution, [class token; patches] + positions (the class token Expanded
to the runtime batch), pre_layrnorm, the encoder layers (:mod:`lamina.export.onnx_attention`)
and post_layernorm of token 0; the ResNet tower its stem, bottlenecks (NCHW from the first
convolution to the attention pool) and the attention pool, whose single query (the mean
token's) attends over the S^2 + 1 tokens. The text graph takes any length up to
``max_position_embeddings`` (the position table is sliced to it) and pools each row at its
highest id, or at the first ``eos_token_id``, by ArgMax and GatherND; it reads the ids
alone, which is exact for padding after the end-of-text token (the causal mask keeps it
from the pooled position). A row without ``eos_token_id`` pools at position 0 here, where
lamina raises an error.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lamina.export import onnx_attention, onnx_layers  # noqa: F401  (the converters used below)
from lamina.export.onnx_activations import ACTIVATIONS
from lamina.export.onnx_branching import add_values
from lamina.export.onnx_graph import Graph, Value, convert, convert_chain, label, register_converter
from lamina.models.clip import CLIP, CLIPTextTransformer, CLIPVisionTransformer
from lamina.models.clip_resnet import AttentionPool2d, CLIPBottleneck, ModifiedResNet, ResNetCLIP

__all__ = ["export_clip_onnx"]


def _relu(graph: Graph, value: Value, hint: str) -> Value:
    return ACTIVATIONS["relu"](graph, value, hint)


def _int64(graph: Graph, values, hint: str) -> str:
    return graph.constant(values, hint, np.int64)


def _mean_over_axis_1(graph: Graph, x: str, hint: str) -> str:
    """ReduceMean over axis 1, keeping it (its axes an attribute before opset 18, an input since)."""
    if (graph.opset or 17) >= 18:
        return graph.node("ReduceMean", [x, _int64(graph, [1], f"{hint}_axes")], hint, keepdims=1)
    return graph.node("ReduceMean", [x], hint, axes=[1], keepdims=1)


# -- the ResNet tower --------------------------------------------------------------------------
@register_converter(CLIPBottleneck)
def _bottleneck(graph: Graph, block: CLIPBottleneck, value: Value) -> Value:
    hint = label(block)
    out = _relu(graph, convert(graph, block.bn1, convert(graph, block.conv1, value)), f"{hint}_relu1")
    out = _relu(graph, convert(graph, block.bn2, convert(graph, block.conv2, out)), f"{hint}_relu2")
    if block.pool is not None:
        out = convert(graph, block.pool, out)
    out = convert(graph, block.bn3, convert(graph, block.conv3, out))
    short = value
    if block.has_downsample:
        short = convert(graph, block.downsample, convert(graph, block.pool, value) if block.pool else value)
    return _relu(graph, add_values(graph, [out, short], f"{hint}_add"), f"{hint}_out")


@register_converter(AttentionPool2d)
def _attention_pool(graph: Graph, pool: AttentionPool2d, value: Value) -> Value:
    """q = q_proj(z_0) / sqrt(d) (the scale folded into W_q, b_q), K and V of all tokens;
    out = c_proj(concat_h softmax(q_h K_h^T) V_h)."""
    hint = label(pool)
    e, h = pool.embed_dim, pool.num_heads
    d = e // h
    x = graph.layout(value, "nhwc").name
    tokens = graph.node("Reshape", [x, _int64(graph, [0, -1, e], f"{hint}_flat")], f"{hint}_tokens")
    mean = _mean_over_axis_1(graph, tokens, f"{hint}_mean")
    z = graph.node("Concat", [mean, tokens], f"{hint}_with_mean", axis=1)
    z = graph.node("Add", [z, graph.constant(pool.positional_embedding.numpy(), f"{hint}_positions")],
                   f"{hint}_z")

    def projected(dense, source: str, scale: float, part: str) -> str:
        weight = graph.constant(dense.weight.numpy() * scale, f"{hint}_{part}_weight")
        y = graph.node("MatMul", [source, weight], f"{hint}_{part}_matmul")
        return graph.node("Add", [y, graph.constant(dense.bias.numpy() * scale, f"{hint}_{part}_bias")],
                          f"{hint}_{part}")

    first = graph.node("Gather", [z, graph.scalar(0, f"{hint}_first")], f"{hint}_z0", axis=1)      # (N, E)
    q = graph.node("Reshape", [projected(pool.q_proj, first, d ** -0.5, "q"),
                               _int64(graph, [0, h, 1, d], f"{hint}_q_heads")], f"{hint}_q_split")
    split = _int64(graph, [0, -1, h, d], f"{hint}_heads")
    k = graph.node("Transpose", [graph.node("Reshape", [projected(pool.k_proj, z, 1.0, "k"), split],
                                            f"{hint}_k_split")], f"{hint}_k_heads", perm=[0, 2, 3, 1])
    v = graph.node("Transpose", [graph.node("Reshape", [projected(pool.v_proj, z, 1.0, "v"), split],
                                            f"{hint}_v_split")], f"{hint}_v_heads", perm=[0, 2, 1, 3])
    weights = graph.node("Softmax", [graph.node("MatMul", [q, k], f"{hint}_scores")], f"{hint}_weights", axis=-1)
    context = graph.node("MatMul", [weights, v], f"{hint}_context")                                  # (N, h, 1, d)
    joined = graph.node("Reshape", [context, _int64(graph, [0, e], f"{hint}_join")], f"{hint}_joined")
    return convert(graph, pool.c_proj, Value(joined, (value.shape[0], e)))


@register_converter(ModifiedResNet)
def _modified_resnet(graph: Graph, tower: ModifiedResNet, value: Value) -> Value:
    stem, rest = tower._path()
    for k, (conv, bn) in enumerate(zip(stem[::2], stem[1::2])):
        value = _relu(graph, convert(graph, bn, convert(graph, conv, value)), f"{label(tower)}_relu{k + 1}")
    return convert_chain(graph, rest, value)


# -- the ViT tower -----------------------------------------------------------------------------
def _batch_of(graph: Graph, x: str, hint: str) -> str:
    """[N], the runtime batch size of ``x``, as a 1-D int64."""
    shape = graph.node("Shape", [x], f"{hint}_shape")
    return graph.node("Gather", [shape, _int64(graph, [0], f"{hint}_batch_axis")], f"{hint}_batch", axis=0)


@register_converter(CLIPVisionTransformer)
def _vision_transformer(graph: Graph, tower: CLIPVisionTransformer, value: Value) -> Value:
    """The pooled states post_layernorm(z_L[:, 0]) (N, E)."""
    hint, e = label(tower), tower.config["hidden_size"]
    patches = graph.layout(convert(graph, tower.patch_embedding, value), "nhwc")
    patches = graph.node("Reshape", [patches.name, _int64(graph, [0, -1, e], f"{hint}_flat")], f"{hint}_patches")
    batch = _batch_of(graph, patches, hint)
    token_shape = graph.node("Concat", [batch, _int64(graph, [1, e], f"{hint}_token_dims")], f"{hint}_token_shape",
                             axis=0)
    token = graph.node("Expand", [graph.constant(tower.class_embedding.numpy().reshape(1, 1, e), f"{hint}_class"),
                                  token_shape], f"{hint}_class_tokens")
    z = graph.node("Concat", [token, patches], f"{hint}_tokens", axis=1)
    z = graph.node("Add", [z, graph.constant(tower.position_embedding.weight.numpy(), f"{hint}_positions")],
                   f"{hint}_embedded")
    x = convert(graph, tower.pre_layrnorm, Value(z, (value.shape[0], tower.num_positions, e)))
    for layer in tower.layers:
        x = convert(graph, layer, x)
    first = graph.node("Gather", [x.name, graph.scalar(0, f"{hint}_first")], f"{hint}_class_state", axis=1)
    return convert(graph, tower.post_layernorm, Value(first, (value.shape[0], e)))


# -- the text tower ----------------------------------------------------------------------------
def _first_positions(graph: Graph, table: np.ndarray, ids: str, hint: str) -> str:
    """table[0 .. T - 1] for the runtime length T of ``ids``."""
    shape = graph.node("Shape", [ids], f"{hint}_shape")
    steps = graph.node("Gather", [shape, _int64(graph, [1], f"{hint}_time_axis")], f"{hint}_steps", axis=0)
    start, axis = _int64(graph, [0], f"{hint}_start"), _int64(graph, [0], f"{hint}_axis")
    return graph.node("Slice", [graph.constant(table, f"{hint}_table"), start, steps, axis], hint)


def _pooled_positions(graph: Graph, tower: CLIPTextTransformer, ids: str, hint: str) -> str:
    """(N, 1) int64: each row's highest id's position, or its first ``eos_token_id``'s."""
    eos = tower.config["eos_token_id"]
    scores = ids if eos is None else graph.node("Equal", [ids, _int64(graph, eos, f"{hint}_eos")], f"{hint}_is_eos")
    scores = graph.node("Cast", [scores], f"{hint}_scores", to=graph.onnx.TensorProto.DOUBLE)
    return graph.node("ArgMax", [scores], f"{hint}_positions", axis=1, keepdims=1)


@register_converter(CLIPTextTransformer)
def _text_transformer(graph: Graph, tower: CLIPTextTransformer, ids: Value) -> Value:
    """The pooled states final_layer_norm(h_L)[eos] (N, E)."""
    hint, e = label(tower), tower.config["hidden_size"]
    table = graph.constant(tower.token_embedding.weight.numpy(), f"{hint}_token_table")
    h = graph.node("Gather", [table, ids.name], f"{hint}_tokens", axis=0)
    positions = _first_positions(graph, tower.position_embedding.weight.numpy(), ids.name, f"{hint}_positions")
    x = Value(graph.node("Add", [h, positions], f"{hint}_embedded"), (*ids.shape, e))
    for layer in tower.layers:
        x = convert(graph, layer, x)
    x = convert(graph, tower.final_layer_norm, x)
    pooled = graph.node("GatherND", [x.name, _pooled_positions(graph, tower, ids.name, hint)], f"{hint}_pooled",
                        batch_dims=1)
    return Value(pooled, (ids.shape[0], e))


# -- the two graphs ----------------------------------------------------------------------------
def _image_graph(graph: Graph, model: CLIP, value: Value) -> Value:
    if isinstance(model, ResNetCLIP):
        return convert(graph, model.visual, value)
    return convert(graph, model.visual_projection, convert(graph, model.vision_model, value))


def _text_graph(graph: Graph, model: CLIP, value: Value) -> Value:
    return convert(graph, model.text_projection, convert(graph, model.text_model, value))


def _write(model: CLIP, path, kind: str, opset: int, dtype, check: bool) -> Path:
    import onnx

    graph = Graph(onnx, dtype, opset)
    if kind == "image":
        v = model.vision_config
        side, channels = v["image_size"], v["num_channels"]
        value = Value(graph.fresh("pixel_values"), (1, side, side, channels))
        dims, elem = ["batch", side, side, channels], onnx.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        out = _image_graph(graph, model, value)
    else:
        value = Value(graph.fresh("input_ids"), (1, model.text_config["max_position_embeddings"]))
        dims, elem = ["batch", "sequence"], onnx.TensorProto.INT64
        out = _text_graph(graph, model, value)
    output = graph.node("Identity", [graph.layout(out, "nhwc").name], f"{kind}_embeds")
    return graph.save(path, f"{label(model)}_{kind}", value.name, elem, dims, output, ["batch", model.projection_dim],
                      check)


def export_clip_onnx(model: CLIP, image_path: str | os.PathLike | None = None,
                     text_path: str | os.PathLike | None = None, opset: int = 17, dtype=np.float32,
                     check: bool = True) -> tuple[Path | None, Path | None]:
    """Write the image tower of ``model`` (a :class:`~lamina.models.CLIP` or
    :class:`~lamina.models.ResNetCLIP`) to ``image_path`` and its text tower to
    ``text_path`` as ONNX models (module docstring); either may be None. Inputs
    'pixel_values' and 'input_ids', outputs 'image_embeds' and 'text_embeds', the batch axis
    free. Weights and float values are ``dtype``; ``check`` runs ONNX's checker; files are
    written atomically. Returns (image path, text path), None for a graph not asked for."""
    try:
        import onnx  # noqa: F401
    except ImportError:
        raise ImportError("export_clip_onnx needs the onnx package: pip install 'lamina[onnx]'") from None
    if not isinstance(model, CLIP):
        raise TypeError(f"export_clip_onnx: expected a CLIP model, got {type(model).__name__}")
    if image_path is None and text_path is None:
        raise ValueError("export_clip_onnx: give image_path, text_path or both")
    model._ensure_built()
    image = None if image_path is None else _write(model, image_path, "image", opset, dtype, check)
    text = None if text_path is None else _write(model, text_path, "text", opset, dtype, check)
    return image, text
