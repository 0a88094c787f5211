"""Expert demonstrations for policies that read an observation history and emit action
sequences (the diffusion policy, Chi et al. 2023), and a toy task whose expert is multimodal.

:func:`demonstration_windows` cuts each episode of an :class:`OfflineDataset` at every step t
into a window of the observation history and the action sequence from t on:

    O_t = (o_{t-To+1}, ..., o_t),    A_t = (a_t, ..., a_{t+H-1})

with To = ``n_obs_steps`` and H = ``horizon``; indices before the episode's first step repeat
its first observation and indices past its last step repeat its last action, so every step
of every episode gives one window and no window mixes two episodes.

:class:`ObstacleDetour`: a point going from just below a disc at the origin, (0, -0.31), to the
goal (0, 0.7); :func:`detour_demonstrations` records an expert that passes the disc on the left
or on the right, half of the episodes each, so that at the start the expert's action has two
modes, nearly sideways, whose mean is a short step up into the disc.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy

from lamina.rl.env import Env
from lamina.rl.offline.dataset import OfflineDataset, collect_dataset, concatenate_datasets
from lamina.rl.spaces import Box

__all__ = ["ObstacleDetour", "demonstration_windows", "detour_demonstrations", "detour_expert", "detour_side"]


def demonstration_windows(dataset: OfflineDataset, horizon: int, n_obs_steps: int) -> tuple[numpy.ndarray,
                                                                                              numpy.ndarray]:
    """(O, A): the windows of the module notes, one per row of ``dataset``: observation
    histories O (N, ``n_obs_steps``, obs_dim) and action sequences A (N, ``horizon``, action_dim),
    padded at the episodes' edges by repeating their first observation and last action."""
    for label, value in (("horizon", horizon), ("n_obs_steps", n_obs_steps)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"demonstration_windows: {label} must be a positive int, got {value!r}")
    if dataset.discrete or dataset.actions.ndim != 2:
        raise ValueError(f"demonstration_windows: needs continuous actions of shape (N, action_dim), got "
                         f"{dataset.actions.dtype} of shape {dataset.actions.shape}")
    obs = dataset.observations.reshape(len(dataset), -1)
    obs_rows, action_rows = [], []
    for start, end in dataset.episode_bounds():
        steps = numpy.arange(start, end)
        obs_rows.append(numpy.clip(steps[:, None] + numpy.arange(1 - n_obs_steps, 1), start, end - 1))
        action_rows.append(numpy.clip(steps[:, None] + numpy.arange(horizon), start, end - 1))
    return obs[numpy.concatenate(obs_rows)], dataset.actions[numpy.concatenate(action_rows)]


