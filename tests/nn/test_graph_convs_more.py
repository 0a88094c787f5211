"""GATv2Conv, TransformerConv, ChebConv, GraphConv, APPNP, SGConv and GCN2Conv against torch
re-implementations of PyTorch Geometric's formulas (dense matrices or index_add_)."""

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import nn
from lamina.nn.functional_call import functional_call

N, F_IN = 9, 3
# two graphs in one batch: nodes 0-4 (node 4 isolated, 0 -> 1 twice) and nodes 5-8
EDGES = np.array([[0, 0, 1, 2, 3, 1, 5, 6, 7, 8, 6],
                  [1, 1, 2, 0, 1, 3, 6, 7, 5, 6, 8]])
WEIGHTS = np.random.default_rng(21).uniform(0.5, 2.0, EDGES.shape[1])


def _t(index):
    return torch.from_numpy(np.asarray(index))


def _torch_sum(values, index, n=N):
    return torch.zeros((n,) + values.shape[1:], dtype=values.dtype).index_add_(0, _t(index), values)


def _torch_softmax(scores, index, n=N):
    peak = torch.zeros((n,) + scores.shape[1:], dtype=scores.dtype).scatter_reduce(
        0, _t(index).view(-1, *([1] * (scores.ndim - 1))).expand(scores.shape), scores, "amax", include_self=False)
    e = torch.exp(scores - peak.detach()[_t(index)])
    return e / _torch_sum(e, index, n)[_t(index)]


def _dense(weights, edges=EDGES, n=N):
    """A[i, j] = summed weight of the edges j -> i."""
    return torch.zeros(n, n, dtype=weights.dtype).index_put((_t(edges[1]), _t(edges[0])), weights, accumulate=True)


def _gcn_matrix(weights, edges=EDGES):
    a = _dense(weights, edges)
    has_loop = np.zeros(N, dtype=bool)
    has_loop[edges[0][edges[0] == edges[1]]] = True
    a = a + torch.diag(torch.from_numpy((~has_loop).astype(np.float64)))
    deg = a.sum(dim=1)
    inv_sqrt = torch.where(deg > 0, deg.clamp(min=1e-300) ** -0.5, torch.zeros_like(deg))
    return inv_sqrt[:, None] * a * inv_sqrt[None, :]


def _with_self_loops(edges=EDGES):
    kept = edges[:, edges[0] != edges[1]]
    return np.concatenate([kept, np.stack([np.arange(N), np.arange(N)])], axis=1)


def _built(layer, dtype=np.float64):
    layer.build([(N, F_IN), EDGES.shape])
    return layer.to(dtype)


def _call(layer, values, *args):
    return functional_call(layer, values, *args)


# -- torch references ----------------------------------------------------------------------
def torch_gatv2(x, weight_l, bias_l, weight_r, bias_r, att, bias, heads, concat):
    """PyG's GATv2Conv: lin_l / lin_r are Linear layers with biases (bias_* may be 0)."""
    edges = _with_self_loops()
    src, dst = _t(edges[0]), _t(edges[1])
    c = att.shape[1]
    left, right = (x @ weight_l + bias_l).view(N, heads, c), (x @ weight_r + bias_r).view(N, heads, c)
    scores = (torch.nn.functional.leaky_relu(left[src] + right[dst], 0.2) * att).sum(-1)
    alpha = _torch_softmax(scores, edges[1])
    out = _torch_sum(left[src] * alpha[..., None], edges[1])
    return (out.reshape(N, heads * c) if concat else out.mean(1)) + bias


def torch_transformer(x, wq, bq, wk, bk, wv, bv, ws, bs, wb, heads, concat, beta):
    src, dst = _t(EDGES[0]), _t(EDGES[1])
    c = wq.shape[1] // heads
    q, k, v = ((x @ w + b).view(N, heads, c) for w, b in ((wq, bq), (wk, bk), (wv, bv)))
    alpha = _torch_softmax((q[dst] * k[src]).sum(-1) / c ** 0.5, EDGES[1])
    out = _torch_sum(v[src] * alpha[..., None], EDGES[1])
    out = out.reshape(N, heads * c) if concat else out.mean(1)
    root = x @ ws + bs
    if beta:
        gate = torch.sigmoid(torch.cat([out, root, out - root], dim=1) @ wb)
        return gate * root + (1 - gate) * out
    return out + root


