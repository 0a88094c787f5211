"""The computation graph of a loss, drawn and counted (course notes, Back propagation on
computation graphs).

* :func:`draw_graph`: a matplotlib drawing of the graph backward runs through, leaves (the
  parameters, light blue) at the top, ops (grey) below their inputs, the loss (green) at the
  bottom; laid out in layers by :mod:`lamina.analysis.graph_layout`, colours as
  :func:`lamina.autograd.to_dot`'s.
* :func:`graph_stats`: how many nodes, of which ops, how many parameters it reaches, and
  how many bytes its ops keep for backward: the memory backward frees node by node as it
  goes (or keeps, with ``retain_graph=True``).
"""

from __future__ import annotations

import os
from collections import Counter
from dataclasses import dataclass

from lamina.analysis.graph_layout import layered_layout
from lamina.autograd import Tensor
from lamina.autograd.dot import node_label
from lamina.autograd.graph_view import LEAF, OP, OUTPUT, walk_graph
from lamina.io import atomic_write

#: Inches per node slot across, and per layer down.
SLOT_WIDTH, LAYER_HEIGHT = 1.7, 0.75
MAX_FIGURE_INCHES = 60.0
FONT_SIZE, BOX_PAD = 7.0, 0.3
#: to_dot's Graphviz colours as matplotlib knows them (darkolivegreen1 is #caff70).
FILL = {LEAF: "lightblue", OP: "lightgrey", OUTPUT: "#caff70"}


@dataclass(frozen=True)
class GraphStats:
    """The size of a computation graph.

    ``ops``: op nodes; ``leaves``: leaf tensors that require grad (the parameters, and inputs
    created with ``requires_grad=True``); ``parameter_elements``: the numbers in them;
    ``per_op``: op nodes by op name, most frequent first; ``saved_bytes``: the arrays the ops
    keep for their backward, each distinct array counted once (the graph's tensors
    themselves are not counted); ``saved_leaf_bytes``: the part of it that is a leaf's own
    value (a weight kept by its matmul), which stays after backward frees the graph, so
    backward frees ``saved_bytes - saved_leaf_bytes`` as it goes; ``released``: ops already
    freed by a backward."""

    ops: int
    leaves: int
    parameter_elements: int
    per_op: dict[str, int]
    saved_bytes: int
    saved_leaf_bytes: int
    released: int

    @property
    def nodes(self) -> int:
        """Ops and leaves: the nodes of PyTorch's graph (its AccumulateGrad nodes are the leaves)."""
        return self.ops + self.leaves

    def __str__(self) -> str:
        ops = ", ".join(f"{name} {count}" for name, count in self.per_op.items())
        freed = f"; {self.released} freed by backward" if self.released else ""
        return (f"{self.nodes} nodes: {self.ops} ops ({ops}), {self.leaves} leaves requiring grad "
                f"({self.parameter_elements:,} numbers); {self.saved_bytes:,} bytes kept for backward "
                f"({self.saved_leaf_bytes:,} of them leaves' own values){freed}")


def graph_stats(root: Tensor) -> GraphStats:
    """The counts of :class:`GraphStats` for the graph below ``root`` (usually a loss)."""
    view = walk_graph(root, who="graph_stats")
    ops, leaves = view.of_kind(OP), view.of_kind(LEAF)
    saved = {id(array): array for op in ops for _, array in op.saved}
    leaf_values = {id(leaf.tensor.data) for leaf in leaves}
    per_op = Counter(op.name for op in ops)
    return GraphStats(ops=len(ops), leaves=len(leaves), parameter_elements=sum(leaf.tensor.size for leaf in leaves),
                      per_op=dict(sorted(per_op.items(), key=lambda item: (-item[1], item[0]))),
                      saved_bytes=sum(int(a.nbytes) for a in saved.values()),
                      saved_leaf_bytes=sum(int(a.nbytes) for key, a in saved.items() if key in leaf_values),
                      released=sum(op.released for op in ops))


