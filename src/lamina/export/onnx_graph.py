"""The ONNX graph the exporter writes (:mod:`lamina.export.onnx`): values with their lamina
shape and layout, nodes, initializers, and the registry of layer converters."""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from lamina import nn
from lamina.io.atomic import write_bytes_atomic

__all__ = ["Graph", "Value", "convert", "convert_chain", "label", "register_converter"]

_TO_NCHW, _TO_NHWC = (0, 3, 1, 2), (0, 2, 3, 1)


@dataclass(frozen=True)
class Value:
    """A tensor of the ONNX graph: its ``name``, its lamina shape (batch first, channels last)
    and the layout the ONNX tensor has, 'nhwc' or 'nchw' (only 4-D values may be 'nchw')."""

    name: str
    shape: tuple
    layout: str = "nhwc"


class Graph:
    """The ONNX graph being written: nodes, initializers, fresh names, layout changes."""

    def __init__(self, onnx_module, dtype, opset: int | None = None):
        self.onnx = onnx_module
        self.helper = onnx_module.helper
        self.dtype = np.dtype(dtype)
        self.opset = opset          # for converters whose ops changed between opsets
        self.nodes: list = []
        self.initializers: list = []
        self._used: set[str] = set()
        self._relaid: dict[tuple[str, str], Value] = {}
        self.extra_inputs: list = []    # inputs a converter adds beside the model's ('timestep', ...)

    def fresh(self, hint: str) -> str:
        name, k = hint, 1
        while name in self._used:
            k += 1
            name = f"{hint}_{k}"
        self._used.add(name)
        return name

    def constant(self, array, hint: str, dtype=None) -> str:
        """An initializer holding ``array`` (in the export's float type unless ``dtype``)."""
        name = self.fresh(hint)
        array = np.asarray(array, dtype=self.dtype if dtype is None else dtype)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(array), name))
        return name

    def scalar(self, value, hint: str, dtype=np.int64) -> str:
        """A 0-d initializer (:meth:`constant` keeps at least one axis)."""
        name = self.fresh(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.array(value, dtype=dtype), name))
        return name

    def add_input(self, name: str, dtype, dims: list) -> str:
        """A further graph input ``name`` (of numpy ``dtype``, ``dims`` with 'batch' for the free
        axis), for a converter whose layer reads more than the model's input; made once."""
        if any(made.name == name for made in self.extra_inputs):
            return name
        if name in self._used:
            raise ValueError(f"export_onnx: the graph input name {name!r} is taken by a node of the graph")
        self._used.add(name)
        elem = self.helper.np_dtype_to_tensor_dtype(np.dtype(dtype))
        self.extra_inputs.append(self.helper.make_tensor_value_info(name, elem, dims))
        return name

    def node(self, op: str, inputs: list[str], hint: str, **attributes) -> str:
        out = self.fresh(hint)
        self.nodes.append(self.helper.make_node(op, inputs, [out], name=out, **attributes))
        return out

    def save(self, path: str | os.PathLike, name: str, input_name: str, input_elem: int, input_dims: list,
             output_name: str, output_dims: list, check: bool = True) -> Path:
        """Write the graph ``name`` as an ONNX model (opset ``self.opset``) with one input (then
        those of :meth:`add_input`) and one output (``output_name``, of the export's float type)
        to ``path``, atomically, after ONNX's full model check when ``check``. Returns the path."""
        helper = self.helper
        graph = helper.make_graph(
            self.nodes, name, [helper.make_tensor_value_info(input_name, input_elem, input_dims), *self.extra_inputs],
            [helper.make_tensor_value_info(output_name, helper.np_dtype_to_tensor_dtype(self.dtype), output_dims)],
            initializer=self.initializers)
        proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", self.opset)], producer_name="lamina")
        if check:
            self.onnx.checker.check_model(proto, full_check=True)
        path = Path(path)
        write_bytes_atomic(path, proto.SerializeToString())
        return path

    def like(self, value: Value, name: str, shape=None) -> Value:
        """A new value with ``value``'s layout (and shape unless given)."""
        return Value(name, value.shape if shape is None else tuple(shape), value.layout)

    def layout(self, value: Value, layout: str) -> Value:
        """``value`` in ``layout`` ('nhwc' or 'nchw'), through one Transpose made once."""
        if value.layout == layout or len(value.shape) != 4:
            return value
        key = (value.name, layout)
        if key not in self._relaid:
            perm = _TO_NCHW if layout == "nchw" else _TO_NHWC
            name = self.node("Transpose", [value.name], f"{value.name}_{layout}", perm=list(perm))
            self._relaid[key] = Value(name, value.shape, layout)
        return self._relaid[key]

    def channel_vector(self, array, value: Value, hint: str) -> str:
        """A per-channel constant shaped to broadcast against ``value`` in its layout."""
        array = np.asarray(array)
        if value.layout == "nchw" and array.size > 1:
            array = array.reshape(-1, 1, 1)
        return self.constant(array, hint)


Converter = Callable[[Graph, nn.Module, Value], Value]
_CONVERTERS: dict[type, Converter] = {}


def register_converter(*layer_types: type) -> Callable[[Converter], Converter]:
    """Decorator: ``fn(graph, layer, value) -> value`` writes layers of these types."""
    def add(fn: Converter) -> Converter:
        for layer_type in layer_types:
            _CONVERTERS[layer_type] = fn
        return fn
    return add


def convert(graph: Graph, layer: nn.Module, value: Value) -> Value:
    """Write ``layer`` applied to ``value`` into ``graph``; the value it gives."""
    for cls in type(layer).__mro__:
        if cls in _CONVERTERS:
            return _CONVERTERS[cls](graph, layer, value)
    supported = sorted({t.__name__ for t in _CONVERTERS if not t.__name__.startswith("_")})
    raise NotImplementedError(f"export_onnx: {layer._label()} has no ONNX "
                              f"converter; supported: {', '.join(supported)}; add one with register_converter")


def convert_chain(graph: Graph, layers, value: Value) -> Value:
    """Write ``layers`` applied one after another to ``value`` into ``graph``; the last value."""
    for layer in layers:
        value = convert(graph, layer, value)
    return value




def label(layer: nn.Module) -> str:
    """A node-name prefix for ``layer``."""
    return str(layer.name or type(layer).__name__.lower())
