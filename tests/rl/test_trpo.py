"""TRPO: conjugate gradient against a direct solve, the KL formulas against torch.distributions,
the Fisher-vector product against torch's Hessian of the mean KL, the trust-region line search,
one update on a real rollout, the state dict, and learning CartPole-v1."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina.errors import ShapeError
from lamina.rl import ActorCritic, Box, Chain, Discrete, TimeLimit, make
from lamina.rl.networks import obs_tensor
from lamina.rl.trpo import (
    TRPOAgent,
    categorical_kl,
    conjugate_gradient,
    diagonal_gaussian_kl,
    fisher_vector_product,
    get_flat_parameters,
    policy_mean_kl,
    policy_parameters,
    set_flat_parameters,
    train_trpo,
    trpo_line_search,
)
from lamina.rl.vector import VectorEnv


def spd_matrix(n: int, seed: int) -> np.ndarray:
    a = randn(n, n, seed=seed)
    return a @ a.T + 0.5 * np.eye(n)


@pytest.mark.parametrize("seed", [0, 1])
def test_conjugate_gradient_matches_a_direct_solve(seed):
    a, b = spd_matrix(12, seed), randn(12, seed=seed + 10)
    x = conjugate_gradient(lambda v: a @ v, b, iters=40, residual_tol=1e-20)
    np.testing.assert_allclose(x, np.linalg.solve(a, b), rtol=1e-8, atol=1e-10)


def test_conjugate_gradient_is_exact_in_n_steps_and_stops_on_a_small_residual():
    a, b = np.diag([1.0, 2.0, 3.0]), np.array([1.0, 1.0, 1.0])
    calls = []

    def product(v):
        calls.append(v)
        return a @ v

    np.testing.assert_allclose(conjugate_gradient(product, b, iters=10), [1.0, 0.5, 1.0 / 3.0], rtol=1e-12)
    assert len(calls) == 3          # three distinct eigenvalues: exact after three steps, then r.r < tol
    assert conjugate_gradient(product, np.zeros(3)).tolist() == [0.0, 0.0, 0.0] and len(calls) == 3


def test_conjugate_gradient_refuses_a_matrix_right_hand_side():
    with pytest.raises(ShapeError, match=r"conjugate_gradient: b must be a vector, got shape \(2, 2\)"):
        conjugate_gradient(lambda v: v, np.ones((2, 2)))


def test_categorical_kl_matches_torch_distributions():
    logits_p, logits_q = randn(5, 4, seed=0), randn(5, 4, seed=1)

    def reference(p, q):
        return torch.distributions.kl_divergence(torch.distributions.Categorical(logits=p),
                                                 torch.distributions.Categorical(logits=q))

    compare_with_torch(categorical_kl, reference, logits_p, logits_q, dtype=np.float64, rtol=1e-10)
    assert check_gradients(categorical_kl, logits_p, logits_q)


def test_diagonal_gaussian_kl_matches_torch_distributions():
    mean_p, mean_q = randn(6, 3, seed=2), randn(6, 3, seed=3)
    log_std_p, log_std_q = randn(6, 3, seed=4, scale=0.5), randn(3, seed=5, scale=0.5)

    def reference(mp, sp, mq, sq):
        p = torch.distributions.Independent(torch.distributions.Normal(mp, sp.exp()), 1)
        q = torch.distributions.Independent(torch.distributions.Normal(mq, sq.exp().expand_as(mq)), 1)
        return torch.distributions.kl_divergence(p, q)

    compare_with_torch(diagonal_gaussian_kl, reference, mean_p, log_std_p, mean_q, log_std_q, dtype=np.float64,
                       rtol=1e-10)
    assert check_gradients(diagonal_gaussian_kl, mean_p, log_std_p, mean_q, log_std_q)


def test_kl_errors_name_the_function_and_the_shapes():
    with pytest.raises(ShapeError, match=r"categorical_kl: .* \(2, 3\) and \(2, 4\)"):
        categorical_kl(np.zeros((2, 3)), np.zeros((2, 4)))
    with pytest.raises(ShapeError, match=r"diagonal_gaussian_kl: log_std_q of shape \(4,\)"):
        diagonal_gaussian_kl(np.zeros((2, 3)), np.zeros(3), np.zeros((2, 3)), np.zeros(4))


def torch_policy_kl(policy: ActorCritic, obs: np.ndarray):
    """theta -> mean KL(pi_old || pi_theta) in float64 torch for a one-hidden-layer tanh actor,
    theta laid out as lamina's flat parameters, and theta_old."""
    shapes = [p.shape for p in policy_parameters(policy)]
    theta_old = torch.tensor(get_flat_parameters(policy_parameters(policy)))
    x = torch.tensor(obs)

    def actor(theta):
        parts, start = [], 0
        for shape in shapes:
            size = int(np.prod(shape))
            parts.append(theta[start:start + size].reshape(shape))
            start += size
        w1, b1, w2, b2 = parts[:4]
        return torch.tanh(x @ w1 + b1) @ w2 + b2, (parts[4] if policy.continuous else None)

    def dist(theta):
        out, log_std = actor(theta)
        if log_std is None:
            return torch.distributions.Categorical(logits=out)
        return torch.distributions.Independent(torch.distributions.Normal(out, log_std.exp().expand_as(out)), 1)

    old = dist(theta_old.detach())
    return (lambda theta: torch.distributions.kl_divergence(old, dist(theta)).mean()), theta_old


