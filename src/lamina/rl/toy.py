"""Tiny environments that agents solve in seconds, for tests and quick checks."""

from __future__ import annotations

import numpy

from lamina.rl.classic_control import _check_action
from lamina.rl.env import Env
from lamina.rl.spaces import Box, Discrete


class Chain(Env):
    """A corridor of ``n`` cells, starting in cell 0: action 1 moves right and 0 left (a wall at
    cell 0). Each step costs ``step_reward``; reaching the last cell pays ``goal_reward`` and
    terminates. Observation: the one-hot code of the cell. The optimal return is
    ``goal_reward + (n - 2) * step_reward`` (n - 1 moves to the right)."""

    def __init__(self, n: int = 6, goal_reward: float = 1.0, step_reward: float = -0.01):
        if n < 2:
            raise ValueError(f"Chain: n must be at least 2, got {n}")
        self.n, self.goal_reward, self.step_reward = n, float(goal_reward), float(step_reward)
        self.observation_space = Box(0.0, 1.0, shape=(n,), dtype=numpy.float32)
        self.action_space = Discrete(2)
        self.position = 0

    @property
    def optimal_return(self) -> float:
        return self.goal_reward + (self.n - 2) * self.step_reward

    def _observation(self) -> numpy.ndarray:
        obs = numpy.zeros(self.n, dtype=numpy.float32)
        obs[self.position] = 1.0
        return obs

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.position = 0
        return self._observation(), {}

    def step(self, action):
        _check_action(self, action)
        self.position = max(self.position + (1 if int(action) == 1 else -1), 0)
        terminated = self.position == self.n - 1
        reward = self.goal_reward if terminated else self.step_reward
        return self._observation(), reward, terminated, False, {}


class GridWorld(Env):
    """A ``size`` x ``size`` grid, starting at the top-left corner, the goal at the bottom-right.
    Actions 0..3 move up, right, down, left (walls keep the agent in place). Each step costs
    ``step_reward``; the goal pays ``goal_reward`` and terminates. Observation: the one-hot code
    of the cell. The optimal return is ``goal_reward + (2 size - 3) step_reward``."""

    MOVES = ((-1, 0), (0, 1), (1, 0), (0, -1))

    def __init__(self, size: int = 4, goal_reward: float = 1.0, step_reward: float = -0.01):
        if size < 2:
            raise ValueError(f"GridWorld: size must be at least 2, got {size}")
        self.size, self.goal_reward, self.step_reward = size, float(goal_reward), float(step_reward)
        self.observation_space = Box(0.0, 1.0, shape=(size * size,), dtype=numpy.float32)
        self.action_space = Discrete(4)
        self.cell = (0, 0)

    @property
    def optimal_return(self) -> float:
        return self.goal_reward + (2 * self.size - 3) * self.step_reward

    def _observation(self) -> numpy.ndarray:
        obs = numpy.zeros(self.size * self.size, dtype=numpy.float32)
        obs[self.cell[0] * self.size + self.cell[1]] = 1.0
        return obs

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.cell = (0, 0)
        return self._observation(), {}

    def step(self, action):
        _check_action(self, action)
        dr, dc = self.MOVES[int(action)]
        row = min(max(self.cell[0] + dr, 0), self.size - 1)
        col = min(max(self.cell[1] + dc, 0), self.size - 1)
        self.cell = (row, col)
        terminated = self.cell == (self.size - 1, self.size - 1)
        reward = self.goal_reward if terminated else self.step_reward
        return self._observation(), reward, terminated, False, {}


class CueMemory(Env):
    """Remember the cue: the first observation shows one of two cues (a one-hot code drawn at
    random), then ``delay`` blank steps follow, then a decision step (its observation's third
    entry is 1) where action == cue pays +1 and the other action -1, and the episode terminates.
    Actions before the decision change nothing and pay 0. An agent without memory sees the same
    decision observation for both cues, so it is right half of the time at best (expected
    return 0); one that remembers the cue earns 1 every episode."""

    def __init__(self, delay: int = 3):
        if delay < 0:
            raise ValueError(f"CueMemory: delay must be >= 0, got {delay}")
        self.delay = delay
        self.observation_space = Box(0.0, 1.0, shape=(3,), dtype=numpy.float32)
        self.action_space = Discrete(2)
        self.cue, self.t = 0, 0

    def _observation(self) -> numpy.ndarray:
        obs = numpy.zeros(3, dtype=numpy.float32)
        if self.t == 0:
            obs[self.cue] = 1.0
        if self.t == self.delay + 1:
            obs[2] = 1.0
        return obs

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.cue, self.t = int(self.np_random.integers(2)), 0
        return self._observation(), {}

    def step(self, action):
        _check_action(self, action)
        if self.t == self.delay + 1:
            return numpy.zeros(3, dtype=numpy.float32), 1.0 if int(action) == self.cue else -1.0, True, False, {}
        self.t += 1
        return self._observation(), 0.0, False, False, {}


class SparseChain(Chain):
    """A hard-exploration corridor: :class:`Chain` with ``n`` = 30 cells by default and no
    reward but the ``goal_reward`` at the far end. A uniformly random walk from cell 0 needs about
    n^2 steps to get there, so within an episode of a few times n steps it almost never does;
    an agent must be drawn to the cells it has not seen (curiosity, :mod:`lamina.rl.exploration`)."""

    def __init__(self, n: int = 30, goal_reward: float = 1.0):
        super().__init__(n, goal_reward=goal_reward, step_reward=0.0)
