"""Twin delayed deep deterministic policy gradient (TD3, Fujimoto et al., 2018) and its ancestor
DDPG (Lillicrap et al., 2016) in Stable-Baselines3's form, where DDPG is TD3 without TD3's three
changes: one critic instead of the clipped double Q target min(Q'_1, Q'_2), no target policy
smoothing (clipped Gaussian noise on the target action) and no delayed policy updates.

Defaults: Adam with lr 1e-3 (Stable-Baselines3's), networks of two hidden layers of 256 (the
TD3 authors' later code and CleanRL), Gaussian exploration noise of standard deviation 0.1 on the
policy's action in [-1, 1]^d (the paper's), target noise 0.2 clipped to 0.5, the actor and the
targets updated every second critic update, tau 0.005, gamma 0.99, batches of 256, updates from
step 100 on."""

from __future__ import annotations

from collections.abc import Sequence

import numpy

from lamina import optim
from lamina.autograd import Tensor, no_grad
from lamina.functional import mean, tanh
from lamina.nn import Module
from lamina.rl.env import Env
from lamina.rl.networks import copy_weights, mlp, obs_tensor, soft_update
from lamina.rl.off_policy import (
    OffPolicyAgent,
    QNetwork,
    batch_tensor,
    bootstrap,
    critic_loss,
    frozen,
    linear_default_init,
    train_off_policy,
)
from lamina.rl.replay import Batch
from lamina.rl.spaces import Box


