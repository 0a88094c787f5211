"""ONNX forms (evaluation mode) of the re-parameterizable blocks of RepVGG and MobileOne
(:mod:`lamina.models.reparam`): a block is written as its one fused convolution with bias, then
Relu, whether it was re-parameterized already or still holds its training-time branches (their
evaluation-mode sum is that convolution). The networks are chains of layers (PathBlock)."""

from __future__ import annotations

import copy

from lamina.export.onnx_activations import ACTIVATIONS
from lamina.export.onnx_graph import Graph, Value, convert, label, register_converter
from lamina.models.reparam import ReparamBlock

__all__: list[str] = []


@register_converter(ReparamBlock)
def _reparam_block(graph: Graph, layer: ReparamBlock, value: Value) -> Value:
    fused = layer if layer.deploy else copy.deepcopy(layer).reparameterize()
    return ACTIVATIONS["relu"](graph, convert(graph, fused.reparam, value), f"{label(layer)}_relu")
