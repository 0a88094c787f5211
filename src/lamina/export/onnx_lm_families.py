"""ONNX forms of the Llama-based language models beyond Llama and Mistral (evaluation mode):

    Qwen2      Llama's graph; biased q/k/v and an unbiased output projection (``out_bias``)
    Phi3       Llama's graph (static rope scalings only, as Llama: 'longrope' is refused)
    Gemma      h = E[x] sqrt(hidden_size) (the factor in the export's float type), RMSNorms
               x / rms(x) * (1 + w) with 1 + w stored, the GeGLU gate by the tanh GELU
    Gemma2     Gemma, with the norms after the attention and around the MLP, the attention's
               scale and soft-capped scores, and logits c tanh(z / c)
    GPTNeoX    h = embed_in[x];  h + attention(ln1(h)) + mlp(ln2(h))  (parallel residual) or
               one branch after the other; LayerNorms, partial rotary, mlp = W2 act(W1 x + b1) + b2
    Mixtral    Llama's blocks with the sparse mixture of SwiGLU experts evaluated densely:
               y = sum_e w_e f_e(x), w the renormalized top-k router probabilities (TopK,
               ScatterElements) and 0 for the others, so every expert runs on every token;
               the outputs equal the sparse dispatch's (an unchosen expert's weight is 0)

The attention of every family is :func:`lamina.export.onnx_attention.self_attention` (causal,
rotary, grouped heads, sliding window): one export takes any batch size and any length.
"""

from __future__ import annotations

import numpy as np

from lamina.export.onnx_activations import ACTIVATIONS
from lamina.export.onnx_attention import self_attention
from lamina.export.onnx_branching import add_values
from lamina.export.onnx_experts import routing_weights
from lamina.export.onnx_graph import Graph, Value, convert, label, register_converter
from lamina.export.onnx_llama import decode, embed_tokens, sequential_block
from lamina.export.onnx_zoo_layers import rms_norm
from lamina.models.gemma import Gemma, Gemma2, Gemma2DecoderLayer, GemmaRMSNorm
from lamina.models.gpt_neox import GPTNeoX, GPTNeoXLayer, GPTNeoXMLP
from lamina.models.mixtral import MixtralDecoderLayer, MixtralSparseMoeBlock

__all__ = ["ID_MODELS"]

ID_MODELS = (GPTNeoX,)
"""The models of this module whose graph input is int64 token ids and that are no Llama."""

_NEOX_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "relu": "relu"}
"""GPT-NeoX's ``hidden_act`` -> lamina's activation names."""


@register_converter(GemmaRMSNorm)
def _gemma_rms_norm(graph: Graph, layer: GemmaRMSNorm, value: Value) -> Value:
    weight = layer.weight.numpy() + np.asarray(1, layer.weight.numpy().dtype) if layer.elementwise_affine else None
    return rms_norm(graph, layer, value, weight)


def _gemma_embeddings(graph: Graph, model: Gemma, ids: Value) -> tuple[str, Value]:
    table, x = embed_tokens(graph, model, ids)
    factor = graph.constant(np.sqrt(model.hidden_size), f"{label(model)}_embed_scale")
    return table, graph.like(x, graph.node("Mul", [x.name, factor], f"{label(model)}_scaled_embeddings"))


@register_converter(Gemma)
def _gemma(graph: Graph, model: Gemma, ids: Value) -> Value:
    table, x = _gemma_embeddings(graph, model, ids)
    return decode(graph, model, x, table)


@register_converter(Gemma2)
def _gemma2(graph: Graph, model: Gemma2, ids: Value) -> Value:
    table, x = _gemma_embeddings(graph, model, ids)
    logits = decode(graph, model, x, table)
    cap = model.final_logit_softcapping
    if cap is None:
        return logits
    hint = label(model)
    shrunk = graph.node("Mul", [logits.name, graph.constant(1.0 / cap, f"{hint}_inverse_cap")], f"{hint}_shrunk")
    curve = graph.node("Tanh", [shrunk], f"{hint}_tanh_logits")
    return graph.like(logits, graph.node("Mul", [curve, graph.constant(cap, f"{hint}_cap")], f"{hint}_capped"))


