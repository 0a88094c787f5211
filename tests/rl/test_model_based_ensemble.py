"""The probabilistic ensemble: its soft-clamped Gaussian NLL against a float64 torch rewrite
(values and gradients), per-member batches, prediction in raw units, trajectory sampling, and a
fit on Pendulum transitions that predicts held-out steps accurately with calibrated variances."""

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch
from lamina.errors import ShapeError
from lamina.rl import Pendulum
from lamina.rl.model_based import (
    ProbabilisticEnsemble,
    TrajectorySampling,
    gaussian_nll,
    run_episode,
    soft_clamp_logvar,
)


def torch_soft_clamp(raw, max_logvar, min_logvar):
    logvar = max_logvar - torch.nn.functional.softplus(max_logvar - raw)
    return min_logvar + torch.nn.functional.softplus(logvar - min_logvar)


def torch_nll(mean, logvar, target):
    return (0.5 * (logvar + (mean - target) ** 2 * torch.exp(-logvar))).mean(dim=(1, 2)).sum()


def test_soft_clamped_nll_matches_torch_in_float64():
    rng = np.random.default_rng(0)
    mean, target = rng.normal(size=(3, 5, 4)), rng.normal(size=(3, 5, 4))
    raw = rng.normal(0.0, 6.0, size=(3, 5, 4))           # spans both bounds
    max_logvar, min_logvar = rng.normal(0.5, 0.2, (1, 1, 4)), rng.normal(-5.0, 0.5, (1, 1, 4))

    def ours(m, r, y, hi, lo):
        return gaussian_nll(m, soft_clamp_logvar(r, hi, lo), y)

    def theirs(m, r, y, hi, lo):
        return torch_nll(m, torch_soft_clamp(r, hi, lo), y)

    compare_with_torch(ours, theirs, mean, raw, target, max_logvar, min_logvar, dtype=np.float64)
    check_gradients(ours, mean, raw, target, max_logvar, min_logvar)
    clamped = soft_clamp_logvar(lamina.tensor(raw), lamina.tensor(max_logvar), lamina.tensor(min_logvar)).numpy()
    # below max_logvar up to softplus(min - max) (the second clamp adds that much at most), above min_logvar
    assert np.all(clamped <= max_logvar + np.log1p(np.exp(min_logvar - max_logvar))) and np.all(clamped > min_logvar)
    assert clamped.max() > max_logvar.min() - 0.5 and clamped.min() < min_logvar.max() + 0.5


def torch_ensemble_loss(ensemble, inputs, targets):
    """The ensemble's loss rewritten in torch from its weights; returns the loss and the parameters."""
    params = {name: torch.tensor(p.numpy().astype(np.float64), requires_grad=True)
              for name, p in ensemble.named_parameters()}
    x = torch.tensor(inputs, dtype=torch.float64)
    for i in range(ensemble.n_layers):
        x = x @ params[f"weight{i}"] + params[f"bias{i}"]
        if i < ensemble.n_layers - 1:
            x = torch.nn.functional.silu(x)
    out = ensemble.out_dim
    logvar = torch_soft_clamp(x[..., out:], params["max_logvar"], params["min_logvar"])
    loss = torch_nll(x[..., :out], logvar, torch.tensor(targets, dtype=torch.float64))
    loss = loss + 0.01 * (params["max_logvar"].sum() - params["min_logvar"].sum())
    return loss, params


def test_ensemble_loss_and_gradients_match_torch():
    ensemble = ProbabilisticEnsemble(3, 2, hidden=(8, 8), ensemble_size=4, seed=0)
    rng = np.random.default_rng(1)
    inputs, targets = rng.normal(size=(4, 6, 5)), rng.normal(size=(4, 6, 4))
    loss = ensemble.loss(lamina.tensor(inputs.astype(np.float32)), lamina.tensor(targets.astype(np.float32)))
    loss.backward()
    expected, params = torch_ensemble_loss(ensemble, inputs, targets)
    expected.backward()
    np.testing.assert_allclose(loss.item(), expected.item(), rtol=1e-5)
    for name, p in ensemble.named_parameters():
        np.testing.assert_allclose(p.grad, params[name].grad.numpy(), rtol=1e-4, atol=1e-6, err_msg=name)


def test_each_member_sees_only_its_own_batch():
    ensemble = ProbabilisticEnsemble(2, 1, hidden=(6,), ensemble_size=3, seed=0)
    rng = np.random.default_rng(2)
    inputs, targets = rng.normal(size=(3, 4, 3)).astype(np.float32), rng.normal(size=(3, 4, 3)).astype(np.float32)

    def grads(x):
        ensemble.zero_grad()
        ensemble.loss(lamina.tensor(x), lamina.tensor(targets)).backward()
        return ensemble.weight0.grad.copy()

    before = grads(inputs)
    changed = inputs.copy()
    changed[1] += 1.0                                     # only member 1's batch changes
    after = grads(changed)
    np.testing.assert_array_equal(after[[0, 2]], before[[0, 2]])
    assert not np.allclose(after[1], before[1])
    # member e's prediction is its own MLP on its own rows
    mean, _ = ensemble(lamina.tensor(inputs))
    for e in range(3):
        hidden = inputs[e] @ ensemble.weight0.numpy()[e] + ensemble.bias0.numpy()[e]
        hidden = hidden / (1 + np.exp(-hidden))
        out = hidden @ ensemble.weight1.numpy()[e] + ensemble.bias1.numpy()[e]
        np.testing.assert_allclose(mean.numpy()[e], out[:, :3], rtol=1e-5, atol=1e-6)


