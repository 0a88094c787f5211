"""lamina.analysis.lrp: relevance conserved layer by layer, LRP-0 = gradient x input on ReLU
networks (BatchNorm folded), the 0/epsilon/gamma/z^B rules against a torch version (the
gradient trick with modified weights), and clear errors."""

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close
from lamina import nn
from lamina.analysis import LRPEpsilon, LRPGamma, LRPZBox, LRPZero, input_x_gradient, lrp, lrp_relevances


def test_relevance_is_conserved_layer_by_layer_without_biases():
    lamina.set_default_dtype(np.float64)
    lamina.manual_seed(0)
    model = nn.Sequential(nn.Conv2D(4, 3, use_bias=False), nn.BatchNorm(), nn.ReLU(), nn.MaxPool2D(2),
                          nn.Sequential(nn.Flatten(), nn.Dense(6, activation="relu", use_bias=False)),
                          nn.Dropout(0.5), nn.Dense(3, use_bias=False))
    model.build((None, 8, 8, 2))
    model[1].running_var = np.random.default_rng(1).uniform(0.5, 2.0, size=4)  # mean 0, beta 0: no shift
    x = np.random.default_rng(2).uniform(0, 1, (3, 8, 8, 2))
    for rules in ({}, {nn.Dense: LRPGamma(0.5)}):
        relevances = lrp_relevances(model, x, rules=rules, default_rule=LRPZero())
        totals = np.array([r.reshape(3, -1).sum(axis=1) for r in relevances])
        assert len(relevances) == 8  # the input, then conv+BN (folded), ReLU, pool, Flatten, Dense, Dropout, Dense
        assert np.abs(totals[-1]).min() > 1e-3
        assert_close(totals, np.broadcast_to(totals[-1], totals.shape), 1e-10, "layer sums")


def test_lrp_zero_on_a_relu_network_is_gradient_times_input():
    lamina.set_default_dtype(np.float64)
    lamina.manual_seed(3)
    model = nn.Sequential(nn.Conv2D(4, 3, activation="relu"), nn.BatchNorm(), nn.Conv2D(3, 2), nn.BatchNorm(),
                          nn.ReLU(), nn.AvgPool2D(2), nn.Flatten(), nn.Dense(5, activation="relu"), nn.Dense(3),
                          nn.Softmax())
    model.build((None, 9, 9, 2))
    rng = np.random.default_rng(4)
    for layer in (model[0], model[2], model[7], model[8]):
        layer.bias.data[...] = rng.normal(0, 0.3, layer.bias.shape)
    for bn in (model[1], model[3]):
        bn.running_mean = rng.normal(size=bn.running_mean.shape)
        bn.running_var = rng.uniform(0.5, 2.0, size=bn.running_var.shape)
    x = rng.normal(size=(3, 9, 9, 2))
    ours = lrp(model, x, default_rule="zero")
    assert_close(ours, input_x_gradient(model, x), 1e-10)
    assert np.abs(ours - lrp(model, x, default_rule=LRPEpsilon(0.5))).max() > 1e-4


