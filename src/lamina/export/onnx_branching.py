"""ONNX forms of the multi-branch layers: ``Add`` and ``Concatenate``, GoogLeNet's inception
module, Inception-v3's modules A-E and the branching networks built of them (GoogLeNet,
Inception-v3).

Every branch of a module reads the module's input value (transposed at most once, however
many branches want the other layout); the branches' outputs are joined in the layout most of
them are in, so a network of convolutions joined along the channels stays NCHW from its
first convolution to its global pooling. A branching network exports what it computes in
evaluation mode: its main path, without the auxiliary classifiers, which only train.

``Add`` and ``Concatenate`` take a list of values: a converter of a custom block calls
``convert(graph, layer.merge, [a, b])``, or :func:`add_values` / :func:`concat_values`.
"""

from __future__ import annotations

from lamina import nn
from lamina.errors import ShapeError
from lamina.export.onnx_graph import Graph, Value, convert, convert_chain, label, register_converter
from lamina.models.blocks import BranchingNetwork
from lamina.models.googlenet import InceptionModule
from lamina.models.inception import _Module as InceptionV3Module

__all__ = ["add_values", "common_layout", "concat_values", "onnx_axis"]

_NCHW_POSITION = {0: 0, 1: 2, 2: 3, 3: 1}       # lamina's NHWC axis -> its place in an NCHW tensor


def common_layout(values: list[Value]) -> str:
    """The layout most of ``values`` are in; 'nchw' on a tie (the convolutions that usually
    follow want it)."""
    nchw = sum(v.layout == "nchw" for v in values)
    return "nchw" if 2 * nchw >= len(values) else "nhwc"


def onnx_axis(value: Value, axis: int) -> int:
    """The axis of ``value``'s ONNX tensor that is lamina's ``axis`` (counted in NHWC order)."""
    ndim = len(value.shape)
    if not -ndim <= axis < ndim:
        raise ShapeError(f"export_onnx: axis {axis} is out of range for a value of shape {value.shape}")
    axis %= ndim
    return _NCHW_POSITION[axis] if value.layout == "nchw" else axis


def _aligned(graph: Graph, values: list[Value]) -> list[Value]:
    layout = common_layout(values)
    return [graph.layout(v, layout) for v in values]


def concat_values(graph: Graph, values: list[Value], hint: str, axis: int = -1) -> Value:
    """``values`` joined along lamina's ``axis`` (the channels by default) by one Concat."""
    if len(values) == 1:
        return values[0]
    values = _aligned(graph, values)
    first = values[0]
    onnx_position = onnx_axis(first, axis)
    position = axis % len(first.shape)
    shape = list(first.shape)
    shape[position] = sum(v.shape[position] for v in values)
    out = graph.node("Concat", [v.name for v in values], hint, axis=onnx_position)
    return graph.like(first, out, shape)


def add_values(graph: Graph, values: list[Value], hint: str) -> Value:
    """y = x_1 + x_2 + ... of values of one shape: Add for two, Sum for more."""
    values = _aligned(graph, values)
    op = "Add" if len(values) == 2 else "Sum"
    return graph.like(values[0], graph.node(op, [v.name for v in values], hint))


def _inputs(layer: nn.Module, value, least: int) -> list[Value]:
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    if len(values) < least:
        raise ShapeError(f"export_onnx: {layer._label()} takes a list of at least {least} values, got {len(values)}")
    return values


@register_converter(nn.Add)
def _add(graph: Graph, layer, value) -> Value:
    return add_values(graph, _inputs(layer, value, 2), label(layer))


@register_converter(nn.Concatenate)
def _concatenate(graph: Graph, layer, value) -> Value:
    return concat_values(graph, _inputs(layer, value, 1), label(layer), layer.axis)


@register_converter(InceptionModule)
def _inception_module(graph: Graph, layer, value: Value) -> Value:
    """[1x1 | 1x1 -> 3x3 | 1x1 -> 3x3 | maxpool -> 1x1] joined along the channels."""
    outputs = [convert(graph, branch, value) for branch in layer._branches()]
    return concat_values(graph, outputs, label(layer))


@register_converter(InceptionV3Module)
def _inception_v3_module(graph: Graph, layer, value: Value) -> Value:
    """Each chain of sub-layers in ``layer.branches`` from the input, joined along the channels."""
    outputs = [_chain(graph, layer, chain, value) for chain in layer.branches]
    return concat_values(graph, outputs, label(layer))


def _chain(graph: Graph, layer, chain, value: Value) -> Value:
    """One branch: its sub-layers in order; a list ends it with a fork whose outputs are
    joined along the channels (InceptionE's 1x3 and 3x1)."""
    for item in chain:
        if isinstance(item, list):
            forks = [convert(graph, layer._modules[name], value) for name in item]
            return concat_values(graph, forks, f"{label(layer)}_{'_'.join(item)}")
        value = convert(graph, layer._modules[item], value)
    return value


@register_converter(nn.Model)
def _functional_model(graph: Graph, layer, value: Value) -> Value:
    """The graph's layer calls in order, each converted on the values its inputs have become;
    a merge layer gets its list of values. The file has one input and one output."""
    if len(layer.inputs) != 1 or len(layer.outputs) != 1:
        raise NotImplementedError(f"export_onnx: {layer._label()} has {len(layer.inputs)} inputs and "
                                  f"{len(layer.outputs)} outputs; an ONNX file written by export_onnx has one of each")

    def call(sub, args, kwargs):
        if kwargs or len(args) != 1:
            raise NotImplementedError(f"export_onnx: {layer._label()} calls {sub._label()} with "
                                      f"{len(args)} positional and {sorted(kwargs)} keyword arguments; "
                                      "only calls on one value (or one list of values) export")
        return convert(graph, sub, args[0])

    return layer._run([value], call)


@register_converter(BranchingNetwork)
def _branching_network(graph: Graph, layer, value: Value) -> Value:
    """The main path in order: in evaluation mode the auxiliary heads are not computed."""
    return convert_chain(graph, layer, value)