@register_converter(Gemma2DecoderLayer)
def _gemma2_decoder_layer(graph: Graph, layer: Gemma2DecoderLayer, value: Value) -> Value:
    """x + post_attention_layernorm(attention(input_layernorm(x))), then
    x + post_feedforward_layernorm(mlp(pre_feedforward_layernorm(x)))."""
    hint = label(layer)
    attended = self_attention(graph, layer.self_attn, convert(graph, layer.input_layernorm, value), causal=True,
                              hint=f"{hint}_self_attn")
    x = add_values(graph, [value, convert(graph, layer.post_attention_layernorm, attended)], f"{hint}_residual1")
    fed = convert(graph, layer.mlp, convert(graph, layer.pre_feedforward_layernorm, x))
    return add_values(graph, [x, convert(graph, layer.post_feedforward_layernorm, fed)], f"{hint}_residual2")


@register_converter(GPTNeoXMLP)
def _gpt_neox_mlp(graph: Graph, layer: GPTNeoXMLP, value: Value) -> Value:
    hidden = convert(graph, layer.dense_h_to_4h, value)
    activated = ACTIVATIONS[_NEOX_ACTIVATIONS[layer.hidden_act]](graph, hidden, f"{label(layer)}_{layer.hidden_act}")
    return convert(graph, layer.dense_4h_to_h, activated)


@register_converter(GPTNeoXLayer)
def _gpt_neox_layer(graph: Graph, layer: GPTNeoXLayer, value: Value) -> Value:
    if not layer.use_parallel_residual:
        return sequential_block(graph, layer, value, attention="attention")
    hint = label(layer)
    attended = self_attention(graph, layer.attention, convert(graph, layer.input_layernorm, value), causal=True,
                              hint=f"{hint}_attention")
    fed = convert(graph, layer.mlp, convert(graph, layer.post_attention_layernorm, value))
    return add_values(graph, [add_values(graph, [value, attended], f"{hint}_residual1"), fed], f"{hint}_residual2")


@register_converter(GPTNeoX)
def _gpt_neox(graph: Graph, model: GPTNeoX, ids: Value) -> Value:
    hint = label(model)
    table = graph.constant(model.embed_in.weight.numpy(), f"{hint}_embed_in_weight")
    x = Value(graph.node("Gather", [table, ids.name], f"{hint}_embed_in", axis=0), (*ids.shape, model.hidden_size))
    for layer in model.layers:
        x = convert(graph, layer, x)
    return convert(graph, model.embed_out, convert(graph, model.final_layer_norm, x))


@register_converter(MixtralSparseMoeBlock)
def _mixtral_experts(graph: Graph, layer: MixtralSparseMoeBlock, value: Value) -> Value:
    """y = sum_e w_e f_e(x) over every expert e (see the module docstring)."""
    hint = label(layer)
    weights = routing_weights(graph, layer.gate.weight.numpy(), layer.num_experts_per_tok, value.name, hint)
    expert_axis = graph.constant([-2], f"{hint}_expert_axis", np.int64)
    outputs = [graph.node("Unsqueeze", [convert(graph, expert, value).name, expert_axis], f"{hint}_expert{e}")
               for e, expert in enumerate(layer.experts)]
    stacked = graph.node("Concat", outputs, f"{hint}_experts", axis=-2)                  # (N, T, E, d)
    row = graph.node("Unsqueeze", [weights, expert_axis], f"{hint}_weight_rows")      # (N, T, 1, E)
    mixed = graph.node("MatMul", [row, stacked], f"{hint}_mixed")                       # (N, T, 1, d)
    return graph.like(value, graph.node("Squeeze", [mixed, expert_axis], hint))


@register_converter(MixtralDecoderLayer)
def _mixtral_decoder_layer(graph: Graph, layer: MixtralDecoderLayer, value: Value) -> Value:
    return sequential_block(graph, layer, value, feed_forward="block_sparse_moe")
