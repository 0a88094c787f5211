import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import nn
from lamina.data import Graph, collate_graphs
from lamina.nn.functional_call import functional_call

N, F_IN = 7, 4
# 13 edges among 7 nodes: a repeated edge (1 -> 2 twice), node 6 isolated, no self-loops
EDGES = np.array([[0, 1, 1, 2, 3, 4, 5, 0, 2, 3, 1, 4, 5],
                  [1, 2, 2, 3, 4, 5, 0, 3, 0, 1, 4, 2, 3]])
TORCH_DTYPE = {np.float32: torch.float32, np.float64: torch.float64}


def _built(layer, dtype=np.float64):
    layer.build([(N, F_IN), EDGES.shape])
    layer.built = True
    return layer.to(dtype)


def _t(index):
    return torch.from_numpy(np.asarray(index))


def _torch_sum(values, index, n):
    return torch.zeros((n,) + values.shape[1:], dtype=values.dtype).index_add_(0, _t(index), values)


# -- torch references, written with dense matrices or index_add_ / scatter_reduce -----------
def torch_gcn(x, weight, bias, edge_weight, edges=EDGES, add_loops=True, normalize=True):
    n = x.shape[0]
    a = torch.zeros(n, n, dtype=x.dtype)
    w = torch.ones(edges.shape[1], dtype=x.dtype) if edge_weight is None else edge_weight
    a = a.index_put((_t(edges[1]), _t(edges[0])), w, accumulate=True)      # A[i, j]: edge j -> i
    if add_loops:
        has_loop = np.zeros(n, dtype=bool)
        has_loop[edges[0][edges[0] == edges[1]]] = True
        a = a + torch.diag(torch.from_numpy((~has_loop).astype(np.float64)).to(x.dtype))
    if normalize:
        deg = a.sum(dim=1)
        inv_sqrt = torch.where(deg > 0, deg.clamp(min=1e-300) ** -0.5, torch.zeros_like(deg))
        a = inv_sqrt[:, None] * a * inv_sqrt[None, :]
    return a @ (x @ weight) + bias


def torch_sage(x, neighbor, bias, root, aggr, normalize=False):
    messages = x[_t(EDGES[0])]
    if aggr == "max":
        index = _t(EDGES[1])[:, None].expand(messages.shape)
        agg = torch.zeros(N, x.shape[1], dtype=x.dtype).scatter_reduce(0, index, messages, "amax",
                                                                         include_self=False)
    else:
        agg = _torch_sum(messages, EDGES[1], N)
        if aggr == "mean":
            agg = agg / torch.bincount(_t(EDGES[1]), minlength=N).clamp(min=1)[:, None].to(x.dtype)
    out = agg @ neighbor + bias + x @ root
    return torch.nn.functional.normalize(out, dim=-1) if normalize else out


def gat_edges(edges, n):
    kept = edges[:, edges[0] != edges[1]]
    loops = np.arange(n)
    return np.concatenate([kept, np.stack([loops, loops])], axis=1)


def torch_gat(x, weight, att_src, att_dst, bias, heads, concat, slope=0.2):
    n, c = x.shape[0], att_src.shape[1]
    edges = gat_edges(EDGES, n)
    src, dst = _t(edges[0]), _t(edges[1])
    h = (x @ weight).reshape(n, heads, c)
    scores = torch.nn.functional.leaky_relu((h * att_src).sum(-1)[src] + (h * att_dst).sum(-1)[dst], slope)
    peak = torch.zeros(n, heads, dtype=x.dtype).scatter_reduce(0, dst[:, None].expand(scores.shape), scores,
                                                                 "amax", include_self=False)
    e = torch.exp(scores - peak.detach()[dst])
    alpha = e / _torch_sum(e, edges[1], n)[dst]
    out = _torch_sum(h[src] * alpha[:, :, None], edges[1], n)
    out = out.reshape(n, heads * c) if concat else out.mean(dim=1)
    return out + bias