class ObstacleDetour(Env):
    """A point in the plane moved by a velocity: the action a in [-1, 1]^2 moves it by
    ``max_speed`` a. It starts at (0, -0.31), just below the disc, plus a uniform offset of at
    most ``start_noise`` per axis; reaching within ``goal_radius`` of (0, 0.7) pays 1 and ends the episode
    (``info['is_success']``), entering the disc of ``obstacle_radius`` about the origin costs 1
    and ends it (``info['collided']``), and an episode is cut after ``max_episode_steps``.
    Observation: the position."""

    GOAL = (0.0, 0.7)
    START = (0.0, -0.31)

    def __init__(self, obstacle_radius: float = 0.3, goal_radius: float = 0.15, max_speed: float = 0.1,
                 start_noise: float = 0.0, max_episode_steps: int = 40):
        for label, value, least in (("obstacle_radius", obstacle_radius, 1e-12), ("goal_radius", goal_radius, 1e-12),
                                    ("max_speed", max_speed, 1e-12), ("start_noise", start_noise, 0.0)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < least:
                raise ValueError(f"ObstacleDetour: {label} must be a {'positive' if least else 'non-negative'} "
                                 f"number, got {value!r}")
        if isinstance(max_episode_steps, bool) or not isinstance(max_episode_steps, int) or max_episode_steps < 1:
            raise ValueError(f"ObstacleDetour: max_episode_steps must be a positive int, got {max_episode_steps!r}")
        self.obstacle_radius, self.goal_radius = float(obstacle_radius), float(goal_radius)
        self.max_speed, self.start_noise = float(max_speed), float(start_noise)
        self.max_episode_steps = max_episode_steps
        self.observation_space = Box(-2.0, 2.0, shape=(2,), dtype=numpy.float32)
        self.action_space = Box(-1.0, 1.0, shape=(2,), dtype=numpy.float32)
        self.position = numpy.array(self.START, dtype=numpy.float32)
        self.t = 0

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        offset = self.np_random.uniform(-self.start_noise, self.start_noise, 2)
        self.position = (numpy.array(self.START) + offset).astype(numpy.float32)
        self.t = 0
        return self.position.copy(), {}

    def step(self, action):
        action = numpy.asarray(action, dtype=numpy.float64)
        if action.shape != (2,) or not numpy.all(numpy.isfinite(action)):
            raise ValueError(f"ObstacleDetour.step: the action must be 2 finite numbers, got {action!r}")
        moved = self.position + self.max_speed * numpy.clip(action, -1.0, 1.0)
        self.position = numpy.clip(moved, -2.0, 2.0).astype(numpy.float32)
        self.t += 1
        collided = bool(numpy.hypot(*self.position) < self.obstacle_radius)
        success = not collided and bool(numpy.hypot(*(self.position - self.GOAL)) <= self.goal_radius)
        reward = 1.0 if success else (-1.0 if collided else 0.0)
        info = {"is_success": success, "collided": collided}
        return self.position.copy(), reward, success or collided, self.t >= self.max_episode_steps, info


def detour_expert(side: int, width: float = 0.45, low: float = -0.25, high: float = 0.25
                  ) -> Callable[[numpy.ndarray], numpy.ndarray]:
    """The expert of :class:`ObstacleDetour` passing on the left (``side`` = -1) or the right (+1):
    it moves at full speed (less for the last bit) through the waypoints (side * ``width``,
    ``low``), (side * width, ``high``) and the goal, taking the next one within 0.03 of each. Its
    first action is nearly sideways; the mean of the two sides' is a short step up into the disc.
    A new expert is needed for each episode (it keeps its waypoint)."""
    if side not in (-1, 1):
        raise ValueError(f"detour_expert: side must be -1 (left) or 1 (right), got {side!r}")
    waypoints = [numpy.array(p, dtype=numpy.float64) for p in ((side * width, low), (side * width, high),
                                                               ObstacleDetour.GOAL)]
    state = {"next": 0}

    def act(obs) -> numpy.ndarray:
        position = numpy.asarray(obs, dtype=numpy.float64)
        while state["next"] < len(waypoints) - 1 and numpy.linalg.norm(waypoints[state["next"]] - position) < 0.03:
            state["next"] += 1
        direction = (waypoints[state["next"]] - position) / ObstacleDetour().max_speed
        return (direction / max(numpy.linalg.norm(direction), 1.0)).astype(numpy.float32)

    return act


def detour_demonstrations(env: ObstacleDetour, n_episodes: int, noise: float = 0.0,
                          seed: int | None = None) -> OfflineDataset:
    """``n_episodes`` expert episodes of ``env``, alternately passing left and right (episode i
    reset with ``seed + i``), the expert's actions perturbed by Gaussian ``noise``."""
    if isinstance(n_episodes, bool) or not isinstance(n_episodes, int) or n_episodes < 1:
        raise ValueError(f"detour_demonstrations: n_episodes must be a positive int, got {n_episodes!r}")
    return concatenate_datasets([collect_dataset(env, detour_expert(-1 if i % 2 == 0 else 1), n_episodes=1,
                                                 noise=noise, seed=None if seed is None else seed + i)
                                 for i in range(n_episodes)])


def detour_side(positions) -> int:
    """Which way a path of positions (T, 2) passed the obstacle: -1 left, +1 right, by the mean x
    of its points level with the obstacle, -0.3 < y < 0.3 (0 when it has none)."""
    positions = numpy.asarray(positions, dtype=numpy.float64).reshape(-1, 2)
    middle = positions[(positions[:, 1] > -0.3) & (positions[:, 1] < 0.3)]
    return 0 if len(middle) == 0 else int(numpy.sign(middle[:, 0].mean()))
