"""LightGCN and NGCF: the normalised adjacency and the propagations against dense NumPy and
torch rewrites, BPR with L2 in value and gradients, full-ranking evaluation against a NumPy
loop, save/load, and learning community structure past matrix factorisation and popularity."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, run_readme_section
from lamina import backend, models
from lamina.errors import ShapeError
from lamina.models import (
    NGCF,
    LightGCN,
    bpr_loss,
    fit_bpr,
    full_ranking_metrics,
    lightgcn_propagate,
    ngcf_propagate,
    normalized_adjacency,
)

# user 4 and item 5 have no interaction; (0, 1) is given twice and counts once
USERS = np.array([0, 0, 1, 2, 2, 3, 0, 1])
ITEMS = np.array([0, 1, 1, 2, 3, 4, 1, 3])
N_USERS, N_ITEMS = 5, 6
N = N_USERS + N_ITEMS


@pytest.fixture
def float64():
    previous = backend.get_default_dtype()
    backend.set_default_dtype("float64")
    yield
    backend.set_default_dtype(previous)


def _dense_adjacency() -> np.ndarray:
    """D^-1/2 A D^-1/2 of the bipartite graph, written out with dense arrays."""
    a = np.zeros((N, N))
    a[USERS, N_USERS + ITEMS] = 1.0
    a[N_USERS + ITEMS, USERS] = 1.0
    degree = a.sum(axis=1)
    scale = np.divide(1.0, np.sqrt(degree), out=np.zeros(N), where=degree > 0)
    return scale[:, None] * a * scale[None, :]


def _graph(dtype="float64"):
    return normalized_adjacency(USERS, ITEMS, N_USERS, N_ITEMS, dtype=dtype)


def _embeddings(width=3, seed=0):
    return np.random.default_rng(seed).normal(size=(N, width))


def test_normalized_adjacency_matches_dense_numpy():
    graph = _graph()
    np.testing.assert_allclose(graph.to_dense().numpy(), _dense_adjacency(), rtol=1e-14, atol=0)
    assert graph.nnz == 2 * 7 and _graph(None).dtype == backend.get_default_dtype()


def test_propagation_equals_dense_matrix_powers():
    e0, dense = _embeddings(), _dense_adjacency()
    layers = [e0]
    for _ in range(3):
        layers.append(dense @ layers[-1])
    got = lightgcn_propagate(e0, _graph(), 3).numpy()
    np.testing.assert_allclose(got, np.mean(layers, axis=0), rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(lightgcn_propagate(e0, _graph(), 0).numpy(), e0)


def test_propagation_gradients_match_torch_sparse_in_float64():
    graph = _graph()
    rows, cols = backend.to_numpy(graph.indices)
    torch_graph = torch.sparse_coo_tensor(np.stack([rows, cols]), torch.tensor(backend.to_numpy(graph.values.data)),
                                          (N, N), check_invariants=True)

    def torch_propagate(e):
        total, layer = e, e
        for _ in range(3):
            layer = torch.sparse.mm(torch_graph, layer)
            total = total + layer
        return total / 4

    compare_with_torch(lambda e: lightgcn_propagate(e, graph, 3), torch_propagate, _embeddings(), dtype=np.float64,
                       rtol=1e-10)
    assert check_gradients(lambda e: lightgcn_propagate(e, graph, 2), _embeddings(2, seed=1))


def _torch_scores(final, users, items):
    return (final[users] * final[N_USERS + items]).sum(-1)


def test_bpr_with_l2_matches_torch_in_value_and_gradients(float64):
    lamina.manual_seed(0)
    model = LightGCN(N_USERS, N_ITEMS, dim=4, num_layers=2)
    users, positives, negatives = np.array([0, 2, 3, 0]), np.array([1, 3, 4, 0]), np.array([5, 0, 2, 2])
    loss = model.bpr_loss(users, positives, negatives, _graph(), l2=0.3)
    loss.backward()

    user_table = torch.tensor(backend.to_numpy(model.user_embedding.data), requires_grad=True)
    item_table = torch.tensor(backend.to_numpy(model.item_embedding.data), requires_grad=True)
    dense = torch.tensor(_dense_adjacency())
    e0 = torch.cat([user_table, item_table])
    final = (e0 + dense @ e0 + dense @ (dense @ e0)) / 3
    difference = _torch_scores(final, users, positives) - _torch_scores(final, users, negatives)
    penalty = (user_table[users].square().sum() + item_table[positives].square().sum()
               + item_table[negatives].square().sum()) / (2 * len(users))
    expected = torch.nn.functional.softplus(-difference).mean() + 0.3 * penalty
    expected.backward()

    np.testing.assert_allclose(loss.item(), expected.item(), rtol=1e-12)
    np.testing.assert_allclose(backend.to_numpy(model.user_embedding.grad), user_table.grad.numpy(), rtol=1e-10,
                               atol=1e-14)
    np.testing.assert_allclose(backend.to_numpy(model.item_embedding.grad), item_table.grad.numpy(), rtol=1e-10,
                               atol=1e-14)


def test_bpr_loss_matches_torch_and_gradcheck():
    positive, negative = _embeddings(1, seed=2)[:6, 0], _embeddings(1, seed=3)[:6, 0]
    compare_with_torch(bpr_loss, lambda p, n: -torch.nn.functional.logsigmoid(p - n).mean(), positive, negative)
    assert check_gradients(bpr_loss, positive, negative)
    with pytest.raises(ShapeError, match="bpr_loss"):
        bpr_loss(lamina.tensor(positive), lamina.tensor(negative[:4]))


def _torch_ngcf(e, w1, w2, b, dense, slope=0.2):
    neighbours = dense @ e
    return torch.nn.functional.leaky_relu((neighbours + e) @ w1 + (neighbours * e) @ w2 + b, slope)


def test_ngcf_layer_matches_torch_rewrite_and_gradcheck():
    graph, dense = _graph(), torch.tensor(_dense_adjacency())
    rng = np.random.default_rng(4)
    arrays = (_embeddings(3), rng.normal(size=(3, 2)), rng.normal(size=(3, 2)), rng.normal(size=2))
    compare_with_torch(lambda *a: ngcf_propagate(*a[:1], graph, *a[1:]), lambda *a: _torch_ngcf(*a, dense), *arrays,
                       dtype=np.float64, rtol=1e-10)
    assert check_gradients(lambda *a: ngcf_propagate(a[0], graph, *a[1:]), *arrays)


def test_ngcf_model_concatenates_its_layers(float64):
    lamina.manual_seed(1)
    model = NGCF(N_USERS, N_ITEMS, dim=3, layer_sizes=(4, 2))
    dense = torch.tensor(_dense_adjacency())
    parameters = {name: torch.tensor(backend.to_numpy(p.data)) for name, p in model.named_parameters()}
    layer = torch.cat([parameters["user_embedding"], parameters["item_embedding"]])
    outputs = [layer]
    for k in range(2):
        layer = _torch_ngcf(layer, *(parameters[f"layers.{k}.{n}"] for n in ("w1", "w2", "bias")), dense)
        outputs.append(layer)
    final = torch.cat(outputs, dim=1)
    users, items = np.array([0, 1, 4, 2]), np.array([5, 1, 0, 3])
    np.testing.assert_allclose(model(users, items, _graph()).numpy(), _torch_scores(final, users, items).numpy(),
                               rtol=1e-12)
    np.testing.assert_allclose(model.score_all(_graph()), final[:N_USERS].numpy() @ final[N_USERS:].numpy().T,
                               rtol=1e-12)


def test_full_ranking_excludes_training_items_as_a_numpy_loop():
    rng = np.random.default_rng(5)
    n_users, n_items, k = 7, 12, 4
    scores = rng.normal(size=(n_users, n_items))
    train = (rng.integers(0, n_users, 20), rng.integers(0, n_items, 20))
    test = (rng.integers(0, n_users, 15), rng.integers(0, n_items, 15))
    recalls, ndcgs = [], []
    for user in range(n_users):
        seen = set(train[1][train[0] == user].tolist())
        relevant = set(test[1][test[0] == user].tolist()) - seen
        if not relevant:
            continue
        ranked = [i for i in np.argsort(-scores[user]) if i not in seen][:k]
        gains = [1.0 / np.log2(rank + 2) for rank, item in enumerate(ranked) if item in relevant]
        ideal = sum(1.0 / np.log2(rank + 2) for rank in range(min(k, len(relevant))))
        recalls.append(len(gains) / len(relevant))
        ndcgs.append(sum(gains) / ideal)
    got = full_ranking_metrics(scores, train, test, k=k)
    assert got["recall"] == pytest.approx(np.mean(recalls), rel=1e-12)
    assert got["ndcg"] == pytest.approx(np.mean(ndcgs), rel=1e-12)
    unfiltered = full_ranking_metrics(scores, (np.array([], int), np.array([], int)), test, k=k)
    assert unfiltered != got


@pytest.mark.parametrize("make", [lambda: LightGCN(N_USERS, N_ITEMS, dim=3, num_layers=2),
                                  lambda: NGCF(N_USERS, N_ITEMS, dim=3, layer_sizes=(2,), negative_slope=0.1)])
def test_save_and_load_round_trip(make, tmp_path):
    model = make()
    lamina.save(model, tmp_path / "model.safetensors")
    twin = lamina.load(tmp_path / "model.safetensors")
    assert type(twin) is type(model) and twin.get_config() == model.get_config()
    graph = _graph(None)
    np.testing.assert_array_equal(twin.score_all(graph), model.score_all(graph))


def test_errors_name_the_model_and_the_shapes():
    model = LightGCN(N_USERS, N_ITEMS, dim=2, num_layers=1)
    with pytest.raises(ShapeError, match=r"LightGCN.*\(11, 11\)"):
        model(np.array([0]), np.array([0]), normalized_adjacency(USERS, ITEMS, N_USERS, N_ITEMS + 1))
    with pytest.raises(TypeError, match="normalized_adjacency"):
        model(np.array([0]), np.array([0]), _dense_adjacency())
    with pytest.raises(ValueError, match="num_layers"):
        LightGCN(3, 3, num_layers=-1)
    with pytest.raises(ValueError, match="item id 6"):
        normalized_adjacency([0], [6], 2, 6)


def community_interactions(n_users=200, n_items=200, groups=5, per_user=6, in_group=0.9, seed=0):
    """Users and items in ``groups`` communities; each user picks ``per_user`` distinct items,
    each from the user's own community with probability ``in_group``. 30% of the pairs are
    held out for testing."""
    rng = np.random.default_rng(seed)
    user_group, item_group = rng.integers(0, groups, n_users), np.arange(n_items) % groups
    users, items = [], []
    for user in range(n_users):
        own, other = np.flatnonzero(item_group == user_group[user]), np.flatnonzero(item_group != user_group[user])
        k = rng.binomial(per_user, in_group)
        chosen = np.concatenate([rng.choice(own, k, replace=False), rng.choice(other, per_user - k, replace=False)])
        users += [user] * per_user
        items += chosen.tolist()
    users, items = np.array(users), np.array(items)
    held_out = rng.random(users.size) < 0.3
    return (users[~held_out], items[~held_out]), (users[held_out], items[held_out]), n_users, n_items


def test_lightgcn_learns_communities_past_matrix_factorization_and_popularity():
    train, test, n_users, n_items = community_interactions()
    graph = normalized_adjacency(*train, n_users, n_items)
    popularity = np.bincount(train[1], minlength=n_items).astype(float)
    recall = {"popularity": full_ranking_metrics(np.tile(popularity, (n_users, 1)), train, test, k=10)["recall"]}
    start = time.perf_counter()
    for name, make in [("mf", lambda: LightGCN(n_users, n_items, dim=16, num_layers=0)),
                       ("lightgcn", lambda: LightGCN(n_users, n_items, dim=16, num_layers=3)),
                       ("ngcf", lambda: NGCF(n_users, n_items, dim=16, layer_sizes=(16, 16)))]:
        lamina.manual_seed(0)
        model = make()
        losses = fit_bpr(model, *train, steps=100, batch_size=256, lr=0.02, l2=1e-4, seed=0)
        assert np.mean(losses[-10:]) < 0.5 * losses[0], name
        recall[name] = full_ranking_metrics(model.score_all(graph), train, test, k=10)["recall"]
    elapsed = time.perf_counter() - start
    assert recall["lightgcn"] > 1.5 * recall["mf"] and recall["lightgcn"] > 3 * recall["popularity"], recall
    assert recall["ngcf"] > 2 * recall["popularity"], recall
    assert elapsed < 20, elapsed


def test_readme_example_runs(monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    printed, names = run_readme_section("Graph collaborative filtering")
    recall = float(printed.split()[-1])
    assert isinstance(names["model"], models.LightGCN) and recall > 0.4
