"""PPO with curiosity (:mod:`lamina.rl.curiosity`): an intrinsic reward from RND (Burda et al.,
2019) or ICM (Pathak et al., 2017) beside the environment's reward, a second value head for it,
and the advantages of both streams combined,

    A = A_ext + c_int A_int,

A_ext by GAE over episodes, A_int by GAE over the whole stream (the intrinsic return does not
stop at episode ends: novelty is not a thing an episode's end takes away). The intrinsic
rewards are divided by a running std of their discounted return; RND's observations are
normalised by a running mean and std and clipped to [-5, 5]. The curiosity module learns on a
random ``update_proportion`` of each minibatch, with its own Adam."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy

from lamina import backend, optim
from lamina.autograd import Tensor, no_grad
from lamina.backend import manual_seed
from lamina.nn.init import orthogonal
from lamina.rl.curiosity import ICMModule, RewardNormalizer, RNDModule, RunningMeanStd, icm_losses
from lamina.rl.env import Env
from lamina.rl.networks import mlp, obs_tensor
from lamina.rl.ppo import PPO, ActorCritic, _vector_env, clipped_surrogate_loss, compute_gae, value_loss
from lamina.rl.spaces import Discrete, Space
from lamina.rl.vector import VectorEnv

__all__ = ["CuriosityActorCritic", "CuriosityPPO", "ICMPPOAgent", "RNDPPOAgent", "train_curiosity_ppo",
           "train_icm_ppo", "train_rnd_ppo"]


class CuriosityActorCritic(ActorCritic):
    """:class:`ActorCritic` with a second critic, V_int(s), for the intrinsic return."""

    def __init__(self, obs_dim: int, action_space: Space, hidden: Sequence[int] = (64, 64),
                 activation: str = "tanh", log_std_init: float = 0.0):
        super().__init__(obs_dim, action_space, hidden, activation, log_std_init)
        self.intrinsic_critic = mlp(obs_dim, hidden, 1, activation, orthogonal(math.sqrt(2)), orthogonal(1.0))
        for p in self.intrinsic_critic.parameters():
            p.data = backend.xp.ascontiguousarray(p.data)

    def intrinsic_value(self, obs: Tensor) -> Tensor:
        return self.intrinsic_critic(obs)[:, 0]


class CuriosityPPO(PPO):
    """PPO (:class:`PPO`'s settings) with a curiosity ``module``, an :class:`RNDModule` or an
    :class:`ICMModule`: rewards ``int_coef`` A_int beside A_ext, trains both value heads
    (``vf_coef`` times the sum of their losses) and the module (its own Adam at ``module_lr``,
    on a random ``update_proportion`` of each minibatch). ``gamma_int`` discounts the intrinsic
    stream."""

    algorithm = "curiosity_ppo"

    def __init__(self, policy: CuriosityActorCritic, module: RNDModule | ICMModule, int_coef: float = 1.0,
                 gamma_int: float = 0.99, update_proportion: float = 0.25, module_lr: float = 1e-3,
                 num_envs: int = 1, **ppo_kwargs):
        if not isinstance(policy, CuriosityActorCritic):
            raise TypeError(f"CuriosityPPO: needs a CuriosityActorCritic (two value heads), got "
                            f"{type(policy).__name__}")
        if not isinstance(module, (RNDModule, ICMModule)):
            raise TypeError(f"CuriosityPPO: module must be an RNDModule or an ICMModule, got {type(module).__name__}")
        if isinstance(module, ICMModule) and policy.continuous:
            raise ValueError("CuriosityPPO: ICMModule's inverse model needs discrete actions")
        if not 0.0 < update_proportion <= 1.0:
            raise ValueError(f"CuriosityPPO: update_proportion must lie in (0, 1], got {update_proportion}")
        super().__init__(policy, **ppo_kwargs)
        self.module, self.int_coef, self.gamma_int = module, int_coef, gamma_int
        self.update_proportion = update_proportion
        trained = module.predictor_parameters() if isinstance(module, RNDModule) else module.parameters()
        self.module_optimizer = optim.Adam(trained, lr=module_lr)
        self.obs_stats = RunningMeanStd((module.obs_dim,)) if isinstance(module, RNDModule) else None
        self.reward_normalizer = RewardNormalizer(num_envs, gamma_int)

    def state_dict(self) -> dict:
        """:meth:`PPO.state_dict` plus the module's weights, its optimizer and the normalisers."""
        state = super().state_dict()
        state["module"] = {name: numpy.array(value.numpy() if hasattr(value, "numpy") else value)
                           for name, value in self.module.state_dict().items()}
        state["module_optimizer"] = self.module_optimizer.state_dict()
        state["reward_stats"] = self.reward_normalizer.stats.state_dict()
        state["reward_returns"] = self.reward_normalizer.returns.copy()
        if self.obs_stats is not None:
            state["obs_stats"] = self.obs_stats.state_dict()
        return state

    def load_state_dict(self, state: dict) -> None:
        super().load_state_dict(state)
        self.module.load_state_dict(state["module"])
        self.module_optimizer.load_state_dict(state["module_optimizer"])
        self.reward_normalizer.stats.load_state_dict(state["reward_stats"])
        self.reward_normalizer.returns = numpy.array(state["reward_returns"])
        if self.obs_stats is not None:
            self.obs_stats.load_state_dict(state["obs_stats"])

    def _module_obs(self, obs) -> Tensor:
        if self.obs_stats is None:
            return obs_tensor(obs)
        return obs_tensor(self.obs_stats.normalize(obs, clip=5.0))

    def intrinsic_rewards(self, obs, actions, next_obs) -> numpy.ndarray:
        """The module's raw intrinsic reward of each transition (rows of a flat batch)."""
        with no_grad():
            if isinstance(self.module, RNDModule):
                return self.module(self._module_obs(next_obs)).numpy().astype(numpy.float64)
            return self.module.reward(obs_tensor(obs), obs_tensor(next_obs), actions).astype(numpy.float64)

    def collect(self, venv: VectorEnv, obs: numpy.ndarray) -> tuple[dict, numpy.ndarray]:
        """:meth:`PPO.collect`, plus the reached states (``next_obs``), the intrinsic values and
        rewards (``int_rewards``, normalised), and both advantages: ``advantages`` holds
        A_ext + c_int A_int, ``returns`` and ``int_returns`` the two value targets."""
        rollout = {key: [] for key in ("obs", "actions", "log_probs", "values", "int_values", "next_values",
                                       "next_int_values", "rewards", "terminated", "dones", "next_obs")}
        for _ in range(self.n_steps):
            with no_grad():
                observation = obs_tensor(obs)
                dist = self.policy.distribution(observation)
                actions = dist.sample()
                log_probs = dist.log_prob(actions)
                if self.policy.continuous:
                    log_probs = log_probs.sum(axis=-1)
                values, int_values = self.policy.value(observation), self.policy.intrinsic_value(observation)
            actions = actions.numpy()
            space = venv.single_action_space
            env_actions = numpy.clip(actions, space.low, space.high) if self.policy.continuous else actions
            next_obs, rewards, terminated, _, info = venv.step(env_actions)
            with no_grad():
                reached = obs_tensor(info["final_obs"])
                next_values, next_int_values = self.policy.value(reached).numpy(), \
                    self.policy.intrinsic_value(reached).numpy()
            for key, value in (("obs", obs), ("actions", actions), ("log_probs", log_probs.numpy()),
                               ("values", values.numpy()), ("int_values", int_values.numpy()),
                               ("next_values", next_values), ("next_int_values", next_int_values),
                               ("rewards", rewards), ("terminated", terminated), ("dones", info["done"]),
                               ("next_obs", numpy.asarray(info["final_obs"]))):
                rollout[key].append(value)
            obs = next_obs
        rollout = {key: numpy.stack(value) for key, value in rollout.items()}
        steps, n = rollout["rewards"].shape
        flat_next = rollout["next_obs"].reshape(steps * n, -1)
        if self.obs_stats is not None:
            self.obs_stats.update(flat_next)
        raw = self.intrinsic_rewards(rollout["obs"].reshape(steps * n, -1), rollout["actions"].reshape(-1),
                                     flat_next).reshape(steps, n)
        rollout["int_rewards"] = self.reward_normalizer(raw)
        ext_advantages, rollout["returns"] = compute_gae(
            rollout["rewards"], rollout["values"], rollout["next_values"], rollout["terminated"], rollout["dones"],
            self.gamma, self.gae_lambda)
        never = numpy.zeros((steps, n), dtype=bool)
        int_advantages, rollout["int_returns"] = compute_gae(
            rollout["int_rewards"], rollout["int_values"], rollout["next_int_values"], never, never,
            self.gamma_int, self.gae_lambda)
        rollout["advantages"] = ext_advantages + self.int_coef * int_advantages
        return rollout, obs

    def _step(self, flat: dict, index: numpy.ndarray) -> dict[str, float]:
        advantages = flat["advantages"][index]
        if self.normalize_advantages and len(index) > 1:
            advantages = (advantages - advantages.mean()) / (advantages.std() + 1e-8)
        obs = obs_tensor(flat["obs"][index])
        log_prob, entropy = self.policy.log_prob_entropy(obs, flat["actions"][index])
        policy_term = clipped_surrogate_loss(log_prob, flat["log_probs"][index], advantages, self.clip_range)
        ext_term = value_loss(self.policy.value(obs), flat["returns"][index], flat["values"][index],
                              self.clip_range_vf)
        int_term = value_loss(self.policy.intrinsic_value(obs), flat["int_returns"][index])
        entropy_term = entropy.mean()
        loss = policy_term + self.vf_coef * (ext_term + int_term) - self.ent_coef * entropy_term
        self.optimizer.zero_grad()
        loss.backward()
        if self.max_grad_norm is not None:
            optim.clip_grad_norm(self.policy, self.max_grad_norm)
        self.optimizer.step()
        parts = {"policy_loss": policy_term.item(), "value_loss": ext_term.item(),
                 "int_value_loss": int_term.item(), "entropy": entropy_term.item()}
        parts.update(self._module_step(flat, index))
        return parts

    def _module_step(self, flat: dict, index: numpy.ndarray) -> dict[str, float]:
        weights = (self.rng.random(len(index)) < self.update_proportion).astype(numpy.float64)
        if isinstance(self.module, RNDModule):
            errors = self.module(self._module_obs(flat["next_obs"][index]))
            loss = (errors * obs_tensor(weights)).sum() / max(float(weights.sum()), 1.0)
            parts = {"rnd_loss": loss.item()}
        else:
            logits, phi_hat, phi_next = self.module(flat["obs"][index], flat["next_obs"][index],
                                                    flat["actions"][index])
            loss, parts = icm_losses(logits, phi_hat, phi_next, flat["actions"][index], self.module.beta, weights)
        self.module_optimizer.zero_grad()
        loss.backward()
        self.module_optimizer.step()
        return parts


class RNDPPOAgent(CuriosityPPO):
    """:class:`CuriosityPPO` with Random Network Distillation; ``for_env`` builds it."""

    @classmethod
    def for_env(cls, venv: VectorEnv, seed: int | None = None, hidden: Sequence[int] = (64, 64),
                feature_dim: int = 32, module_hidden: Sequence[int] = (64,), **settings) -> RNDPPOAgent:
        obs_dim = venv.single_observation_space.shape[0]
        policy = CuriosityActorCritic(obs_dim, venv.single_action_space, hidden=hidden)
        return cls(policy, RNDModule(obs_dim, feature_dim, module_hidden), num_envs=venv.num_envs, seed=seed,
                   **settings)


class ICMPPOAgent(CuriosityPPO):
    """:class:`CuriosityPPO` with the Intrinsic Curiosity Module; ``for_env`` builds it."""

    @classmethod
    def for_env(cls, venv: VectorEnv, seed: int | None = None, hidden: Sequence[int] = (64, 64),
                feature_dim: int = 32, module_hidden: Sequence[int] = (64,), beta: float = 0.2, eta: float = 1.0,
                **settings) -> ICMPPOAgent:
        space = venv.single_action_space
        if not isinstance(space, Discrete):
            raise ValueError(f"ICMPPOAgent: ICM needs a Discrete action space, got {space}")
        obs_dim = venv.single_observation_space.shape[0]
        policy = CuriosityActorCritic(obs_dim, space, hidden=hidden)
        module = ICMModule(obs_dim, space.n, feature_dim, module_hidden, beta=beta, eta=eta)
        return cls(policy, module, num_envs=venv.num_envs, seed=seed, **settings)


def train_curiosity_ppo(agent_class: type[CuriosityPPO], env: str | Env | Callable[[], Env] | VectorEnv,
                        total_steps: int = 50000, num_envs: int = 4, agent: CuriosityPPO | None = None,
                        seed: int | None = None, on_rollout: Callable[[dict], None] | None = None,
                        **settings) -> list[float]:
    """Train ``agent`` (default ``agent_class.for_env(venv, seed=seed, **settings)``) on
    ``num_envs`` copies of ``env`` for about ``total_steps`` steps; ``on_rollout(rollout)`` sees
    every rollout (to count the states visited, say). Returns every finished episode's
    extrinsic return."""
    venv = _vector_env(env, num_envs)
    if agent is None:
        if seed is not None:
            manual_seed(seed)
        agent = agent_class.for_env(venv, seed=seed, **settings)
    elif settings:
        raise TypeError(f"train_curiosity_ppo: agent settings {sorted(settings)} given with a ready agent")
    if len(agent.reward_normalizer.returns) != venv.num_envs:
        raise ValueError(f"train_curiosity_ppo: the agent was built for {len(agent.reward_normalizer.returns)} "
                         f"environments, the vector has {venv.num_envs}")
    obs, _ = venv.reset(seed=seed)
    running = numpy.zeros(venv.num_envs)
    returns: list[float] = []
    for _ in range(max(1, total_steps // (agent.n_steps * venv.num_envs))):
        rollout, obs = agent.collect(venv, obs)
        if on_rollout is not None:
            on_rollout(rollout)
        for rewards, dones in zip(rollout["rewards"], rollout["dones"]):
            running += rewards
            returns.extend(running[dones].tolist())
            running[dones] = 0.0
        agent.update(rollout)
    return returns


def train_rnd_ppo(env, total_steps: int = 50000, num_envs: int = 4, agent: RNDPPOAgent | None = None,
                  seed: int | None = None, **settings) -> list[float]:
    """:func:`train_curiosity_ppo` with :class:`RNDPPOAgent`."""
    return train_curiosity_ppo(RNDPPOAgent, env, total_steps, num_envs, agent, seed, **settings)


def train_icm_ppo(env, total_steps: int = 50000, num_envs: int = 4, agent: ICMPPOAgent | None = None,
                  seed: int | None = None, **settings) -> list[float]:
    """:func:`train_curiosity_ppo` with :class:`ICMPPOAgent`."""
    return train_curiosity_ppo(ICMPPOAgent, env, total_steps, num_envs, agent, seed, **settings)
