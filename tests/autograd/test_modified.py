"""A backward through ops recorded before an in-place change of their saved inputs raises
(PyTorch's version counters), and runs where the change cannot matter."""

import gc

import numpy as np
import pytest
import torch
from tests.helpers import randn

import lamina
from lamina import nn, optim
from lamina.autograd import graph, mark_modified


def _dense_cost(seed=0):
    lamina.manual_seed(seed)
    layer = nn.Dense(3)
    x = lamina.tensor(randn(4, 5, seed=seed), requires_grad=True)
    return layer, (layer(x) ** 2).sum()


def test_backward_after_a_step_through_a_saved_weight_raises_as_torch_does():
    layer, cost = _dense_cost()
    cost.backward(retain_graph=True)
    optim.SGD(layer.parameters(), lr=0.1).step()
    with pytest.raises(RuntimeError, match=r"LinearFunction: its input 1 \(shape \(5, 3\), float32\) was changed"):
        cost.backward()

    w = torch.nn.Parameter(torch.from_numpy(layer.weight.data.copy()))
    x = torch.from_numpy(randn(4, 5)).float().requires_grad_()   # dJ/dx reads w: torch keeps it
    torch_cost = (x @ w).pow(2).sum()
    torch_cost.backward(retain_graph=True)
    torch.optim.SGD([w], lr=0.1).step()
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        torch_cost.backward()


def test_the_check_also_guards_gradients_on_the_graph():
    layer, cost = _dense_cost()
    cost.backward(retain_graph=True)
    optim.Adam(layer.parameters(), lr=0.1).step()
    with pytest.raises(RuntimeError, match=r"grad\(create_graph=True\) through LinearFunction"):
        lamina.autograd.grad(cost, [layer.weight], create_graph=True)
    with pytest.raises(RuntimeError, match="backward through LinearFunction"):
        lamina.autograd.grad(cost, [layer.weight])


def test_an_op_whose_gradient_ignores_the_value_still_runs_after_the_change():
    w = nn.Parameter(np.array([1.0, 2.0, 3.0]))
    other = lamina.tensor(np.array([0.5, 0.5, 0.5]), requires_grad=True)
    cost = (w + 1.0).sum() + (other * w.detach()).sum()
    w.grad = np.ones(3)
    optim.SGD([w], lr=0.5).step()               # w.detach() shares w's array: its product keeps it
    cost.backward()
    np.testing.assert_array_equal(w.grad, [2.0, 2.0, 2.0])
    np.testing.assert_array_equal(other.grad, [0.5, 1.5, 2.5])   # the new values: w.detach() is a constant

    tw = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    torch_cost = (tw + 1.0).sum()
    tw.grad = torch.ones(3, dtype=torch.float64)
    torch.optim.SGD([tw], lr=0.5).step()
    torch_cost.backward()
    np.testing.assert_array_equal(tw.grad.numpy(), w.grad)


def test_an_op_that_saved_a_copy_differentiates_the_computation_it_recorded():
    lamina.manual_seed(1)
    lstm = nn.LSTM(5)
    out = lstm(lamina.tensor(randn(2, 4, 3, seed=1)))
    cost = ((out[0] if isinstance(out, tuple) else out) ** 2).sum()
    cost.backward(retain_graph=True)
    before = {name: p.grad.copy() for name, p in lstm.named_parameters()}
    opt = optim.SGD(lstm.parameters(), lr=0.5)
    opt.step()
    opt.zero_grad()
    cost.backward()
    for name, p in lstm.named_parameters():
        np.testing.assert_array_equal(p.grad, before[name], err_msg=name)


def test_mark_modified_guards_a_users_own_in_place_write():
    x = lamina.tensor(np.array([1.0, -2.0]), requires_grad=True)
    y = (x * x).sum()
    x.data += 1.0
    mark_modified(x)
    with pytest.raises(RuntimeError, match=r"through Mul: its input 0 \(shape \(2,\), float32\) was changed in place"):
        y.backward()
    y = (x * x).sum()                            # recorded after the change: fine
    y.backward()
    np.testing.assert_array_equal(x.grad, [4.0, -2.0])


def test_the_record_of_a_change_goes_with_the_tensor():
    x = lamina.tensor(np.zeros(3), requires_grad=True)
    mark_modified(x)
    key = id(x)
    assert key in graph._modified_at
    del x
    gc.collect()
    assert key not in graph._modified_at


@pytest.mark.parametrize("wrapper", ["lookahead", "sam"])
def test_wrappers_that_write_weights_in_place_record_it(wrapper):
    layer, cost = _dense_cost(seed=2)
    cost.backward(retain_graph=True)
    inner = optim.SGD(layer.parameters(), lr=0.1)
    if wrapper == "lookahead":
        opt = optim.Lookahead(inner, k=1)
        inner.step = lambda closure=None: None   # only the slow weights' copy writes the weights
        opt.step()
    else:
        opt = optim.SAM(inner, rho=0.05)
        opt.first_step()                         # the perturbation w + e_w
    with pytest.raises(RuntimeError, match="was changed in place"):
        cost.backward()
