"""The parallel multi-agent environment interface of PettingZoo: every agent acts at every step.

``reset(seed=None) -> (observations, infos)`` and
``step(actions) -> (observations, rewards, terminations, truncations, infos)``, each a dict keyed by
agent name. ``possible_agents`` lists every agent the environment can have, ``agents`` those
still acting (empty once the episode is over); ``observation_space(agent)`` and
``action_space(agent)`` give each agent's spaces, ``state()`` the global state (what centralised
training, as in QMIX, conditions on) and ``state_space`` its space."""

from __future__ import annotations

import numpy

from lamina.rl.spaces import Box, Discrete, Space, seeded_generator


class ParallelEnv:
    """The base of the parallel environments: subclasses set ``possible_agents``,
    ``observation_spaces``, ``action_spaces`` (dicts by agent) and ``state_space`` and implement
    ``reset``, ``step`` and ``state``. :meth:`check_actions` validates a step's actions."""

    possible_agents: list[str]
    agents: list[str]
    observation_spaces: dict[str, Space]
    action_spaces: dict[str, Space]
    state_space: Space
    metadata: dict = {}

    _np_random: numpy.random.Generator | None = None

    @property
    def np_random(self) -> numpy.random.Generator:
        """The environment's generator (seeded by ``reset(seed=...)``)."""
        if self._np_random is None:
            self._np_random = seeded_generator(None)
        return self._np_random

    @property
    def num_agents(self) -> int:
        return len(self.agents)

    @property
    def max_num_agents(self) -> int:
        return len(self.possible_agents)

    def check_agent(self, agent, who: str) -> str:
        """``agent`` when it is one of ``possible_agents``, else a KeyError naming ``who``."""
        if agent not in self.possible_agents:
            raise KeyError(f"{type(self).__name__}.{who}: unknown agent {agent!r}; the agents are "
                           f"{self.possible_agents}")
        return agent

    def observation_space(self, agent: str) -> Space:
        return self.observation_spaces[self.check_agent(agent, "observation_space")]

    def action_space(self, agent: str) -> Space:
        return self.action_spaces[self.check_agent(agent, "action_space")]

    def check_actions(self, actions) -> dict:
        """The actions when they are a dict with one action, inside its space, for every acting
        agent; else a clear error (RuntimeError after the episode is over)."""
        label = f"{type(self).__name__}.step"
        if not self.agents:
            raise RuntimeError(f"{label}: no agent is acting (the episode is over); call reset() first")
        if not isinstance(actions, dict):
            raise TypeError(f"{label}: actions must be a dict by agent name, got {type(actions).__name__}")
        unknown = [agent for agent in actions if agent not in self.agents]
        if unknown:
            raise KeyError(f"{label}: actions for unknown or finished agents {unknown}; acting agents are "
                           f"{self.agents}")
        missing = [agent for agent in self.agents if agent not in actions]
        if missing:
            raise KeyError(f"{label}: no action for agents {missing}")
        for agent, action in actions.items():
            if not self.action_spaces[agent].contains(action):
                raise ValueError(f"{label}: action {action!r} of agent {agent!r} is not in "
                                 f"{self.action_spaces[agent]}")
        return actions

    def reset(self, seed: int | None = None, options: dict | None = None):
        if seed is not None:
            self._np_random = seeded_generator(seed)
        self.agents = list(self.possible_agents)
        return {}, {}

    def step(self, actions: dict):
        raise NotImplementedError(f"{type(self).__name__}.step is not implemented")

    def state(self) -> numpy.ndarray:
        raise NotImplementedError(f"{type(self).__name__}.state is not implemented")

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"{type(self).__name__}(agents={self.possible_agents})"


class CooperativeEnv(ParallelEnv):
    """A parallel environment whose agents share one team reward and end their episodes together.

    Subclasses give ``n_agents``, ``n_actions``, ``obs_dim``, ``state_dim`` and ``max_steps`` to
    ``__init__`` and implement ``_start()`` (the start of an episode), ``_move(actions)`` (a list of
    actions in agent order, ints for Discrete spaces; returns (team reward, terminated)),
    ``_observe(i)`` and ``state()``.
    Episodes reaching ``max_steps`` steps end with truncations set."""

    def __init__(self, n_agents: int, n_actions: int, obs_dim: int, state_dim: int, max_steps: int):
        self.possible_agents = [f"agent_{i}" for i in range(n_agents)]
        self.agents = []
        self.observation_spaces = {agent: Box(0.0, 1.0, shape=(obs_dim,)) for agent in self.possible_agents}
        self.action_spaces = {agent: Discrete(n_actions) for agent in self.possible_agents}
        self.state_space = Box(0.0, 1.0, shape=(state_dim,))
        self.max_steps = max_steps
        self.steps = 0

    def _start(self) -> None:
        raise NotImplementedError

    def _move(self, actions: list[int]) -> tuple[float, bool]:
        raise NotImplementedError

    def _observe(self, i: int) -> numpy.ndarray:
        raise NotImplementedError

    def _observations(self) -> dict:
        return {agent: self._observe(i) for i, agent in enumerate(self.possible_agents)}

    def reset(self, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed, options=options)
        self.steps = 0
        self._start()
        return self._observations(), {agent: {} for agent in self.agents}

    def step(self, actions: dict):
        self.check_actions(actions)
        reward, terminated = self._move([int(actions[agent]) if isinstance(self.action_spaces[agent], Discrete)
                                         else numpy.asarray(actions[agent], dtype=numpy.float64)
                                         for agent in self.possible_agents])
        self.steps += 1
        truncated = not terminated and self.steps >= self.max_steps
        agents = list(self.agents)
        if terminated or truncated:
            self.agents = []
        return (self._observations(), {agent: float(reward) for agent in agents},
                {agent: bool(terminated) for agent in agents}, {agent: bool(truncated) for agent in agents},
                {agent: {} for agent in agents})
