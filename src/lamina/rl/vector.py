"""``VectorEnv``: n copies of an environment stepped together, each reset as its episode ends."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy

from lamina.rl.env import Env


class VectorEnv:
    """Runs ``len(env_fns)`` environments in lockstep (in this process).

    ``reset(seed)`` seeds copy i with ``seed + i``. ``step(actions)`` returns stacked arrays
    ``(obs, rewards, terminated, truncated, info)``. A copy whose episode ended is reset in the
    same step: its row of ``obs`` is then the first observation of the next episode, and
    ``info["final_obs"]`` holds the last observation of the finished one (rows where
    ``info["done"]`` is True; the other rows repeat ``obs``)."""

    def __init__(self, env_fns: Sequence[Callable[[], Env]]):
        if not env_fns:
            raise ValueError("VectorEnv: needs at least one environment constructor")
        self.envs = [fn() for fn in env_fns]
        self.num_envs = len(self.envs)
        self.single_observation_space = self.envs[0].observation_space
        self.single_action_space = self.envs[0].action_space

    def reset(self, seed: int | None = None):
        results = [env.reset(seed=None if seed is None else seed + i) for i, env in enumerate(self.envs)]
        return numpy.stack([obs for obs, _ in results]), {}

    def step(self, actions):
        actions = numpy.asarray(actions)
        if len(actions) != self.num_envs:
            raise ValueError(f"VectorEnv.step: got {len(actions)} actions for {self.num_envs} environments")
        observations, final_obs = [], []
        rewards = numpy.zeros(self.num_envs)
        terminated = numpy.zeros(self.num_envs, dtype=bool)
        truncated = numpy.zeros(self.num_envs, dtype=bool)
        for i, (env, action) in enumerate(zip(self.envs, actions)):
            action = action.item() if action.ndim == 0 else action
            obs, rewards[i], terminated[i], truncated[i], _ = env.step(action)
            final_obs.append(obs)
            if terminated[i] or truncated[i]:
                obs, _ = env.reset()
            observations.append(obs)
        info = {"final_obs": numpy.stack(final_obs), "done": terminated | truncated}
        return numpy.stack(observations), rewards, terminated, truncated, info

    def close(self) -> None:
        for env in self.envs:
            env.close()
