"""Synchronous advantage actor-critic (A2C, the synchronous form of Mnih et al.'s 2016 A3C) with
Stable-Baselines3's defaults: rollouts of 5 steps per environment, returns and advantages by
GAE with lambda 1 (n-step returns bootstrapped from V), one gradient step per rollout on

    L = -mean(A log pi(a | s)) + vf_coef mean((V(s) - R)^2) - ent_coef mean(entropy)

(no clipping, advantages not normalized), RMSprop (lr 7e-4, alpha 0.99, eps 1e-5), gradient
norm clipped to 0.5, vf_coef 0.5, ent_coef 0. It reuses PPO's actor-critic, rollouts and GAE."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from lamina import optim
from lamina.autograd import Tensor, tensor
from lamina.backend import manual_seed
from lamina.functional import mean
from lamina.rl.env import Env
from lamina.rl.networks import obs_tensor
from lamina.rl.ppo import PPO, ActorCritic, _vector_env, train_ppo
from lamina.rl.vector import VectorEnv


def a2c_loss(log_prob: Tensor, entropy: Tensor, values: Tensor, advantages, returns, vf_coef: float = 0.5,
             ent_coef: float = 0.0) -> tuple[Tensor, dict[str, float]]:
    """L = -mean(A log pi) + vf_coef mean((V - R)^2) - ent_coef mean(entropy); returns L and its parts."""
    advantages = tensor(advantages, dtype=log_prob.dtype)
    policy_term = -mean(advantages * log_prob)
    value_term = mean((values - tensor(returns, dtype=values.dtype)) ** 2)
    entropy_term = mean(entropy)
    total = policy_term + vf_coef * value_term - ent_coef * entropy_term
    return total, {"policy_loss": policy_term.item(), "value_loss": value_term.item(),
                   "entropy": entropy_term.item()}


class A2C(PPO):
    """Collects ``n_steps`` steps from each of a vector of environments (:meth:`PPO.collect`),
    then takes one RMSprop step on :func:`a2c_loss` over the whole rollout."""

    algorithm = "a2c"

    def __init__(self, policy: ActorCritic, lr: float = 7e-4, n_steps: int = 5, gamma: float = 0.99,
                 gae_lambda: float = 1.0, vf_coef: float = 0.5, ent_coef: float = 0.0,
                 max_grad_norm: float | None = 0.5, rms_prop_eps: float = 1e-5, normalize_advantages: bool = False,
                 seed: int | None = None):
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"A2C: n_steps must be a positive int, got {n_steps!r}")
        if not 0.0 <= gae_lambda <= 1.0 or not 0.0 <= gamma <= 1.0:
            raise ValueError(f"A2C: gamma and gae_lambda must lie in [0, 1], got {gamma!r} and {gae_lambda!r}")
        super().__init__(policy, lr=lr, n_steps=n_steps, n_epochs=1, gamma=gamma, gae_lambda=gae_lambda,
                         vf_coef=vf_coef, ent_coef=ent_coef, max_grad_norm=max_grad_norm,
                         normalize_advantages=normalize_advantages, seed=seed)
        self.optimizer = optim.RMSprop(policy.parameters(), lr=lr, alpha=0.99, eps=rms_prop_eps)

    def update(self, rollout: dict) -> dict[str, float]:
        """One gradient step on the whole rollout; returns the loss parts."""
        flat = {key: value.reshape(-1, *value.shape[2:]) for key, value in rollout.items()}
        advantages = flat["advantages"]
        if self.normalize_advantages and len(advantages) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        obs = obs_tensor(flat["obs"])
        log_prob, entropy = self.policy.log_prob_entropy(obs, flat["actions"])
        loss, parts = a2c_loss(log_prob, entropy, self.policy.value(obs), advantages, flat["returns"],
                               self.vf_coef, self.ent_coef)
        self.optimizer.zero_grad()
        loss.backward()
        if self.max_grad_norm is not None:
            optim.clip_grad_norm(self.policy, self.max_grad_norm)
        self.optimizer.step()
        return parts


def train_a2c(env: str | Env | Callable[[], Env] | VectorEnv, total_steps: int = 50000, num_envs: int = 4,
              a2c: A2C | None = None, seed: int | None = None, hidden: Sequence[int] = (64, 64),
              **a2c_kwargs) -> list[float]:
    """Train with A2C on ``num_envs`` copies of ``env`` (as :func:`train_ppo` takes it) for about
    ``total_steps`` environment steps in all. ``a2c`` defaults to ``A2C(ActorCritic(...),
    seed=seed, **a2c_kwargs)``. Returns the return of every finished episode, in the order they
    finished."""
    venv = _vector_env(env, num_envs)
    if a2c is None:
        if seed is not None:
            manual_seed(seed)
        policy = ActorCritic(venv.single_observation_space.shape[0], venv.single_action_space, hidden=hidden)
        a2c = A2C(policy, seed=seed, **a2c_kwargs)
    elif a2c_kwargs:
        raise TypeError(f"train_a2c: A2C settings {sorted(a2c_kwargs)} given with a ready A2C")
    return train_ppo(venv, total_steps=total_steps, num_envs=venv.num_envs, ppo=a2c, seed=seed)
