"""Hindsight Experience Replay (HER, Andrychowicz et al., 2017): a replay buffer of whole
episodes of a goal environment (:mod:`lamina.rl.goal_env`) that, at sampling time, replaces
the desired goal g of a transition (s_t, a_t, s_t+1) by a goal the episode achieved, with
probability 1 - 1 / (1 + k) (k relabelled goals per original one), and recomputes the reward
r_t = compute_reward(ag_t+1, g). A failed episode thus still teaches how to reach the states it
did reach. The strategies pick the achieved goal ag_j+1 (the goal of the state after step j):

- ``final``: j = T - 1, the episode's last state;
- ``future``: j uniform in {t, ..., T - 1}, a state reached later in the episode;
- ``episode``: j uniform in {0, ..., T - 1}, any state of the episode;
- ``none``: no relabelling (the ablation: plain replay of goal-conditioned transitions).

:class:`HERAgent` runs DQN (discrete actions) or DDPG / TD3 (continuous ones) on the
observation concatenated with the goal, [o, g], learning from this buffer, with the paper's
option of clipping the targets to [-1 / (1 - gamma), 0], the range of the returns of rewards
in [-1, 0]."""

from __future__ import annotations

from typing import NamedTuple

import numpy

from lamina.rl.agent_loop import as_env, make_agent, run_agent
from lamina.rl.dqn import DQNAgent
from lamina.rl.env import Env
from lamina.rl.replay import Batch
from lamina.rl.spaces import Box, Discrete, seeded_generator
from lamina.rl.td3 import DDPG, TD3

STRATEGIES = ("future", "final", "episode", "none")
ALGORITHMS = {"dqn": DQNAgent, "ddpg": DDPG, "td3": TD3}
_ARRAYS = ("obs", "achieved", "desired", "actions", "lengths")
_COUNTERS = ("position", "staged", "size", "n_episodes")


class HindsightIndices(NamedTuple):
    """Where a sampled batch comes from: the buffer slot of each transition's episode, its step
    t, whether its goal was relabelled and the step j whose achieved goal ag_j+1 replaced the
    desired goal (-1 where not relabelled)."""

    episodes: numpy.ndarray
    steps: numpy.ndarray
    relabelled: numpy.ndarray
    goal_steps: numpy.ndarray


def goal_conditioned(obs: dict) -> numpy.ndarray:
    """The network input [observation, desired_goal] of a goal environment's dict observation."""
    return numpy.concatenate([numpy.asarray(obs["observation"], dtype=numpy.float32).ravel(),
                              numpy.asarray(obs["desired_goal"], dtype=numpy.float32).ravel()])


def _goal_env(label: str, env: Env):
    base = env.unwrapped
    space = getattr(env, "observation_space", None)
    spaces = getattr(space, "spaces", None)
    if not hasattr(base, "compute_reward") or not isinstance(spaces, dict) or \
            not {"observation", "achieved_goal", "desired_goal"} <= set(spaces):
        raise ValueError(f"{label}: needs a goal environment (dict observations with 'observation', "
                         f"'achieved_goal', 'desired_goal' and a compute_reward method), got {env!r} with "
                         f"observation space {space}")
    return base, spaces


