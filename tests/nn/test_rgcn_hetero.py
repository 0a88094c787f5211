"""R-GCN, HeteroConv and the heterogeneous graph container."""

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import functional as F
from lamina import nn, optim
from lamina.data import HeteroGraph
from lamina.nn.functional_call import functional_call

N, F_IN, F_OUT, R = 7, 4, 6, 3
EDGES = np.array([[0, 1, 1, 2, 3, 4, 5, 0, 2, 3, 1, 4, 5, 6],
                  [1, 2, 2, 3, 4, 5, 0, 3, 0, 1, 4, 2, 3, 0]])
TYPES = np.array([0, 1, 1, 2, 0, 0, 1, 2, 2, 0, 1, 0, 2, 0])


def torch_rgcn(x, weights, root, bias):
    """h_i = x_i root + b + sum_r mean_{j -> i of relation r} x_j W_r, with index_add_."""
    out = x @ root + bias
    for r in range(R):
        src, dst = (torch.from_numpy(row[TYPES == r]) for row in EDGES)
        total = torch.zeros(N, x.shape[1], dtype=x.dtype).index_add_(0, dst, x[src])
        count = torch.bincount(dst, minlength=N).clamp(min=1).to(x.dtype)[:, None]
        out = out + (total / count) @ weights[r]
    return out


