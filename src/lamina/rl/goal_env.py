"""Goal-conditioned environments with the interface of Gymnasium-Robotics' ``GoalEnv``:
observations are dicts with ``observation``, ``achieved_goal`` and ``desired_goal``, and the
reward is a function of the goals, ``compute_reward(achieved_goal, desired_goal, info)``,
vectorised over a leading batch axis, so that a replay buffer can recompute it for any goal
(Hindsight Experience Replay, Andrychowicz et al., 2017).

Two tasks: the paper's bit flipping (n bits, reward -1 until the state equals the goal) and
a 2-D point steered by a bounded velocity to within epsilon of a goal."""

from __future__ import annotations

import numpy

from lamina.errors import ShapeError
from lamina.rl.classic_control import _check_action
from lamina.rl.env import Env
from lamina.rl.spaces import Box, Discrete, Space

GOAL_KEYS = ("observation", "achieved_goal", "desired_goal")


class DictSpace(Space):
    """A dict of named spaces (Gymnasium's ``spaces.Dict``): ``sample`` draws each entry from
    its space, ``contains`` asks each space about the entry of the same name."""

    def __init__(self, spaces: dict[str, Space]):
        super().__init__()
        self.spaces = dict(spaces)
        self.shape, self.dtype = (), numpy.dtype(object)

    def __getitem__(self, name: str) -> Space:
        return self.spaces[name]

    def seed(self, seed: int | None = None) -> None:
        for i, space in enumerate(self.spaces.values()):
            space.seed(None if seed is None else seed + i)

    def sample(self) -> dict:
        return {name: space.sample() for name, space in self.spaces.items()}

    def contains(self, x) -> bool:
        return isinstance(x, dict) and set(x) == set(self.spaces) and all(
            space.contains(x[name]) for name, space in self.spaces.items())

    def __repr__(self) -> str:
        return f"DictSpace({', '.join(f'{name}: {space}' for name, space in self.spaces.items())})"


class GoalEnv(Env):
    """The base of goal environments: ``reset`` and ``step`` return dict observations (keys
    :data:`GOAL_KEYS`); subclasses implement :meth:`compute_reward` and may override
    :meth:`compute_terminated`. ``info["is_success"]`` tells whether the goal is reached."""

    def compute_reward(self, achieved_goal, desired_goal, info) -> numpy.ndarray:
        """The reward of reaching ``achieved_goal`` when ``desired_goal`` is asked, for arrays of
        goals of shape (..., goal_dim); returns shape (...)."""
        raise NotImplementedError(f"{type(self).__name__}.compute_reward is not implemented")

    def compute_terminated(self, achieved_goal, desired_goal, info) -> numpy.ndarray:
        """Whether the episode ends there (a terminal state), shaped like :meth:`compute_reward`;
        by default never."""
        return numpy.zeros(numpy.shape(achieved_goal)[:-1], dtype=bool)

    def _goals(self, label: str, achieved_goal, desired_goal) -> tuple[numpy.ndarray, numpy.ndarray]:
        achieved, desired = numpy.asarray(achieved_goal), numpy.asarray(desired_goal)
        goal_shape = self.observation_space["desired_goal"].shape
        if achieved.shape != desired.shape or achieved.shape[-1:] != goal_shape:
            raise ShapeError(f"{type(self).__name__}.{label}: goals must share a shape (..., {goal_shape[0]}), got "
                             f"achieved_goal {achieved.shape} and desired_goal {desired.shape}")
        return achieved, desired


