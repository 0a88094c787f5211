"""Quantile distributional RL, learning: on a two-armed bandit with a known return distribution
(a safe arm and a bimodal risky arm of higher mean) the learned quantiles approach the true ones,
and IQN's CVaR policy takes the safe arm where the risk-neutral one takes the risky arm; QR-DQN
balances CartPole far longer than a random policy."""

import numpy as np
import pytest
from scipy.optimize import brentq
from scipy.stats import norm

from helpers import run_readme_section
from lamina.rl import (
    Box,
    Discrete,
    Env,
    IQNAgent,
    QRDQNAgent,
    evaluate_policy,
    make,
    quantile_midpoints,
    train_iqn,
    train_qrdqn,
)


class TwoArms(Env):
    """One-step episodes: arm 0 pays N(1, 0.2^2); arm 1 pays N(-2, 0.5^2) with probability 1/4 and
    N(3, 0.5^2) otherwise (mean 1.75, CVaR at 1/4 about -2)."""

    def __init__(self):
        self.observation_space = Box(-1.0, 1.0, (1,))
        self.action_space = Discrete(2)

    def reset(self, seed=None, options=None):
        super().reset(seed=seed)
        return np.ones(1, np.float32), {}

    def step(self, action):
        rng = self.np_random
        if action == 0:
            reward = 1.0 + 0.2 * rng.standard_normal()
        else:
            reward = (-2.0 if rng.random() < 0.25 else 3.0) + 0.5 * rng.standard_normal()
        return np.ones(1, np.float32), float(reward), True, False, {}


def true_quantiles(taus) -> np.ndarray:
    """(2, len(taus)): the arms' quantile functions at taus."""
    def risky(tau):
        return brentq(lambda x: 0.25 * norm.cdf(x, -2, 0.5) + 0.75 * norm.cdf(x, 3, 0.5) - tau, -10.0, 10.0)
    return np.stack([1.0 + 0.2 * norm.ppf(taus), [risky(t) for t in taus]])


ONE = np.ones((1, 1))
EXPLORE_ONLY = dict(eps_start=1.0, eps_end=1.0, learning_starts=64, lr=3e-3)  # both arms pulled equally


def test_qrdqn_learns_the_quantiles_of_a_bimodal_return():
    agent = QRDQNAgent(1, 2, hidden=(32,), n_quantiles=8, seed=0, **EXPLORE_ONLY)
    train_qrdqn(TwoArms(), 1500, agent=agent, seed=0)
    error = np.abs(agent.quantiles(ONE)[0] - true_quantiles(quantile_midpoints(8)))
    # measured after 1500 steps (seed 0, OpenBLAS Haswell / default kernels): mean error safe arm 0.052 / 0.051,
    # risky arm 0.227 / 0.228; after 2000 steps (seeds 0, 1, 2): safe 0.045 / 0.047 / 0.049, risky 0.21 / 0.29 / 0.25;
    # the risky arm's quantiles span -2.3 .. 3.7, and all eight put at its mean 1.75 would be off by 1.9
    assert error[0].mean() < 0.12 and error[1].mean() < 0.4
    assert agent.predict(np.ones(1)) == 1


def test_iqn_cvar_policy_prefers_the_safe_arm_and_the_neutral_one_the_risky_arm():
    agent = IQNAgent(1, 2, hidden=(32,), head_hidden=32, batch_size=32, n_samples=8, n_target_samples=8,
                     n_policy_samples=8, seed=0, **EXPLORE_ONLY)
    train_iqn(TwoArms(), 600, agent=agent, seed=0)
    taus = quantile_midpoints(8)
    error = np.abs(agent.quantiles(ONE, taus[None])[0].T - true_quantiles(taus))
    neutral = agent.action_values(ONE)[0]
    agent.distortion, agent.eta = "cvar", 0.25
    cvar = agent.action_values(ONE)[0]
    # measured (seeds 0, 1, 2): mean quantile error safe 0.085 / 0.093 / 0.079, risky 0.48 / 0.39 / 0.25;
    # Q risky - Q safe 0.66 / 1.19 / 0.72 (true 0.75); Q_CVaR safe - risky 2.20 / 1.79 / 2.22 (true 3.0), after
    # 800 steps; after these 600 (seed 0, three runs, OpenBLAS Haswell and default kernels): quantile error safe
    # 0.068-0.091, risky 0.28-0.46; Q risky - Q safe 0.86-0.98; Q_CVaR safe - risky 1.57-1.89
    assert error[0].mean() < 0.25 and error[1].mean() < 0.7
    assert neutral[1] > neutral[0] + 0.3 and cvar[0] > cvar[1] + 1.0
    assert agent.predict(np.ones(1)) == 0
    agent.distortion, agent.eta = "neutral", None
    assert agent.predict(np.ones(1)) == 1


@pytest.fixture(scope="module")
def readme_run():
    """The README section: QR-DQN trained on CartPole for 4000 steps with the settings below."""
    return run_readme_section("Quantile distributional RL")


def test_qrdqn_balances_cartpole_far_longer_than_a_random_policy(readme_run):
    """The README's agent: QRDQNAgent.for_env(env, hidden=(64, 64), n_quantiles=16, learning_starts=500,
    train_freq=2, target_update_interval=200, eps_decay=2500, seed=0), trained by train_qrdqn for 4000 steps."""
    _, names = readme_run
    agent = names["agent"]
    assert isinstance(agent, QRDQNAgent) and agent.quantiles(np.zeros((1, 4))).shape == (1, 2, 16)
    greedy = evaluate_policy(agent, make("CartPole-v1"), n_episodes=3, seed=7)
    rng = np.random.default_rng(0)
    random = evaluate_policy(lambda obs: int(rng.integers(2)), make("CartPole-v1"), n_episodes=20, seed=7)
    # measured (seeds 0, 1, 2): greedy mean 127 / 133 / 197 after 4000 steps (about 6 s), random 20.8;
    # this agent (seed 0): 126.7 with OpenBLAS's Haswell kernels, 115.3 with the default ones
    assert greedy.mean() > 4 * random.mean() and greedy.mean() > 80


def test_readme_section_runs(readme_run):
    printed, _ = readme_run
    assert printed.split("\n")[:4] == ["0.90625", "[0.1 0.3]", "(1, 2, 16)", "True"]
