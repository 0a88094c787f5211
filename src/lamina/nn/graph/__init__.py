"""Graph neural network layers in PyTorch Geometric's style: node features x (N, F), an
``edge_index`` (2, E) of edges source -> target, optional edge weights, and a ``batch``
vector for mini-batches of graphs (see :mod:`lamina.data.graphs`).

Messages are gathered per edge with :func:`lamina.functional.take_rows` and reduced per
target node with the segment reductions of :mod:`lamina.functional.segment`.
"""

from lamina.nn.graph.cfconv import CFConv, cosine_cutoff, edge_lengths, gaussian_rbf, shifted_softplus
from lamina.nn.graph.dense_pool import dense_diff_pool, to_dense_adj, to_dense_batch
from lamina.nn.graph.egnn import EGNNLayer
from lamina.nn.graph.gat import GATConv
from lamina.nn.graph.gatv2 import GATv2Conv
from lamina.nn.graph.gcn import GCNConv, gcn_norm
from lamina.nn.graph.gin import GINConv
from lamina.nn.graph.gps import GPSLayer
from lamina.nn.graph.graphormer import CentralityEncoding, GraphormerLayer
from lamina.nn.graph.hetero_conv import HeteroConv
from lamina.nn.graph.pool import (
    GlobalAddPool,
    GlobalMaxPool,
    GlobalMeanPool,
    global_add_pool,
    global_max_pool,
    global_mean_pool,
)
from lamina.nn.graph.propagation import APPNP, ChebConv, GCN2Conv, GraphConv, SGConv, propagate
from lamina.nn.graph.readout import AttentionalAggregation, Set2Set
from lamina.nn.graph.rgcn import RGCNConv
from lamina.nn.graph.sage import SAGEConv, aggregate
from lamina.nn.graph.temporal import TemporalGraphAttention, TimeEncoder
from lamina.nn.graph.topk_pool import SAGPooling, TopKPooling, filter_adjacency, topk_nodes
from lamina.nn.graph.transformer_conv import TransformerConv

__all__ = [
    "GATConv", "GCNConv", "GINConv", "GlobalAddPool", "GlobalMaxPool", "GlobalMeanPool", "SAGEConv", "aggregate",
    "gcn_norm", "global_add_pool", "global_max_pool", "global_mean_pool",
    "CFConv", "EGNNLayer", "cosine_cutoff", "edge_lengths", "gaussian_rbf", "shifted_softplus",
    "APPNP", "AttentionalAggregation", "ChebConv", "GATv2Conv", "GCN2Conv", "GraphConv", "SAGPooling", "SGConv",
    "Set2Set", "TopKPooling", "TransformerConv", "dense_diff_pool", "filter_adjacency", "propagate",
    "to_dense_adj", "to_dense_batch", "topk_nodes",
]
__all__ += ["CentralityEncoding", "GPSLayer", "GraphormerLayer", "HeteroConv", "RGCNConv"]  # graph transformers
__all__ += ["TemporalGraphAttention", "TimeEncoder"]  # temporal graphs
