"""GINConv's optional edge weights: ones give the unweighted layer, the weighted form
h = mlp((1 + eps) x + sum_j w_ji x_j) matches a torch rewrite, with gradients for x, the
weights, eps and the MLP."""

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import nn
from lamina.errors import ShapeError
from lamina.nn.functional_call import functional_call

N = 6
EDGES = np.array([[0, 1, 1, 2, 3, 4, 5, 0, 2], [1, 2, 2, 3, 4, 5, 0, 3, 0]])   # 1 -> 2 twice


def _layer():
    layer = nn.GINConv(nn.Dense(3), eps=0.0, train_eps=True)
    layer(lamina.tensor(randn(N, 4), dtype=np.float32), EDGES)
    return layer


def test_unit_weights_give_the_unweighted_output():
    layer = _layer()
    x = lamina.tensor(randn(N, 4, seed=1), dtype=np.float32)
    np.testing.assert_array_equal(layer(x, EDGES, np.ones(EDGES.shape[1], dtype=np.float32)).numpy(),
                                  layer(x, EDGES).numpy())


def torch_weighted_gin(x, weight, bias, eps, edge_weight):
    aggregated = torch.zeros_like(x).index_add_(0, torch.from_numpy(EDGES[1]),
                                                x[torch.from_numpy(EDGES[0])] * edge_weight[:, None])
    return ((1 + eps) * x + aggregated) @ weight + bias


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_weighted_gin_matches_torch(dtype):
    layer = _layer()

    def ours(x, weight, bias, eps, edge_weight):
        layer.to(x.dtype)
        return functional_call(layer, {"mlp.weight": weight, "mlp.bias": bias, "eps": eps}, x, EDGES, edge_weight)

    arrays = (randn(N, 4, seed=1), layer.mlp.weight.numpy(), randn(3, seed=2), np.array([0.3]),
              randn(EDGES.shape[1], seed=3))
    compare_with_torch(ours, torch_weighted_gin, *arrays, dtype=dtype)
    assert check_gradients(ours, *arrays)


def test_edge_weight_of_the_wrong_length_is_an_error():
    layer = _layer()
    with pytest.raises(ShapeError, match=r"GINConv.*edge_weight of shape \(4,\) does not match edge_index"):
        layer(lamina.tensor(randn(N, 4), dtype=np.float32), EDGES, np.ones(4, dtype=np.float32))
