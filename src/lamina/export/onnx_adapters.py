"""ONNX forms of the parameter-efficient adapters and of the quantized Dense layer, each as
the layer computes in evaluation, read without changing the model:

    DoRADense         g(x W' + b),  W' = m (W + s A B) / ||W + s A B||_c  (W alone once merged)
    IA3Dense          g(x W' + b'), W' = diag(l) W (on the input) or W diag(l), b' = b * l (on the output)
    IA3Scale          x * l
    LoHaDense, LoKrDense, VeRADense
                      g(x (W + Delta W) + b), Delta W the update each computes (none once merged)
    BottleneckAdapter h + act(h W_down + b_down) W_up + b_up
    WithAdapter       adapter(layer(x))
    QuantDense        g((x / s_in) W + b), W the dequantized weight, stored as a float constant
    PromptTuningLM    a GPT-2-style model reading [E_p; W_te[x]], E_p the virtual embeddings
                      computed now (with the P-tuning encoder, if any) and stored as a constant

Every merged weight is a new array: the layers' parameters stay as they were. Prefix tuning
(:class:`lamina.nn.PrefixTuningLM`), and prompt tuning of a model that is not GPT-2-style,
are refused.
"""

from __future__ import annotations

import numpy as np

from lamina import nn
from lamina.autograd import no_grad
from lamina.export.onnx_activations import layer_activation
from lamina.export.onnx_gpt2_bert import _embedded, _tied_output
from lamina.export.onnx_graph import Graph, Value, convert, label, register_converter
from lamina.nn.adapters import BottleneckAdapter, WithAdapter
from lamina.nn.dora import DoRADense
from lamina.nn.ia3 import IA3Dense, IA3Scale
from lamina.nn.loha import LoHaDense, LoKrDense, VeRADense
from lamina.nn.prompt_tuning import PrefixTuningLM, PromptTuningLM
from lamina.nn.ptq.quant_dense import QuantDense

__all__ = ["ID_MODELS"]

ID_MODELS = (PromptTuningLM,)
"""The wrappers whose graph input is int64 token ids."""


def affine(graph: Graph, value: Value, weight: np.ndarray, bias, hint: str) -> Value:
    """x W + b on the last axis of ``value`` (MatMul, then Add when there is a bias)."""
    value = graph.layout(value, "nhwc")
    out = graph.node("MatMul", [value.name, graph.constant(weight, f"{hint}_weight")],
                     hint if bias is None else f"{hint}_matmul")
    if bias is not None:
        out = graph.node("Add", [out, graph.constant(bias, f"{hint}_bias")], hint)
    return Value(out, (*value.shape[:-1], weight.shape[1]))


def _dense_with(graph: Graph, layer, dense: nn.Dense, value: Value, weight: np.ndarray, bias) -> Value:
    """``dense``'s activation of x ``weight`` + ``bias``, the nodes named after ``layer``."""
    return layer_activation(graph, dense, affine(graph, value, weight, bias, label(layer)))


def _bias(dense: nn.Dense):
    return dense.bias.numpy() if dense.use_bias else None


@register_converter(DoRADense)
def _dora_dense(graph: Graph, layer: DoRADense, value: Value) -> Value:
    base = layer.base
    weight = base.weight.numpy()
    if not layer.merged:
        with no_grad():
            factor = layer.magnitude.numpy() / layer.weight_norm().numpy()
            weight = (weight + np.asarray(layer.lora.delta_weight())) * factor
    return _dense_with(graph, layer, base, value, weight, _bias(base))


@register_converter(IA3Dense)
def _ia3_dense(graph: Graph, layer: IA3Dense, value: Value) -> Value:
    base = layer.base
    weight, bias = base.weight.numpy(), _bias(base)
    if not layer.merged:
        scaling = layer.ia3.scaling.numpy()
        if layer.feedforward:
            weight = weight * scaling[:, None]
        else:
            weight = weight * scaling
            bias = None if bias is None else bias * scaling
    return _dense_with(graph, layer, base, value, weight, bias)


@register_converter(IA3Scale)
def _ia3_scale(graph: Graph, layer: IA3Scale, value: Value) -> Value:
    value = graph.layout(value, "nhwc")
    hint = label(layer)
    return graph.like(value, graph.node("Mul", [value.name, graph.constant(layer.scaling.numpy(), f"{hint}_scaling")],
                                        hint))


