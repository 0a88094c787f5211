"""Multiply-accumulates of an ONNX graph, for :mod:`lamina.analysis`'s layer table.

ONNX's shape inference gives every tensor's shape for one sample; the nodes that carry the
cost count as lamina's layers do (biases and element-wise ops not counted):

    Conv           out_elements k_1 .. k_n c_in / group      (weights (K, c_in / group, k_1 .. k_n))
    ConvTranspose  in_elements  k_1 .. k_n K / group          (weights (c_in, K / group, k_1 .. k_n))
    Gemm, MatMul   the product's elements times the contracted size
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

__all__ = ["onnx_macs"]


def _dims(value_info) -> tuple[int, ...] | None:
    dims = value_info.type.tensor_type.shape.dim
    sizes = tuple(d.dim_value if d.HasField("dim_value") else -1 for d in dims)
    return None if not dims or min(sizes) < 0 else sizes


def onnx_macs(proto, weights: Mapping[str, np.ndarray], input_shapes: Sequence[tuple[int, ...]]) -> int:
    """MACs of one sample through the graph of ``proto`` (a ModelProto without its
    initializers, whose values ``weights`` holds) for inputs of ``input_shapes`` (without the
    batch axis); a node shape inference cannot size counts 0."""
    import onnx

    model = onnx.ModelProto()
    model.CopyFrom(proto)
    graph = model.graph
    data_inputs = [v for v in graph.input if v.name not in weights]
    for value, shape in zip(data_inputs, input_shapes):
        dims = value.type.tensor_type.shape.dim
        del dims[:]
        for size in (1, *shape):
            dims.add().dim_value = int(size)
    known = {v.name for v in graph.input}
    for name, value in weights.items():
        if value.dtype.kind in "iub":   # shape constants: inference needs their values
            graph.initializer.append(onnx.numpy_helper.from_array(np.ascontiguousarray(value), name))
        elif name not in known:        # weights: their shapes suffice
            element = onnx.helper.np_dtype_to_tensor_dtype(value.dtype)
            graph.input.append(onnx.helper.make_tensor_value_info(name, element, list(value.shape)))
    del graph.value_info[:]
    inferred = onnx.shape_inference.infer_shapes(model).graph
    shapes = {v.name: _dims(v) for v in (*inferred.input, *inferred.value_info, *inferred.output)}
    shapes.update({name: tuple(value.shape) for name, value in weights.items()})
    return sum(_node_macs(node, shapes) for node in graph.node)


def _node_macs(node, shapes) -> int:
    ins = [shapes.get(name) for name in node.input]
    out = shapes.get(node.output[0]) if node.output else None
    if any(s is None for s in ins[:2]) or out is None:
        return 0
    if node.op_type == "Conv":
        weight = ins[1]
        return math.prod(out) * math.prod(weight[1:])
    if node.op_type == "ConvTranspose":
        weight = ins[1]
        return math.prod(ins[0]) * weight[1] * math.prod(weight[2:])
    if node.op_type == "Gemm":
        trans_a = next((a.i for a in node.attribute if a.name == "transA"), 0)
        a = ins[0]
        return math.prod(out) * (a[0] if trans_a else a[-1])
    if node.op_type == "MatMul":
        return math.prod(out) * ins[0][-1]
    return 0
