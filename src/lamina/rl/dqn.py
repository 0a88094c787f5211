"""Deep Q-learning (Mnih et al., 2015) as in PyTorch's DQN tutorial, with the Double DQN
target (van Hasselt et al., 2016) as an option."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy

from lamina import optim
from lamina.autograd import Tensor, no_grad, tensor
from lamina.backend import manual_seed
from lamina.functional import smooth_l1_loss, take_along_dim
from lamina.nn import Module
from lamina.rl.env import Env
from lamina.rl.networks import copy_weights, mlp, obs_tensor, soft_update
from lamina.rl.replay import Batch, ReplayBuffer
from lamina.rl.spaces import Discrete, seeded_generator


def dqn_targets(target_net: Module, batch: Batch, gamma: float, online_net: Module | None = None) -> numpy.ndarray:
    """y = r + gamma (1 - terminated) max_a' Q_target(s', a'), or with ``online_net`` given the
    Double DQN target y = r + gamma (1 - terminated) Q_target(s', argmax_a' Q_online(s', a'))."""
    with no_grad():
        next_q = target_net(obs_tensor(batch.next_obs)).numpy()
        if online_net is None:
            next_value = next_q.max(axis=1)
        else:
            best = online_net(obs_tensor(batch.next_obs)).numpy().argmax(axis=1)
            next_value = numpy.take_along_axis(next_q, best[:, None], axis=1)[:, 0]
    not_terminal = 1.0 - batch.terminated.astype(next_value.dtype)
    return (batch.rewards + gamma * not_terminal * next_value).astype(next_q.dtype)


def dqn_loss(policy_net: Module, target_net: Module, batch: Batch, gamma: float, double: bool = False) -> Tensor:
    """The Huber (smooth L1, beta = 1) loss between Q(s, a) of ``policy_net`` and the target of
    :func:`dqn_targets`, averaged over the batch; gradients reach ``policy_net`` only."""
    q = policy_net(obs_tensor(batch.obs))
    q_taken = take_along_dim(q, numpy.asarray(batch.actions, dtype=numpy.int64)[:, None], axis=1)
    targets = dqn_targets(target_net, batch, gamma, online_net=policy_net if double else None)
    return smooth_l1_loss(q_taken, tensor(targets[:, None]))


class DQNAgent:
    """An epsilon-greedy Q-learning agent with a policy network, a target network that follows
    it by soft updates (tau), a replay buffer, AdamW (amsgrad) and gradient values clipped
    to [-grad_clip, grad_clip].

    The exploration rate decays exponentially with the steps taken:
    epsilon = eps_end + (eps_start - eps_end) exp(-steps / eps_decay).
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (128, 128), lr: float = 3e-4,
                 gamma: float = 0.99, eps_start: float = 0.9, eps_end: float = 0.01, eps_decay: float = 2500,
                 tau: float = 0.005, batch_size: int = 128, buffer_size: int = 10000, grad_clip: float = 100.0,
                 weight_decay: float = 0.01, double: bool = False, seed: int | None = None):
        self.n_actions = n_actions
        self.gamma, self.tau, self.batch_size, self.grad_clip = gamma, tau, batch_size, grad_clip
        self.eps_start, self.eps_end, self.eps_decay = eps_start, eps_end, eps_decay
        self.double = double
        self.policy_net = mlp(obs_dim, hidden, n_actions)
        self.target_net = mlp(obs_dim, hidden, n_actions)
        copy_weights(self.policy_net, self.target_net)
        self.optimizer = optim.AdamW(self.policy_net.parameters(), lr=lr, amsgrad=True, weight_decay=weight_decay)
        self.buffer = ReplayBuffer(buffer_size, (obs_dim,), seed=None if seed is None else seed + 1)
        self.rng = seeded_generator(seed)
        self.steps_done = 0

    @classmethod
    def for_env(cls, env: Env, **kwargs) -> DQNAgent:
        """An agent sized for ``env`` (a flat Box observation, a Discrete action space)."""
        if not isinstance(env.action_space, Discrete) or len(env.observation_space.shape) != 1:
            raise ValueError(f"DQNAgent: needs flat observations and discrete actions, got "
                             f"{env.observation_space} and {env.action_space}")
        return cls(env.observation_space.shape[0], env.action_space.n, **kwargs)

    @property
    def epsilon(self) -> float:
        return self.eps_end + (self.eps_start - self.eps_end) * math.exp(-self.steps_done / self.eps_decay)

    def predict(self, obs, deterministic: bool = True) -> int:
        """The greedy action argmax_a Q(obs, a) (``deterministic=False``: epsilon-greedy)."""
        if not deterministic:
            return self.act(obs)
        with no_grad():
            return int(self.policy_net(obs_tensor(obs)[None]).numpy()[0].argmax())

    def act(self, obs) -> int:
        """An epsilon-greedy action; counts a step of the epsilon schedule."""
        explore = self.rng.random() < self.epsilon
        self.steps_done += 1
        return int(self.rng.integers(self.n_actions)) if explore else self.predict(obs)

    def learn(self) -> float | None:
        """One gradient step on a replayed batch, then a soft target update; None (and nothing
        done) while the buffer holds fewer than ``batch_size`` transitions."""
        if len(self.buffer) < self.batch_size:
            return None
        loss = dqn_loss(self.policy_net, self.target_net, self.buffer.sample(self.batch_size), self.gamma,
                        double=self.double)
        self.optimizer.zero_grad()
        loss.backward()
        optim.clip_grad_value(self.policy_net, self.grad_clip)
        self.optimizer.step()
        soft_update(self.policy_net, self.target_net, self.tau)
        return float(loss.item())


def _as_env(env) -> Env:
    if isinstance(env, str):
        from lamina.rl.registry import make
        return make(env)
    return env


def train_dqn(env: Env | str, total_steps: int = 10000, agent: DQNAgent | None = None, seed: int | None = None,
              max_episodes: int | None = None, **agent_kwargs) -> list[float]:
    """Train ``agent`` (by default ``DQNAgent.for_env(env, seed=seed, **agent_kwargs)``) on ``env``
    for ``total_steps`` environment steps (or ``max_episodes`` episodes), one learning step per
    environment step as in PyTorch's tutorial. Truncated episodes still bootstrap from their last
    state; terminated ones do not. Returns the return of every finished episode."""
    env = _as_env(env)
    if agent is None:
        if seed is not None:
            manual_seed(seed)
        agent = DQNAgent.for_env(env, seed=seed, **agent_kwargs)
    elif agent_kwargs:
        raise TypeError(f"train_dqn: agent settings {sorted(agent_kwargs)} given with a ready agent")
    returns: list[float] = []
    obs, _ = env.reset(seed=seed)
    episode_return = 0.0
    for _ in range(total_steps):
        action = agent.act(obs)
        next_obs, reward, terminated, truncated, _ = env.step(action)
        agent.buffer.add(obs, action, reward, next_obs, terminated)
        agent.learn()
        episode_return += reward
        obs = next_obs
        if terminated or truncated:
            returns.append(episode_return)
            if max_episodes is not None and len(returns) >= max_episodes:
                break
            obs, _ = env.reset()
            episode_return = 0.0
    return returns
