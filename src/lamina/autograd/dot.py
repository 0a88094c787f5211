"""The computation graph as Graphviz DOT source, drawn as torchviz's ``make_dot`` draws
PyTorch's: leaves that require grad in light blue (named from ``params``), ops in grey,
the output in green, arrows in the direction data flows; with ``show_saved``, each array an
op keeps for backward in orange, joined to its op by a dashed line. Graphviz is not needed
to make the source: render it with ``dot -Tpng graph.dot -o graph.png`` or any DOT viewer,
or draw it with matplotlib through :func:`lamina.analysis.draw_graph`.

>>> dot = to_dot(loss, params=model.named_parameters())
>>> dot.save_dot("loss.dot")
"""

from __future__ import annotations

import os
from pathlib import Path

from lamina.autograd.graph_view import LEAF, OP, OUTPUT, GraphNode, walk_graph
from lamina.autograd.tensor import Tensor
from lamina.io.atomic import write_bytes_atomic

FILL = {LEAF: "lightblue", OP: "lightgrey", OUTPUT: "darkolivegreen1"}
SAVED_FILL = "orange"


class DotSource(str):
    """DOT source (a ``str``) that can write itself to a file."""

    def save_dot(self, path: str | os.PathLike) -> Path:
        """Write the source to ``path`` atomically (a failed write leaves nothing behind)."""
        write_bytes_atomic(path, self.encode("utf-8"))
        return Path(path)


def shape_text(shape: tuple[int, ...]) -> str:
    """``(3, 4)``; ``()`` for a scalar."""
    return "(" + ", ".join(str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def node_label(node: GraphNode, show_shapes: bool) -> str:
    """What a node says: the op's name, the leaf's parameter name, or "output", over the shape."""
    lines = [node.name] if node.name else []
    if show_shapes or not lines:
        lines.append(shape_text(node.shape))
    if node.released:
        lines.append("(freed by backward)")
    return "\n".join(lines)


def saved_label(attribute: str, array) -> str:
    return f"{attribute}\n{shape_text(tuple(array.shape))} {array.dtype}\n{array.nbytes} bytes"


def to_dot(root: Tensor, params=None, show_shapes: bool = True, show_saved: bool = False,
           max_nodes: int | None = 1000) -> DotSource:
    """The graph below ``root`` (usually a loss) as DOT source.

    ``params``: names for the leaves, a dict name -> tensor or pairs such as
    ``model.named_parameters()`` (unnamed leaves show their shape only). ``show_shapes`` puts
    each tensor's shape under its node's name (an op's is that of its output). ``show_saved``
    adds the arrays each op keeps for backward, with shape, dtype and size in bytes (an array
    kept by several ops is drawn once). Raises ValueError beyond ``max_nodes`` ops and leaves
    (None: no limit), TypeError when ``root`` is not a tensor.
    """
    view = walk_graph(root, params, max_nodes, who="to_dot")
    lines = ["digraph computation_graph {",
             '  graph [rankdir=TB, size="12,12"];',
             "  node [shape=box, style=filled, fontsize=10, height=0.2, fontname=monospace];"]
    for node in view.nodes:
        lines.append(f"  {node.key} [label={_quoted(node_label(node, show_shapes))}, fillcolor={FILL[node.kind]}];")
    lines += [f"  {source} -> {target};" for source, target in view.edges]
    if show_saved:
        lines += _saved_lines(view.of_kind(OP))
    lines.append("}")
    return DotSource("\n".join(lines) + "\n")


def _saved_lines(ops: list[GraphNode]) -> list[str]:
    """One orange node per distinct saved array, a dashed undirected line from each op keeping it."""
    lines: list[str] = []
    keys: dict[int, str] = {}
    for op in ops:
        for attribute, array in op.saved:
            if id(array) not in keys:
                keys[id(array)] = key = f"saved{len(keys)}"
                lines.append(f"  {key} [label={_quoted(saved_label(attribute, array))}, fillcolor={SAVED_FILL}];")
            lines.append(f"  {op.key} -> {keys[id(array)]} [dir=none, style=dashed];")
    return lines


def _quoted(text: str) -> str:
    """A DOT string: quotes and backslashes escaped, line breaks as ``\\n``."""
    escaped = text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
    return f'"{escaped}"'
