"""Scoring a trained policy by the returns of whole episodes."""

from __future__ import annotations

from collections.abc import Callable

import numpy

from lamina.rl.env import Env


def evaluate_policy(policy, env: Env, n_episodes: int = 10, seed: int | None = None,
                    deterministic: bool = True) -> numpy.ndarray:
    """The returns of ``n_episodes`` episodes of ``policy`` in ``env`` (episode i reset with
    ``seed + i`` when ``seed`` is given). ``policy`` is an object with ``predict(obs,
    deterministic)`` (:class:`DQNAgent`, :class:`PPO`) or a function obs -> action."""
    act: Callable = (lambda obs: policy.predict(obs, deterministic=deterministic)) if hasattr(policy, "predict") \
        else policy
    returns = numpy.zeros(n_episodes)
    for episode in range(n_episodes):
        obs, _ = env.reset(seed=None if seed is None else seed + episode)
        done = False
        while not done:
            obs, reward, terminated, truncated, _ = env.step(act(obs))
            returns[episode] += reward
            done = terminated or truncated
    return returns
