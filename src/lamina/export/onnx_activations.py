"""ONNX forms of lamina's activations: the named ones (``Dense(10, activation='gelu')``)
and the activation layers."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lamina import nn
from lamina.export.onnx_graph import Graph, Value, convert, label, register_converter

__all__ = ["ACTIVATIONS", "layer_activation"]


def _x_times(graph: Graph, value: Value, gate: str, hint: str) -> Value:
    return graph.like(value, graph.node("Mul", [value.name, gate], hint))


def _softmax_like(op: str):
    def write(graph: Graph, value: Value, hint: str, axis: int = -1) -> Value:
        value = graph.layout(value, "nhwc")                  # ``axis`` counts in lamina's layout
        return graph.like(value, graph.node(op, [value.name], hint, axis=axis))
    return write


def _unary(op: str, **attributes):
    def write(graph: Graph, value: Value, hint: str) -> Value:
        return graph.like(value, graph.node(op, [value.name], hint, **attributes))
    return write


def _clip(low: float, high: float):
    def write(graph: Graph, value: Value, hint: str) -> Value:
        bounds = [graph.constant(low, f"{hint}_min"), graph.constant(high, f"{hint}_max")]
        return graph.like(value, graph.node("Clip", [value.name, *bounds], hint))
    return write


def _silu(graph: Graph, value: Value, hint: str) -> Value:
    return _x_times(graph, value, graph.node("Sigmoid", [value.name], f"{hint}_gate"), hint)


def _quick_gelu(graph: Graph, value: Value, hint: str) -> Value:
    """a = z sigma(1.702 z) (CLIP's)."""
    scaled = graph.node("Mul", [value.name, graph.constant(1.702, f"{hint}_k")], f"{hint}_scaled")
    return _x_times(graph, value, graph.node("Sigmoid", [scaled], f"{hint}_gate"), hint)


def _hard_swish(graph: Graph, value: Value, hint: str) -> Value:
    gate = graph.node("HardSigmoid", [value.name], f"{hint}_gate", alpha=1 / 6, beta=0.5)
    return _x_times(graph, value, gate, hint)


def _mish(graph: Graph, value: Value, hint: str) -> Value:
    soft = graph.node("Softplus", [value.name], f"{hint}_softplus")
    return _x_times(graph, value, graph.node("Tanh", [soft], f"{hint}_gate"), hint)


def _gelu(graph: Graph, value: Value, hint: str, approximate: str = "none") -> Value:
    """a = z Phi(z) = z (1 + erf(z / sqrt 2)) / 2, or its tanh form
    z (1 + tanh(sqrt(2 / pi) (z + 0.044715 z^3))) / 2 (opset 17 has no Gelu operator)."""
    x = value.name
    if approximate == "tanh":
        cube = graph.node("Mul", [graph.node("Mul", [x, x], f"{hint}_sq"), x], f"{hint}_cube")
        inner = graph.node("Add", [x, graph.node("Mul", [cube, graph.constant(0.044715, f"{hint}_c")],
                                                 f"{hint}_term")], f"{hint}_inner")
        scaled = graph.node("Mul", [inner, graph.constant(np.sqrt(2 / np.pi), f"{hint}_k")], f"{hint}_arg")
        curve = graph.node("Tanh", [scaled], f"{hint}_tanh")
    else:
        scaled = graph.node("Mul", [x, graph.constant(1 / np.sqrt(2), f"{hint}_k")], f"{hint}_arg")
        curve = graph.node("Erf", [scaled], f"{hint}_erf")
    one_plus = graph.node("Add", [curve, graph.constant(1.0, f"{hint}_one")], f"{hint}_1p")
    half = graph.node("Mul", [one_plus, graph.constant(0.5, f"{hint}_half")], f"{hint}_gate")
    return _x_times(graph, value, half, hint)


def _log_sigmoid(graph: Graph, value: Value, hint: str) -> Value:
    """log sigma(z) = -softplus(-z)."""
    minus = graph.node("Neg", [value.name], f"{hint}_neg")
    return graph.like(value, graph.node("Neg", [graph.node("Softplus", [minus], f"{hint}_softplus")], hint))


def _tanhshrink(graph: Graph, value: Value, hint: str) -> Value:
    return graph.like(value, graph.node("Sub", [value.name, graph.node("Tanh", [value.name], f"{hint}_tanh")], hint))


def _shrink(soft: bool, lambd: float = 0.5):
    """Hardshrink (z where |z| > lambd, else 0) and softshrink (moved towards 0 by lambd) are
    both ONNX's Shrink, with bias 0 and lambd."""
    def write(graph: Graph, value: Value, hint: str) -> Value:
        return graph.like(value, graph.node("Shrink", [value.name], hint, lambd=lambd, bias=lambd if soft else 0.0))
    return write


def _softmin(graph: Graph, value: Value, hint: str, axis: int = -1) -> Value:
    minus = graph.like(value, graph.node("Neg", [value.name], f"{hint}_neg"))
    return _softmax_like("Softmax")(graph, minus, hint, axis)


def _threshold(limit: float, replacement: float):
    def write(graph: Graph, value: Value, hint: str) -> Value:
        above = graph.node("Greater", [value.name, graph.constant(limit, f"{hint}_threshold")], f"{hint}_above")
        return graph.like(value, graph.node("Where", [above, value.name, graph.constant(replacement, f"{hint}_value")],
                                            hint))
    return write


_SELU_ALPHA, _SELU_SCALE = 1.6732632423543772, 1.0507009873554805
ACTIVATIONS: dict[str, Callable] = {
    "linear": lambda graph, value, hint: value,
    "relu": _unary("Relu"),
    "relu6": _clip(0.0, 6.0),
    "leaky_relu": _unary("LeakyRelu", alpha=0.01),
    "elu": _unary("Elu", alpha=1.0),
    "selu": _unary("Selu", alpha=_SELU_ALPHA, gamma=_SELU_SCALE),
    "tanh": _unary("Tanh"),
    "sigmoid": _unary("Sigmoid"),
    "softmax": _softmax_like("Softmax"),
    "log_softmax": _softmax_like("LogSoftmax"),
    "gelu": _gelu,
    "gelu_tanh": lambda graph, value, hint: _gelu(graph, value, hint, "tanh"),
    "silu": _silu,
    "swish": _silu,
    "quick_gelu": _quick_gelu,
    "softplus": _unary("Softplus"),
    "mish": _mish,
    "hard_sigmoid": _unary("HardSigmoid", alpha=1 / 6, beta=0.5),
    "hard_swish": _hard_swish,
    "hardtanh": _clip(-1.0, 1.0),
    "softsign": _unary("Softsign"),
    "log_sigmoid": _log_sigmoid,
    "celu": _unary("Celu", alpha=1.0),
    "tanhshrink": _tanhshrink,
    "hardshrink": _shrink(soft=False),
    "softshrink": _shrink(soft=True),
}


def layer_activation(graph: Graph, layer: nn.Module, value: Value) -> Value:
    """The ``activation`` a Dense or convolution layer applies after its product."""
    act = getattr(layer, "activation", None)
    if act is None:
        return value
    if isinstance(act, nn.Module):
        return convert(graph, act, value)
    spec = getattr(layer, "activation_spec", None)
    if isinstance(spec, str) and spec in ACTIVATIONS:
        return ACTIVATIONS[spec](graph, value, f"{label(layer)}_{spec}")
    raise NotImplementedError(f"export_onnx: {layer._label()} has the activation {act!r}, which has no ONNX "
                              f"form; use one of {sorted(ACTIVATIONS)} or an activation layer")


_LAYER_ACTIVATIONS = {nn.ReLU: "relu", nn.ReLU6: "relu6", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.SELU: "selu",
                      nn.SiLU: "silu", nn.Mish: "mish", nn.HardSigmoid: "hard_sigmoid", nn.HardSwish: "hard_swish",
                      nn.Softsign: "softsign", nn.LogSigmoid: "log_sigmoid", nn.Tanhshrink: "tanhshrink"}


@register_converter(*_LAYER_ACTIVATIONS)
def _named_activation(graph: Graph, layer, value: Value) -> Value:
    name = next(name for cls, name in _LAYER_ACTIVATIONS.items() if isinstance(layer, cls))
    return ACTIVATIONS[name](graph, value, label(layer))


@register_converter(nn.Activation)
def _activation_layer(graph: Graph, layer, value: Value) -> Value:
    if layer.activation not in ACTIVATIONS:
        raise NotImplementedError(f"export_onnx: activation {layer.activation!r} of {layer._label()} has no ONNX form")
    return ACTIVATIONS[layer.activation](graph, value, label(layer))


@register_converter(nn.LeakyReLU)
def _leaky_relu(graph: Graph, layer, value: Value) -> Value:
    return _unary("LeakyRelu", alpha=layer.alpha)(graph, value, label(layer))


@register_converter(nn.ELU)
def _elu(graph: Graph, layer, value: Value) -> Value:
    return _unary("Elu", alpha=layer.alpha)(graph, value, label(layer))


@register_converter(nn.GELU)
def _gelu_layer(graph: Graph, layer, value: Value) -> Value:
    return _gelu(graph, value, label(layer), layer.approximate)


@register_converter(nn.Softplus)
def _softplus(graph: Graph, layer, value: Value) -> Value:
    """log(1 + e^(beta z)) / beta; the threshold's linear tail differs from it by < e^-threshold."""
    hint = label(layer)
    if layer.beta == 1:
        return _unary("Softplus")(graph, value, hint)
    scaled = graph.node("Mul", [value.name, graph.constant(layer.beta, f"{hint}_beta")], f"{hint}_in")
    soft = graph.node("Softplus", [scaled], f"{hint}_soft")
    return graph.like(value, graph.node("Div", [soft, graph.constant(layer.beta, f"{hint}_b")], hint))


@register_converter(nn.Softmax)
def _softmax(graph: Graph, layer, value: Value) -> Value:
    return _softmax_like("Softmax")(graph, value, label(layer), axis=layer.axis)


@register_converter(nn.PReLU)
def _prelu(graph: Graph, layer, value: Value) -> Value:
    slope = graph.channel_vector(layer.alpha.numpy(), value, f"{label(layer)}_alpha")
    return graph.like(value, graph.node("PRelu", [value.name, slope], label(layer)))


@register_converter(nn.Hardtanh)
def _hardtanh_layer(graph: Graph, layer, value: Value) -> Value:
    return _clip(layer.min_val, layer.max_val)(graph, value, label(layer))


@register_converter(nn.CELU)
def _celu_layer(graph: Graph, layer, value: Value) -> Value:
    return _unary("Celu", alpha=layer.alpha)(graph, value, label(layer))


@register_converter(nn.Hardshrink, nn.Softshrink)
def _shrink_layer(graph: Graph, layer, value: Value) -> Value:
    return _shrink(isinstance(layer, nn.Softshrink), layer.lambd)(graph, value, label(layer))


@register_converter(nn.Softmin)
def _softmin_layer(graph: Graph, layer, value: Value) -> Value:
    return _softmin(graph, value, label(layer), layer.axis)


@register_converter(nn.Threshold)
def _threshold_layer(graph: Graph, layer, value: Value) -> Value:
    return _threshold(layer.threshold, layer.value)(graph, value, label(layer))
