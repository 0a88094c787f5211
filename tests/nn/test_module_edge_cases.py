"""Module bookkeeping against torch.nn.Module: buffers that would hide a parameter, values a
parameter or buffer slot refuses, a sub-module stored twice and tied weights (state dicts,
traversal, apply), load_state_dict's report of the keys, and zero_grad."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import randn
from lamina import nn
from lamina.nn import module as module_state
from lamina.nn import prune


@pytest.fixture(autouse=True)
def _f64():
    before = lamina.backend.get_default_dtype()
    lamina.backend.set_default_dtype(np.float64)
    yield
    lamina.backend.set_default_dtype(before)
    module_state._HOOKED_MODULES.clear()                     # pruned models do not outlive their test
    module_state._stop_running_hooks()


def _dense(units=2, n_in=3):
    layer = nn.Dense(units)
    layer(lamina.tensor(np.ones((1, n_in))))
    return layer


class _Siamese(nn.Module):
    def __init__(self):
        super().__init__()
        self.a = nn.Dense(4)
        self.b = self.a                                        # the same layer under a second name

    def forward(self, x):
        return self.b(self.a(x))


def _siamese():
    model = _Siamese()
    model(lamina.tensor(randn(2, 4)))
    return model


def _torch_siamese():
    net = torch.nn.Module()
    net.a = torch.nn.Linear(4, 4)
    net.b = net.a
    return net


# -- register_buffer -----------------------------------------------------------------------------


def test_a_buffer_cannot_take_the_name_of_a_parameter_or_sub_module_like_torch():
    layer = _dense()
    weight = layer.weight
    with pytest.raises(KeyError, match="attribute 'weight' already exists") as ours:
        layer.register_buffer("weight", np.full((3, 2), 7.0))
    with pytest.raises(KeyError, match="attribute 'weight' already exists"):
        torch.nn.Linear(3, 2).register_buffer("weight", torch.full((2, 3), 7.0))
    assert "Dense.register_buffer" in str(ours.value)
    assert layer.weight is weight and "weight" not in dict(layer.named_buffers())
    model = _siamese()
    with pytest.raises(KeyError, match=r"'a' already exists \(a sub-module\)"):
        model.register_buffer("a", np.zeros(1))


def test_a_buffer_must_be_an_array_a_tensor_or_none():
    layer = _dense()
    for bad in (0, 1.5, [1.0, 2.0], "x"):
        with pytest.raises(TypeError, match=r"Dense.register_buffer: buffer 'count' must be an array, a Tensor "
                                            rf"or None, got {type(bad).__name__}"):
            layer.register_buffer("count", bad)
    with pytest.raises(TypeError):
        torch.nn.Linear(3, 2).register_buffer("count", 0)
    layer.register_buffer("count", np.zeros((), np.int64))
    with pytest.raises(TypeError, match=r"Dense: buffer 'count' must be an array, a Tensor or None, got int"):
        layer.count = 0                                        # assigning to a buffer checks the value too
    net = torch.nn.Linear(3, 2)
    net.register_buffer("count", torch.zeros(()))
    with pytest.raises(TypeError, match="cannot assign 'int' as buffer 'count'"):
        net.count = 0
    layer.register_buffer("scale", np.float32(2.0))            # a NumPy scalar, as observers give
    layer.register_buffer("empty", None)
    state = layer.state_dict()
    assert "count" in state and "scale" in state and "empty" not in state
    layer.load_state_dict(state)


# -- assigning to a parameter --------------------------------------------------------------------


@pytest.mark.parametrize("value", [np.zeros((3, 2)), lamina.tensor(np.zeros((3, 2)), requires_grad=True)],
                         ids=["array", "tensor"])
def test_only_a_parameter_or_none_replaces_a_parameter_like_torch(value):
    layer = _dense()
    weight = layer.weight
    with pytest.raises(TypeError, match=r"Dense: cannot assign a \w+ as parameter 'weight' \(a Parameter or None "
                                        "expected\\)"):
        layer.weight = value
    with pytest.raises(TypeError, match="cannot assign .* as parameter 'weight'"):
        torch.nn.Linear(3, 2).weight = torch.zeros(2, 3, requires_grad=True)
    assert layer.weight is weight
    assert [n for n, _ in layer.named_parameters()] == ["weight", "bias"] and "weight" in layer.state_dict()
    replacement = nn.Parameter(np.ones((3, 2)))
    layer.weight = replacement                                 # a Parameter replaces it
    assert layer.weight is replacement and layer.parameters()[0] is replacement
    layer.bias = None                                          # None removes it
    assert layer.bias is None and [n for n, _ in layer.named_parameters()] == ["weight"]


# -- a sub-module stored twice, tied parameters --------------------------------------------------


def test_a_shared_sub_module_is_in_the_state_dict_under_each_name_and_loads_back_like_torch():
    model = _siamese()
    net = _torch_siamese()
    assert list(model.state_dict()) == list(net.state_dict()) == ["a.weight", "a.bias", "b.weight", "b.bias"]
    assert [n for n, _ in model.named_modules()] == [n for n, _ in net.named_modules()] == ["", "a"]
    assert [n for n, _ in model.named_modules(remove_duplicate=False)] == ["", "a", "b"]
    assert len(list(model.modules())) == len(list(net.modules())) == 2
    assert [n for n, _ in model.named_children()] == [n for n, _ in net.named_children()] == ["a"]
    state = {k: v + 1.0 for k, v in model.state_dict().items()}
    result = model.load_state_dict(state)
    assert result.missing_keys == [] and result.unexpected_keys == []
    np.testing.assert_array_equal(model.a.weight.numpy(), state["a.weight"])
    assert model.b is model.a and len(model.parameters()) == 2


def test_apply_calls_fn_once_per_module_like_torch():
    model = _siamese()
    ours, theirs = [], []
    model.apply(lambda m: ours.append(type(m).__name__))
    _torch_siamese().apply(lambda m: theirs.append(type(m).__name__))
    assert ours == ["Dense", "_Siamese"] and len(ours) == len(theirs) == 2


def test_global_pruning_over_the_modules_of_a_model_with_a_shared_layer():
    model = _siamese()
    prune.global_unstructured([(m, "weight") for m in model.modules() if isinstance(m, nn.Dense)], 0.5)
    assert int((model.a.weight_mask == 0).sum()) == 8


def test_tied_parameters_are_in_the_state_dict_under_each_name_and_load_back_like_torch():
    model = nn.Sequential(nn.Dense(4, use_bias=False), nn.Dense(4, use_bias=False))
    model.build((None, 4))
    model[1].weight = model[0].weight
    net = torch.nn.Sequential(torch.nn.Linear(4, 4, bias=False), torch.nn.Linear(4, 4, bias=False))
    net[1].weight = net[0].weight
    assert list(model.state_dict()) == ["dense.weight", "dense_1.weight"] and len(net.state_dict()) == 2
    assert [n for n, _ in model.named_parameters()] == ["dense.weight"]
    model.load_state_dict(model.state_dict())
    assert model[1].weight is model[0].weight


# -- load_state_dict's result, zero_grad ---------------------------------------------------------


def test_load_state_dict_returns_the_missing_and_unexpected_keys_like_torch():
    layer = _dense()
    state = {"weight": np.zeros((3, 2)), "extra": np.zeros(1)}
    result = layer.load_state_dict(state, strict=False)
    torch_result = torch.nn.Linear(3, 2).load_state_dict({"weight": torch.zeros(2, 3), "extra": torch.zeros(1)},
                                                         strict=False)
    assert result.missing_keys == torch_result.missing_keys == ["bias"]
    assert result.unexpected_keys == torch_result.unexpected_keys == ["extra"]
    missing, unexpected = layer.load_state_dict(layer.state_dict())
    assert missing == [] and unexpected == []
    np.testing.assert_array_equal(layer.weight.numpy(), 0.0)


def test_zero_grad_sets_none_by_default_or_fills_zeros_in_place():
    layer = _dense()
    layer(lamina.tensor(randn(2, 3))).sum().backward()
    grad = layer.weight.grad
    layer.zero_grad(set_to_none=False)
    assert layer.weight.grad is grad and not grad.any() and not layer.bias.grad.any()
    layer.zero_grad()
    assert layer.weight.grad is None and layer.bias.grad is None
    layer.zero_grad(set_to_none=False)                        # gradients that are None stay None
    assert layer.weight.grad is None


def test_a_built_module_without_weights_reports_unexpected_keys():
    model = nn.Sequential(nn.ReLU())
    model(lamina.tensor(np.ones((1, 2))))
    result = model.load_state_dict({"x": np.zeros(1)}, strict=False)
    assert result.missing_keys == [] and result.unexpected_keys == ["x"]
    with pytest.raises(KeyError, match=r"unexpected keys \['x'\]"):
        model.load_state_dict({"x": np.zeros(1)})


def test_a_buffer_name_must_be_a_plain_string_like_torch():
    layer = nn.Dense(2)
    for name, error in (("a.b", KeyError), ("", KeyError), (3, TypeError)):
        with pytest.raises(error, match="register_buffer: the name"):
            layer.register_buffer(name, np.zeros(1))
        with pytest.raises(error):
            torch.nn.Linear(2, 2).register_buffer(name, torch.zeros(1))


def test_a_slice_of_a_sequential_cannot_be_assigned():
    model = nn.Sequential(nn.Dense(2), nn.ReLU(), nn.Dense(3))
    with pytest.raises(TypeError, match="a slice cannot be assigned"):
        model[0:2] = nn.Tanh()
    assert len(model) == 3


def test_a_module_cannot_take_a_parameter_slot_nor_a_value_a_sub_module_slot_like_torch():
    layer = nn.Dense(2)
    layer(lamina.tensor(np.ones((1, 3))))
    with pytest.raises(TypeError, match="cannot assign a ReLU as parameter 'weight'"):
        layer.weight = nn.ReLU()
    model = nn.Sequential(nn.Dense(2, name="a"))
    with pytest.raises(TypeError, match="cannot assign a int as sub-module 'a'"):
        model.a = 3
    with pytest.raises(TypeError):
        torch.nn.Sequential(torch.nn.Linear(2, 2)).__setattr__("0", 3)
    model.a = None                                   # None empties the slot, as in torch
    assert [name for name, _ in model.named_modules()] == [""]
    del layer.weight
    layer.weight = nn.ReLU()                         # after del the name is free
    assert "weight" not in dict(layer.named_parameters())
