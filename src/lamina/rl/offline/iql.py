"""Implicit Q-learning (Kostrikov, Nair and Levine, 2021): values learned only at the dataset's
actions, never at actions the data did not take, in three losses per update (CORL's order):

    L_V  = mean_i L2^tau(min_k Q'_k(s_i, a_i) - V(s_i)),   L2^tau(u) = |tau - 1(u < 0)| u^2
    L_Q  = sum_k mean_i (Q_k(s_i, a_i) - r_i - gamma (1 - terminal_i) V(s'_i))^2
    L_pi = -mean_i min(exp(beta (min_k Q'_k(s_i, a_i) - V(s_i))), 100) log pi(a_i | s_i)

The expectile tau > 1/2 makes V an upper expectile of Q over the data's actions (a soft
maximum within the data's support); the policy is then extracted by advantage-weighted
regression. Q' follows Q by Polyak averaging. Discrete actions: Q(s, .) has one output per
action and pi is a softmax; continuous ones (in [-1, 1]^d): Q(s, a) on [s, a] and pi a Gaussian
with mean tanh(.) and a state-dependent log standard deviation."""

from __future__ import annotations

from collections.abc import Sequence

import numpy

from lamina import optim
from lamina.autograd import Tensor, no_grad, tensor
from lamina.functional import log_softmax, mean, take_along_dim
from lamina.nn import Module
from lamina.rl.networks import copy_weights, mlp, soft_update
from lamina.rl.off_policy import QNetwork
from lamina.rl.offline.bc import gaussian_log_likelihood, split_gaussian
from lamina.rl.offline.common import OfflineAgent, check_number, net_tensor
from lamina.rl.replay import Batch
from lamina.rl.spaces import Space

MAX_ADVANTAGE_WEIGHT = 100.0


def expectile_loss(diff: Tensor, tau: float) -> Tensor:
    """mean |tau - 1(u < 0)| u^2 over the elements u of ``diff``."""
    if not 0.0 < tau < 1.0:
        raise ValueError(f"expectile_loss: tau must be in (0, 1), got {tau}")
    weight = numpy.where(diff.numpy() < 0, 1.0 - tau, tau).astype(diff.dtype)
    return mean(tensor(weight, dtype=diff.dtype) * diff * diff)


def advantage_weights(advantages, beta: float, max_weight: float = MAX_ADVANTAGE_WEIGHT) -> numpy.ndarray:
    """min(exp(beta A), max_weight), computed without overflow."""
    advantages = numpy.asarray(advantages)
    capped = numpy.exp(numpy.minimum(beta * advantages, numpy.log(max_weight)))
    return numpy.minimum(capped, max_weight).astype(advantages.dtype)


def _q_values(critic: Module, obs: Tensor, actions, discrete: bool) -> Tensor:
    if discrete:
        index = numpy.asarray(actions, dtype=numpy.int64)[:, None]
        return take_along_dim(critic(obs), index, axis=1)[:, 0]
    return critic(obs, tensor(numpy.asarray(actions), dtype=obs.dtype))


def policy_log_prob(policy: Module, obs: Tensor, actions, discrete: bool) -> Tensor:
    """log pi(a | s) of each row: a softmax over the outputs, or the Gaussian of :func:`split_gaussian`."""
    outputs = policy(obs)
    if discrete:
        index = numpy.asarray(actions, dtype=numpy.int64)[:, None]
        return take_along_dim(log_softmax(outputs, axis=1), index, axis=1)[:, 0]
    target = tensor(numpy.asarray(actions), dtype=obs.dtype)
    mu, log_std = split_gaussian(outputs, target.shape[-1])
    return gaussian_log_likelihood(target, mu, log_std)


