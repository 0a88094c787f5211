"""Neuroevolution on CartPole: a small tanh MLP policy, started from all-zero weights (always
pushing left, return about 9), evolved by CMA-ES to the environment's maximum return of 500."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.nn import vector_to_parameters
from lamina.optim.evolution import module_vector
from lamina.rl import episode_return, evolve_policy, make, mlp


def zero_policy():
    policy = mlp(4, [8], 2, activation="tanh")
    vector_to_parameters(np.zeros(sum(p.size for p in policy.parameters())), list(policy.parameters()))
    return policy


def test_episode_return_is_the_mean_of_whole_episodes():
    env = make("CartPole-v1")
    expected = []
    for episode in range(3):
        env.reset(seed=5 + episode)
        total, done = 0.0, False
        while not done:                                   # zero weights: equal outputs, argmax 0
            _, reward, terminated, truncated, _ = env.step(0)
            total, done = total + reward, terminated or truncated
        expected.append(total)
    assert episode_return(zero_policy(), env, n_episodes=3, seed=5) == pytest.approx(np.mean(expected))
    assert np.mean(expected) < 15


def test_cma_es_evolves_a_cartpole_policy_to_the_maximum_return():
    """Measured: seed 0 reaches 500 on its 3 training episodes after 18 generations (288
    episodes' worth of candidates, about 1.7 s), and 500 on 10 unseen episodes."""
    env = make("CartPole-v1")
    policy = zero_policy()
    result = evolve_policy(policy, env, "cma_es", generations=40, n_episodes=3, seed=0, target_return=500,
                           sigma=0.5)
    assert -result.f == 500 and result.evaluations <= 640
    np.testing.assert_allclose(module_vector(policy), result.x, rtol=1e-6, atol=1e-7)
    assert episode_return(policy, env, n_episodes=10, seed=100) >= 200


def test_evolve_policy_checks_its_arguments():
    with pytest.raises(ValueError, match="n_episodes must be >= 1, got 0"):
        evolve_policy(zero_policy(), make("CartPole-v1"), n_episodes=0)
