"""Graph neural network layers in PyTorch Geometric's style: node features x (N, F), an
``edge_index`` (2, E) of edges source -> target, optional edge weights, and a ``batch``
vector for mini-batches of graphs (see :mod:`lamina.data.graphs`).

Messages are gathered per edge with :func:`lamina.functional.take_rows` and reduced per
target node with the segment reductions of :mod:`lamina.functional.segment`.
"""

from lamina.nn.graph.cfconv import CFConv, cosine_cutoff, edge_lengths, gaussian_rbf, shifted_softplus
from lamina.nn.graph.egnn import EGNNLayer
from lamina.nn.graph.gat import GATConv
from lamina.nn.graph.gcn import GCNConv, gcn_norm
from lamina.nn.graph.gin import GINConv
from lamina.nn.graph.pool import (
    GlobalAddPool,
    GlobalMaxPool,
    GlobalMeanPool,
    global_add_pool,
    global_max_pool,
    global_mean_pool,
)
from lamina.nn.graph.sage import SAGEConv, aggregate

__all__ = [
    "GATConv", "GCNConv", "GINConv", "GlobalAddPool", "GlobalMaxPool", "GlobalMeanPool", "SAGEConv", "aggregate",
    "gcn_norm", "global_add_pool", "global_max_pool", "global_mean_pool",
    "CFConv", "EGNNLayer", "cosine_cutoff", "edge_lengths", "gaussian_rbf", "shifted_softplus",
]