@pytest.mark.parametrize("space", [Discrete(3), Box(-1.0, 1.0, (2,))], ids=["categorical", "gaussian"])
def test_fisher_vector_product_is_the_hessian_of_the_mean_kl(float64, space):
    lamina.manual_seed(0)
    policy = ActorCritic(4, space, hidden=(5,))
    if policy.continuous:
        policy.log_std.data[...] = [-0.3, 0.2]
    for p in policy_parameters(policy):     # weights larger than PPO's 0.01 output scale: a non-trivial Fisher
        p.data[...] = randn(*p.shape, seed=p.size, scale=0.7)
    obs = randn(9, 4, seed=7)
    fvp = fisher_vector_product(policy, obs_tensor(obs), damping=0.0)
    n = sum(p.size for p in policy_parameters(policy))
    fisher = np.stack([fvp(e) for e in np.eye(n)], axis=1)
    kl, theta_old = torch_policy_kl(policy, obs)
    expected = torch.autograd.functional.hessian(kl, theta_old).numpy()
    np.testing.assert_allclose(fisher, expected, rtol=1e-9, atol=1e-12)
    assert np.linalg.eigvalsh(fisher).min() > -1e-10    # a Fisher matrix is positive semi-definite
    v = randn(n, seed=3)
    damped = fisher_vector_product(policy, obs_tensor(obs), damping=0.25)
    np.testing.assert_allclose(damped(v), expected @ v + 0.25 * v, rtol=1e-9, atol=1e-12)
    with pytest.raises(ShapeError, match=f"fisher_vector_product: expected a vector of {n} values"):
        damped(np.ones(n + 1))


def test_line_search_shrinks_the_step_into_the_trust_region():
    fisher, g = np.diag([1.0, 4.0]), np.array([1.0, 1.0])
    objective = lambda theta: float(g @ theta)           # noqa: E731 (a linear surrogate)
    constraint = lambda theta: float(0.5 * theta @ fisher @ theta)  # noqa: E731
    full_step = np.array([0.4, 0.4])                     # KL 0.4 at the full step: three halvings to <= 0.01
    theta, fraction = trpo_line_search(objective, constraint, np.zeros(2), full_step, float(g @ full_step), 0.01)
    assert fraction == 0.125 and constraint(theta) <= 0.01
    np.testing.assert_allclose(theta, 0.125 * full_step)