def _layer(**options):
    layer = nn.RGCNConv(F_OUT, R, **options)
    layer.build([(N, F_IN), EDGES.shape, TYPES.shape])
    return layer.to(np.float64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_rgcn_matches_torch(dtype):
    layer = _layer()

    def ours(x, weight, root, bias):
        layer.to(x.dtype)
        return functional_call(layer, {"weight": weight, "root": root, "bias": bias}, x, EDGES, TYPES)

    arrays = (randn(N, F_IN, seed=1), randn(R, F_IN, F_OUT, seed=2), randn(F_IN, F_OUT, seed=3), randn(F_OUT, seed=4))
    compare_with_torch(ours, torch_rgcn, *arrays, dtype=dtype, rtol=1e-4 if dtype == np.float32 else None)
    assert check_gradients(ours, *arrays)


def test_rgcn_basis_decomposition_matches_torch():
    layer = _layer(num_bases=2)

    def ours(x, comp, basis, root, bias):
        return functional_call(layer, {"comp": comp, "basis": basis, "root": root, "bias": bias}, x, EDGES, TYPES)

    def theirs(x, comp, basis, root, bias):
        return torch_rgcn(x, torch.einsum("rb,bio->rio", comp, basis), root, bias)

    arrays = (randn(N, F_IN, seed=1), randn(R, 2, seed=5), randn(2, F_IN, F_OUT, seed=6), randn(F_IN, F_OUT, seed=3),
              randn(F_OUT, seed=4))
    compare_with_torch(ours, theirs, *arrays, dtype=np.float64)
    assert check_gradients(ours, *arrays)


def test_rgcn_block_diagonal_decomposition_matches_torch():
    layer = _layer(num_blocks=2)

    def ours(x, weight, root, bias):
        return functional_call(layer, {"weight": weight, "root": root, "bias": bias}, x, EDGES, TYPES)

    def theirs(x, weight, root, bias):
        return torch_rgcn(x, torch.stack([torch.block_diag(*weight[r]) for r in range(R)]), root, bias)

    arrays = (randn(N, F_IN, seed=1), randn(R, 2, F_IN // 2, F_OUT // 2, seed=7), randn(F_IN, F_OUT, seed=3),
              randn(F_OUT, seed=4))
    compare_with_torch(ours, theirs, *arrays, dtype=np.float64)
    assert check_gradients(ours, *arrays)


def test_rgcn_errors():
    with pytest.raises(ValueError, match="num_bases or num_blocks"):
        nn.RGCNConv(4, 2, num_bases=2, num_blocks=2)
    with pytest.raises(ValueError, match="must divide"):
        nn.RGCNConv(5, 2, num_blocks=2)(np.zeros((3, 4)), np.zeros((2, 0), dtype=np.int64), np.zeros(0, dtype=int))
    layer = _layer()
    with pytest.raises(ValueError, match=r"relation 3; expected values in \[0, 3\)"):
        layer(randn(N, F_IN), EDGES, np.full(EDGES.shape[1], 3))
    with pytest.raises(ValueError, match="one per edge"):
        layer(randn(N, F_IN), EDGES, TYPES[:-1])


def _hetero_inputs():
    x_dict = {"author": randn(3, 4, seed=1), "paper": randn(5, 4, seed=2)}
    edges = {("author", "writes", "paper"): np.array([[0, 1, 2, 2], [0, 0, 3, 4]]),
             ("paper", "cites", "paper"): np.array([[0, 1, 2, 3], [1, 2, 3, 0]]),
             ("paper", "written_by", "author"): np.array([[0, 0, 3, 4], [0, 1, 2, 2]])}
    return x_dict, edges


@pytest.mark.parametrize("aggr", ["sum", "mean", "max"])
def test_hetero_conv_combines_the_edge_types_of_each_target_by_hand(aggr):
    lamina.manual_seed(0)
    x_dict, edges = _hetero_inputs()
    convs = {e: nn.SAGEConv(3) for e in edges}
    hetero = nn.HeteroConv(convs, aggr=aggr)
    hetero(x_dict, edges)                                  # builds the convolutions
    out = hetero.to(np.float64)({t: lamina.tensor(x, dtype=np.float64) for t, x in x_dict.items()}, edges)
    assert sorted(out) == ["author", "paper"]
    writes, cites, written_by = (convs[e] for e in edges)

    def sage(conv, x_src, x_dst, index):                    # SAGE with mean over sources, by hand
        mean = np.zeros((x_dst.shape[0], x_src.shape[1]))
        for j, i in index.T:
            mean[i] += x_src[j] / np.sum(index[1] == i)
        return mean @ conv.neighbor_kernel.numpy() + conv.bias.numpy() + x_dst @ conv.root_kernel.numpy()

    a, p = x_dict["author"], x_dict["paper"]
    from_authors = sage(writes, a, p, edges[("author", "writes", "paper")])
    from_papers = sage(cites, p, p, edges[("paper", "cites", "paper")])
    combine = {"sum": np.add, "mean": lambda u, v: (u + v) / 2, "max": np.maximum}[aggr]
    np.testing.assert_allclose(out["paper"].numpy(), combine(from_authors, from_papers), rtol=1e-12)
    np.testing.assert_allclose(out["author"].numpy(), sage(written_by, p, a, edges[("paper", "written_by", "author")]),
                               rtol=1e-12)


def test_hetero_conv_gradients():
    lamina.manual_seed(0)
    x_dict, edges = _hetero_inputs()
    hetero = nn.HeteroConv({e: nn.SAGEConv(3) for e in edges}, aggr="mean")
    hetero(x_dict, edges)
    hetero.to(np.float64)

    def ours(a, p):
        out = hetero({"author": a, "paper": p}, edges)
        return out["paper"].sum() * 2 + (out["author"] ** 2).sum()

    assert check_gradients(ours, x_dict["author"], x_dict["paper"])


def test_hetero_errors_name_the_missing_piece():
    x_dict, edges = _hetero_inputs()
    hetero = nn.HeteroConv({e: nn.SAGEConv(3) for e in list(edges)[:2]})
    with pytest.raises(KeyError, match="unknown edge type"):
        hetero(x_dict, edges)
    with pytest.raises(KeyError, match="features for node type 'author'"):
        hetero({"paper": x_dict["paper"]}, dict(list(edges.items())[:2]))
    with pytest.raises(KeyError, match="node type 'venue', which has no features"):
        HeteroGraph(x_dict, {**edges, ("paper", "at", "venue"): np.zeros((2, 1), dtype=int)})
    graph = HeteroGraph(x_dict, edges)
    with pytest.raises(KeyError, match="unknown edge type"):
        graph.edge_index(("author", "cites", "paper"))
    with pytest.raises(ValueError, match="outside"):
        HeteroGraph(x_dict, {("author", "writes", "paper"): np.array([[3], [0]])})


def test_hetero_graph_to_homogeneous():
    x_dict, edges = _hetero_inputs()
    view = HeteroGraph(x_dict, edges).to_homogeneous()
    assert view.offsets == {"author": 0, "paper": 3}
    assert np.array_equal(view.node_type, [0, 0, 0, 1, 1, 1, 1, 1])
    assert np.array_equal(view.x, np.concatenate([x_dict["author"], x_dict["paper"]]))
    for r, (src, _, dst) in enumerate(view.edge_types):
        shifted = view.edge_index[:, view.edge_type == r] - np.array([[view.offsets[src]], [view.offsets[dst]]])
        assert np.array_equal(shifted, edges[view.edge_types[r]])


def _synthetic_hetero(rng, n_users=300, n_items=60, classes=3):
    """Users' labels show only through relations: a user 'likes' items of its own class and
    'dislikes' items of the next class; features are noise."""
    item_class = np.arange(n_items) % classes
    labels = rng.integers(0, classes, n_users)
    likes, dislikes = [], []
    for u, c in enumerate(labels):
        likes += [(i, u) for i in rng.choice(np.flatnonzero(item_class == c), 3, replace=False)]
        dislikes += [(i, u) for i in rng.choice(np.flatnonzero(item_class == (c + 1) % classes), 3, replace=False)]
    x_dict = {"user": rng.standard_normal((n_users, 8)), "item": np.eye(n_items, 8) + rng.standard_normal((n_items, 8))}
    edges = {("item", "liked_by", "user"): np.array(likes).T, ("item", "disliked_by", "user"): np.array(dislikes).T}
    return HeteroGraph(x_dict, edges, y_dict={"user": labels}), item_class


def test_rgcn_learns_node_labels_of_a_heterogeneous_graph():
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    graph, item_class = _synthetic_hetero(rng)
    view = graph.to_homogeneous()
    labels = graph.y_dict["user"]
    users = np.arange(graph.num_nodes("user")) + view.offsets["user"]
    train = rng.random(users.shape[0]) < 0.5
    # items carry a learnable one-hot identity: append the item id as extra features
    x = np.concatenate([view.x, np.eye(view.x.shape[0])[:, view.offsets["item"]:]], axis=1).astype(np.float32)
    conv_1, conv_2 = nn.RGCNConv(16, 2, num_bases=2), nn.RGCNConv(3, 2)
    self_edges = (view.edge_index, view.edge_type)

    def model():
        h = F.relu(conv_1(x, *self_edges))
        return conv_2(h, *self_edges)

    model()
    opt = optim.Adam(conv_1.parameters() + conv_2.parameters(), lr=0.02)
    for _ in range(60):
        opt.zero_grad()
        F.categorical_cross_entropy(model()[users[train]], labels[train], from_logits=True).backward()
        opt.step()
    accuracy = float((model().numpy()[users[~train]].argmax(1) == labels[~train]).mean())
    print(f"R-GCN test accuracy on user labels: {accuracy:.3f} (chance 0.33)")
    assert accuracy > 0.8, accuracy
