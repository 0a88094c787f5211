"""BCQ: the VAE loss and the whole conditional VAE against float64 PyTorch rewrites (values and
gradients to the parameters), the soft clipped double-Q target against a hand computation and
through the agent's networks, the perturbation bounded by phi, the latent clipped at sampling,
gradient checks, and errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, compare_with_torch
from lamina.errors import ShapeError
from lamina.rl import Box, Discrete
from lamina.rl.offline import BCQ, ActionVAE, Perturbation, bcq_vae_loss, soft_clipped_double_q
from lamina.rl.replay import Batch


def torch_vae_loss(reconstruction, actions, mu, log_std):
    std = log_std.exp()
    kl = -0.5 * (1 + torch.log(std**2) - mu**2 - std**2).mean()
    return ((reconstruction - actions) ** 2).mean() + 0.5 * kl


def test_vae_loss_matches_a_torch_rewrite_and_passes_a_gradient_check():
    rng = np.random.default_rng(0)
    reconstruction, actions = rng.uniform(-1, 1, (5, 2)), rng.uniform(-1, 1, (5, 2))
    mu, log_std = rng.normal(size=(5, 4)), rng.normal(size=(5, 4)) * 0.5
    compare_with_torch(bcq_vae_loss, torch_vae_loss, reconstruction, actions, mu, log_std, dtype=np.float64,
                       grad=[True, False, True, True])
    assert check_gradients(lambda r, m, s: bcq_vae_loss(r, actions, m, s), reconstruction, mu, log_std)


def test_vae_loss_by_hand():
    # one row, one action, one latent: (0.5 - 0.2)^2 + 0.5 * -0.5 (1 + 0 - 1 - 1) = 0.09 + 0.25
    loss = bcq_vae_loss(lamina.tensor(np.array([[0.5]])), np.array([[0.2]]), lamina.tensor(np.array([[1.0]])),
                        lamina.tensor(np.array([[0.0]])))
    assert loss.item() == pytest.approx(0.34)


def torch_params(net):
    return [torch.tensor(np.array(p.data), requires_grad=True) for p in net.parameters()]


def torch_mlp(params, x):
    for k in range(0, len(params), 2):
        x = x @ params[k] + params[k + 1]
        if k + 2 < len(params):
            x = torch.relu(x)
    return x


def test_conditional_vae_forward_and_loss_match_a_torch_rewrite_with_parameter_gradients():
    lamina.manual_seed(0)
    vae = ActionVAE(3, 2, hidden=(8,)).double()
    rng = np.random.default_rng(1)
    obs, actions, eps = rng.normal(size=(6, 3)), rng.uniform(-1, 1, (6, 2)), rng.normal(size=(6, 4))
    reconstruction, mu, log_std = vae(lamina.tensor(obs, dtype=np.float64), lamina.tensor(actions, dtype=np.float64),
                                      eps)
    assert reconstruction.shape == (6, 2) and mu.shape == log_std.shape == (6, 4)
    loss = bcq_vae_loss(reconstruction, actions, mu, log_std)
    loss.backward()

    encoder, decoder = torch_params(vae.encoder), torch_params(vae.decoder)
    out = torch_mlp(encoder, torch.cat([torch.tensor(obs), torch.tensor(actions)], dim=1))
    mu_t, log_std_t = out[:, :4], out[:, 4:].clamp(-4.0, 15.0)
    z = mu_t + log_std_t.exp() * torch.tensor(eps)
    reconstruction_t = torch.tanh(torch_mlp(decoder, torch.cat([torch.tensor(obs), z], dim=1)))
    loss_t = torch_vae_loss(reconstruction_t, torch.tensor(actions), mu_t, log_std_t)
    loss_t.backward()
    assert_close(loss.numpy(), loss_t.detach().numpy(), 1e-10, "VAE loss")
    for net, params in ((vae.encoder, encoder), (vae.decoder, decoder)):
        for ours, theirs in zip(net.parameters(), params):
            assert_close(ours.grad, theirs.grad.numpy(), 1e-9, "gradient")


def test_sampling_clips_the_latent_to_half():
    lamina.manual_seed(0)
    vae = ActionVAE(3, 1, hidden=(8,))
    obs = lamina.tensor(np.random.default_rng(0).normal(size=(4, 3)).astype(np.float32))
    far = vae.sample(obs, np.array([[9.0, -9.0]] * 4)).numpy()
    edge = vae.sample(obs, np.array([[0.5, -0.5]] * 4)).numpy()
    np.testing.assert_array_equal(far, edge)
    assert np.all(np.abs(far) < 1.0)


def test_soft_clipped_double_q_by_hand():
    # two states, n = 2 samples each; critic values per (state, sample)
    q1 = np.array([1.0, 4.0, -2.0, 0.0])
    q2 = np.array([3.0, 2.0, -1.0, 5.0])
    # sample-wise 0.75 min + 0.25 max: [1.5, 2.5, -1.75, 1.25]; max per state: [2.5, 1.25]
    np.testing.assert_allclose(soft_clipped_double_q([q1, q2], 2, 0.75), [2.5, 1.25])
    np.testing.assert_allclose(soft_clipped_double_q([q1, q2], 2, 1.0), [2.0, 0.0])  # clipped double Q
    with pytest.raises(ValueError, match=r"soft_clipped_double_q: needs per-critic arrays of B \* 3 values"):
        soft_clipped_double_q([q1, q2], 3)


def small_agent(**options):
    lamina.manual_seed(0)
    return BCQ(3, Box(-2.0, 2.0, (2,)), hidden=(8,), vae_hidden=(8,), n_actions=4, n_select=7, batch_size=5,
               seed=0, **options)


def random_batch(seed=1):
    rng = np.random.default_rng(seed)
    return Batch(rng.normal(size=(5, 3)), rng.uniform(-1, 1, (5, 2)), rng.normal(size=5), rng.normal(size=(5, 3)),
                 np.array([False, True, False, False, True]))


def test_targets_take_the_soft_clipped_maximum_over_the_perturbed_samples():
    agent = small_agent(gamma=0.9)
    batch = random_batch()
    noise = np.random.default_rng(3).normal(size=(20, 4))
    y = agent.targets(batch, noise)
    next_obs = lamina.tensor(np.repeat(batch.next_obs, 4, axis=0).astype(np.float32))
    with lamina.no_grad():
        actions = agent.target_actor(next_obs, agent.vae.sample(next_obs, noise))
        q = np.stack([c(next_obs, actions).numpy().reshape(5, 4) for c in agent.target_critics])
    best = (0.75 * q.min(axis=0) + 0.25 * q.max(axis=0)).max(axis=1)
    expected = batch.rewards + 0.9 * (1.0 - batch.terminated) * best
    np.testing.assert_allclose(y, expected, rtol=1e-5)


def test_perturbation_stays_within_phi_and_the_action_bounds():
    lamina.manual_seed(0)
    xi = Perturbation(3, 2, hidden=(8,), phi=0.05)
    for p in xi.parameters():
        p.data[...] *= 50.0
    rng = np.random.default_rng(0)
    obs, actions = lamina.tensor(rng.normal(size=(200, 3)) * 5), lamina.tensor(rng.uniform(-1, 1, (200, 2)))
    offset = xi.offset(obs, actions).numpy()
    assert np.all(np.abs(offset) <= 0.05 + 1e-7) and np.abs(offset).max() > 0.049
    perturbed = xi(obs, actions).numpy()
    assert np.all(np.abs(perturbed) <= 1.0)
    np.testing.assert_allclose(perturbed, np.clip(actions.numpy() + offset, -1, 1), rtol=1e-6)


def test_perturbation_passes_a_gradient_check():
    lamina.backend.set_default_dtype(np.float64)
    try:
        lamina.manual_seed(0)
        xi = Perturbation(3, 2, hidden=(6,), phi=0.3)
        rng = np.random.default_rng(2)
        assert check_gradients(lambda s, a: xi(s, a), rng.normal(size=(4, 3)), rng.uniform(-0.5, 0.5, (4, 2)))
    finally:
        lamina.backend.set_default_dtype(np.float32)


def test_updates_lower_the_vae_loss_and_actions_stay_within_the_bounds():
    agent = small_agent()
    batch = random_batch()
    history = [agent.update(batch) for _ in range(30)]
    assert history[-1]["vae_loss"] < history[0]["vae_loss"]
    assert all(np.isfinite(list(stats.values())).all() for stats in history)
    action = agent.predict(batch.obs[0])
    assert action.shape == (2,) and np.all(np.abs(action) <= 2.0)


def test_bcq_refuses_discrete_actions_and_bad_arguments():
    with pytest.raises(ValueError, match="BCQ: needs a Box action space"):
        BCQ(4, Discrete(2))
    with pytest.raises(ValueError, match=r"BCQ: lam must be in \[0.0, 1.0\], got 1.5"):
        BCQ(4, Box(-1.0, 1.0, (1,)), lam=1.5)
    with pytest.raises(ShapeError, match="bcq_vae_loss: reconstruction"):
        bcq_vae_loss(lamina.tensor(np.zeros((2, 1))), np.zeros((2, 2)), lamina.tensor(np.zeros((2, 2))),
                     lamina.tensor(np.zeros((2, 2))))
