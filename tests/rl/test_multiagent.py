"""Cooperative multi-agent RL: the parallel environment API and its errors, the games' payoffs,
the QMIX mixer (monotonicity, a float64 gradient check, values and gradients against a PyTorch
rewrite), VDN's sum, and learning: QMIX solves the QMIX paper's two-step game where VDN settles
on 7, independent Q-learners meet on a gridworld's goal."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, run_readme_section
from lamina.rl.multiagent import (
    MADDPG,
    QMIX,
    VDN,
    CooperativeGridWorld,
    IndependentQLearning,
    MultiAgentQLearner,
    QMixer,
    Rendezvous,
    TabularIndependentQLearning,
    TwoStepGame,
    VDNMixer,
    climbing_game,
    penalty_game,
    run_episodes,
)


def play(env, joint_actions):
    """The rewards of agent_0 along a sequence of (a_0, a_1)."""
    env.reset(seed=0)
    rewards = []
    for a0, a1 in joint_actions:
        _, reward, terminations, _, _ = env.step({"agent_0": a0, "agent_1": a1})
        rewards.append(reward["agent_0"])
    return rewards, terminations


def test_two_step_game_payoffs():
    env = TwoStepGame()
    assert play(env, [(0, 1), (1, 0)])[0] == [0.0, 7.0]
    assert play(env, [(1, 0), (1, 1)]) == ([0.0, 8.0], {"agent_0": True, "agent_1": True})
    assert play(env, [(1, 1), (0, 0)])[0] == [0.0, 0.0]
    assert play(env, [(1, 1), (0, 1)])[0] == [0.0, 1.0]


def test_matrix_games_pay_their_tables():
    climbing = climbing_game(repeats=2)
    assert play(climbing, [(0, 0), (0, 1)])[0] == [11.0, -30.0] and climbing.optimal_return == 22.0
    assert play(penalty_game(k=-7), [(0, 2)])[0] == [-7.0]


def test_parallel_api_dicts_and_spaces():
    env = CooperativeGridWorld(size=3, max_steps=4)
    observations, infos = env.reset(seed=0)
    assert env.agents == env.possible_agents == ["agent_0", "agent_1"] and set(infos) == set(env.agents)
    for agent, observation in observations.items():
        assert env.observation_space(agent).contains(observation)
    assert env.state_space.contains(env.state()) and env.num_agents == 2
    for _ in range(4):
        observations, rewards, terminations, truncations, _ = env.step({"agent_0": 4, "agent_1": 4})
        assert set(rewards) == {"agent_0", "agent_1"} and rewards["agent_0"] == env.step_reward
    assert truncations == {"agent_0": True, "agent_1": True} and not any(terminations.values())
    assert env.agents == []
    with pytest.raises(RuntimeError, match="call reset"):
        env.step({"agent_0": 0, "agent_1": 0})


def test_gridworld_goal_needs_both_agents():
    env = CooperativeGridWorld(size=3)
    env.reset()
    _, rewards, terminations, _, _ = env.step({"agent_0": 2, "agent_1": 2})
    _, rewards, terminations, _, _ = env.step({"agent_0": 2, "agent_1": 2})
    assert not terminations["agent_0"]
    _, rewards, terminations, _, _ = env.step({"agent_0": 1, "agent_1": 4})  # agent_1 still at (2, 2)
    assert not terminations["agent_0"]
    _, rewards, terminations, _, _ = env.step({"agent_0": 4, "agent_1": 3})
    assert terminations["agent_1"] and rewards["agent_1"] == 1.0


def test_clear_errors():
    env = TwoStepGame()
    env.reset()
    with pytest.raises(KeyError, match="unknown agent 'agent_7'"):
        env.observation_space("agent_7")
    with pytest.raises(KeyError, match=r"unknown or finished agents \['bob'\]"):
        env.step({"agent_0": 0, "agent_1": 0, "bob": 1})
    with pytest.raises(KeyError, match=r"no action for agents \['agent_1'\]"):
        env.step({"agent_0": 0})
    with pytest.raises(ValueError, match="action 2 of agent 'agent_1' is not in Discrete\\(2\\)"):
        env.step({"agent_0": 0, "agent_1": 2})
    with pytest.raises(TypeError, match="must be a dict"):
        env.step([0, 1])
    with pytest.raises(lamina.errors.ShapeError, match="QMixer"):
        QMixer(2, 3)(lamina.tensor(np.zeros((4, 3))), lamina.tensor(np.zeros((4, 3))))
    with pytest.raises(ValueError, match="mixer must be one of"):
        MultiAgentQLearner(2, 3, 2, 3, mixer="qtran")



@pytest.mark.parametrize("hypernet_layers", [1, 2])
def test_qmix_mixer_is_monotonic_in_every_agent_q(hypernet_layers):
    lamina.manual_seed(hypernet_layers)
    mixer = QMixer(n_agents=3, state_dim=5, embed_dim=8, hypernet_layers=hypernet_layers)
    rng = np.random.default_rng(0)
    for scale in (0.1, 1.0, 10.0):
        qs = lamina.tensor(rng.standard_normal((64, 3)).astype(np.float32) * scale, requires_grad=True)
        states = lamina.tensor(rng.standard_normal((64, 5)).astype(np.float32) * scale)
        mixer(qs, states).sum().backward()
        assert np.all(qs.grad >= 0)


def torch_qmix(params: dict, qs, states, layers: int):
    """QMIX's mixer as PyMARL writes it (torch.bmm of the hypernetworks' reshaped outputs)."""
    def hyper(prefix, x, hidden):
        if hidden:
            x = torch.relu(x @ params[f"{prefix}.dense.weight"] + params[f"{prefix}.dense.bias"])
            return x @ params[f"{prefix}.dense_1.weight"] + params[f"{prefix}.dense_1.bias"]
        return x @ params[f"{prefix}.dense.weight"] + params[f"{prefix}.dense.bias"]
    batch, n = qs.shape
    w1 = torch.abs(hyper("hyper_w1", states, layers == 2)).view(batch, n, -1)
    b1 = hyper("hyper_b1", states, False).view(batch, 1, -1)
    hidden = torch.nn.functional.elu(torch.bmm(qs.view(batch, 1, n), w1) + b1)
    w_final = torch.abs(hyper("hyper_w2", states, layers == 2)).view(batch, -1, 1)
    v = hyper("value", states, True).view(batch, 1, 1)
    return (torch.bmm(hidden, w_final) + v).view(batch)


@pytest.mark.parametrize("hypernet_layers", [1, 2])
def test_qmix_mixer_matches_torch_in_values_and_gradients(float64, hypernet_layers):
    lamina.manual_seed(0)
    mixer = QMixer(n_agents=3, state_dim=4, embed_dim=6, hypernet_layers=hypernet_layers, hypernet_embed=5)
    rng = np.random.default_rng(1)
    qs_array, states_array = rng.standard_normal((7, 3)), rng.standard_normal((7, 4))
    upstream = rng.standard_normal(7)
    qs, states = lamina.tensor(qs_array, requires_grad=True), lamina.tensor(states_array, requires_grad=True)
    out = mixer(qs, states)
    (out * lamina.tensor(upstream)).sum().backward()
    params = {name: torch.tensor(np.asarray(p.data), requires_grad=True) for name, p in mixer.named_parameters()}
    t_qs, t_states = torch.tensor(qs_array, requires_grad=True), torch.tensor(states_array, requires_grad=True)
    expected = torch_qmix(params, t_qs, t_states, hypernet_layers)
    (expected * torch.tensor(upstream)).sum().backward()
    assert_close(out.numpy(), expected.detach().numpy(), 1e-10, "Q_tot")
    assert_close(qs.grad, t_qs.grad.numpy(), 1e-10, "dQ_tot/dQ_i")
    assert_close(states.grad, t_states.grad.numpy(), 1e-10, "dQ_tot/ds")
    for name, p in mixer.named_parameters():
        assert_close(p.grad, params[name].grad.numpy(), 1e-10, name)


def test_qmix_mixer_gradcheck(float64):
    lamina.manual_seed(2)
    mixer = QMixer(n_agents=2, state_dim=3, embed_dim=4, hypernet_layers=2, hypernet_embed=4)
    rng = np.random.default_rng(2)
    assert check_gradients(lambda q, s: mixer(q, s), rng.standard_normal((5, 2)), rng.standard_normal((5, 3)))


def test_vdn_mixer_is_the_sum():
    rng = np.random.default_rng(3)
    qs = lamina.tensor(rng.standard_normal((6, 4)), requires_grad=True)
    total = VDNMixer()(qs, None)
    np.testing.assert_allclose(total.numpy(), qs.numpy().sum(axis=1), rtol=1e-12)
    total.sum().backward()
    np.testing.assert_array_equal(qs.grad, np.ones((6, 4)))


def learned_return(learner_class, seed):
    """The QMIX paper's setting: uniformly random exploration throughout (epsilon = 1), then the
    greedy joint policy's return."""
    lamina.manual_seed(seed)
    env = TwoStepGame()
    learner = learner_class.for_env(env, eps_start=1.0, eps_end=1.0, hidden=(32,), lr=5e-3,
                                    target_update_interval=50, seed=seed)
    learner.train(env, 300, seed=seed)
    return run_episodes(env, learner, 1, learn=False)[0]


