"""Filter pruning in functional models with residual connections: channels pruned together.

An ``Add`` needs the same channels on all its inputs, so removing channel k of one tensor
removes it from every tensor joined to it through ``Add`` and through layers that act on each
channel alone. Starting from the pruned layer's output, the group is the closure of:

* forward, each consumer of a tensor in the group: a channelwise layer (BatchNorm, elementwise
  activations, pooling, dropout, GlobalAvgPool2D, DepthwiseConv2D of depth multiplier 1) loses
  channel k and its output joins the group; an ``Add`` joins its inputs and its output; a
  Conv2D or Dense layer loses input channel k (the group stops there); a Flatten before a Dense
  layer removes that layer's rows of channel k at every position;
* backward, the producer of a tensor in the group: a Conv2D or Dense layer loses its filter
  (unit) k; a channelwise layer loses channel k and its input joins the group; an ``Add``
  joins its inputs.

A group reaching a model input or output, a layer called more than once, ``Concatenate`` or any
other layer is refused. The filters of all the Conv2D/Dense producers are removed together; a
filter's score is the sum over them of its L1 (L2) norm, or over the group's BatchNorms of
|gamma| for 'bn_gamma'. What stays exactly equal: the pruned model computes the original with
the group's channels set to zero at the inputs of the consuming Conv2D and Dense layers.
"""

from __future__ import annotations

import copy

import numpy as np

from lamina import backend
from lamina.nn.compression.filter_pruning import WHO, _check_plain, _check_target, _is_channelwise, _removed, _take
from lamina.nn.conv import Conv2D, DepthwiseConv2D
from lamina.nn.dense import Dense
from lamina.nn.functional_model import Model
from lamina.nn.merge import Add
from lamina.nn.normalization import BatchNorm
from lamina.nn.pooling import GlobalAvgPool2D
from lamina.nn.reshape import Flatten

__all__ = ["ChannelGroup", "channel_group", "prune_graph_filters"]


def _channelwise(layer) -> bool:
    if isinstance(layer, DepthwiseConv2D):
        return layer.depth_multiplier == 1
    return isinstance(layer, BatchNorm | GlobalAvgPool2D) or _is_channelwise(layer)


class ChannelGroup:
    """The layers that lose channel k together (module docstring): ``producers`` lose filter k,
    ``channelwise`` layers channel k, ``consumers`` input channel k (a Flatten is listed with
    the Dense layer after it), ``tensors`` are the placeholders whose last axis shrinks."""

    def __init__(self):
        self.producers: list = []
        self.channelwise: list = []
        self.consumers: list = []
        self.tensors: list = []

    @property
    def layer_names(self) -> dict[str, list[str]]:
        def names(nodes):
            return [node.layer.name for node in nodes]
        return {"producers": names(self.producers), "channelwise": names(self.channelwise),
                "consumers": [node.layer.name if not isinstance(node, tuple) else f"{node[0].layer.name} -> "
                              f"{node[1].layer.name}" for node in self.consumers]}


def _graph(model: Model):
    consumers: dict[int, list] = {}
    calls: dict[int, int] = {}
    for node in model._nodes:
        calls[id(node.layer)] = calls.get(id(node.layer), 0) + 1
        for t in node.inputs():
            consumers.setdefault(id(t), []).append(node)
    shared = [node.layer.name for node in model._nodes if calls[id(node.layer)] > 1]
    if shared:
        raise ValueError(f"{WHO}: layers {sorted(set(shared))} are called more than once; shared layers are not "
                         "supported")
    return consumers


def channel_group(model: Model, layer_name: str) -> ChannelGroup:
    """The channel group of the output filters of the layer ``layer_name`` of a functional
    ``model`` (module docstring); a ValueError names the layer that stops it."""
    consumers = _graph(model)
    nodes = [node for node in model._nodes if node.layer.name == layer_name]
    if not nodes:
        raise ValueError(f"{WHO}: layer {layer_name!r} not found; the model's layers: "
                         f"{[node.layer.name for node in model._nodes]}")
    start = nodes[0]
    _check_target(start.layer, layer_name)
    outputs = {id(t) for t in model.outputs}
    group = ChannelGroup()
    seen_nodes: set[int] = set()
    seen_tensors: set[int] = set()
    pending = [start.outputs[0]]
    group.producers.append(start)
    seen_nodes.add(id(start))

    def visit(node, role: list) -> bool:
        if id(node) in seen_nodes:
            return False
        seen_nodes.add(id(node))
        role.append(node)
        return True

    while pending:
        tensor = pending.pop()
        if id(tensor) in seen_tensors:
            continue
        seen_tensors.add(id(tensor))
        group.tensors.append(tensor)
        if id(tensor) in outputs:
            raise ValueError(f"{WHO}: the channels of {layer_name!r} reach the model's output "
                             f"({tensor.describe()}); they cannot be removed")
        _backward(tensor, group, visit, pending, layer_name)
        for node in consumers.get(id(tensor), []):
            _forward(node, group, visit, pending, consumers, layer_name)
    return group