def torch_cheb(x, weight, bias, edge_weight, lambda_max, edges=EDGES):
    keep = edges[0] != edges[1]
    a = _dense(edge_weight[_t(np.flatnonzero(keep))], edges[:, keep])
    deg = a.sum(dim=0)                                        # out-degrees
    inv_sqrt = torch.where(deg > 0, deg.clamp(min=1e-300) ** -0.5, torch.zeros_like(deg))
    laplacian = torch.eye(N, dtype=x.dtype) - inv_sqrt[:, None] * a * inv_sqrt[None, :]
    scaled = 2.0 * laplacian / lambda_max - torch.eye(N, dtype=x.dtype)
    terms = [x, scaled @ x]
    while len(terms) < weight.shape[0]:
        terms.append(2 * scaled @ terms[-1] - terms[-2])
    return sum(t @ w for t, w in zip(terms, weight)) + bias


def torch_graph_conv(x, rel, root, bias, edge_weight, aggr):
    a = _dense(edge_weight)
    if aggr == "mean":
        a = a / torch.bincount(_t(EDGES[1]), minlength=N).clamp(min=1)[:, None].to(x.dtype)
    return a @ x @ rel + x @ root + bias


def torch_appnp(x, edge_weight, k, alpha):
    p, h = _gcn_matrix(edge_weight), x
    for _ in range(k):
        h = (1 - alpha) * p @ h + alpha * x
    return h


# -- outputs and gradients -----------------------------------------------------------------
@pytest.mark.parametrize("heads,concat,share", [(1, True, False), (2, True, False), (3, False, False),
                                                (2, True, True)])
def test_gatv2_matches_torch(heads, concat, share):
    layer = _built(nn.GATv2Conv(2, heads=heads, concat=concat, share_weights=share))
    width = 2 * heads
    arrays = (randn(N, F_IN, seed=1), randn(F_IN, width, seed=2), randn(width, seed=6), randn(F_IN, width, seed=3),
              randn(width, seed=7), randn(heads, 2, seed=4), randn(*layer.bias.shape, seed=5))

    def ours(x, wl, bl, wr, br, att, bias):
        values = {"weight_l": wl, "bias_l": bl, "att": att, "bias": bias}
        if not share:
            values.update(weight_r=wr, bias_r=br)
        return _call(layer, values, x, EDGES)

    def theirs(x, wl, bl, wr, br, att, bias):
        right = (wl, bl) if share else (wr, br)
        return torch_gatv2(x, wl, bl, *right, att, bias, heads, concat)

    compare_with_torch(ours, theirs, *arrays, dtype=np.float64)
    assert check_gradients(ours, *arrays)


@pytest.mark.parametrize("share", [False, True])
def test_gatv2_without_bias_matches_torch(share):
    layer = _built(nn.GATv2Conv(2, heads=2, bias=False, share_weights=share))
    arrays = (randn(N, F_IN, seed=1), randn(F_IN, 4, seed=2), randn(F_IN, 4, seed=3), randn(2, 2, seed=4))

    def ours(x, wl, wr, att):
        values = {"weight_l": wl, "att": att} if share else {"weight_l": wl, "weight_r": wr, "att": att}
        return _call(layer, values, x, EDGES)

    def theirs(x, wl, wr, att):
        return torch_gatv2(x, wl, 0.0, wl if share else wr, 0.0, att, 0.0, 2, True)

    compare_with_torch(ours, theirs, *arrays, dtype=np.float64)
    assert check_gradients(ours, *arrays)


@pytest.mark.parametrize("bias,share,names", [
    (True, False, {"weight_l", "bias_l", "weight_r", "bias_r", "att", "bias"}),
    (True, True, {"weight_l", "bias_l", "att", "bias"}),
    (False, False, {"weight_l", "weight_r", "att"}),
    (False, True, {"weight_l", "att"})])
def test_gatv2_parameters_follow_bias_and_share_weights(bias, share, names):
    layer = _built(nn.GATv2Conv(2, heads=3, bias=bias, share_weights=share))
    assert {name for name, _ in layer.named_parameters()} == names
    if bias:
        assert layer.bias_l.shape == (6,)
    twin = nn.layer_from_config(nn.layer_to_config(layer))
    assert twin.get_config() == layer.get_config()
    assert {name for name, _ in _built(twin).named_parameters()} == names


def test_gatv2_attention_is_a_softmax_and_dropout_acts_only_in_training():
    layer = _built(nn.GATv2Conv(2, heads=2, dropout=0.5))
    x = lamina.tensor(randn(N, F_IN), dtype=np.float64)
    layer.eval()
    out, (edges, alpha) = layer(x, EDGES, return_attention=True)
    sums = np.zeros((N, 2))
    np.add.at(sums, edges[1], alpha.numpy())
    np.testing.assert_allclose(sums, 1.0, rtol=1e-12)
    layer.train()
    lamina.manual_seed(0)
    assert not np.allclose(layer(x, EDGES).numpy(), out.numpy())


