"""Cost-function regularizers: the course notes' R, its gradient, biases left out."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import check_gradients
from lamina.nn import Module, Parameter
from lamina.optim import Regularizer, elastic_net, l1, l2, regularizers


class _Layer(Module):
    def __init__(self, rng):
        super().__init__()
        self.weight = Parameter(rng.standard_normal((3, 4)), dtype=np.float64)
        self.bias = Parameter(rng.standard_normal(4), dtype=np.float64)


class _Net(Module):
    def __init__(self):
        super().__init__()
        rng = np.random.default_rng(0)
        self.dense = _Layer(rng)
        self.W = Parameter(rng.standard_normal((4, 2)), dtype=np.float64)
        self.b = Parameter(rng.standard_normal((1, 2)), dtype=np.float64)  # 2-D, but named b
        self.gamma = Parameter(rng.standard_normal(2), dtype=np.float64)  # 1-D: counts as a bias


def _ids(params):
    return [id(p) for p in params]


def _weights(net):
    return [net.dense.weight.data, net.W.data]


def test_l2_value_and_gradient():
    net = _Net()
    lam = 0.01
    term = l2(lam)(net)
    expected = lam * sum((w**2).sum() for w in _weights(net))
    assert term.item() == pytest.approx(expected, rel=1e-12)
    term.backward()
    np.testing.assert_allclose(net.dense.weight.grad, 2 * lam * net.dense.weight.data, rtol=1e-12)
    np.testing.assert_allclose(net.W.grad, 2 * lam * net.W.data, rtol=1e-12)
    for bias in (net.dense.bias, net.b, net.gamma):
        assert bias.grad is None


def test_l1_value_and_gradient():
    net = _Net()
    term = l1(0.3)(net)
    assert term.item() == pytest.approx(0.3 * sum(np.abs(w).sum() for w in _weights(net)), rel=1e-12)
    term.backward()
    np.testing.assert_allclose(net.W.grad, 0.3 * np.sign(net.W.data), rtol=1e-12)


def test_elastic_net():
    net = _Net()
    term = elastic_net(0.1, 0.2)(net)
    w = _weights(net)
    expected = 0.1 * sum(np.abs(a).sum() for a in w) + 0.2 * sum((a**2).sum() for a in w)
    assert term.item() == pytest.approx(expected, rel=1e-12)
    term.backward()
    np.testing.assert_allclose(net.W.grad, 0.1 * np.sign(net.W.data) + 0.4 * net.W.data, rtol=1e-12)


def test_include_bias():
    net = _Net()
    term = l2(0.5, include_bias=True)(net)
    expected = 0.5 * sum((p.data**2).sum() for p in net.parameters())
    assert term.item() == pytest.approx(expected, rel=1e-12)


def test_plain_parameter_list_treats_1d_as_bias():
    rng = np.random.default_rng(1)
    w = Parameter(rng.standard_normal((2, 3)), dtype=np.float64)
    b = Parameter(rng.standard_normal(3), dtype=np.float64)
    assert _ids(l2(1.0).parameters([w, b])) == _ids([w])
    assert l2(1.0)([w, b]).item() == pytest.approx((w.data**2).sum())
    # (name, parameter) pairs from named_parameters() use the names
    net = _Net()
    assert set(_ids(l2(1.0).parameters(net.named_parameters()))) == set(_ids([net.dense.weight, net.W]))


def test_is_bias():
    two_d = Parameter(np.zeros((2, 2)))
    assert regularizers.is_bias("conv.bias", two_d)
    assert regularizers.is_bias("fc.b", two_d)
    assert not regularizers.is_bias("fc.W", two_d)
    assert not regularizers.is_bias("emb", two_d)
    assert regularizers.is_bias("fc.W", Parameter(np.zeros(2)))


def test_gradcheck():
    rng = np.random.default_rng(2)
    a = rng.uniform(0.1, 1.0, (3, 3)) * rng.choice([-1, 1], (3, 3))  # away from the kink of |w|
    assert check_gradients(lambda t: elastic_net(0.3, 0.7)([t]), a)


def test_adds_to_a_loss_and_empty_selection():
    w = Parameter(np.ones((2, 2)), dtype=np.float64)
    loss = (w * 3.0).sum() + l2(0.1)([w])
    loss.backward()
    np.testing.assert_allclose(w.grad, 3.0 + 0.2)
    zero = l2(0.1)([Parameter(np.ones(3))])
    assert zero.item() == 0.0 and isinstance(zero, lamina.Tensor)


def test_bad_coefficient():
    with pytest.raises(ValueError, match="l2"):
        l2(-0.1)
    with pytest.raises(ValueError, match="l1"):
        Regularizer(l1=float("nan"))