def _backward(tensor, group, visit, pending, layer_name) -> None:
    node = tensor.node
    if node is None:
        raise ValueError(f"{WHO}: the channels of {layer_name!r} are tied to the model's input ({tensor.describe()}) "
                         "through a residual connection; they cannot be removed")
    layer = node.layer
    if type(layer) in (Conv2D, Dense):
        if visit(node, group.producers):
            _check_target(layer, layer.name)
    elif isinstance(layer, Add):
        if visit(node, []):
            pending.extend(node.inputs())
    elif _channelwise(layer):
        if visit(node, group.channelwise):
            pending.extend(node.inputs())
    else:
        raise ValueError(f"{WHO}: cannot remove channels through layer {layer.name!r} ({type(layer).__name__}) "
                         f"in the group of {layer_name!r}")


def _forward(node, group, visit, pending, consumers, layer_name) -> None:
    layer = node.layer
    if isinstance(layer, Add):
        if visit(node, []):
            pending.extend(node.inputs())
            pending.extend(node.outputs)
    elif _channelwise(layer):
        if visit(node, group.channelwise):
            pending.extend(node.outputs)
    elif type(layer) is Conv2D and layer.groups == 1 or type(layer) is Dense:
        if visit(node, group.consumers):
            _check_plain(layer)
    elif isinstance(layer, Flatten):
        after = consumers.get(id(node.outputs[0]), [])
        if len(after) != 1 or type(after[0].layer) is not Dense:
            raise ValueError(f"{WHO}: Flatten {layer.name!r} in the group of {layer_name!r} must feed one Dense "
                             "layer")
        if visit(node, []):
            group.consumers.append((node, after[0]))
    else:
        raise ValueError(f"{WHO}: cannot remove channels through layer {layer.name!r} ({type(layer).__name__}) "
                         f"in the group of {layer_name!r}")


def _group_scores(group: ChannelGroup, criterion: str) -> np.ndarray:
    if criterion == "bn_gamma":
        norms = [layer.layer for layer in group.channelwise if isinstance(layer.layer, BatchNorm)]
        if not norms or not all(n.affine for n in norms):
            raise ValueError(f"{WHO}: criterion 'bn_gamma' needs affine BatchNorm layers in the channel group")
        return sum(np.abs(backend.to_numpy(n.weight.data)).astype(np.float64) for n in norms)
    total = 0.0
    for node in group.producers:
        w = backend.to_numpy(node.layer.weight.data).astype(np.float64)
        rows = w.reshape(w.shape[0], -1) if isinstance(node.layer, Conv2D) else w.T
        total = total + (np.abs(rows).sum(axis=1) if criterion == "l1" else np.sqrt((rows ** 2).sum(axis=1)))
    return total


def prune_graph_filters(model: Model, layer: str, indices=None, amount=None,
                        criterion: str = "l1") -> tuple[Model, np.ndarray]:
    """:func:`lamina.nn.compression.prune_filters` for a functional ``Model``: the filters of
    ``layer`` (its name) are removed together with their whole channel group."""
    if not isinstance(layer, str):
        layer = getattr(layer, "name", layer)
    new = copy.deepcopy(model)
    group = channel_group(new, layer)
    widths = {t.shape[-1] for t in group.tensors}
    if len(widths) != 1:
        raise ValueError(f"{WHO}: the channel group of {layer!r} holds tensors of {sorted(widths)} channels")
    removed = _removed(_group_scores(group, criterion), indices, amount)
    channels = widths.pop()
    keep = np.setdiff1d(np.arange(channels), removed)
    for node in group.producers:
        target = node.layer
        _take(target, "weight", keep, 0 if isinstance(target, Conv2D) else 1)
        if target.use_bias:
            _take(target, "bias", keep, 0)
        if isinstance(target, Conv2D):
            target.filters = int(keep.size)
        else:
            target.units = int(keep.size)
    for node in group.channelwise:
        _shrink_channelwise(node.layer, keep)
    for entry in group.consumers:
        if isinstance(entry, tuple):
            flatten, dense = entry
            volume = flatten.inputs()[0].shape[1:]
            positions = int(np.prod(volume[:-1]))
            rows = (np.arange(positions)[:, None] * channels + keep[None, :]).reshape(-1)
            _take(dense.layer, "weight", rows, 0)
            flatten.outputs[0].shape = flatten.outputs[0].shape[:-1] + (int(rows.size),)
        else:
            _take(entry.layer, "weight", keep, 3 if isinstance(entry.layer, Conv2D) else 0)
    for tensor in group.tensors:
        tensor.shape = tensor.shape[:-1] + (int(keep.size),)
    return new, removed


def _shrink_channelwise(layer, keep: np.ndarray) -> None:
    if isinstance(layer, BatchNorm):
        for name in ("weight", "bias") if layer.affine else ():
            _take(layer, name, keep, 0)
        for name in ("running_mean", "running_var"):
            _take(layer, name, keep, 0)
    elif isinstance(layer, DepthwiseConv2D):
        _take(layer, "weight", keep, 0)
        if layer.use_bias:
            _take(layer, "bias", keep, 0)
