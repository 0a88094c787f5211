"""Dreamer learns a small continuous task in seconds (a 1-D point pushed towards the origin,
reward -|x|) and clearly beats random actions; the README's Dreamer example runs and prints
what its comments say."""

import numpy as np

import lamina
from helpers import run_readme_section
from lamina.rl import Box, Env, run_dreamer_episode, train_dreamer


class PointToTarget(Env):
    """x' = clip(x + 0.25 a, -2, 2), a in [-1, 1], reward -|x - target|, 15 steps from x ~ U(-1, 1)."""

    def __init__(self, target=0.0):
        self.target = target
        self.observation_space, self.action_space = Box(-2.0, 2.0, (1,)), Box(-1.0, 1.0, (1,))

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.x, self.t = self.np_random.uniform(-1.0, 1.0), 0
        return np.array([self.x], np.float32), {}

    def step(self, action):
        self.x, self.t = float(np.clip(self.x + 0.25 * float(action[0]), -2.0, 2.0)), self.t + 1
        return np.array([self.x], np.float32), -abs(self.x - self.target), False, self.t >= 15, {}


def random_return(env, seed, rng):
    env.reset(seed=seed)
    return sum(env.step(rng.uniform(-1.0, 1.0, 1))[1] for _ in range(15))


def test_dreamer_beats_random_actions_on_a_point_task():
    """Eight episodes (120 steps) of experience; measured: a mean return of -4.68 against -10.55 for
    random actions (a margin of 5.9, bound 3; the same with OpenBLAS's Haswell and default kernels)."""
    lamina.manual_seed(1)
    agent, returns = train_dreamer(PointToTarget(0.5), steps=120, updates_per_episode=30, batch=8, length=8, seed=1,
                                   horizon=8, deter_dim=16, stoch_dim=4, hidden=32, actor_hidden=(32, 32),
                                   model_lr=3e-3, actor_lr=1e-3, critic_lr=1e-3, free_nats=1.0, gamma=0.9)
    env, rng = PointToTarget(0.5), np.random.default_rng(0)
    learned = np.mean([run_dreamer_episode(env, agent, seed=500 + i)[0] for i in range(10)])
    random = np.mean([random_return(env, 500 + i, rng) for i in range(10)])
    assert learned > random + 3.0, (learned, random, returns)


def test_readme_dreamer_section_runs():
    printed, names = run_readme_section("Dreamer: actor-critic learning in imagination")
    assert printed.splitlines() == ["[[1.75 1.5  1.  ]]", "True"], printed
    assert names["dreamer"] > np.mean(names["random"]) + 3.0