class BitFlipping(GoalEnv):
    """The bit-flipping task of Andrychowicz et al. (2017): the state and the goal are vectors
    of ``n_bits`` bits, drawn uniformly at reset; action i flips bit i. The reward is
    r(s, g) = -[s != g], i.e. -1 until the state equals the goal and 0 there; episodes last
    ``n_bits`` steps (truncated) and, with ``terminate_on_success``, end (terminated) on reaching
    the goal. Observation, achieved goal: the state; desired goal: the goal (float32 0/1)."""

    def __init__(self, n_bits: int = 8, terminate_on_success: bool = True):
        if isinstance(n_bits, bool) or not isinstance(n_bits, int) or n_bits < 1:
            raise ValueError(f"BitFlipping: n_bits must be a positive int, got {n_bits!r}")
        self.n_bits, self.terminate_on_success = n_bits, terminate_on_success
        self.max_episode_steps = n_bits
        bits = Box(0.0, 1.0, shape=(n_bits,), dtype=numpy.float32)
        self.observation_space = DictSpace({"observation": bits, "achieved_goal": bits, "desired_goal": bits})
        self.action_space = Discrete(n_bits)
        self.state = numpy.zeros(n_bits, dtype=numpy.float32)
        self.goal = numpy.zeros(n_bits, dtype=numpy.float32)
        self.t = 0

    def _observation(self) -> dict:
        return {"observation": self.state.copy(), "achieved_goal": self.state.copy(), "desired_goal": self.goal.copy()}

    def compute_reward(self, achieved_goal, desired_goal, info) -> numpy.ndarray:
        achieved, desired = self._goals("compute_reward", achieved_goal, desired_goal)
        return numpy.where(numpy.any(achieved != desired, axis=-1), -1.0, 0.0).astype(numpy.float32)

    def compute_terminated(self, achieved_goal, desired_goal, info) -> numpy.ndarray:
        achieved, desired = self._goals("compute_terminated", achieved_goal, desired_goal)
        return numpy.all(achieved == desired, axis=-1) & self.terminate_on_success

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.state = self.np_random.integers(2, size=self.n_bits).astype(numpy.float32)
        self.goal = self.np_random.integers(2, size=self.n_bits).astype(numpy.float32)
        self.t = 0
        return self._observation(), {"is_success": bool(numpy.all(self.state == self.goal))}

    def step(self, action):
        _check_action(self, action)
        self.state[int(action)] = 1.0 - self.state[int(action)]
        self.t += 1
        success = bool(numpy.all(self.state == self.goal))
        reward = float(self.compute_reward(self.state, self.goal, {}))
        return (self._observation(), reward, success and self.terminate_on_success, self.t >= self.n_bits,
                {"is_success": success})


class PointReach(GoalEnv):
    """A point in the square [-``size``, ``size``]^2 moved by a velocity: the action a in
    [-1, 1]^2 moves it to clip(x + ``max_speed`` a, -size, size). Start and goal are uniform in
    the square; the reward is -[||x - g|| > epsilon] (0 within ``epsilon`` of the goal, else -1).
    Episodes last ``max_episode_steps`` steps (truncated) and, with ``terminate_on_success``,
    end on reaching the goal. Observation and achieved goal: the position; desired goal: g."""

    def __init__(self, size: float = 1.0, max_speed: float = 0.2, epsilon: float = 0.15,
                 max_episode_steps: int = 20, terminate_on_success: bool = False):
        for name, value in (("size", size), ("max_speed", max_speed), ("epsilon", epsilon)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ValueError(f"PointReach: {name} must be a positive number, got {value!r}")
        if isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, int) or max_episode_steps < 1:
            raise ValueError(f"PointReach: max_episode_steps must be a positive int, got {max_episode_steps!r}")
        self.size, self.max_speed, self.epsilon = float(size), float(max_speed), float(epsilon)
        self.max_episode_steps, self.terminate_on_success = max_episode_steps, terminate_on_success
        square = Box(-self.size, self.size, shape=(2,), dtype=numpy.float32)
        self.observation_space = DictSpace({"observation": square, "achieved_goal": square, "desired_goal": square})
        self.action_space = Box(-1.0, 1.0, shape=(2,), dtype=numpy.float32)
        self.position = numpy.zeros(2, dtype=numpy.float32)
        self.goal = numpy.zeros(2, dtype=numpy.float32)
        self.t = 0

    def _observation(self) -> dict:
        return {"observation": self.position.copy(), "achieved_goal": self.position.copy(),
                "desired_goal": self.goal.copy()}

    def _reached(self, achieved, desired) -> numpy.ndarray:
        return numpy.linalg.norm(achieved.astype(numpy.float64) - desired, axis=-1) <= self.epsilon

    def compute_reward(self, achieved_goal, desired_goal, info) -> numpy.ndarray:
        achieved, desired = self._goals("compute_reward", achieved_goal, desired_goal)
        return self._reached(achieved, desired).astype(numpy.float32) - 1.0

    def compute_terminated(self, achieved_goal, desired_goal, info) -> numpy.ndarray:
        achieved, desired = self._goals("compute_terminated", achieved_goal, desired_goal)
        return self._reached(achieved, desired) & self.terminate_on_success

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self.position = self.np_random.uniform(-self.size, self.size, 2).astype(numpy.float32)
        self.goal = self.np_random.uniform(-self.size, self.size, 2).astype(numpy.float32)
        self.t = 0
        return self._observation(), {"is_success": bool(self._reached(self.position, self.goal))}

    def step(self, action):
        action = numpy.asarray(action, dtype=numpy.float64)
        if action.shape != (2,) or not numpy.all(numpy.isfinite(action)):
            raise ValueError(f"PointReach.step: the action must be 2 finite numbers, got {action!r}")
        action = numpy.clip(action, -1.0, 1.0)
        self.position = numpy.clip(self.position + self.max_speed * action, -self.size, self.size).astype(numpy.float32)
        self.t += 1
        success = bool(self._reached(self.position, self.goal))
        reward = success - 1.0
        return (self._observation(), reward, success and self.terminate_on_success, self.t >= self.max_episode_steps,
                {"is_success": success})
