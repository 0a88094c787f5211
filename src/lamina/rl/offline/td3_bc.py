"""TD3+BC (Fujimoto and Gu, 2021): TD3 on a fixed dataset with a behaviour-cloning term in the
actor's loss and the states normalised by the dataset's statistics,

    s <- (s - mean_D s) / (std_D s + 1e-3)
    L_pi = -lambda mean_i Q_1(s_i, pi(s_i)) + mean_{i, j} (pi(s_i)_j - a_ij)^2,
    lambda = alpha / mean_i |Q_1(s_i, pi(s_i))|    (alpha = 2.5; lambda treated as a constant)

The critics are TD3's: twin Q with the clipped double-Q target at the smoothed target action
(noise 0.2 clipped to 0.5) and the actor and targets updated every second step. Actions live
in [-1, 1]^d."""

from __future__ import annotations

from collections.abc import Sequence

import numpy

from lamina import optim
from lamina.autograd import Tensor, no_grad, tensor
from lamina.errors import ShapeError
from lamina.functional import mean
from lamina.rl.networks import copy_weights, soft_update
from lamina.rl.off_policy import QNetwork, frozen
from lamina.rl.offline.bcq import train_offline
from lamina.rl.offline.common import (
    OfflineAgent,
    check_number,
    check_positive_int,
    net_tensor,
    twin_critic_step,
)
from lamina.rl.offline.dataset import OfflineDataset
from lamina.rl.replay import Batch
from lamina.rl.spaces import Box, Space
from lamina.rl.td3 import DeterministicActor

NORMALIZATION_EPS = 1e-3


def state_statistics(dataset: OfflineDataset, eps: float = NORMALIZATION_EPS) -> tuple[numpy.ndarray, numpy.ndarray]:
    """(mean, std + eps) of the dataset's observations over its rows."""
    obs = dataset.observations.reshape(len(dataset), -1).astype(numpy.float64)
    return obs.mean(axis=0), obs.std(axis=0) + eps


def td3_bc_actor_loss(q: Tensor, policy_actions: Tensor, data_actions, alpha: float = 2.5) -> tuple[Tensor, float]:
    """(L_pi, lambda) of the module docstring for Q_1(s, pi(s)) (B,), pi(s) and the data's a (B, d)."""
    if q.ndim != 1 or tuple(policy_actions.shape) != tuple(numpy.shape(data_actions)) \
            or policy_actions.shape[0] != q.shape[0]:
        raise ShapeError(f"td3_bc_actor_loss: needs q (B,) and actions (B, d) of one shape, got q {tuple(q.shape)}, "
                         f"policy actions {tuple(policy_actions.shape)} and data actions "
                         f"{tuple(numpy.shape(data_actions))}")
    lam = alpha / float(numpy.abs(q.numpy()).mean())
    target = data_actions if isinstance(data_actions, Tensor) else tensor(numpy.asarray(data_actions),
                                                                          dtype=policy_actions.dtype)
    return -lam * mean(q) + mean((policy_actions - target) ** 2), lam


