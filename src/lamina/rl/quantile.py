"""Distributional Q-learning with quantiles: QR-DQN (Dabney et al., 2018a, "Distributional
Reinforcement Learning with Quantile Regression").

Instead of C51's fixed support with learned probabilities (:mod:`lamina.rl.rainbow`), QR-DQN
fixes the probabilities and learns the support: for every action N values theta_i(s, a) stand
for the quantiles of the return Z(s, a) at the midpoints tau_i = (2i - 1) / 2N, i = 1..N, so that
Z(s, a) is approximated by the uniform mixture of Diracs (1/N) sum_i delta_{theta_i(s, a)} and
Q(s, a) = (1/N) sum_i theta_i(s, a). The target of (s, a, r, s') is the set of samples
T theta_j = r + gamma (1 - terminated) theta'_j(s', a*) of the target network at the greedy
a* = argmax_a Q(s', a), and the quantiles are fitted by the quantile Huber loss
(:func:`quantile_huber_loss`). :mod:`lamina.rl.iqn` builds IQN on the same loss and agent loop.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy

from lamina import nn, optim
from lamina.autograd import Tensor, no_grad, tensor
from lamina.backend import to_numpy
from lamina.errors import ShapeError
from lamina.functional import abs as abs_
from lamina.functional import mean, smooth_l1_loss
from lamina.nn import Module
from lamina.nn.constructor_config import register_with_arguments
from lamina.rl.agent_loop import as_env, make_agent, run_agent
from lamina.rl.env import Env
from lamina.rl.networks import copy_weights, obs_tensor
from lamina.rl.replay import Batch, ReplayBuffer
from lamina.rl.spaces import Discrete, seeded_generator

__all__ = ["QRDQNAgent", "QRDQNNetwork", "QuantileAgent", "quantile_huber_loss", "quantile_midpoints",
           "train_qrdqn"]


def quantile_midpoints(n: int) -> numpy.ndarray:
    """The quantile fractions tau_i = (2i - 1) / 2N, i = 1..N, of QR-DQN (float64, (N,))."""
    if n < 1:
        raise ValueError(f"quantile_midpoints: needs n >= 1, got {n}")
    return (2.0 * numpy.arange(1, n + 1) - 1.0) / (2.0 * n)


def quantile_huber_loss(quantiles, targets, taus, kappa: float = 1.0, weights=None,
                        reduction: str = "mean") -> Tensor:
    """The quantile Huber loss of Dabney et al. (2018a, eq. 10) between predicted quantiles
    theta_i (batch, N) at fractions tau_i and target samples T theta_j (batch, N'):

        u_ij = T theta_j - theta_i,
        rho_tau^kappa(u) = |tau - 1{u < 0}| L_kappa(u) / kappa,
        L_kappa(u) = u^2 / 2 if |u| <= kappa else kappa (|u| - kappa / 2),
        loss_b = sum_i (1/N') sum_j rho_{tau_i}^kappa(u_ij)

    (summed over the predicted quantiles i, averaged over the target samples j); ``kappa=0``
    gives the plain quantile regression loss |tau - 1{u < 0}| |u|. ``taus`` is (N,) or
    (batch, N); ``targets`` are constants (no gradient reaches them). Returns the mean over the
    batch of loss_b (with ``weights``: mean_b w_b loss_b), or loss_b per row with
    ``reduction="none"``."""
    if reduction not in ("mean", "none"):
        raise ValueError(f"quantile_huber_loss: reduction must be 'mean' or 'none', got {reduction!r}")
    if kappa < 0:
        raise ValueError(f"quantile_huber_loss: kappa must be >= 0, got {kappa}")
    quantiles = quantiles if isinstance(quantiles, Tensor) else tensor(quantiles)
    target = numpy.asarray(to_numpy(targets.data) if isinstance(targets, Tensor) else targets)
    taus = numpy.asarray(to_numpy(taus.data) if isinstance(taus, Tensor) else taus, dtype=numpy.float64)
    if quantiles.ndim != 2 or target.ndim != 2 or target.shape[0] != quantiles.shape[0]:
        raise ShapeError(f"quantile_huber_loss: expected quantiles (batch, N) and targets (batch, N'), got "
                         f"{quantiles.shape} and {target.shape}")
    if taus.shape not in ((quantiles.shape[1],), quantiles.shape):
        raise ShapeError(f"quantile_huber_loss: taus must be (N,) = ({quantiles.shape[1]},) or (batch, N) = "
                         f"{quantiles.shape}, got {taus.shape}")
    batch, n = quantiles.shape
    n_target = target.shape[1]
    predicted = quantiles.reshape(batch, n, 1)
    target_t = tensor(numpy.broadcast_to(target[:, None, :], (batch, n, n_target)), dtype=quantiles.dtype)
    expanded = predicted + tensor(numpy.zeros((1, 1, n_target)), dtype=quantiles.dtype)
    if kappa == 0:
        elementwise = abs_(target_t - expanded)
    else:
        elementwise = smooth_l1_loss(expanded, target_t, reduction="none", beta=kappa)  # = L_kappa(u) / kappa
    u = target[:, None, :] - quantiles.numpy()[:, :, None]
    tau = numpy.broadcast_to(taus, (batch, n))[:, :, None]
    asymmetry = tensor(numpy.abs(tau - (u < 0)), dtype=quantiles.dtype)
    per_row = (asymmetry * elementwise).sum(axis=(1, 2)) * (1.0 / n_target)
    if weights is not None:
        per_row = per_row * tensor(numpy.asarray(weights), dtype=quantiles.dtype)
    return per_row if reduction == "none" else mean(per_row)


@register_with_arguments
class QRDQNNetwork(Module):
    """QR-DQN's network on observation vectors: ReLU Dense layers ``hidden``, then a linear layer
    of ``n_actions * n_quantiles`` outputs, returned as quantiles (batch, n_actions, n_quantiles)
    at the fractions :func:`quantile_midpoints` (n_quantiles)."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64), n_quantiles: int = 32):
        super().__init__()
        if n_quantiles < 1 or n_actions < 1:
            raise ValueError(f"QRDQNNetwork: needs n_actions >= 1 and n_quantiles >= 1, got n_actions={n_actions}, "
                             f"n_quantiles={n_quantiles}")
        self.obs_dim, self.n_actions, self.n_quantiles = obs_dim, n_actions, n_quantiles
        self.taus = quantile_midpoints(n_quantiles)
        layers = [nn.Dense(units, activation="relu") for units in hidden]
        self.body = nn.Sequential([*layers, nn.Dense(n_actions * n_quantiles)])
        self.build((None, obs_dim))

    def forward(self, obs) -> Tensor:
        obs = obs if isinstance(obs, Tensor) else obs_tensor(obs)
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim:
            raise ShapeError(f"QRDQNNetwork: expected observations (batch, {self.obs_dim}), got {obs.shape}")
        return self.body(obs).reshape(-1, self.n_actions, self.n_quantiles)

    def q_values(self, obs) -> numpy.ndarray:
        """Q(s, a) = (1/N) sum_i theta_i(s, a), (batch, actions), without recording a graph."""
        with no_grad():
            return self(obs).numpy().mean(axis=-1)


class QuantileAgent:
    """The epsilon-greedy replay loop QR-DQN and IQN share: an online and a target network, a
    uniform replay buffer, Adam (eps 0.01 / batch size, as Dabney et al.) with the gradient norm
    clipped to ``max_grad_norm``, one gradient step every ``train_freq`` environment steps once
    ``learning_starts`` are stored, the target network copied every ``target_update_interval``
    environment steps, and epsilon falling linearly from ``eps_start`` to ``eps_end`` over
    ``eps_decay`` actions. Subclasses build ``online_net`` / ``target_net`` and give
    :meth:`action_values` and :meth:`loss`."""

    algorithm = "quantile"

    def __init__(self, obs_dim: int, n_actions: int, online_net: Module, target_net: Module, *, lr: float,
                 gamma: float, batch_size: int, buffer_size: int, learning_starts: int, train_freq: int,
                 target_update_interval: int, eps_start: float, eps_end: float, eps_decay: int,
                 max_grad_norm: float | None, kappa: float, double: bool, seed: int | None):
        self.obs_dim, self.n_actions = obs_dim, n_actions
        self.gamma, self.batch_size, self.kappa, self.double = gamma, batch_size, kappa, double
        self.learning_starts, self.train_freq = learning_starts, train_freq
        self.target_update_interval, self.max_grad_norm = target_update_interval, max_grad_norm
        self.eps_start, self.eps_end, self.eps_decay = eps_start, eps_end, eps_decay
        self.online_net, self.target_net = online_net, target_net
        copy_weights(self.online_net, self.target_net)
        self.optimizer = optim.Adam(self.online_net.parameters(), lr=lr, eps=0.01 / batch_size)
        self.buffer = ReplayBuffer(buffer_size, (obs_dim,), seed=None if seed is None else seed + 1)
        self.rng = seeded_generator(seed)
        self.steps_done = 0
        self.env_steps = 0

    @classmethod
    def for_env(cls, env: Env, **kwargs):
        """An agent sized for ``env`` (a flat Box observation, a Discrete action space)."""
        if not isinstance(env.action_space, Discrete) or len(env.observation_space.shape) != 1:
            raise ValueError(f"{cls.__name__}: needs flat observations and discrete actions, got "
                             f"{env.observation_space} and {env.action_space}")
        return cls(env.observation_space.shape[0], env.action_space.n, **kwargs)

    @property
    def epsilon(self) -> float:
        fraction = min(1.0, self.steps_done / max(self.eps_decay, 1))
        return self.eps_start + fraction * (self.eps_end - self.eps_start)

    def action_values(self, obs, deterministic: bool = True) -> numpy.ndarray:
        """The values the policy maximizes, (batch, actions)."""
        raise NotImplementedError

    def loss(self, batch: Batch) -> Tensor:
        raise NotImplementedError

    def predict(self, obs, deterministic: bool = True) -> int:
        """The greedy action argmax_a of :meth:`action_values` (``deterministic=False``: epsilon-greedy)."""
        if not deterministic:
            return self.act(obs)
        return int(self.action_values(obs_tensor(obs)[None])[0].argmax())

    def act(self, obs) -> int:
        """An epsilon-greedy action; counts a step of the epsilon schedule."""
        explore = self.rng.random() < self.epsilon
        self.steps_done += 1
        if explore:
            return int(self.rng.integers(self.n_actions))
        return int(self.action_values(obs_tensor(obs)[None], deterministic=False)[0].argmax())

    def observe(self, obs, action, reward: float, next_obs, terminated: bool) -> None:
        """Store a transition, learn when the schedule says so and copy the target when due."""
        self.buffer.add(obs, action, reward, next_obs, terminated)
        self.env_steps += 1
        if self.env_steps >= self.learning_starts and self.env_steps % self.train_freq == 0:
            self.learn()
        if self.env_steps % self.target_update_interval == 0:
            copy_weights(self.online_net, self.target_net)

    def learn(self) -> float | None:
        """One gradient step on a uniformly replayed batch; None while fewer than ``batch_size`` are stored."""
        if len(self.buffer) < self.batch_size:
            return None
        loss = self.loss(self.buffer.sample(self.batch_size))
        self.optimizer.zero_grad()
        loss.backward()
        if self.max_grad_norm is not None:
            optim.clip_grad_norm(self.online_net, self.max_grad_norm)
        self.optimizer.step()
        return float(loss.item())

    def state_dict(self) -> dict:
        """Both networks' weights, the optimizer, the replay buffer, the step counts and the
        exploration generator's state (copies), for :meth:`load_state_dict`."""
        return {"algorithm": self.algorithm, "online_net": _weights(self.online_net),
                "target_net": _weights(self.target_net), "optimizer": self.optimizer.state_dict(),
                "buffer": self.buffer.state_dict(), "steps_done": self.steps_done, "env_steps": self.env_steps,
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` into an agent built with the same settings."""
        if state.get("algorithm") != self.algorithm:
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state is from {state.get('algorithm')!r}, "
                             f"not {self.algorithm!r}")
        self.online_net.load_state_dict(state["online_net"])
        self.target_net.load_state_dict(state["target_net"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.buffer.load_state_dict(state["buffer"])
        self.steps_done, self.env_steps = int(state["steps_done"]), int(state["env_steps"])
        self.rng.bit_generator.state = state["rng"]


class QRDQNAgent(QuantileAgent):
    """QR-DQN on flat observations and discrete actions: a :class:`QRDQNNetwork` of
    ``n_quantiles`` quantiles per action, greedy by their mean, trained with
    :func:`quantile_huber_loss` (``kappa``) against r + gamma (1 - terminated) theta'(s', a*), where
    a* = argmax_a Q(s', a) of the target network, or of the online network with ``double``."""

    algorithm = "qrdqn"

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (64, 64), n_quantiles: int = 32,
                 kappa: float = 1.0, lr: float = 1e-3, gamma: float = 0.99, batch_size: int = 64,
                 buffer_size: int = 10000, learning_starts: int = 500, train_freq: int = 1,
                 target_update_interval: int = 100, eps_start: float = 1.0, eps_end: float = 0.05,
                 eps_decay: int = 2000, max_grad_norm: float | None = 10.0, double: bool = False,
                 seed: int | None = None):
        net_args = dict(obs_dim=obs_dim, n_actions=n_actions, hidden=tuple(hidden), n_quantiles=n_quantiles)
        super().__init__(obs_dim, n_actions, QRDQNNetwork(**net_args), QRDQNNetwork(**net_args), lr=lr, gamma=gamma,
                         batch_size=batch_size, buffer_size=buffer_size, learning_starts=learning_starts,
                         train_freq=train_freq, target_update_interval=target_update_interval, eps_start=eps_start,
                         eps_end=eps_end, eps_decay=eps_decay, max_grad_norm=max_grad_norm, kappa=kappa,
                         double=double, seed=seed)
        self.taus = self.online_net.taus

    def action_values(self, obs, deterministic: bool = True) -> numpy.ndarray:
        """Q(s, a), the mean of the quantiles."""
        return self.online_net.q_values(obs)

    def quantiles(self, obs) -> numpy.ndarray:
        """The online network's quantiles (batch, actions, N) of observations (batch, obs_dim)."""
        with no_grad():
            return self.online_net(obs).numpy()

    def targets(self, batch: Batch) -> numpy.ndarray:
        """r + gamma (1 - terminated) theta'_j(s', a*), (batch, N)."""
        with no_grad():
            next_quantiles = self.target_net(batch.next_obs).numpy()
        chooser = self.online_net.q_values(batch.next_obs) if self.double else next_quantiles.mean(axis=-1)
        chosen = next_quantiles[numpy.arange(len(chooser)), chooser.argmax(axis=1)]
        not_terminal = 1.0 - batch.terminated.astype(chosen.dtype)
        return batch.rewards[:, None] + self.gamma * not_terminal[:, None] * chosen

    def loss(self, batch: Batch) -> Tensor:
        """The quantile Huber loss of the taken actions' quantiles against :meth:`targets`."""
        quantiles = self.online_net(batch.obs)
        return quantile_huber_loss(_taken(quantiles, batch.actions), self.targets(batch), self.taus, self.kappa)


def _taken(values: Tensor, actions) -> Tensor:
    """values (batch, actions, N) at each row's action: (batch, N), differentiable."""
    one_hot = numpy.zeros(values.shape[:2] + (1,), dtype=values.dtype)
    one_hot[numpy.arange(values.shape[0]), numpy.asarray(actions, dtype=numpy.int64)] = 1.0
    return (values * tensor(one_hot, dtype=values.dtype)).sum(axis=1)


def _weights(net: Module) -> dict[str, numpy.ndarray]:
    """Copies of a network's parameters and buffers by name."""
    return {name: numpy.array(to_numpy(value)) for name, value in net.state_dict().items()}


def train_qrdqn(env: Env | str, total_steps: int = 10000, agent: QRDQNAgent | None = None, seed: int | None = None,
                max_episodes: int | None = None, **agent_kwargs) -> list[float]:
    """Train ``agent`` (by default ``QRDQNAgent.for_env(env, seed=seed, **agent_kwargs)``) for
    ``total_steps`` environment steps (or ``max_episodes`` episodes). Returns the return of
    every finished episode."""
    env = as_env(env)
    agent = make_agent(QRDQNAgent, env, agent, seed, agent_kwargs, "train_qrdqn")
    return run_agent(env, agent, total_steps, seed, max_episodes)
