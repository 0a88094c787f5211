"""IMPALA (Espeholt et al., 2018): actors run a lagged copy of the policy on vectorised
environments, and a learner corrects for that lag with V-trace. For an unroll x_s..x_{s+n} with
behaviour policy mu and target policy pi, rho_t = min(rho_bar, pi(a_t|x_t) / mu(a_t|x_t)),
c_t = min(c_bar, pi(a_t|x_t) / mu(a_t|x_t)) and delta_t = rho_t (r_t + gamma_t V(x_{t+1}) - V(x_t)):

    v_s = V(x_s) + sum_{t=s}^{s+n-1} (prod_{i=s}^{t-1} gamma_i c_i) delta_t
        = V(x_s) + delta_s + gamma_s c_s (v_{s+1} - V(x_{s+1}))

and the policy gradient uses the advantages rho_s (r_s + gamma_s v_{s+1} - V(x_s)). Episode ends
enter through gamma_t = 0."""

from __future__ import annotations

import copy
from collections import deque
from collections.abc import Callable, Sequence
from typing import NamedTuple

import numpy

from lamina import optim
from lamina.autograd import Tensor, no_grad, tensor
from lamina.backend import to_numpy
from lamina.functional import mean
from lamina.rl.env import Env
from lamina.rl.networks import obs_tensor
from lamina.rl.ppo import PPO, ActorCritic, _draw_actions, _seeded_actor_critic, _train_rounds, _vector_env
from lamina.rl.vector import VectorEnv


class VTraceReturns(NamedTuple):
    """V-trace targets ``vs``, policy-gradient advantages and the truncated weights, all (T, B)."""

    vs: numpy.ndarray
    pg_advantages: numpy.ndarray
    rhos: numpy.ndarray
    cs: numpy.ndarray


def vtrace(behaviour_logp, target_logp, rewards, values, bootstrap_value, discounts, rho_bar: float = 1.0,
           c_bar: float = 1.0) -> VTraceReturns:
    """V-trace targets by the backward recursion (see the module docstring) on time-major arrays of
    shape (T, B); ``bootstrap_value`` (B,) is V(x_T) and ``discounts[t]`` is gamma times 0 where
    step t ended an episode. ``rho_bar`` / ``c_bar`` may be ``numpy.inf`` (no truncation).
    Computed in float64 on plain arrays: the targets carry no gradient."""
    arrays = [numpy.asarray(to_numpy(a) if isinstance(a, Tensor) else a, dtype=numpy.float64)
              for a in (behaviour_logp, target_logp, rewards, values, discounts)]
    behaviour_logp, target_logp, rewards, values, discounts = arrays
    bootstrap_value = numpy.asarray(to_numpy(bootstrap_value) if isinstance(bootstrap_value, Tensor)
                                    else bootstrap_value, dtype=numpy.float64)
    if values.ndim != 2 or any(a.shape != values.shape for a in arrays) or bootstrap_value.shape != values.shape[1:]:
        raise ValueError(f"vtrace: behaviour_logp, target_logp, rewards, values and discounts must share one (T, B) "
                         f"shape and bootstrap_value be (B,), got {[a.shape for a in arrays]} and "
                         f"{bootstrap_value.shape}")
    if not (rho_bar > 0 and c_bar > 0):
        raise ValueError(f"vtrace: rho_bar and c_bar must be positive, got {rho_bar!r} and {c_bar!r}")
    ratios = numpy.exp(target_logp - behaviour_logp)
    rhos, cs = numpy.minimum(rho_bar, ratios), numpy.minimum(c_bar, ratios)
    next_values = numpy.concatenate([values[1:], bootstrap_value[None]])
    deltas = rhos * (rewards + discounts * next_values - values)
    corrections = numpy.zeros_like(values)          # v_s - V(x_s)
    running = numpy.zeros_like(bootstrap_value)
    for t in reversed(range(len(values))):
        running = deltas[t] + discounts[t] * cs[t] * running
        corrections[t] = running
    vs = values + corrections
    next_vs = numpy.concatenate([vs[1:], bootstrap_value[None]])
    pg_advantages = rhos * (rewards + discounts * next_vs - values)
    return VTraceReturns(vs, pg_advantages, rhos, cs)


