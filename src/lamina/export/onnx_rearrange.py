"""ONNX forms of :class:`lamina.nn.Rearrange` and :class:`lamina.nn.Reduce`: the steps of
:mod:`lamina.functional.rearrange` as nodes, Reshape (split the grouped axes) -> ReduceMean /
ReduceSum / ReduceMax / ReduceMin / ReduceProd -> Transpose -> Reshape (merge), each left out
where it would do nothing. The batch axis stays free: the one axis whose length depends on it,
in each Reshape, is written as -1."""

from __future__ import annotations

import numpy as np

from lamina import nn
from lamina.export.onnx_graph import Graph, Value, label, register_converter
from lamina.functional.rearrange import steps

_REDUCE_OPS = {"mean": "ReduceMean", "sum": "ReduceSum", "max": "ReduceMax", "min": "ReduceMin",
               "prod": "ReduceProd"}


def _target(graph: Graph, shape: tuple, hint: str) -> str:
    """A Reshape's target for a lamina shape whose one batch-dependent entry is None (the batch
    axis is in one group of each side, and every other length in its group is known)."""
    return graph.constant([-1 if n is None else n for n in shape], hint, np.int64)


def _reduce(graph: Graph, op: str, name: str, axes: tuple, hint: str) -> str:
    # the axes became an input of ReduceSum at opset 13 and of the others at opset 18
    as_input = (graph.opset or 17) >= (13 if op == "ReduceSum" else 18)
    if as_input:
        return graph.node(op, [name, graph.constant(list(axes), f"{hint}_axes", np.int64)], hint, keepdims=0)
    return graph.node(op, [name], hint, axes=list(axes), keepdims=0)


@register_converter(nn.Rearrange, nn.Reduce)
def _pattern_layer(graph: Graph, layer, value: Value) -> Value:
    value = graph.layout(value, "nhwc")
    hint = label(layer)
    free = (None, *value.shape[1:])
    plan = steps(layer.op, layer.pattern, free, layer.axis_sizes)
    name, shape = value.name, free
    if plan.split is not None:
        name, shape = graph.node("Reshape", [name, _target(graph, plan.split, f"{hint}_split")],
                                 f"{hint}_split"), plan.split
    if plan.reduced:
        name = _reduce(graph, _REDUCE_OPS[layer.reduction], name, plan.reduced, f"{hint}_reduce")
        shape = tuple(n for i, n in enumerate(shape) if i not in plan.reduced)
    if plan.permutation is not None:
        name = graph.node("Transpose", [name], f"{hint}_transpose", perm=list(plan.permutation))
        shape = tuple(shape[i] for i in plan.permutation)
    if shape != plan.output:
        name = graph.node("Reshape", [name, _target(graph, plan.output, f"{hint}_merge")], hint)
    return Value(name, layer.compute_output_shape(value.shape))