def test_qmix_learns_the_optimal_two_step_policy_and_vdn_settles_on_7():
    assert learned_return(QMIX, 0) == 8.0
    assert learned_return(VDN, 0) == 7.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tabular_independent_q_learners_meet_on_the_goal(seed):
    env = CooperativeGridWorld(size=3)
    learner = TabularIndependentQLearning.for_env(env, eps_decay=1500, seed=seed)
    run_episodes(env, learner, 300, seed=seed)
    greedy = run_episodes(env, learner, 1, learn=False)[0]
    assert greedy >= env.optimal_return - 0.025  # the goal, at most two steps late


def test_deep_independent_q_learners_meet_on_the_goal():
    lamina.manual_seed(0)
    env = CooperativeGridWorld(size=3, max_steps=10)
    learner = IndependentQLearning.for_env(env, eps_decay=1000, hidden=(32,), lr=1e-2, target_update_interval=20,
                                           seed=0)
    learner.train(env, 250, seed=0)
    assert run_episodes(env, learner, 1, learn=False)[0] >= env.optimal_return - 0.025



class UniformActions:
    """Uniformly random actions from each agent's space (a baseline learner that learns nothing)."""

    def __init__(self, env):
        self.env = env
        for agent in env.possible_agents:
            env.action_space(agent).seed(0)

    def act(self, observations, explore=True):
        return {agent: self.env.action_space(agent).sample() for agent in observations}


