"""GCNConv on a sparse adjacency matrix: the same layer as with edge_index, its propagation
one sparse product; compared with torch.sparse.mm on the normalised adjacency."""

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, randn
from lamina import nn, sparse
from lamina.errors import ShapeError
from lamina.nn.functional_call import functional_call

pytestmark = pytest.mark.filterwarnings("ignore:Sparse invariant checks")

N, F_IN = 6, 4
# edges source -> target: a repeated edge (1 -> 2), a self-loop on 3, node 5 isolated
EDGES = np.array([[0, 1, 1, 2, 3, 4, 0, 2, 3],
                  [1, 2, 2, 3, 3, 0, 3, 0, 4]])


def adjacency(edge_weight):
    """A[i, j] = weight of the edge j -> i."""
    return sparse.sparse_coo_tensor(EDGES[::-1], edge_weight, (N, N))


def torch_gcn(x, weight, bias, edge_weight, add_loops=True, normalize=True):
    a = torch.zeros(N, N, dtype=x.dtype).index_put((torch.from_numpy(EDGES[1]), torch.from_numpy(EDGES[0])),
                                                   edge_weight, accumulate=True)
    if add_loops:
        missing = np.ones(N)
        missing[EDGES[0][EDGES[0] == EDGES[1]]] = 0
        a = a + torch.diag(torch.from_numpy(missing).to(x.dtype))
    if normalize:
        deg = a.sum(dim=1)
        inv_sqrt = torch.where(deg > 0, deg.clamp(min=1e-300) ** -0.5, torch.zeros_like(deg))
        a = inv_sqrt[:, None] * a * inv_sqrt[None, :]
    return torch.sparse.mm(a.to_sparse(), x @ weight) + bias


def _layer(**options):
    layer = nn.GCNConv(3, **options)
    layer.build([(N, F_IN), EDGES.shape])
    layer.built = True
    return layer.to(np.float64)


@pytest.mark.parametrize("add_loops,normalize", [(True, True), (False, True), (True, False)])
def test_gcn_on_a_sparse_adjacency_matches_torch(add_loops, normalize):
    layer = _layer(add_self_loops=add_loops, normalize=normalize)

    def ours(x, weight, bias, edge_weight):
        return functional_call(layer, {"weight": weight, "bias": bias}, x, adjacency(edge_weight))

    inputs = (randn(N, F_IN, seed=1), randn(F_IN, 3, seed=2), randn(3, seed=3),
              np.random.default_rng(4).uniform(0.5, 2.0, EDGES.shape[1]))
    compare_with_torch(ours, lambda x, w, b, ew: torch_gcn(x, w, b, ew, add_loops, normalize), *inputs,
                       dtype=np.float64)
    assert check_gradients(ours, *inputs)


def test_sparse_adjacency_gives_the_edge_index_result():
    layer = _layer()
    x = lamina.tensor(randn(N, F_IN), dtype=np.float64)
    weights = np.random.default_rng(5).uniform(0.5, 2.0, EDGES.shape[1])
    by_edges = layer(x, EDGES, weights)
    by_matrix = layer(x, adjacency(lamina.tensor(weights, dtype=np.float64)))
    assert_close(by_matrix.numpy(), by_edges.numpy(), 1e-12)
    csr = layer(x, adjacency(lamina.tensor(weights, dtype=np.float64)).to_sparse_csr())
    assert_close(csr.numpy(), by_edges.numpy(), 1e-12)


def test_sparse_adjacency_errors_name_the_layer():
    layer = _layer()
    x = lamina.tensor(randn(N, F_IN), dtype=np.float64)
    with pytest.raises(ShapeError, match=r"GCNConv.*adjacency matrix of shape \(5, 5\).*expected shape \(6, 6\)"):
        layer(x, sparse.sparse_coo_tensor([[0, 1], [1, 0]], np.ones(2), (5, 5), dtype=np.float64))
    with pytest.raises(TypeError, match=r"GCNConv.*adjacency values have dtype float32 .* float64"):
        layer(x, adjacency(np.ones(EDGES.shape[1], dtype=np.float32)))
    with pytest.raises(ValueError, match=r"GCNConv: edge_weight must be None"):
        layer(x, adjacency(np.ones(EDGES.shape[1])).to_sparse_csr(), np.ones(3))


# -- GATConv: scores by sampled_addmm, coefficients by sparse.softmax --------------------------------
def _gat(**options):
    layer = nn.GATConv(2, heads=2, **options)
    layer.build([(N, F_IN), EDGES.shape])
    layer.built = True
    return layer.to(np.float64)


@pytest.mark.parametrize("concat,add_loops", [(True, True), (False, False)])
def test_gat_on_a_sparse_adjacency_matches_the_edge_index_layer(concat, add_loops):
    edges = np.unique(EDGES, axis=1)                       # the edge path counts a repeated edge twice
    layer = _gat(concat=concat, add_self_loops=add_loops)
    structure = sparse.sparse_coo_tensor(edges[::-1], np.ones(edges.shape[1], dtype=np.float32), (N, N))
    names = ("weight", "att_src", "att_dst", "bias")
    arrays = [randn(N, F_IN, seed=1)] + [randn(*getattr(layer, k).shape, seed=i + 2) for i, k in enumerate(names)]

    def run(graph):
        def fn(x, *params):
            return functional_call(layer, dict(zip(names, params)), x, graph)
        return fn

    x, *params = (lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in arrays)
    by_matrix, by_edges = run(structure)(x, *params), run(edges)(x, *params)
    assert_close(by_matrix.numpy(), by_edges.numpy(), 1e-12)
    upstream = lamina.tensor(randn(*by_edges.shape, seed=9), dtype=np.float64)
    grads_matrix = lamina.autograd.grad((by_matrix * upstream).sum(), [x, *params])
    grads_edges = lamina.autograd.grad((by_edges * upstream).sum(), [x, *params])
    for k, (a, b) in enumerate(zip(grads_matrix, grads_edges)):
        assert_close(a, b, 1e-10, f"gradient {k}")
    assert check_gradients(run(structure), *arrays)


def test_gat_attention_coefficients_from_a_sparse_adjacency():
    layer = _gat()
    structure = sparse.sparse_coo_tensor(EDGES[::-1], np.ones(EDGES.shape[1]), (N, N))
    _, (edge_index, alpha) = layer(lamina.tensor(randn(N, F_IN), dtype=np.float64), structure,
                                   return_attention=True)
    # the repeated edge once, the existing loop replaced: 7 distinct edges between nodes + 6 loops
    assert edge_index.shape == (2, 13) and alpha.shape == (13, 2)
    totals = np.zeros((N, 2))
    np.add.at(totals, edge_index[1], alpha.numpy())
    assert_close(totals, np.ones((N, 2)), 1e-12)
