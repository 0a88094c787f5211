"""Running the nodes of an ONNX graph, or of a subgraph (the branches of If, the bodies of
Loop and Scan), with lamina's ops (:mod:`lamina.export.onnx_import`).

A subgraph may read any value of the graphs around it by name (outer scope). Such names
count as inputs of the node that holds the subgraph, so that node runs after the nodes
making them and those values are kept until it has run.
"""

from __future__ import annotations

from collections import ChainMap

import numpy as np

from lamina.autograd import Tensor
from lamina.export.onnx_import_values import Node, Permuted, constant, handler, logical, reads_scope, supported_onnx_ops

__all__ = ["Subgraph", "check_operators", "describe", "last_uses", "reads", "run_node", "sorted_nodes"]


def _onnx():
    import onnx
    return onnx


class Subgraph:
    """A graph-valued attribute, prepared to run: ``run(scope, inputs)`` binds the
    subgraph's inputs (in order) over the visible values ``scope`` and returns its outputs."""

    def __init__(self, graph, opset: int):
        onnx = _onnx()
        self.name = graph.name
        self.constants = {t.name: constant(onnx.numpy_helper.to_array(t)) for t in graph.initializer}
        self.input_names = [i.name for i in graph.input]
        self.output_names = [o.name for o in graph.output]
        made = {name for n in graph.node for name in n.output} | set(self.input_names) | set(self.constants)
        outer = {name for n in graph.node for name in reads(n) if name and name not in made}
        self.nodes = sorted_nodes(graph.node, made | outer, "subgraph " + repr(graph.name))
        check_operators(self.nodes)
        self.described = [describe(n, opset) for n in self.nodes]
        self.last_use = last_uses(self.nodes, set(self.output_names) | outer)

    def run(self, scope: dict, inputs) -> list:
        values = ChainMap(dict(self.constants), scope)      # writes stay in the subgraph
        values.update(zip(self.input_names, inputs))
        transposed: dict[str, Tensor] = {}
        for step, (proto, node) in enumerate(zip(self.nodes, self.described)):
            run_node(proto, node, values, transposed)
            for name in self.last_use.get(step, ()):
                values.pop(name, None)
                transposed.pop(name, None)
        return [logical(values[name]) for name in self.output_names]


def attribute(onnx, attribute, opset: int):
    """An attribute's value: strings decoded, tensors as arrays, graphs as :class:`Subgraph`."""
    value = onnx.helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    if isinstance(value, onnx.GraphProto):
        return Subgraph(value, opset)
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    if isinstance(value, list) and value and isinstance(value[0], onnx.GraphProto):
        return [Subgraph(g, opset) for g in value]
    return value


def describe(proto, opset: int) -> Node:
    onnx = _onnx()
    return Node(proto.op_type, proto.name, {a.name: attribute(onnx, a, opset) for a in proto.attribute},
                len(proto.output), opset)


def reads(node) -> list[str]:
    """The names a node reads: its inputs, and the outer-scope names its subgraphs read."""
    names = list(node.input)
    for a in node.attribute:
        graphs = [a.g] if a.HasField("g") else list(a.graphs)
        for g in graphs:
            made = {name for n in g.node for name in n.output} | {i.name for i in g.input}
            made |= {t.name for t in g.initializer}
            names += [name for n in g.node for name in reads(n) if name and name not in made]
            names += [o.name for o in g.output if o.name not in made]
    return names


def check_operators(nodes) -> None:
    for node in nodes:
        if node.domain not in ("", "ai.onnx") or handler(node.op_type) is None:
            kind = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
            raise NotImplementedError(
                f"load_onnx: operator {kind!r} (node {node.name!r}) is not supported; supported: "
                f"{', '.join(supported_onnx_ops())}; add one with register_onnx_op")


def run_node(proto, node: Node, values: dict, transposed: dict) -> None:
    """Run one node: read its inputs from ``values`` and store its outputs there."""
    run, layout_aware = handler(proto.op_type)
    args = [values[name] for name in proto.input]
    if not layout_aware:
        for i, (name, a) in enumerate(zip(proto.input, args)):
            if isinstance(a, Permuted):
                if name not in transposed:
                    transposed[name] = a.materialize()
                args[i] = transposed[name]
    while args and args[-1] is None:
        args.pop()
    result = run(node, values, *args) if reads_scope(proto.op_type) else run(node, *args)
    results = result if isinstance(result, tuple) else (result,)
    for name, value in zip(proto.output, results):
        if name:
            values[name] = value


def last_uses(nodes, kept: set) -> dict[int, list[str]]:
    """For each node's position, the values read there for the last time (not the outputs)."""
    last = {}
    for step, node in enumerate(nodes):
        for name in reads(node):
            if name and name not in kept:
                last[name] = step
    found: dict[int, list[str]] = {}
    for name, step in last.items():
        found.setdefault(step, []).append(name)
    return found


def sorted_nodes(nodes, known: set, where: str = "the graph") -> list:
    """The nodes in an order where each runs after the nodes making its inputs."""
    known = set(known) | {""}
    pending, ordered = list(nodes), []
    while pending:
        waiting = []
        for n in pending:
            if all(i in known for i in reads(n)):
                ordered.append(n)
                known.update(n.output)
            else:
                waiting.append(n)
        if len(waiting) == len(pending):
            missing = sorted({i for n in waiting for i in reads(n) if i not in known})
            raise ValueError(f"load_onnx: {where} is not well formed: no node makes the values {missing[:8]} "
                             "(or the nodes form a cycle)")
        pending = waiting
    return ordered


def scalar(value) -> np.ndarray:
    """A one-element input (a trip count, a condition) as a NumPy scalar."""
    return np.asarray(logical(value).data).reshape(-1)[0]