@register_converter(LoHaDense, LoKrDense, VeRADense)
def _delta_dense(graph: Graph, layer, value: Value) -> Value:
    base = layer.base
    weight = base.weight.numpy()
    if not layer.merged:
        with no_grad():
            weight = weight + layer.delta_weight().numpy()
    return _dense_with(graph, layer, base, value, weight, _bias(base))


@register_converter(BottleneckAdapter)
def _bottleneck_adapter(graph: Graph, layer: BottleneckAdapter, value: Value) -> Value:
    value = graph.layout(value, "nhwc")
    hint = label(layer)
    inner = layer_activation(graph, layer, affine(graph, value, layer.down_weight.numpy(), layer.down_bias.numpy(),
                                                  f"{hint}_down"))
    up = affine(graph, inner, layer.up_weight.numpy(), layer.up_bias.numpy(), f"{hint}_up")
    return graph.like(value, graph.node("Add", [value.name, up.name], hint))


@register_converter(WithAdapter)
def _with_adapter(graph: Graph, layer: WithAdapter, value: Value) -> Value:
    return convert(graph, layer.adapter, convert(graph, layer.layer, value))


@register_converter(QuantDense)
def _quant_dense(graph: Graph, layer: QuantDense, value: Value) -> Value:
    """The dequantized weight as a float constant; an input scale s_in divides x first."""
    hint = label(layer)
    if layer.has_input_scale:
        value = graph.layout(value, "nhwc")
        divisor = graph.constant(np.asarray(layer.input_scale), f"{hint}_input_scale")
        value = graph.like(value, graph.node("Div", [value.name, divisor], f"{hint}_scaled_input"))
    weight = layer.dequantized_weight(graph.dtype)
    return _dense_with(graph, layer, layer, value, weight, layer.bias.numpy() if layer.use_bias else None)


@register_converter(PromptTuningLM)
def _prompt_tuning(graph: Graph, lm: PromptTuningLM, ids: Value) -> Value:
    """GPT-2-style: h = [E_p; W_te[x]] + W_pe[0 .. P + T - 1] through the blocks and ln_f,
    the scores W_te h of the last T rows."""
    if not lm.gpt2_style:
        raise NotImplementedError(f"export_onnx: {lm._label()} (PromptTuningLM) wraps a "
                                  f"{type(lm.model).__name__}; its ONNX form covers GPT-2-style models only")
    model, p, hint = lm.model, lm.num_virtual_tokens, label(lm)
    with no_grad():
        prompt = lm.virtual_embeddings().numpy()
    width = prompt.shape[1]
    x, table = _embedded(graph, model.wte.weight.numpy(), ids, f"{hint}_wte")
    # the (1, P, E) prompt repeated over the batch: Expand to the shape (N, P, E) read from x
    batch = graph.node("Slice", [graph.node("Shape", [x.name], f"{hint}_shape"),
                                 graph.constant([0], f"{hint}_batch_start", np.int64),
                                 graph.constant([1], f"{hint}_batch_end", np.int64)], f"{hint}_batch")
    prompt_shape = graph.node("Concat", [batch, graph.constant([p, width], f"{hint}_prompt_dims", np.int64)],
                              f"{hint}_prompt_shape", axis=0)
    prompts = graph.node("Expand", [graph.constant(prompt[None], f"{hint}_prompt"), prompt_shape],
                         f"{hint}_prompts")
    joined = graph.node("Concat", [prompts, x.name], f"{hint}_joined", axis=1)
    h = convert(graph, model.wpe, Value(joined, (x.shape[0], x.shape[1] + p, width)))
    for block in model.h:
        h = convert(graph, block, h)
    h = convert(graph, model.ln_f, h)
    text = graph.node("Slice", [h.name, graph.constant([p], f"{hint}_text_start", np.int64),
                                graph.constant([np.iinfo(np.int64).max], f"{hint}_text_end", np.int64),
                                graph.constant([1], f"{hint}_time_axis", np.int64)], f"{hint}_text")
    return _tied_output(graph, Value(text, x.shape), table, model.vocab_size, f"{hint}_logits")


@register_converter(PrefixTuningLM)
def _prefix_tuning(graph: Graph, lm: PrefixTuningLM, ids: Value) -> Value:
    raise NotImplementedError(f"export_onnx: {lm._label()} (PrefixTuningLM) hands its attention layers prefix keys "
                              "and values during each call; prefix tuning has no ONNX form")
