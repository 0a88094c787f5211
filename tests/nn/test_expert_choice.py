"""Expert-choice routing: every expert takes exactly k tokens, values and gradients (through the
gates, the selection held constant) against a torch rewrite, a float64 gradient check, configs
and a toy regression whose best function depends on the input's cluster."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from test_soft_moe import dense_mlp, fit

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import nn
from lamina.nn.layer import layer_from_config, layer_to_config

PARAMS = ("router.weight", "w1", "b1", "w2", "b2")


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _layer(capacity_factor=1.0, seed=0, d=6, experts=4, hidden=5):
    lamina.manual_seed(seed)
    layer = nn.ExpertChoiceMoE(d, experts, capacity_factor, hidden)
    layer.router.weight.data = randn(*layer.router.weight.shape, seed=seed + 3)
    layer.b1.data = randn(*layer.b1.shape, seed=seed + 1, scale=0.1)
    layer.b2.data = randn(*layer.b2.shape, seed=seed + 2, scale=0.1)
    return layer


def torch_expert_choice(x, router, w1, b1, w2, b2, k):
    """Each expert's top-k tokens by the affinity softmax(x W_g) (softmax over experts); the
    chosen indices are a constant, the gate values carry the gradient."""
    flat = x.reshape(-1, x.shape[-1])
    affinity = torch.softmax(flat @ router, dim=-1).T
    chosen = torch.topk(affinity.detach(), k, dim=1).indices
    y = torch.zeros_like(flat)
    for e in range(w1.shape[0]):
        picked = flat[chosen[e]]
        out = torch.nn.functional.gelu(picked @ w1[e] + b1[e]) @ w2[e] + b2[e]
        y = y.index_add(0, chosen[e], affinity[e, chosen[e], None] * out)
    return y.reshape(x.shape), chosen


@pytest.mark.parametrize("shape, capacity_factor", [((2, 5, 6), 1.0), ((7, 6), 2.0), ((2, 4, 6), 0.5)])
def test_values_and_gradients_equal_the_torch_rewrite(f64, shape, capacity_factor):
    x = randn(*shape, seed=5)
    layer = _layer(capacity_factor)
    params = dict(layer.named_parameters())
    ours_x = lamina.tensor(x, requires_grad=True)
    ours = layer(ours_x)
    k = math.ceil(x.size // 6 * capacity_factor / 4)
    theirs_params = [torch.tensor(params[n].numpy(), requires_grad=True) for n in PARAMS]
    theirs_x = torch.tensor(x, requires_grad=True)
    theirs, chosen = torch_expert_choice(theirs_x, *theirs_params, k)
    assert np.array_equal(np.sort(layer.chosen, axis=1), np.sort(chosen.numpy(), axis=1))
    assert_close(ours.numpy(), theirs.detach().numpy(), 1e-10)
    up = randn(*shape, seed=6)
    (ours * lamina.tensor(up)).sum().backward()
    (theirs * torch.tensor(up)).sum().backward()
    assert_close(ours_x.grad, theirs_x.grad.numpy(), 1e-10, "dJ/dx")
    for name, t in zip(PARAMS, theirs_params):
        assert_close(params[name].grad, t.grad.numpy(), 1e-10, f"dJ/d{name}")


@pytest.mark.parametrize("tokens, capacity_factor, k", [(12, 1.0, 3), (12, 2.0, 6), (10, 1.0, 3), (6, 8.0, 6)])
def test_each_expert_processes_exactly_k_tokens(tokens, capacity_factor, k):
    layer = _layer(capacity_factor)
    assert layer.capacity(tokens) == k
    layer(lamina.tensor(randn(tokens, 6, seed=7).astype(np.float32)))
    assert layer.chosen.shape == (4, k)
    assert layer.tokens_per_expert.tolist() == [k] * 4
    assert layer.unrouted == tokens - len(np.unique(layer.chosen))


def test_tokens_chosen_by_no_expert_give_zero():
    layer = _layer(0.5)
    x = randn(16, 6, seed=8)
    y = layer(lamina.tensor(x.astype(np.float32))).numpy()
    unchosen = np.setdiff1d(np.arange(16), layer.chosen)
    assert layer.unrouted == unchosen.size > 0
    assert np.all(y[unchosen] == 0) and np.all(np.abs(y[np.unique(layer.chosen)]).sum(axis=1) > 0)


def test_gradcheck(f64):
    layer = _layer(1.5, d=4, experts=3, hidden=3)
    x = randn(2, 3, 4, seed=9)

    def run(a, router, w1):
        return nn.functional_call(layer, {"router.weight": router, "w1": w1}, a).sum()

    assert check_gradients(run, x, layer.router.weight.numpy(), layer.w1.numpy())


def test_config_round_trip_and_errors():
    layer = nn.ExpertChoiceMoE(8, 4, 1.25, 16, name="ec")
    copy = layer_from_config(layer_to_config(layer))
    assert isinstance(copy, nn.ExpertChoiceMoE)
    assert (copy.d_model, copy.num_experts, copy.capacity_factor, copy.expert_hidden) == (8, 4, 1.25, 16)
    with pytest.raises(ValueError, match="ExpertChoiceMoE"):
        layer(lamina.tensor(np.zeros((2, 5), dtype=np.float32)))
    with pytest.raises(ValueError, match="capacity_factor"):
        nn.ExpertChoiceMoE(8, 4, 0.0, 16)


def test_learns_a_cluster_dependent_map_as_well_as_an_equal_size_dense_mlp():
    # capacity 1.5: some slack so that every token tends to find an expert while routing is learned
    lamina.manual_seed(0)
    moe = nn.ExpertChoiceMoE(4, 4, 1.5, 8)
    size = sum(p.size for p in moe.parameters())
    lamina.manual_seed(0)
    dense = dense_mlp(4, size)
    assert abs(sum(p.size for p in dense.parameters()) - size) <= 9
    moe_loss, dense_loss = fit(moe, steps=600), fit(dense, steps=600)
    assert moe_loss < 0.8 * dense_loss
