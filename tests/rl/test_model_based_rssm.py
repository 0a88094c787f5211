"""The recurrent state-space model: its Gaussian KL against torch.distributions, observe and
imagine (shapes, prior only, the prior's formulas), KL balancing and free nats, and a short
training run on Pendulum sequences."""

import numpy as np
import pytest
from torch.distributions import Independent, Normal, kl_divergence

import lamina
from helpers import check_gradients, compare_with_torch
from lamina import optim
from lamina.autograd import no_grad
from lamina.errors import ShapeError
from lamina.rl import Pendulum
from lamina.rl.model_based import RSSM, collect_sequences, diagonal_gaussian_kl


def test_kl_equals_torch_distributions():
    rng = np.random.default_rng(0)
    m1, m2 = rng.normal(size=(4, 6)), rng.normal(size=(4, 6))
    s1, s2 = rng.uniform(0.2, 2.0, (4, 6)), rng.uniform(0.2, 2.0, (4, 6))

    def theirs(a, sa, b, sb):
        return kl_divergence(Independent(Normal(a, sa), 1), Independent(Normal(b, sb), 1))

    compare_with_torch(diagonal_gaussian_kl, theirs, m1, s1, m2, s2, dtype=np.float64)
    check_gradients(diagonal_gaussian_kl, m1, s1, m2, s2)
    assert np.allclose(diagonal_gaussian_kl(*(lamina.tensor(a) for a in (m1, s1, m1, s1))).numpy(), 0.0)


def small_model(seed=0):
    lamina.manual_seed(seed)
    return RSSM(3, 1, deter_dim=8, stoch_dim=4, hidden=16, embed_dim=8, seed=seed)


def test_observe_and_imagine_shapes():
    model = small_model()
    obs, actions = np.zeros((2, 5, 3), np.float32), np.zeros((2, 5, 1), np.float32)
    states = model.observe(obs, actions)
    shapes = {"h": (2, 5, 8), "s": (2, 5, 4), "prior_mean": (2, 5, 4), "prior_std": (2, 5, 4),
              "post_mean": (2, 5, 4), "post_std": (2, 5, 4)}
    assert {k: v.shape for k, v in states.items()} == shapes
    assert np.all(states["post_std"].numpy() > 0.1) and np.all(states["prior_std"].numpy() > 0.1)
    start = (states["h"][:, -1], states["s"][:, -1])
    imagined = model.imagine(start, np.zeros((2, 7, 1), np.float32))
    assert {k: v.shape for k, v in imagined.items()} == {"h": (2, 7, 8), "s": (2, 7, 4), "prior_mean": (2, 7, 4),
                                                         "prior_std": (2, 7, 4)}
    assert model.decode(imagined["h"], imagined["s"]).shape == (2, 7, 3)


def test_imagine_uses_only_the_prior():
    model = small_model()
    rng = np.random.default_rng(1)
    actions = rng.normal(size=(2, 4, 1)).astype(np.float32)
    noise = rng.normal(size=(2, 4, 4))
    h0, s0 = (lamina.tensor(rng.normal(size=shape).astype(np.float32)) for shape in ((2, 8), (2, 4)))
    imagined = model.imagine((h0, s0), actions, noise=noise)
    lamina.functional.sum(imagined["s"] ** 2).backward()
    assert all(p.grad is None or not np.any(p.grad) for p in model.posterior_net.parameters())
    assert all(p.grad is None or not np.any(p.grad) for p in model.encoder.parameters())
    assert any(p.grad is not None and np.any(p.grad) for p in model.prior_net.parameters())
    # by hand: h_t = GRU(h_{t-1}, f([s_{t-1}, a_{t-1}])), s_t = mu_p(h_t) + sigma_p(h_t) eps_t
    with no_grad():
        h, s = h0, s0
        for t in range(4):
            h = model.cell(model.input_layer(lamina.functional.concat([s, lamina.tensor(actions[:, t])], axis=1)), h)
            raw = model.prior_net(h).numpy()
            std = np.log1p(np.exp(raw[:, 4:])) + 0.1
            expected = raw[:, :4] + std * noise[:, t]
            np.testing.assert_allclose(imagined["s"].numpy()[:, t], expected, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(imagined["h"].numpy()[:, t], h.numpy(), rtol=1e-5, atol=1e-6)
            s = lamina.tensor(expected.astype(np.float32))


def test_kl_balance_and_free_nats():
    model = small_model()
    obs, actions = collect_sequences(Pendulum(), batch=2, length=6, seed=0)
    noise = np.random.default_rng(0).normal(size=(2, 6, 4))
    states = model.observe(obs, actions, noise=noise)
    kl = np.mean(diagonal_gaussian_kl(states["post_mean"], states["post_std"], states["prior_mean"],
                                      states["prior_std"]).numpy())
    recon = model.decode(states["h"], states["s"]).numpy() - obs
    recon = np.mean(0.5 * np.sum(recon**2, axis=-1))
    loss, stats = model.loss(obs, actions, free_nats=0.0, kl_balance=0.8, noise=noise)
    np.testing.assert_allclose(loss.item(), recon + kl, rtol=1e-5)
    np.testing.assert_allclose(stats["kl"], kl, rtol=1e-5)
    floored, _ = model.loss(obs, actions, free_nats=kl + 5.0, noise=noise)
    np.testing.assert_allclose(floored.item(), recon + kl + 5.0, rtol=1e-5)
    # balancing: the gradient reaching the prior scales with alpha, the posterior's with 1 - alpha
    grads = {}
    for alpha in (1.0, 0.0):
        model.zero_grad()
        total, _ = model.loss(obs, actions, free_nats=0.0, kl_balance=alpha, kl_scale=1.0, noise=noise)
        total.backward()
        grads[alpha] = model.prior_net.layers[-1].weight.grad.copy()
    assert np.any(grads[1.0]) and not np.any(grads[0.0])
    with pytest.raises(ValueError, match="kl_balance"):
        model.loss(obs, actions, kl_balance=1.5)


def test_errors_name_the_shapes():
    model = small_model()
    with pytest.raises(ShapeError, match=r"RSSM.observe: observations must have shape \(2, 5, 3\)"):
        model.observe(np.zeros((2, 5, 4)), np.zeros((2, 5, 1)))
    with pytest.raises(ShapeError, match=r"RSSM.imagine: actions must have shape \(batch, T, 1\)"):
        model.imagine(model.initial_state(2), np.zeros((2, 5)))
    with pytest.raises(ValueError, match="RSSM: stoch_dim must be a positive int"):
        RSSM(3, 1, stoch_dim=0)


def test_training_reduces_reconstruction_loss():
    obs, actions = collect_sequences(Pendulum(), batch=8, length=10, seed=0)
    model = small_model(seed=0)
    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(60):
        loss, stats = model.loss(obs, actions, free_nats=1.0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(stats["reconstruction"])
    assert np.mean(losses[-5:]) < 0.3 * np.mean(losses[:5]), (losses[:5], losses[-5:])
