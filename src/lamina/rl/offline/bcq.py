"""Batch-constrained deep Q-learning (BCQ, Fujimoto, Meger and Precup, 2019) for continuous
actions in [-1, 1]^d: the policy only picks among actions that resemble the dataset's.

A conditional VAE G(s) models the data's actions: the encoder gives N(mu, sigma^2) over a
latent z of 2 d values from [s, a] (log sigma clipped to [-4, 15]), the decoder
a~ = tanh(D([s, z])); at sampling time z ~ N(0, I) clipped to [-0.5, 0.5]. Its loss (the
authors' averaging over elements):

    L_G = mean (a~ - a)^2 + 1/2 mean_{i, j} -1/2 (1 + log sigma_ij^2 - mu_ij^2 - sigma_ij^2)

A perturbation model xi(s, a) = Phi tanh(f([s, a])) in [-Phi, Phi]^d (Phi = 0.05, of the
half-range 1) moves each sampled action: a' = clip(a + xi(s, a), -1, 1). Twin critics learn

    y = r + gamma (1 - terminal) max_j [lambda min_k Q'_k(s', a'_j) + (1 - lambda) max_k Q'_k(s', a'_j)]

over n = 10 actions a'_j = a~_j + xi'(s', a~_j) sampled at s' (lambda = 0.75, the soft clipped
double-Q target); xi ascends Q_1(s, a~ + xi(s, a~)). An action is the argmax of Q_1 over the
perturbed samples."""

from __future__ import annotations

from collections.abc import Sequence

import numpy

from lamina import optim
from lamina.autograd import Tensor, no_grad, tensor
from lamina.errors import ShapeError
from lamina.functional import clip, concat, gaussian_kl, mean, reparameterize, tanh
from lamina.nn import Module
from lamina.rl.evaluation import evaluate_policy
from lamina.rl.networks import copy_weights, mlp, soft_update
from lamina.rl.off_policy import QNetwork, frozen
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

LATENT_CLIP = 0.5
VAE_LOG_STD_MIN, VAE_LOG_STD_MAX = -4.0, 15.0


class ActionVAE(Module):
    """The conditional VAE G(s) of the module docstring: encoder and decoder MLPs (ReLU)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: Sequence[int] = (64, 64),
                 latent_dim: int | None = None):
        super().__init__()
        self.action_dim = check_positive_int("ActionVAE", "action_dim", action_dim)
        self.latent_dim = 2 * action_dim if latent_dim is None else check_positive_int("ActionVAE", "latent_dim",
                                                                                      latent_dim)
        self.encoder = mlp(obs_dim + action_dim, hidden, 2 * self.latent_dim)
        self.decoder = mlp(obs_dim + self.latent_dim, hidden, action_dim)
        self.built = True

    def encode(self, obs: Tensor, actions: Tensor) -> tuple[Tensor, Tensor]:
        """(mu, log sigma clipped to [-4, 15]), each (batch, latent_dim)."""
        out = self.encoder(concat([obs, actions], axis=1))
        return out[:, :self.latent_dim], clip(out[:, self.latent_dim:], VAE_LOG_STD_MIN, VAE_LOG_STD_MAX)

    def decode(self, obs: Tensor, z: Tensor) -> Tensor:
        return tanh(self.decoder(concat([obs, z], axis=1)))

    def forward(self, obs: Tensor, actions: Tensor, eps=None) -> tuple[Tensor, Tensor, Tensor]:
        """(reconstructed actions, mu, log sigma) with z = mu + sigma eps (``eps`` drawn when None)."""
        mu, log_std = self.encode(obs, actions)
        return self.decode(obs, reparameterize(mu, 2.0 * log_std, eps)), mu, log_std

    def sample(self, obs: Tensor, noise) -> Tensor:
        """Actions decoded from z = clip(noise, -0.5, 0.5), ``noise`` (batch, latent_dim) standard normal."""
        z = numpy.clip(numpy.asarray(noise), -LATENT_CLIP, LATENT_CLIP)
        return self.decode(obs, net_tensor(self, z))


def bcq_vae_loss(reconstruction: Tensor, actions, mu: Tensor, log_std: Tensor, kl_weight: float = 0.5) -> Tensor:
    """mean (a~ - a)^2 + kl_weight KL averaged over batch and latent entries (module docstring)."""
    if tuple(reconstruction.shape) != tuple(numpy.shape(actions)) or tuple(mu.shape) != tuple(log_std.shape):
        raise ShapeError(f"bcq_vae_loss: reconstruction {tuple(reconstruction.shape)} must match actions "
                         f"{tuple(numpy.shape(actions))} and mu {tuple(mu.shape)} log_std {tuple(log_std.shape)}")
    target = actions if isinstance(actions, Tensor) else tensor(numpy.asarray(actions), dtype=reconstruction.dtype)
    kl = gaussian_kl(mu, 2.0 * log_std, reduction="mean") * (1.0 / mu.shape[1])
    return mean((reconstruction - target) ** 2) + kl_weight * kl


class Perturbation(Module):
    """xi(s, a) = phi tanh(f([s, a])) and the perturbed action clip(a + xi(s, a), -1, 1)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: Sequence[int] = (64, 64), phi: float = 0.05):
        super().__init__()
        self.phi = check_number("Perturbation", "phi", phi, 0.0)
        self.net = mlp(obs_dim + action_dim, hidden, action_dim)
        self.built = True

    def offset(self, obs: Tensor, actions: Tensor) -> Tensor:
        """xi(s, a), each entry in [-phi, phi]."""
        return self.phi * tanh(self.net(concat([obs, actions], axis=1)))

    def forward(self, obs: Tensor, actions: Tensor) -> Tensor:
        return clip(actions + self.offset(obs, actions), -1.0, 1.0)