def test_maddpg_critics_see_every_agent_and_actors_only_their_own_observation():
    env = Rendezvous()
    learner = MADDPG.for_env(env, hidden=(8,), seed=0)
    observations, _ = env.reset(seed=0)
    assert next(learner.critics[0].net.children()).weight.shape[0] == 2 * 4 + 2 * 2
    assert next(learner.actors[1].net.children()).weight.shape[0] == 4
    actions = learner.act(observations, explore=False)
    assert all(env.action_space(agent).contains(action) for agent, action in actions.items())
    with pytest.raises(ValueError, match="MADDPG: every agent needs the same flat Box"):
        MADDPG.for_env(TwoStepGame())


def test_maddpg_agents_learn_to_meet():
    lamina.manual_seed(0)
    env = Rendezvous()
    learner = MADDPG.for_env(env, hidden=(32, 32), train_freq=2, seed=0)
    random_return = np.mean(run_episodes(Rendezvous(), UniformActions(env), 10, seed=100, learn=False))
    learner.train(env, 40, seed=0)
    learned_return = np.mean(run_episodes(Rendezvous(), learner, 10, seed=100, learn=False))
    assert learned_return > 0.2 * random_return  # returns are negative distances


def test_readme_bandits_and_multiagent_section_runs():
    printed, _ = run_readme_section("Bandits and cooperative multi-agent RL")
    lines = [line.split(" ", 1) for line in printed.splitlines()]
    (_, ucb), (_, thompson), (_, ucb_contextual), (_, linucb), _, (_, qmix), (_, vdn) = lines
    for half, full in (map(int, ucb.split()), map(int, thompson.split())):
        assert full < 1.6 * half and full < 150  # random play would reach about 500
    assert int(linucb) < 0.25 * int(ucb_contextual)
    assert printed.splitlines()[4] == "['agent_0', 'agent_1'] (18,) {'agent_0': -0.01, 'agent_1': -0.01}"
    assert qmix == "8.0" and vdn == "7.0"
