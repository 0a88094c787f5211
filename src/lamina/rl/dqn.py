"""Deep Q-learning (Mnih et al., 2015) as in PyTorch's DQN tutorial, with the Double DQN
target (van Hasselt et al., 2016), prioritized replay (Schaul et al., 2016), periodic hard
target updates and batched training rounds as options.

Two named settings (:data:`DQN_PRESETS`): ``"tutorial"`` (PyTorch's DQN tutorial, the class
defaults) and ``"zoo"``, the CartPole-v1 hyperparameters tuned for Stable-Baselines3's DQN in
RL Baselines3 Zoo (hyperparams/dqn.yml): two hidden layers of 256, Adam lr 2.3e-3, batch 64,
a buffer of 100,000, learning from step 1,000, 128 gradient steps every 256 environment steps,
the target network copied every 10 environment steps, epsilon falling linearly from 1 to 0.04
over the first 8,000 steps (16% of 50,000), gradient norm clipped to 10 (SB3's default), Huber
loss, gamma 0.99. Three additions, without which the zoo settings alone left the greedy policy
oscillating between balancing for 500 steps and falling early (seeds 0 to 2): the Double DQN
target, proportional prioritized replay (alpha 0.6, beta 0.4 rising to 1 over the run) and the
learning rate falling linearly to 0 over the 50,000 steps (the zoo's ``lin_`` schedule form)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy

from lamina import optim
from lamina.autograd import Tensor, no_grad, tensor
from lamina.backend import to_numpy
from lamina.functional import mean, smooth_l1_loss, take_along_dim
from lamina.nn import Module
from lamina.rl.agent_loop import as_env, make_agent, run_agent
from lamina.rl.env import Env
from lamina.rl.networks import copy_weights, mlp, obs_tensor, soft_update
from lamina.rl.prioritized import PrioritizedReplayBuffer
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


def dqn_loss(policy_net: Module, target_net: Module, batch: Batch, gamma: float, double: bool = False,
             weights=None, return_td_errors: bool = False,
             target_clip: tuple[float, float] | None = None) -> Tensor | tuple[Tensor, numpy.ndarray]:
    """The Huber (smooth L1, beta = 1) loss between Q(s, a) of ``policy_net`` and the target of
    :func:`dqn_targets`, averaged over the batch (with ``weights``: mean_i w_i Huber(delta_i));
    gradients reach ``policy_net`` only. With ``return_td_errors``, also returns the TD errors
    delta = Q(s, a) - y as an array. ``target_clip`` (low, high) clips y into [low, high] (HER's
    [-1 / (1 - gamma), 0] for rewards in [-1, 0])."""
    q = policy_net(obs_tensor(batch.obs))
    q_taken = take_along_dim(q, numpy.asarray(batch.actions, dtype=numpy.int64)[:, None], axis=1)
    targets = dqn_targets(target_net, batch, gamma, online_net=policy_net if double else None)
    if target_clip is not None:
        targets = numpy.clip(targets, *target_clip).astype(targets.dtype)
    if weights is None:
        loss = smooth_l1_loss(q_taken, tensor(targets[:, None]))
    else:
        per_sample = smooth_l1_loss(q_taken, tensor(targets[:, None]), reduction="none")
        loss = mean(per_sample * tensor(numpy.asarray(weights, dtype=targets.dtype)[:, None]))
    if return_td_errors:
        return loss, q_taken.numpy()[:, 0] - targets
    return loss


DQN_PRESETS: dict[str, dict] = {
    "tutorial": {},
    "zoo": dict(hidden=(256, 256), lr=2.3e-3, batch_size=64, buffer_size=100000, learning_starts=1000,
                gamma=0.99, target_update_interval=10, train_freq=256, gradient_steps=128, eps_start=1.0,
                eps_end=0.04, eps_decay=8000, eps_schedule="linear", grad_clip=None, max_grad_norm=10.0,
                weight_decay=0.0, amsgrad=False, double=True, lr_decay_steps=50000, prioritized=True, alpha=0.6,
                beta=0.4, beta_steps=50000),
}
"""Named DQNAgent settings (see the module docstring for their sources)."""

PRESET_STEPS = {"tutorial": 20000, "zoo": 50000}
"""The environment steps each preset is meant to train for on CartPole-v1."""


class DQNAgent:
    """An epsilon-greedy Q-learning agent with a policy network, a target network, a replay
    buffer and AdamW. The defaults are PyTorch's tutorial: AdamW with amsgrad, gradient values
    clipped to [-grad_clip, grad_clip], one gradient step per environment step and a target
    that follows by soft updates theta' <- tau theta + (1 - tau) theta'.

    Options: ``max_grad_norm`` (clip the gradient norm instead or as well), ``learning_starts``,
    ``train_freq`` / ``gradient_steps`` (``gradient_steps`` steps every ``train_freq``
    environment steps), ``target_update_interval`` (copy the policy network into the target
    every that many environment steps instead of soft updates), ``double`` (Double DQN),
    ``prioritized`` (a :class:`PrioritizedReplayBuffer` with ``alpha``; its beta rises linearly
    from ``beta`` to 1 over ``beta_steps`` environment steps) and ``lr_decay_steps`` (the
    learning rate falls linearly from ``lr`` to 0 over that many environment steps) and
    ``kernel_init`` (the networks' weight initializer) and ``target_clip`` (clip the targets y
    into (low, high), see :func:`dqn_loss`).

    The exploration rate decays with the actions taken, exponentially
    (epsilon = eps_end + (eps_start - eps_end) exp(-steps / eps_decay)) or, with
    ``eps_schedule="linear"``, linearly to eps_end at step eps_decay.
    """

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (128, 128), lr: float = 3e-4,
                 gamma: float = 0.99, eps_start: float = 0.9, eps_end: float = 0.01, eps_decay: float = 2500,
                 tau: float = 0.005, batch_size: int = 128, buffer_size: int = 10000,
                 grad_clip: float | None = 100.0, weight_decay: float = 0.01, double: bool = False,
                 seed: int | None = None, *, amsgrad: bool = True, max_grad_norm: float | None = None,
                 eps_schedule: str = "exponential", learning_starts: int = 0, train_freq: int = 1,
                 gradient_steps: int = 1, target_update_interval: int | None = None, prioritized: bool = False,
                 alpha: float = 0.6, beta: float = 0.4, beta_steps: int = 50000, priority_eps: float = 1e-6,
                 lr_decay_steps: int | None = None, kernel_init="he_uniform",
                 target_clip: tuple[float, float] | None = None):
        if eps_schedule not in ("exponential", "linear"):
            raise ValueError(f"DQNAgent: eps_schedule must be 'exponential' or 'linear', got {eps_schedule!r}")
        self.n_actions = n_actions
        self.gamma, self.tau, self.batch_size, self.grad_clip = gamma, tau, batch_size, grad_clip
        self.max_grad_norm = max_grad_norm
        self.eps_start, self.eps_end, self.eps_decay, self.eps_schedule = eps_start, eps_end, eps_decay, eps_schedule
        self.learning_starts, self.train_freq, self.gradient_steps = learning_starts, train_freq, gradient_steps
        self.target_update_interval = target_update_interval
        self.lr_start, self.lr_decay_steps = lr, lr_decay_steps
        self.double, self.target_clip = double, target_clip
        self.policy_net = mlp(obs_dim, hidden, n_actions, kernel_init=kernel_init)
        self.target_net = mlp(obs_dim, hidden, n_actions, kernel_init=kernel_init)
        copy_weights(self.policy_net, self.target_net)
        self.optimizer = optim.AdamW(self.policy_net.parameters(), lr=lr, amsgrad=amsgrad, weight_decay=weight_decay)
        buffer_seed = None if seed is None else seed + 1
        self.prioritized, self.beta_start, self.beta_steps = prioritized, beta, beta_steps
        if prioritized:
            self.buffer = PrioritizedReplayBuffer(buffer_size, (obs_dim,), alpha=alpha, beta=beta, eps=priority_eps,
                                                  seed=buffer_seed)
        else:
            self.buffer = ReplayBuffer(buffer_size, (obs_dim,), seed=buffer_seed)
        self.rng = seeded_generator(seed)
        self.steps_done = 0
        self.env_steps = 0

    @classmethod
    def for_env(cls, env: Env, **kwargs) -> DQNAgent:
        """An agent sized for ``env`` (a flat Box observation, a Discrete action space)."""
        if not isinstance(env.action_space, Discrete) or len(env.observation_space.shape) != 1:
            raise ValueError(f"DQNAgent: needs flat observations and discrete actions, got "
                             f"{env.observation_space} and {env.action_space}")
        return cls(env.observation_space.shape[0], env.action_space.n, **kwargs)

    @classmethod
    def from_preset(cls, env: Env, preset: str = "zoo", **overrides) -> DQNAgent:
        """An agent for ``env`` with the settings of :data:`DQN_PRESETS` [``preset``], then ``overrides``."""
        if preset not in DQN_PRESETS:
            raise ValueError(f"DQNAgent.from_preset: no preset {preset!r}; known: {sorted(DQN_PRESETS)}")
        return cls.for_env(env, **{**DQN_PRESETS[preset], **overrides})

    def state_dict(self) -> dict:
        """Everything that changes while training, for :meth:`load_state_dict`: both networks'
        weights, the optimizer's state and learning rate, the replay buffer (with its priorities),
        the schedules' step counts and the exploration generator's state. Holds only dicts,
        lists, numbers, strings and arrays (copies), ready for :func:`lamina.io.state.flatten_state`."""
        return {"algorithm": "dqn", "policy_net": _weights(self.policy_net), "target_net": _weights(self.target_net),
                "optimizer": self.optimizer.state_dict(), "lr": self.optimizer.lr, "buffer": self.buffer.state_dict(),
                "steps_done": self.steps_done, "env_steps": self.env_steps, "lr_decay_steps": self.lr_decay_steps,
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` into an agent built with the same settings."""
        if state.get("algorithm") != "dqn":
            raise ValueError(f"DQNAgent.load_state_dict: the state is from {state.get('algorithm')!r}, not 'dqn'")
        saved_prioritized = "tree" in state["buffer"]
        if saved_prioritized != self.prioritized:
            raise ValueError(f"DQNAgent.load_state_dict: the state has prioritized={saved_prioritized} replay but "
                             f"the agent prioritized={self.prioritized}")
        self.policy_net.load_state_dict(state["policy_net"])
        self.target_net.load_state_dict(state["target_net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.optimizer.lr = state["lr"]
        self.buffer.load_state_dict(state["buffer"])
        self.steps_done, self.env_steps = int(state["steps_done"]), int(state["env_steps"])
        self.lr_decay_steps = state["lr_decay_steps"]
        self.rng.bit_generator.state = state["rng"]

    @property
    def epsilon(self) -> float:
        if self.eps_schedule == "linear":
            fraction = min(1.0, self.steps_done / self.eps_decay)
            return self.eps_start + fraction * (self.eps_end - self.eps_start)
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

    def observe(self, obs, action, reward: float, next_obs, terminated: bool) -> None:
        """Store a transition and do the learning due after it: ``gradient_steps`` calls of
        :meth:`learn` every ``train_freq`` environment steps once ``learning_starts`` steps
        are stored, and a hard target update every ``target_update_interval`` steps."""
        self.buffer.add(obs, action, reward, next_obs, terminated)
        self.env_steps += 1
        if self.lr_decay_steps:
            self.optimizer.lr = self.lr_start * max(0.0, 1.0 - self.env_steps / self.lr_decay_steps)
        if self.prioritized:
            self.buffer.beta = min(1.0, self.beta_start + (1.0 - self.beta_start) * self.env_steps / self.beta_steps)
        if self.env_steps >= self.learning_starts and self.env_steps % self.train_freq == 0:
            for _ in range(self.gradient_steps):
                self.learn()
        if self.target_update_interval and self.env_steps % self.target_update_interval == 0:
            copy_weights(self.policy_net, self.target_net)

    def learn(self) -> float | None:
        """One gradient step on a replayed batch, then a soft target update (unless the target is
        updated periodically); None (and nothing done) while the buffer holds fewer than
        ``batch_size`` transitions. With prioritized replay the loss is weighted by the
        importance-sampling weights and the batch's priorities are set from its TD errors."""
        if len(self.buffer) < self.batch_size:
            return None
        if self.prioritized:
            batch, weights, indices = self.buffer.sample(self.batch_size)
            loss, td_errors = dqn_loss(self.policy_net, self.target_net, batch, self.gamma, double=self.double,
                                       weights=weights, return_td_errors=True, target_clip=self.target_clip)
        else:
            loss = dqn_loss(self.policy_net, self.target_net, self.buffer.sample(self.batch_size), self.gamma,
                            double=self.double, target_clip=self.target_clip)
        self.optimizer.zero_grad()
        loss.backward()
        if self.max_grad_norm is not None:
            optim.clip_grad_norm(self.policy_net, self.max_grad_norm)
        if self.grad_clip is not None:
            optim.clip_grad_value(self.policy_net, self.grad_clip)
        self.optimizer.step()
        if self.prioritized:
            self.buffer.update_priorities(indices, td_errors)
        if not self.target_update_interval:
            soft_update(self.policy_net, self.target_net, self.tau)
        return float(loss.item())


def _weights(net: Module) -> dict[str, numpy.ndarray]:
    """Copies of a network's parameters and buffers by name."""
    return {name: numpy.array(to_numpy(value)) for name, value in net.state_dict().items()}


def train_dqn(env: Env | str, total_steps: int = 10000, agent: DQNAgent | None = None, seed: int | None = None,
              max_episodes: int | None = None, **agent_kwargs) -> list[float]:
    """Train ``agent`` (by default ``DQNAgent.for_env(env, seed=seed, **agent_kwargs)``) on ``env``
    for ``total_steps`` environment steps (or ``max_episodes`` episodes), one learning step per
    environment step as in PyTorch's tutorial (other schedules as the agent's settings say,
    see :meth:`DQNAgent.observe`). Truncated episodes still bootstrap from their last
    state; terminated ones do not. Returns the return of every finished episode."""
    env = as_env(env)
    agent = make_agent(DQNAgent, env, agent, seed, agent_kwargs, "train_dqn")
    return run_agent(env, agent, total_steps, seed, max_episodes)
