"""ONNX forms of :class:`~lamina.models.Llama` and :class:`~lamina.models.Mistral` (Hugging
Face's LlamaForCausalLM and MistralForCausalLM; evaluation mode):

    h = E[x];  h = h + attention(input_layernorm(h))       (causal, rotary, GQA, window)
               h = h + down_proj(silu(gate_proj(m)) * up_proj(m)),  m = post_attention_layernorm(h)
    logits = lm_head(norm(h))                              (E^T when the head is tied)

The attention is the self-attention converter of :mod:`lamina.export.onnx_attention`, whose
rotary tables take each layer's frequencies and attention factor (the static rope scalings
'linear', 'llama3' and 'yarn'; 'dynamic' and 'longrope', whose frequencies follow the length
of each call, are refused with a NotImplementedError) and whose positions and
causal (sliding-window) mask are built from the runtime length: one export takes any batch
size and any length. The graph reads the token ids (N, T) alone (no padding mask); a tied
head reuses the token table's initializer.
"""

from __future__ import annotations

from lamina.export.onnx_activations import ACTIVATIONS
from lamina.export.onnx_attention import self_attention
from lamina.export.onnx_branching import add_values
from lamina.export.onnx_graph import Graph, Value, convert, label, register_converter
from lamina.models.llama import Llama, LlamaDecoderLayer, LlamaMLP

__all__ = ["ID_MODELS", "decode", "embed_tokens"]

ID_MODELS = (Llama,)
"""The models of this module whose graph input is int64 token ids (Mistral is a Llama)."""


_GATE_ACTIVATIONS = {"gelu_pytorch_tanh": "gelu_tanh"}
"""Hugging Face's names of LlamaMLP's gates other than silu -> lamina's activation names."""


@register_converter(LlamaMLP)
def _llama_mlp(graph: Graph, layer: LlamaMLP, value: Value) -> Value:
    """down_proj(act(gate_proj(x)) * up_proj(x)), act silu (SwiGLU) or the tanh GELU (GeGLU)."""
    hint = label(layer)
    gate = convert(graph, layer.gate_proj, value)
    if layer.hidden_act == "silu":
        gated = graph.node("Mul", [gate.name, graph.node("Sigmoid", [gate.name], f"{hint}_sigmoid")],
                           f"{hint}_silu")
    else:
        gated = ACTIVATIONS[_GATE_ACTIVATIONS[layer.hidden_act]](graph, gate, f"{hint}_{layer.hidden_act}").name
    up = convert(graph, layer.up_proj, value)
    product = graph.like(up, graph.node("Mul", [gated, up.name], f"{hint}_product"))
    return convert(graph, layer.down_proj, product)


def sequential_block(graph: Graph, layer, value: Value, attention: str = "self_attn",
                     feed_forward: str = "mlp") -> Value:
    """x = v + attention(input_layernorm(v)), then x + feed_forward(post_attention_layernorm(x)):
    a pre-norm decoder block whose sub-layers are ``layer``'s attributes ``attention`` and
    ``feed_forward`` (their names also name the nodes)."""
    hint = label(layer)
    attended = self_attention(graph, getattr(layer, attention), convert(graph, layer.input_layernorm, value),
                              causal=True, hint=f"{hint}_{attention}")
    x = add_values(graph, [value, attended], f"{hint}_residual1")
    fed = convert(graph, getattr(layer, feed_forward), convert(graph, layer.post_attention_layernorm, x))
    return add_values(graph, [x, fed], f"{hint}_residual2")


@register_converter(LlamaDecoderLayer)
def _llama_decoder_layer(graph: Graph, layer: LlamaDecoderLayer, value: Value) -> Value:
    return sequential_block(graph, layer, value)


def embed_tokens(graph: Graph, model: Llama, ids: Value) -> tuple[str, Value]:
    """The token table's initializer and the embeddings E[x] (N, T, hidden_size) of ``ids``."""
    table = graph.constant(model.embed_tokens.weight.numpy(), f"{label(model)}_embed_tokens_weight")
    return table, Value(graph.node("Gather", [table, ids.name], f"{label(model)}_embed_tokens", axis=0),
                        (*ids.shape, model.hidden_size))


def decode(graph: Graph, model: Llama, x: Value, table: str) -> Value:
    """The blocks, the final norm and the head (E^T of the token ``table`` when tied) on ``x``."""
    for layer in model.layers:
        x = convert(graph, layer, x)
    x = convert(graph, model.norm, x)
    if not model.tie_word_embeddings:
        return convert(graph, model.lm_head, x)
    hint = label(model)
    transposed = graph.node("Transpose", [table], f"{hint}_table_transposed", perm=[1, 0])
    return Value(graph.node("MatMul", [x.name, transposed], f"{hint}_logits"), (*x.shape[:-1], model.vocab_size))


@register_converter(Llama)
def _llama(graph: Graph, model: Llama, ids: Value) -> Value:
    table, x = embed_tokens(graph, model, ids)
    return decode(graph, model, x, table)
