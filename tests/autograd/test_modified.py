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
    message = r"LinearFunction: an array it saved .* tensor of shape \(5, 3\) \(float32\) changed in place"
    with pytest.raises(RuntimeError, match=message):
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
    cost = (w + 1.0).sum()
    w.grad = np.ones(3)
    optim.SGD([w], lr=0.5).step()
    cost.backward()
    np.testing.assert_array_equal(w.grad, [2.0, 2.0, 2.0])

    tw = torch.nn.Parameter(torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64))
    torch_cost = (tw + 1.0).sum()
    tw.grad = torch.ones(3, dtype=torch.float64)
    torch.optim.SGD([tw], lr=0.5).step()
    torch_cost.backward()
    np.testing.assert_array_equal(tw.grad.numpy(), w.grad)


def _lamina_then_torch(build, changed_weights):
    """Record ``build`` in both libraries, step SGD on the weights, backward again: whether each
    raised (lamina first)."""
    raised = []
    for library in ("lamina", "torch"):
        cost, weights = build(library)
        if library == "lamina":
            optimizer = optim.SGD(weights, lr=0.5)
            for w in weights:
                w.grad = np.ones(w.shape)
        else:
            optimizer = torch.optim.SGD(weights, lr=0.5)
            for w in weights:
                w.grad = torch.ones(w.shape, dtype=torch.float64)
        optimizer.step()
        try:
            cost.backward()
            raised.append(False)
        except RuntimeError:
            raised.append(True)
    return raised


def _factors(library, x_needs_grad):
    if library == "lamina":
        return (lamina.tensor(randn(2, 3), requires_grad=x_needs_grad, dtype=np.float64),
                nn.Parameter(randn(4, 3, seed=1), dtype=np.float64))
    return (torch.tensor(randn(2, 3), requires_grad=x_needs_grad),
            torch.nn.Parameter(torch.tensor(randn(4, 3, seed=1))))


@pytest.mark.parametrize("x_needs_grad", [True, False])
def test_a_view_of_a_changed_weight_is_caught_and_an_unneeded_value_is_not(x_needs_grad):
    def through_transpose(library):                  # x @ w.T: the product saved a view of w
        x, w = _factors(library, x_needs_grad)
        return (x @ w.T).sum(), [w]

    def times_data(library):                         # x * w with x as data: w's value serves no gradient
        x, w = _factors(library, x_needs_grad)
        return (x * w[:2]).sum(), [w]

    assert _lamina_then_torch(through_transpose, 1) == [x_needs_grad] * 2
    assert _lamina_then_torch(times_data, 1) == [x_needs_grad] * 2


def test_a_constant_that_shares_a_changed_weight_is_caught_as_torch_does():
    def detached(library):
        if library == "lamina":
            w, other = nn.Parameter(np.array([1.0, 2.0])), lamina.tensor(np.ones(2), requires_grad=True)
            return (other * w.detach()).sum(), [w]
        w = torch.nn.Parameter(torch.tensor([1.0, 2.0], dtype=torch.float64))
        other = torch.ones(2, dtype=torch.float64, requires_grad=True)
        return (other * w.detach()).sum(), [w]

    assert _lamina_then_torch(detached, 1) == [True, True]


def test_a_reshaped_weight_of_a_one_dimensional_convolution_is_caught():
    lamina.manual_seed(0)
    conv = nn.Conv1D(2, 3)
    x = lamina.tensor(randn(1, 6, 2), requires_grad=True)
    cost = (conv(x) ** 2).sum()
    cost.backward(retain_graph=True)
    optim.SGD(conv.parameters(), lr=0.1).step()
    with pytest.raises(RuntimeError, match="changed in place after the op was recorded"):
        cost.backward()


def test_a_first_dense_layer_on_data_runs_again_after_a_step_as_torch():
    layer = nn.Dense(3)
    cost = layer(lamina.tensor(randn(4, 5))).sum()    # dJ/dw = x^T dJ/dz reads x only
    cost.backward(retain_graph=True)
    first = layer.weight.grad.copy()
    optim.SGD(layer.parameters(), lr=0.1).step()
    cost.backward()
    np.testing.assert_allclose(layer.weight.grad, 2 * first)


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
    with pytest.raises(RuntimeError, match=r"through Mul: an array it saved .* \(2,\) \(float32\) changed in place"):
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
    with pytest.raises(RuntimeError, match="changed in place after the op was recorded"):
        cost.backward()
