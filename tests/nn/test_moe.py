"""Mixture of experts: the dispatched layer against a dense torch reference (every expert on
every token, weighted by the renormalized top-k gates) in values and gradients, a float64
gradient check, the load-balancing and z losses against their formulas, top_k = E as a soft
mixture, capacity limits and noisy gating."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import nn
from lamina.nn.layer import layer_from_config, layer_to_config


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _layer(x, seed=0, **options):
    lamina.manual_seed(seed)
    layer = nn.MixtureOfExperts(4, 5, **options)
    layer(lamina.tensor(x))
    layer.b1.data = randn(*layer.b1.shape, seed=seed + 1, scale=0.1)
    layer.b2.data = randn(*layer.b2.shape, seed=seed + 2, scale=0.1)
    return layer


PARAMS = ("router.weight", "w1", "b1", "w2", "b2")


def torch_dense_moe(params, x, top_k):
    """Every expert on every token, each output weighted by its gate (0 outside the top k)."""
    router, w1, b1, w2, b2 = params
    flat = x.reshape(-1, x.shape[-1])
    probs = torch.softmax(flat @ router, dim=-1)
    top, chosen = torch.topk(probs, top_k, dim=-1)
    gates = torch.zeros_like(probs).scatter(1, chosen, top / top.sum(-1, keepdim=True))
    hidden = torch.nn.functional.gelu(torch.einsum("md,edh->emh", flat, w1) + b1[:, None])
    outputs = torch.einsum("emh,ehd->emd", hidden, w2) + b2[:, None]
    y = torch.einsum("me,emd->md", gates, outputs)
    return y.reshape(x.shape), probs, chosen


@pytest.mark.parametrize("shape, top_k", [((2, 5, 6), 2), ((7, 6), 1), ((2, 4, 6), 3)])
def test_dispatched_experts_equal_a_dense_torch_reference(f64, shape, top_k):
    x = randn(*shape, seed=3)
    layer = _layer(x, top_k=top_k)
    params = dict(layer.named_parameters())
    ours_x = lamina.tensor(x, requires_grad=True)
    ours = layer(ours_x)
    theirs_params = [torch.tensor(params[n].numpy(), requires_grad=True) for n in PARAMS]
    theirs_x = torch.tensor(x, requires_grad=True)
    theirs, probs, chosen = torch_dense_moe(theirs_params, theirs_x, top_k)
    assert_close(ours.numpy(), theirs.detach().numpy(), 1e-10)
    up = randn(*shape, seed=4)
    ((ours * lamina.tensor(up)).sum() + layer.aux_loss).backward()
    load = torch.zeros(4, dtype=torch.float64).scatter_add(0, chosen.reshape(-1),
                                                           torch.ones(chosen.numel(), dtype=torch.float64))
    aux = 4 * (probs.mean(0) * load / probs.shape[0]).sum()
    ((theirs * torch.tensor(up)).sum() + aux).backward()
    assert layer.aux_loss.item() == pytest.approx(aux.item(), rel=1e-12)
    assert_close(ours_x.grad, theirs_x.grad.numpy(), 1e-10, "dJ/dx")
    for name, t in zip(PARAMS, theirs_params):
        assert_close(params[name].grad, t.grad.numpy(), 1e-10, f"dJ/d{name}")


def test_gradcheck(f64):
    x = randn(2, 3, 6, seed=5)
    layer = _layer(x, top_k=2, z_loss=True)

    def run(a, w1):
        y = nn.functional_call(layer, {"w1": w1}, a)
        return y.sum() * 0.1 + layer.aux_loss + layer.z_loss

    assert check_gradients(run, x, layer.w1.numpy())


def test_the_auxiliary_losses_follow_their_formulas(f64):
    x = randn(9, 6, seed=6)
    layer = _layer(x, top_k=2, z_loss=True)
    layer(lamina.tensor(x))
    logits = x @ layer.router.weight.numpy()
    probs = np.exp(logits - logits.max(1, keepdims=True))
    probs /= probs.sum(1, keepdims=True)
    top2 = np.argsort(-probs, axis=1)[:, :2]
    f = np.array([(top2 == e).any(axis=1).mean() for e in range(4)])
    assert layer.aux_loss.item() == pytest.approx(4 * (f * probs.mean(0)).sum(), rel=1e-12)
    z = np.log(np.exp(logits).sum(1))
    assert layer.z_loss.item() == pytest.approx((z ** 2).mean(), rel=1e-12)


def test_top_k_of_every_expert_is_the_soft_mixture(f64):
    x = randn(3, 4, 6, seed=7)
    layer = _layer(x, top_k=4)
    flat = lamina.tensor(x.reshape(-1, 6))
    probs = lamina.functional.softmax(layer.router(flat), axis=-1).numpy()
    soft = sum(probs[:, e:e + 1] * layer.expert(e, flat).numpy() for e in range(4))
    assert_close(layer(lamina.tensor(x)).numpy(), soft.reshape(x.shape), 1e-12)


def test_capacity_drops_the_assignments_over_it(f64):
    x = randn(16, 6, seed=8)
    layer = _layer(x, top_k=1, capacity_factor=0.5)
    y = layer(lamina.tensor(x)).numpy()
    flat = lamina.tensor(x)
    chosen = layer.route(flat)[2][:, 0]
    expected = np.zeros_like(x)
    for e in range(4):
        kept = np.flatnonzero(chosen == e)[:2]           # ceil(0.5 * 16 / 4) = 2, in token order
        expected[kept] = layer.expert(e, lamina.tensor(x[kept])).numpy()
    assert_close(y, expected, 1e-12)
    assert layer.dropped == 16 - sum(min(2, int((chosen == e).sum())) for e in range(4)) > 0


def test_noisy_gating_adds_noise_in_training_only_and_the_config_round_trips():
    x = randn(6, 6, seed=9).astype(np.float32)
    layer = _layer(x, noisy_gating=True)
    layer.noise_weight.data = np.ones_like(layer.noise_weight.numpy())
    layer.train()
    first, second = layer(lamina.tensor(x)).numpy(), layer(lamina.tensor(x)).numpy()
    assert not np.allclose(first, second)
    layer.eval()
    assert np.array_equal(layer(lamina.tensor(x)).numpy(), layer(lamina.tensor(x)).numpy())
    copy = layer_from_config(layer_to_config(layer))
    assert (copy.num_experts, copy.top_k, copy.noisy_gating) == (4, 2, True)
    with pytest.raises(ValueError, match="top_k"):
        nn.MixtureOfExperts(2, 4, top_k=3)
