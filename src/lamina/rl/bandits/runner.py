"""Running a bandit policy on a bandit environment and measuring its pseudo-regret."""

from __future__ import annotations

from typing import NamedTuple

import numpy

from lamina.rl.bandits.environments import BanditEnv


class BanditRun(NamedTuple):
    """What :func:`run_bandit` measured, one entry per round: the arms played, the rewards received
    and the cumulative pseudo-regret sum_{s <= t} (max_a mu_a(x_s) - mu_{a_s}(x_s))."""

    actions: numpy.ndarray
    rewards: numpy.ndarray
    regret: numpy.ndarray


def run_bandit(env: BanditEnv, policy, steps: int, seed: int | None = None) -> BanditRun:
    """Play ``steps`` rounds of ``policy`` (``act(context)`` / ``update(arm, reward, context)``) on
    ``env``, reset with ``seed`` first."""
    if not hasattr(env, "expected_rewards"):
        raise TypeError(f"run_bandit: {type(env).__name__} is not a bandit (it has no expected_rewards())")
    if getattr(policy, "n_arms", env.n_arms) != env.n_arms:
        raise ValueError(f"run_bandit: the policy has {policy.n_arms} arms but the bandit {env.n_arms}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"run_bandit: steps must be a positive int, got {steps!r}")
    actions = numpy.zeros(steps, dtype=numpy.int64)
    rewards, gaps = numpy.zeros(steps), numpy.zeros(steps)
    context, _ = env.reset(seed=seed)
    for t in range(steps):
        arm = policy.act(context)
        expected = env.expected_rewards()
        next_context, reward, _, _, _ = env.step(arm)
        policy.update(arm, reward, context)
        actions[t], rewards[t], gaps[t] = arm, reward, expected.max() - expected[arm]
        context = next_context
    return BanditRun(actions, rewards, numpy.cumsum(gaps))
