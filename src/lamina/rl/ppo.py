"""Proximal policy optimization (Schulman et al., 2017) with generalized advantage estimation
(Schulman et al., 2016), for discrete (categorical) and continuous (diagonal normal) actions."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy

from lamina import backend, optim
from lamina.autograd import Tensor, no_grad, tensor
from lamina.backend import get_default_dtype, get_rng_state, manual_seed, set_rng_state, to_numpy
from lamina.distributions import Categorical, Distribution, Normal
from lamina.functional import clip, exp, maximum, mean, minimum
from lamina.nn import Module
from lamina.nn.init import orthogonal
from lamina.rl.env import Env
from lamina.rl.networks import mlp, obs_tensor
from lamina.rl.spaces import Box, Discrete, Space, seeded_generator
from lamina.rl.vector import VectorEnv


class ActorCritic(Module):
    """A policy pi(a | s) and a state value V(s) in two separate networks (tanh hidden layers,
    orthogonal weights). Discrete actions: pi = Categorical(logits); continuous actions:
    pi = N(mu(s), diag(exp(log_std))^2) with a learned, state-independent ``log_std``."""

    def __init__(self, obs_dim: int, action_space: Space, hidden: Sequence[int] = (64, 64),
                 activation: str = "tanh", log_std_init: float = 0.0):
        super().__init__()
        if isinstance(action_space, Discrete):
            self.continuous, n_out = False, action_space.n
        elif isinstance(action_space, Box) and len(action_space.shape) == 1:
            self.continuous, n_out = True, action_space.shape[0]
        else:
            raise ValueError(f"ActorCritic: needs a Discrete or a flat Box action space, got {action_space}")
        self.action_space = action_space
        self.actor = mlp(obs_dim, hidden, n_out, activation, orthogonal(math.sqrt(2)), orthogonal(0.01))
        self.critic = mlp(obs_dim, hidden, 1, activation, orthogonal(math.sqrt(2)), orthogonal(1.0))
        if self.continuous:
            self.add_parameter("log_std", numpy.full(n_out, log_std_init, dtype=get_default_dtype()))
        for p in self.parameters():     # orthogonal weights come column-major; a loaded state is row-major,
            p.data = backend.xp.ascontiguousarray(p.data)   # and products must round alike in both
        self.built = True

    def distribution(self, obs: Tensor) -> Distribution:
        out = self.actor(obs)
        if not self.continuous:
            return Categorical(logits=out)
        return Normal(out, exp(self.log_std), validate_args=False)

    def log_prob_entropy(self, obs: Tensor, actions) -> tuple[Tensor, Tensor]:
        """log pi(a | s) and the entropy of pi(. | s), one value per row (summed over the action
        axes of a continuous policy)."""
        dist = self.distribution(obs)
        log_prob, entropy = dist.log_prob(tensor(actions)), dist.entropy()
        if self.continuous:
            return log_prob.sum(axis=-1), entropy.sum(axis=-1)
        return log_prob, entropy

    def value(self, obs: Tensor) -> Tensor:
        return self.critic(obs)[:, 0]

    def forward(self, obs: Tensor) -> tuple[Distribution, Tensor]:
        return self.distribution(obs), self.value(obs)


def compute_gae(rewards, values, next_values, terminated, dones, gamma: float = 0.99,
                lam: float = 0.95) -> tuple[numpy.ndarray, numpy.ndarray]:
    """Generalized advantage estimates over a rollout of shape (T, n_envs):

        delta_t = r_t + gamma (1 - terminated_t) V(s_{t+1}) - V(s_t)
        A_t = delta_t + gamma lambda (1 - done_t) A_{t+1}

    ``next_values[t]`` is V of the state reached by step t (the episode's last state when it
    ended there), ``done_t`` marks steps that ended an episode (terminated or truncated: a
    truncated step still bootstraps from its last state) and A after the rollout is 0.
    Returns (advantages, returns = advantages + values)."""
    rewards, values, next_values = (numpy.asarray(a, dtype=numpy.float64) for a in (rewards, values, next_values))
    not_terminal = 1.0 - numpy.asarray(terminated, dtype=numpy.float64)
    continues = 1.0 - numpy.asarray(dones, dtype=numpy.float64)
    if not rewards.shape == values.shape == next_values.shape == not_terminal.shape == continues.shape:
        raise ValueError(f"compute_gae: rewards, values, next_values, terminated and dones must have one shape, got "
                         f"{[numpy.shape(a) for a in (rewards, values, next_values, terminated, dones)]}")
    deltas = rewards + gamma * not_terminal * next_values - values
    advantages = numpy.zeros_like(deltas)
    running = numpy.zeros(deltas.shape[1:])
    for t in reversed(range(len(deltas))):
        running = deltas[t] + gamma * lam * continues[t] * running
        advantages[t] = running
    return advantages, advantages + values


def clipped_surrogate_loss(log_prob: Tensor, old_log_prob, advantages, clip_range: float) -> Tensor:
    """-mean(min(rho A, clip(rho, 1 - eps, 1 + eps) A)) with rho = exp(log pi - log pi_old)."""
    ratio = exp(log_prob - tensor(old_log_prob, dtype=log_prob.dtype))
    advantages = tensor(advantages, dtype=log_prob.dtype)
    return -mean(minimum(ratio * advantages, clip(ratio, 1.0 - clip_range, 1.0 + clip_range) * advantages))


def value_loss(values: Tensor, returns, old_values=None, clip_range: float | None = None) -> Tensor:
    """1/2 mean((V - R)^2); with ``clip_range`` and ``old_values``, the pessimistic clipped form
    1/2 mean(max((V - R)^2, (V_old + clip(V - V_old, -eps, eps) - R)^2))."""
    returns = tensor(returns, dtype=values.dtype)
    squared = (values - returns) ** 2
    if clip_range is not None:
        if old_values is None:
            raise ValueError("value_loss: clip_range needs old_values")
        old_values = tensor(old_values, dtype=values.dtype)
        clipped = old_values + clip(values - old_values, -clip_range, clip_range)
        squared = maximum(squared, (clipped - returns) ** 2)
    return 0.5 * mean(squared)


def ppo_loss(log_prob: Tensor, entropy: Tensor, values: Tensor, old_log_prob, advantages, returns,
             clip_range: float = 0.2, vf_coef: float = 0.5, ent_coef: float = 0.0, old_values=None,
             clip_range_vf: float | None = None) -> tuple[Tensor, dict[str, float]]:
    """L = surrogate + vf_coef value_loss - ent_coef mean(entropy); returns L and its parts."""
    policy_term = clipped_surrogate_loss(log_prob, old_log_prob, advantages, clip_range)
    value_term = value_loss(values, returns, old_values, clip_range_vf)
    entropy_term = mean(entropy)
    total = policy_term + vf_coef * value_term - ent_coef * entropy_term
    return total, {"policy_loss": policy_term.item(), "value_loss": value_term.item(),
                   "entropy": entropy_term.item()}


class PPO:
    """Collects ``n_steps`` steps from each of a vector of environments, estimates advantages by
    GAE(lambda), then runs ``n_epochs`` passes of shuffled minibatches of the clipped PPO loss
    (Adam, eps 1e-5, gradient norm clipped to ``max_grad_norm``; advantages normalized per
    minibatch when ``normalize_advantages``)."""

    algorithm = "ppo"

    def __init__(self, policy: ActorCritic, lr: float = 3e-4, n_steps: int = 128, n_epochs: int = 4,
                 minibatch_size: int = 64, gamma: float = 0.99, gae_lambda: float = 0.95, clip_range: float = 0.2,
                 vf_coef: float = 0.5, ent_coef: float = 0.0, max_grad_norm: float | None = 0.5,
                 normalize_advantages: bool = True, clip_range_vf: float | None = None, seed: int | None = None):
        self.policy = policy
        self.optimizer = optim.Adam(policy.parameters(), lr=lr, eps=1e-5)
        self.n_steps, self.n_epochs, self.minibatch_size = n_steps, n_epochs, minibatch_size
        self.gamma, self.gae_lambda, self.clip_range, self.clip_range_vf = gamma, gae_lambda, clip_range, clip_range_vf
        self.vf_coef, self.ent_coef, self.max_grad_norm = vf_coef, ent_coef, max_grad_norm
        self.normalize_advantages = normalize_advantages
        self.rng = seeded_generator(seed)

    def state_dict(self) -> dict:
        """Everything that changes while training, for :meth:`load_state_dict`: the actor-critic's
        weights, the optimizer's state and learning rate, the minibatch shuffling generator's state
        and lamina's global generator's state (actions are drawn from it). Holds only dicts,
        lists, numbers, strings and arrays (copies)."""
        return {"algorithm": self.algorithm,
                "policy": {name: numpy.array(to_numpy(value)) for name, value in self.policy.state_dict().items()},
                "optimizer": self.optimizer.state_dict(), "lr": self.optimizer.lr,
                "rng": self.rng.bit_generator.state, "global_rng": get_rng_state()}

    def load_state_dict(self, state: dict) -> None:
        """Restore a :meth:`state_dict` into a PPO built with the same settings; this also sets
        lamina's global generator (see :func:`lamina.manual_seed`) to the saved state."""
        if state.get("algorithm") != self.algorithm:
            raise ValueError(f"{type(self).__name__}.load_state_dict: the state is from {state.get('algorithm')!r}, "
                             f"not {self.algorithm!r}")
        self.policy.load_state_dict(state["policy"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.optimizer.lr = state["lr"]
        self.rng.bit_generator.state = state["rng"]
        set_rng_state(state["global_rng"])

    def predict(self, obs, deterministic: bool = True):
        """The action for one observation: the mode of pi (``deterministic``) or a draw from it;
        continuous actions are clipped to the action space."""
        with no_grad():
            dist = self.policy.distribution(obs_tensor(obs)[None])
            if not self.policy.continuous:
                return int(dist.logits.numpy()[0].argmax() if deterministic else dist.sample().numpy()[0])
            action = (dist.mean if deterministic else dist.sample()).numpy()[0]
        return numpy.clip(action, self.policy.action_space.low, self.policy.action_space.high)

    def collect(self, venv: VectorEnv, obs: numpy.ndarray) -> tuple[dict, numpy.ndarray]:
        """Run the policy ``n_steps`` steps in ``venv`` from ``obs``; returns the rollout (arrays
        of shape (n_steps, n_envs, ...), advantages and returns included) and the last
        observations. Continuous actions are clipped to the action space for the environment
        only; the rollout keeps the drawn ones (their log-probabilities are those of the draw)."""
        rollout = {key: [] for key in ("obs", "actions", "log_probs", "values", "next_values", "rewards",
                                       "terminated", "dones")}
        space = venv.single_action_space
        for _ in range(self.n_steps):
            with no_grad():
                dist, values = self.policy(obs_tensor(obs))
            actions, log_probs, env_actions = _draw_actions(dist, self.policy.continuous, space)
            next_obs, rewards, terminated, truncated, info = venv.step(env_actions)
            with no_grad():
                next_values = self.policy.value(obs_tensor(info["final_obs"])).numpy()
            for key, value in (("obs", obs), ("actions", actions), ("log_probs", log_probs),
                               ("values", values.numpy()), ("next_values", next_values), ("rewards", rewards),
                               ("terminated", terminated), ("dones", info["done"])):
                rollout[key].append(value)
            obs = next_obs
        rollout = {key: numpy.stack(value) for key, value in rollout.items()}
        rollout["advantages"], rollout["returns"] = compute_gae(
            rollout["rewards"], rollout["values"], rollout["next_values"], rollout["terminated"], rollout["dones"],
            self.gamma, self.gae_lambda)
        return rollout, obs

    def update(self, rollout: dict) -> dict[str, float]:
        """The PPO epochs on one rollout; returns the mean loss parts of the last epoch."""
        flat = {key: value.reshape(-1, *value.shape[2:]) for key, value in rollout.items()}
        size = len(flat["obs"])
        stats: dict[str, list[float]] = {}
        for _ in range(self.n_epochs):
            stats = {}
            order = self.rng.permutation(size)
            for start in range(0, size, self.minibatch_size):
                index = order[start:start + self.minibatch_size]
                for key, value in self._step(flat, index).items():
                    stats.setdefault(key, []).append(value)
        return {key: float(numpy.mean(values)) for key, values in stats.items()}

    def _step(self, flat: dict, index: numpy.ndarray) -> dict[str, float]:
        advantages = flat["advantages"][index]
        if self.normalize_advantages and len(index) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        obs = obs_tensor(flat["obs"][index])
        log_prob, entropy = self.policy.log_prob_entropy(obs, flat["actions"][index])
        loss, parts = ppo_loss(log_prob, entropy, self.policy.value(obs), flat["log_probs"][index], advantages,
                               flat["returns"][index], self.clip_range, self.vf_coef, self.ent_coef,
                               flat["values"][index], self.clip_range_vf)
        self.optimizer.zero_grad()
        loss.backward()
        if self.max_grad_norm is not None:
            optim.clip_grad_norm(self.policy, self.max_grad_norm)
        self.optimizer.step()
        return parts



def _draw_actions(dist: Distribution, continuous: bool, space: Space) -> tuple[numpy.ndarray, ...]:
    """Actions drawn from ``dist``, their log-probabilities (summed over the action axes of a
    continuous policy), both without gradients, and the actions the environments take (clipped
    to ``space`` when continuous; the drawn ones are kept for learning)."""
    with no_grad():
        actions = dist.sample()
        log_probs = dist.log_prob(actions)
        if continuous:
            log_probs = log_probs.sum(axis=-1)
    actions = actions.numpy()
    return actions, log_probs.numpy(), numpy.clip(actions, space.low, space.high) if continuous else actions


def _vector_env(env, num_envs: int) -> VectorEnv:
    if isinstance(env, VectorEnv):
        return env
    if isinstance(env, str):
        from lamina.rl.registry import make
        return VectorEnv([lambda: make(env)] * num_envs)
    if isinstance(env, Env):
        if num_envs != 1:
            raise ValueError("train_ppo: give an environment id or constructor (not one Env) to run several copies")
        return VectorEnv([lambda: env])
    if callable(env):
        return VectorEnv([env] * num_envs)
    raise TypeError(f"train_ppo: env must be an id, an Env, a constructor or a VectorEnv, got {type(env).__name__}")


def train_ppo(env: str | Env | Callable[[], Env] | VectorEnv, total_steps: int = 50000, num_envs: int = 4,
              ppo: PPO | None = None, seed: int | None = None, hidden: Sequence[int] = (64, 64),
              **ppo_kwargs) -> list[float]:
    """Train with PPO on ``num_envs`` copies of ``env`` (an id, a constructor, one Env when
    ``num_envs`` is 1, or a ready VectorEnv) for about ``total_steps`` environment steps in all.
    ``ppo`` defaults to ``PPO(ActorCritic(...), seed=seed, **ppo_kwargs)``. Returns the return of
    every finished episode, in the order they finished."""
    venv = _vector_env(env, num_envs)
    if ppo is None:
        ppo = PPO(_seeded_actor_critic(venv, seed, hidden), seed=seed, **ppo_kwargs)
    elif ppo_kwargs:
        raise TypeError(f"train_ppo: PPO settings {sorted(ppo_kwargs)} given with a ready PPO")
    return _train_rounds(ppo, venv, total_steps, seed)


def _seeded_actor_critic(venv: VectorEnv, seed: int | None, hidden: Sequence[int]) -> ActorCritic:
    """An ActorCritic for ``venv``'s spaces, its weights drawn after seeding with ``seed`` (if given)."""
    if seed is not None:
        manual_seed(seed)
    return ActorCritic(venv.single_observation_space.shape[0], venv.single_action_space, hidden=hidden)


def _train_rounds(agent, venv: VectorEnv, total_steps: int, seed: int | None) -> list[float]:
    """Rounds of ``agent.collect`` (``agent.n_steps`` steps of every environment of ``venv``,
    reset with ``seed``) and ``agent.update`` for about ``total_steps`` environment steps in
    all; the return of every finished episode, in the order they finished."""
    obs, _ = venv.reset(seed=seed)
    running = numpy.zeros(venv.num_envs)
    returns: list[float] = []
    for _ in range(max(1, total_steps // (agent.n_steps * venv.num_envs))):
        batch, obs = agent.collect(venv, obs)
        for rewards, dones in zip(batch["rewards"], batch["dones"]):
            running += rewards
            returns.extend(running[dones].tolist())
            running[dones] = 0.0
        agent.update(batch)
    return returns
