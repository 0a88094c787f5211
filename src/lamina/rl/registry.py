"""``make(name)``: an environment by its Gymnasium id, wrapped in its registered time limit."""

from __future__ import annotations

from collections.abc import Callable

from lamina.rl.classic_control import CartPole, MountainCar, Pendulum
from lamina.rl.env import Env, TimeLimit
from lamina.rl.goal_env import BitFlipping, PointReach
from lamina.rl.toy import Chain, GridWorld, SparseChain

ENVIRONMENTS: dict[str, tuple[Callable[..., Env], int | None]] = {
    "CartPole-v1": (CartPole, 500),
    "Pendulum-v1": (Pendulum, 200),
    "MountainCar-v0": (MountainCar, 200),
    "Chain-v0": (Chain, 50),
    "GridWorld-v0": (GridWorld, 50),
    "BitFlipping-v0": (BitFlipping, None),
    "PointReach-v0": (PointReach, None),
    "SparseChain-v0": (SparseChain, 60),
}


def make(name: str, max_episode_steps: int | None = None, **kwargs) -> Env:
    """The environment registered as ``name`` (constructor keyword arguments in ``kwargs``),
    inside a :class:`TimeLimit` of ``max_episode_steps`` (default: the registered limit)."""
    if name not in ENVIRONMENTS:
        raise KeyError(f"make: no environment {name!r}; registered: {sorted(ENVIRONMENTS)}")
    factory, limit = ENVIRONMENTS[name]
    env = factory(**kwargs)
    limit = max_episode_steps if max_episode_steps is not None else limit
    return TimeLimit(env, limit) if limit is not None else env
