"""Dreamer: lambda-returns against a NumPy recursion and their lambda = 0 / 1 closed forms, the
reward head and the world-model loss against torch rewrites, the actor's gradient through the
learned dynamics with the world model untouched by behaviour steps, acting by filtering, and
the error messages."""

import numpy as np
import pytest
import torch
from torch.distributions import Independent, Normal, kl_divergence

import lamina
from helpers import check_gradients, compare_with_torch
from lamina.errors import ShapeError
from lamina.rl import (
    Box,
    CartPole,
    Discrete,
    DreamerAgent,
    DreamerWorldModel,
    dreamer_model_loss,
    lambda_returns,
    train_dreamer,
)


def numpy_lambda_returns(rewards, values, discounts, bootstrap, lam):
    horizon = rewards.shape[1]
    out = np.zeros_like(rewards)
    following = bootstrap
    for t in range(horizon - 1, -1, -1):
        next_value = values[:, t + 1] if t + 1 < horizon else bootstrap
        following = rewards[:, t] + discounts[:, t] * ((1 - lam) * next_value + lam * following)
        out[:, t] = following
    return out


def return_inputs(seed=0):
    rng = np.random.default_rng(seed)
    return (rng.normal(size=(3, 6)), rng.normal(size=(3, 6)), rng.uniform(0.5, 1.0, (3, 6)), rng.normal(size=3))


@pytest.mark.parametrize("lam", [0.0, 0.7, 1.0])
def test_lambda_returns_match_numpy_recursion(lam):
    r, v, d, boot = return_inputs()
    ours = lambda_returns(*(lamina.tensor(a, dtype=np.float64) for a in (r, v, d, boot)), lam=lam).numpy()
    np.testing.assert_allclose(ours, numpy_lambda_returns(r, v, d, boot, lam), rtol=1e-10)
    next_values = np.concatenate([v[:, 1:], boot[:, None]], axis=1)
    if lam == 0.0:   # one-step TD targets
        np.testing.assert_allclose(ours, r + d * next_values, rtol=1e-10)
    if lam == 1.0:   # discounted Monte Carlo sums bootstrapped with v_H
        for t in range(6):
            weights = np.concatenate([np.ones((3, 1)), np.cumprod(d[:, t:], axis=1)], axis=1)
            expected = np.sum(weights[:, :-1] * r[:, t:], axis=1) + weights[:, -1] * boot
            np.testing.assert_allclose(ours[:, t], expected, rtol=1e-10)


def test_lambda_returns_gradients_match_torch():
    def theirs(r, v, d, boot):
        following, out = boot, []
        for t in reversed(range(r.shape[1])):
            next_value = v[:, t + 1] if t + 1 < r.shape[1] else boot
            following = r[:, t] + d[:, t] * (0.3 * next_value + 0.7 * following)
            out.insert(0, following)
        return torch.stack(out, dim=1)

    compare_with_torch(lambda *a: lambda_returns(*a, lam=0.7), theirs, *return_inputs(1), dtype=np.float64)
    check_gradients(lambda *a: lambda_returns(*a, lam=0.7), *return_inputs(2))


def small_world_model(episodic=True, seed=0):
    lamina.manual_seed(seed)
    return DreamerWorldModel(3, 2, deter_dim=6, stoch_dim=4, hidden=8, episodic=episodic, seed=seed)


