"""What GNN explainers share: a model run on a graph whose edges are weighted by a soft mask,
the computation subgraph of a node, and the penalties on a mask (Ying et al. 2019; Luo et
al. 2020).

The model is any lamina Module called as ``model(x, edge_index, edge_weight=w)``: node
features x (N, F), ``edge_index`` (2, E) and one weight per edge, which its graph layers
multiply into the messages (``GCNConv``, ``GINConv``, ``GraphConv``, ...). It returns class
scores (logits): (N, C) for node classification, (1, C) or (C,) for one graph.

A mask m = sigmoid(z) in (0, 1) per edge, from logits z, pays

    size_coef sum_e m_e + entropy_coef mean_e H(m_e),   H(m) = -m log m - (1 - m) log(1 - m)

the size term asking for few edges, the entropy term for values near 0 or 1 (log m and
log(1 - m) are computed as log sigmoid(z) and log sigmoid(-z)).

The computation subgraph of node v for a model of K message-passing layers: every edge whose
target lies within K hops of v (against the edges' direction), and the nodes those edges
join. v's output on it is the same as on the whole graph, degree normalisations included.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor, tensor
from lamina.data.graphs import check_edge_index
from lamina.errors import ShapeError
from lamina.nn.module import Module

__all__ = ["Subgraph", "computation_subgraph", "edge_gradient_saliency", "mask_penalty", "masked_log_probability",
           "message_passing_depth"]


def takes_edge_weight(model: Module, fn: str) -> None:
    """TypeError unless ``model``'s forward accepts an ``edge_weight`` argument."""
    if not isinstance(model, Module):
        raise TypeError(f"{fn}: expected a lamina Module, got {type(model).__name__}")
    parameters = inspect.signature(model.forward).parameters
    if "edge_weight" not in parameters and not any(p.kind is inspect.Parameter.VAR_KEYWORD
                                                   for p in parameters.values()):
        raise TypeError(f"{fn}: {type(model).__name__}.forward{inspect.signature(model.forward)} takes no "
                        "edge_weight; an edge mask needs a model called as model(x, edge_index, edge_weight=w) "
                        "that passes w to its graph layers")


def message_passing_depth(model: Module) -> int:
    """The number of sub-modules of ``model`` whose forward takes an ``edge_index``: the hops a
    node's output can see when each is applied once."""
    return sum(1 for _, m in model.named_modules() if m is not model
               and "edge_index" in inspect.signature(m.forward).parameters)


def resolve_hops(model: Module, num_hops: int | None, fn: str) -> int:
    """``num_hops`` checked, or the model's :func:`message_passing_depth` when None."""
    if num_hops is None:
        num_hops = message_passing_depth(model)
        if num_hops == 0:
            raise ValueError(f"{fn}: found no sub-module of {type(model).__name__} whose forward takes edge_index; "
                             "give num_hops (the number of message-passing steps of the model)")
    if isinstance(num_hops, bool) or not isinstance(num_hops, (int, np.integer)) or num_hops < 1:
        raise ValueError(f"{fn}: num_hops must be a positive int, got {num_hops!r}")
    return int(num_hops)


def graph_arrays(graph, fn: str) -> tuple[np.ndarray, np.ndarray]:
    """(x, edge_index) of a Graph-like object (attributes ``x`` and ``edge_index``), checked."""
    if not (hasattr(graph, "x") and hasattr(graph, "edge_index")):
        raise TypeError(f"{fn}: expected a Graph (with x and edge_index), got {type(graph).__name__}")
    x = np.asarray(graph.x)
    if x.ndim != 2:
        raise ShapeError(f"{fn}: node features of shape {x.shape}; expected (num_nodes, features)")
    if x.dtype.kind != "f":
        x = x.astype(np.float32)
    return x, check_edge_index(graph.edge_index, x.shape[0], fn)


def check_node(node, num_nodes: int, fn: str) -> int:
    if isinstance(node, bool) or not isinstance(node, (int, np.integer)):
        raise TypeError(f"{fn}: node must be an int (or None for a graph-level explanation), got {node!r}")
    if not 0 <= node < num_nodes:
        raise IndexError(f"{fn}: node {node} is out of range for a graph of {num_nodes} nodes; expected "
                         f"0 <= node < {num_nodes}")
    return int(node)


def check_edge_scores(scores, num_edges: int, fn: str, what: str = "edge_mask") -> np.ndarray:
    scores = np.asarray(scores, dtype=np.float64)
    if scores.shape != (num_edges,):
        raise ShapeError(f"{fn}: {what} of shape {scores.shape} for a graph of {num_edges} edges; expected one "
                         f"value per edge, shape ({num_edges},)")
    return scores


@dataclass
class Subgraph:
    """``nodes`` (n,) of the graph, ``edges`` (e,) ids of its edges, ``edge_index`` (2, e) of
    the edges renumbered over ``nodes``, ``center`` the position of the explained node (None
    for a whole graph)."""

    nodes: np.ndarray
    edges: np.ndarray
    edge_index: np.ndarray
    center: int | None


