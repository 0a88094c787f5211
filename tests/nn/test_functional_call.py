"""functional_call: a module run with other parameter values (computed tensors included),
the module's own restored afterwards; a MAML step through it against torch.func."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, randn
from lamina import functional as F
from lamina import nn
from lamina.autograd import grad
from lamina.errors import ShapeError
from lamina.nn import functional_call


@pytest.fixture(autouse=True)
def f64():
    lamina.set_default_dtype(np.float64)


def _mlp():
    model = nn.Sequential(nn.Dense(5, activation="tanh"), nn.Dense(2))
    model.build((None, 3))
    return model


def test_values_replace_the_parameters_for_one_call_only():
    model = _mlp()
    x = randn(4, 3)
    own = [p.data.copy() for p in model.parameters()]
    zero_out = {"dense_1.weight": np.zeros((5, 2)), "dense_1.bias": np.array([1.0, -2.0])}
    out = functional_call(model, zero_out, x)
    np.testing.assert_array_equal(out.numpy(), np.tile([1.0, -2.0], (4, 1)))
    assert all(np.array_equal(p.data, o) for p, o in zip(model.parameters(), own))
    assert [n for n, _ in model.named_parameters()] == ["dense.weight", "dense.bias", "dense_1.weight",
                                                         "dense_1.bias"]
    with lamina.no_grad():
        np.testing.assert_allclose(model(x).numpy(), functional_call(model, {}, x).numpy())


def test_gradients_flow_to_the_given_tensors_not_the_parameters():
    model = _mlp()
    x = randn(4, 3)
    w = lamina.tensor(randn(5, 2, seed=1), requires_grad=True)
    (functional_call(model, {"dense_1.weight": w}, x) ** 2).sum().backward()
    assert w.grad is not None and model[1].weight.grad is None
    assert model[0].weight.grad is not None              # parameters not given still learn


def test_batch_norm_buffers_can_be_given():
    model = nn.Sequential(nn.Dense(3), nn.BatchNorm())
    model.build((None, 2))
    model.eval()
    x = randn(5, 2)
    names = dict(model.named_buffers())
    assert {"batch_norm.running_mean", "batch_norm.running_var"} <= set(names)
    mean = np.full(3, 10.0)
    with lamina.no_grad():
        moved = functional_call(model, {"batch_norm.running_mean": mean}, x).numpy()
        plain = model(x).numpy()
    assert np.all(moved < plain)
    np.testing.assert_array_equal(model[1].running_mean, names["batch_norm.running_mean"])


def test_buffers_updated_in_training_go_into_the_given_values_like_torch_func():
    x = randn(6, 3)
    model = nn.BatchNorm()
    model.build((None, 3))
    own_mean = model.running_mean.copy()
    given = {"running_mean": lamina.tensor(np.full(3, 0.5)), "running_var": lamina.tensor(np.full(3, 2.0))}
    lamina.func.functional_call(model, given, (lamina.tensor(x),))
    as_arrays = {"running_mean": np.full(3, 0.5), "running_var": np.full(3, 2.0)}
    functional_call(model, as_arrays, x)

    net = torch.nn.BatchNorm1d(3).double()
    theirs = {"running_mean": torch.full((3,), 0.5, dtype=torch.float64),
              "running_var": torch.full((3,), 2.0, dtype=torch.float64)}
    torch.func.functional_call(net, theirs, (torch.tensor(x),))
    for name in theirs:
        assert_close(given[name].numpy(), theirs[name].numpy(), 1e-12, f"{name} given as a tensor")
        assert_close(as_arrays[name], theirs[name].numpy(), 1e-12, f"{name} given as an array")
    np.testing.assert_array_equal(model.running_mean, own_mean)       # the module's own is untouched


def test_the_parameters_come_back_when_the_call_raises():
    model = _mlp()
    weight = model[0].weight
    with pytest.raises(ShapeError):
        functional_call(model, {"dense.weight": np.zeros((3, 5))}, randn(4, 7))   # the input does not fit
    assert model[0].weight is weight


def test_errors_name_the_model_and_the_names():
    model = _mlp()
    with pytest.raises(KeyError, match=r"functional_call: Sequential has no parameter or buffer named 'dense_2.weight'"
                                       r".*'dense.weight'"):
        functional_call(model, {"dense_2.weight": np.zeros(1)}, randn(1, 3))
    with pytest.raises(ShapeError, match=r"'dense.bias' of Sequential has shape \(5,\), got a value of shape \(4,\)"):
        functional_call(model, {"dense.bias": np.zeros(4)}, randn(1, 3))
    with pytest.raises(ValueError, match="functional_call: Sequential has no weights yet"):
        functional_call(nn.Sequential(nn.Dense(2)), {}, randn(1, 3))
    with pytest.raises(TypeError, match="functional_call: expected a Module, got function"):
        functional_call(lambda x: x, {}, randn(1, 3))


def test_a_tied_parameter_is_replaced_in_every_layer_like_torch_func():
    model = nn.Sequential(nn.Dense(4, use_bias=False), nn.Dense(4, use_bias=False))
    model.build((None, 4))
    model[1].weight = model[0].weight                          # tied
    x, w = randn(2, 4), randn(4, 4, seed=1)
    ours = functional_call(model, {"dense.weight": w}, x).numpy()
    net = torch.nn.Sequential(torch.nn.Linear(4, 4, bias=False), torch.nn.Linear(4, 4, bias=False)).double()
    net[1].weight = net[0].weight
    theirs = torch.func.functional_call(net, {"0.weight": torch.tensor(w.T.copy())}, (torch.tensor(x),))
    assert_close(ours, theirs.detach().numpy(), 1e-12, "output with a tied weight replaced")
    assert model[0].weight is model[1].weight and not np.array_equal(model[0].weight.numpy(), w)
    with pytest.raises(ValueError, match="'dense.weight' and 'dense_1.weight' of Sequential are tied"):
        functional_call(model, {"dense.weight": w, "dense_1.weight": w.copy()}, x)
    assert model[0].weight is model[1].weight


def test_a_maml_step_matches_torch_func():
    """Outer loss at the weights after one inner SGD step on a support batch, differentiated
    through the step (second derivatives) with respect to the starting weights."""
    model = _mlp()
    rng = np.random.default_rng(3)
    support, query = rng.standard_normal((6, 3)), rng.standard_normal((6, 3))
    y_support, y_query = rng.integers(0, 2, 6), rng.integers(0, 2, 6)

    params = dict(model.named_parameters())
    inner = F.categorical_cross_entropy(functional_call(model, params, support), y_support, from_logits=True)
    steps = grad(inner, list(params.values()), create_graph=True)
    adapted = {name: p - 0.4 * g for (name, p), g in zip(params.items(), steps)}
    outer = F.categorical_cross_entropy(functional_call(model, adapted, query), y_query, from_logits=True)
    outer.backward()

    net = torch.nn.Sequential(torch.nn.Linear(3, 5), torch.nn.Tanh(), torch.nn.Linear(5, 2)).double()
    theirs = {"0.weight": model[0].weight, "0.bias": model[0].bias, "2.weight": model[1].weight,
              "2.bias": model[1].bias}                            # torch's names -> lamina's parameters
    start = {k: torch.tensor(v.numpy().T.copy() if v.ndim == 2 else v.numpy(), requires_grad=True)
             for k, v in theirs.items()}
    loss = torch.nn.functional.cross_entropy
    inner_t = loss(torch.func.functional_call(net, start, (torch.tensor(support),)), torch.tensor(y_support))
    steps_t = torch.autograd.grad(inner_t, list(start.values()), create_graph=True)
    adapted_t = {k: v - 0.4 * g for (k, v), g in zip(start.items(), steps_t)}
    outer_t = loss(torch.func.functional_call(net, adapted_t, (torch.tensor(query),)), torch.tensor(y_query))
    outer_t.backward()

    assert outer.item() == pytest.approx(outer_t.item(), rel=1e-12)
    for name, ours in theirs.items():
        expected = start[name].grad.numpy()
        assert_close(ours.grad, expected.T if expected.ndim == 2 else expected, 1e-10, f"meta-gradient of {name}")


def test_parameters_to_vector_and_back():
    model = _mlp()
    params = model.parameters()
    vector = nn.parameters_to_vector(params)
    assert vector.shape == (3 * 5 + 5 + 5 * 2 + 2,)
    np.testing.assert_array_equal(vector.numpy()[:15], params[0].numpy().reshape(-1))
    (vector * np.arange(vector.size)).sum().backward()          # gradients reach each parameter
    np.testing.assert_array_equal(params[1].grad, np.arange(15, 20))

    flat = np.random.default_rng(0).standard_normal(vector.size)
    weight = params[0]
    nn.vector_to_parameters(flat, params)
    assert model.parameters()[0] is weight                       # the same objects, new values
    np.testing.assert_array_equal(nn.parameters_to_vector(params).numpy(), flat)
    np.testing.assert_array_equal(model[1].bias.numpy(), flat[-2:])
    with pytest.raises(ShapeError, match=r"vector_to_parameters: expected a vector of 32 values.*got shape \(31,\)"):
        nn.vector_to_parameters(flat[:-1], params)
    with pytest.raises(TypeError, match=r"parameters_to_vector: parameters\[0\] is a ndarray"):
        nn.parameters_to_vector([flat])


def test_an_unknown_name_lists_every_path_tied_aliases_included():
    model = nn.Sequential(nn.Dense(4, use_bias=False, name="a"), nn.Dense(4, use_bias=False, name="b"))
    model(lamina.tensor(np.ones((2, 4))))
    model.b.weight = model.a.weight
    with pytest.raises(KeyError, match=r"its names are \['a.weight', 'b.weight'\]"):
        nn.functional_call(model, {"c.weight": np.ones((4, 4))}, lamina.tensor(np.ones((2, 4))))
