"""Implicit quantile networks (Dabney et al., 2018b, "Implicit Quantile Networks for
Distributional Reinforcement Learning").

IQN learns the whole quantile function Z_tau(s, a) = F^-1_{Z(s, a)}(tau): a fraction tau in
[0, 1] is embedded as

    phi_j(tau) = ReLU(sum_{i=0}^{n-1} cos(pi i tau) w_ij + b_j),   i = 0..63 (n = 64),

multiplied elementwise into the state features psi(s) and passed through a head f, so that
Z_tau(s, a) = f(psi(s) * phi(tau))_a. A transition is trained with N fractions tau_i ~ U[0, 1]
for the prediction and N' fractions tau'_j ~ U[0, 1] for the target
r + gamma (1 - terminated) Z'_{tau'_j}(s', a*), through :func:`lamina.rl.quantile.quantile_huber_loss`.

The policy maximizes a distorted expectation Q_beta(s, a) = (1/K) sum_k Z_{beta(tau~_k)}(s, a),
tau~_k ~ U[0, 1], with a distortion beta (:func:`distort_taus`): neutral beta(tau) = tau (the
mean), CVaR_eta beta(tau) = eta tau (the mean of the worst eta fraction of returns), CPW
(cumulative probability weighting) and Wang's Phi(Phi^-1(tau) + eta). The greedy next action
a* of the target uses the same distorted values, as in the paper's Algorithm 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy
from scipy.special import ndtr, ndtri

from lamina import nn
from lamina.autograd import Tensor, no_grad, tensor
from lamina.backend import get_default_dtype
from lamina.errors import ShapeError
from lamina.functional import cos
from lamina.nn import Module
from lamina.nn.constructor_config import register_with_arguments
from lamina.rl.agent_loop import as_env, make_agent, run_agent
from lamina.rl.env import Env
from lamina.rl.networks import obs_tensor
from lamina.rl.quantile import QuantileAgent, _taken, quantile_huber_loss, quantile_midpoints
from lamina.rl.replay import Batch

__all__ = ["DISTORTIONS", "IQNAgent", "IQNNetwork", "QuantileEmbedding", "cosine_features", "distort_taus",
           "train_iqn"]

DISTORTIONS = ("neutral", "cvar", "cpw", "wang")
"""The distortion risk measures of :func:`distort_taus`."""


def distort_taus(taus, distortion: str = "neutral", eta: float | None = None) -> numpy.ndarray:
    """beta(tau) of a distortion risk measure (Dabney et al., 2018b, section 3.1):
    ``"neutral"`` tau; ``"cvar"`` eta tau (eta in (0, 1]); ``"cpw"``
    tau^eta / (tau^eta + (1 - tau)^eta)^(1 / eta) (eta > 0, 0.71 in the paper); ``"wang"``
    Phi(Phi^-1(tau) + eta) (eta < 0 risk-averse, > 0 risk-seeking)."""
    taus = numpy.asarray(taus, dtype=numpy.float64)
    if distortion == "neutral":
        return taus
    defaults = {"cvar": 0.25, "cpw": 0.71, "wang": -0.75}
    if distortion not in defaults:
        raise ValueError(f"distort_taus: distortion must be one of {DISTORTIONS}, got {distortion!r}")
    eta = defaults[distortion] if eta is None else float(eta)
    if distortion == "cvar":
        if not 0.0 < eta <= 1.0:
            raise ValueError(f"distort_taus: CVaR needs 0 < eta <= 1, got {eta}")
        return eta * taus
    if distortion == "cpw":
        if eta <= 0:
            raise ValueError(f"distort_taus: CPW needs eta > 0, got {eta}")
        powered = taus**eta
        return powered / (powered + (1.0 - taus) ** eta) ** (1.0 / eta)
    return ndtr(ndtri(taus) + eta)


def cosine_features(taus, n_cos: int = 64) -> Tensor:
    """cos(pi i tau) for i = 0..n_cos-1: taus (...) -> (..., n_cos), differentiable in tau."""
    taus = taus if isinstance(taus, Tensor) else tensor(numpy.asarray(taus, dtype=get_default_dtype()))
    frequencies = tensor(numpy.pi * numpy.arange(n_cos), dtype=taus.dtype)
    return cos(taus.reshape(*taus.shape, 1) * frequencies)


@register_with_arguments
class QuantileEmbedding(Module):
    """IQN's embedding of fractions: phi(tau) = ReLU(Dense_dim(cos(pi i tau), i = 0..n_cos-1)),
    taus (...) -> (..., dim)."""

    def __init__(self, dim: int, n_cos: int = 64):
        super().__init__()
        self.dim, self.n_cos = dim, n_cos
        self.dense = nn.Dense(dim, activation="relu")
        self.dense.build((None, n_cos))

    def forward(self, taus) -> Tensor:
        return self.dense(cosine_features(taus, self.n_cos))


@register_with_arguments
class IQNNetwork(Module):
    """An implicit quantile network on observation vectors: a torso psi of ReLU Dense layers
    ``hidden`` (the last one the feature size d), a :class:`QuantileEmbedding` phi of d units,
    and a head f of a ReLU Dense layer of ``head_hidden`` units and a linear layer of
    ``n_actions``. ``forward(obs (batch, obs_dim), taus (batch, T))`` returns the quantiles
    Z_tau(s, a) (batch, T, n_actions)."""

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (64,), head_hidden: int = 64,
                 n_cos: int = 64):
        super().__init__()
        if not hidden:
            raise ValueError("IQNNetwork: needs at least one hidden layer (the feature size), got hidden=()")
        self.obs_dim, self.n_actions, self.features = obs_dim, n_actions, hidden[-1]
        self.torso = nn.Sequential([nn.Dense(units, activation="relu") for units in hidden])
        self.embedding = QuantileEmbedding(hidden[-1], n_cos)
        self.head = nn.Sequential([nn.Dense(head_hidden, activation="relu"), nn.Dense(n_actions)])
        self.torso.build((None, obs_dim))
        self.head.build((None, hidden[-1]))

    def forward(self, obs, taus) -> Tensor:
        obs = obs if isinstance(obs, Tensor) else obs_tensor(obs)
        taus = taus if isinstance(taus, Tensor) else tensor(numpy.asarray(taus), dtype=obs.dtype)
        if obs.ndim != 2 or obs.shape[1] != self.obs_dim or taus.ndim != 2 or taus.shape[0] != obs.shape[0]:
            raise ShapeError(f"IQNNetwork: expected observations (batch, {self.obs_dim}) and taus (batch, T), got "
                             f"{obs.shape} and {taus.shape}")
        batch, n_taus = taus.shape
        mixed = self.torso(obs).reshape(batch, 1, self.features) * self.embedding(taus)
        return self.head(mixed.reshape(batch * n_taus, self.features)).reshape(batch, n_taus, self.n_actions)

    def q_values(self, obs, taus) -> numpy.ndarray:
        """(1/T) sum_t Z_{tau_t}(s, a), (batch, actions), without recording a graph."""
        with no_grad():
            return self(obs, taus).numpy().mean(axis=1)


class IQNAgent(QuantileAgent):
    """IQN on flat observations and discrete actions: an :class:`IQNNetwork` trained with
    ``n_samples`` (N) predicted and ``n_target_samples`` (N') target fractions per transition
    and acting on Q_beta with ``n_policy_samples`` (K) fractions under ``distortion`` / ``eta``
    (:func:`distort_taus`). Acting draws the K fractions at random; :meth:`predict` uses the K
    midpoints (2k - 1) / 2K, so that the greedy policy is deterministic. ``double`` picks a*
    with the online network (the paper uses the target network)."""

    algorithm = "iqn"

    def __init__(self, obs_dim: int, n_actions: int, hidden: Sequence[int] = (64,), head_hidden: int = 64,
                 n_cos: int = 64, n_samples: int = 8, n_target_samples: int = 8, n_policy_samples: int = 32,
                 distortion: str = "neutral", eta: float | None = None, kappa: float = 1.0, lr: float = 1e-3,
                 gamma: float = 0.99, batch_size: int = 64, buffer_size: int = 10000, learning_starts: int = 500,
                 train_freq: int = 1, target_update_interval: int = 100, eps_start: float = 1.0,
                 eps_end: float = 0.05, eps_decay: int = 2000, max_grad_norm: float | None = 10.0,
                 double: bool = False, seed: int | None = None):
        distort_taus(0.5, distortion, eta)  # refuses unknown distortions and out-of-range eta here
        net_args = dict(obs_dim=obs_dim, n_actions=n_actions, hidden=tuple(hidden), head_hidden=head_hidden,
                        n_cos=n_cos)
        super().__init__(obs_dim, n_actions, IQNNetwork(**net_args), IQNNetwork(**net_args), lr=lr, gamma=gamma,
                         batch_size=batch_size, buffer_size=buffer_size, learning_starts=learning_starts,
                         train_freq=train_freq, target_update_interval=target_update_interval, eps_start=eps_start,
                         eps_end=eps_end, eps_decay=eps_decay, max_grad_norm=max_grad_norm, kappa=kappa,
                         double=double, seed=seed)
        self.n_samples, self.n_target_samples, self.n_policy_samples = n_samples, n_target_samples, n_policy_samples
        self.distortion, self.eta = distortion, eta

    def policy_taus(self, batch: int, deterministic: bool) -> numpy.ndarray:
        """beta(tau~) for K fractions per row, (batch, K): midpoints or uniform draws."""
        if deterministic:
            taus = numpy.broadcast_to(quantile_midpoints(self.n_policy_samples), (batch, self.n_policy_samples))
        else:
            taus = self.rng.random((batch, self.n_policy_samples))
        return distort_taus(taus, self.distortion, self.eta)

    def action_values(self, obs, deterministic: bool = True) -> numpy.ndarray:
        """Q_beta(s, a) = (1/K) sum_k Z_{beta(tau~_k)}(s, a), (batch, actions)."""
        return self.online_net.q_values(obs, self.policy_taus(len(obs), deterministic))

    def quantiles(self, obs, taus) -> numpy.ndarray:
        """The online network's Z_tau(s, a) (batch, T, actions) at fractions taus (batch, T)."""
        with no_grad():
            return self.online_net(obs, taus).numpy()

    def targets(self, batch: Batch) -> numpy.ndarray:
        """r + gamma (1 - terminated) Z'_{tau'_j}(s', a*), (batch, N'), tau'_j ~ U[0, 1]."""
        size = len(batch.rewards)
        chooser = self.online_net if self.double else self.target_net
        best = chooser.q_values(batch.next_obs, self.policy_taus(size, deterministic=False)).argmax(axis=1)
        with no_grad():
            next_quantiles = self.target_net(batch.next_obs, self.rng.random((size, self.n_target_samples))).numpy()
        chosen = next_quantiles[numpy.arange(size), :, best]
        not_terminal = 1.0 - batch.terminated.astype(chosen.dtype)
        return batch.rewards[:, None] + self.gamma * not_terminal[:, None] * chosen

    def loss(self, batch: Batch) -> Tensor:
        """The quantile Huber loss of Z_{tau_i}(s, a), tau_i ~ U[0, 1], against :meth:`targets`."""
        taus = self.rng.random((len(batch.rewards), self.n_samples))
        quantiles = self.online_net(batch.obs, taus).transpose(0, 2, 1)  # (batch, actions, N)
        return quantile_huber_loss(_taken(quantiles, batch.actions), self.targets(batch), taus, self.kappa)


def train_iqn(env: Env | str, total_steps: int = 10000, agent: IQNAgent | None = None, seed: int | None = None,
              max_episodes: int | None = None, **agent_kwargs) -> list[float]:
    """Train ``agent`` (by default ``IQNAgent.for_env(env, seed=seed, **agent_kwargs)``) for
    ``total_steps`` environment steps (or ``max_episodes`` episodes). Returns the return of
    every finished episode."""
    env = as_env(env)
    agent = make_agent(IQNAgent, env, agent, seed, agent_kwargs, "train_iqn")
    return run_agent(env, agent, total_steps, seed, max_episodes)