def impala_loss(target_logp: Tensor, entropy: Tensor, values: Tensor, behaviour_logp, rewards, bootstrap_value,
                discounts, rho_bar: float = 1.0, c_bar: float = 1.0, vf_coef: float = 0.5,
                ent_coef: float = 0.01) -> tuple[Tensor, dict[str, float]]:
    """L = -mean(A_s log pi(a_s|x_s)) + vf_coef 0.5 mean((v_s - V(x_s))^2) - ent_coef mean(entropy)
    with v_s and A_s from :func:`vtrace` on the current log pi and V (held constant: no gradient
    flows through the targets). All arrays are (T, B); returns L and its parts."""
    targets = vtrace(behaviour_logp, target_logp.numpy(), rewards, values.numpy(), bootstrap_value, discounts,
                     rho_bar, c_bar)
    policy_term = -mean(tensor(targets.pg_advantages, dtype=target_logp.dtype) * target_logp)
    baseline_term = 0.5 * mean((tensor(targets.vs, dtype=values.dtype) - values) ** 2)
    entropy_term = mean(entropy)
    total = policy_term + vf_coef * baseline_term - ent_coef * entropy_term
    return total, {"policy_loss": policy_term.item(), "baseline_loss": baseline_term.item(),
                   "entropy": entropy_term.item(), "mean_rho": float(targets.rhos.mean())}