@pytest.mark.parametrize("heads,concat,beta", [(1, True, False), (2, True, True), (2, False, True),
                                               (3, False, False)])
def test_transformer_conv_matches_torch(heads, concat, beta):
    layer = _built(nn.TransformerConv(2, heads=heads, concat=concat, beta=beta))
    width, out_width = 2 * heads, 2 * heads if concat else 2
    names = ["query_kernel", "query_bias", "key_kernel", "key_bias", "value_kernel", "value_bias", "skip_kernel",
             "skip_bias", "beta_kernel"]
    shapes = [(F_IN, width), (width,)] * 3 + [(F_IN, out_width), (out_width,), (3 * out_width, 1)]
    arrays = [randn(*s, seed=10 + k) for k, s in enumerate(shapes)]

    def ours(x, *params):
        values = dict(zip(names, params))
        if not beta:
            values.pop("beta_kernel")
        return _call(layer, values, x, EDGES)

    # the key bias shifts all of a node's scores alike: its gradient is 0 up to rounding
    wants = [k != 4 for k in range(len(arrays) + 1)]
    compare_with_torch(ours, lambda x, *p: torch_transformer(x, *p, heads=heads, concat=concat, beta=beta),
                       randn(N, F_IN, seed=1), *arrays, dtype=np.float64, grad=wants)
    assert check_gradients(ours, randn(N, F_IN, seed=1), *arrays)


@pytest.mark.parametrize("k,lambda_max", [(1, 2.0), (2, 2.0), (4, 2.0), (3, 1.5)])
def test_cheb_conv_matches_torch(k, lambda_max):
    layer = _built(nn.ChebConv(2, K=k, lambda_max=lambda_max))
    edges = np.concatenate([EDGES, [[2], [2]]], axis=1)          # a self-loop, which ChebConv drops
    weights = np.r_[WEIGHTS, 3.0]

    def ours(x, weight, bias, ew):
        return _call(layer, {"weight": weight, "bias": bias}, x, edges, ew)

    def theirs(x, weight, bias, ew):
        return torch_cheb(x, weight, bias, ew, lambda_max, edges)

    arrays = (randn(N, F_IN, seed=1), randn(k, F_IN, 2, seed=2), randn(2, seed=3), weights)
    compare_with_torch(ours, theirs, *arrays, dtype=np.float64)
    assert check_gradients(ours, *arrays)


@pytest.mark.parametrize("aggr", ["sum", "mean"])
def test_graph_conv_matches_torch(aggr):
    layer = _built(nn.GraphConv(2, aggr=aggr))

    def ours(x, rel, root, bias, ew):
        return _call(layer, {"rel_kernel": rel, "root_kernel": root, "bias": bias}, x, EDGES, ew)

    arrays = (randn(N, F_IN, seed=1), randn(F_IN, 2, seed=2), randn(F_IN, 2, seed=3), randn(2, seed=4), WEIGHTS)
    compare_with_torch(ours, lambda *a: torch_graph_conv(*a, aggr=aggr), *arrays, dtype=np.float64)
    assert check_gradients(ours, *arrays)


def test_graph_conv_max_aggregation_takes_the_elementwise_neighbour_maximum():
    layer = _built(nn.GraphConv(2, aggr="max", bias=False))
    x = randn(N, F_IN, seed=1)
    out = layer(lamina.tensor(x, dtype=np.float64), EDGES).numpy()
    neighbours = np.zeros((N, F_IN))
    for i in range(N):
        sources = EDGES[0][EDGES[1] == i]
        neighbours[i] = x[sources].max(axis=0) if sources.size else 0.0
    expected = neighbours @ layer.rel_kernel.numpy() + x @ layer.root_kernel.numpy()
    np.testing.assert_allclose(out, expected, rtol=1e-12)


@pytest.mark.parametrize("k,alpha", [(1, 0.1), (5, 0.2), (3, 0.0)])
def test_appnp_matches_torch(k, alpha):
    layer = nn.APPNP(k, alpha)
    compare_with_torch(lambda x, ew: layer(x, EDGES, ew), lambda x, ew: torch_appnp(x, ew, k, alpha),
                       randn(N, F_IN, seed=1), WEIGHTS, dtype=np.float64)
    assert check_gradients(lambda x, ew: layer(x, EDGES, ew), randn(N, F_IN, seed=1), WEIGHTS)