def torch_gin(x, weight, bias, eps):
    return ((1 + eps) * x + _torch_sum(x[_t(EDGES[0])], EDGES[1], N)) @ weight + bias


# -- outputs and gradients against torch -------------------------------------------------
def _params(layer):
    return [p.numpy() for p in layer.parameters()]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("weighted", [False, True])
def test_gcn_matches_dense_torch(weighted, dtype):
    layer = _built(nn.GCNConv(3))
    weight, bias = _params(layer)
    bias = randn(3, seed=5)
    x, ew = randn(N, F_IN, seed=1), np.random.default_rng(2).uniform(0.5, 2.0, EDGES.shape[1])

    def ours(x, weight, bias, ew):
        layer.to(x.dtype)
        return functional_call(layer, {"weight": weight, "bias": bias}, x, EDGES, ew if weighted else None)

    compare_with_torch(ours, lambda x, w, b, ew: torch_gcn(x, w, b, ew if weighted else None),
                       x, weight, bias, ew, dtype=dtype, rtol=1e-4 if dtype == np.float32 else None)
    assert check_gradients(ours, x, weight, bias, ew)


@pytest.mark.parametrize("add_loops,normalize", [(False, True), (True, False), (False, False)])
def test_gcn_options_match_dense_torch(add_loops, normalize):
    layer = _built(nn.GCNConv(3, add_self_loops=add_loops, normalize=normalize, bias=False))
    (weight,) = _params(layer)
    ew = np.random.default_rng(2).uniform(0.5, 2.0, EDGES.shape[1])

    def ours(x, weight, ew):
        return functional_call(layer, {"weight": weight}, x, EDGES, ew)

    compare_with_torch(ours, lambda x, w, ew: torch_gcn(x, w, 0.0, ew, add_loops=add_loops, normalize=normalize),
                       randn(N, F_IN), weight, ew, dtype=np.float64)