def draw_graph(root: Tensor, params=None, path: str | os.PathLike | None = None, ax=None, *,
               max_nodes: int = 300, show_shapes: bool = True, title: str | None = None, dpi: int = 100):
    """Draw the graph below ``root`` (usually a loss) with matplotlib and return the figure.

    Leaves are named from ``params`` (a dict name -> tensor, or ``model.named_parameters()``)
    and, with ``show_shapes``, every node shows its tensor's shape. Each node is one text box;
    arrows go from an op's inputs to it. Draws into ``ax`` when given (else a new figure sized
    to the graph), writes a PNG at ``path`` atomically when given. Raises ValueError for a
    graph of more than ``max_nodes`` ops and leaves (a drawing of more is not readable: draw
    a smaller part, or use :func:`lamina.autograd.to_dot` and Graphviz), TypeError when
    ``root`` is not a tensor.
    """
    view = walk_graph(root, params, max_nodes, who="draw_graph")
    keys = [node.key for node in view.nodes]
    layout = layered_layout(keys, list(view.edges))
    depth = max(layout.layer.values()) + 1
    widest = max(Counter(layout.layer.values()).values())
    if ax is None:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        size = (min(MAX_FIGURE_INCHES, max(4.0, SLOT_WIDTH * widest)),
                min(MAX_FIGURE_INCHES, max(3.0, LAYER_HEIGHT * depth + 0.6)))
        fig = Figure(figsize=size)
        FigureCanvasAgg(fig)
        ax = fig.add_axes((0.0, 0.0, 1.0, 0.95 if title else 1.0))
    fig = ax.figure
    span = max(abs(x) for x in layout.x.values())
    ax.set_xlim(-span - 0.7, span + 0.7)
    ax.set_ylim(-(depth - 1) - 0.6, 0.6)
    ax.set_axis_off()
    labels = {node.key: node_label(node, show_shapes) for node in view.nodes}
    half_box = _half_box_sizes(ax, labels)
    _draw_edges(ax, layout, [half_box[target] for _, target in view.edges])
    for node in view.nodes:
        ax.text(layout.x[node.key], -layout.layer[node.key], labels[node.key], ha="center", va="center",
                fontsize=FONT_SIZE, family="monospace", zorder=3,
                bbox={"boxstyle": f"round,pad={BOX_PAD}", "facecolor": FILL[node.kind], "edgecolor": "0.35"})
    if title:
        fig.suptitle(title, fontsize=9)
    if path is not None:
        try:
            with atomic_write(path) as handle:
                fig.savefig(handle, format="png", dpi=dpi)
        except OSError as exc:
            raise OSError(f"draw_graph: cannot write the PNG {os.fspath(path)!r}: {exc}") from exc
    return fig


def _half_box_sizes(ax, labels: dict[str, str]) -> dict[str, tuple[float, float]]:
    """Half the width and height of each label's box in data units, from its lines and
    characters (monospace: a character is 0.6 em wide, a line 1.2 em high)."""
    fig = ax.figure
    position = ax.get_position()
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    per_point_x = (x1 - x0) / (position.width * fig.get_figwidth() * 72)
    per_point_y = (y1 - y0) / (position.height * fig.get_figheight() * 72)
    pad = 2 * BOX_PAD * FONT_SIZE
    sizes = {}
    for key, text in labels.items():
        lines = text.split("\n")
        width = 0.6 * FONT_SIZE * max(len(line) for line in lines) + pad
        height = 1.2 * FONT_SIZE * len(lines) + pad
        sizes[key] = (width / 2 * per_point_x, height / 2 * per_point_y)
    return sizes


def _draw_edges(ax, layout, target_boxes: list[tuple[float, float]]) -> None:
    """Each edge as straight segments through its waypoints (from the centre of its source,
    which the box covers), with an arrow head ending on the target's box."""
    from matplotlib.patches import FancyArrowPatch

    for route, (half_width, half_height) in zip(layout.routes, target_boxes, strict=True):
        points = [(x, -depth) for x, depth in route]
        (xa, ya), (xb, yb) = points[-2], points[-1]
        dx, dy = xb - xa, yb - ya
        # where the segment enters the target's box: the nearer of its vertical and horizontal sides
        t = min(half_width / abs(dx) if dx else float("inf"), half_height / abs(dy) if dy else float("inf"))
        end = (xb - dx * min(t, 1.0), yb - dy * min(t, 1.0))
        if len(points) > 2:
            xs, ys = zip(*points[:-1])
            ax.plot(xs, ys, color="0.45", linewidth=0.8, zorder=1)
        ax.add_patch(FancyArrowPatch((xa, ya), end, arrowstyle="-|>", mutation_scale=8, color="0.45",
                                     linewidth=0.8, shrinkA=0, shrinkB=1, zorder=2))
