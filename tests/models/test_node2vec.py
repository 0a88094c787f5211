"""Node2Vec: biased random walks (statistics with margins), the skip-gram loss against a
torch re-implementation of PyTorch Geometric's, and embeddings that separate communities."""

import numpy as np
import pytest
import torch
from sklearn.linear_model import LogisticRegression

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import optim
from lamina.data import to_undirected
from lamina.models import Node2Vec

# a square 0-1-2-3 with the chord 0-2, a tail 3-4, and node 5 with no edges
SQUARE = to_undirected(np.array([[0, 1, 2, 3, 0, 3], [1, 2, 3, 0, 2, 4]]), 6)[0]


def _neighbours(edges, v):
    return set(edges[1][edges[0] == v].tolist())


def test_walks_follow_edges_and_windows_cover_them():
    model = Node2Vec(SQUARE, 4, walk_length=6, context_size=3, walks_per_node=2, p=0.5, q=2.0, num_nodes=6, seed=0)
    walks = model.random_walks(np.arange(6))
    assert walks.shape == (6, 7)
    for walk in walks[:5]:
        assert all(b in _neighbours(SQUARE, a) for a, b in zip(walk[:-1], walk[1:]))
    np.testing.assert_array_equal(walks[5], 5)                    # no edges: the walk stays put
    pos, neg = model.sample(np.array([0, 3]))
    windows = 2 * 2 * (6 + 1 - 3 + 1)
    assert pos.shape == (windows, 3) and neg.shape == (windows, 3)
    np.testing.assert_array_equal(neg[:4, 0], [0, 3, 0, 3])        # the first windows start at the centres
    batches = list(model.loader(batch_size=4, seed=0))
    assert len(batches) == 2 and sorted(np.unique(np.concatenate([b[0][:, 0] for b in batches])).tolist()) == \
        list(range(6))


def test_first_order_walks_pick_neighbours_uniformly():
    model = Node2Vec(SQUARE, 2, walk_length=2, context_size=2, num_nodes=6, seed=1)
    walks = model.random_walks(np.full(6000, 3))                  # node 3: neighbours 0, 2, 4
    for step in (1, 2):
        previous, following = walks[:, step - 1], walks[:, step]
        for v in np.unique(previous):
            chosen = following[previous == v]
            counts = np.array([np.count_nonzero(chosen == u) for u in sorted(_neighbours(SQUARE, v))])
            assert counts.sum() == chosen.shape[0]
            expected = chosen.shape[0] / counts.shape[0]
            assert np.all(np.abs(counts - expected) < 5 * np.sqrt(expected) + 1), (v, counts)


def _second_step_probabilities(t, v, p, q):
    neighbours = sorted(_neighbours(SQUARE, v))
    weights = np.array([1 / p if x == t else 1.0 if x in _neighbours(SQUARE, t) else 1 / q for x in neighbours])
    return neighbours, weights / weights.sum()


@pytest.mark.parametrize("p,q", [(0.25, 1.0), (1.0, 0.25), (4.0, 4.0)])
def test_second_order_steps_follow_the_return_and_in_out_weights(p, q):
    model = Node2Vec(SQUARE, 2, walk_length=2, context_size=2, p=p, q=q, num_nodes=6, seed=2)
    walks = model.random_walks(np.full(12000, 1))                 # 1 -> 0 or 2, then on
    for t, v in ((1, 0), (1, 2)):
        rows = walks[walks[:, 1] == v]
        neighbours, probabilities = _second_step_probabilities(t, v, p, q)
        frequencies = np.array([np.count_nonzero(rows[:, 2] == x) for x in neighbours]) / rows.shape[0]
        margin = 5 * np.sqrt(probabilities * (1 - probabilities) / rows.shape[0]) + 1e-3
        assert np.all(np.abs(frequencies - probabilities) < margin), (t, v, frequencies, probabilities)


def test_small_q_walks_move_outward_more():
    rng = np.random.default_rng(0)
    n = 60
    upper = np.triu(rng.random((n, n)) < 0.08, k=1)
    edges = to_undirected(np.stack(np.nonzero(upper)), n)[0]

    def outward_share(q):
        model = Node2Vec(edges, 2, walk_length=8, context_size=2, q=q, num_nodes=n, seed=3)
        walks = model.random_walks(np.repeat(np.arange(n), 20))
        t, x = walks[:, :-2].ravel(), walks[:, 2:].ravel()
        outward = (x != t) & ~model.adjacency.linked(t, x)
        return outward.mean()

    low, even, high = outward_share(0.25), outward_share(1.0), outward_share(4.0)
    assert low > even + 0.03 and even > high + 0.03, (low, even, high)


def torch_node2vec_loss(embedding, pos, neg):
    def scores(windows):
        windows = torch.from_numpy(windows)
        centre = embedding[windows[:, 0]].view(windows.shape[0], 1, -1)
        rest = embedding[windows[:, 1:].reshape(-1)].view(windows.shape[0], -1, embedding.shape[1])
        return (centre * rest).sum(-1).view(-1)
    return -torch.log(torch.sigmoid(scores(pos)) + 1e-15).mean() - \
        torch.log(1 - torch.sigmoid(scores(neg)) + 1e-15).mean()


def test_loss_matches_torch():
    model = Node2Vec(SQUARE, 3, walk_length=4, context_size=3, walks_per_node=2, num_negative_samples=2,
                     num_nodes=6, seed=4).to(np.float64)
    pos, neg = model.sample(np.arange(6))

    def ours(embedding):
        return _loss_with(model, embedding, pos, neg)

    table = randn(6, 3, seed=5, scale=0.5)
    compare_with_torch(ours, lambda e: torch_node2vec_loss(e, pos, neg), table, dtype=np.float64)
    assert check_gradients(ours, table)


def _loss_with(model, embedding, pos, neg):
    """model.loss with ``embedding`` in place of the model's table."""
    saved = model.embedding
    model._parameters["embedding"] = embedding
    try:
        return model.loss(pos, neg)
    finally:
        model._parameters["embedding"] = saved


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="Node2Vec: context_size must be in \\[2, walk_length \\+ 1\\]"):
        Node2Vec(SQUARE, 2, walk_length=3, context_size=5)
    with pytest.raises(ValueError, match="Node2Vec: q must be positive"):
        Node2Vec(SQUARE, 2, walk_length=3, context_size=2, q=0.0)
    with pytest.raises(ValueError, match="Node2Vec.*out of range"):
        Node2Vec(SQUARE, 2, walk_length=3, context_size=2, num_nodes=3)


def test_embeddings_separate_two_communities():
    lamina.manual_seed(0)
    rng = np.random.default_rng(0)
    labels = np.repeat([0, 1], 30)
    p = np.where(labels[:, None] == labels[None, :], 0.3, 0.01)
    edges = to_undirected(np.stack(np.nonzero(np.triu(rng.random((60, 60)) < p, k=1))), 60)[0]
    model = Node2Vec(edges, 8, walk_length=10, context_size=5, walks_per_node=4, p=1.0, q=0.5, seed=0)
    opt = optim.Adam(model.parameters(), lr=0.05)
    for _ in range(15):
        for pos, neg in model.loader(batch_size=30):
            opt.zero_grad()
            model.loss(pos, neg).backward()
            opt.step()
    z = model().numpy()
    train = rng.random(60) < 0.5
    classifier = LogisticRegression().fit(z[train], labels[train])
    accuracy = classifier.score(z[~train], labels[~train])
    assert accuracy > 0.9, accuracy
