"""The ONNX form of :class:`lamina.nn.KANLinear` (efficient-kan's layer):

    y = silu(x) W_b^T + B(x) (s * C)^T

with the B-spline basis B(x) (n_in (G + k) values per sample) written out by the Cox-de Boor
recursion on the layer's knots t (one row per input):

    B_{c,0}(x) = [t_c <= x < t_{c+1}]
    B_{c,p}(x) = (x - t_c) / (t_{c+p} - t_c) B_{c,p-1}(x) + (t_{c+p+1} - x) / (t_{c+p+1} - t_{c+1}) B_{c+1,p-1}(x)

(a zero knot span contributing zero), the reciprocals of the spans folded into constants.
Edges fixed to symbolic functions are refused.
"""

from __future__ import annotations

import numpy as np

from lamina import nn
from lamina.autograd import no_grad
from lamina.export.onnx_activations import ACTIVATIONS
from lamina.export.onnx_graph import Graph, Value, convert, label, register_converter

__all__: list[str] = []


def _reciprocal(spans: np.ndarray) -> np.ndarray:
    out = np.zeros_like(spans)
    np.divide(1.0, spans, out=out, where=spans != 0)
    return out


def _last_axis_slice(graph: Graph, x: str, start: int, end: int, hint: str) -> str:
    bounds = [graph.constant([v], f"{hint}_{what}", np.int64) for what, v in (("start", start), ("end", end),
                                                                              ("axis", -1))]
    return graph.node("Slice", [x, *bounds], hint)


def spline_basis(graph: Graph, x: str, knots: np.ndarray, order: int, hint: str) -> str:
    """The B-spline basis (..., n_in, n_knots - 1 - order) of ``x`` (..., n_in) on ``knots``
    (n_in, n_knots)."""
    t = knots.astype(graph.dtype)
    xe = graph.node("Unsqueeze", [x, graph.constant([-1], f"{hint}_axis", np.int64)], f"{hint}_points")
    above = graph.node("GreaterOrEqual", [xe, graph.constant(t[:, :-1], f"{hint}_lower_knots")], f"{hint}_above")
    below = graph.node("Less", [xe, graph.constant(t[:, 1:], f"{hint}_upper_knots")], f"{hint}_below")
    inside = graph.node("And", [above, below], f"{hint}_inside")
    bases = graph.node("Cast", [inside], f"{hint}_order0", to=graph.helper.np_dtype_to_tensor_dtype(graph.dtype))
    width = t.shape[1] - 1
    for p in range(1, order + 1):
        rise = graph.node("Sub", [xe, graph.constant(t[:, :-(p + 1)], f"{hint}_left_knots{p}")], f"{hint}_rise{p}")
        left = graph.node("Mul", [rise, graph.constant(_reciprocal(t[:, p:-1] - t[:, :-(p + 1)]),
                                                       f"{hint}_left_spans{p}")], f"{hint}_left{p}")
        fall = graph.node("Sub", [graph.constant(t[:, p + 1:], f"{hint}_right_knots{p}"), xe], f"{hint}_fall{p}")
        right = graph.node("Mul", [fall, graph.constant(_reciprocal(t[:, p + 1:] - t[:, 1:-p]),
                                                        f"{hint}_right_spans{p}")], f"{hint}_right{p}")
        lower = _last_axis_slice(graph, bases, 0, width - 1, f"{hint}_lower{p}")
        upper = _last_axis_slice(graph, bases, 1, width, f"{hint}_upper{p}")
        bases = graph.node("Add", [graph.node("Mul", [left, lower], f"{hint}_left_part{p}"),
                                   graph.node("Mul", [right, upper], f"{hint}_right_part{p}")], f"{hint}_order{p}")
        width -= 1
    return bases


def _base_activation(graph: Graph, layer, value: Value) -> Value:
    act, spec = layer.base_activation, layer.base_activation_spec
    if isinstance(act, nn.Module):
        return convert(graph, act, value)
    if isinstance(spec, str) and spec in ACTIVATIONS:
        return ACTIVATIONS[spec](graph, value, f"{label(layer)}_base_{spec}")
    raise NotImplementedError(f"export_onnx: {layer._label()} has the base activation {spec!r}, which has no ONNX "
                              f"form; use one of {sorted(ACTIVATIONS)} or an activation layer")


@register_converter(nn.KANLinear)
def _kan_linear(graph: Graph, layer, value: Value) -> Value:
    if np.any(np.asarray(layer.symbolic_index) >= 0):
        raise NotImplementedError(f"export_onnx: {layer._label()} (KANLinear) has edges fixed to symbolic "
                                  "functions; only spline edges have an ONNX form")
    value = graph.layout(value, "nhwc")
    hint = label(layer)
    units = layer.units
    basis = spline_basis(graph, value.name, np.asarray(layer.grid), layer.spline_order, f"{hint}_basis")
    flat_shape = [0] * (len(value.shape) - 1) + [-1]
    flat = graph.node("Reshape", [basis, graph.constant(flat_shape, f"{hint}_flat_shape", np.int64)],
                      f"{hint}_basis_flat")
    with no_grad():
        spline_weight = layer.scaled_spline_weight().numpy().reshape(units, -1)
    out = graph.node("MatMul", [flat, graph.constant(spline_weight.T, f"{hint}_spline_weight")],
                     f"{hint}_splines" if layer.base_activation is not None else hint)
    if layer.base_activation is not None:
        activated = _base_activation(graph, layer, value)
        base = graph.node("MatMul", [activated.name, graph.constant(layer.base_weight.numpy().T,
                                                                    f"{hint}_base_weight")], f"{hint}_base")
        out = graph.node("Add", [out, base], hint)
    return Value(out, (*value.shape[:-1], units))