def test_line_search_keeps_theta_when_no_step_improves():
    theta0 = np.array([0.3, -0.2])
    calls = []

    def objective(theta):
        calls.append(theta)
        return -float(theta @ theta)                     # every step away from 0 along +theta0 loses

    theta, fraction = trpo_line_search(objective, lambda th: 0.0, theta0, theta0, 1.0, 0.01, max_backtracks=10)
    assert fraction == 0.0 and theta is not theta0
    np.testing.assert_array_equal(theta, theta0)
    assert len(calls) == 1 + 11                          # the base, then fractions 1, 1/2, ..., 2^-10


def new_trpo(env_name: str, seed: int, **kwargs) -> TRPOAgent:
    lamina.manual_seed(seed)
    return TRPOAgent.for_env(make(env_name), seed=seed, hidden=(16,), **kwargs)


@pytest.mark.parametrize("env_name", ["CartPole-v1", "Pendulum-v1"])
def test_an_update_stays_in_the_trust_region_and_raises_the_surrogate(env_name):
    trpo = new_trpo(env_name, 0, n_steps=64)
    venv = VectorEnv([lambda: make(env_name)] * 2)
    rollout, _ = trpo.collect(venv, venv.reset(seed=0)[0])
    flat = {key: value.reshape(-1, *value.shape[2:]) for key, value in rollout.items()}
    params = policy_parameters(trpo.policy)
    before, critic_before = get_flat_parameters(params), get_flat_parameters(trpo.policy.critic.parameters())
    obs = obs_tensor(flat["obs"])
    with lamina.no_grad():
        old_output = trpo.policy.actor(obs).numpy()
    old_log_std = np.array(trpo.policy.log_std.data) if trpo.policy.continuous else None
    stats = trpo.update(rollout)
    assert 0.0 < stats["step_fraction"] <= 1.0 and stats["improvement"] > 0.0
    with lamina.no_grad():
        kl = policy_mean_kl(trpo.policy, obs, old_output, old_log_std).item()
    assert 0.0 < kl <= trpo.max_kl and stats["kl"] == pytest.approx(kl)
    assert not np.allclose(get_flat_parameters(params), before)
    assert not np.allclose(get_flat_parameters(trpo.policy.critic.parameters()), critic_before)
    assert stats["value_loss"] > 0.0


def test_a_rejected_step_leaves_the_policy_unchanged():
    trpo = new_trpo("CartPole-v1", 1, n_steps=32, accept_ratio=1e9)     # no step can rise that much
    venv = VectorEnv([lambda: make("CartPole-v1")] * 2)
    rollout, _ = trpo.collect(venv, venv.reset(seed=1)[0])
    before = get_flat_parameters(policy_parameters(trpo.policy))
    stats = trpo.update(rollout)
    assert stats["step_fraction"] == 0.0 and stats["kl"] == 0.0
    np.testing.assert_array_equal(get_flat_parameters(policy_parameters(trpo.policy)), before)


def test_flat_parameters_round_trip_and_settings_are_checked():
    trpo = new_trpo("Pendulum-v1", 2)
    params = policy_parameters(trpo.policy)
    assert params[-1] is trpo.policy.log_std and len(params) == len(list(trpo.policy.actor.parameters())) + 1
    theta = get_flat_parameters(params)
    set_flat_parameters(params, theta + 1.0)
    np.testing.assert_allclose(get_flat_parameters(params), theta + 1.0, rtol=1e-6)
    with pytest.raises(ValueError, match="TRPOAgent: max_kl must be positive, got 0.0"):
        new_trpo("Pendulum-v1", 0, max_kl=0.0)


def test_state_dict_round_trip_continues_identically():
    trpo, twin = new_trpo("CartPole-v1", 3, n_steps=16), new_trpo("CartPole-v1", 4, n_steps=16)
    venv = VectorEnv([lambda: make("CartPole-v1")] * 2)
    obs = venv.reset(seed=3)[0]
    rollout, _ = trpo.collect(venv, obs)
    trpo.update(rollout)
    state = trpo.state_dict()
    assert state["algorithm"] == "trpo"
    twin.load_state_dict(state)
    rollout, _ = trpo.collect(venv, obs)
    a, b = trpo.update(rollout), twin.update(rollout)
    assert a == b
    for p, q in zip(trpo.policy.parameters(), twin.policy.parameters()):
        np.testing.assert_array_equal(p.data, q.data)


