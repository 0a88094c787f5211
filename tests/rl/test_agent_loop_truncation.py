"""The shared agent loop: truncations reach agents whose ``observe`` takes them (and only those),
Rainbow and R2D2 trained through it take the same steps as a hand-written loop, and R2D2 starts
from a fresh recurrent state."""

import numpy as np

import lamina
from lamina.rl import Chain, CueMemory, R2D2Agent, RainbowAgent, TimeLimit, train_r2d2, train_rainbow
from lamina.rl.agent_loop import observes_truncation, run_agent


class _Recorder:
    """Acts 1 (right) always and keeps what ``observe`` was given."""

    def __init__(self):
        self.calls = []

    def act(self, obs):
        return 1


class _TruncationAware(_Recorder):
    def observe(self, obs, action, reward, next_obs, terminated, truncated=False):
        self.calls.append((terminated, truncated))


class _TerminationOnly(_Recorder):
    def observe(self, obs, action, reward, next_obs, terminated):
        self.calls.append((terminated,))


class _Keywords(_Recorder):
    def observe(self, obs, action, reward, next_obs, terminated, **extra):
        self.calls.append((terminated, extra))


def test_run_agent_passes_truncated_only_to_agents_that_take_it():
    env = TimeLimit(Chain(10), 3)                         # 3 steps right never reach the goal: truncated
    assert [observes_truncation(a) for a in (_TruncationAware(), _TerminationOnly(), _Keywords())] == \
        [True, False, True]
    aware = _TruncationAware()
    assert len(run_agent(env, aware, 6, seed=0)) == 2
    assert aware.calls == [(False, False), (False, False), (False, True)] * 2
    only = _TerminationOnly()
    run_agent(env, only, 6, seed=0)
    assert only.calls == [(False,)] * 6
    keywords = _Keywords()
    run_agent(env, keywords, 3, seed=0)
    assert [extra["truncated"] for _, extra in keywords.calls] == [False, False, True]


def _hand_loop(env, agent, steps, seed):
    """The loop train_rainbow and train_r2d2 ran before they shared run_agent."""
    returns, episode_return = [], 0.0
    obs, _ = env.reset(seed=seed)
    for _ in range(steps):
        action = agent.act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        agent.observe(obs, action, reward, next_obs, terminated, truncated)
        episode_return += reward
        obs = next_obs
        if terminated or truncated:
            returns.append(episode_return)
            obs, _ = env.reset()
            episode_return = 0.0
    return returns


def _same_weights(a, b):
    first, second = a.state_dict(), b.state_dict()
    assert list(first) == list(second)
    for name in first:
        np.testing.assert_array_equal(np.asarray(first[name]), np.asarray(second[name]), err_msg=name)


def test_train_rainbow_takes_the_steps_of_the_hand_loop():
    env = TimeLimit(Chain(6), 5)                          # truncated unless every move goes right
    agents = []
    for _ in range(2):
        lamina.manual_seed(4)
        agents.append(RainbowAgent.for_env(env, seed=4, hidden=(8,), stream_hidden=8, atoms=11, n_step=3,
                                           batch_size=8, learning_starts=16, target_update_interval=20))
    lamina.manual_seed(7)
    trained = train_rainbow(env, 60, agent=agents[0], seed=1)
    lamina.manual_seed(7)
    by_hand = _hand_loop(env, agents[1], 60, seed=1)
    assert trained == by_hand and len(trained) >= 5
    _same_weights(agents[0].online_net, agents[1].online_net)
    assert agents[0].buffer.position == agents[1].buffer.position


def test_train_r2d2_takes_the_steps_of_the_hand_loop_from_a_fresh_state():
    env = CueMemory(2)
    agents = []
    for _ in range(2):
        lamina.manual_seed(2)
        agents.append(R2D2Agent.for_env(env, seed=2, hidden=8, lstm_units=4, head_hidden=8, sequence_length=3,
                                        burn_in=0, n_step=1, batch_size=4, learning_starts=8, train_freq=2))
    agents[0].state = tuple(np.ones_like(s) for s in agents[0].state)      # stopped mid-episode
    lamina.manual_seed(3)
    trained = train_r2d2(env, 40, agent=agents[0], seed=5)
    lamina.manual_seed(3)
    by_hand = _hand_loop(env, agents[1], 40, seed=5)
    assert trained == by_hand and len(trained) >= 5
    _same_weights(agents[0].online_net, agents[1].online_net)
    np.testing.assert_array_equal(agents[0].buffer.h, agents[1].buffer.h)
