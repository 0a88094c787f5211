"""ONNX forms of the Hugging Face language models of :mod:`lamina.models`: :class:`GPT2`,
:class:`BERT` and :class:`BertForMaskedLM` (evaluation mode: dropout is the identity).

    GPT-2:            h = W_te[x] + W_pe[0 .. T-1];  h = block_L(.. block_1(h));  logits = ln_f(h) W_te^T
    BERT:             h = LayerNorm(W_word[x] + W_pos[0 .. T-1] + W_type[0]);  h = layer_L(.. layer_1(h))
    BertForMaskedLM:  logits = LayerNorm(gelu(h W_t + b_t)) W_word^T + b

The graph reads the token ids (N, T) alone: BERT's segment ids are all 0 (one segment) and
no token is padding. The blocks are encoder layers (:mod:`lamina.export.onnx_attention`);
the position tables are sliced to the runtime length, so one export takes any batch size
and any length up to the number of positions. The output layer reuses the token table's
initializer through a Transpose: the tied weights are stored once.
"""

from __future__ import annotations

import numpy as np

from lamina.export import onnx_attention  # noqa: F401  (the encoder-layer converter the blocks use)
from lamina.export.onnx_graph import Graph, Value, convert, label, register_converter
from lamina.models.bert import BERT, BertForMaskedLM
from lamina.models.gpt2 import GPT2

__all__ = ["ID_MODELS"]

ID_MODELS = (GPT2, BERT, BertForMaskedLM)
"""The models whose graph input is int64 token ids."""


def _embedded(graph: Graph, table: np.ndarray, ids: Value, hint: str) -> tuple[Value, str]:
    """(table[ids] (N, T, E), the table's initializer)."""
    weight = graph.constant(table, f"{hint}_weight")
    out = graph.node("Gather", [weight, ids.name], hint, axis=0)
    return Value(out, (*ids.shape, table.shape[1])), weight


def _tied_output(graph: Graph, hidden: Value, table: str, vocab_size: int, hint: str) -> Value:
    """hidden (N, T, E) times the transposed (V, E) token table: (N, T, V)."""
    transposed = graph.node("Transpose", [table], f"{hint}_table_transposed", perm=[1, 0])
    out = graph.node("MatMul", [hidden.name, transposed], hint)
    return Value(out, (*hidden.shape[:-1], vocab_size))


def _first_rows(graph: Graph, table: np.ndarray, like: str, hint: str) -> str:
    """table[0 .. T-1], T the length (axis 1) of ``like`` read at run time."""
    shape = graph.node("Shape", [like], f"{hint}_shape")
    steps = graph.node("Gather", [shape, graph.constant([1], f"{hint}_time_axis", np.int64)], f"{hint}_steps",
                       axis=0)
    start, axis = (graph.constant([0], f"{hint}_{what}", np.int64) for what in ("start", "axis"))
    return graph.node("Slice", [graph.constant(table, f"{hint}_table"), start, steps, axis], hint)


@register_converter(GPT2)
def _gpt2(graph: Graph, model: GPT2, ids: Value) -> Value:
    hint = label(model)
    x, table = _embedded(graph, model.wte.weight.numpy(), ids, f"{hint}_wte")
    x = convert(graph, model.wpe, x)
    for block in model.h:
        x = convert(graph, block, x)
    x = convert(graph, model.ln_f, x)
    return _tied_output(graph, x, table, model.vocab_size, f"{hint}_logits")


def _bert_hidden(graph: Graph, model: BERT, ids: Value) -> tuple[Value, str]:
    """(BERT's last hidden states, the word table's initializer)."""
    embeddings, hint = model.embeddings, label(model)
    x, table = _embedded(graph, embeddings.word_embeddings.weight.numpy(), ids, f"{hint}_word_embeddings")
    positions = _first_rows(graph, embeddings.position_embeddings.weight.numpy(), ids.name, f"{hint}_positions")
    x = graph.like(x, graph.node("Add", [x.name, positions], f"{hint}_with_positions"))
    segment = graph.constant(embeddings.token_type_embeddings.weight.numpy()[0], f"{hint}_segment_0")
    x = graph.like(x, graph.node("Add", [x.name, segment], f"{hint}_with_segment"))
    x = convert(graph, embeddings.layer_norm, x)
    for layer in model.layer:
        x = convert(graph, layer, x)
    return x, table


@register_converter(BERT)
def _bert(graph: Graph, model: BERT, ids: Value) -> Value:
    return _bert_hidden(graph, model, ids)[0]


@register_converter(BertForMaskedLM)
def _bert_for_masked_lm(graph: Graph, model: BertForMaskedLM, ids: Value) -> Value:
    hint = label(model)
    x, table = _bert_hidden(graph, model.bert, ids)
    x = convert(graph, model.transform_norm, convert(graph, model.transform, x))
    logits = _tied_output(graph, x, table, model.bert.vocab_size, f"{hint}_decoder")
    bias = graph.constant(model.decoder_bias.numpy(), f"{hint}_decoder_bias")
    return graph.like(logits, graph.node("Add", [logits.name, bias], f"{hint}_logits"))
