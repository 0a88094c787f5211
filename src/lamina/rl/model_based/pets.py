"""PETS (Chua et al., 2018): collect transitions, fit a probabilistic ensemble to them, and act
by model-predictive control with a planner over trajectory-sampled particles."""

from __future__ import annotations

from collections.abc import Sequence

import numpy

from lamina.rl.env import Env
from lamina.rl.model_based.ensemble import ProbabilisticEnsemble, TrajectorySampling
from lamina.rl.model_based.planners import CEMPlanner, MPPIPlanner
from lamina.rl.off_policy import box_bounds
from lamina.rl.spaces import seeded_generator


def run_episode(env: Env, policy, steps: int, seed: int | None = None) -> tuple[float, dict[str, numpy.ndarray]]:
    """Run ``policy(obs) -> action`` for up to ``steps`` steps from ``env.reset(seed=seed)``; returns
    the return and the transitions (obs, actions, rewards, next_obs, terminated) as arrays."""
    obs, _ = env.reset(seed=seed)
    record: dict[str, list] = {"obs": [], "actions": [], "rewards": [], "next_obs": [], "terminated": []}
    for _ in range(steps):
        action = numpy.asarray(policy(obs), dtype=numpy.float32)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        for name, value in zip(record, (obs, action, reward, next_obs, terminated)):
            record[name].append(value)
        obs = next_obs
        if terminated or truncated:
            break
    data = {name: numpy.asarray(values) for name, values in record.items()}
    return float(data["rewards"].sum()), data


class PETSAgent:
    """Probabilistic ensembles with trajectory sampling on a flat Box action space.

    :meth:`collect` adds an episode's transitions (random actions until a model is fitted),
    :meth:`fit` trains the ensemble on everything collected, :meth:`act` plans with
    ``planner`` ("cem" or "mppi", or a planner object) through :class:`TrajectorySampling`
    with ``particles`` particles per candidate. ``reward_fn(states, actions, next_states)`` replaces
    the learned reward when given."""

    def __init__(self, obs_dim: int, action_space, hidden: Sequence[int] = (64, 64), ensemble_size: int = 5,
                 num_elites: int | None = None, planner: str | object = "cem", horizon: int = 15,
                 population: int = 100, particles: int = 5, propagation: str = "tsinf", reward_fn=None,
                 seed: int | None = None, **planner_kwargs):
        self.low, self.high = box_bounds("PETSAgent", action_space)
        self.rng = seeded_generator(seed)
        self.ensemble = ProbabilisticEnsemble(obs_dim, len(self.low), hidden, ensemble_size, num_elites, seed=seed)
        self.model = TrajectorySampling(self.ensemble, propagation, reward_fn, seed=seed)
        if planner == "cem":
            planner = CEMPlanner(self.low, self.high, horizon, population, particles=particles, seed=seed,
                                 **planner_kwargs)
        elif planner == "mppi":
            planner = MPPIPlanner(self.low, self.high, horizon, population, particles=particles, seed=seed,
                                  **planner_kwargs)
        elif isinstance(planner, str):
            raise ValueError(f"PETSAgent: planner must be 'cem', 'mppi' or a planner object, got {planner!r}")
        self.planner = planner
        self.data: dict[str, list[numpy.ndarray]] = {"obs": [], "actions": [], "rewards": [], "next_obs": []}
        self.fitted = False

    def random_action(self, obs=None) -> numpy.ndarray:
        return self.rng.uniform(self.low, self.high)

    def act(self, obs) -> numpy.ndarray:
        """The planned action from ``obs`` (uniformly random before the first :meth:`fit`)."""
        if not self.fitted:
            return self.random_action()
        return self.planner.act(self.model, numpy.asarray(obs, dtype=numpy.float64))

    def add(self, obs, actions, rewards, next_obs) -> None:
        """Store transitions (arrays with one row per step)."""
        for name, value in zip(self.data, (obs, actions, rewards, next_obs)):
            self.data[name].append(numpy.asarray(value, dtype=numpy.float64))

    def collect(self, env: Env, steps: int, seed: int | None = None) -> float:
        """Run one episode of at most ``steps`` steps with :meth:`act`, store it, return its return."""
        self.planner.reset()
        episode_return, data = run_episode(env, self.act, steps, seed)
        self.add(data["obs"], data["actions"].reshape(len(data["obs"]), -1), data["rewards"], data["next_obs"])
        return episode_return

    def fit(self, **fit_kwargs) -> dict[str, list[float]]:
        """Train the ensemble on every stored transition (``fit_kwargs`` go to :meth:`ProbabilisticEnsemble.fit`)."""
        if not self.data["obs"]:
            raise RuntimeError("PETSAgent.fit: no transitions stored; call collect() or add() first")
        arrays = {name: numpy.concatenate(values) for name, values in self.data.items()}
        history = self.ensemble.fit(arrays["obs"], arrays["actions"], arrays["next_obs"], arrays["rewards"],
                                    **fit_kwargs)
        self.fitted = True
        return history
