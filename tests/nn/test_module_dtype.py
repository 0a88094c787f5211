"""Module.to / double / float, get_submodule, named_children and requires_grad_."""

import numpy as np
import pytest
import torch
from tests.helpers import assert_close

import lamina
from lamina import functional as F
from lamina import nn, optim


def _model():
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Conv2D(3, 3, padding="same"), nn.BatchNorm(), nn.ReLU(), nn.Flatten(), nn.Dense(4))
    model(np.zeros((2, 5, 5, 2), dtype=np.float32))
    return model


def test_double_casts_parameters_and_float_buffers_in_place():
    model = _model()
    params = model.parameters()
    before = [p.data.copy() for p in params]
    assert model.double() is model
    assert all(p is q for p, q in zip(model.parameters(), params))
    assert all(p.dtype == np.float64 for p in params)
    assert all(np.array_equal(p.data, b) for p, b in zip(params, before))   # float32 values are exact in float64
    assert all(buf.dtype == np.float64 for _, buf in model.named_buffers() if buf.dtype.kind == "f")
    model.float()
    assert all(p.dtype == np.float32 for p in model.parameters())


def test_a_double_model_passes_a_whole_model_gradient_check_and_matches_torch():
    model = _model().double()
    model.eval()
    x = np.random.default_rng(1).standard_normal((2, 5, 5, 2))
    assert lamina.gradcheck(lambda t: model(t), lamina.tensor(x, requires_grad=True, dtype=np.float64))
    conv, dense = model[0], model[4]
    t_conv = torch.nn.Conv2d(2, 3, 3, padding=1, dtype=torch.float64)
    t_dense = torch.nn.Linear(75, 4, dtype=torch.float64)
    with torch.no_grad():
        t_conv.weight.copy_(torch.tensor(conv.weight.data.transpose(0, 3, 1, 2)))
        t_conv.bias.copy_(torch.tensor(conv.bias.data))
        t_dense.weight.copy_(torch.tensor(dense.weight.data.T))
        t_dense.bias.copy_(torch.tensor(dense.bias.data))
    bn = model[1]
    mean, var = (torch.tensor(bn.running_mean), torch.tensor(bn.running_var))
    t = torch.tensor(x).permute(0, 3, 1, 2)
    h = torch.relu(torch.nn.functional.batch_norm(t_conv(t), mean, var, torch.tensor(bn.gamma.data),
                                                  torch.tensor(bn.beta.data), eps=bn.eps))
    expected = t_dense(h.permute(0, 2, 3, 1).reshape(2, -1))
    assert_close(model(lamina.tensor(x, dtype=np.float64)).numpy(), expected.detach().numpy(), 1e-12)


def test_training_continues_in_float64_after_the_cast():
    model = _model().double()
    opt = optim.Adam(model.parameters(), lr=1e-2)
    x = lamina.tensor(np.random.default_rng(2).standard_normal((8, 5, 5, 2)), dtype=np.float64)
    y = np.arange(8) % 4
    first = None
    for _ in range(20):
        loss = F.categorical_cross_entropy(model(x), y, from_logits=True)
        first = loss.item() if first is None else first
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.dtype == np.float64 and loss.item() < 0.5 * first


def test_unbuilt_model_and_integer_dtype_are_refused():
    with pytest.raises(ValueError, match=r"Sequential.*has no weights yet.*build\(input_shape\)"):
        nn.Sequential(nn.Dense(3)).double()
    with pytest.raises(ValueError, match="expected a floating dtype, got int32"):
        _model().to(np.int32)


def test_get_submodule_named_children_and_requires_grad():
    model = nn.Sequential(nn.Sequential(nn.Dense(3), nn.ReLU()), nn.Dense(2))
    model(np.zeros((1, 4), dtype=np.float32))
    names = [name for name, _ in model.named_children()]
    assert names == [name for name, _ in model.named_modules() if name and "." not in name]
    inner_dense = model.get_submodule(names[0] + "." + next(iter(model[0]._modules)))
    assert inner_dense is model[0][0] and model.get_submodule("") is model
    with pytest.raises(AttributeError, match=r"has no sub-module 'nope'.*its children are"):
        model.get_submodule(names[0] + ".nope")
    model.requires_grad_(False)
    assert not any(p.trainable for p in model.parameters())
    model.requires_grad_()
    assert all(p.trainable for p in model.parameters())
