"""ONNX forms of implicit-representation, Bayesian and modern Hopfield layers (evaluation mode):

    SineLayer         sin(w0 (x W + b)), or x W + b for a linear one; Siren is its chain of them
    FourierFeatures   [cos(2 pi x B^T), sin(2 pi x B^T)]
    BayesianDense     g(x mu_W + mu_b), the posterior means (as evaluation without sampling)
    BayesianConv2D    g(conv(x, mu_W) + mu_b)
    HopfieldLayer     retrieval from the learned stored patterns Y (constants) by the queries x W_q + b_q
    HopfieldPooling   retrieval by the learned queries from the patterns K = x W_k + b_k, V = x W_v + b_v
    Hopfield          self-association: Q, K, V all projected from the input

with the retrieval (:func:`lamina.nn.hopfield_retrieval`) written out step by step,
Xi <- softmax(beta Xi K^T) K, the last step reading V instead of K. A Bayesian layer that
samples in evaluation (``sample_in_eval=True``) and the mixture density head (three outputs:
the exporter writes graphs with one) are refused.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import nn
from lamina.autograd import Tensor
from lamina.export.onnx_activations import layer_activation
from lamina.export.onnx_adapters import affine
from lamina.export.onnx_graph import Graph, Value, convert, convert_chain, label, register_converter
from lamina.export.onnx_layers import _conv
from lamina.nn.bayesian import BayesianLayer

__all__: list[str] = []


# -- implicit representations ------------------------------------------------------------------
@register_converter(nn.SineLayer)
def _sine_layer(graph: Graph, layer: nn.SineLayer, value: Value) -> Value:
    hint = label(layer)
    bias = layer.bias.numpy() if layer.use_bias else None
    if layer.linear:
        return affine(graph, value, layer.weight.numpy(), bias, hint)
    z = affine(graph, value, layer.weight.numpy(), bias, f"{hint}_linear")
    scaled = graph.node("Mul", [z.name, graph.constant(layer.w0, f"{hint}_w0")], f"{hint}_scaled")
    return Value(graph.node("Sin", [scaled], hint), z.shape)


@register_converter(nn.Siren)
def _siren(graph: Graph, layer: nn.Siren, value: Value) -> Value:
    return convert_chain(graph, layer.layers, value)


@register_converter(nn.FourierFeatures)
def _fourier_features(graph: Graph, layer: nn.FourierFeatures, value: Value) -> Value:
    value = graph.layout(value, "nhwc")
    hint = label(layer)
    matrix = layer.B.numpy() if isinstance(layer.B, Tensor) else np.asarray(layer.B)
    projected = graph.node("MatMul", [value.name, graph.constant(matrix.T, f"{hint}_frequencies")], f"{hint}_project")
    angles = graph.node("Mul", [projected, graph.constant(2.0 * math.pi, f"{hint}_two_pi")], f"{hint}_angles")
    waves = [graph.node("Cos", [angles], f"{hint}_cos"), graph.node("Sin", [angles], f"{hint}_sin")]
    return Value(graph.node("Concat", waves, hint, axis=-1), (*value.shape[:-1], 2 * matrix.shape[0]))


# -- Bayesian layers ---------------------------------------------------------------------------
def _check_deterministic(layer: BayesianLayer) -> None:
    if layer.sample_in_eval:
        raise NotImplementedError(f"export_onnx: {layer._label()} ({type(layer).__name__}) samples its weights in "
                                  "evaluation (sample_in_eval=True); the export writes the posterior means, so set "
                                  "sample_in_eval=False to export it")


def _bayesian_bias(layer: BayesianLayer):
    return layer.bias_mu.numpy() if layer.use_bias else None


@register_converter(nn.BayesianDense)
def _bayesian_dense(graph: Graph, layer: nn.BayesianDense, value: Value) -> Value:
    _check_deterministic(layer)
    out = affine(graph, value, layer.weight_mu.numpy(), _bayesian_bias(layer), label(layer))
    return layer_activation(graph, layer, out)


@register_converter(nn.BayesianConv2D)
def _bayesian_conv2d(graph: Graph, layer: nn.BayesianConv2D, value: Value) -> Value:
    _check_deterministic(layer)
    out = _conv(graph, value, layer.weight_mu.numpy(), _bayesian_bias(layer), 1, label(layer), layer.stride,
                layer.padding)
    return layer_activation(graph, layer, out)


@register_converter(nn.MixtureDensityHead)
def _mixture_density_head(graph: Graph, layer, value: Value) -> Value:
    raise NotImplementedError(f"export_onnx: {layer._label()} (MixtureDensityHead) returns three tensors (pi_logits, "
                              "mu, sigma); the exported graph has one output")


# -- modern Hopfield layers --------------------------------------------------------------------
def _retrieve(graph: Graph, state: str, keys: str, keys_transposed: str, values: str, beta: float, steps: int,
              hint: str) -> str:
    """``steps`` updates Xi <- softmax(beta Xi K^T) K of ``state``, the last reading ``values``."""
    factor = graph.constant(beta, f"{hint}_beta")
    for step in range(steps):
        scores = graph.node("MatMul", [state, keys_transposed], f"{hint}_scores")
        scaled = graph.node("Mul", [scores, factor], f"{hint}_scaled_scores")
        weights = graph.node("Softmax", [scaled], f"{hint}_weights", axis=-1)
        state = graph.node("MatMul", [weights, values if step == steps - 1 else keys],
                           hint if step == steps - 1 else f"{hint}_state")
    return state


def _transposed_set(graph: Graph, value: Value, hint: str) -> str:
    """A set's patterns (N, n, d) as (N, d, n)."""
    return graph.node("Transpose", [value.name], hint, perm=[0, 2, 1])