def computation_subgraph(edge_index, num_nodes: int, node: int | None, num_hops: int) -> Subgraph:
    """The edges into the nodes within ``num_hops`` of ``node`` (the whole graph for None)."""
    edge_index = check_edge_index(edge_index, num_nodes, "computation_subgraph")
    if node is None:
        return Subgraph(np.arange(num_nodes), np.arange(edge_index.shape[1]), edge_index, None)
    node = check_node(node, num_nodes, "computation_subgraph")
    reached = np.zeros(num_nodes, dtype=bool)
    reached[node] = True
    for _ in range(num_hops):
        reached[edge_index[0][reached[edge_index[1]]]] = True
    edges = np.flatnonzero(reached[edge_index[1]])
    keep = reached.copy()
    keep[edge_index[0, edges]] = True
    nodes = np.flatnonzero(keep)
    position = np.full(num_nodes, -1, dtype=np.int64)
    position[nodes] = np.arange(nodes.shape[0])
    return Subgraph(nodes, edges, position[edge_index[:, edges]], int(position[node]))


def instance_logits(model: Module, x, edge_index, edge_weight, center: int | None, fn: str) -> Tensor:
    """The model's class scores (C,) for node ``center`` (graph scores for None)."""
    out = model(x, edge_index, edge_weight=edge_weight)
    if center is not None:
        if out.ndim != 2 or out.shape[0] != x.shape[0]:
            raise ShapeError(f"{fn}: the model returned shape {tuple(out.shape)} for {x.shape[0]} nodes; a node "
                             f"explanation expects one row of class scores per node, ({x.shape[0]}, classes)")
        return out[center]
    if not (out.ndim == 1 or (out.ndim == 2 and out.shape[0] == 1)):
        raise ShapeError(f"{fn}: the model returned shape {tuple(out.shape)} for one graph; a graph explanation "
                         "expects (classes,) or (1, classes) (give node= to explain a node)")
    return F.reshape(out, (-1,))


def reverse_edges(edge_index: np.ndarray) -> np.ndarray:
    """For each edge j -> i the id of an edge i -> j (its own id when there is none)."""
    n = int(edge_index.max()) + 1 if edge_index.size else 0
    keys = edge_index[0] * n + edge_index[1]
    order = np.argsort(keys, kind="stable")
    wanted = edge_index[1] * n + edge_index[0]
    at = np.minimum(np.searchsorted(keys[order], wanted), max(len(keys) - 1, 0))
    found = keys[order][at] == wanted if keys.size else np.zeros(0, dtype=bool)
    return np.where(found, order[at], np.arange(keys.shape[0]))


def edge_weights(edge_logits: Tensor, reverse: np.ndarray | None = None) -> Tensor:
    """sigmoid(z), or with ``reverse`` the symmetric (sigmoid(z_ji) + sigmoid(z_ij)) / 2."""
    m = F.sigmoid(edge_logits)
    return m if reverse is None else 0.5 * (m + F.take_rows(m, reverse))


def masked_log_probability(model: Module, x, edge_index, edge_logits: Tensor, target: int, center: int | None,
                           feature_logits: Tensor | None = None, reverse: np.ndarray | None = None,
                           fn: str = "masked_log_probability") -> Tensor:
    """log p(target | x * sigmoid(f), edges weighted by sigmoid(z)): the model's log-softmax
    at ``target``, for node ``center`` (or the graph when None); with ``reverse`` (the ids of
    the reversed edges, :func:`reverse_edges`) the weights are symmetric."""
    if feature_logits is not None:
        x = x * F.sigmoid(feature_logits)
    logits = instance_logits(model, x, edge_index, edge_weights(edge_logits, reverse), center, fn)
    return F.log_softmax(logits, axis=-1)[target]


def mask_entropy(logits: Tensor) -> Tensor:
    """H(sigmoid(z)) elementwise, from the logits z."""
    m = F.sigmoid(logits)
    return -(m * F.log_sigmoid(logits) + (1.0 - m) * F.log_sigmoid(-logits))


def mask_penalty(logits: Tensor, size_coef: float, entropy_coef: float, size: str = "sum") -> Tensor:
    """size_coef * sum (``size='mean'``: mean) of sigmoid(z) + entropy_coef * mean H(sigmoid(z))."""
    m = F.sigmoid(logits)
    return size_coef * (m.sum() if size == "sum" else m.mean()) + entropy_coef * mask_entropy(logits).mean()


def edge_gradient_saliency(model: Module, graph, node: int | None = None, target: int | None = None,
                           num_hops: int | None = None) -> np.ndarray:
    """|d log p(c) / d w_e| at edge weights w = 1 for every edge e of the computation subgraph
    (0 elsewhere), c the predicted class (or ``target``): the gradient baseline of GNN
    explanations, shape (E,)."""
    from lamina.analysis.saliency import input_analysis

    fn = "edge_gradient_saliency"
    takes_edge_weight(model, fn)
    x, edge_index = graph_arrays(graph, fn)
    if node is not None:
        check_node(node, x.shape[0], fn)
    sub = computation_subgraph(edge_index, x.shape[0], node, resolve_hops(model, num_hops, fn))
    xs = tensor(x[sub.nodes], dtype=x.dtype)
    weight = tensor(np.ones(sub.edges.shape[0], dtype=x.dtype), requires_grad=True, dtype=x.dtype)
    with input_analysis(model):
        logits = instance_logits(model, xs, sub.edge_index, weight, sub.center, fn)
        c = int(logits.numpy().argmax()) if target is None else int(target)
        F.log_softmax(logits, axis=-1)[c].backward()
    scores = np.zeros(edge_index.shape[1])
    scores[sub.edges] = np.abs(weight.grad if weight.grad is not None else 0.0)
    return scores