def test_train_rl_command_runs_and_resumes_trpo(tmp_path, capsys):
    from lamina.cli import build_parser
    from lamina.cli.rl import load_state, train_rl

    out = tmp_path / "trpo"
    args = ["train-rl", "--algo", "trpo", "--env", "CartPole-v1", "--steps", "200", "--num-envs", "2",
            "--eval-episodes", "1", "--out", str(out)]
    train_rl(build_parser().parse_args(args))
    assert "trpo on CartPole-v1: 200 steps" in capsys.readouterr().out
    first = load_state(out)
    assert first["algo"] == "trpo" and first["agent"]["algorithm"] == "trpo"
    assert first["agent"]["optimizer"]["step_count"] == 40      # one rollout of 2 x 512: 5 epochs of 8 minibatches
    train_rl(build_parser().parse_args(args + ["--resume"]))
    assert load_state(out)["agent"]["optimizer"]["step_count"] == 80


class Target(Chain):
    """One-dimensional: reward -(a - 0.5)^2 for an action a in [-1, 1] (the best action is 0.5)."""

    def __init__(self):
        super().__init__(2)
        self.observation_space = Box(-1.0, 1.0, shape=(1,))
        self.action_space = Box(-1.0, 1.0, shape=(1,))

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.zeros(1, dtype=np.float32), {}

    def step(self, action):
        return np.zeros(1, dtype=np.float32), -float((np.asarray(action)[0] - 0.5) ** 2), False, False, {}


def test_trpo_learns_a_gaussian_policy():
    lamina.manual_seed(0)
    trpo = TRPOAgent(ActorCritic(1, Box(-1.0, 1.0, shape=(1,)), hidden=(16,)), n_steps=64, seed=0)
    assert trpo.predict(np.zeros(1))[0] == pytest.approx(0.0, abs=0.05)
    returns = train_trpo(lambda: TimeLimit(Target(), 5), total_steps=6144, num_envs=4, trpo=trpo, seed=0)
    # measured (24 updates, ~1 s): mean action 0.71 / 0.70 / 0.67, std 0.38 / 0.38 / 0.37 (from 0, 1) and
    # mean return of the first / last 20 episodes -3.8 / -0.70, -3.9 / -0.66, -4.2 / -0.69 for seeds 0, 1, 2.
    assert np.mean(returns[-20:]) > 0.4 * np.mean(returns[:20])
    assert abs(trpo.predict(np.zeros(1))[0] - 0.5) < 0.35 and float(np.exp(trpo.policy.log_std.data[0])) < 0.6


def test_trpo_learns_cartpole():
    start = time.perf_counter()
    returns = train_trpo("CartPole-v1", total_steps=16384, num_envs=4, seed=0)
    seconds = time.perf_counter() - start
    # measured (16384 steps, 8 updates, one thread, 2-5 s): mean return of the first 20 episodes
    # 19.4 / 23.0 / 32.2 / 20.0 / 15.5 and of the last 20 241.6 / 208.2 / 173.6 / 174.4 / 201.0 for
    # seeds 0-4; a uniformly random policy averages ~22.
    assert np.mean(returns[-20:]) > 100.0
    assert np.mean(returns[-20:]) > 3.0 * np.mean(returns[:20])
    assert seconds < 20.0


def test_readme_section_runs():
    from helpers import run_readme_section

    out, _ = run_readme_section("TRPO: trust region policy optimization")
    assert "mean KL after the step <= 0.01: True" in out
    first, last = (float(x) for x in out.split("first 20 episodes: ")[1].split(", last 20: "))
    assert last > 3.0 * first
