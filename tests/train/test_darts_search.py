"""DARTS's architecture gradient (first and second order) against exact autograd, and a
short search on 8x8 digits whose genotype, retrained, learns."""

import numpy as np
import pytest

import lamina
from helpers import randn
from lamina.autograd import grad
from lamina.functional import cross_entropy
from lamina.nn.functional_call import functional_call
from lamina.nn.nas import PRIMITIVES, NetworkFromGenotype, SearchNetwork
from lamina.train.nas import Architect, darts_search


def _tiny_problem():
    lamina.set_default_dtype(np.float64)
    net = SearchNetwork(4, 3, 2, steps=2, multiplier=2, in_channels=1)
    for a in net.arch_parameters():
        a.data[...] = randn(*a.shape, seed=3)
    train = (lamina.tensor(randn(6, 8, 8, 1, seed=1)), np.array([0, 1, 2, 0, 1, 2]))
    val = (lamina.tensor(randn(6, 8, 8, 1, seed=2)), np.array([2, 1, 0, 0, 1, 2]))
    return net, train, val


def _dense(grads, params):
    return [np.zeros(p.shape) if g is None else np.asarray(g) for g, p in zip(grads, params)]


def test_second_order_gradient_equals_autograd_through_the_unrolled_step():
    net, (xt, yt), (xv, yv) = _tiny_problem()
    xi, decay = 0.05, 3e-4
    names = [name for name, p in net.named_parameters() if not name.startswith("alphas")]
    weights = net.weights()
    before = [w.data.copy() for w in weights]
    # exact: w' = w - xi (dL_train/dw + decay w) on the graph, then d L_val(w', alpha) / d alpha
    step = grad(cross_entropy(net(xt), yt), weights, create_graph=True)
    unrolled = {n: w - xi * (g + decay * w) for n, w, g in zip(names, weights, step)}
    exact = _dense(grad(cross_entropy(functional_call(net, unrolled, xv), yv), net.arch_parameters(),
                        allow_unused=True), net.arch_parameters())
    approx = Architect(net, weight_decay=decay, fd_scale=1e-6).arch_gradient((xt, yt), (xv, yv), xi)
    assert np.abs(exact[1]).max() > 1e-3
    for a, b in zip(approx, exact):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
    for w, w0 in zip(weights, before):
        np.testing.assert_array_equal(w.data, w0)
    # the unrolled term matters: the first-order gradient is far from the exact one
    first = Architect(net, first_order=True).arch_gradient((xt, yt), (xv, yv), xi)
    assert np.abs(first[1] - exact[1]).max() > 1e-2


def test_first_order_gradient_is_the_validation_gradient_at_w():
    net, train, (xv, yv) = _tiny_problem()
    expected = _dense(grad(cross_entropy(net(xv), yv), net.arch_parameters(), allow_unused=True),
                      net.arch_parameters())
    for architect, xi in ((Architect(net, first_order=True), 0.1), (Architect(net), 0.0)):
        got = architect.arch_gradient(train, (xv, yv), xi)
        for a, b in zip(got, expected):
            np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


def test_architect_step_is_adam_on_the_alphas():
    net, train, val = _tiny_problem()
    architect = Architect(net, first_order=True)
    assert architect.optimizer.defaults["betas"] == (0.5, 0.999)
    before = [a.data.copy() for a in net.arch_parameters()]
    grads = architect.step(train, val, xi=0.0)
    # Adam's first step moves each entry by lr against the sign of its L2-decayed gradient
    g = grads[1] + 1e-3 * before[1]
    np.testing.assert_allclose(net.alphas_reduce.data - before[1], -3e-4 * np.sign(g), rtol=1e-3, atol=1e-7)
    assert net.alphas_reduce.grad is None


def test_architect_needs_a_search_model():
    with pytest.raises(TypeError, match="arch_parameters"):
        Architect(lamina.nn.Dense(3))
    with pytest.raises(ValueError, match="fd_scale must be positive"):
        Architect(SearchNetwork(4, 3, 2, steps=1, multiplier=1), fd_scale=0.0)


def test_search_errors():
    net = SearchNetwork(4, 3, 2, steps=1, multiplier=1, in_channels=1)
    x, y = randn(4, 8, 8, 1), np.zeros(4, dtype=np.int64)
    with pytest.raises(ValueError, match="epochs must be a positive int"):
        darts_search(net, (x, y), (x, y), epochs=0)
    with pytest.raises(ValueError, match="NHWC images"):
        darts_search(net, (x[0], y), (x, y), epochs=1)


def _loss(net, x, y) -> float:
    with lamina.no_grad():
        return float(cross_entropy(net(x), y).item())


def test_search_on_digits_moves_alphas_and_its_genotype_learns():
    x, y = lamina.data.load_digits(size=8)
    x = (x / 255.0).astype(np.float32)
    net = SearchNetwork(4, 10, 2, steps=2, multiplier=2, in_channels=1)
    lines = []
    result = darts_search(net, (x[:128], y[:128]), (x[128:256], y[128:256]), epochs=2, first_order=True,
                          batch_size=32, arch_lr=0.03, seed=0, log=lines.append)
    assert len(lines) == 2 and "genotype Genotype(" in lines[-1]
    assert len(result.genotypes) == 2 and result.genotype == net.genotype()
    moved = np.abs(result.weights_reduce - 1.0 / len(PRIMITIVES)).max()
    assert moved > 5e-3
    # the searched alphas fit the validation data better than uniform ones, same weights
    learned = net.alphas_reduce.data.copy()
    searched_loss = _loss(net, x[128:256], y[128:256])
    net.alphas_reduce.data[...] = 0.0
    assert searched_loss < _loss(net, x[128:256], y[128:256]) - 0.02
    net.alphas_reduce.data[...] = learned
    assert result.train_loss[-1] < result.train_loss[0]
    # one second-order epoch runs too
    darts_search(net, (x[:32], y[:32]), (x[32:64], y[32:64]), epochs=1, batch_size=32, seed=1)
    model = NetworkFromGenotype(4, 10, 2, result.genotype, in_channels=1)
    optimizer = lamina.optim.Adam(model.parameters(), lr=0.01)
    rng = np.random.default_rng(0)
    for _ in range(2):
        for index in np.array_split(rng.permutation(1200), 1200 // 64):
            optimizer.zero_grad()
            cross_entropy(model(x[index]), y[index]).backward()
            optimizer.step()
    model.eval()
    accuracy = float((model(x[1200:]).numpy().argmax(-1) == y[1200:]).mean())
    assert accuracy > 0.6


def test_gdas_search_anneals_tau_and_is_first_order():
    x, y = lamina.data.load_digits(size=8)
    x = (x / 255.0).astype(np.float32)
    net = SearchNetwork(4, 10, 2, steps=2, multiplier=2, in_channels=1, sampling="gumbel")
    with pytest.raises(ValueError, match="first_order=True"):
        darts_search(net, (x[:32], y[:32]), (x[32:64], y[32:64]), epochs=1)
    before = net.alphas_reduce.data.copy()
    result = darts_search(net, (x[:64], y[:64]), (x[64:128], y[64:128]), epochs=2, first_order=True,
                          batch_size=32, tau_range=(5.0, 0.5), seed=0)
    assert net.tau == 0.5 and len(result.genotypes) == 2
    assert not np.allclose(net.alphas_reduce.data, before)