def torch_lrp(model, x, target, eps, gamma, low, high):
    """The same network in torch, relevance by the gradient trick layer by layer:
    conv (z^B) + ReLU, AvgPool2D(2) (epsilon 1e-9), Flatten, Dense + ReLU (gamma), Dense (epsilon)."""
    conv_w = torch.tensor(model[0].weight.numpy().transpose(0, 3, 1, 2))
    conv_b = torch.tensor(model[0].bias.numpy())
    (w1, b1), (w2, b2) = [(torch.tensor(model[i].weight.numpy().T), torch.tensor(model[i].bias.numpy()))
                          for i in (3, 4)]
    conv = torch.nn.functional.conv2d
    linear = torch.nn.functional.linear

    def share(a, relevance, forward, stabilizer=0.0):
        a = a.detach().requires_grad_(True)
        z = forward(a)
        z_stable = z + stabilizer * torch.where(z >= 0, 1.0, -1.0)
        s = torch.where(z_stable != 0, relevance / torch.where(z_stable != 0, z_stable, 1.0), 0.0).detach()
        (z * s).sum().backward()
        return a * a.grad

    a0 = torch.tensor(x).permute(0, 3, 1, 2)
    a1 = torch.relu(conv(a0, conv_w, conv_b))
    a2 = torch.nn.functional.avg_pool2d(a1, 2)
    a3 = a2.permute(0, 2, 3, 1).flatten(1)
    a4 = torch.relu(linear(a3, w1, b1))
    out = linear(a4, w2, b2)
    relevance = torch.zeros_like(out)
    rows = torch.arange(len(x))
    relevance[rows, target] = out[rows, target].detach()
    r4 = share(a4, relevance, lambda a: linear(a, w2, b2), eps)
    r3 = share(a3, r4, lambda a: linear(a, w1 + gamma * w1.clamp(min=0), b1 + gamma * b1.clamp(min=0)))
    r2 = r3.reshape(a2.permute(0, 2, 3, 1).shape).permute(0, 3, 1, 2)
    r1 = share(a1, r2, lambda a: torch.nn.functional.avg_pool2d(a, 2), 1e-9)
    inputs = [t.clone().requires_grad_(True) for t in (a0, torch.full_like(a0, low), torch.full_like(a0, high))]
    z = (conv(inputs[0], conv_w, conv_b) - conv(inputs[1], conv_w.clamp(min=0), conv_b.clamp(min=0))
         - conv(inputs[2], conv_w.clamp(max=0), conv_b.clamp(max=0)))
    s = torch.where(z != 0, r1 / torch.where(z != 0, z, 1.0), 0.0).detach()
    (z * s).sum().backward()
    r0 = sum(t * t.grad for t in inputs)
    return r0.permute(0, 2, 3, 1).detach().numpy()


def test_rules_match_a_torch_version():
    lamina.set_default_dtype(np.float64)
    lamina.manual_seed(5)
    model = nn.Sequential(nn.Conv2D(4, 3, activation="relu"), nn.AvgPool2D(2), nn.Flatten(),
                          nn.Dense(6, activation="relu"), nn.Dense(3))
    model.build((None, 8, 8, 1))
    rng = np.random.default_rng(6)
    for layer in (model[0], model[3], model[4]):
        layer.bias.data[...] = rng.normal(0, 0.3, layer.bias.shape)
    x = rng.uniform(0, 1, (3, 8, 8, 1))
    target = np.array([0, 2, 1])
    rules = {model[0]: LRPZBox(0.0, 1.0), model[3].name: "gamma", model[4]: LRPEpsilon(0.1)}
    ours = lrp(model, x, target, rules=rules)
    assert_close(ours, torch_lrp(model, x, target, 0.1, 0.25, 0.0, 1.0), 1e-8)
    assert np.abs(ours - lrp(model, x, target)).max() > 1e-4


def test_errors_name_the_layer_and_the_rule():
    lamina.set_default_dtype(np.float64)
    model = nn.Sequential(nn.Dense(4), nn.LayerNorm(), nn.Dense(2))
    model.build((None, 3))
    x = np.ones((2, 3))
    with pytest.raises(ValueError, match=r"lrp: layer 'layer_norm' \(LayerNorm\) is not supported"):
        lrp(model, x)
    tanh_model = nn.Sequential(nn.Dense(4, activation="tanh"), nn.Dense(2))
    tanh_model.build((None, 3))
    with pytest.raises(ValueError, match=r"layer 'dense' \(Dense\) has the activation"):
        lrp(tanh_model, x)
    plain = nn.Sequential(nn.Dense(4), nn.Dense(2))
    plain.build((None, 3))
    with pytest.raises(ValueError, match="which the model does not have"):
        lrp(plain, x, rules={"dense_7": "zero"})
    with pytest.raises(ValueError, match="must be an LRPRule"):
        lrp(plain, x, rules={nn.Dense: "alpha-beta"})
    with pytest.raises(TypeError, match="needs a Sequential model"):
        lrp(nn.Dense(2), x)
