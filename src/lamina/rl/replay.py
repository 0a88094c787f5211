"""A uniform experience-replay buffer on preallocated arrays (Lin, 1992; Mnih et al., 2015)."""

from __future__ import annotations

from typing import NamedTuple

import numpy

from lamina.rl.spaces import seeded_generator


class Batch(NamedTuple):
    """Transitions (s, a, r, s', terminated) stacked along the first axis."""

    obs: numpy.ndarray
    actions: numpy.ndarray
    rewards: numpy.ndarray
    next_obs: numpy.ndarray
    terminated: numpy.ndarray


_ARRAYS = ("obs", "actions", "rewards", "next_obs", "terminated")


class ReplayBuffer:
    """The last ``capacity`` transitions in circular arrays: ``add`` is O(1) and overwrites the
    oldest transition once full; ``sample`` draws ``batch_size`` distinct stored transitions
    uniformly at random."""

    def __init__(self, capacity: int, obs_shape: tuple[int, ...], action_shape: tuple[int, ...] = (),
                 action_dtype=numpy.int64, obs_dtype=numpy.float32, seed: int | None = None):
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"ReplayBuffer: capacity must be a positive int, got {capacity!r}")
        self.capacity = capacity
        self.obs = numpy.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.next_obs = numpy.zeros((capacity, *obs_shape), dtype=obs_dtype)
        self.actions = numpy.zeros((capacity, *action_shape), dtype=action_dtype)
        self.rewards = numpy.zeros(capacity, dtype=numpy.float32)
        self.terminated = numpy.zeros(capacity, dtype=bool)
        self.position = 0
        self.size = 0
        self.rng = seeded_generator(seed)

    def __len__(self) -> int:
        return self.size

    def add(self, obs, action, reward: float, next_obs, terminated: bool) -> None:
        i = self.position
        self.obs[i], self.actions[i], self.rewards[i] = obs, action, reward
        self.next_obs[i], self.terminated[i] = next_obs, terminated
        self.position = (i + 1) % self.capacity
        self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int) -> Batch:
        if batch_size > self.size:
            raise ValueError(f"ReplayBuffer.sample: asked for {batch_size} transitions but only {self.size} stored")
        index = self.rng.choice(self.size, size=batch_size, replace=False)
        return Batch(self.obs[index], self.actions[index], self.rewards[index], self.next_obs[index],
                     self.terminated[index])

    def state_dict(self) -> dict:
        """The stored transitions (copies of the arrays), the write position, the number stored
        and the sampling generator's state (``bit_generator.state``, a JSON-ready dict)."""
        return {"arrays": {name: getattr(self, name).copy() for name in _ARRAYS}, "position": self.position,
                "size": self.size, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` into a buffer of the same capacity, shapes and dtypes."""
        label = type(self).__name__
        arrays = state["arrays"]
        for name in _ARRAYS:
            own, saved = getattr(self, name), numpy.asarray(arrays[name])
            if saved.shape != own.shape or saved.dtype != own.dtype:
                raise ValueError(f"{label}.load_state_dict: {name!r} is {saved.dtype} {saved.shape} in the state "
                                 f"but {own.dtype} {own.shape} in the buffer")
        position, size = int(state["position"]), int(state["size"])
        if not (0 <= position < self.capacity and 0 <= size <= self.capacity):
            raise ValueError(f"{label}.load_state_dict: position {position} and size {size} do not fit a "
                             f"capacity of {self.capacity}")
        for name in _ARRAYS:
            getattr(self, name)[...] = arrays[name]
        self.position, self.size = position, size
        self.rng.bit_generator.state = state["rng"]