def test_gcn_keeps_an_existing_self_loop_and_adds_the_missing_ones():
    edges = np.concatenate([EDGES, [[2], [2]]], axis=1)
    layer = _built(nn.GCNConv(2))
    weight, bias = _params(layer)
    ew = np.random.default_rng(3).uniform(0.5, 2.0, edges.shape[1])
    ours = layer(lamina.tensor(randn(N, F_IN), dtype=np.float64), edges, ew).numpy()
    theirs = torch_gcn(torch.tensor(randn(N, F_IN)), torch.tensor(weight), torch.tensor(bias), torch.tensor(ew),
                       edges=edges)
    np.testing.assert_allclose(ours, theirs.numpy(), rtol=1e-10, atol=1e-12)
    reference = lamina.data.normalized_adjacency(edges, N, ew) @ randn(N, F_IN) @ weight + bias
    np.testing.assert_allclose(ours, reference, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("aggr", ["mean", "max", "sum"])
def test_sage_matches_torch(aggr, dtype):
    layer = _built(nn.SAGEConv(3, aggr=aggr, normalize=aggr == "sum"))
    bias = randn(3, seed=4)

    def ours(x, neighbor, bias, root):
        layer.to(x.dtype)
        values = {"neighbor_kernel": neighbor, "bias": bias, "root_kernel": root}
        return functional_call(layer, values, x, EDGES)

    neighbor, root = layer.neighbor_kernel.numpy(), layer.root_kernel.numpy()
    compare_with_torch(ours, lambda *a: torch_sage(*a, aggr=aggr, normalize=aggr == "sum"),
                       randn(N, F_IN, seed=1), neighbor, bias, root, dtype=dtype)
    assert check_gradients(ours, randn(N, F_IN, seed=1), neighbor, bias, root)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("heads,concat", [(1, True), (3, True), (2, False)])
def test_gat_matches_torch(heads, concat, dtype):
    layer = _built(nn.GATConv(2, heads=heads, concat=concat))
    bias = randn(*layer.bias.shape, seed=4)

    def ours(x, weight, att_src, att_dst, bias):
        layer.to(x.dtype)
        values = {"weight": weight, "att_src": att_src, "att_dst": att_dst, "bias": bias}
        return functional_call(layer, values, x, EDGES)

    arrays = (randn(N, F_IN, seed=1), randn(F_IN, heads * 2, seed=6, scale=0.5), randn(heads, 2, seed=2, scale=2),
              randn(heads, 2, seed=3, scale=0.5), bias)   # scores of both signs at each node
    compare_with_torch(ours, lambda *a: torch_gat(*a, heads=heads, concat=concat), *arrays, dtype=dtype,
                       rtol=1e-4 if dtype == np.float32 else None)
    assert check_gradients(ours, *arrays)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gin_matches_torch(dtype):
    layer = nn.GINConv(nn.Dense(3), eps=0.0, train_eps=True)
    layer(lamina.tensor(randn(N, F_IN), dtype=np.float32), EDGES)

    def ours(x, weight, bias, eps):
        layer.to(x.dtype)
        return functional_call(layer, {"mlp.weight": weight, "mlp.bias": bias, "eps": eps}, x, EDGES)

    arrays = (randn(N, F_IN, seed=1), layer.mlp.weight.numpy(), randn(3, seed=2), np.array([0.3]))
    compare_with_torch(ours, torch_gin, *arrays, dtype=dtype)
    assert check_gradients(ours, *arrays)


def test_gat_attention_is_a_softmax_over_incoming_edges_and_dropout_only_in_training():
    layer = _built(nn.GATConv(2, heads=2, dropout=0.5))
    layer.eval()
    x = lamina.tensor(randn(N, F_IN), dtype=np.float64)
    out, (edges, alpha) = layer(x, EDGES, return_attention=True)
    sums = np.zeros((N, 2))
    np.add.at(sums, edges[1], alpha.numpy())
    np.testing.assert_allclose(sums, 1.0, rtol=1e-12)
    np.testing.assert_array_equal(layer(x, EDGES).numpy(), out.numpy())
    layer.train()
    lamina.manual_seed(0)
    assert not np.allclose(layer(x, EDGES).numpy(), out.numpy())


# -- structural properties -----------------------------------------------------------------
def _layers():
    return [nn.GCNConv(3), nn.SAGEConv(3, aggr="max"), nn.SAGEConv(3, aggr="mean"), nn.GATConv(2, heads=2),
            nn.GINConv(nn.Dense(3))]


@pytest.mark.parametrize("index", range(5))
def test_layers_are_permutation_equivariant(index):
    layer = _layers()[index]
    x = lamina.tensor(randn(N, F_IN), dtype=np.float32)
    out = layer(x, EDGES).numpy()
    perm = np.random.default_rng(7).permutation(N)          # new node k is old node perm[k]
    new_label = np.argsort(perm)
    permuted = layer(lamina.tensor(randn(N, F_IN)[perm], dtype=np.float32), new_label[EDGES]).numpy()
    np.testing.assert_allclose(permuted, out[perm], rtol=1e-5, atol=1e-6)


def test_isolated_node_sees_only_itself():
    x = lamina.tensor(randn(N, F_IN), dtype=np.float64)
    gcn, sage, gat = _built(nn.GCNConv(3)), _built(nn.SAGEConv(3)), _built(nn.GATConv(3))
    row = x.numpy()[6]
    np.testing.assert_allclose(gcn(x, EDGES).numpy()[6], row @ gcn.weight.numpy() + gcn.bias.numpy())
    np.testing.assert_allclose(sage(x, EDGES).numpy()[6], row @ sage.root_kernel.numpy() + sage.bias.numpy())
    np.testing.assert_allclose(gat(x, EDGES).numpy()[6], row @ gat.weight.numpy() + gat.bias.numpy())


def _graphs():
    rng = np.random.default_rng(11)
    graphs = []
    for n, e in ((4, 6), (6, 9), (3, 2)):
        graphs.append(Graph(rng.standard_normal((n, F_IN)), rng.integers(0, n, (2, e)), y=int(n > 3)))
    return graphs


@pytest.mark.parametrize("index", range(5))
def test_a_batch_of_graphs_gives_the_per_graph_outputs(index):
    layer, graphs = _layers()[index], _graphs()
    batch = collate_graphs(graphs)
    together = layer(lamina.tensor(batch.x, dtype=np.float32), batch.edge_index).numpy()
    apart = np.concatenate([layer(lamina.tensor(g.x, dtype=np.float32), g.edge_index).numpy() for g in graphs])
    np.testing.assert_allclose(together, apart, rtol=1e-5, atol=1e-6)
    pooled = nn.global_mean_pool(together, batch.batch).numpy()
    np.testing.assert_allclose(pooled[1], apart[4:10].mean(axis=0), rtol=1e-5, atol=1e-6)


# -- pooling ---------------------------------------------------------------------------------
BATCH = np.array([0, 0, 1, 1, 1, 3, 3])      # graph 2 has no node


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["add", "mean", "max"])
def test_global_pools_match_torch(kind, dtype):
    ours = {"add": nn.global_add_pool, "mean": nn.global_mean_pool, "max": nn.global_max_pool}[kind]

    def theirs(x):
        if kind == "max":
            index = _t(BATCH)[:, None].expand(x.shape)
            return torch.zeros(4, x.shape[1], dtype=x.dtype).scatter_reduce(0, index, x, "amax", include_self=False)
        total = _torch_sum(x, BATCH, 4)
        return total / torch.bincount(_t(BATCH), minlength=4).clamp(min=1)[:, None].to(x.dtype) if kind == "mean" \
            else total

    compare_with_torch(lambda x: ours(x, BATCH), theirs, randn(N, 3), dtype=dtype)
    assert check_gradients(lambda x: ours(x, BATCH), randn(N, 3))
    layer = {"add": nn.GlobalAddPool, "mean": nn.GlobalMeanPool, "max": nn.GlobalMaxPool}[kind]()
    np.testing.assert_array_equal(layer(randn(N, 3), BATCH).numpy(), ours(randn(N, 3), BATCH).numpy())
    assert ours(randn(N, 3)).shape == (1, 3)


