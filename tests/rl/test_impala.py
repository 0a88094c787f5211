"""IMPALA: V-trace against the paper's sum form and n-step returns, the loss against a float64
PyTorch rewrite, the actors' policy lag, and learning CartPole-v1 with stale actors."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, run_readme_section
from lamina.rl import ActorCritic, IMPALAAgent, evaluate_policy, impala_loss, make, train_impala, vtrace
from lamina.rl.vector import VectorEnv

T, B = 7, 3


def trajectory_arrays(seed: int = 0):
    """Random (T, B) arrays with two episode ends (discount 0) and log-ratios up to +-1.5."""
    rng = np.random.default_rng(seed)
    behaviour_logp = -rng.uniform(0.1, 2.0, (T, B))
    target_logp = behaviour_logp + rng.uniform(-1.5, 1.5, (T, B))
    rewards, values = rng.standard_normal((2, T, B))
    bootstrap_value = rng.standard_normal(B)
    discounts = np.full((T, B), 0.9)
    discounts[2, 0] = discounts[5, 1] = 0.0
    return behaviour_logp, target_logp, rewards, values, bootstrap_value, discounts


def sum_form_vtrace(behaviour_logp, target_logp, rewards, values, bootstrap_value, discounts, rho_bar, c_bar):
    """v_s = V(x_s) + sum_{t>=s} (prod_{i=s}^{t-1} gamma_i c_i) delta_t, one s and one column at a time."""
    ratios = np.exp(target_logp - behaviour_logp)
    rhos, cs = np.minimum(rho_bar, ratios), np.minimum(c_bar, ratios)
    values_ext = np.concatenate([values, bootstrap_value[None]])
    vs, advantages = np.zeros((T, B)), np.zeros((T, B))
    for b in range(B):
        for s in range(T):
            total, weight = values[s, b], 1.0
            for t in range(s, T):
                delta = rhos[t, b] * (rewards[t, b] + discounts[t, b] * values_ext[t + 1, b] - values[t, b])
                total += weight * delta
                weight *= discounts[t, b] * cs[t, b]
            vs[s, b] = total
    vs_ext = np.concatenate([vs, bootstrap_value[None]])
    for b in range(B):
        for s in range(T):
            advantages[s, b] = rhos[s, b] * (rewards[s, b] + discounts[s, b] * vs_ext[s + 1, b] - values[s, b])
    return vs, advantages


@pytest.mark.parametrize("rho_bar, c_bar", [(1.0, 1.0), (1.5, 0.7), (np.inf, np.inf)])
def test_vtrace_equals_the_sum_form_of_the_paper(rho_bar, c_bar):
    arrays = trajectory_arrays()
    ratios = np.exp(arrays[1] - arrays[0])
    assert (ratios > 1.5).sum() > 3 and (ratios < 0.7).sum() > 3      # the truncations are active
    out = vtrace(*arrays, rho_bar=rho_bar, c_bar=c_bar)
    vs, advantages = sum_form_vtrace(*arrays, rho_bar, c_bar)
    np.testing.assert_allclose(out.vs, vs, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.pg_advantages, advantages, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(out.rhos, np.minimum(rho_bar, ratios))
    np.testing.assert_allclose(out.cs, np.minimum(c_bar, ratios))
    # an episode end cuts the sum: the step before it sees nothing of what follows
    cut = arrays[2][2, 0] - arrays[3][2, 0]
    assert out.vs[2, 0] == pytest.approx(arrays[3][2, 0] + out.rhos[2, 0] * cut)


@pytest.mark.parametrize("bar", [np.inf, 1.0, 1e6])
def test_on_policy_vtrace_is_the_n_step_bellman_target(bar):
    _, logp, rewards, values, bootstrap_value, discounts = trajectory_arrays(1)
    out = vtrace(logp, logp, rewards, values, bootstrap_value, discounts, rho_bar=bar, c_bar=bar)
    expected = np.zeros((T, B))
    for b in range(B):
        for s in range(T):
            total, weight = 0.0, 1.0
            for t in range(s, T):
                total += weight * rewards[t, b]
                weight *= discounts[t, b]
            expected[s, b] = total + weight * bootstrap_value[b]
    np.testing.assert_allclose(out.vs, expected, rtol=1e-12, atol=1e-12)
    next_vs = np.concatenate([expected[1:], bootstrap_value[None]])
    np.testing.assert_allclose(out.pg_advantages, rewards + discounts * next_vs - values, rtol=1e-12, atol=1e-12)


def test_vtrace_refuses_mismatched_shapes_and_bad_bars():
    arrays = list(trajectory_arrays())
    with pytest.raises(ValueError, match=r"vtrace: .* one \(T, B\) shape .* got \[\(7, 3\), \(7, 2\)"):
        vtrace(arrays[0], arrays[1][:, :2], *arrays[2:])
    with pytest.raises(ValueError, match="vtrace: rho_bar and c_bar must be positive, got 0.0 and 1.0"):
        vtrace(*arrays, rho_bar=0.0)


def torch_vtrace(behaviour_logp, target_logp, rewards, values, bootstrap_value, discounts, rho_bar, c_bar):
    """The backward recursion in torch on detached inputs (the targets are constants)."""
    ratios = torch.exp(target_logp.detach() - behaviour_logp)
    rhos, cs = ratios.clamp(max=rho_bar), ratios.clamp(max=c_bar)
    values = values.detach()
    next_values = torch.cat([values[1:], bootstrap_value[None]])
    deltas = rhos * (rewards + discounts * next_values - values)
    corrections, running = [], torch.zeros_like(bootstrap_value)
    for t in reversed(range(len(values))):
        running = deltas[t] + discounts[t] * cs[t] * running
        corrections.append(running)
    vs = values + torch.stack(corrections[::-1])
    next_vs = torch.cat([vs[1:], bootstrap_value[None]])
    return vs, rhos * (rewards + discounts * next_vs - values)


def loss_pair(rho_bar=1.0, c_bar=0.8):
    behaviour_logp, _, rewards, _, bootstrap_value, discounts = trajectory_arrays(2)
    constants = [torch.tensor(a) for a in (behaviour_logp, rewards, bootstrap_value, discounts)]

    def ours(target_logp, entropy, values):
        return impala_loss(target_logp, entropy, values, behaviour_logp, rewards, bootstrap_value, discounts,
                           rho_bar, c_bar, vf_coef=0.7, ent_coef=0.05)[0]

    def theirs(target_logp, entropy, values):
        b_logp, r, boot, disc = constants
        vs, advantages = torch_vtrace(b_logp, target_logp, r, values, boot, disc, rho_bar, c_bar)
        policy_loss = -(advantages * target_logp).mean()
        baseline_loss = 0.5 * ((vs - values) ** 2).mean()
        return policy_loss + 0.7 * baseline_loss - 0.05 * entropy.mean()

    target_logp = behaviour_logp + np.random.default_rng(3).uniform(-1.0, 1.0, (T, B))
    inputs = [target_logp, np.random.default_rng(4).uniform(0.2, 1.0, (T, B)),
              np.random.default_rng(5).standard_normal((T, B))]
    return ours, theirs, inputs


def test_impala_loss_matches_a_float64_torch_rewrite_in_value_and_gradients():
    ours, theirs, inputs = loss_pair()
    compare_with_torch(ours, theirs, *inputs, dtype=np.float64)
    compare_with_torch(ours, theirs, *inputs)                         # float32 as well
    ours, theirs, inputs = loss_pair(rho_bar=np.inf, c_bar=np.inf)
    compare_with_torch(ours, theirs, *inputs, dtype=np.float64)


def test_impala_loss_gradient_check():
    ours, _, inputs = loss_pair()
    # the targets are held constant, so the gradient of L is that of L with the targets frozen:
    # freeze them at the inputs' values and check the centred differences of that function
    behaviour_logp, _, rewards, _, bootstrap_value, discounts = trajectory_arrays(2)
    frozen = vtrace(behaviour_logp, inputs[0], rewards, inputs[2], bootstrap_value, discounts, 1.0, 0.8)

    def with_frozen_targets(target_logp, entropy, values):
        advantages, vs = (lamina.tensor(a, dtype=np.float64) for a in (frozen.pg_advantages, frozen.vs))
        return (-lamina.functional.mean(advantages * target_logp)
                + 0.7 * 0.5 * lamina.functional.mean((vs - values) ** 2)
                - 0.05 * lamina.functional.mean(entropy))

    assert check_gradients(with_frozen_targets, *inputs)
    tensors = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in inputs]
    frozen_tensors = [lamina.tensor(a, requires_grad=True, dtype=np.float64) for a in inputs]
    ours(*tensors).backward()
    with_frozen_targets(*frozen_tensors).backward()
    for a, b in zip(tensors, frozen_tensors):
        np.testing.assert_allclose(a.grad, b.grad, rtol=1e-12, atol=1e-14)


def new_agent(seed: int = 0, **kwargs) -> IMPALAAgent:
    lamina.manual_seed(seed)
    return IMPALAAgent(ActorCritic(4, make("CartPole-v1").action_space, hidden=(8,)), seed=seed, **kwargs)


def test_actors_act_with_the_weights_of_policy_lag_updates_ago():
    agent = new_agent(n_steps=4, policy_lag=2)
    venv = VectorEnv([lambda: make("CartPole-v1")] * 3)
    obs, _ = venv.reset(seed=0)
    history = [agent._weights()]
    for _ in range(4):
        trajectory, obs = agent.collect(venv, obs)
        assert trajectory["obs"].shape == (4, 3, 4) and trajectory["bootstrap_obs"].shape == (3, 4)
        with lamina.no_grad():
            flat = lamina.tensor(trajectory["obs"].reshape(12, 4))
            actor_logp, _ = agent.actor.log_prob_entropy(flat, trajectory["actions"].reshape(12))
        np.testing.assert_allclose(trajectory["behaviour_logp"].reshape(12), actor_logp.numpy(), rtol=1e-6)
        agent.update(trajectory)
        history.append(agent._weights())
        lagged = history[max(0, len(history) - 3)]
        for name, value in agent.actor.state_dict().items():
            np.testing.assert_array_equal(value, lagged[name])
    assert any(not np.array_equal(history[-1][name], history[-3][name]) for name in history[-1])
    uncorrected = new_agent(n_steps=4, policy_lag=2, correction=False)
    trajectory, _ = uncorrected.collect(venv, obs)
    uncorrected.update(trajectory)
    assert uncorrected.update(trajectory)["mean_rho"] == 1.0
    assert agent.update(trajectory)["mean_rho"] != 1.0


def test_impala_state_round_trips_and_refuses_bad_settings(tmp_path):
    from test_agent_state import assert_same_state, through_file

    agent = new_agent(n_steps=5, policy_lag=2)
    train_impala("CartPole-v1", total_steps=100, num_envs=2, agent=agent, seed=0)
    saved = agent.state_dict()
    assert saved["algorithm"] == "impala" and len(saved["snapshots"]) == 3
    returns = train_impala("CartPole-v1", total_steps=100, num_envs=2, agent=agent, seed=5)
    fresh = new_agent(3, n_steps=5, policy_lag=2)
    fresh.load_state_dict(through_file(saved, tmp_path / "impala.safetensors"))
    assert_same_state(fresh.state_dict(), saved)
    assert train_impala("CartPole-v1", total_steps=100, num_envs=2, agent=fresh, seed=5) == returns
    with pytest.raises(ValueError, match="IMPALAAgent: policy_lag must be a non-negative int, got -1"):
        new_agent(policy_lag=-1)
    with pytest.raises(TypeError, match=r"train_impala: IMPALAAgent settings \['lr'\] given with a ready agent"):
        train_impala("CartPole-v1", 10, agent=fresh, lr=1e-3)


def run_cartpole(seed: int, policy_lag: int, correction: bool) -> tuple[list[float], float]:
    agent = new_agent(seed, n_steps=16, policy_lag=policy_lag, correction=correction, lr=5e-3)
    returns = train_impala("CartPole-v1", total_steps=12800, num_envs=8, agent=agent, seed=seed)
    return returns, evaluate_policy(agent, make("CartPole-v1"), n_episodes=3, seed=100).mean()


def test_without_lag_the_correction_changes_nothing():
    runs = []
    for correction in (True, False):
        agent = new_agent(0, n_steps=8, correction=correction)
        runs.append((train_impala("CartPole-v1", total_steps=640, num_envs=4, agent=agent, seed=0),
                     agent.state_dict()["policy"]))
    assert runs[0][0] == runs[1][0] and len(runs[0][0]) > 10
    for name, value in runs[0][1].items():
        np.testing.assert_array_equal(value, runs[1][1][name])


def test_impala_with_stale_actors_balances_the_pole():
    start = time.perf_counter()
    returns, greedy = run_cartpole(0, policy_lag=4, correction=True)
    print(f"impala lag 4 {time.perf_counter() - start:.1f} s, first 20 {np.mean(returns[:20]):.1f}, "
          f"last 20 {np.mean(returns[-20:]):.1f}, greedy {greedy:.1f}")
    assert np.mean(returns[-20:]) > 4 * np.mean(returns[:20]) and greedy > 150


def test_corrected_and_uncorrected_losses_both_learn_with_lagged_actors():
    """The same seeds and budget with actors 8 updates behind, with and without the correction
    (the figures are printed for comparison)."""
    figures = {}
    for correction in (True, False):
        runs = [run_cartpole(seed, policy_lag=8, correction=correction) for seed in (1, 2)]
        figures[correction] = (np.mean([np.mean(r[-20:]) for r, _ in runs]), np.mean([g for _, g in runs]))
        for returns, _ in runs:
            assert np.mean(returns[-20:]) > 3 * np.mean(returns[:20])
    print("lag 8, mean of seeds 1 and 2 (last 20 episodes, greedy): v-trace {:.1f} {:.1f}, uncorrected {:.1f} "
          "{:.1f}".format(*figures[True], *figures[False]))


def test_readme_impala_section_runs():
    printed, names = run_readme_section("IMPALA")
    print(printed)
    assert names["greedy"] > 150 and names["greedy"] > 5 * sum(names["returns"][:20]) / 20
