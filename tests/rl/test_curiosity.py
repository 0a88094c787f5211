"""Curiosity modules: the running normalisers against NumPy on the same stream, RND's reward on
novel and on trained states, ICM's losses against a float64 torch rewrite of the paper's
formulas (values and gradients), gradient checks, the inverse model learning a deterministic
environment's actions, and the errors for bad input."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import optim
from lamina.errors import ShapeError
from lamina.rl import Chain, ICMModule, RewardNormalizer, RNDModule, RunningMeanStd, icm_losses


@pytest.fixture
def float64():
    previous = lamina.backend.get_default_dtype()
    lamina.backend.set_default_dtype(np.float64)
    yield
    lamina.backend.set_default_dtype(previous)


def test_running_mean_std_matches_numpy_on_the_same_stream():
    rng = np.random.default_rng(0)
    stats = RunningMeanStd((3,), epsilon=0.0)
    seen = []
    for size in (1, 7, 30, 2, 64):
        batch = rng.normal([1.0, -2.0, 5.0], [0.5, 3.0, 0.1], (size, 3))
        seen.append(batch)
        stats.update(batch)
        stream = np.concatenate(seen)
        np.testing.assert_allclose(stats.mean, stream.mean(axis=0), rtol=1e-12)
        np.testing.assert_allclose(stats.var, stream.var(axis=0), rtol=1e-10)
        assert stats.count == len(stream)
    x = rng.normal(0, 10, (4, 3))
    expected = np.clip((x - stream.mean(0)) / np.sqrt(stream.var(0) + 1e-8), -5, 5)
    np.testing.assert_allclose(stats.normalize(x), expected, rtol=1e-12)
    assert np.abs(stats.normalize(x)).max() <= 5.0 and (np.abs(stats.normalize(x, clip=None)) > 5).any()


def test_reward_normalizer_divides_by_the_std_of_discounted_returns():
    rng = np.random.default_rng(1)
    norm = RewardNormalizer(num_envs=2, gamma=0.9)
    chunks = [rng.exponential(1.0, (5, 2)), rng.exponential(3.0, (4, 2))]
    returns, discounted = np.zeros(2), []
    for chunk in chunks:
        out = norm(chunk)
        for row in chunk:                       # R_t = gamma R_{t-1} + r_t, never reset
            returns = 0.9 * returns + row
            discounted.append(returns.copy())
        std = np.concatenate(discounted).std()  # with the 1e-4 prior count of the running stats
        np.testing.assert_allclose(out, chunk / std, rtol=1e-4)
    with pytest.raises(ShapeError, match=r"RewardNormalizer: expected rewards of shape \(T, 2\), got \(5, 3\)"):
        norm(np.ones((5, 3)))


def test_rnd_rewards_novel_states_above_trained_ones():
    lamina.manual_seed(0)
    rnd = RNDModule(8, feature_dim=16, hidden=(32,))
    opt = optim.Adam(rnd.predictor_parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    trained = rng.normal(0, 1, (64, 8)).astype(np.float32) + np.array([2, 0, 0, 0, 0, 0, 0, 0], np.float32)
    novel = rng.normal(0, 1, (64, 8)).astype(np.float32) - np.array([2, 0, 0, 0, 0, 0, 0, 0], np.float32)
    target_before = {k: v.copy() for k, v in rnd.target.state_dict().items()}
    before = rnd(trained).numpy().mean()
    for _ in range(300):
        loss = rnd(trained).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    after_trained, after_novel = rnd(trained).numpy().mean(), rnd(novel).numpy().mean()
    # measured (seed 0): 0.97 -> 0.006 on the trained states, 0.53 on the novel ones
    assert after_trained < 0.05 * before
    assert after_novel > 10 * after_trained
    for name, value in rnd.target.state_dict().items():       # the target network stays fixed
        np.testing.assert_array_equal(value, target_before[name])


def _torch_mlp(params, prefix, x):
    layers = sorted({k.split(".")[1] for k in params if k.startswith(prefix + ".")}, key=lambda s: (len(s), s))
    for i, layer in enumerate(layers):
        x = x @ params[f"{prefix}.{layer}.weight"] + params[f"{prefix}.{layer}.bias"]
        if i < len(layers) - 1:
            x = torch.relu(x)
    return x


def _torch_icm(params, obs, next_obs, actions, n_actions, beta, eta):
    """The paper's formulas, written out in float64 torch."""
    phi, phi_next = _torch_mlp(params, "encoder", obs), _torch_mlp(params, "encoder", next_obs)
    logits = _torch_mlp(params, "inverse_model", torch.cat([phi, phi_next], dim=-1))
    inverse = torch.nn.functional.cross_entropy(logits, torch.tensor(actions))
    one_hot = torch.nn.functional.one_hot(torch.tensor(actions), n_actions).double()
    phi_hat = _torch_mlp(params, "forward_model", torch.cat([phi, one_hot], dim=-1))
    forward = 0.5 * ((phi_hat - phi_next.detach()) ** 2).sum(-1).mean()
    reward = eta / 2 * ((phi_hat - phi_next) ** 2).sum(-1)
    return (1 - beta) * inverse + beta * forward, inverse, forward, reward


