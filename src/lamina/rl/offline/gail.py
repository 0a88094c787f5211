"""Generative adversarial imitation learning (Ho and Ermon, 2016), in its short form: a
discriminator D(s, a) = sigmoid(f(s, a)) learns to tell the expert's state-action pairs
(label 1) from the policy's (label 0) by the binary cross-entropy

    L_D = -mean_expert log D(s, a) - mean_policy log(1 - D(s, a))

and PPO maximizes a reward made from D in place of the environment's, one rollout at a time
(the discriminator steps on each rollout before the policy does). The reward is
"positive" -log(1 - D) = softplus(f) (a bonus for every step: suits tasks where living long is
the goal), "negative" log D = -softplus(-f) (a cost for every step: suits tasks that end at a
goal) or "logit" log D - log(1 - D) = f (AIRL's form). Discrete actions enter f one-hot."""

from __future__ import annotations

from collections.abc import Sequence

import numpy

from lamina import optim
from lamina.autograd import Tensor, no_grad, tensor
from lamina.functional import binary_cross_entropy_with_logits, concat
from lamina.nn import Module
from lamina.rl.networks import mlp
from lamina.rl.offline.common import check_number, check_positive_int, net_tensor
from lamina.rl.offline.dataset import OfflineDataset, check_action_space
from lamina.rl.ppo import PPO, ActorCritic, compute_gae
from lamina.rl.spaces import Discrete, Space, seeded_generator
from lamina.rl.vector import VectorEnv

GAIL_REWARDS = ("positive", "negative", "logit")


class Discriminator(Module):
    """f(s, a): an MLP on [s, a] (a one-hot for Discrete actions) giving one logit per row."""

    def __init__(self, obs_dim: int, action_space: Space, hidden: Sequence[int] = (64, 64)):
        super().__init__()
        self.action_space = action_space
        self.discrete = isinstance(action_space, Discrete)
        self.action_dim = action_space.n if self.discrete else int(numpy.prod(action_space.shape))
        self.net = mlp(obs_dim + self.action_dim, hidden, 1)
        self.built = True

    def features(self, obs, actions) -> Tensor:
        obs = numpy.asarray(obs).reshape(len(obs), -1)
        if self.discrete:
            actions = numpy.eye(self.action_dim)[numpy.asarray(actions, dtype=numpy.int64) - self.action_space.start]
        actions = numpy.asarray(actions).reshape(len(obs), -1)
        return concat([net_tensor(self.net, obs), net_tensor(self.net, actions)], axis=1)

    def forward(self, obs, actions) -> Tensor:
        return self.net(self.features(obs, actions))[:, 0]


def discriminator_loss(discriminator: Discriminator, expert_obs, expert_actions, policy_obs,
                       policy_actions) -> Tensor:
    """L_D of the module docstring (the two means added)."""
    expert = discriminator(expert_obs, expert_actions)
    policy = discriminator(policy_obs, policy_actions)
    ones = tensor(numpy.ones(expert.shape), dtype=expert.dtype)
    zeros = tensor(numpy.zeros(policy.shape), dtype=policy.dtype)
    return binary_cross_entropy_with_logits(expert, ones) + binary_cross_entropy_with_logits(policy, zeros)


def gail_reward(discriminator: Discriminator, obs, actions, kind: str = "positive") -> numpy.ndarray:
    """The imitation reward of each (s, a) row: softplus(f), -softplus(-f) or f (module docstring)."""
    if kind not in GAIL_REWARDS:
        raise ValueError(f"gail_reward: kind must be one of {GAIL_REWARDS}, got {kind!r}")
    with no_grad():
        logits = discriminator(obs, actions).numpy().astype(numpy.float64)
    if kind == "positive":
        return numpy.logaddexp(0.0, logits)
    if kind == "negative":
        return -numpy.logaddexp(0.0, -logits)
    return logits


class GAIL:
    """PPO imitating ``expert`` (an :class:`OfflineDataset` of the expert's transitions; only
    its observations and actions are used) through a :class:`Discriminator` (module docstring).

    :meth:`learn` alternates: a PPO rollout, ``disc_steps`` Adam steps of the discriminator on
    the rollout's pairs against as many expert pairs drawn at random, the rollout's rewards
    replaced by :func:`gail_reward` and its advantages recomputed, then the PPO update."""

    def __init__(self, venv: VectorEnv, expert: OfflineDataset, reward: str = "positive",
                 hidden: Sequence[int] = (64, 64), disc_hidden: Sequence[int] = (64, 64), disc_lr: float = 3e-4,
                 disc_steps: int = 1, seed: int | None = None, **ppo_kwargs):
        if reward not in GAIL_REWARDS:
            raise ValueError(f"GAIL: reward must be one of {GAIL_REWARDS}, got {reward!r}")
        space, obs_space = venv.single_action_space, venv.single_observation_space
        check_action_space(expert, space, "GAIL")
        if expert.observations.shape[1:] != obs_space.shape:
            raise ValueError(f"GAIL: the expert's observations have shape {expert.observations.shape[1:]}, the "
                             f"environment's {obs_space.shape}")
        check_number("GAIL", "disc_lr", disc_lr, 0.0, open_low=True)
        self.disc_steps = check_positive_int("GAIL", "disc_steps", disc_steps)
        self.venv, self.expert, self.reward = venv, expert, reward
        self.ppo = PPO(ActorCritic(obs_space.shape[0], space, hidden=hidden), seed=seed, **ppo_kwargs)
        self.discriminator = Discriminator(obs_space.shape[0], space, disc_hidden)
        self.disc_optimizer = optim.Adam(self.discriminator.parameters(), lr=disc_lr)
        self.rng = seeded_generator(seed)
        self.obs, _ = venv.reset(seed=seed)

    def predict(self, obs, deterministic: bool = True):
        return self.ppo.predict(obs, deterministic)

    def learn(self, total_steps: int) -> tuple[list[float], list[float]]:
        """About ``total_steps`` environment steps of training; returns every finished episode's
        return under the environment's own reward and the discriminator's loss on each rollout."""
        check_positive_int("GAIL.learn", "total_steps", total_steps)
        running = numpy.zeros(self.venv.num_envs)
        returns: list[float] = []
        disc_losses: list[float] = []
        for _ in range(max(1, total_steps // (self.ppo.n_steps * self.venv.num_envs))):
            rollout, self.obs = self.ppo.collect(self.venv, self.obs)
            for rewards, dones in zip(rollout["rewards"], rollout["dones"]):
                running += rewards
                returns.extend(running[dones].tolist())
                running[dones] = 0.0
            obs = rollout["obs"].reshape(-1, *rollout["obs"].shape[2:])
            actions = rollout["actions"].reshape(-1, *rollout["actions"].shape[2:])
            for _ in range(self.disc_steps):
                pick = self.rng.integers(len(self.expert), size=len(obs))
                loss = discriminator_loss(self.discriminator, self.expert.observations[pick],
                                          self.expert.actions[pick], obs, actions)
                self.disc_optimizer.zero_grad()
                loss.backward()
                self.disc_optimizer.step()
            disc_losses.append(loss.item())
            shape = rollout["rewards"].shape
            rollout["rewards"] = gail_reward(self.discriminator, obs, actions, self.reward).reshape(shape)
            rollout["advantages"], rollout["returns"] = compute_gae(
                rollout["rewards"], rollout["values"], rollout["next_values"], rollout["terminated"],
                rollout["dones"], self.ppo.gamma, self.ppo.gae_lambda)
            self.ppo.update(rollout)
        return returns, disc_losses