def soft_clipped_double_q(q_values: Sequence, n_samples: int, lam: float = 0.75) -> numpy.ndarray:
    """max_j [lam min_k Q_k + (1 - lam) max_k Q_k] for each state: ``q_values`` holds one array
    per critic of the (B n,) values at n consecutive sampled actions per state; returns (B,)."""
    stacked = numpy.stack([numpy.asarray(q) for q in q_values])
    if stacked.ndim != 2 or stacked.shape[1] % n_samples:
        raise ShapeError(f"soft_clipped_double_q: needs per-critic arrays of B * {n_samples} values, "
                         f"got shape {stacked.shape[1:]} for each of {len(stacked)} critics")
    mixed = lam * stacked.min(axis=0) + (1.0 - lam) * stacked.max(axis=0)
    return mixed.reshape(-1, n_samples).max(axis=1)


class BCQ(OfflineAgent):
    """Continuous BCQ (module docstring) with the authors' settings: ``phi`` 0.05, ``lam`` 0.75,
    ``n_actions`` 10 for the targets, Adam (lr 1e-3) for every network, Polyak rate 0.005, gamma
    0.99, batches of 100; smaller networks by default (the authors' have (400, 300) and
    (750, 750) for the VAE). :meth:`predict` picks among ``n_select`` perturbed samples."""

    def __init__(self, obs_dim: int, action_space: Space, hidden: Sequence[int] = (64, 64),
                 vae_hidden: Sequence[int] = (64, 64), lr: float = 1e-3, gamma: float = 0.99, polyak: float = 0.005,
                 phi: float = 0.05, lam: float = 0.75, n_actions: int = 10, n_select: int = 100,
                 batch_size: int = 100, seed: int | None = None):
        super().__init__(obs_dim, action_space, batch_size, seed)
        who = type(self).__name__
        if not isinstance(action_space, Box):
            raise ValueError(f"{who}: needs a Box action space, got {action_space!r}")
        self.gamma = check_number(who, "gamma", gamma, 0.0, 1.0)
        self.polyak = check_number(who, "polyak", polyak, 0.0, 1.0, open_low=True)
        self.lam = check_number(who, "lam", lam, 0.0, 1.0)
        self.n_actions = check_positive_int(who, "n_actions", n_actions)
        self.n_select = check_positive_int(who, "n_select", n_select)
        check_number(who, "lr", lr, 0.0, open_low=True)
        d = self.n_outputs
        self.vae = ActionVAE(obs_dim, d, vae_hidden)
        self.actor, self.target_actor = (Perturbation(obs_dim, d, hidden, phi) for _ in range(2))
        copy_weights(self.actor, self.target_actor)
        self.critics = [QNetwork(obs_dim, d, hidden) for _ in range(2)]
        self.target_critics = [QNetwork(obs_dim, d, hidden) for _ in range(2)]
        for critic, target in zip(self.critics, self.target_critics):
            copy_weights(critic, target)
        self.vae_optimizer = optim.Adam(self.vae.parameters(), lr=lr)
        self.actor_optimizer = optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_optimizer = optim.Adam([p for c in self.critics for p in c.parameters()], lr=lr)

    def latent_noise(self, n: int) -> numpy.ndarray:
        return self.rng.standard_normal((n, self.vae.latent_dim))

    def targets(self, batch: Batch, noise=None) -> numpy.ndarray:
        """y of the module docstring; ``noise`` (B n, latent_dim) for the VAE's samples."""
        next_obs = numpy.repeat(numpy.asarray(batch.next_obs), self.n_actions, axis=0)
        noise = self.latent_noise(len(next_obs)) if noise is None else noise
        with no_grad():
            s = net_tensor(self.vae, next_obs)
            actions = self.target_actor(s, self.vae.sample(s, noise))
            q = [critic(s, actions).numpy() for critic in self.target_critics]
        best = soft_clipped_double_q(q, self.n_actions, self.lam)
        not_terminal = 1.0 - numpy.asarray(batch.terminated, dtype=best.dtype)
        return (numpy.asarray(batch.rewards, dtype=best.dtype) + self.gamma * not_terminal * best).astype(best.dtype)

    def update(self, batch: Batch) -> dict[str, float]:
        obs, actions = net_tensor(self.vae, batch.obs), net_tensor(self.vae, batch.actions)
        reconstruction, mu, log_std = self.vae(obs, actions, self.latent_noise(len(batch.rewards)))
        vae_loss = bcq_vae_loss(reconstruction, actions, mu, log_std)
        self.vae_optimizer.zero_grad()
        vae_loss.backward()
        self.vae_optimizer.step()

        y = net_tensor(self.vae, self.targets(batch))
        q_loss = twin_critic_step(self.critics, self.critic_optimizer, obs, actions, y)

        with no_grad():
            sampled = self.vae.sample(obs, self.latent_noise(len(batch.rewards)))
        with frozen(*self.critics):
            actor_loss = -mean(self.critics[0](obs, self.actor(obs, sampled)))
            self.actor_optimizer.zero_grad()
            actor_loss.backward()
            self.actor_optimizer.step()
        for critic, target in zip(self.critics, self.target_critics):
            soft_update(critic, target, self.polyak)
        soft_update(self.actor, self.target_actor, self.polyak)
        self.updates += 1
        return {"vae_loss": vae_loss.item(), "critic_loss": q_loss.item(), "actor_loss": actor_loss.item()}

    def policy_action(self, obs: numpy.ndarray, deterministic: bool):
        with no_grad():
            s = net_tensor(self.vae, numpy.repeat(obs, self.n_select, axis=0))
            candidates = self.actor(s, self.vae.sample(s, self.latent_noise(self.n_select)))
            q = self.critics[0](s, candidates).numpy()
        return candidates.numpy()[int(q.argmax())]


def train_offline(agent: OfflineAgent, dataset: OfflineDataset, env, steps: int, eval_episodes: int,
                  seed: int | None) -> tuple[OfflineAgent, numpy.ndarray]:
    """Fit ``agent`` for ``steps`` updates, then its returns over ``eval_episodes`` episodes of ``env``."""
    agent.fit(dataset, steps)
    return agent, evaluate_policy(agent, env, check_positive_int("train_offline", "eval_episodes", eval_episodes),
                                  seed=seed)


def train_bcq(dataset: OfflineDataset, env, steps: int = 5000, eval_episodes: int = 10, seed: int | None = None,
              **agent_kwargs) -> tuple[BCQ, numpy.ndarray]:
    """A :class:`BCQ` sized for ``env`` (``agent_kwargs`` passed on) fitted on ``dataset`` for
    ``steps`` updates; returns it and its returns over ``eval_episodes`` episodes (reset with seed + i)."""
    return train_offline(BCQ.for_env(env, seed=seed, **agent_kwargs), dataset, env, steps, eval_episodes, seed)