def test_sgconv_matches_torch_and_caches_the_propagated_features():
    layer = _built(nn.SGConv(2, K=3))

    def theirs(x, weight, bias):
        p = _gcn_matrix(torch.ones(EDGES.shape[1], dtype=x.dtype))
        return p @ p @ p @ x @ weight + bias

    arrays = (randn(N, F_IN, seed=1), randn(F_IN, 2, seed=2), randn(2, seed=3))
    ours = lambda x, w, b: _call(layer, {"weight": w, "bias": b}, x, EDGES)  # noqa: E731
    compare_with_torch(ours, theirs, *arrays, dtype=np.float64)
    assert check_gradients(ours, *arrays)
    cached = _built(nn.SGConv(2, K=3, cached=True))
    first = cached(lamina.tensor(arrays[0], dtype=np.float64), EDGES).numpy()
    again = cached(lamina.tensor(arrays[0] * 5.0, dtype=np.float64), EDGES).numpy()
    np.testing.assert_array_equal(first, again)


@pytest.mark.parametrize("theta,layer_number", [(None, None), (0.5, 2)])
def test_gcn2conv_matches_torch(theta, layer_number):
    layer = _built(nn.GCN2Conv(0.2, theta, layer_number))
    beta = 1.0 if theta is None else np.log(theta / layer_number + 1.0)

    def theirs(x, x0, weight):
        h = 0.8 * _gcn_matrix(torch.ones(EDGES.shape[1], dtype=x.dtype)) @ x + 0.2 * x0
        return (1 - beta) * h + beta * h @ weight

    arrays = (randn(N, F_IN, seed=1), randn(N, F_IN, seed=2), randn(F_IN, F_IN, seed=3))
    ours = lambda x, x0, w: _call(layer, {"weight": w}, x, x0, EDGES)  # noqa: E731
    compare_with_torch(ours, theirs, *arrays, dtype=np.float64)
    assert check_gradients(ours, *arrays)


# -- structure -----------------------------------------------------------------------------
def _layers():
    return [nn.GATv2Conv(2, heads=2), nn.TransformerConv(2, heads=2, beta=True), nn.ChebConv(2, K=3),
            nn.GraphConv(2, aggr="mean"), nn.APPNP(3, 0.1), nn.SGConv(2, K=2), nn.GCN2Conv(0.1)]


def _run(layer, x, edges):
    return layer(x, x, edges) if isinstance(layer, nn.GCN2Conv) else layer(x, edges)


@pytest.mark.parametrize("index", range(7))
def test_convs_are_permutation_equivariant(index):
    layer = _built(_layers()[index])
    x = randn(N, F_IN, seed=4)
    out = _run(layer, lamina.tensor(x, dtype=np.float64), EDGES).numpy()
    perm = np.random.default_rng(8).permutation(N)            # new node k is old node perm[k]
    relabel = np.argsort(perm)
    permuted = _run(layer, lamina.tensor(x[perm], dtype=np.float64), relabel[EDGES]).numpy()
    np.testing.assert_allclose(permuted, out[perm], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("index", range(7))
def test_convs_treat_a_batch_as_separate_graphs(index):
    layer = _built(_layers()[index])
    x = randn(N, F_IN, seed=4)
    together = _run(layer, lamina.tensor(x, dtype=np.float64), EDGES).numpy()
    first = EDGES[:, EDGES[0] < 5]
    alone = _run(layer, lamina.tensor(x[:5], dtype=np.float64), first).numpy()
    np.testing.assert_allclose(together[:5], alone, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("index", range(7))
def test_convs_name_themselves_in_input_errors(index):
    layer = _built(_layers()[index])
    name = type(layer).__name__
    x = lamina.tensor(randn(N, F_IN), dtype=np.float64)
    with pytest.raises(ValueError, match=f"{name}.*out of range"):
        _run(layer, x, np.array([[0, 1], [1, N]]))
    if not isinstance(layer, nn.APPNP):
        wide = lamina.tensor(randn(N, F_IN + 1), dtype=np.float64)
        with pytest.raises(Exception, match=name):
            _run(layer, wide, EDGES)


def test_constructor_arguments_are_checked():
    with pytest.raises(ValueError, match="APPNP: alpha"):
        nn.APPNP(2, 1.5)
    with pytest.raises(ValueError, match="ChebConv: K"):
        nn.ChebConv(2, K=0)
    with pytest.raises(ValueError, match="GCN2Conv: give theta and layer"):
        nn.GCN2Conv(0.1, theta=0.5)
    with pytest.raises(ValueError, match="GATv2Conv: dropout"):
        nn.GATv2Conv(2, dropout=1.0)
