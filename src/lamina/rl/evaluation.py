"""Scoring a trained policy by the returns of whole episodes."""

from __future__ import annotations

from collections.abc import Callable

import numpy

from lamina.autograd import no_grad
from lamina.rl.env import Env
from lamina.rl.networks import obs_tensor
from lamina.rl.spaces import Box, Space


class GreedyPolicy:
    """Acts greedily with a network mapping observations to one output per action: argmax of
    the outputs (Q-values or logits) for a Discrete space, the outputs (the mean action)
    clipped to the bounds for a Box space."""

    def __init__(self, network, action_space: Space):
        self.network, self.action_space = network, action_space

    def predict(self, obs, deterministic: bool = True):
        with no_grad():
            out = self.network(obs_tensor(obs)[None]).numpy()[0]
        if isinstance(self.action_space, Box):
            return numpy.clip(out, self.action_space.low, self.action_space.high)
        return int(out.argmax())


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
