"""Input checks shared by the graph layers: node features, edge index and edge weights, or
a sparse adjacency matrix."""

from __future__ import annotations

import numpy as np

from lamina.autograd import Tensor
from lamina.data.graphs import check_edge_index
from lamina.errors import ShapeError
from lamina.nn.layer import input_error
from lamina.nn.module import Module, as_tensor
from lamina.sparse import SparseTensor


def node_shape(layer: Module, input_shape) -> tuple:
    """The node features' shape (N, F) out of what ``build`` receives: the shape of x alone,
    or the list of shapes of (x, edge_index, ...)."""
    shape = input_shape[0] if isinstance(input_shape, list) else input_shape
    if shape is None or len(shape) != 2 or shape[1] is None:
        raise ShapeError(f"{layer._label()}: got node features of shape {shape}; expected (num_nodes, features)")
    return tuple(shape)


def graph_inputs(layer: Module, x, edge_index, edge_weight=None,
                 features: int | None = None) -> tuple[Tensor, np.ndarray, Tensor | None]:
    """(x, edge_index, edge_weight) checked for ``layer``: x a float (N, F) tensor (F =
    ``features`` when given), edge_index an int64 (2, E) array of nodes in [0, N), and
    edge_weight None or an (E,) tensor of x's dtype."""
    x = as_tensor(x)
    if x.ndim != 2 or (features is not None and x.shape[1] != features):
        width = "features" if features is None else f"{features} features, as the layer was built for"
        raise input_error(layer, x, f"node features of shape (num_nodes, {width})")
    if x.dtype.kind != "f":
        raise TypeError(f"{layer._label()}: node features must be floating point, got dtype {x.dtype}")
    index = check_edge_index(edge_index, x.shape[0], layer._label())
    if edge_weight is None:
        return x, index, None
    if isinstance(edge_weight, Tensor):
        if edge_weight.dtype != x.dtype:
            raise TypeError(f"{layer._label()}: edge_weight has dtype {edge_weight.dtype} but the node features "
                            f"have {x.dtype}; expected the same dtype")
        weight = edge_weight
    else:
        weight = Tensor(np.asarray(edge_weight, dtype=x.dtype), dtype=x.dtype)
    if tuple(weight.shape) != (index.shape[1],):
        raise ShapeError(f"{layer._label()}: edge_weight of shape {tuple(weight.shape)} does not match "
                         f"edge_index of shape {index.shape}; expected one weight per edge, shape ({index.shape[1]},)")
    return x, index, weight


def adjacency_inputs(layer: Module, x, adjacency: SparseTensor, edge_weight, features: int | None = None,
                     weighted: bool = True) -> tuple[Tensor, SparseTensor]:
    """(x, adjacency) checked for ``layer``: the node features as in :func:`graph_inputs` and a
    sparse (N, N) matrix holding one weight per edge (no separate edge_weight), of x's dtype
    when ``weighted`` (a layer that reads only the positions takes any dtype)."""
    x, _, _ = graph_inputs(layer, x, np.zeros((2, 0), dtype=np.int64), None, features)
    n = x.shape[0]
    if edge_weight is not None:
        raise ValueError(f"{layer._label()}: edge_weight must be None when the graph is a sparse adjacency "
                         "matrix; its values are the edge weights")
    if adjacency.sparse_dim != 2 or adjacency.dense_dim or adjacency.shape != (n, n):
        raise ShapeError(f"{layer._label()}: a sparse adjacency matrix of shape {adjacency.shape} "
                         f"(dense axes: {adjacency.dense_dim}) for {n} nodes; expected shape ({n}, {n})")
    if weighted and adjacency.dtype != x.dtype:
        raise TypeError(f"{layer._label()}: the adjacency values have dtype {adjacency.dtype} but the node "
                        f"features have {x.dtype}; expected the same dtype")
    return x, adjacency
