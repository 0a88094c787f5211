"""MADDPG (Lowe et al., 2017): deterministic policies trained with centralised critics.

Agent i acts with its own actor mu_i(o_i) in [-1, 1]^d (plus Gaussian exploration noise) and has a
critic Q_i(o_1..o_N, a_1..a_N) that sees every agent's observation and action. With target networks
(primed) updated by Polyak averaging, for a batch of joint transitions:

    critic i:  (Q_i(o, a) - y_i)^2,   y_i = r_i + gamma (1 - terminated) Q'_i(o', mu'_1(o'_1), ..., mu'_N(o'_N))
    actor i:   -Q_i(o, a_1, ..., mu_i(o_i), ..., a_N), the other agents' actions from the batch."""

from __future__ import annotations

from collections.abc import Sequence

import numpy

from lamina import optim
from lamina.autograd import no_grad, tensor
from lamina.functional import concat, mean
from lamina.rl.multiagent.env import ParallelEnv
from lamina.rl.multiagent.learners import JointReplayBuffer, run_episodes
from lamina.rl.networks import copy_weights, soft_update
from lamina.rl.off_policy import QNetwork, box_bounds, frozen
from lamina.rl.spaces import Box, seeded_generator
from lamina.rl.td3 import DeterministicActor


class MADDPG:
    """Multi-agent DDPG for agents with flat Box observations of one size and bounded flat Box
    actions of one size. Actions are uniformly random for the first ``learning_starts`` steps;
    afterwards one update of every critic and actor follows each ``train_freq`` environment steps."""

    def __init__(self, n_agents: int, obs_dim: int, action_dim: int, hidden: Sequence[int] = (64, 64),
                 actor_lr: float = 1e-3, critic_lr: float = 1e-3, gamma: float = 0.95, tau: float = 0.01,
                 noise_std: float = 0.1, batch_size: int = 64, buffer_size: int = 20000, learning_starts: int = 200,
                 train_freq: int = 1, low=-1.0, high=1.0, seed: int | None = None):
        self.n_agents, self.obs_dim, self.action_dim = n_agents, obs_dim, action_dim
        self.gamma, self.tau, self.noise_std, self.batch_size = gamma, tau, noise_std, batch_size
        self.learning_starts, self.train_freq = learning_starts, train_freq
        self.low, self.high = box_bounds("MADDPG", Box(low, high, shape=(action_dim,)))
        self.actors = [DeterministicActor(obs_dim, action_dim, hidden) for _ in range(n_agents)]
        self.target_actors = [DeterministicActor(obs_dim, action_dim, hidden) for _ in range(n_agents)]
        self.critics = [QNetwork(n_agents * obs_dim, n_agents * action_dim, hidden) for _ in range(n_agents)]
        self.target_critics = [QNetwork(n_agents * obs_dim, n_agents * action_dim, hidden) for _ in range(n_agents)]
        for source, target in zip(self.actors + self.critics, self.target_actors + self.target_critics):
            copy_weights(source, target)
        self.actor_optimizers = [optim.Adam(actor.parameters(), lr=actor_lr) for actor in self.actors]
        self.critic_optimizers = [optim.Adam(critic.parameters(), lr=critic_lr) for critic in self.critics]
        self.buffer = JointReplayBuffer(buffer_size, n_agents, obs_dim, 0, seed=None if seed is None else seed + 1,
                                        action_shape=(action_dim,), action_dtype=numpy.float32,
                                        reward_shape=(n_agents,))
        self.rng = seeded_generator(seed)
        self.agents = [f"agent_{i}" for i in range(n_agents)]
        self.env_steps, self.updates = 0, 0

    @classmethod
    def for_env(cls, env: ParallelEnv, **kwargs) -> MADDPG:
        """A learner sized for ``env``; every agent's spaces must be the first agent's."""
        first = env.possible_agents[0]
        obs_space, action_space = env.observation_space(first), env.action_space(first)
        for agent in env.possible_agents:
            same = (env.observation_space(agent).shape == obs_space.shape
                    and isinstance(env.action_space(agent), Box) and isinstance(action_space, Box)
                    and env.action_space(agent).shape == action_space.shape)
            if not same or len(obs_space.shape) != 1 or len(action_space.shape) != 1:
                raise ValueError(f"MADDPG: every agent needs the same flat Box observation and action spaces; "
                                 f"{agent!r} has {env.observation_space(agent)} and {env.action_space(agent)}")
        learner = cls(len(env.possible_agents), obs_space.shape[0], action_space.shape[0], low=action_space.low,
                      high=action_space.high, **kwargs)
        learner.agents = list(env.possible_agents)
        return learner

    def _stack(self, observations: dict) -> numpy.ndarray:
        if sorted(observations) != sorted(self.agents):
            raise KeyError(f"MADDPG: observations for agents {sorted(observations)} do not match the learner's "
                           f"agents {self.agents}")
        return numpy.stack([numpy.asarray(observations[agent], dtype=numpy.float32) for agent in self.agents])

    def act(self, observations: dict, explore: bool = True) -> dict:
        """Each agent's mu_i(o_i), with N(0, noise_std^2) noise when exploring (uniformly random
        during the warm-up), clipped to [-1, 1] and moved to the action bounds."""
        obs = self._stack(observations)
        if explore and self.env_steps < self.learning_starts:
            unit = self.rng.uniform(-1.0, 1.0, (self.n_agents, self.action_dim))
        else:
            with no_grad():
                unit = numpy.stack([actor(tensor(obs[i][None])).numpy()[0] for i, actor in enumerate(self.actors)])
            if explore:
                unit = numpy.clip(unit + self.noise_std * self.rng.standard_normal(unit.shape), -1.0, 1.0)
        actions = self.low + (unit + 1.0) * 0.5 * (self.high - self.low)
        return {agent: actions[i].astype(numpy.float32) for i, agent in enumerate(self.agents)}

    def observe(self, observations: dict, actions: dict, rewards: dict, next_observations: dict,
                terminated: bool, state=None, next_state=None) -> None:
        """Store the joint transition (actions moved back to [-1, 1]) and learn when due."""
        unit = numpy.stack([2.0 * (numpy.asarray(actions[agent], dtype=numpy.float64) - self.low)
                            / (self.high - self.low) - 1.0 for agent in self.agents])
        self.buffer.add(self._stack(observations), numpy.zeros(0), numpy.clip(unit, -1.0, 1.0),
                        [rewards[agent] for agent in self.agents], self._stack(next_observations), numpy.zeros(0),
                        terminated)
        self.env_steps += 1
        if self.env_steps >= self.learning_starts and self.env_steps % self.train_freq == 0 \
                and len(self.buffer) >= self.batch_size:
            self.learn()

    def learn(self) -> tuple[list[float], list[float]]:
        """One update of every critic and actor on a replayed batch, then the soft target updates;
        returns the critics' and the actors' losses."""
        batch = self.buffer.sample(self.batch_size)
        size = self.batch_size
        joint_obs = tensor(batch["obs"].reshape(size, -1))
        joint_next_obs = tensor(batch["next_obs"].reshape(size, -1))
        with no_grad():
            next_actions = concat([actor(tensor(batch["next_obs"][:, i]))
                                   for i, actor in enumerate(self.target_actors)], axis=1)
        not_terminal = 1.0 - batch["terminated"].astype(numpy.float32)
        critic_losses, actor_losses = [], []
        for i in range(self.n_agents):
            with no_grad():
                next_q = self.target_critics[i](joint_next_obs, next_actions).numpy()
            targets = tensor((batch["rewards"][:, i] + self.gamma * not_terminal * next_q).astype(numpy.float32))
            critic_loss = mean((self.critics[i](joint_obs, tensor(batch["actions"].reshape(size, -1))) - targets) ** 2)
            self.critic_optimizers[i].zero_grad()
            critic_loss.backward()
            self.critic_optimizers[i].step()
            own = self.actors[i](tensor(batch["obs"][:, i]))
            actions = [own if j == i else tensor(batch["actions"][:, j]) for j in range(self.n_agents)]
            with frozen(self.critics[i]):
                actor_loss = -mean(self.critics[i](joint_obs, concat(actions, axis=1)))
                self.actor_optimizers[i].zero_grad()
                actor_loss.backward()
                self.actor_optimizers[i].step()
            critic_losses.append(float(critic_loss.item()))
            actor_losses.append(float(actor_loss.item()))
        for source, target in zip(self.actors + self.critics, self.target_actors + self.target_critics):
            soft_update(source, target, self.tau)
        self.updates += 1
        return critic_losses, actor_losses

    def train(self, env: ParallelEnv, episodes: int, seed: int | None = None) -> list[float]:
        """Learn from ``episodes`` episodes of ``env``; returns their team returns."""
        return run_episodes(env, self, episodes, seed=seed)