class IMPALAAgent(PPO):
    """Actors act with a copy of the policy ``policy_lag`` updates old (0: the learner's own
    weights) on a vector of environments, ``n_steps`` steps per unroll; the learner takes one
    RMSprop step on :func:`impala_loss` over each (T, B) trajectory. ``correction=False`` treats
    the data as on-policy (rho = c = 1), the uncorrected loss. A truncated (time-limit) step
    ends the unroll's recursion but bootstraps from its last observation."""

    algorithm = "impala"

    def __init__(self, policy: ActorCritic, lr: float = 2e-3, n_steps: int = 20, gamma: float = 0.99,
                 rho_bar: float = 1.0, c_bar: float = 1.0, vf_coef: float = 0.5, ent_coef: float = 0.01,
                 policy_lag: int = 0, correction: bool = True, max_grad_norm: float | None = 40.0,
                 rms_prop_eps: float = 0.01, seed: int | None = None):
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"IMPALAAgent: n_steps must be a positive int, got {n_steps!r}")
        if isinstance(policy_lag, bool) or not isinstance(policy_lag, int) or policy_lag < 0:
            raise ValueError(f"IMPALAAgent: policy_lag must be a non-negative int, got {policy_lag!r}")
        if not 0.0 <= gamma <= 1.0:
            raise ValueError(f"IMPALAAgent: gamma must lie in [0, 1], got {gamma!r}")
        super().__init__(policy, lr=lr, n_steps=n_steps, n_epochs=1, gamma=gamma, vf_coef=vf_coef,
                         ent_coef=ent_coef, max_grad_norm=max_grad_norm, normalize_advantages=False, seed=seed)
        self.optimizer = optim.RMSprop(policy.parameters(), lr=lr, alpha=0.99, eps=rms_prop_eps)
        self.rho_bar, self.c_bar, self.policy_lag, self.correction = rho_bar, c_bar, policy_lag, correction
        self.actor = copy.deepcopy(policy)
        self._snapshots: deque = deque([self._weights()], maxlen=policy_lag + 1)

    def _weights(self) -> dict:
        return {name: numpy.array(to_numpy(value)) for name, value in self.policy.state_dict().items()}

    def state_dict(self) -> dict:
        """:meth:`PPO.state_dict` plus the weights the actors will use over the next updates."""
        return {**super().state_dict(), "snapshots": [dict(s) for s in self._snapshots]}

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self._snapshots = deque((dict(s) for s in state["snapshots"]), maxlen=self.policy_lag + 1)
        self.actor.load_state_dict(self._snapshots[0])

    def collect(self, venv: VectorEnv, obs: numpy.ndarray) -> tuple[dict, numpy.ndarray]:
        """Run the actors' (lagged) policy ``n_steps`` steps in ``venv`` from ``obs``. Returns the
        trajectory, arrays of shape (T, B, ...): obs, actions, behaviour_logp, rewards, discounts,
        dones, truncated and final_obs (the observation each step reached), plus bootstrap_obs
        (B, ...); and the last observations."""
        trajectory = {key: [] for key in ("obs", "actions", "behaviour_logp", "rewards", "discounts", "dones",
                                          "truncated", "final_obs")}
        space = venv.single_action_space
        for _ in range(self.n_steps):
            with no_grad():
                dist = self.actor.distribution(obs_tensor(obs))
            actions, log_probs, env_actions = _draw_actions(dist, self.actor.continuous, space)
            next_obs, rewards, terminated, truncated, info = venv.step(env_actions)
            for key, value in (("obs", obs), ("actions", actions), ("behaviour_logp", log_probs),
                               ("rewards", rewards), ("discounts", self.gamma * (1.0 - info["done"])),
                               ("dones", info["done"]), ("truncated", truncated & ~terminated),
                               ("final_obs", info["final_obs"])):
                trajectory[key].append(value)
            obs = next_obs
        trajectory = {key: numpy.stack(value) for key, value in trajectory.items()}
        trajectory["bootstrap_obs"] = numpy.array(obs)
        return trajectory, obs

    def update(self, trajectory: dict) -> dict[str, float]:
        """One learner step on a (T, B) trajectory, then the actors move to the weights of
        ``policy_lag`` updates ago; returns the loss parts."""
        steps, batch = trajectory["rewards"].shape
        obs = obs_tensor(trajectory["obs"].reshape(steps * batch, *trajectory["obs"].shape[2:]))
        actions = trajectory["actions"].reshape(steps * batch, *trajectory["actions"].shape[2:])
        log_prob, entropy = self.policy.log_prob_entropy(obs, actions)
        values = self.policy.value(obs)
        rewards = numpy.array(trajectory["rewards"], dtype=numpy.float64)
        with no_grad():
            bootstrap_value = self.policy.value(obs_tensor(trajectory["bootstrap_obs"])).numpy()
            rows = numpy.nonzero(trajectory["truncated"])
            if len(rows[0]):
                rewards[rows] += self.gamma * self.policy.value(obs_tensor(trajectory["final_obs"][rows])).numpy()
        target_logp = log_prob.reshape(steps, batch)
        behaviour_logp = trajectory["behaviour_logp"] if self.correction else target_logp.numpy()
        loss, parts = impala_loss(target_logp, entropy.reshape(steps, batch), values.reshape(steps, batch),
                                  behaviour_logp, rewards, bootstrap_value, trajectory["discounts"], self.rho_bar,
                                  self.c_bar, self.vf_coef, self.ent_coef)
        self.optimizer.zero_grad()
        loss.backward()
        if self.max_grad_norm is not None:
            optim.clip_grad_norm(self.policy, self.max_grad_norm)
        self.optimizer.step()
        self._snapshots.append(self._weights())
        self.actor.load_state_dict(self._snapshots[0])
        return parts


def train_impala(env: str | Env | Callable[[], Env] | VectorEnv, total_steps: int = 50000, num_envs: int = 8,
                 agent: IMPALAAgent | None = None, seed: int | None = None, hidden: Sequence[int] = (64, 64),
                 **agent_kwargs) -> list[float]:
    """Train with IMPALA on ``num_envs`` copies of ``env`` (as :func:`train_ppo` takes it) for
    about ``total_steps`` environment steps in all. ``agent`` defaults to
    ``IMPALAAgent(ActorCritic(...), seed=seed, **agent_kwargs)``. Returns the return of every
    finished episode, in the order they finished."""
    venv = _vector_env(env, num_envs)
    if agent is None:
        agent = IMPALAAgent(_seeded_actor_critic(venv, seed, hidden), seed=seed, **agent_kwargs)
    elif agent_kwargs:
        raise TypeError(f"train_impala: IMPALAAgent settings {sorted(agent_kwargs)} given with a ready agent")
    return _train_rounds(agent, venv, total_steps, seed)
