"""Soft MoE: values and gradients against a float64 torch rewrite of the paper's pseudo-code
(with and without normalisation), dispatch/combine weights summing to 1, permutation
equivariance over tokens, a float64 gradient check, configs, the README example and a toy
regression whose best function depends on the input's cluster."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, randn, run_readme_section
from lamina import functional as F
from lamina import nn, optim
from lamina.nn.layer import layer_from_config, layer_to_config


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _layer(normalize, seed=0, d=6, experts=3, slots=2, hidden=5):
    lamina.manual_seed(seed)
    layer = nn.SoftMoE(d, experts, slots, hidden, normalize=normalize)
    layer.b1.data = randn(*layer.b1.shape, seed=seed + 1, scale=0.1)
    layer.b2.data = randn(*layer.b2.shape, seed=seed + 2, scale=0.1)
    if normalize:
        layer.scale.data = np.asarray(1.7)
    return layer


def torch_soft_moe(x, phi, w1, b1, w2, b2, scale=None, eps=1e-6):
    """The paper's algorithm: logits over (tokens, experts, slots), D a softmax over tokens,
    C a softmax over all slots, each expert on its p slot inputs; normalisation changes the
    logits only, the slots mix the tokens as given."""
    d = x.shape[-1]
    n, p = w1.shape[0], phi.shape[1] // w1.shape[0]
    keys = x
    if scale is not None:
        keys = x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)
        phi = scale * phi * torch.rsqrt((phi * phi).sum(0, keepdim=True) + eps)
    logits = torch.einsum("bmd,dnp->bmnp", keys, phi.reshape(d, n, p))
    dispatch = torch.softmax(logits, dim=1)
    combine = torch.softmax(logits.flatten(2), dim=-1).reshape(logits.shape)
    slots = torch.einsum("bmd,bmnp->bnpd", x, dispatch)
    outputs = torch.stack([torch.nn.functional.gelu(slots[:, i] @ w1[i] + b1[i]) @ w2[i] + b2[i]
                           for i in range(n)], dim=1)
    return torch.einsum("bnpd,bmnp->bmd", outputs, combine)


@pytest.mark.parametrize("normalize", [True, False])
def test_values_and_gradients_equal_the_torch_rewrite(f64, normalize):
    x = randn(2, 5, 6, seed=3)
    layer = _layer(normalize)
    names = ["phi", "w1", "b1", "w2", "b2"] + (["scale"] if normalize else [])
    params = dict(layer.named_parameters())
    ours_x = lamina.tensor(x, requires_grad=True)
    ours = layer(ours_x)
    theirs_params = {n: torch.tensor(params[n].numpy(), requires_grad=True) for n in names}
    theirs_x = torch.tensor(x, requires_grad=True)
    theirs = torch_soft_moe(theirs_x, **theirs_params)
    assert_close(ours.numpy(), theirs.detach().numpy(), 1e-10)
    up = randn(2, 5, 6, seed=4)
    (ours * lamina.tensor(up)).sum().backward()
    (theirs * torch.tensor(up)).sum().backward()
    assert_close(ours_x.grad, theirs_x.grad.numpy(), 1e-10, "dJ/dx")
    for name in names:
        assert_close(params[name].grad, theirs_params[name].grad.numpy(), 1e-10, f"dJ/d{name}")


def test_dispatch_sums_over_tokens_and_combine_over_slots(f64):
    layer = _layer(True)
    layer(lamina.tensor(randn(2, 5, 6, seed=5, scale=3.0)))
    dispatch, combine = layer.dispatch_weights.numpy(), layer.combine_weights.numpy()
    assert dispatch.shape == combine.shape == (2, 5, 6)
    np.testing.assert_allclose(dispatch.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_allclose(combine.sum(axis=2), 1.0, atol=1e-12)
    assert not np.allclose(dispatch.sum(axis=2), 1.0)


@pytest.mark.parametrize("normalize", [True, False])
def test_permuting_tokens_permutes_the_outputs(f64, normalize):
    layer = _layer(normalize)
    x = randn(2, 7, 6, seed=6)
    order = np.random.default_rng(0).permutation(7)
    assert_close(layer(lamina.tensor(x[:, order])).numpy(), layer(lamina.tensor(x)).numpy()[:, order], 1e-12)


@pytest.mark.parametrize("normalize", [True, False])
def test_gradcheck(f64, normalize):
    layer = _layer(normalize, d=4, experts=2, hidden=3)
    x = randn(2, 3, 4, seed=7)

    def run(a, phi, w1):
        return nn.functional_call(layer, {"phi": phi, "w1": w1}, a).sum()

    assert check_gradients(run, x, layer.phi.numpy(), layer.w1.numpy())


def test_config_round_trip_and_errors():
    layer = nn.SoftMoE(8, 4, 2, 16, normalize=False, name="soft")
    copy = layer_from_config(layer_to_config(layer))
    assert isinstance(copy, nn.SoftMoE)
    assert (copy.d_model, copy.num_experts, copy.slots_per_expert, copy.expert_hidden, copy.normalize) == \
        (8, 4, 2, 16, False)
    assert copy.phi.shape == (8, 8) and copy.w1.shape == (4, 8, 16)
    with pytest.raises(ValueError, match="SoftMoE"):
        layer(lamina.tensor(np.zeros((2, 8), dtype=np.float32)))
    with pytest.raises(ValueError, match="slots_per_expert"):
        nn.SoftMoE(8, 4, 0, 16)


def cluster_regression(seed, batch=64, d=4, clusters=4):
    """Sequences of one token per cluster (shuffled); the target of a token is its cluster's
    own linear map of the token, so the best function changes from cluster to cluster."""
    rng = np.random.default_rng(seed)
    centres = 3.0 * np.eye(clusters, d)
    maps = np.random.default_rng(99).standard_normal((clusters, d, d))
    labels = np.argsort(rng.random((batch, clusters)), axis=1)
    x = centres[labels] + 0.5 * rng.standard_normal((batch, clusters, d))
    y = np.einsum("btd,btde->bte", x, maps[labels])
    return x.astype(np.float32), y.astype(np.float32)


def fit(model, steps=400, lr=0.05):
    opt = optim.Adam(model, lr=lr)
    for step in range(steps):
        x, y = cluster_regression(step)
        cost = F.mean_squared_error(model(lamina.tensor(x)), y)
        opt.zero_grad()
        cost.backward()
        opt.step()
    x, y = cluster_regression(10_000, batch=256)
    return F.mean_squared_error(model(lamina.tensor(x)), y).item()


def dense_mlp(d, parameters):
    hidden = (parameters - d) // (2 * d + 1)
    model = nn.Sequential([nn.Dense(hidden, activation="gelu"), nn.Dense(d)])
    model.build((None, None, d))
    return model


def test_learns_a_cluster_dependent_map_as_well_as_an_equal_size_dense_mlp():
    # one slot per expert, as many slots as tokens; unnormalised logits suit this small d
    lamina.manual_seed(0)
    moe = nn.SoftMoE(4, 4, 1, 8, normalize=False)
    size = sum(p.size for p in moe.parameters())
    lamina.manual_seed(0)
    dense = dense_mlp(4, size)
    assert abs(sum(p.size for p in dense.parameters()) - size) <= 9
    moe_loss, dense_loss = fit(moe), fit(dense)
    assert moe_loss < 0.8 * dense_loss


def test_readme_example():
    printed, names = run_readme_section("Soft MoE and expert-choice routing")
    assert names["y"].shape == (2, 16, 32) and names["z"].shape == (2, 16, 32)
    assert "tokens per expert [8 8 8 8]" in printed
