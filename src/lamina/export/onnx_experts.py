"""The ONNX form of :class:`lamina.nn.MixtureOfExperts` (evaluation mode: no router noise).

lamina dispatches each token to its top-k experts only; the graph computes every expert on
every token and weighs them, which gives the same outputs (a weight of 0 for the experts a
token is not routed to):

    p = softmax(x W_r)                         (..., E)          Softmax
    (g, S) = the k largest p_e and their experts, ties to the lower index     TopK
    w = g / sum(g) scattered to the experts S, 0 elsewhere (..., E)  ReduceSum, Div, ScatterElements
    f_e(x) = act(x W1_e + b1_e) W2_e + b2_e  for all e (..., E, d)  one MatMul to E hidden
                                                                     layers, a batched MatMul back
    y = sum_e w_e f_e(x)                       (..., d)          MatMul of (..., 1, E) by (..., E, d)

A capacity limit drops assignments according to the other tokens of the batch; the graph
has no such dispatch, so a layer with ``capacity_factor`` below ``num_experts`` (where no
expert can ever be over capacity) is refused.
"""

from __future__ import annotations

import numpy as np

from lamina import nn
from lamina.export.onnx_activations import layer_activation
from lamina.export.onnx_graph import Graph, Value, label, register_converter

__all__ = ["routing_weights"]


def _ints(graph: Graph, values, hint: str) -> str:
    return graph.constant(list(values), hint, np.int64)


def _check_exact(layer: nn.MixtureOfExperts, value: Value) -> None:
    if layer.capacity_factor is not None and layer.capacity_factor < layer.num_experts:
        raise NotImplementedError(
            f"export_onnx: {layer._label()} has capacity_factor={layer.capacity_factor:g}, which drops "
            f"assignments depending on the rest of the batch; it has no ONNX form (a capacity_factor >= "
            f"num_experts {layer.num_experts} never drops one and exports)")
    if len(value.shape) not in (2, 3):
        raise NotImplementedError(f"export_onnx: {layer._label()} expects (batch, features) or (batch, time, "
                                  f"features), got a value of shape {value.shape}")


def routing_weights(graph: Graph, router_weight: np.ndarray, top_k: int, x: str, hint: str) -> str:
    """(..., E): the top-k router probabilities softmax(x W_r) renormalized to sum 1, 0 for
    the experts not chosen (ties to the lower index)."""
    probabilities = graph.node("Softmax", [graph.node("MatMul", [x, graph.constant(
        router_weight, f"{hint}_router_weight")], f"{hint}_router_logits")], f"{hint}_router", axis=-1)
    top = graph.fresh(f"{hint}_top_probabilities")
    chosen = graph.fresh(f"{hint}_chosen")
    graph.nodes.append(graph.helper.make_node(
        "TopK", [probabilities, _ints(graph, [top_k], f"{hint}_k")], [top, chosen], name=top,
        axis=-1, largest=1, sorted=1))
    total = graph.node("ReduceSum", [top, _ints(graph, [-1], f"{hint}_gate_axis")], f"{hint}_top_total",
                       keepdims=1)
    gates = graph.node("Div", [top, total], f"{hint}_gates")
    zeros = graph.node("Sub", [probabilities, probabilities], f"{hint}_zeros")
    return graph.node("ScatterElements", [zeros, chosen, gates], f"{hint}_weights", axis=-1)


def _all_experts(graph: Graph, layer: nn.MixtureOfExperts, value: Value, hint: str) -> str:
    """(..., E, d): every expert's output f_e(x) for every row x."""
    w1, b1 = layer.w1.numpy(), layer.b1.numpy()                  # (E, d, h), (E, h)
    experts, features, hidden = w1.shape
    keep = [0] * (len(value.shape) - 1)
    side_by_side = w1.transpose(1, 0, 2).reshape(features, experts * hidden)
    z = graph.node("MatMul", [value.name, graph.constant(side_by_side, f"{hint}_w1")], f"{hint}_hidden_matmul")
    z = graph.node("Add", [z, graph.constant(b1.reshape(-1), f"{hint}_b1")], f"{hint}_hidden_biased")
    z = graph.node("Reshape", [z, _ints(graph, [*keep, experts, 1, hidden], f"{hint}_per_expert")],
                   f"{hint}_hidden_rows")
    shape = (*value.shape[:-1], experts, 1, hidden)
    activated = layer_activation(graph, layer, Value(z, shape))
    out = graph.node("MatMul", [activated.name, graph.constant(layer.w2.numpy(), f"{hint}_w2")],
                     f"{hint}_expert_matmul")                      # (..., E, 1, d)
    out = graph.node("Add", [out, graph.constant(layer.b2.numpy()[:, None, :], f"{hint}_b2")],
                     f"{hint}_expert_biased")
    return graph.node("Reshape", [out, _ints(graph, [*keep, experts, features], f"{hint}_expert_rows")],
                      f"{hint}_experts")


@register_converter(nn.MixtureOfExperts)
def _mixture_of_experts(graph: Graph, layer, value: Value) -> Value:
    """y = sum_e w_e f_e(x), w the top-k gates (see the module docstring)."""
    _check_exact(layer, value)
    value = graph.layout(value, "nhwc")
    hint = label(layer)
    weights = routing_weights(graph, layer.router.weight.numpy(), layer.top_k, value.name, hint)
    row = graph.node("Unsqueeze", [weights, _ints(graph, [-2], f"{hint}_row_axis")], f"{hint}_weight_rows")
    mixed = graph.node("MatMul", [row, _all_experts(graph, layer, value, hint)], f"{hint}_mixed")
    out = graph.node("Squeeze", [mixed, _ints(graph, [-2], f"{hint}_mixed_axis")], hint)
    return graph.like(value, out)