def test_reward_head_matches_torch():
    model = small_world_model()
    rng = np.random.default_rng(0)
    h, s = rng.normal(size=(2, 5, 6)).astype(np.float32), rng.normal(size=(2, 5, 4)).astype(np.float32)
    h_l, s_l = lamina.tensor(h, requires_grad=True), lamina.tensor(s, requires_grad=True)
    out = model.reward(h_l, s_l)
    up = rng.normal(size=(2, 5)).astype(np.float32)
    (out * lamina.tensor(up)).sum().backward()
    first, last = model.reward_head.layers
    weights = [torch.tensor(p.numpy(), requires_grad=True) for p in (first.weight, first.bias, last.weight, last.bias)]
    h_t, s_t = torch.tensor(h, requires_grad=True), torch.tensor(s, requires_grad=True)
    hidden = torch.nn.functional.elu(torch.cat([h_t, s_t], dim=-1) @ weights[0] + weights[1])
    theirs = (hidden @ weights[2] + weights[3])[..., 0]
    (theirs * torch.tensor(up)).sum().backward()
    assert out.shape == (2, 5)
    np.testing.assert_allclose(out.numpy(), theirs.detach().numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h_l.grad, h_t.grad.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(s_l.grad, s_t.grad.numpy(), rtol=1e-5, atol=1e-6)
    for ours, theirs_w in zip((first.weight, first.bias, last.weight, last.bias), weights):
        np.testing.assert_allclose(ours.grad, theirs_w.grad.numpy(), rtol=1e-5, atol=1e-6)


def torch_model_loss(decoded, obs, predicted, rewards, q_mean, q_std, p_mean, p_std, logits, continues, free_nats):
    reconstruction = (0.5 * ((decoded - obs) ** 2).sum(-1)).mean()
    reward = (0.5 * (predicted - rewards) ** 2).mean()
    kl = kl_divergence(Independent(Normal(q_mean, q_std), 1), Independent(Normal(p_mean, p_std), 1))
    bce = torch.nn.functional.binary_cross_entropy_with_logits(logits, continues)
    return reconstruction + reward + torch.clamp(kl.mean(), min=free_nats) + bce


def loss_inputs(seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(2, 4, 3), (2, 4, 3), (2, 4), (2, 4), (2, 4, 5), None, (2, 4, 5), None, (2, 4)]
    arrays = [rng.normal(size=shape) if shape else rng.uniform(0.3, 2.0, (2, 4, 5)) for shape in shapes]
    return [*arrays, (rng.uniform(size=(2, 4)) > 0.3).astype(np.float64)]


@pytest.mark.parametrize("free_nats", [0.0, 100.0])
def test_model_loss_matches_torch(free_nats):
    arrays = loss_inputs()
    compare_with_torch(lambda *a: dreamer_model_loss(*a, free_nats=free_nats),
                       lambda *a: torch_model_loss(*a, free_nats), *arrays, dtype=np.float64,
                       grad=[True] * 9 + [False])
    check_gradients(lambda *a: dreamer_model_loss(*a, free_nats=free_nats), *arrays, grad=[True] * 9 + [False])


def test_world_model_loss_is_the_loss_of_its_outputs():
    model = small_world_model()
    rng = np.random.default_rng(3)
    obs, act = rng.normal(size=(2, 4, 3)).astype(np.float32), rng.normal(size=(2, 4, 2)).astype(np.float32)
    rewards, continues = rng.normal(size=(2, 4)), np.array([[1, 1, 1, 0], [1, 1, 1, 1.0]])
    noise = rng.normal(size=(2, 4, 4))
    loss, stats, states = model.loss(obs, act, rewards, continues, free_nats=0.5, noise=noise)
    h, s = states["h"], states["s"]
    parts = [model.rssm.decode(h, s).numpy(), obs, model.reward(h, s).numpy(), rewards,
             *(states[k].numpy() for k in ("post_mean", "post_std", "prior_mean", "prior_std")),
             model.continue_logit(h, s).numpy(), continues]
    expected = torch_model_loss(*(torch.tensor(np.asarray(a, dtype=np.float64)) for a in parts), 0.5)
    np.testing.assert_allclose(loss.item(), expected.item(), rtol=1e-5)
    assert set(stats) == {"reconstruction", "reward", "kl", "continue"}
    loss.backward()
    assert all(p.grad is not None and np.any(p.grad) for p in model.reward_head.parameters())
    assert all(p.grad is not None and np.any(p.grad) for p in model.continue_head.parameters())


def small_agent(action_space, seed=0, **kwargs):
    lamina.manual_seed(seed)
    return DreamerAgent(3, action_space, deter_dim=6, stoch_dim=4, hidden=8, actor_hidden=(8,), horizon=4,
                        seed=seed, **kwargs)


@pytest.mark.parametrize("space", [Box(-2.0, 2.0, (2,)), Discrete(3)], ids=["box", "discrete"])
def test_actor_gradient_flows_through_frozen_dynamics(space):
    agent = small_agent(space, episodic=isinstance(space, Discrete))
    rng = np.random.default_rng(0)
    act_dim = agent.act_dim
    obs, act = rng.normal(size=(2, 5, 3)).astype(np.float32), rng.normal(size=(2, 5, act_dim)).astype(np.float32)
    _, _, states = agent.world_model.loss(obs, act, rng.normal(size=(2, 5)))
    h, s = states["h"].reshape(-1, 6), states["s"].reshape(-1, 4)
    before = {name: p.numpy().copy() for name, p in agent.world_model.named_parameters()}
    critic_before = [p.numpy().copy() for p in agent.critic.parameters()]
    for p in [*agent.world_model.parameters(), *agent.critic.parameters()]:
        p.grad = None
    actor_loss, critic_loss, stats = agent.behaviour_losses(h, s)
    actor_loss.backward()
    # rewards and values read only the latent state: the actor's gradient passed through the prior's dynamics
    assert all(p.grad is not None and np.any(p.grad) for p in agent.actor.parameters())
    assert all(p.grad is None or not np.any(p.grad) for p in agent.world_model.parameters())
    assert all(p.grad is None or not np.any(p.grad) for p in agent.critic.parameters())
    actor_before = [p.numpy().copy() for p in agent.actor.parameters()]
    agent.actor_optimizer.step()
    agent._step(agent.critic_optimizer, critic_loss, agent.critic)
    assert all(not np.array_equal(p.numpy(), b) for p, b in zip(agent.actor.parameters(), actor_before))
    assert any(not np.array_equal(p.numpy(), b) for p, b in zip(agent.critic.parameters(), critic_before))
    for name, p in agent.world_model.named_parameters():
        np.testing.assert_array_equal(p.numpy(), before[name], err_msg=name)
    assert np.isfinite(stats["imagined_return"])


def test_act_filters_with_the_posterior_and_scales_actions():
    agent = small_agent(Box(np.array([-2.0, 0.0]), np.array([2.0, 1.0])))
    action, state = agent.act(np.zeros(3, np.float32))
    assert action.shape == (2,) and np.all(action >= [-2.0, 0.0]) and np.all(action <= [2.0, 1.0])
    h, s, previous = state
    assert h.shape == (1, 6) and s.shape == (1, 4) and previous.shape == (1, 2)
    again, _ = agent.act(np.zeros(3, np.float32), state)
    other, other_state = agent.act(np.full(3, 3.0, np.float32), state)
    repeat, _ = agent.act(np.zeros(3, np.float32), state)
    np.testing.assert_array_equal(again, repeat)                 # the mode is deterministic
    assert not np.allclose(other_state[1].numpy(), _[1].numpy())  # the posterior reads the observation
    np.testing.assert_allclose(agent.model_action(agent.env_action(np.array([0.5, -0.25]))), [0.5, -0.25], rtol=1e-6)


def test_episodic_discrete_training_runs():
    env = CartPole()
    agent, returns = train_dreamer(env, steps=60, prefill_episodes=2, updates_per_episode=1, batch=2, length=5,
                                   seed=0, deter_dim=6, stoch_dim=4, hidden=8, actor_hidden=(8,), horizon=3,
                                   episodic=True)
    assert agent.discrete and agent.world_model.continue_head is not None
    assert returns and all(r >= 1 for r in returns)


def test_errors_name_the_problem():
    r, v, d, boot = (lamina.tensor(a) for a in return_inputs())
    with pytest.raises(ShapeError, match=r"lambda_returns: bootstrap must have shape \(3,\)"):
        lambda_returns(r, v, d, lamina.tensor(np.zeros(4)))
    with pytest.raises(ShapeError, match="lambda_returns: rewards, values and discounts"):
        lambda_returns(r, v[:, :3], d, boot)
    with pytest.raises(ValueError, match="lam must be in"):
        lambda_returns(r, v, d, boot, lam=1.5)
    with pytest.raises(ValueError, match="horizon must be >= 2"):
        DreamerAgent(3, Box(-1.0, 1.0, (1,)), horizon=1)
    with pytest.raises(TypeError, match="DreamerAgent: action_space must be a Box or Discrete"):
        DreamerAgent(3, None)
    model = small_world_model(episodic=False)
    with pytest.raises(ShapeError, match=r"DreamerWorldModel.loss: rewards must have shape \(2, 4\)"):
        model.loss(np.zeros((2, 4, 3)), np.zeros((2, 4, 2)), np.zeros((2, 5)))