# -- configuration and errors ---------------------------------------------------------------
@pytest.mark.parametrize("index", range(5))
def test_layers_rebuild_from_config(index):
    layer = _layers()[index]
    layer(lamina.tensor(randn(N, F_IN), dtype=np.float32), EDGES)
    twin = nn.layer_from_config(nn.layer_to_config(layer))
    assert type(twin) is type(layer) and twin.get_config() == layer.get_config()
    twin(lamina.tensor(randn(N, F_IN), dtype=np.float32), EDGES)
    twin.load_state_dict(layer.state_dict())
    x = lamina.tensor(randn(N, F_IN, seed=3), dtype=np.float32)
    np.testing.assert_array_equal(twin(x, EDGES).numpy(), layer(x, EDGES).numpy())
    assert "->" in repr(layer) or "eps" in repr(layer)


def test_layer_errors_name_the_layer_and_the_shapes():
    layer = nn.GCNConv(3)
    x = randn(N, F_IN).astype(np.float32)
    with pytest.raises(ValueError, match=r"GCNConv.*node 8, out of range for 7 nodes"):
        layer(x, EDGES + 3)
    with pytest.raises(TypeError, match=r"GCNConv.*edge_index must hold integers, got dtype float64"):
        layer(x, EDGES.astype(float))
    with pytest.raises(ValueError, match=r"GCNConv.*shape \(2, num_edges\).*got shape \(13, 2\)"):
        layer(x, EDGES.T.copy())
    with pytest.raises(ValueError, match=r"GCNConv.*edge_weight of shape \(5,\) does not match edge_index "
                                         r"of shape \(2, 13\)"):
        layer(x, EDGES, np.ones(5))
    with pytest.raises(ValueError, match=r"GCNConv.*shape \(7, 5\).*4 features"):
        layer(randn(N, 5).astype(np.float32), EDGES)
    with pytest.raises(ValueError, match="SAGEConv: aggr must be one of"):
        nn.SAGEConv(3, aggr="min")