class DeterministicActor(Module):
    """mu(s) = tanh(f(s)) in (-1, 1)^d, f an MLP with ReLU hidden layers (:func:`linear_default_init`)."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        self.net = linear_default_init(mlp(obs_dim, hidden, action_dim))
        self.built = True

    def forward(self, obs: Tensor) -> Tensor:
        return tanh(self.net(obs))


def td3_targets(target_actor: DeterministicActor, target_critics: Sequence[QNetwork], batch: Batch,
                gamma: float, noise=None, noise_clip: float = 0.5) -> numpy.ndarray:
    """y = r + gamma (1 - terminated) min_i Q'_i(s', a') with the smoothed target action
    a' = clip(mu'(s') + clip(noise, -noise_clip, noise_clip), -1, 1) (``noise`` None: a' = mu'(s'))."""
    with no_grad():
        next_obs = batch_tensor(batch.next_obs)
        next_actions = target_actor(next_obs).numpy()
        if noise is not None:
            next_actions = numpy.clip(next_actions + numpy.clip(noise, -noise_clip, noise_clip), -1.0, 1.0)
        next_actions = batch_tensor(next_actions)
        next_q = [critic(next_obs, next_actions).numpy() for critic in target_critics]
    return bootstrap(batch, gamma, numpy.minimum.reduce(next_q))


def td3_critic_loss(critics: Sequence[QNetwork], batch: Batch, targets: numpy.ndarray) -> Tensor:
    """sum_i mean((Q_i(s, a) - y)^2)."""
    return critic_loss(critics, batch, targets)


def td3_actor_loss(actor: DeterministicActor, critic: QNetwork, obs) -> Tensor:
    """-mean(Q_1(s, mu(s))): the deterministic policy gradient through the first critic."""
    obs = batch_tensor(obs)
    return -mean(critic(obs, actor(obs)))


class TD3(OffPolicyAgent):
    """A TD3 agent on a bounded Box of actions (module docstring for the defaults).

    One update (:meth:`update`): the critics step on ``td3_critic_loss`` with targets from the
    target actor and critics; every ``policy_delay``-th update the actor then steps on
    ``td3_actor_loss`` and the target actor and critics follow by
    theta' <- tau theta + (1 - tau) theta'. Exploration adds N(0, ``action_noise``^2) to
    mu(s) and clips to [-1, 1]. ``target_clip`` (low, high) clips the critics' targets y into
    [low, high] (HER's [-1 / (1 - gamma), 0] for rewards in [-1, 0])."""

    algorithm = "td3"

    def __init__(self, obs_dim: int, action_space: Box, hidden: Sequence[int] = (256, 256), lr: float = 1e-3,
                 gamma: float = 0.99, tau: float = 0.005, batch_size: int = 256, buffer_size: int = 1_000_000,
                 learning_starts: int = 100, train_freq: int = 1, gradient_steps: int = 1,
                 action_noise: float = 0.1, policy_delay: int = 2, target_policy_noise: float = 0.2,
                 target_noise_clip: float = 0.5, n_critics: int = 2, seed: int | None = None,
                 target_clip: tuple[float, float] | None = None):
        super().__init__(obs_dim, action_space, gamma=gamma, tau=tau, batch_size=batch_size, buffer_size=buffer_size,
                         learning_starts=learning_starts, train_freq=train_freq, gradient_steps=gradient_steps,
                         seed=seed)
        label = type(self).__name__
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"{label}: lr must be a positive number, got {lr!r}")
        for name, value in (("action_noise", action_noise), ("target_policy_noise", target_policy_noise),
                            ("target_noise_clip", target_noise_clip)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{label}: {name} must be a number >= 0, got {value!r}")
        for name, value in (("policy_delay", policy_delay), ("n_critics", n_critics)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{label}: {name} must be a positive int, got {value!r}")
        self.action_noise, self.policy_delay = float(action_noise), policy_delay
        self.target_clip = target_clip
        self.target_policy_noise, self.target_noise_clip = float(target_policy_noise), float(target_noise_clip)
        self.actor = DeterministicActor(obs_dim, self.action_dim, hidden)
        self.target_actor = DeterministicActor(obs_dim, self.action_dim, hidden)
        copy_weights(self.actor, self.target_actor)
        self.critics = [QNetwork(obs_dim, self.action_dim, hidden) for _ in range(n_critics)]
        self.target_critics = [QNetwork(obs_dim, self.action_dim, hidden) for _ in range(n_critics)]
        for critic, target in zip(self.critics, self.target_critics):
            copy_weights(critic, target)
        self.actor_optimizer = optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_optimizer = optim.Adam([p for critic in self.critics for p in critic.parameters()], lr=lr)

    def policy_action(self, obs, deterministic: bool) -> numpy.ndarray:
        with no_grad():
            action = self.actor(obs_tensor(obs)[None]).numpy()[0].astype(numpy.float64)
        if deterministic or self.action_noise == 0:
            return action
        return numpy.clip(action + self.action_noise * self.rng.standard_normal(self.action_dim), -1.0, 1.0)

    def greedy_layers(self) -> list[tuple[numpy.ndarray, numpy.ndarray, str | None]]:
        dense = self.actor.net.layers
        activations = ["relu"] * (len(dense) - 1) + ["tanh"]
        return [(numpy.array(layer.weight.data), numpy.array(layer.bias.data), activation)
                for layer, activation in zip(dense, activations)]

    def update(self, batch: Batch, target_noise=None) -> dict[str, float]:
        """One update on ``batch`` (class docstring); ``target_noise`` (the noise added to the
        target actions, of shape (batch, action_dim), before clipping) is drawn from
        N(0, target_policy_noise^2) when not given."""
        if target_noise is None and self.target_policy_noise > 0:
            target_noise = self.target_policy_noise * self.rng.standard_normal((len(batch.rewards), self.action_dim))
        targets = td3_targets(self.target_actor, self.target_critics, batch, self.gamma, target_noise,
                              self.target_noise_clip)
        if self.target_clip is not None:
            targets = numpy.clip(targets, *self.target_clip).astype(numpy.float32)
        q_loss = td3_critic_loss(self.critics, batch, targets)
        self.critic_optimizer.zero_grad()
        q_loss.backward()
        self.critic_optimizer.step()
        self.updates += 1
        stats = {"critic_loss": q_loss.item()}
        if self.updates % self.policy_delay == 0:
            with frozen(self.critics[0]):
                pi_loss = td3_actor_loss(self.actor, self.critics[0], batch.obs)
                self.actor_optimizer.zero_grad()
                pi_loss.backward()
                self.actor_optimizer.step()
            stats["actor_loss"] = pi_loss.item()
            for critic, target in zip(self.critics, self.target_critics):
                soft_update(critic, target, self.tau)
            soft_update(self.actor, self.target_actor, self.tau)
        return stats

    def networks(self) -> dict[str, Module]:
        nets: dict[str, Module] = {"actor": self.actor, "target_actor": self.target_actor}
        for i, (critic, target) in enumerate(zip(self.critics, self.target_critics)):
            nets[f"critic{i}"], nets[f"target_critic{i}"] = critic, target
        return nets

    def optimizers(self) -> dict[str, optim.Optimizer]:
        return {"actor": self.actor_optimizer, "critic": self.critic_optimizer}


class DDPG(TD3):
    """DDPG as Stable-Baselines3 has it: :class:`TD3` with one critic, no target policy smoothing
    and the actor updated at every update (``n_critics=1, target_policy_noise=0,
    policy_delay=1``); exploration by Gaussian noise as TD3."""

    algorithm = "ddpg"

    def __init__(self, obs_dim: int, action_space: Box, hidden: Sequence[int] = (256, 256), lr: float = 1e-3,
                 gamma: float = 0.99, tau: float = 0.005, batch_size: int = 256, buffer_size: int = 1_000_000,
                 learning_starts: int = 100, train_freq: int = 1, gradient_steps: int = 1,
                 action_noise: float = 0.1, seed: int | None = None,
                 target_clip: tuple[float, float] | None = None):
        super().__init__(obs_dim, action_space, hidden, lr, gamma, tau, batch_size, buffer_size, learning_starts,
                         train_freq, gradient_steps, action_noise, policy_delay=1, target_policy_noise=0.0,
                         target_noise_clip=0.0, n_critics=1, seed=seed, target_clip=target_clip)


def train_td3(env: Env | str, total_steps: int = 20000, agent: TD3 | None = None, seed: int | None = None,
              **agent_kwargs) -> list[float]:
    """Train ``agent`` (by default ``TD3.for_env(env, seed=seed, **agent_kwargs)``) for
    ``total_steps`` environment steps; returns every finished episode's return."""
    return train_off_policy(TD3, env, total_steps, agent, seed, **agent_kwargs)


def train_ddpg(env: Env | str, total_steps: int = 20000, agent: DDPG | None = None, seed: int | None = None,
               **agent_kwargs) -> list[float]:
    """Train ``agent`` (by default ``DDPG.for_env(env, seed=seed, **agent_kwargs)``) for
    ``total_steps`` environment steps; returns every finished episode's return."""
    return train_off_policy(DDPG, env, total_steps, agent, seed, **agent_kwargs)