def test_predict_is_the_forward_pass_in_raw_units():
    ensemble = ProbabilisticEnsemble(2, 1, hidden=(6,), ensemble_size=3, seed=0)
    ensemble.input_mean, ensemble.input_std = np.array([0.5, -1.0, 0.2]), np.array([2.0, 0.5, 1.5])
    ensemble.target_mean, ensemble.target_std = np.array([0.1, 0.2, -3.0]), np.array([0.3, 0.4, 2.0])
    rng = np.random.default_rng(3)
    obs, actions = rng.normal(size=(5, 2)), rng.normal(size=(5, 1))
    mean, var = ensemble.predict(obs, actions)
    x = (np.concatenate([obs, actions], 1) - ensemble.input_mean) / ensemble.input_std
    net_mean, net_logvar = ensemble(lamina.tensor(np.broadcast_to(x, (3, 5, 3)).astype(np.float32)))
    np.testing.assert_allclose(mean, net_mean.numpy() * ensemble.target_std + ensemble.target_mean, rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_allclose(var, np.exp(net_logvar.numpy()) * ensemble.target_std**2, rtol=1e-5)
    members = np.array([2, 0, 1, 1, 0])
    picked_mean, picked_var = ensemble.predict(obs, actions, members)
    np.testing.assert_allclose(picked_mean, mean[members, np.arange(5)])
    np.testing.assert_allclose(picked_var, var[members, np.arange(5)])
    next_obs, rewards = ensemble.sample(obs, actions, members, deterministic=True)
    np.testing.assert_allclose(next_obs, obs + picked_mean[:, :2])
    np.testing.assert_allclose(rewards, picked_mean[:, 2])


def test_trajectory_sampling_member_choice():
    ensemble = ProbabilisticEnsemble(2, 1, hidden=(4,), ensemble_size=4, seed=0)
    ensemble.elites = np.array([3, 1])
    fixed = TrajectorySampling(ensemble, "tsinf", seed=0)
    np.testing.assert_array_equal(fixed.members(6), [3, 1, 3, 1, 3, 1])
    fresh = TrajectorySampling(ensemble, "ts1", seed=0)
    draws = np.stack([fresh.members(50) for _ in range(3)])
    assert set(np.unique(draws)) == {1, 3} and not np.array_equal(draws[0], draws[1])
    known = TrajectorySampling(ensemble, "ts1", reward_fn=lambda s, a, s2: -np.sum(s2**2, axis=1), seed=0)
    next_states, rewards = known(np.ones((3, 2)), np.zeros((3, 1)))
    np.testing.assert_allclose(rewards, -np.sum(next_states**2, axis=1))
    with pytest.raises(ValueError, match="'ts1' or 'tsinf'"):
        TrajectorySampling(ensemble, "ts2")


def test_errors_name_the_shapes():
    ensemble = ProbabilisticEnsemble(3, 1, hidden=(4,), ensemble_size=2)
    with pytest.raises(ShapeError, match=r"ProbabilisticEnsemble: expected inputs of shape \(2, batch, 4\)"):
        ensemble(lamina.tensor(np.zeros((3, 5, 4), dtype=np.float32)))
    with pytest.raises(ShapeError, match=r"expected obs \(n, 3\) and actions \(n, 1\)"):
        ensemble.predict(np.zeros((5, 2)), np.zeros((5, 1)))
    with pytest.raises(ValueError, match="num_elites"):
        ProbabilisticEnsemble(3, 1, ensemble_size=2, num_elites=3)
    with pytest.raises(ShapeError, match="next_obs"):
        ensemble.fit(np.zeros((10, 3)), np.zeros((10, 1)), np.zeros((9, 3)), np.zeros(10))


def test_fit_on_pendulum_predicts_held_out_steps_with_calibrated_variance():
    env, rng = Pendulum(), np.random.default_rng(0)
    runs = [run_episode(env, lambda obs: rng.uniform(-2, 2, 1), 100, seed=seed)[1] for seed in range(5)]
    train, test = runs[:4], runs[4]
    joined = {k: np.concatenate([run[k] for run in train]) for k in train[0]}
    ensemble = ProbabilisticEnsemble(3, 1, hidden=(32, 32), ensemble_size=3, seed=0)
    history = ensemble.fit(joined["obs"], joined["actions"], joined["next_obs"], joined["rewards"], epochs=60,
                           lr=2e-3)
    assert history["loss"][-1] < history["loss"][0] - 3.0
    assert sorted(ensemble.elites) == [0, 1, 2]
    mean, var = ensemble.predict(test["obs"], test["actions"])
    target = np.concatenate([test["next_obs"] - test["obs"], test["rewards"][:, None]], axis=1)
    error = mean.mean(axis=0) - target
    # next states: the error is far below that of predicting "no change" (the spread of one step's change)
    rmse = np.sqrt(np.mean(error**2, axis=0))
    assert np.sqrt(np.sum(rmse[:3] ** 2)) < 0.1 * np.sqrt(np.mean(np.sum(target[:, :3] ** 2, axis=1))), rmse
    assert np.all(rmse[:3] < 0.02), rmse
    assert rmse[3] < 0.5 * target[:, 3].std()              # the reward, a harder function of (cos, sin)
    # calibration: the z-scores of every member's prediction have a second moment near 1
    z = (mean - target) / np.sqrt(var)
    z2 = np.mean(z**2)
    assert 0.2 < z2 < 5.0, z2
    assert np.mean(np.abs(z) < 3.0) > 0.95                  # not over-confident
