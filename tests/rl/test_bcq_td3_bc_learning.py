"""BCQ and TD3+BC learn from a fixed dataset of a poor behaviour policy (zero force plus wide
Gaussian noise) on a one-dimensional point mass, and beat both the dataset's average return and
behaviour cloning by a wide margin."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from lamina.rl import Box
from lamina.rl.env import Env
from lamina.rl.evaluation import evaluate_policy
from lamina.rl.offline import BehaviorCloning, collect_dataset, train_bcq, train_td3_bc


class PointMass(Env):
    """Position s in [-1, 1] (start uniform), force a in [-1, 1]: s <- clip(s + 0.3 a, -1, 1),
    reward -|s|, 10 steps. The best return, heading straight for 0, is about -0.4."""

    def __init__(self):
        self.observation_space = Box(-1.0, 1.0, (1,))
        self.action_space = Box(-1.0, 1.0, (1,))

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        self.s, self.t = self.np_random.uniform(-1, 1, 1).astype(np.float32), 0
        return self.s.copy(), {}

    def step(self, action):
        force = float(np.clip(np.asarray(action).reshape(-1)[0], -1, 1))
        self.s, self.t = np.clip(self.s + 0.3 * force, -1, 1).astype(np.float32), self.t + 1
        return self.s.copy(), -abs(float(self.s[0])), False, self.t >= 10, {}


def point_mass_baselines(seed):
    """(env, dataset, the dataset's mean episode return, behaviour cloning's mean return)."""
    env = PointMass()
    data = collect_dataset(env, lambda obs: np.zeros(1, np.float32), n_steps=2000, noise=0.6, seed=seed)
    lamina.manual_seed(seed)
    bc = BehaviorCloning.for_env(env, seed=seed)
    bc.fit(data, 300)
    return env, data, data.episode_returns().mean(), evaluate_policy(bc, env, 20, seed=seed).mean()


@pytest.fixture(scope="module")
def point_mass_data():
    return point_mass_baselines(0)


def test_bcq_beats_the_dataset_and_behaviour_cloning(point_mass_data):
    env, data, data_return, bc_return = point_mass_data
    lamina.manual_seed(0)
    agent, returns = train_bcq(data, env, steps=400, eval_episodes=20, seed=0, gamma=0.9, n_select=20)
    # measured after 600 steps (seeds 0, 1, 2): BCQ -1.26, -1.47, -1.56; behaviour cloning -3.94, -4.61, -5.20;
    # the dataset's episodes -5.14, -5.18, -5.31 on average; after these 400 steps (seed 0): BCQ -1.43
    # (-1.45 with OpenBLAS's default kernels instead of Haswell) against the bar of -1.94
    assert returns.mean() > max(data_return, bc_return) + 2.0
    assert agent.updates == 400


def test_td3_bc_beats_the_dataset_and_behaviour_cloning(point_mass_data):
    env, data, data_return, bc_return = point_mass_data
    lamina.manual_seed(0)
    agent, returns = train_td3_bc(data, env, steps=600, eval_episodes=20, seed=0, gamma=0.9)
    # measured (seeds 0, 1, 2): TD3+BC -0.67, -0.99, -0.66 (behaviour cloning and the data as above)
    assert returns.mean() > max(data_return, bc_return) + 2.5
    assert agent.obs_mean.shape == (1,)
