"""Planar, radial and inverse autoregressive flows: exact inverses, log-determinants against
torch's slogdet of the Jacobian, the invertibility constraints, values and gradients against
torch rewrites of Rezende and Mohamed's formulas, and numerical gradients."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn, swap_in
from lamina.autograd import jacobian
from lamina.models.batchnorm_flow import BatchNormFlow
from lamina.models.flows import NormalizingFlow
from lamina.models.variational_flows import InverseAutoregressive, PlanarFlow, RadialFlow


def randomized(layer, features=3, seed=0, spread=0.8):
    layer.build((None, features))
    layer.double()
    rng = np.random.default_rng(seed)
    for _, p in layer.named_parameters():
        p.data = rng.standard_normal(p.shape) * spread
    return layer


def block_log_det(fn, x):
    full = jacobian(fn, x)
    blocks = np.stack([full[i, :, i, :] for i in range(x.shape[0])])
    return torch.linalg.slogdet(torch.from_numpy(blocks))[1].numpy()


LAYERS = {"planar": lambda s: randomized(PlanarFlow(), seed=s), "radial": lambda s: randomized(RadialFlow(), seed=s),
          "iaf": lambda s: randomized(InverseAutoregressive(hidden=(6,), activation="tanh"), seed=s)}


@pytest.mark.parametrize("kind", sorted(LAYERS))
@pytest.mark.parametrize("seed", [0, 1])
def test_inverse_and_log_det(kind, seed):
    layer = LAYERS[kind](seed)
    x = lamina.tensor(randn(5, 3, seed=seed + 10) * 2, dtype=np.float64)
    y, log_det = layer(x)
    back, log_det_back = layer.inverse(y)
    np.testing.assert_allclose(back.numpy(), x.numpy(), atol=1e-10, rtol=0)
    np.testing.assert_allclose(log_det_back.numpy(), -log_det.numpy(), atol=1e-10, rtol=0)
    assert np.abs(y.numpy() - x.numpy()).max() > 0.05
    np.testing.assert_allclose(log_det.numpy(), block_log_det(lambda v: layer(v)[0], x), atol=1e-10, rtol=0)


def test_planar_u_hat_constraint_even_for_opposed_u_and_w():
    layer = randomized(PlanarFlow(), features=4)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        w = rng.standard_normal(4)
        layer.w.data, layer.u.data = w, -rng.uniform(0.5, 5.0) * w + 0.1 * rng.standard_normal(4)
        assert (layer.u.numpy() @ w) < -1                              # u alone would break invertibility
        assert float((layer.u_hat() * layer.w).sum().item()) >= -1 - 1e-12    # -1 + softplus(w . u), rounded
    # a flow that would fold space without u_hat is still invertible with it
    x = lamina.tensor(randn(6, 4, seed=3) * 3, dtype=np.float64)
    np.testing.assert_allclose(layer.inverse(layer(x)[0])[0].numpy(), x.numpy(), atol=1e-10)


def torch_planar(z, u, w, b):
    wu = w @ u
    u_hat = u + (torch.nn.functional.softplus(wu) - 1 - wu) * w / (w @ w)
    a = torch.tanh(z @ w + b)
    return z + a[:, None] * u_hat, torch.log(torch.abs(1 + (1 - a ** 2) * (u_hat @ w)))


def torch_radial(z, center, raw_alpha, raw_beta):
    alpha = torch.nn.functional.softplus(raw_alpha)
    beta = -alpha + torch.nn.functional.softplus(raw_beta)
    r = torch.linalg.vector_norm(z - center, dim=1)
    h = 1 / (alpha + r)
    d = z.shape[1]
    log_det = (d - 1) * torch.log(1 + beta * h) + torch.log(1 + beta * h - beta * r / (alpha + r) ** 2)
    return z + (beta * h)[:, None] * (z - center), log_det


def with_params(layer, names):
    def run(z, *values):
        for name, v in zip(names, values):
            swap_in(layer, name, v)
        return list(layer(z))
    return run


def test_planar_and_radial_match_torch_rewrites():
    planar = randomized(PlanarFlow(), features=3, seed=4)
    z = randn(4, 3, seed=5)
    compare_with_torch(with_params(planar, ["u", "w", "b"]), torch_planar, z, planar.u.numpy(), planar.w.numpy(),
                       planar.b.numpy(), dtype=np.float64)
    radial = randomized(RadialFlow(), features=3, seed=6)
    compare_with_torch(with_params(radial, ["center", "raw_alpha", "raw_beta"]), torch_radial, z,
                       radial.center.numpy(), radial.raw_alpha.numpy(), radial.raw_beta.numpy(), dtype=np.float64)


@pytest.mark.parametrize("kind", sorted(LAYERS))
def test_numerical_gradients(kind):
    layer = LAYERS[kind](2)
    assert check_gradients(lambda x: (layer(x)[0] ** 2).sum() + layer(x)[1].sum(), randn(3, 3, seed=7))
    if kind != "planar":                                    # the planar inverse is solved off the graph
        assert check_gradients(lambda y: (layer.inverse(y)[0] ** 2).sum() + layer.inverse(y)[1].sum(),
                               randn(3, 3, seed=8))


def test_iaf_samples_in_one_pass():
    iaf = randomized(InverseAutoregressive(hidden=(6,), activation="tanh"), seed=3)
    z = lamina.tensor(randn(4, 3, seed=9), dtype=np.float64)
    calls = []
    original = iaf._shift_and_log_scale
    iaf._shift_and_log_scale = lambda v: calls.append(1) or original(v)
    x, log_det = iaf.inverse(z)
    assert len(calls) == 1                                  # code -> data: one network pass
    mu, a = original(z)
    np.testing.assert_allclose(x.numpy(), z.numpy() * np.exp(a.numpy()) + mu.numpy(), atol=1e-12)
    np.testing.assert_allclose(log_det.numpy(), a.numpy().sum(axis=1), atol=1e-12)
    # and the MADE masks make dx_i/dz_j = 0 for j > i
    full = jacobian(lambda v: iaf.inverse(v)[0], z)[0, :, 0, :]
    assert np.all(np.triu(full, 1) == 0)
    flow = NormalizingFlow([iaf])
    flow.build((None, 3))
    assert flow.sample(3, dtype=np.float64).shape == (3, 3)


def test_batchnorm_flow():
    layer = BatchNormFlow(momentum=0.5)
    layer.build((None, 3))
    layer.double()
    x = lamina.tensor(randn(40, 3, seed=12) * [3.0, 0.5, 1.0] + [1.0, -2.0, 0.0], dtype=np.float64)
    y, log_det = layer(x)                                   # training: the batch's statistics
    np.testing.assert_allclose(y.numpy().mean(axis=0), 0.0, atol=1e-10)
    var = x.numpy().var(axis=0)
    np.testing.assert_allclose(y.numpy().std(axis=0), np.sqrt(var / (var + 1e-5)), atol=1e-12)
    np.testing.assert_allclose(log_det.numpy(), -0.5 * np.log(x.numpy().var(axis=0) + 1e-5).sum(), atol=1e-10)
    np.testing.assert_allclose(layer.inverse(y)[0].numpy(), x.numpy(), atol=1e-10)
    np.testing.assert_allclose(layer.running_mean, 0.5 * x.numpy().mean(axis=0), atol=1e-12)
    np.testing.assert_allclose(layer.running_var, 0.5 + 0.5 * x.numpy().var(axis=0), atol=1e-12)
    rng = np.random.default_rng(3)
    for _, p in layer.named_parameters():
        p.data = rng.standard_normal(p.shape) * 0.5
    layer.eval()                                            # eval: a fixed affine map
    z = lamina.tensor(randn(4, 3, seed=13), dtype=np.float64)
    y, log_det = layer(z)
    back, log_det_back = layer.inverse(y)
    np.testing.assert_allclose(back.numpy(), z.numpy(), atol=1e-10)
    np.testing.assert_allclose(log_det_back.numpy(), -log_det.numpy(), atol=1e-10)
    np.testing.assert_allclose(log_det.numpy(), block_log_det(lambda v: layer(v)[0], z), atol=1e-10)
    layer.train()
    assert check_gradients(lambda v: (layer(v)[0] ** 3).sum() + layer(v)[1].sum(), randn(5, 3, seed=14))
    with pytest.raises(ValueError, match="at least 2 samples"):
        layer(lamina.tensor(np.zeros((1, 3))))