class IQL(OfflineAgent):
    """Implicit Q-learning (module docstring) with CORL's defaults: expectile ``tau`` 0.7,
    inverse temperature ``beta`` 3, two critics, Polyak rate ``polyak`` 0.005, Adam (lr 3e-4) for
    V, the critics and the policy, gamma 0.99; smaller networks (CORL's have two hidden layers of
    256). :meth:`predict` acts greedily. On CartPole, whose values grow to about 100, a larger
    expectile (0.9), lr 1e-3 and polyak 0.02 learned within 600 updates."""

    def __init__(self, obs_dim: int, action_space: Space, hidden: Sequence[int] = (64, 64), lr: float = 3e-4,
                 gamma: float = 0.99, tau: float = 0.7, beta: float = 3.0, polyak: float = 0.005,
                 batch_size: int = 256, n_critics: int = 2, seed: int | None = None):
        super().__init__(obs_dim, action_space, batch_size, seed)
        who = type(self).__name__
        self.tau = check_number(who, "tau", tau, 0.0, 1.0, open_low=True, open_high=True)
        self.beta = check_number(who, "beta", beta, 0.0)
        self.gamma = check_number(who, "gamma", gamma, 0.0, 1.0)
        self.polyak = check_number(who, "polyak", polyak, 0.0, 1.0, open_low=True)
        check_number(who, "lr", lr, 0.0, open_low=True)

        def critic() -> Module:
            return mlp(obs_dim, hidden, self.n_outputs) if self.discrete else QNetwork(obs_dim, self.n_outputs, hidden)

        self.critics = [critic() for _ in range(n_critics)]
        self.target_critics = [critic() for _ in range(n_critics)]
        for source, target in zip(self.critics, self.target_critics):
            copy_weights(source, target)
        self.value = mlp(obs_dim, hidden, 1)
        self.policy = mlp(obs_dim, hidden, self.n_outputs * (1 if self.discrete else 2))
        self.value_optimizer = optim.Adam(self.value.parameters(), lr=lr)
        self.critic_optimizer = optim.Adam([p for c in self.critics for p in c.parameters()], lr=lr)
        self.policy_optimizer = optim.Adam(self.policy.parameters(), lr=lr)

    def target_q(self, obs: Tensor, actions) -> numpy.ndarray:
        """min_k Q'_k(s, a) as an array."""
        with no_grad():
            return numpy.minimum.reduce([_q_values(c, obs, actions, self.discrete).numpy()
                                         for c in self.target_critics])

    def value_loss(self, batch: Batch) -> tuple[Tensor, numpy.ndarray]:
        """(L_V, the advantages min_k Q'_k(s, a) - V(s) as an array)."""
        obs = net_tensor(self.value, batch.obs)
        diff = tensor(self.target_q(obs, batch.actions), dtype=obs.dtype) - self.value(obs)[:, 0]
        return expectile_loss(diff, self.tau), diff.numpy()

    def critic_loss(self, batch: Batch) -> Tensor:
        with no_grad():
            next_v = self.value(net_tensor(self.value, batch.next_obs)).numpy()[:, 0]
        not_terminal = 1.0 - numpy.asarray(batch.terminated, dtype=next_v.dtype)
        targets = tensor(numpy.asarray(batch.rewards, dtype=next_v.dtype) + self.gamma * not_terminal * next_v,
                         dtype=next_v.dtype)
        obs = net_tensor(self.value, batch.obs)
        total = None
        for c in self.critics:
            term = mean((_q_values(c, obs, batch.actions, self.discrete) - targets) ** 2)
            total = term if total is None else total + term
        return total

    def policy_loss(self, batch: Batch, advantages: numpy.ndarray) -> Tensor:
        obs = net_tensor(self.policy, batch.obs)
        weights = tensor(advantage_weights(advantages, self.beta), dtype=obs.dtype)
        return -mean(weights * policy_log_prob(self.policy, obs, batch.actions, self.discrete))

    def update(self, batch: Batch) -> dict[str, float]:
        v_loss, advantages = self.value_loss(batch)
        self.value_optimizer.zero_grad()
        v_loss.backward()
        self.value_optimizer.step()
        q_loss = self.critic_loss(batch)
        self.critic_optimizer.zero_grad()
        q_loss.backward()
        self.critic_optimizer.step()
        pi_loss = self.policy_loss(batch, advantages)
        self.policy_optimizer.zero_grad()
        pi_loss.backward()
        self.policy_optimizer.step()
        for source, target in zip(self.critics, self.target_critics):
            soft_update(source, target, self.polyak)
        self.updates += 1
        return {"value_loss": v_loss.item(), "critic_loss": q_loss.item(), "policy_loss": pi_loss.item(),
                "mean_advantage": float(advantages.mean())}

    def policy_action(self, obs: numpy.ndarray, deterministic: bool):
        with no_grad():
            outputs = self.policy(net_tensor(self.policy, obs)).numpy()[0]
        if self.discrete:
            if deterministic:
                return outputs.argmax()
            p = numpy.exp(outputs - outputs.max())
            return self.rng.choice(len(p), p=p / p.sum())
        mu = numpy.tanh(outputs[:self.n_outputs])
        if deterministic:
            return mu
        log_std = numpy.clip(outputs[self.n_outputs:], -5.0, 2.0)
        return numpy.clip(mu + numpy.exp(log_std) * self.rng.standard_normal(mu.shape), -1.0, 1.0)
