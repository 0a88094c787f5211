"""DARTS's search network (alphas apart from weights), genotype derivation and the network
built from a genotype."""

import numpy as np
import pytest

import lamina
from helpers import randn
from lamina.nn.nas import (
    PRIMITIVES,
    Genotype,
    MixedOp,
    NetworkFromGenotype,
    SearchNetwork,
    count_edges,
    derive_genotype,
    parse_cell,
)


def _cell_weights():
    """5 edges (steps=2) x 8 operations; columns: none, max, avg, skip, sep3, sep5, dil3, dil5."""
    w = np.full((5, 8), 0.001)
    w[0, 0], w[0, 4] = 0.9, 0.05      # node 2 <- 0: sep_conv_3x3 (none ignored)
    w[1, 1], w[1, 6] = 0.3, 0.4       # node 2 <- 1: dil_conv_3x3
    w[2, 0], w[2, 3] = 0.99, 0.009    # node 3 <- 0: strongest is none, so the edge loses
    w[3, 2] = 0.2                     # node 3 <- 1: avg_pool_3x3
    w[4, 5] = 0.5                     # node 3 <- 2: sep_conv_5x5
    return w


def test_parse_cell_hand_computed():
    assert parse_cell(_cell_weights(), steps=2) == [
        ("dil_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 2), ("avg_pool_3x3", 1),
    ]


def test_search_network_genotype_from_alphas():
    net = SearchNetwork(4, 3, 2, steps=2, multiplier=2, in_channels=1)
    net.alphas_normal.data[...] = np.log(_cell_weights())
    reduce = np.zeros((5, 8))
    reduce[:, PRIMITIVES.index("none")] = 5.0
    reduce[:, PRIMITIVES.index("skip_connect")] = 1.0
    net.alphas_reduce.data[...] = reduce
    genotype = net.genotype()
    assert genotype.normal == [("dil_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_5x5", 2), ("avg_pool_3x3", 1)]
    assert genotype.normal_concat == [2, 3] and genotype.reduce_concat == [2, 3]
    # 'none' dominates every edge but is never chosen; equal strengths go to the earlier inputs
    assert genotype.reduce == [("skip_connect", 0), ("skip_connect", 1)] * 2


def test_arch_parameters_are_apart_from_weights():
    net = SearchNetwork(4, 10, 3, in_channels=1)  # cells: normal, reduction, reduction
    alphas = net.arch_parameters()
    assert [a.shape for a in alphas] == [(count_edges(4), 8)] * 2 == [(14, 8)] * 2
    assert 0 < np.abs(alphas[0].data).max() < 1e-2
    ids = {id(a) for a in alphas}
    assert not ids & {id(w) for w in net.weights()}
    assert len(net.weights()) + 2 == len(net.parameters())
    out = net(randn(3, 8, 8, 1))
    assert out.shape == (3, 10)
    out.sum().backward()
    assert all(a.grad is not None and np.any(a.grad) for a in alphas)


def test_search_network_errors():
    with pytest.raises(ValueError, match="multiplier"):
        SearchNetwork(4, 10, 2, steps=2, multiplier=3)
    with pytest.raises(ValueError, match="unknown operation.*sep_conv_3x3"):
        SearchNetwork(4, 10, 2, primitives=["none", "conv_1x1"])
    with pytest.raises(lamina.errors.ShapeError, match=r"\(N, H, W, 1\)"):
        SearchNetwork(4, 10, 2, in_channels=1)(randn(2, 1, 8, 8))
    with pytest.raises(ValueError, match="do not fit steps=4"):
        derive_genotype(np.ones((5, 8)), np.ones((5, 8)))


def _genotype():
    cell = [("sep_conv_3x3", 0), ("skip_connect", 1), ("dil_conv_3x3", 2), ("max_pool_3x3", 0)]
    return Genotype(cell, [2, 3], [("avg_pool_3x3", 0), ("skip_connect", 1), ("sep_conv_5x5", 2),
                                   ("none", 1)], [2, 3])


def test_network_from_genotype_builds_and_trains():
    x_all, y_all = lamina.data.load_digits(size=8)
    x = (x_all[:128] / 255.0).astype(np.float32)
    y = y_all[:128]
    net = NetworkFromGenotype(4, 10, 3, _genotype(), auxiliary=True, in_channels=1, drop_path_prob=0.2)
    logits, auxiliary = net(x[:4])
    assert logits.shape == auxiliary.shape == (4, 10)
    optimizer = lamina.optim.Adam(net.parameters(), lr=0.01)
    losses = []
    for _ in range(12):
        optimizer.zero_grad()
        logits, auxiliary = net(x)
        loss = lamina.functional.cross_entropy(logits, y) + 0.4 * lamina.functional.cross_entropy(auxiliary, y)
        loss.backward()
        optimizer.step()
        losses.append(float(loss.item()))
    assert losses[-1] < 0.7 * losses[0]
    net.eval()
    assert net(x[:2]).shape == (2, 10)


def test_drop_path_only_in_training():
    net = NetworkFromGenotype(4, 10, 2, _genotype(), in_channels=1, drop_path_prob=0.5)
    x = randn(4, 8, 8, 1)
    net.eval()
    np.testing.assert_array_equal(net(x).numpy(), net(x).numpy())
    net.train()
    lamina.manual_seed(1)
    first = net(x).numpy()
    lamina.manual_seed(2)
    assert not np.allclose(first, net(x).numpy())


def test_genotype_errors():
    good = _genotype()
    with pytest.raises(ValueError, match="unknown operation 'conv_3x3'.*sep_conv_3x3"):
        NetworkFromGenotype(4, 10, 2, good._replace(normal=[("conv_3x3", 0), ("skip_connect", 1)]))
    with pytest.raises(ValueError, match="reads node 3, which is not yet computed"):
        NetworkFromGenotype(4, 10, 2, good._replace(normal=[("skip_connect", 0), ("skip_connect", 3)]))
    with pytest.raises(ValueError, match="concat"):
        NetworkFromGenotype(4, 10, 2, good._replace(reduce_concat=[2, 9]))
    with pytest.raises(TypeError, match="expected a Genotype"):
        NetworkFromGenotype(4, 10, 2, ("sep_conv_3x3", 0))


def test_gumbel_sampling_runs_one_operation_per_edge():
    lamina.set_default_dtype(np.float64)
    op = MixedOp(2, 1)
    x = randn(2, 4, 4, 2)
    alpha = lamina.tensor(randn(len(PRIMITIVES), seed=1), requires_grad=True, dtype=np.float64)
    hard = lamina.functional.gumbel_softmax(alpha, tau=0.5, hard=True)
    k = int(hard.numpy().argmax())
    assert hard.numpy()[k] == 1.0 and hard.numpy().sum() == 1.0
    one = op(x, hard, active=k)
    one.sum().backward(retain_graph=True)
    g_one = alpha.grad.copy()
    alpha.grad = None
    np.testing.assert_allclose(one.numpy(), op(x, hard).numpy(), atol=1e-12)  # the full mixture's value
    # the operations not drawn act as constant ones: their weights still get gradient
    others = [hard[j] * lamina.tensor(np.ones(one.shape)) for j in range(len(PRIMITIVES)) if j != k]
    expected = op.candidates[k](x) * hard[k] + sum(others[1:], others[0])
    expected.sum().backward()
    np.testing.assert_allclose(g_one, alpha.grad, rtol=1e-9, atol=1e-12)
    assert np.count_nonzero(g_one) == len(PRIMITIVES)


def test_gdas_network_samples_in_training_and_takes_argmax_in_evaluation():
    net = SearchNetwork(4, 10, 3, steps=2, multiplier=2, in_channels=1, sampling="gumbel", tau=1.0)
    x = randn(3, 8, 8, 1)
    net(x).sum().backward()
    assert all(np.count_nonzero(a.grad) == a.size for a in net.arch_parameters())
    net.eval()
    np.testing.assert_array_equal(net(x).numpy(), net(x).numpy())
    with pytest.raises(ValueError, match="sampling must be 'softmax'"):
        SearchNetwork(4, 10, 2, sampling="hard")
