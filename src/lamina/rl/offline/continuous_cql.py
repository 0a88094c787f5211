"""Conservative Q-learning for continuous actions (Kumar et al., 2020), CQL(H) on soft
actor-critic. The soft maximum over actions, log integral exp Q(s, a) da, is estimated by
importance sampling from proposals with known densities: N uniform actions on [-1, 1]^d
(density 2^-d), N actions of the current policy at s and N at s' (densities pi(a | .)):

    R_k(Q) = mean_i [T log sum_j exp((Q_k(s_i, a_ij) - log p(a_ij)) / T) - Q_k(s_i, a_i)]
    L_Q = sum_k [mean_i (Q_k(s_i, a_i) - y_i)^2 + alpha' R_k(Q)]

(T the temperature, 1 by default; CORL's implementation, which leaves out the constant
log 3N). y is SAC's target, without the entropy term by default (CORL's ``backup_entropy``
False). The actor and the entropy temperature are SAC's. With ``target_action_gap`` set,
alpha' is tuned by dual descent (the Lagrange form): alpha' = exp(log alpha') clipped to
[0, 10^6] steps to raise alpha' while the mean regularizer exceeds the gap,
L_alpha' = -alpha' sum_k (R_k - gap) / K."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy

from lamina import optim
from lamina.autograd import Tensor, no_grad, tensor
from lamina.functional import exp, logsumexp, mean, reshape
from lamina.rl.networks import copy_weights, soft_update
from lamina.rl.off_policy import QNetwork, frozen
from lamina.rl.offline.common import OfflineAgent, check_number, check_positive_int, net_tensor
from lamina.rl.replay import Batch
from lamina.rl.sac import SquashedGaussianActor, sac_actor_loss, sac_targets, sac_temperature_loss
from lamina.rl.spaces import Box, Space


def continuous_cql_regularizer(q_data: Tensor, q_sampled: Tensor, log_density, temperature: float = 1.0) -> Tensor:
    """mean_i [T logsumexp_j ((Q(s_i, a_ij) - log p(a_ij)) / T) - Q(s_i, a_i)] for Q at the
    data's actions (B,), at sampled actions (B, K) and the log densities (B, K) of the
    proposals they were drawn from."""
    log_density = tensor(numpy.asarray(log_density), dtype=q_sampled.dtype)
    soft_max = temperature * logsumexp((q_sampled - log_density) * (1.0 / temperature), axis=1)
    return mean(soft_max - q_data)


class ContinuousCQL(OfflineAgent):
    """CQL(H) on SAC for a bounded Box of actions (module docstring) with CORL's settings:
    ``cql_alpha`` 10 (fixed) or Lagrange tuning with ``target_action_gap``, ``n_actions`` 10
    samples per proposal, lr 3e-4 for the critics and the entropy temperature, 1e-4 for the actor,
    Polyak rate 0.005, gamma 0.99; smaller networks by default. :meth:`predict` acts with tanh(mean)."""

    def __init__(self, obs_dim: int, action_space: Space, hidden: Sequence[int] = (64, 64),
                 critic_lr: float = 3e-4, actor_lr: float = 1e-4, gamma: float = 0.99, polyak: float = 0.005,
                 cql_alpha: float = 10.0, n_actions: int = 10, temperature: float = 1.0,
                 target_action_gap: float | None = None, backup_entropy: bool = False, batch_size: int = 256,
                 seed: int | None = None):
        super().__init__(obs_dim, action_space, batch_size, seed)
        who = type(self).__name__
        if not isinstance(action_space, Box):
            raise ValueError(f"{who}: needs a Box action space (DiscreteCQL takes Discrete ones), got {action_space!r}")
        self.gamma = check_number(who, "gamma", gamma, 0.0, 1.0)
        self.polyak = check_number(who, "polyak", polyak, 0.0, 1.0, open_low=True)
        self.cql_alpha = check_number(who, "cql_alpha", cql_alpha, 0.0)
        self.temperature = check_number(who, "temperature", temperature, 0.0, open_low=True)
        self.n_actions = check_positive_int(who, "n_actions", n_actions)
        for name, lr in (("critic_lr", critic_lr), ("actor_lr", actor_lr)):
            check_number(who, name, lr, 0.0, open_low=True)
        self.target_action_gap = target_action_gap
        self.backup_entropy = backup_entropy
        self.target_entropy = -float(self.n_outputs)
        self.actor = SquashedGaussianActor(obs_dim, self.n_outputs, hidden)
        self.critics = [QNetwork(obs_dim, self.n_outputs, hidden) for _ in range(2)]
        self.target_critics = [QNetwork(obs_dim, self.n_outputs, hidden) for _ in range(2)]
        for critic, target in zip(self.critics, self.target_critics):
            copy_weights(critic, target)
        self.actor_optimizer = optim.Adam(self.actor.parameters(), lr=actor_lr)
        self.critic_optimizer = optim.Adam([p for c in self.critics for p in c.parameters()], lr=critic_lr)
        self.log_alpha = tensor(numpy.zeros(1, numpy.float32), requires_grad=True)
        self.alpha_optimizer = optim.Adam([self.log_alpha], lr=critic_lr)
        self.log_alpha_prime = tensor(numpy.zeros(1, numpy.float32), requires_grad=True)
        self.alpha_prime_optimizer = optim.Adam([self.log_alpha_prime], lr=critic_lr)

    @property
    def alpha(self) -> float:
        """The entropy temperature of the actor."""
        return float(math.exp(self.log_alpha.numpy()[0]))

    def sampled_actions(self, batch: Batch) -> tuple[numpy.ndarray, numpy.ndarray, numpy.ndarray]:
        """(observations repeated n_actions times (B N, obs_dim), the proposals' actions
        (B N, 3, d): uniform, policy at s, policy at s', and their log densities (B N, 3))."""
        n, d = self.n_actions, self.n_outputs
        obs = numpy.repeat(numpy.asarray(batch.obs, dtype=numpy.float32), n, axis=0)
        next_obs = numpy.repeat(numpy.asarray(batch.next_obs, dtype=numpy.float32), n, axis=0)
        uniform = self.rng.uniform(-1.0, 1.0, (len(obs), d)).astype(numpy.float32)
        with no_grad():
            current, log_current = self.actor.sample(net_tensor(self.actor, obs),
                                                     self.rng.standard_normal((len(obs), d)))
            after, log_after = self.actor.sample(net_tensor(self.actor, next_obs),
                                                 self.rng.standard_normal((len(obs), d)))
        actions = numpy.stack([uniform, current.numpy(), after.numpy()], axis=1)
        log_density = numpy.stack([numpy.full(len(obs), -d * math.log(2.0)), log_current.numpy(),
                                   log_after.numpy()], axis=1)
        return obs, actions, log_density

    def critic_loss(self, batch: Batch, targets: numpy.ndarray, cql_alpha: float, samples=None
                    ) -> tuple[Tensor, Tensor, list[Tensor]]:
        """(L_Q, its TD part, each critic's R_k) for the batch, targets y and weight alpha';
        ``samples``: what :meth:`sampled_actions` returns (drawn when not given)."""
        obs, actions, log_density = self.sampled_actions(batch) if samples is None else samples
        size, n = len(batch.rewards), self.n_actions
        # each state's 3 N proposals are consecutive rows: (B N, 3) -> (B, 3 N)
        log_density = log_density.reshape(size, n * 3)
        data_obs, data_actions = net_tensor(self.actor, batch.obs), net_tensor(self.actor, batch.actions)
        y = tensor(targets, dtype=data_obs.dtype)
        sampled_obs = net_tensor(self.actor, numpy.repeat(obs, 3, axis=0))
        sampled_actions = net_tensor(self.actor, actions.reshape(-1, self.n_outputs))
        td, regularizers = None, []
        for critic in self.critics:
            q_data = critic(data_obs, data_actions)
            q_sampled = reshape(critic(sampled_obs, sampled_actions), size, n * 3)
            regularizers.append(continuous_cql_regularizer(q_data, q_sampled, log_density, self.temperature))
            term = mean((q_data - y) ** 2)
            td = term if td is None else td + term
        total = td
        for regularizer in regularizers:
            total = total + cql_alpha * regularizer
        return total, td, regularizers

    def update(self, batch: Batch) -> dict[str, float]:
        size = len(batch.rewards)
        alpha = self.alpha
        with frozen(*self.critics):
            pi_loss, log_prob = sac_actor_loss(self.actor, self.critics, batch.obs, alpha,
                                               self.rng.standard_normal((size, self.n_outputs)))
            self.actor_optimizer.zero_grad()
            pi_loss.backward()
            self.actor_optimizer.step()
        alpha_loss = sac_temperature_loss(self.log_alpha, log_prob, self.target_entropy)
        self.alpha_optimizer.zero_grad()
        alpha_loss.backward()
        self.alpha_optimizer.step()

        targets = sac_targets(self.actor, self.target_critics, batch, self.gamma,
                              alpha if self.backup_entropy else 0.0, self.rng.standard_normal((size, self.n_outputs)))
        stats = {"actor_loss": pi_loss.item(), "alpha": alpha}
        if self.target_action_gap is None:
            q_loss, td, regularizers = self.critic_loss(batch, targets, self.cql_alpha)
        else:
            alpha_prime = float(numpy.clip(numpy.exp(self.log_alpha_prime.numpy()[0]), 0.0, 1e6))
            q_loss, td, regularizers = self.critic_loss(batch, targets, alpha_prime)
            gap = sum(r.item() for r in regularizers) / len(regularizers) - self.target_action_gap
            prime_loss = -mean(exp(self.log_alpha_prime) * gap)
            self.alpha_prime_optimizer.zero_grad()
            prime_loss.backward()
            self.alpha_prime_optimizer.step()
            stats["alpha_prime"] = alpha_prime
        self.critic_optimizer.zero_grad()
        q_loss.backward()
        self.critic_optimizer.step()
        for critic, target in zip(self.critics, self.target_critics):
            soft_update(critic, target, self.polyak)
        self.updates += 1
        stats.update(critic_loss=q_loss.item(), td_loss=td.item(),
                     cql_regularizer=sum(r.item() for r in regularizers) / len(regularizers))
        return stats

    def policy_action(self, obs: numpy.ndarray, deterministic: bool):
        with no_grad():
            obs = net_tensor(self.actor, obs)
            if deterministic:
                return self.actor.mode(obs).numpy()[0]
            return self.actor.sample(obs, self.rng.standard_normal((1, self.n_outputs)))[0].numpy()[0]
