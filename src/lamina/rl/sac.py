"""Soft actor-critic (Haarnoja et al., 2018) with the automatically tuned entropy temperature of
"Soft Actor-Critic Algorithms and Applications" (Haarnoja et al., 2019), with Stable-Baselines3's
defaults: two Q networks and their Polyak-averaged targets (tau 0.005), a tanh-squashed Gaussian
policy, target entropy -dim(A), Adam (lr 3e-4) for the actor, the critics and log alpha (alpha
starting at 1), gamma 0.99, batches of 256, one update per environment step after 100 steps of
uniform random actions.

log pi is the density of the squashed action in [-1, 1]^d, before it is rescaled to the action
bounds (as in Stable-Baselines3; CleanRL's also subtracts sum_j log((high_j - low_j) / 2), which
moves the entropy that the temperature steers towards by that constant)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy

from lamina import nn, optim
from lamina.autograd import Tensor, no_grad, tensor
from lamina.functional import clip, exp, minimum, softplus, tanh
from lamina.functional import mean as mean_of
from lamina.functional import sum as sum_of
from lamina.nn import Module
from lamina.rl.env import Env
from lamina.rl.networks import copy_weights, obs_tensor, soft_update
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

LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)


def squashed_gaussian_log_prob(u: Tensor, mean: Tensor, log_std: Tensor) -> Tensor:
    """log pi(a) of a = tanh(u), u ~ N(mean, diag(exp(log_std))^2), summed over the last axis:

        log pi(a) = sum_j [log N(u_j; mean_j, std_j) - log(1 - tanh(u_j)^2)]

    with log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2 u)), the form that stays finite where
    tanh(u) rounds to +-1 (the same value as the usual log(1 - tanh(u)^2 + eps) without its eps)."""
    z = (u - mean) * exp(-log_std)
    log_normal = -0.5 * z * z - log_std - _HALF_LOG_2PI
    log_det = 2.0 * (math.log(2.0) - u - softplus(-2.0 * u))
    return sum_of(log_normal - log_det, axis=-1)


class SquashedGaussianActor(Module):
    """The SAC policy: u ~ N(mean(s), diag(exp(log_std(s)))^2), a = tanh(u) in (-1, 1)^d; mean and
    log_std from two linear heads on a ReLU network (:func:`linear_default_init`), log_std clipped
    to [-20, 2]."""

    def __init__(self, obs_dim: int, action_dim: int, hidden: Sequence[int] = (256, 256)):
        super().__init__()
        if not hidden:
            raise ValueError("SquashedGaussianActor: needs at least one hidden layer")
        self.trunk = nn.Sequential([nn.Dense(units, activation="relu") for units in hidden])
        self.trunk.build((None, obs_dim))
        self.mean_head, self.log_std_head = nn.Dense(action_dim), nn.Dense(action_dim)
        self.mean_head.build((None, hidden[-1]))
        self.log_std_head.build((None, hidden[-1]))
        linear_default_init(self)
        self.built = True

    def forward(self, obs: Tensor) -> tuple[Tensor, Tensor]:
        """(mean, log_std) of u for each row of ``obs``."""
        features = self.trunk(obs)
        return self.mean_head(features), clip(self.log_std_head(features), LOG_STD_MIN, LOG_STD_MAX)

    def sample(self, obs: Tensor, noise) -> tuple[Tensor, Tensor]:
        """A reparameterized draw a = tanh(mean + exp(log_std) noise) (``noise`` ~ N(0, I), one
        row per observation) and its log pi(a | s)."""
        mean, log_std = self(obs)
        u = mean + exp(log_std) * tensor(noise, dtype=mean.dtype)
        return tanh(u), squashed_gaussian_log_prob(u, mean, log_std)

    def mode(self, obs: Tensor) -> Tensor:
        """The deterministic action tanh(mean(s))."""
        return tanh(self(obs)[0])


def sac_targets(actor: SquashedGaussianActor, target_critics: Sequence[QNetwork], batch: Batch, gamma: float,
                alpha: float, noise) -> numpy.ndarray:
    """y = r + gamma (1 - terminated) (min_i Q'_i(s', a') - alpha log pi(a' | s')) with
    a' = tanh(mean(s') + std(s') noise) drawn from the current policy."""
    with no_grad():
        next_obs = batch_tensor(batch.next_obs)
        next_actions, next_log_prob = actor.sample(next_obs, noise)
        next_q = [critic(next_obs, next_actions).numpy() for critic in target_critics]
    soft_value = numpy.minimum.reduce(next_q) - alpha * next_log_prob.numpy()
    return bootstrap(batch, gamma, soft_value)


def sac_critic_loss(critics: Sequence[QNetwork], batch: Batch, targets: numpy.ndarray) -> Tensor:
    """1/2 sum_i mean((Q_i(s, a) - y)^2) (Stable-Baselines3's scale)."""
    return 0.5 * critic_loss(critics, batch, targets)


def sac_actor_loss(actor: SquashedGaussianActor, critics: Sequence[QNetwork], obs, alpha: float,
                   noise) -> tuple[Tensor, numpy.ndarray]:
    """mean(alpha log pi(a | s) - min_i Q_i(s, a)) with a = tanh(mean(s) + std(s) noise), and the
    log pi(a | s) of the draw (an array, for the temperature loss)."""
    obs = batch_tensor(obs)
    actions, log_prob = actor.sample(obs, noise)
    q_values = [critic(obs, actions) for critic in critics]
    min_q = q_values[0]
    for q in q_values[1:]:
        min_q = minimum(min_q, q)
    return mean_of(alpha * log_prob - min_q), log_prob.numpy()


def sac_temperature_loss(log_alpha: Tensor, log_prob, target_entropy: float) -> Tensor:
    """-mean(log alpha (log pi(a | s) + target_entropy)): its gradient raises alpha while the
    policy's entropy -E[log pi] is below the target and lowers it while above."""
    shift = tensor(numpy.asarray(log_prob) + target_entropy, dtype=log_alpha.dtype)
    return -mean_of(log_alpha * shift)


class SAC(OffPolicyAgent):
    """A soft actor-critic agent on a bounded Box of actions (module docstring for the defaults).

    One update (:meth:`update`), in Stable-Baselines3's order: the critics step on
    ``sac_critic_loss`` with targets from the target critics, the actor on ``sac_actor_loss``
    through the updated critics, log alpha on ``sac_temperature_loss`` (critics and actor use
    alpha from before its step), then the targets follow by theta' <- tau theta + (1 - tau) theta'
    every ``target_update_interval`` updates. ``ent_coef`` a number fixes alpha instead of tuning it."""

    algorithm = "sac"

    def __init__(self, obs_dim: int, action_space: Box, hidden: Sequence[int] = (256, 256), lr: float = 3e-4,
                 gamma: float = 0.99, tau: float = 0.005, batch_size: int = 256, buffer_size: int = 1_000_000,
                 learning_starts: int = 100, train_freq: int = 1, gradient_steps: int = 1,
                 ent_coef: float | str = "auto", ent_coef_init: float = 1.0, target_entropy: float | str = "auto",
                 target_update_interval: int = 1, n_critics: int = 2, seed: int | None = None):
        super().__init__(obs_dim, action_space, gamma=gamma, tau=tau, batch_size=batch_size, buffer_size=buffer_size,
                         learning_starts=learning_starts, train_freq=train_freq, gradient_steps=gradient_steps,
                         seed=seed)
        if not (isinstance(lr, (int, float)) and lr > 0):
            raise ValueError(f"SAC: lr must be a positive number, got {lr!r}")
        auto = ent_coef == "auto"
        if not auto and not (isinstance(ent_coef, (int, float)) and ent_coef >= 0):
            raise ValueError(f"SAC: ent_coef must be 'auto' or a number >= 0, got {ent_coef!r}")
        if not (isinstance(ent_coef_init, (int, float)) and ent_coef_init > 0):
            raise ValueError(f"SAC: ent_coef_init must be a positive number, got {ent_coef_init!r}")
        if target_entropy != "auto" and not isinstance(target_entropy, (int, float)):
            raise ValueError(f"SAC: target_entropy must be 'auto' or a number, got {target_entropy!r}")
        for name, value in (("target_update_interval", target_update_interval), ("n_critics", n_critics)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"SAC: {name} must be a positive int, got {value!r}")
        self.target_update_interval = target_update_interval
        self.target_entropy = -float(self.action_dim) if target_entropy == "auto" else float(target_entropy)
        self.actor = SquashedGaussianActor(obs_dim, self.action_dim, hidden)
        self.critics = [QNetwork(obs_dim, self.action_dim, hidden) for _ in range(n_critics)]
        self.target_critics = [QNetwork(obs_dim, self.action_dim, hidden) for _ in range(n_critics)]
        for critic, target in zip(self.critics, self.target_critics):
            copy_weights(critic, target)
        self.actor_optimizer = optim.Adam(self.actor.parameters(), lr=lr)
        self.critic_optimizer = optim.Adam([p for critic in self.critics for p in critic.parameters()], lr=lr)
        self.auto_ent_coef = auto
        initial = ent_coef_init if auto else max(float(ent_coef), 1e-300)
        self.log_alpha = tensor(numpy.array([math.log(initial)], dtype=numpy.float32), requires_grad=auto)
        self.fixed_alpha = None if auto else float(ent_coef)
        self.alpha_optimizer = optim.Adam([self.log_alpha], lr=lr) if auto else None

    @property
    def alpha(self) -> float:
        """The entropy temperature (ent_coef)."""
        return self.fixed_alpha if self.fixed_alpha is not None else float(math.exp(self.log_alpha.numpy()[0]))

    def policy_action(self, obs, deterministic: bool) -> numpy.ndarray:
        with no_grad():
            obs = obs_tensor(obs)[None]
            if deterministic:
                return self.actor.mode(obs).numpy()[0]
            return self.actor.sample(obs, self.rng.standard_normal((1, self.action_dim)))[0].numpy()[0]

    def greedy_layers(self) -> list[tuple[numpy.ndarray, numpy.ndarray, str | None]]:
        dense = [*self.actor.trunk.layers, self.actor.mean_head]
        activations = ["relu"] * len(self.actor.trunk.layers) + ["tanh"]
        return [(numpy.array(layer.weight.data), numpy.array(layer.bias.data), activation)
                for layer, activation in zip(dense, activations)]

    def update(self, batch: Batch, noise=None, next_noise=None) -> dict[str, float]:
        """One update on ``batch`` (class docstring); ``noise`` and ``next_noise`` (N(0, I) of
        shape (batch, action_dim), for the actor loss and the targets) are drawn when not given."""
        shape = (len(batch.rewards), self.action_dim)
        next_noise = self.rng.standard_normal(shape) if next_noise is None else next_noise
        noise = self.rng.standard_normal(shape) if noise is None else noise
        alpha = self.alpha
        targets = sac_targets(self.actor, self.target_critics, batch, self.gamma, alpha, next_noise)
        q_loss = sac_critic_loss(self.critics, batch, targets)
        self.critic_optimizer.zero_grad()
        q_loss.backward()
        self.critic_optimizer.step()
        with frozen(*self.critics):
            pi_loss, log_prob = sac_actor_loss(self.actor, self.critics, batch.obs, alpha, noise)
            self.actor_optimizer.zero_grad()
            pi_loss.backward()
            self.actor_optimizer.step()
        stats = {"critic_loss": q_loss.item(), "actor_loss": pi_loss.item(), "alpha": alpha,
                 "entropy": -float(numpy.mean(log_prob))}
        if self.auto_ent_coef:
            alpha_loss = sac_temperature_loss(self.log_alpha, log_prob, self.target_entropy)
            self.alpha_optimizer.zero_grad()
            alpha_loss.backward()
            self.alpha_optimizer.step()
            stats["alpha_loss"] = alpha_loss.item()
        self.updates += 1
        if self.updates % self.target_update_interval == 0:
            for critic, target in zip(self.critics, self.target_critics):
                soft_update(critic, target, self.tau)
        return stats

    def networks(self) -> dict[str, Module]:
        nets: dict[str, Module] = {"actor": self.actor}
        for i, (critic, target) in enumerate(zip(self.critics, self.target_critics)):
            nets[f"critic{i}"], nets[f"target_critic{i}"] = critic, target
        return nets

    def optimizers(self) -> dict[str, optim.Optimizer]:
        opts = {"actor": self.actor_optimizer, "critic": self.critic_optimizer}
        if self.alpha_optimizer is not None:
            opts["alpha"] = self.alpha_optimizer
        return opts

    def extra_state(self) -> dict:
        return {"log_alpha": self.log_alpha.numpy().copy()}

    def load_extra_state(self, state: dict) -> None:
        self.log_alpha.data[...] = numpy.asarray(state["log_alpha"], dtype=self.log_alpha.dtype)


def train_sac(env: Env | str, total_steps: int = 20000, agent: SAC | None = None, seed: int | None = None,
              **agent_kwargs) -> list[float]:
    """Train ``agent`` (by default ``SAC.for_env(env, seed=seed, **agent_kwargs)``) on ``env`` (an
    Env or a registered id) for ``total_steps`` environment steps; returns every finished
    episode's return."""
    return train_off_policy(SAC, env, total_steps, agent, seed, **agent_kwargs)