def test_icm_losses_and_gradients_match_a_torch_rewrite(float64):
    lamina.manual_seed(1)
    icm = ICMModule(5, 3, feature_dim=4, hidden=(6,), beta=0.3, eta=0.7)
    obs, next_obs = randn(7, 5, seed=1), randn(7, 5, seed=2)
    actions = np.array([0, 1, 2, 2, 1, 0, 1])
    ours_obs, ours_next = lamina.tensor(obs, requires_grad=True), lamina.tensor(next_obs, requires_grad=True)
    logits, phi_hat, phi_next = icm(ours_obs, ours_next, actions)
    loss, parts = icm_losses(logits, phi_hat, phi_next, actions, icm.beta)
    loss.backward()

    params = {k: torch.tensor(np.array(v), requires_grad=True) for k, v in icm.state_dict().items()}
    t_obs, t_next = torch.tensor(obs, requires_grad=True), torch.tensor(next_obs, requires_grad=True)
    t_loss, t_inverse, t_forward, t_reward = _torch_icm(params, t_obs, t_next, actions, 3, 0.3, 0.7)
    t_loss.backward()
    assert_close(loss.numpy(), t_loss.detach().numpy(), 1e-12, "loss")
    assert_close(np.array(parts["inverse_loss"]), t_inverse.detach().numpy(), 1e-12, "inverse loss")
    assert_close(np.array(parts["forward_loss"]), t_forward.detach().numpy(), 1e-12, "forward loss")
    assert_close(icm.reward(obs, next_obs, actions), t_reward.detach().numpy(), 1e-12, "intrinsic reward")
    assert_close(ours_obs.grad, t_obs.grad.numpy(), 1e-10, "d loss / d s_t")
    assert_close(ours_next.grad, t_next.grad.numpy(), 1e-10, "d loss / d s_t+1")
    for name, p in icm.named_parameters():
        assert_close(p.grad, params[name].grad.numpy(), 1e-10, f"d loss / d {name}")


def test_icm_and_rnd_gradient_checks(float64):
    lamina.manual_seed(2)
    icm = ICMModule(4, 2, feature_dim=3, hidden=(5,))
    actions = np.array([1, 0, 1])
    weights = np.array([1.0, 0.0, 1.0])

    def icm_loss(beta):
        return lambda obs, next_obs: icm_losses(*icm(obs, next_obs, actions), actions, beta, weights)[0]

    # L_I (beta = 0) in both observations; L_F (beta = 1) in s_t only, its target phi(s_t+1) being held fixed
    assert check_gradients(icm_loss(0.0), randn(3, 4, seed=3), randn(3, 4, seed=4))
    assert check_gradients(icm_loss(1.0), randn(3, 4, seed=3), randn(3, 4, seed=4), grad=[True, False])
    rnd = RNDModule(4, feature_dim=3, hidden=(5,))
    target = rnd.target(lamina.tensor(randn(3, 4, seed=5))).numpy()    # f(s') is held fixed by design
    assert check_gradients(lambda obs: ((rnd.predictor(obs) - target) ** 2).sum(axis=-1).sum(), randn(3, 4, seed=5))


