"""Behaviour cloning: supervised learning of the dataset's actions from its observations, and
its filtered form "%BC" (Chen et al., 2021: clone only the best x% of the episodes by return).

    discrete:              L = mean_i -log softmax(f(s_i))[a_i]                (cross-entropy)
    continuous, "mse":     L = mean_i ||tanh(f(s_i)) - a_i||^2 / d
    continuous, "gaussian": L = mean_i sum_j [(a_ij - mu_ij)^2 / (2 sigma_ij^2) + log sigma_ij + log(2 pi) / 2]

with continuous actions in [-1, 1]^d, mu = tanh of the first d outputs and log sigma the last d
clipped to [-5, 2]."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy

from lamina import optim
from lamina.autograd import Tensor, no_grad
from lamina.functional import clip, cross_entropy, exp, mean, tanh
from lamina.functional import sum as sum_of
from lamina.nn import Module
from lamina.rl.networks import mlp
from lamina.rl.offline.common import OfflineAgent, check_number, net_tensor
from lamina.rl.offline.dataset import OfflineDataset
from lamina.rl.replay import Batch
from lamina.rl.spaces import Space

LOG_STD_MIN, LOG_STD_MAX = -5.0, 2.0
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_log_likelihood(actions: Tensor, mean_action: Tensor, log_std: Tensor) -> Tensor:
    """log N(a; mu, diag(exp(log_std))^2), summed over the last axis."""
    z = (actions - mean_action) * exp(-log_std)
    return sum_of(-0.5 * z * z - log_std - _HALF_LOG_2PI, axis=-1)


def split_gaussian(outputs: Tensor, action_dim: int) -> tuple[Tensor, Tensor]:
    """(tanh(first d outputs), last d outputs clipped to [LOG_STD_MIN, LOG_STD_MAX])."""
    return tanh(outputs[:, :action_dim]), clip(outputs[:, action_dim:], LOG_STD_MIN, LOG_STD_MAX)


def bc_loss(policy: Module, obs, actions, discrete: bool, loss: str = "mse") -> Tensor:
    """The behaviour-cloning loss of the module docstring for one batch (continuous actions in [-1, 1]^d)."""
    outputs = policy(net_tensor(policy, obs))
    if discrete:
        return cross_entropy(outputs, numpy.asarray(actions, dtype=numpy.int64))
    target = net_tensor(policy, actions)
    if loss == "mse":
        return mean((tanh(outputs) - target) ** 2)
    mu, log_std = split_gaussian(outputs, target.shape[-1])
    return -mean(gaussian_log_likelihood(target, mu, log_std))


class BehaviorCloning(OfflineAgent):
    """A policy network trained to reproduce the dataset's actions (module docstring), with Adam.

    ``loss``: "mse" or "gaussian" for Box actions (ignored for Discrete ones, which use the
    cross-entropy). ``top_fraction`` < 1 makes :meth:`fit` clone only that fraction of the
    episodes with the highest returns (%BC). :meth:`predict` acts greedily: the most probable
    action, or the mean action."""

    def __init__(self, obs_dim: int, action_space: Space, hidden: Sequence[int] = (64, 64), lr: float = 1e-3,
                 batch_size: int = 256, loss: str = "mse", top_fraction: float = 1.0, seed: int | None = None):
        super().__init__(obs_dim, action_space, batch_size, seed)
        who = type(self).__name__
        if loss not in ("mse", "gaussian"):
            raise ValueError(f"{who}: loss must be 'mse' or 'gaussian', got {loss!r}")
        self.loss = loss
        self.top_fraction = check_number(who, "top_fraction", top_fraction, 0.0, 1.0, open_low=True)
        check_number(who, "lr", lr, 0.0, open_low=True)
        gaussian = not self.discrete and loss == "gaussian"
        self.policy = mlp(obs_dim, hidden, self.n_outputs * (2 if gaussian else 1))
        self.optimizer = optim.Adam(self.policy.parameters(), lr=lr)

    def fit(self, dataset: OfflineDataset, steps: int, callback=None) -> list[dict[str, float]]:
        """Clone ``dataset`` (its best ``top_fraction`` of episodes) for ``steps`` updates."""
        self.check_dataset(dataset)
        if self.top_fraction < 1.0:
            dataset = dataset.top_episodes(self.top_fraction)
        return super().fit(dataset, steps, callback)

    def update(self, batch: Batch) -> dict[str, float]:
        loss = bc_loss(self.policy, batch.obs, batch.actions, self.discrete, self.loss)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()
        self.updates += 1
        return {"loss": loss.item()}

    def policy_action(self, obs: numpy.ndarray, deterministic: bool):
        with no_grad():
            outputs = self.policy(net_tensor(self.policy, obs)).numpy()[0]
        if self.discrete:
            return outputs.argmax()
        if self.loss == "gaussian":
            mu, log_std = numpy.tanh(outputs[:self.n_outputs]), numpy.clip(outputs[self.n_outputs:], LOG_STD_MIN,
                                                                          LOG_STD_MAX)
            if not deterministic:
                return numpy.clip(mu + numpy.exp(log_std) * self.rng.standard_normal(mu.shape), -1.0, 1.0)
            return mu
        return numpy.tanh(outputs)
