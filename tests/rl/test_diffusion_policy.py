"""Diffusion Policy: the demonstration windows against a hand-built episode (padding at the
edges), the [-1, 1] normaliser's round trip, the temporal U-Net and the training loss against a
float64 torch rewrite of the published formulas (outputs, input and parameter gradients, on
fixed noise and steps), a float64 gradient check of the U-Net, the sampler's shapes and DDIM's
determinism for a seed, saving and loading, and the errors for bad observation histories."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, randn
from helpers import perturb_parameters as _perturb
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.models.diffusion_nets import timestep_embedding
from lamina.rl.offline import (
    ConditionalResidualBlock1D,
    DiffusionPolicy,
    OfflineDataset,
    TemporalUNet,
    demonstration_windows,
)


@pytest.fixture
def float64():
    previous = lamina.backend.get_default_dtype()
    lamina.backend.set_default_dtype(np.float64)
    yield
    lamina.backend.set_default_dtype(previous)


def _episodes(lengths, obs_dim=2, action_dim=1):
    """Observations 10 * row + column and actions -row, so each value names its row."""
    n = sum(lengths)
    rows = np.arange(n, dtype=np.float32)
    ends = np.cumsum(lengths) - 1
    terminals = np.zeros(n, bool)
    terminals[ends] = True
    obs = 10 * rows[:, None] + np.arange(obs_dim)
    return OfflineDataset(obs, -np.repeat(rows[:, None], action_dim, 1), np.zeros(n), obs, terminals,
                          np.zeros(n, bool))


# -- windows and normalisation ----------------------------------------------------------------
def test_windows_pad_with_the_first_observation_and_the_last_action():
    obs, actions = demonstration_windows(_episodes([3, 2]), horizon=3, n_obs_steps=2)
    assert obs.shape == (5, 2, 2) and actions.shape == (5, 3, 1)
    obs_rows = obs[:, :, 0] / 10                      # the row each observation came from
    np.testing.assert_array_equal(obs_rows, [[0, 0], [0, 1], [1, 2], [3, 3], [3, 4]])
    np.testing.assert_array_equal(obs[:, :, 1] - obs[:, :, 0], np.ones((5, 2)))
    np.testing.assert_array_equal(-actions[:, :, 0], [[0, 1, 2], [1, 2, 2], [2, 2, 2], [3, 4, 4], [4, 4, 4]])


def test_windows_of_one_step_are_the_rows():
    data = _episodes([4], obs_dim=3, action_dim=2)
    obs, actions = demonstration_windows(data, horizon=1, n_obs_steps=1)
    np.testing.assert_array_equal(obs[:, 0], data.observations)
    np.testing.assert_array_equal(actions[:, 0], data.actions)


def test_windows_refuse_discrete_actions_and_bad_sizes():
    data = OfflineDataset(np.zeros((2, 1)), np.array([0, 1]), np.zeros(2), np.zeros((2, 1)), [False, True],
                          [False, False])
    with pytest.raises(ValueError, match="continuous actions"):
        demonstration_windows(data, 2, 1)
    with pytest.raises(ValueError, match="horizon must be a positive int, got 0"):
        demonstration_windows(_episodes([2]), 0, 1)


def test_normaliser_maps_the_ranges_to_minus_one_one_and_back():
    policy = DiffusionPolicy(3, 2, horizon=4, down_dims=(4,), groups=2, step_embed_dim=4)
    obs = np.stack([np.linspace(-3, 5, 9), np.full(9, 2.5), np.linspace(0, 1, 9) ** 2], axis=1)
    actions = randn(9, 2, seed=1)
    policy.fit_normalizer(obs, actions)
    scaled = policy.normalize(obs, "obs")
    np.testing.assert_allclose(scaled.min(axis=0), [-1, 0, -1], atol=1e-12)   # a constant column is only shifted
    np.testing.assert_allclose(scaled.max(axis=0), [1, 0, 1], atol=1e-12)
    np.testing.assert_allclose(scaled[:, 0], np.linspace(-1, 1, 9), atol=1e-12)
    np.testing.assert_allclose(policy.unnormalize(scaled, "obs"), obs, rtol=1e-12, atol=1e-12)
    a = policy.normalize(actions)
    assert np.allclose(a.min(axis=0), -1) and np.allclose(a.max(axis=0), 1)
    np.testing.assert_allclose(policy.unnormalize(a), actions, rtol=1e-12, atol=1e-12)
    with pytest.raises(ShapeError, match=r"fit_normalizer: got obss of shape \(9, 2\)"):
        policy.fit_normalizer(obs[:, :2], actions)


# -- a float64 torch rewrite of the denoiser (Chi et al.'s CNN variant) -----------------------
def _mish(x):
    return x * torch.tanh(torch.nn.functional.softplus(x))


def _conv(x, p, name, **kw):
    """A lamina Conv1D (weight (K, f, c)) on (N, L, C)."""
    w = p[f"{name}.weight"].permute(0, 2, 1)
    return torch.nn.functional.conv1d(x.transpose(1, 2), w, p[f"{name}.bias"], **kw).transpose(1, 2)


def _block(x, p, name, groups, f):
    h = _conv(x, p, f"{name}.conv", padding=f // 2)
    c = h.shape[-1]
    h = torch.nn.functional.group_norm(h.transpose(1, 2), np.gcd(groups, c), p[f"{name}.norm.weight"],
                                       p[f"{name}.norm.bias"], eps=1e-5).transpose(1, 2)
    return _mish(h)


def _residual(x, g, p, name, groups, f):
    """h = gamma * B_1(x) + beta, out = B_2(h) + skip(x)."""
    film = _mish(g) @ p[f"{name}.film.weight"] + p[f"{name}.film.bias"]
    gamma, beta = film.chunk(2, dim=-1)
    h = gamma[:, None] * _block(x, p, f"{name}.block1", groups, f) + beta[:, None]
    skip = _conv(x, p, f"{name}.skip") if f"{name}.skip.weight" in p else x
    return _block(h, p, f"{name}.block2", groups, f) + skip


def torch_temporal_unet(x, t, cond, p, levels, groups, f, step_dim):
    s = torch.tensor(timestep_embedding(np.asarray(t), step_dim, np.float64))
    e = _mish(s @ p["step_in.weight"] + p["step_in.bias"]) @ p["step_out.weight"] + p["step_out.bias"]
    g = torch.cat([e, cond], dim=-1)
    h, skips = x, []
    for level in range(levels):
        h = _residual(_residual(h, g, p, f"down_blocks.{2 * level}", groups, f), g, p,
                      f"down_blocks.{2 * level + 1}", groups, f)
        skips.append(h)
        if level < levels - 1:
            h = _conv(h, p, f"downsamplers.{level}", stride=2, padding=1)
    h = _residual(_residual(h, g, p, "middle.0", groups, f), g, p, "middle.1", groups, f)
    for k in range(levels - 1):
        h = torch.cat([h, skips[levels - 1 - k]], dim=-1)
        h = _residual(_residual(h, g, p, f"up_blocks.{2 * k}", groups, f), g, p, f"up_blocks.{2 * k + 1}", groups, f)
        w = p[f"upsamplers.{k}.weight"].permute(0, 2, 1)
        h = torch.nn.functional.conv_transpose1d(h.transpose(1, 2), w, p[f"upsamplers.{k}.bias"], stride=2,
                                                 padding=1).transpose(1, 2)
    h = _block(h, p, "head_block", groups, f)
    return _conv(h, p, "head")


def _torch_params(module):
    return {k: torch.tensor(np.asarray(v), requires_grad=True) for k, v in module.state_dict().items()}


def test_temporal_unet_matches_torch_with_gradients(float64):
    net = TemporalUNet(2, 3, down_dims=(4, 6), kernel_size=3, groups=2, step_embed_dim=4)
    _perturb(net)
    x, cond, t = randn(2, 8, 2, seed=1), randn(2, 3, seed=2), np.array([3, 17])
    xl, cl = lamina.tensor(x, requires_grad=True), lamina.tensor(cond, requires_grad=True)
    out = net(xl, t, cl)
    weights = randn(*out.shape, seed=4)
    (out * Tensor(weights)).sum().backward()
    p = _torch_params(net)
    xt, ct = torch.tensor(x, requires_grad=True), torch.tensor(cond, requires_grad=True)
    expected = torch_temporal_unet(xt, t, ct, p, 2, 2, 3, 4)
    (expected * torch.tensor(weights)).sum().backward()
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(xl.grad, xt.grad.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(cl.grad, ct.grad.numpy(), rtol=1e-9, atol=1e-12)
    params = dict(net.named_parameters())
    assert sorted(params) == sorted(p)
    for name, param in params.items():
        np.testing.assert_allclose(param.grad, p[name].grad.numpy(), rtol=1e-8, atol=1e-11, err_msg=name)
    assert sum(v.numel() for v in p.values()) == sum(q.size for q in net.parameters())


def test_temporal_unet_gradients_float64(float64):
    net = TemporalUNet(1, 2, down_dims=(2, 4), kernel_size=3, groups=2, step_embed_dim=2)
    _perturb(net)
    t = np.array([0, 9])
    assert check_gradients(lambda x, c: net(x, t, c), randn(2, 4, 1, seed=5), randn(2, 2, seed=6))
    block = ConditionalResidualBlock1D(2, 3, 2, kernel_size=3, groups=1)
    _perturb(block)
    assert check_gradients(block, randn(2, 5, 2, seed=7), randn(2, 2, seed=8))


def test_loss_and_its_gradients_match_torch_on_fixed_noise(float64):
    policy = DiffusionPolicy(3, 2, horizon=4, n_obs_steps=2, n_action_steps=2, down_dims=(4, 4), kernel_size=3,
                             groups=2, step_embed_dim=4, num_timesteps=20, schedule="cosine")
    _perturb(policy)
    obs, actions = randn(3, 2, 3, seed=1, scale=2.0), randn(3, 4, 2, seed=2)
    policy.fit_normalizer(np.concatenate([obs.reshape(-1, 3), randn(4, 3, seed=3)]), actions.reshape(-1, 2))
    t, noise = np.array([0, 7, 19]), randn(3, 4, 2, seed=4)
    loss = policy.loss(obs, actions, t=t, noise=noise)
    loss.backward()

    low_o, high_o = obs.reshape(-1, 3).min(0), obs.reshape(-1, 3).max(0)
    low_o = np.minimum(low_o, randn(4, 3, seed=3).min(0))
    high_o = np.maximum(high_o, randn(4, 3, seed=3).max(0))
    low_a, high_a = actions.reshape(-1, 2).min(0), actions.reshape(-1, 2).max(0)
    obs_n = 2 * (obs - low_o) / (high_o - low_o) - 1
    act_n = 2 * (actions - low_a) / (high_a - low_a) - 1
    abar = policy.schedule.alpha_bars[t][:, None, None]
    noisy = torch.tensor(np.sqrt(abar) * act_n + np.sqrt(1 - abar) * noise)
    p = _torch_params(policy.net)
    eps = torch_temporal_unet(noisy, t, torch.tensor(obs_n.reshape(3, 6)), p, 2, 2, 3, 4)
    expected = ((eps - torch.tensor(noise)) ** 2).mean()
    expected.backward()
    np.testing.assert_allclose(loss.item(), expected.item(), rtol=1e-10)
    for name, param in policy.net.named_parameters():
        np.testing.assert_allclose(param.grad, p[name].grad.numpy(), rtol=1e-8, atol=1e-12, err_msg=name)


def test_x0_prediction_regresses_the_clean_actions(float64):
    policy = DiffusionPolicy(2, 1, horizon=2, n_obs_steps=1, n_action_steps=1, down_dims=(2,), kernel_size=3, groups=1,
                             step_embed_dim=2, num_timesteps=10, prediction="x0")
    obs, actions, t, noise = randn(2, 1, 2, seed=1), randn(2, 2, 1, seed=2), np.array([1, 5]), randn(2, 2, 1, seed=3)
    policy.fit_normalizer(obs.reshape(-1, 2), actions.reshape(-1, 1))
    x0 = policy.normalize(actions)
    abar = policy.schedule.alpha_bars[t][:, None, None]
    out = policy(np.sqrt(abar) * x0 + np.sqrt(1 - abar) * noise, t, policy.normalize(obs, "obs")).numpy()
    np.testing.assert_allclose(policy.loss(obs, actions, t=t, noise=noise).item(), np.mean((out - x0) ** 2),
                               rtol=1e-12)


# -- sampling ---------------------------------------------------------------------------------
def _small_policy(**kw):
    options = dict(horizon=8, n_obs_steps=2, n_action_steps=3, down_dims=(4, 8), kernel_size=3, groups=2,
                   step_embed_dim=4, num_timesteps=20)
    policy = DiffusionPolicy(3, 2, **{**options, **kw})
    policy.fit_normalizer(randn(10, 3, seed=1), 2 + 3 * randn(10, 2, seed=2))
    return policy


def test_predict_action_shapes_range_and_ddim_determinism():
    policy = _small_policy()
    history = randn(5, 2, 3, seed=3)
    plans = policy.predict_action(history, steps=5, method="ddim", seed=11)
    assert plans.shape == (5, 8, 2) and plans.dtype == np.float32
    low, high = policy.unnormalize(-np.ones(2)), policy.unnormalize(np.ones(2))
    assert np.all(plans >= low - 1e-5) and np.all(plans <= high + 1e-5)        # x_0 clipped to the data's range
    np.testing.assert_array_equal(policy.predict_action(history, steps=5, method="ddim", seed=11), plans)
    assert not np.array_equal(policy.predict_action(history, steps=5, method="ddim", seed=12), plans)
    one = policy.predict_action(history[0], steps=5, seed=11)
    assert one.shape == (8, 2)
    ddpm = policy.predict_action(history, method="ddpm", seed=11)
    assert ddpm.shape == (5, 8, 2) and np.all(np.isfinite(ddpm))
    # DDIM with eta = 1 on the full schedule is the DDPM ancestral sampler: the same draws give the same plans
    # up to float32 rounding
    np.testing.assert_allclose(policy.predict_action(history, method="ddim", eta=1.0, seed=11), ddpm, rtol=1e-4,
                               atol=1e-4)


def test_bad_observation_histories_and_settings_are_named():
    policy = _small_policy()
    with pytest.raises(ShapeError, match=r"predict_action: got an observation history of shape \(5, 3, 3\).*"
                                         r"n_obs_steps=2, obs_dim=3"):
        policy.predict_action(randn(5, 3, 3))
    with pytest.raises(ShapeError, match=r"got an observation history of shape \(1, 2, 4\)"):
        policy.predict_action(randn(2, 4))
    with pytest.raises(ShapeError, match=r"loss: got an observation history of shape \(4, 1, 3\)"):
        policy.loss(randn(4, 1, 3), randn(4, 8, 2))
    with pytest.raises(ShapeError, match=r"loss: got actions of shape \(4, 6, 2\)"):
        policy.loss(randn(4, 2, 3), randn(4, 6, 2))
    with pytest.raises(ValueError, match="method must be one of"):
        policy.predict_action(randn(2, 3), method="euler")
    with pytest.raises(ValueError, match="steps=30 exceeds the schedule's 20"):
        policy.predict_action(randn(2, 3), steps=30)
    with pytest.raises(ValueError, match="horizon=6 must be a multiple of 2"):
        DiffusionPolicy(3, 2, horizon=6, down_dims=(4, 8, 8), n_action_steps=2)
    with pytest.raises(ValueError, match="n_action_steps=9 exceeds the horizon 8"):
        DiffusionPolicy(3, 2, horizon=8, n_action_steps=9)
    with pytest.raises(ShapeError, match=r"TemporalUNet.*got conditions of shape \(2, 5\)"):
        TemporalUNet(2, 4, down_dims=(4,), groups=2)(randn(2, 4, 2), np.zeros(2, np.int64), randn(2, 5))


def test_save_and_load_keep_weights_normaliser_and_plans(tmp_path):
    policy = _small_policy()
    _perturb(policy, scale=0.05)
    history = randn(3, 2, 3, seed=5)
    expected = policy.predict_action(history, steps=4, seed=2)
    lamina.save(policy, tmp_path / "policy.safetensors")
    twin = lamina.load(tmp_path / "policy.safetensors")
    assert type(twin) is DiffusionPolicy and twin.get_config() == policy.get_config()
    np.testing.assert_array_equal(twin.unnormalize(np.ones(2)), policy.unnormalize(np.ones(2)))
    np.testing.assert_array_equal(twin.predict_action(history, steps=4, seed=2), expected)


# -- the toy task ------------------------------------------------------------------------------
def test_the_detour_expert_succeeds_both_ways_and_its_mean_first_action_hits_the_disc():
    from lamina.rl.offline import ObstacleDetour, detour_demonstrations, detour_expert, detour_side

    data = detour_demonstrations(ObstacleDetour(), 4, seed=0)
    assert np.all(data.episode_returns() == 1.0) and len(data.episode_bounds()) == 4
    sides = [detour_side(data.observations[s:e]) for s, e in data.episode_bounds()]
    assert sides == [-1, 1, -1, 1]
    env = ObstacleDetour()
    start, _ = env.reset(seed=0)
    mean = (detour_expert(-1)(start) + detour_expert(1)(start)) / 2
    _, reward, terminated, _, info = env.step(mean)
    assert terminated and info["collided"] and reward == -1.0
    with pytest.raises(ValueError, match="side must be -1 \\(left\\) or 1 \\(right\\), got 0"):
        detour_expert(0)


def test_training_refuses_a_dataset_of_other_sizes():
    from lamina.rl.offline import ObstacleDetour, detour_demonstrations, train_diffusion_policy

    with pytest.raises(ValueError, match="train_diffusion_policy: the policy takes 3 observations"):
        train_diffusion_policy(_small_policy(), detour_demonstrations(ObstacleDetour(), 2, seed=0), steps=1)