def test_rnd_error_and_gradients_match_a_torch_rewrite(float64):
    lamina.manual_seed(3)
    rnd = RNDModule(5, feature_dim=4, hidden=(6,))
    obs = randn(7, 5, seed=6)
    ours = lamina.tensor(obs, requires_grad=True)
    errors = rnd(ours)
    (errors * lamina.tensor(np.arange(7.0))).sum().backward()
    params = {k: torch.tensor(np.array(v), requires_grad=True) for k, v in rnd.state_dict().items()}
    theirs = torch.tensor(obs, requires_grad=True)
    t_errors = ((_torch_mlp(params, "predictor", theirs) - _torch_mlp(params, "target", theirs).detach()) ** 2).sum(-1)
    (t_errors * torch.arange(7.0, dtype=torch.float64)).sum().backward()
    assert_close(errors.numpy(), t_errors.detach().numpy(), 1e-12, "squared errors")
    assert_close(ours.grad, theirs.grad.numpy(), 1e-10, "d r / d s")
    for name, p in rnd.named_parameters():
        if name.startswith("predictor."):
            assert_close(p.grad, params[name].grad.numpy(), 1e-10, f"d r / d {name}")
        else:
            assert p.grad is None or not np.any(p.grad), name


def test_icm_inverse_model_learns_a_deterministic_environment():
    lamina.manual_seed(0)
    env, rng = Chain(8), np.random.default_rng(0)
    obs, next_obs, actions = [], [], []
    state, _ = env.reset(seed=0)
    for _ in range(512):
        action = int(rng.integers(2))
        following, _, terminated, _, _ = env.step(action)
        obs.append(state), next_obs.append(following), actions.append(action)
        state = env.reset()[0] if terminated else following
    obs, next_obs, actions = np.array(obs), np.array(next_obs), np.array(actions)
    icm = ICMModule(8, 2, feature_dim=8, hidden=(32,))
    opt = optim.Adam(icm.parameters(), lr=3e-3)

    def accuracy():
        return float((icm(obs, next_obs, actions)[0].numpy().argmax(-1) == actions).mean())

    first = accuracy()
    for _ in range(150):
        index = rng.choice(len(obs), 64, replace=False)
        loss, _ = icm_losses(*icm(obs[index], next_obs[index], actions[index]), actions[index], icm.beta)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # measured (seed 0): accuracy 0.50 -> 1.00 after 150 steps
    assert first < 0.75 and accuracy() > 0.95
    rewards = icm.reward(obs, next_obs, actions)
    assert rewards.shape == (512,) and (rewards >= 0).all()


def test_bad_input_errors():
    icm = ICMModule(4, 2, feature_dim=3, hidden=(5,))
    with pytest.raises(ShapeError, match=r"ICMModule: expected observations of shape \(batch, 4\), got \(3, 5\)"):
        icm(np.zeros((3, 5)), np.zeros((3, 5)), [0, 1, 0])
    with pytest.raises(ShapeError, match=r"ICMModule: expected 3 actions in \[0, 2\)"):
        icm(np.zeros((3, 4)), np.zeros((3, 4)), [0, 2, 1])
    with pytest.raises(ValueError, match="ICMModule: beta must lie in"):
        ICMModule(4, 2, beta=1.5)
    with pytest.raises(ShapeError, match=r"RNDModule: expected observations of shape \(batch, 4\)"):
        RNDModule(4)(np.zeros((2, 3)))
    with pytest.raises(ShapeError, match=r"RunningMeanStd.update: expected batches of shape"):
        RunningMeanStd((3,)).update(np.zeros((2, 4)))
