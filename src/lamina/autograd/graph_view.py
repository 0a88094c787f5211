"""The computation graph below a tensor as plain records, for drawing and counting.

:func:`walk_graph` follows the graph backward propagation would run through (the nodes of
``tensor.grad_fn.next_functions``, recursively) and returns its nodes and edges: one node
per op, one per leaf that requires grad, one for the output tensor; an edge per input, in
the direction data flows (input -> op -> ... -> output). Constants (inputs that need no
gradient) are left out, as PyTorch's graph leaves them out. Nothing is computed or kept:
the walk reads the existing graph, so graphs with no one looking cost nothing more.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass

from lamina.autograd.grad_fn import saved_arrays
from lamina.autograd.tensor import Tensor

OP, LEAF, OUTPUT = "op", "leaf", "output"


@dataclass(frozen=True)
class GraphNode:
    """One node of the drawn graph.

    ``kind`` is ``"op"`` (``name`` is the op, ``shape`` that of its output), ``"leaf"`` (a
    tensor that requires grad; ``name`` its parameter name or ``""``) or ``"output"`` (the
    tensor the walk started from). ``saved`` lists an op's arrays kept for backward as
    (attribute, array) pairs; ``released`` says backward has already freed the op."""

    key: str
    kind: str
    name: str
    shape: tuple[int, ...]
    dtype: str
    saved: tuple[tuple[str, object], ...] = ()
    released: bool = False
    tensor: Tensor | None = None


@dataclass(frozen=True)
class GraphView:
    """The nodes (the output first) and the edges ``(from key, to key)`` of a graph."""

    nodes: tuple[GraphNode, ...]
    edges: tuple[tuple[str, str], ...]

    def node(self, key: str) -> GraphNode:
        for node in self.nodes:
            if node.key == key:
                return node
        raise KeyError(key)

    def of_kind(self, kind: str) -> list[GraphNode]:
        return [node for node in self.nodes if node.kind == kind]


def parameter_names(params, who: str) -> dict[int, str]:
    """``params`` (a dict name -> tensor, pairs such as ``model.named_parameters()``, a model,
    or None) as a map id(tensor) -> name."""
    if params is None:
        return {}
    if hasattr(params, "named_parameters"):
        params = params.named_parameters()
    pairs = params.items() if isinstance(params, dict) else params
    if not isinstance(pairs, Iterable):
        raise TypeError(f"{who}: params must be a dict name -> tensor, (name, tensor) pairs such as "
                        f"model.named_parameters(), or a model; got {type(params).__name__}")
    names: dict[int, str] = {}
    for pair in pairs:
        if not (isinstance(pair, tuple) and len(pair) == 2 and isinstance(pair[1], Tensor)):
            raise TypeError(f"{who}: params must hold (name, tensor) pairs, got {pair!r:.80}")
        names.setdefault(id(pair[1]), str(pair[0]))
    return names


def walk_graph(root: Tensor, params=None, max_nodes: int | None = None, who: str = "walk_graph") -> GraphView:
    """The graph below ``root``: see the module's docstring. Raises ValueError when it has
    more than ``max_nodes`` nodes (ops and leaves), before walking the rest of it."""
    if not isinstance(root, Tensor):
        raise TypeError(f"{who}: expected the Tensor whose graph to show (e.g. a loss), got {type(root).__name__}")
    if max_nodes is not None and max_nodes < 1:
        raise ValueError(f"{who}: max_nodes must be at least 1, got {max_nodes}")
    names = parameter_names(params, who)
    ops, leaves = itertools.count(), itertools.count()
    output = GraphNode("output", OUTPUT, names.get(id(root), "output"), tuple(root.shape), str(root.dtype),
                       tensor=root)
    nodes = [output]
    edges: list[tuple[str, str]] = []
    keys: dict[int, str] = {}             # id(Function) or id(leaf tensor) -> node key

    def key_of(t: Tensor) -> tuple[str, bool]:
        """The key of the node backward reaches ``t`` through, and whether it is new."""
        ident = id(t) if t._ctx is None else id(t._ctx)
        if ident in keys:
            return keys[ident], False
        if max_nodes is not None and len(keys) >= max_nodes:
            raise ValueError(f"{who}: the graph has more than max_nodes={max_nodes} nodes (ops and leaves); "
                             "draw a smaller part (a few layers, a batch of one) or raise max_nodes")
        if t._ctx is None:
            key = f"leaf{next(leaves)}"
            nodes.append(GraphNode(key, LEAF, names.get(id(t), ""), tuple(t.shape), str(t.dtype), tensor=t))
        else:
            fn = t._ctx
            key = f"op{next(ops)}"
            nodes.append(GraphNode(key, OP, type(fn).__name__, tuple(t.shape), str(t.dtype),
                                   saved=tuple(saved_arrays(fn).items()), released=fn.inputs is None))
        keys[ident] = key
        return key, True

    if root.requires_grad and root._ctx is not None:
        first, _ = key_of(root)
        edges.append((first, "output"))
        stack = [root._ctx]
        while stack:
            fn = stack.pop()
            consumer = keys[id(fn)]
            for t in fn.inputs or ():
                if not t.requires_grad:
                    continue
                key, new = key_of(t)
                edges.append((key, consumer))
                if new and t._ctx is not None:
                    stack.append(t._ctx)
    return GraphView(tuple(nodes), tuple(edges))