def _check_set(layer, value: Value) -> None:
    if len(value.shape) != 3:
        raise NotImplementedError(f"export_onnx: {layer._label()} ({type(layer).__name__}) reads a set (batch, n, "
                                  f"features); got a value of shape {value.shape}")


@register_converter(nn.HopfieldLayer)
def _hopfield_layer(graph: Graph, layer: nn.HopfieldLayer, value: Value) -> Value:
    hint = label(layer)
    state = convert(graph, layer.query, value)
    patterns = layer.patterns.numpy()
    keys = graph.constant(patterns, f"{hint}_patterns")
    keys_transposed = graph.constant(patterns.T, f"{hint}_patterns_transposed")
    values = graph.constant(layer.pattern_values.numpy(), f"{hint}_pattern_values")
    out = _retrieve(graph, state.name, keys, keys_transposed, values, layer.beta, layer.update_steps, hint)
    return Value(out, (*state.shape[:-1], layer.output_size))


@register_converter(nn.HopfieldPooling)
def _hopfield_pooling(graph: Graph, layer: nn.HopfieldPooling, value: Value) -> Value:
    _check_set(layer, value)
    hint = label(layer)
    keys, values = convert(graph, layer.key, value), convert(graph, layer.value, value)
    queries = graph.constant(layer.queries.numpy(), f"{hint}_queries")
    pooled = _retrieve(graph, queries, keys.name, _transposed_set(graph, keys, f"{hint}_keys_transposed"),
                       values.name, layer.beta, layer.update_steps, f"{hint}_retrieved")
    pooled = Value(pooled, (value.shape[0], layer.num_queries, layer.hidden_size))
    if layer.output_size is not None:
        pooled = convert(graph, layer.output, pooled)
    flat = graph.node("Reshape", [pooled.name, graph.constant([0, -1], f"{hint}_flat", np.int64)], hint)
    return Value(flat, (value.shape[0], layer.num_queries * pooled.shape[-1]))


@register_converter(nn.Hopfield)
def _hopfield(graph: Graph, layer: nn.Hopfield, value: Value) -> Value:
    """The layer called on one input: stored patterns, state patterns and values all ``value``."""
    _check_set(layer, value)
    hint = label(layer)
    state, keys, values = (convert(graph, sub, value) for sub in (layer.query, layer.key, layer.value))
    out = _retrieve(graph, state.name, keys.name, _transposed_set(graph, keys, f"{hint}_keys_transposed"),
                    values.name, layer.beta, layer.update_steps, f"{hint}_retrieved")
    retrieved = Value(out, (*value.shape[:2], layer.hidden_size))
    return retrieved if layer.output_size is None else convert(graph, layer.output, retrieved)