class HindsightReplayBuffer:
    """The last ``capacity`` episodes of up to ``max_episode_steps`` steps (module docstring).

    :meth:`add` takes transitions with dict observations (the reward is not stored: it is
    recomputed for the goal of each sample) and closes the episode when ``terminated`` or after
    ``max_episode_steps`` steps; :meth:`end_episode` closes it earlier (a truncation). Only
    closed episodes are sampled. :meth:`sample` draws transitions uniformly among the stored
    ones and returns a :class:`~lamina.rl.Batch` on the inputs [o, g], with rewards and
    ``terminated`` recomputed by the environment's ``compute_reward`` and ``compute_terminated``.
    Draws, from the buffer's generator: the transitions (``integers``), then which are
    relabelled (``random`` < 1 - 1 / (1 + k)), then the goal steps (``random``, scaled to the
    strategy's range)."""

    def __init__(self, env: Env, capacity: int, strategy: str = "future", k: int = 4,
                 max_episode_steps: int | None = None, action_shape: tuple[int, ...] | None = None,
                 action_dtype=None, seed: int | None = None):
        label = type(self).__name__
        self.env, spaces = _goal_env(label, env)
        if strategy not in STRATEGIES:
            raise ValueError(f"{label}: strategy must be one of {STRATEGIES}, got {strategy!r}")
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise ValueError(f"{label}: k must be an int >= 0, got {k!r}")
        if isinstance(capacity, bool) or not isinstance(capacity, int) or capacity < 1:
            raise ValueError(f"{label}: capacity must be a positive int (episodes), got {capacity!r}")
        horizon = max_episode_steps or getattr(env, "max_episode_steps", None) or self.env.max_episode_steps
        if not horizon:
            raise ValueError(f"{label}: give max_episode_steps (the environment states none)")
        if action_shape is None:
            discrete = isinstance(env.action_space, Discrete)
            action_shape = () if discrete else tuple(env.action_space.shape)
            action_dtype = numpy.int64 if discrete else numpy.float32
        self.capacity, self.max_episode_steps, self.strategy, self.k = capacity, int(horizon), strategy, k
        self.relabel_probability = 0.0 if strategy == "none" else 1.0 - 1.0 / (1.0 + k)
        obs_dim = int(numpy.prod(spaces["observation"].shape))
        goal_dim = int(numpy.prod(spaces["desired_goal"].shape))
        self.obs = numpy.zeros((capacity, self.max_episode_steps + 1, obs_dim), dtype=numpy.float32)
        self.achieved = numpy.zeros((capacity, self.max_episode_steps + 1, goal_dim), dtype=numpy.float32)
        self.desired = numpy.zeros((capacity, self.max_episode_steps, goal_dim), dtype=numpy.float32)
        self.actions = numpy.zeros((capacity, self.max_episode_steps, *action_shape), dtype=action_dtype)
        self.lengths = numpy.zeros(capacity, dtype=numpy.int64)
        self.position, self.staged, self.size, self.n_episodes = 0, 0, 0, 0
        self.rng = seeded_generator(seed)

    def __len__(self) -> int:
        """The number of transitions in closed episodes."""
        return self.size

    def add(self, obs: dict, action, reward: float, next_obs: dict, terminated: bool) -> None:
        """Append a transition to the open episode (``reward`` is recomputed when sampling)."""
        slot, t = self.position, self.staged
        if t == 0:
            self.size -= int(self.lengths[slot])
            self.n_episodes -= int(self.lengths[slot] > 0)
            self.lengths[slot] = 0
            self.obs[slot, 0] = numpy.ravel(obs["observation"])
            self.achieved[slot, 0] = numpy.ravel(obs["achieved_goal"])
        self.actions[slot, t] = action
        self.desired[slot, t] = numpy.ravel(obs["desired_goal"])
        self.obs[slot, t + 1] = numpy.ravel(next_obs["observation"])
        self.achieved[slot, t + 1] = numpy.ravel(next_obs["achieved_goal"])
        self.staged += 1
        if terminated or self.staged == self.max_episode_steps:
            self.end_episode()

    def end_episode(self) -> None:
        """Close the open episode (nothing happens when none is open)."""
        if self.staged == 0:
            return
        self.lengths[self.position] = self.staged
        self.size += self.staged
        self.n_episodes += 1
        self.position, self.staged = (self.position + 1) % self.capacity, 0

    def sample_indices(self, batch_size: int) -> HindsightIndices:
        """The episodes, steps and goal steps of ``batch_size`` transitions (class docstring)."""
        if self.size == 0:
            raise ValueError(f"{type(self).__name__}.sample: no closed episode stored yet")
        ends = numpy.cumsum(self.lengths)
        flat = self.rng.integers(self.size, size=batch_size)
        episodes = numpy.searchsorted(ends, flat, side="right")
        lengths = self.lengths[episodes]
        steps = flat - (ends[episodes] - lengths)
        relabelled = self.rng.random(batch_size) < self.relabel_probability
        u = self.rng.random(batch_size)
        if self.strategy == "final":
            goal_steps = lengths - 1
        elif self.strategy == "episode":
            goal_steps = (u * lengths).astype(numpy.int64)
        else:
            goal_steps = steps + (u * (lengths - steps)).astype(numpy.int64)
        goal_steps = numpy.minimum(goal_steps, lengths - 1)
        return HindsightIndices(episodes, steps, relabelled, numpy.where(relabelled, goal_steps, -1))

    def batch_at(self, indices: HindsightIndices) -> Batch:
        """The transitions at ``indices`` with their (relabelled) goals on the inputs [o, g]."""
        episodes, steps, relabelled, goal_steps = indices
        goals = self.desired[episodes, steps].copy()
        goals[relabelled] = self.achieved[episodes[relabelled], goal_steps[relabelled] + 1]
        reached = self.achieved[episodes, steps + 1]
        rewards = numpy.asarray(self.env.compute_reward(reached, goals, {}), dtype=numpy.float32)
        terminated = numpy.asarray(self.env.compute_terminated(reached, goals, {}), dtype=bool)
        obs = numpy.concatenate([self.obs[episodes, steps], goals], axis=1)
        next_obs = numpy.concatenate([self.obs[episodes, steps + 1], goals], axis=1)
        return Batch(obs, self.actions[episodes, steps], rewards, next_obs, terminated)

    def sample(self, batch_size: int) -> Batch:
        """``batch_size`` transitions drawn with replacement, goals relabelled by the strategy."""
        return self.batch_at(self.sample_indices(batch_size))

    def state_dict(self) -> dict:
        """The stored episodes (copies of the arrays), the open episode's progress, the counts and
        the sampling generator's state, for :meth:`load_state_dict`."""
        return {"arrays": {name: getattr(self, name).copy() for name in _ARRAYS},
                "counters": {name: getattr(self, name) for name in _COUNTERS}, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` into a buffer of the same capacity, horizon and shapes."""
        for name in _ARRAYS:
            own, saved = getattr(self, name), numpy.asarray(state["arrays"][name])
            if saved.shape != own.shape or saved.dtype != own.dtype:
                raise ValueError(f"{type(self).__name__}.load_state_dict: {name!r} is {saved.dtype} {saved.shape} "
                                 f"in the state but {own.dtype} {own.shape} in the buffer")
        for name in _ARRAYS:
            getattr(self, name)[...] = state["arrays"][name]
        for name in _COUNTERS:
            setattr(self, name, int(state["counters"][name]))
        self.rng.bit_generator.state = state["rng"]


class HERAgent:
    """DQN (``algorithm="dqn"``) or DDPG / TD3 (``"ddpg"``, ``"td3"``) acting on [o, g] and
    learning from a :class:`HindsightReplayBuffer` of ``capacity`` episodes with ``strategy``
    and ``k``. ``clip_targets`` clips the targets y to [-1 / (1 - gamma), 0] (the paper's
    choice for rewards in [-1, 0]). Other keyword arguments go to the algorithm's agent
    (:class:`DQNAgent`, :class:`DDPG`, :class:`TD3`), whose own replay buffer is replaced."""

    def __init__(self, env: Env, algorithm: str = "dqn", strategy: str = "future", k: int = 4,
                 capacity: int = 2000, clip_targets: bool = True, seed: int | None = None, **agent_kwargs):
        _, spaces = _goal_env("HERAgent", env)
        if algorithm not in ALGORITHMS:
            raise ValueError(f"HERAgent: algorithm must be one of {sorted(ALGORITHMS)}, got {algorithm!r}")
        if agent_kwargs.get("prioritized"):
            raise ValueError("HERAgent: prioritized replay is not combined with hindsight relabelling")
        discrete = isinstance(env.action_space, Discrete)
        if (algorithm == "dqn") != discrete or not (discrete or isinstance(env.action_space, Box)):
            raise ValueError(f"HERAgent: {algorithm!r} does not fit the action space {env.action_space} (DQN "
                             f"takes Discrete actions, DDPG and TD3 a Box)")
        self.algorithm = algorithm
        obs_dim = int(numpy.prod(spaces["observation"].shape)) + int(numpy.prod(spaces["desired_goal"].shape))
        gamma = agent_kwargs.get("gamma", 0.99)
        target_clip = (-1.0 / (1.0 - gamma), 0.0) if clip_targets and gamma < 1 else None
        settings = {"buffer_size": 1, "seed": seed, "target_clip": target_clip, **agent_kwargs}
        if discrete:
            self.agent = DQNAgent(obs_dim, env.action_space.n, **settings)
        else:
            self.agent = ALGORITHMS[algorithm](obs_dim, env.action_space, **settings)
        self.buffer = HindsightReplayBuffer(env, capacity, strategy, k, seed=None if seed is None else seed + 2)
        self.agent.buffer = self.buffer

    @classmethod
    def for_env(cls, env: Env, **kwargs) -> HERAgent:
        return cls(env, **kwargs)

    def act(self, obs: dict):
        """The wrapped agent's exploring action for [o, g]."""
        return self.agent.act(goal_conditioned(obs))

    def predict(self, obs: dict, deterministic: bool = True):
        """The wrapped agent's action for [o, g] (greedy by default)."""
        return self.agent.predict(goal_conditioned(obs), deterministic=deterministic)

    def observe(self, obs: dict, action, reward: float, next_obs: dict, terminated: bool,
                truncated: bool = False) -> None:
        """Store the transition in the hindsight buffer and learn as the wrapped agent schedules."""
        self.agent.observe(obs, action, reward, next_obs, terminated)
        if truncated:
            self.buffer.end_episode()

    def state_dict(self) -> dict:
        """The wrapped agent's :meth:`state_dict` (networks, optimizers, counts), the hindsight
        buffer included."""
        return self.agent.state_dict()

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` into an agent built with the same settings."""
        self.agent.load_state_dict(state)


def train_her(env: Env | str, algorithm: str = "dqn", strategy: str = "future", k: int = 4,
              total_steps: int = 10000, agent: HERAgent | None = None, seed: int | None = None,
              **agent_kwargs) -> list[float]:
    """Train ``agent`` (by default ``HERAgent(env, algorithm, strategy, k, seed=seed,
    **agent_kwargs)``) for ``total_steps`` environment steps; returns every finished episode's
    return."""
    env = as_env(env)
    if agent is None:
        agent_kwargs.update(algorithm=algorithm, strategy=strategy, k=k)
    agent = make_agent(HERAgent, env, agent, seed, agent_kwargs, "train_her")
    return run_agent(env, agent, total_steps, seed)


def success_rate(policy, env: Env, n_episodes: int = 20, seed: int | None = None) -> float:
    """The fraction of ``n_episodes`` episodes of ``policy.predict`` (greedy) whose last step
    reports ``info["is_success"]`` (episode i reset with ``seed + i`` when ``seed`` is given)."""
    successes = 0
    for episode in range(n_episodes):
        obs, info = env.reset(seed=None if seed is None else seed + episode)
        done = False
        while not done:
            obs, _, terminated, truncated, info = env.step(policy.predict(obs))
            done = terminated or truncated
        successes += bool(info.get("is_success", False))
    return successes / n_episodes