class TD3BC(OfflineAgent):
    """TD3+BC (module docstring) with the authors' settings: ``alpha`` 2.5, Adam (lr 3e-4),
    Polyak rate 0.005, gamma 0.99, target noise 0.2 clipped to 0.5, ``policy_delay`` 2, batches
    of 256, normalised states; smaller networks by default (the authors' have (256, 256)).
    :meth:`fit` takes the statistics of the dataset it is given (``normalize`` False: none)."""

    def __init__(self, obs_dim: int, action_space: Space, hidden: Sequence[int] = (64, 64), lr: float = 3e-4,
                 gamma: float = 0.99, polyak: float = 0.005, alpha: float = 2.5, policy_noise: float = 0.2,
                 noise_clip: float = 0.5, policy_delay: int = 2, normalize: bool = True, batch_size: int = 256,
                 seed: int | None = None):
        super().__init__(obs_dim, action_space, batch_size, seed)
        who = type(self).__name__
        if not isinstance(action_space, Box):
            raise ValueError(f"{who}: needs a Box action space, got {action_space!r}")
        self.gamma = check_number(who, "gamma", gamma, 0.0, 1.0)
        self.polyak = check_number(who, "polyak", polyak, 0.0, 1.0, open_low=True)
        self.alpha = check_number(who, "alpha", alpha, 0.0)
        self.policy_noise = check_number(who, "policy_noise", policy_noise, 0.0)
        self.noise_clip = check_number(who, "noise_clip", noise_clip, 0.0)
        self.policy_delay = check_positive_int(who, "policy_delay", policy_delay)
        check_number(who, "lr", lr, 0.0, open_low=True)
        self.normalize = bool(normalize)
        self.obs_mean, self.obs_std = numpy.zeros(obs_dim), numpy.ones(obs_dim)
        d = self.n_outputs
        self.actor, self.target_actor = (DeterministicActor(obs_dim, d, hidden) for _ in range(2))
        copy_weights(self.actor, self.target_actor)
        self.critics = [QNetwork(obs_dim, d, hidden) for _ in range(2)]
        self.target_critics = [QNetwork(obs_dim, d, hidden) for _ in range(2)]
        for critic, target in zip(self.critics, self.target_critics):
            copy_weights(critic, target)
        self.actor_optimizer = optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_optimizer = optim.Adam([p for c in self.critics for p in c.parameters()], lr=lr)

    def normalized(self, obs) -> numpy.ndarray:
        """(s - mean) / std with the statistics :meth:`fit` took."""
        obs = numpy.asarray(obs, dtype=numpy.float64).reshape(len(obs), -1)
        return ((obs - self.obs_mean) / self.obs_std).astype(numpy.float32)

    def fit(self, dataset: OfflineDataset, steps: int, callback=None) -> list[dict[str, float]]:
        self.check_dataset(dataset)
        if self.normalize:
            self.obs_mean, self.obs_std = state_statistics(dataset)
        return super().fit(dataset, steps, callback)

    def unit_batch(self, batch: Batch) -> Batch:
        return batch._replace(obs=self.normalized(batch.obs), next_obs=self.normalized(batch.next_obs),
                              actions=self.to_unit(batch.actions))

    def targets(self, batch: Batch, noise=None) -> numpy.ndarray:
        """TD3's y = r + gamma (1 - terminal) min_k Q'_k(s', clip(pi'(s') + clip(noise), -1, 1))."""
        with no_grad():
            next_obs = net_tensor(self.actor, batch.next_obs)
            next_actions = self.target_actor(next_obs).numpy()
            if noise is None:
                noise = self.policy_noise * self.rng.standard_normal(next_actions.shape)
            next_actions = numpy.clip(next_actions + numpy.clip(noise, -self.noise_clip, self.noise_clip), -1.0, 1.0)
            next_actions = net_tensor(self.actor, next_actions)
            next_q = numpy.minimum.reduce([c(next_obs, next_actions).numpy() for c in self.target_critics])
        not_terminal = 1.0 - numpy.asarray(batch.terminated, dtype=next_q.dtype)
        return (numpy.asarray(batch.rewards, dtype=next_q.dtype) + self.gamma * not_terminal * next_q
                ).astype(next_q.dtype)

    def update(self, batch: Batch) -> dict[str, float]:
        obs, actions = net_tensor(self.actor, batch.obs), net_tensor(self.actor, batch.actions)
        y = net_tensor(self.actor, self.targets(batch))
        q_loss = twin_critic_step(self.critics, self.critic_optimizer, obs, actions, y)
        self.updates += 1
        stats = {"critic_loss": q_loss.item()}
        if self.updates % self.policy_delay == 0:
            with frozen(*self.critics):
                pi = self.actor(obs)
                actor_loss, lam = td3_bc_actor_loss(self.critics[0](obs, pi), pi, actions, self.alpha)
                self.actor_optimizer.zero_grad()
                actor_loss.backward()
                self.actor_optimizer.step()
            for critic, target in zip(self.critics, self.target_critics):
                soft_update(critic, target, self.polyak)
            soft_update(self.actor, self.target_actor, self.polyak)
            stats.update(actor_loss=actor_loss.item(), lam=lam)
        return stats

    def policy_action(self, obs: numpy.ndarray, deterministic: bool):
        with no_grad():
            return self.actor(net_tensor(self.actor, self.normalized(obs))).numpy()[0]


def train_td3_bc(dataset: OfflineDataset, env, steps: int = 5000, eval_episodes: int = 10, seed: int | None = None,
                 **agent_kwargs) -> tuple[TD3BC, numpy.ndarray]:
    """A :class:`TD3BC` sized for ``env`` (``agent_kwargs`` passed on) fitted on ``dataset`` for
    ``steps`` updates; returns it and its returns over ``eval_episodes`` episodes (reset with seed + i)."""
    return train_offline(TD3BC.for_env(env, seed=seed, **agent_kwargs), dataset, env, steps, eval_episodes, seed)
