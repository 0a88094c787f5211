"""The environment interface of Gymnasium: ``reset(seed=None) -> (obs, info)`` and
``step(action) -> (obs, reward, terminated, truncated, info)``.

``terminated`` means the task's own end (a terminal state: no value beyond it); ``truncated``
means the episode was cut short from outside (a time limit: the state still has a value)."""

from __future__ import annotations

import numpy

from lamina.rl.spaces import Space, seeded_generator


class Env:
    """The base of every environment: subclasses set ``observation_space`` and ``action_space``
    and implement ``reset`` (calling ``super().reset(seed=seed)`` first) and ``step``."""

    observation_space: Space
    action_space: Space
    max_episode_steps: int | None = None

    _np_random: numpy.random.Generator | None = None

    @property
    def np_random(self) -> numpy.random.Generator:
        """The environment's generator (seeded by ``reset(seed=...)``)."""
        if self._np_random is None:
            self._np_random = seeded_generator(None)
        return self._np_random

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._np_random = seeded_generator(seed)
        return None, {}

    def step(self, action):
        raise NotImplementedError(f"{type(self).__name__}.step is not implemented")

    def close(self) -> None:
        pass

    @property
    def unwrapped(self) -> Env:
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}()"


class Wrapper(Env):
    """An environment that forwards to ``env``, changing part of its behaviour."""

    def __init__(self, env: Env):
        self.env = env
        self.observation_space = env.observation_space
        self.action_space = env.action_space

    def reset(self, seed: int | None = None, options: dict | None = None):
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        return self.env.step(action)

    @property
    def np_random(self) -> numpy.random.Generator:
        return self.env.np_random

    @property
    def unwrapped(self) -> Env:
        return self.env.unwrapped

    def __getattr__(self, name: str):
        if name.startswith("_"):
            raise AttributeError(name)
        return getattr(self.env, name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.env!r})"


class TimeLimit(Wrapper):
    """Ends an episode with ``truncated=True`` once it has run ``max_episode_steps`` steps."""

    def __init__(self, env: Env, max_episode_steps: int):
        super().__init__(env)
        if isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, int) or max_episode_steps < 1:
            raise ValueError(f"TimeLimit: max_episode_steps must be a positive int, got {max_episode_steps!r}")
        self.max_episode_steps = max_episode_steps
        self.elapsed_steps = 0

    def reset(self, seed: int | None = None, options: dict | None = None):
        self.elapsed_steps = 0
        return self.env.reset(seed=seed, options=options)

    def step(self, action):
        obs, reward, terminated, truncated, info = self.env.step(action)
        self.elapsed_steps += 1
        if self.elapsed_steps >= self.max_episode_steps:
            truncated = True
        return obs, reward, terminated, truncated, info
