"""Multi-agent Q-learning for cooperative parallel environments: tabular independent Q-learning,
and a deep learner with a shared agent network whose mixer is none (independent Q-learning,
Tan, 1993), a sum (VDN) or a monotonic mixing network (QMIX), as in PyMARL's Q-learner.

A learner has ``act(observations, explore=True) -> actions`` (dicts by agent) and
``observe(observations, actions, rewards, next_observations, terminated, state, next_state)``;
:func:`run_episodes` plays whole episodes with it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy

from lamina import optim
from lamina.autograd import no_grad, tensor
from lamina.functional import mean, take_along_dim
from lamina.rl.multiagent.env import ParallelEnv
from lamina.rl.multiagent.mixers import QMixer, VDNMixer
from lamina.rl.networks import copy_weights, mlp
from lamina.rl.off_policy import linear_default_init
from lamina.rl.spaces import Box, Discrete, seeded_generator


def _discrete_actions(env: ParallelEnv, label: str) -> int:
    spaces = [env.action_space(agent) for agent in env.possible_agents]
    if not all(isinstance(space, Discrete) and space.n == spaces[0].n for space in spaces):
        raise ValueError(f"{label}: every agent needs the same Discrete action space, got {spaces}")
    return spaces[0].n


def _epsilon(start: float, end: float, decay_steps: int, step: int) -> float:
    """Linear from ``start`` at step 0 to ``end`` at ``decay_steps``, then constant."""
    return start + min(1.0, step / max(decay_steps, 1)) * (end - start)


class TabularIndependentQLearning:
    """One Q-table per agent over its own observations (any array: the table is keyed by its
    bytes), each learning from its own reward as if the others were part of the environment:
    Q_i(o, a) <- Q_i(o, a) + lr (r_i + gamma (1 - terminated) max_b Q_i(o', b) - Q_i(o, a)).
    Actions are epsilon-greedy, epsilon falling linearly from ``eps_start`` to ``eps_end`` over
    ``eps_decay`` steps; ties between greedy actions are broken at random."""

    def __init__(self, agents: Sequence[str], n_actions: int, lr: float = 0.2, gamma: float = 0.99,
                 eps_start: float = 1.0, eps_end: float = 0.05, eps_decay: int = 2000, seed: int | None = None):
        self.agents, self.n_actions = list(agents), int(n_actions)
        self.lr, self.gamma = lr, gamma
        self.eps_start, self.eps_end, self.eps_decay = eps_start, eps_end, eps_decay
        self.tables: dict[str, dict[bytes, numpy.ndarray]] = {agent: {} for agent in self.agents}
        self.rng = seeded_generator(seed)
        self.steps = 0

    @classmethod
    def for_env(cls, env: ParallelEnv, **kwargs) -> TabularIndependentQLearning:
        return cls(env.possible_agents, _discrete_actions(env, cls.__name__), **kwargs)

    @property
    def epsilon(self) -> float:
        return _epsilon(self.eps_start, self.eps_end, self.eps_decay, self.steps)

    def q_values(self, agent: str, observation) -> numpy.ndarray:
        """Agent's row Q(o, .) (zeros for an unseen observation; stored on first use)."""
        if agent not in self.tables:
            raise KeyError(f"{type(self).__name__}: unknown agent {agent!r}; the agents are {self.agents}")
        key = numpy.asarray(observation).tobytes()
        return self.tables[agent].setdefault(key, numpy.zeros(self.n_actions))

    def act(self, observations: dict, explore: bool = True) -> dict:
        epsilon = self.epsilon if explore else 0.0
        if explore:
            self.steps += 1
        actions = {}
        for agent, observation in observations.items():
            if self.rng.random() < epsilon:
                actions[agent] = int(self.rng.integers(self.n_actions))
            else:
                q = self.q_values(agent, observation)
                actions[agent] = int(self.rng.choice(numpy.flatnonzero(q == q.max())))
        return actions

    def observe(self, observations: dict, actions: dict, rewards: dict, next_observations: dict,
                terminated: bool, state=None, next_state=None) -> None:
        for agent, observation in observations.items():
            q = self.q_values(agent, observation)
            bootstrap = 0.0 if terminated else self.gamma * self.q_values(agent, next_observations[agent]).max()
            q[actions[agent]] += self.lr * (rewards[agent] + bootstrap - q[actions[agent]])

    def train(self, env: ParallelEnv, episodes: int, seed: int | None = None) -> list[float]:
        """Learn from ``episodes`` episodes of ``env``; returns their team returns."""
        return run_episodes(env, self, episodes, seed=seed)


class JointReplayBuffer:
    """The last ``capacity`` joint transitions (o, s, a, r, o', s', terminated): the agents'
    observations (n_agents, obs_dim) and actions (n_agents, *action_shape), the global states and
    the reward (the team's, or with ``reward_shape=(n_agents,)`` each agent's); ``sample`` draws
    uniformly, with replacement."""

    def __init__(self, capacity: int, n_agents: int, obs_dim: int, state_dim: int, seed: int | None = None,
                 action_shape: tuple[int, ...] = (), action_dtype=numpy.int64, reward_shape: tuple[int, ...] = ()):
        self.capacity = capacity
        self.obs = numpy.zeros((capacity, n_agents, obs_dim), dtype=numpy.float32)
        self.next_obs = numpy.zeros_like(self.obs)
        self.states = numpy.zeros((capacity, state_dim), dtype=numpy.float32)
        self.next_states = numpy.zeros_like(self.states)
        self.actions = numpy.zeros((capacity, n_agents, *action_shape), dtype=action_dtype)
        self.rewards = numpy.zeros((capacity, *reward_shape), dtype=numpy.float32)
        self.terminated = numpy.zeros(capacity, dtype=bool)
        self.position, self.size = 0, 0
        self.rng = seeded_generator(seed)

    def __len__(self) -> int:
        return self.size

    def add(self, obs, state, actions, reward: float, next_obs, next_state, terminated: bool) -> None:
        i = self.position
        self.obs[i], self.states[i], self.actions[i], self.rewards[i] = obs, state, actions, reward
        self.next_obs[i], self.next_states[i], self.terminated[i] = next_obs, next_state, terminated
        self.position, self.size = (i + 1) % self.capacity, min(self.size + 1, self.capacity)

    def sample(self, batch_size: int) -> dict[str, numpy.ndarray]:
        index = self.rng.integers(self.size, size=batch_size)
        names = ("obs", "states", "actions", "rewards", "next_obs", "next_states", "terminated")
        return {name: getattr(self, name)[index] for name in names}


MIXERS = (None, "vdn", "qmix")


class MultiAgentQLearner:
    """Deep Q-learning for a team, PyMARL's way: one agent network shared by all agents (its input
    the agent's observation and the one-hot agent index), epsilon-greedy acting, a replay buffer of
    joint transitions, a target network copied every ``target_update_interval`` gradient steps, Adam
    and gradient-norm clipping; layers start from PyTorch's default initialization (Q-values near
    0, not optimistic ones that bootstrapping would take long to bring down). With ``mixer``:

    - None: independent Q-learning, the mean over agents of (Q_i(o_i, a_i) - y_i)^2 with
      y_i = r + gamma (1 - terminated) max_b Q'_i(o'_i, b);
    - "vdn" or "qmix": (Q_tot - y)^2 with Q_tot = mixer(Q_1(o_1, a_1), ..., s) and
      y = r + gamma (1 - terminated) mixer'(max_b Q'_1(o'_1, b), ..., s'), the target mixer a copy.
    """

    def __init__(self, n_agents: int, obs_dim: int, n_actions: int, state_dim: int, mixer: str | None = "qmix",
                 hidden: Sequence[int] = (64,), lr: float = 5e-3, gamma: float = 0.99, batch_size: int = 32,
                 buffer_size: int = 5000, learning_starts: int = 32, target_update_interval: int = 100,
                 eps_start: float = 1.0, eps_end: float = 0.05, eps_decay: int = 2000, max_grad_norm: float = 10.0,
                 mixing_embed_dim: int = 32, hypernet_layers: int = 1, hypernet_embed: int = 64,
                 seed: int | None = None):
        if mixer not in MIXERS:
            raise ValueError(f"MultiAgentQLearner: mixer must be one of {MIXERS}, got {mixer!r}")
        self.n_agents, self.obs_dim, self.n_actions, self.state_dim = n_agents, obs_dim, n_actions, state_dim
        self.mixer_name, self.gamma, self.batch_size = mixer, gamma, batch_size
        self.learning_starts, self.target_update_interval = learning_starts, target_update_interval
        self.eps_start, self.eps_end, self.eps_decay = eps_start, eps_end, eps_decay
        self.max_grad_norm = max_grad_norm
        self.agent_net = linear_default_init(mlp(obs_dim + n_agents, hidden, n_actions))
        self.target_agent_net = linear_default_init(mlp(obs_dim + n_agents, hidden, n_actions))
        copy_weights(self.agent_net, self.target_agent_net)
        self.mixer = self.target_mixer = None
        parameters = list(self.agent_net.parameters())
        if mixer is not None:
            self.mixer, self.target_mixer = (self._make_mixer(mixer, mixing_embed_dim, hypernet_layers,
                                                              hypernet_embed) for _ in range(2))
            copy_weights(self.mixer, self.target_mixer)
            parameters += list(self.mixer.parameters())
        self.optimizer = optim.Adam(parameters, lr=lr)
        self.buffer = JointReplayBuffer(buffer_size, n_agents, obs_dim, state_dim,
                                        seed=None if seed is None else seed + 1)
        self.rng = seeded_generator(seed)
        self.steps, self.updates = 0, 0
        self.agents: list[str] = [f"agent_{i}" for i in range(n_agents)]

    def _make_mixer(self, name: str, embed_dim: int, hypernet_layers: int, hypernet_embed: int):
        if name == "vdn":
            return VDNMixer()
        return QMixer(self.n_agents, self.state_dim, embed_dim, hypernet_layers, hypernet_embed)

    @classmethod
    def for_env(cls, env: ParallelEnv, **kwargs) -> MultiAgentQLearner:
        """A learner sized for ``env``: equal flat Box observations and Discrete actions."""
        label = cls.__name__
        n_actions = _discrete_actions(env, label)
        spaces = [env.observation_space(agent) for agent in env.possible_agents]
        if not all(isinstance(space, Box) and len(space.shape) == 1 and space.shape == spaces[0].shape
                   for space in spaces):
            raise ValueError(f"{label}: every agent needs the same flat Box observation space, got {spaces}")
        learner = cls(len(env.possible_agents), spaces[0].shape[0], n_actions, env.state_space.shape[0], **kwargs)
        learner.agents = list(env.possible_agents)
        return learner

    @property
    def epsilon(self) -> float:
        return _epsilon(self.eps_start, self.eps_end, self.eps_decay, self.steps)

    def _inputs(self, obs: numpy.ndarray) -> numpy.ndarray:
        """(batch, n_agents, obs_dim) observations -> (batch * n_agents, obs_dim + n_agents) with ids."""
        batch = obs.shape[0]
        ids = numpy.broadcast_to(numpy.eye(self.n_agents, dtype=numpy.float32), (batch, self.n_agents, self.n_agents))
        return numpy.concatenate([obs, ids], axis=2).reshape(batch * self.n_agents, -1)

    def _stack(self, observations: dict) -> numpy.ndarray:
        missing = [agent for agent in self.agents if agent not in observations]
        unknown = [agent for agent in observations if agent not in self.agents]
        if missing or unknown:
            raise KeyError(f"{type(self).__name__}: observations for agents {sorted(observations)} do not match "
                           f"the learner's agents {self.agents}")
        return numpy.stack([numpy.asarray(observations[agent], dtype=numpy.float32) for agent in self.agents])

    def q_values(self, observations: dict) -> numpy.ndarray:
        """Every agent's Q(o_i, .), shape (n_agents, n_actions)."""
        with no_grad():
            return self.agent_net(tensor(self._inputs(self._stack(observations)[None]))).numpy()

    def act(self, observations: dict, explore: bool = True) -> dict:
        q = self.q_values(observations)
        epsilon = self.epsilon if explore else 0.0
        if explore:
            self.steps += 1
        actions = {}
        for i, agent in enumerate(self.agents):
            greedy = int(q[i].argmax())
            actions[agent] = int(self.rng.integers(self.n_actions)) if self.rng.random() < epsilon else greedy
        return actions

    def observe(self, observations: dict, actions: dict, rewards: dict, next_observations: dict,
                terminated: bool, state=None, next_state=None) -> float | None:
        """Store the joint transition (the team reward is the mean of the agents' rewards) and take
        one gradient step once ``learning_starts`` transitions are stored; returns its loss."""
        team_reward = float(numpy.mean([rewards[agent] for agent in self.agents]))
        state = numpy.zeros(self.state_dim) if state is None else state
        next_state = numpy.zeros(self.state_dim) if next_state is None else next_state
        self.buffer.add(self._stack(observations), state, [actions[agent] for agent in self.agents], team_reward,
                        self._stack(next_observations), next_state, terminated)
        if len(self.buffer) >= max(self.learning_starts, 1):
            return self.learn()
        return None

    def loss(self, batch: dict):
        """The TD loss of the class docstring on a sampled batch (a scalar tensor)."""
        size = batch["obs"].shape[0]
        q = self.agent_net(tensor(self._inputs(batch["obs"]))).reshape(size, self.n_agents, self.n_actions)
        chosen = take_along_dim(q, batch["actions"][:, :, None], axis=2).reshape(size, self.n_agents)
        not_terminal = 1.0 - batch["terminated"].astype(numpy.float32)
        with no_grad():
            next_q = self.target_agent_net(tensor(self._inputs(batch["next_obs"]))).numpy()
            next_max = next_q.reshape(size, self.n_agents, self.n_actions).max(axis=2)
            if self.mixer is None:
                targets = batch["rewards"][:, None] + self.gamma * not_terminal[:, None] * next_max
            else:
                next_total = self.target_mixer(tensor(next_max), tensor(batch["next_states"])).numpy()
                targets = batch["rewards"] + self.gamma * not_terminal * next_total
        if self.mixer is None:
            return mean((chosen - tensor(targets.astype(numpy.float32))) ** 2)
        total = self.mixer(chosen, tensor(batch["states"]))
        return mean((total - tensor(targets.astype(numpy.float32))) ** 2)

    def learn(self) -> float:
        """One Adam step on a replayed batch; the targets copied every ``target_update_interval`` steps."""
        loss = self.loss(self.buffer.sample(self.batch_size))
        self.optimizer.zero_grad()
        loss.backward()
        optim.clip_grad_norm(self.agent_net, self.max_grad_norm)
        if self.mixer is not None and self.mixer.parameters():
            optim.clip_grad_norm(self.mixer, self.max_grad_norm)
        self.optimizer.step()
        self.updates += 1
        if self.updates % self.target_update_interval == 0:
            copy_weights(self.agent_net, self.target_agent_net)
            if self.mixer is not None:
                copy_weights(self.mixer, self.target_mixer)
        return float(loss.item())

    def train(self, env: ParallelEnv, episodes: int, seed: int | None = None) -> list[float]:
        """Learn from ``episodes`` episodes of ``env``; returns their team returns."""
        return run_episodes(env, self, episodes, seed=seed)


class IndependentQLearning(MultiAgentQLearner):
    """Independent deep Q-learning (one shared network, each agent its own TD target)."""

    def __init__(self, n_agents: int, obs_dim: int, n_actions: int, state_dim: int, **kwargs):
        super().__init__(n_agents, obs_dim, n_actions, state_dim, mixer=None, **kwargs)


class VDN(MultiAgentQLearner):
    """Value decomposition networks: Q_tot = sum_i Q_i(o_i, a_i) (Sunehag et al., 2018)."""

    def __init__(self, n_agents: int, obs_dim: int, n_actions: int, state_dim: int, **kwargs):
        super().__init__(n_agents, obs_dim, n_actions, state_dim, mixer="vdn", **kwargs)


class QMIX(MultiAgentQLearner):
    """QMIX: Q_tot a monotonic mixing of the Q_i conditioned on the state (Rashid et al., 2018)."""

    def __init__(self, n_agents: int, obs_dim: int, n_actions: int, state_dim: int, **kwargs):
        super().__init__(n_agents, obs_dim, n_actions, state_dim, mixer="qmix", **kwargs)


def run_episodes(env: ParallelEnv, learner, episodes: int, seed: int | None = None, learn: bool = True) -> list[float]:
    """Play ``episodes`` whole episodes, the environment reset with ``seed`` before the first.
    With ``learn`` the learner explores and observes every transition; without, it acts greedily
    and learns nothing. Returns each episode's team return (the sum over steps of the mean of the
    agents' rewards). Truncated episodes bootstrap from their last state; terminated ones do not."""
    returns = []
    for episode in range(episodes):
        observations, _ = env.reset(seed=seed if episode == 0 else None)
        total, done = 0.0, False
        while not done:
            state = env.state()
            actions = learner.act(observations, explore=learn)
            next_observations, rewards, terminations, truncations, _ = env.step(actions)
            terminated = any(terminations.values())
            done = terminated or any(truncations.values())
            if learn:
                learner.observe(observations, actions, rewards, next_observations, terminated, state, env.state())
            total += float(numpy.mean(list(rewards.values())))
            observations = next_observations
        returns.append(total)
    return returns
