"""Dreamer (Hafner et al., 2020, "Dream to Control"): behaviour learned in the latent imagination
of a recurrent state-space world model.

World model: the :class:`RSSM` (:mod:`lamina.rl.model_based.rssm`) with a reward head r(h, s) and,
for episodic tasks, a continuation head c(h, s) (the logit of "the episode goes on"), trained on
replayed sequences by the ELBO-style loss, averaged over batch and time::

    L_model = 1/2 |o - g(h, s)|^2 + 1/2 (r - r(h, s))^2 + BCE(c, c(h, s)) + beta max(F, KL(q || p))

Behaviour: from the posterior states of a training batch (no gradient into the model), the actor
a ~ pi(h, s) drives H steps of the prior; with predicted rewards r_t, critic values v_t and
discounts d_t = gamma sigmoid(c_t) (gamma without a continuation head) the lambda-returns are::

    V_t = r_t + d_t ((1 - lambda) v_{t+1} + lambda V_{t+1}),     V_{H-1} = r_{H-1} + d_{H-1} v_H

The actor maximises the discounted mean of V_t, its gradient flowing back through the learned
dynamics and rewards (a reparameterised tanh-Gaussian for Box actions, a straight-through
one-hot sample for Discrete ones); the critic regresses v(sg(h, s)) onto sg(V_t). The world model
is frozen during both behaviour updates."""

from __future__ import annotations

from collections.abc import Sequence

import numpy

from lamina import optim
from lamina.autograd import Tensor, no_grad, tensor
from lamina.backend import get_default_dtype
from lamina.errors import ShapeError
from lamina.functional import concat, maximum, sigmoid, softmax, softplus, stack, tanh
from lamina.functional import mean as mean_of
from lamina.functional import sum as sum_of
from lamina.nn import Module
from lamina.rl.env import Env
from lamina.rl.model_based.rssm import RSSM, diagonal_gaussian_kl
from lamina.rl.networks import mlp
from lamina.rl.off_policy import frozen
from lamina.rl.spaces import Box, Discrete, seeded_generator


def lambda_returns(rewards: Tensor, values: Tensor, discounts: Tensor, bootstrap: Tensor, lam: float = 0.95
                   ) -> Tensor:
    """TD(lambda) returns of (batch, H) rewards r_t, values v_t and discounts d_t, with
    ``bootstrap`` (batch,) the value v_H of the state after the last step::

        V_t = r_t + d_t ((1 - lambda) v_{t+1} + lambda V_{t+1}),   V_H = v_H

    Works on tensors so that gradients reach the rewards and values."""
    if not 0.0 <= lam <= 1.0:
        raise ValueError(f"lambda_returns: lam must be in [0, 1], got {lam!r}")
    if rewards.ndim != 2 or values.shape != rewards.shape or discounts.shape != rewards.shape:
        raise ShapeError(f"lambda_returns: rewards, values and discounts must share one (batch, H) shape, got "
                         f"{rewards.shape}, {values.shape} and {discounts.shape}")
    if bootstrap.shape != rewards.shape[:1]:
        raise ShapeError(f"lambda_returns: bootstrap must have shape {rewards.shape[:1]}, got {bootstrap.shape}")
    horizon = rewards.shape[1]
    following, returns = bootstrap, [None] * horizon
    for t in reversed(range(horizon)):
        next_value = values[:, t + 1] if t + 1 < horizon else bootstrap
        following = rewards[:, t] + discounts[:, t] * ((1.0 - lam) * next_value + lam * following)
        returns[t] = following
    return stack(returns, axis=1)


def dreamer_model_loss(decoded: Tensor, observations: Tensor, predicted_rewards: Tensor, rewards: Tensor,
                       post_mean: Tensor, post_std: Tensor, prior_mean: Tensor, prior_std: Tensor,
                       continue_logits: Tensor | None = None, continues: Tensor | None = None,
                       free_nats: float = 3.0, kl_scale: float = 1.0, with_stats: bool = False):
    """The world-model loss of the module docstring from the model's outputs on (batch, T)
    sequences: decoded and true observations (batch, T, obs_dim), predicted and true rewards
    (batch, T), the posterior and prior Gaussians (batch, T, stoch_dim), and optionally the
    continuation logits and 0/1 targets (batch, T). Every term is averaged over batch and time
    (the KL before the free-nats floor). With ``with_stats`` returns (loss, floats)."""
    diff = decoded - observations
    reconstruction = mean_of(0.5 * sum_of(diff * diff, axis=-1))
    reward_error = predicted_rewards - rewards
    reward_loss = mean_of(0.5 * reward_error * reward_error)
    kl = mean_of(diagonal_gaussian_kl(post_mean, post_std, prior_mean, prior_std))
    total = reconstruction + reward_loss + kl_scale * maximum(kl, free_nats)
    stats = {"reconstruction": reconstruction.item(), "reward": reward_loss.item(), "kl": kl.item()}
    if continue_logits is not None:
        if continues is None:
            raise ValueError("dreamer_model_loss: continue_logits were given without continues targets")
        continue_loss = mean_of(softplus(continue_logits) - continues * continue_logits)
        total = total + continue_loss
        stats["continue"] = continue_loss.item()
    return (total, stats) if with_stats else total


class DreamerWorldModel(Module):
    """An :class:`RSSM` with a reward head and (``episodic=True``) a continuation head on the
    features [h, s]. Sequences use RSSM's layout: ``actions[:, t]`` and ``rewards[:, t]`` belong to
    the step that led to ``observations[:, t]`` (zero at t = 0); ``continues[:, t]`` is 0 where
    ``observations[:, t]`` is terminal, else 1."""

    def __init__(self, obs_dim: int, act_dim: int, deter_dim: int = 32, stoch_dim: int = 8, hidden: int = 32,
                 episodic: bool = False, min_std: float = 0.1, seed: int | None = None):
        super().__init__()
        self.rssm = RSSM(obs_dim, act_dim, deter_dim=deter_dim, stoch_dim=stoch_dim, hidden=hidden,
                         embed_dim=hidden, min_std=min_std, seed=seed)
        self.feature_dim = deter_dim + stoch_dim
        self.reward_head = mlp(self.feature_dim, [hidden], 1, activation="elu")
        self.episodic = bool(episodic)
        self.continue_head = mlp(self.feature_dim, [hidden], 1, activation="elu") if episodic else None
        self.built = True

    def features(self, h: Tensor, s: Tensor) -> Tensor:
        """[h, s] flattened to (n, deter_dim + stoch_dim)."""
        return concat([h.reshape(-1, self.rssm.deter_dim), s.reshape(-1, self.rssm.stoch_dim)], axis=1)

    def reward(self, h: Tensor, s: Tensor) -> Tensor:
        """The predicted reward of latent states (..., deter_dim), (..., stoch_dim): shape (...)."""
        return self.reward_head(self.features(h, s)).reshape(*h.shape[:-1])

    def continue_logit(self, h: Tensor, s: Tensor) -> Tensor | None:
        """The logit of "the episode goes on" (None without a continuation head)."""
        if self.continue_head is None:
            return None
        return self.continue_head(self.features(h, s)).reshape(*h.shape[:-1])

    def loss(self, observations, actions, rewards, continues=None, free_nats: float = 3.0, kl_scale: float = 1.0,
             noise=None) -> tuple[Tensor, dict[str, float], dict[str, Tensor]]:
        """The model loss of the module docstring on (batch, T, ...) sequences; returns (loss,
        floats, the posterior states of :meth:`RSSM.observe`)."""
        actions, observations = self.rssm._check("loss", actions, observations)
        rewards = tensor(numpy.asarray(rewards, dtype=observations.dtype))
        if rewards.shape != actions.shape[:2]:
            raise ShapeError(f"DreamerWorldModel.loss: rewards must have shape {actions.shape[:2]}, "
                             f"got {rewards.shape}")
        states = self.rssm.observe(observations, actions, noise=noise)
        decoded = self.rssm.decode(states["h"], states["s"])
        predicted = self.reward(states["h"], states["s"])
        logits = targets = None
        if self.continue_head is not None:
            targets = numpy.ones(actions.shape[:2]) if continues is None else numpy.asarray(continues)
            targets = tensor(targets.astype(observations.dtype))
            logits = self.continue_logit(states["h"], states["s"])
        total, stats = dreamer_model_loss(decoded, observations, predicted, rewards, states["post_mean"],
                                          states["post_std"], states["prior_mean"], states["prior_std"], logits,
                                          targets, free_nats=free_nats, kl_scale=kl_scale, with_stats=True)
        return total, stats, states


class DreamerActor(Module):
    """pi(a | h, s): for a Box a tanh-squashed Gaussian in [-1, 1]^d (std = softplus(raw + 0.54) +
    min_std, so that raw = 0 gives std ~ 1 + min_std), for a Discrete a categorical whose sample is
    a straight-through one-hot (the one-hot forwards, the probabilities' gradient backwards)."""

    def __init__(self, feature_dim: int, act_dim: int, discrete: bool = False, hidden: Sequence[int] = (64, 64),
                 min_std: float = 1e-4):
        super().__init__()
        self.act_dim, self.discrete, self.min_std = act_dim, bool(discrete), float(min_std)
        self.net = mlp(feature_dim, list(hidden), act_dim if discrete else 2 * act_dim, activation="elu")
        self.built = True

    def forward(self, features: Tensor, noise=None, deterministic: bool = False) -> Tensor:
        """An action for each row of features; ``noise`` is N(0, 1) of shape (n, act_dim) for a
        Box, U(0, 1) of shape (n,) for a Discrete."""
        raw = self.net(features)
        if self.discrete:
            probs = softmax(raw, axis=-1)
            p = probs.numpy().astype(numpy.float64)
            if deterministic:
                index = p.argmax(axis=-1)
            else:
                cumulative = numpy.cumsum(p, axis=-1)
                index = numpy.minimum((cumulative < numpy.asarray(noise)[:, None]).sum(axis=-1), self.act_dim - 1)
            sample = tensor(numpy.eye(self.act_dim)[index].astype(p.dtype), dtype=probs.dtype)
            return sample + probs - probs.detach()
        mean = 5.0 * tanh(raw[:, :self.act_dim] / 5.0)
        if deterministic:
            return tanh(mean)
        std = softplus(raw[:, self.act_dim:] + 0.54) + self.min_std
        return tanh(mean + std * tensor(numpy.asarray(noise), dtype=mean.dtype))


class DreamerAgent:
    """The Dreamer agent: a :class:`DreamerWorldModel`, a :class:`DreamerActor` and a critic
    v(h, s), each with its Adam optimizer (DreamerV1's learning rates by default). Box actions are
    handled in [-1, 1] and rescaled to the space's bounds; Discrete ones as one-hot vectors.

    ``act(obs, state)`` filters with the posterior: state is (h, s, previous action) or None at an
    episode's start, and it returns (env action, new state)."""

    def __init__(self, obs_dim: int, action_space: Box | Discrete, deter_dim: int = 32, stoch_dim: int = 8,
                 hidden: int = 32, actor_hidden: Sequence[int] = (64, 64), horizon: int = 10, gamma: float = 0.99,
                 lam: float = 0.95, model_lr: float = 6e-4, actor_lr: float = 8e-5, critic_lr: float = 8e-5,
                 free_nats: float = 3.0, episodic: bool = False, exploration_noise: float = 0.3,
                 grad_clip: float = 100.0, seed: int | None = None):
        if not isinstance(action_space, (Box, Discrete)):
            raise TypeError(f"DreamerAgent: action_space must be a Box or Discrete, got {type(action_space).__name__}")
        if horizon < 2:
            raise ValueError(f"DreamerAgent: horizon must be >= 2, got {horizon!r}")
        self.action_space, self.discrete = action_space, isinstance(action_space, Discrete)
        self.act_dim = int(action_space.n) if self.discrete else int(numpy.prod(action_space.shape))
        self.horizon, self.gamma, self.lam, self.free_nats = int(horizon), float(gamma), float(lam), float(free_nats)
        self.exploration_noise, self.grad_clip = float(exploration_noise), float(grad_clip)
        self.rng = seeded_generator(seed)
        self.world_model = DreamerWorldModel(obs_dim, self.act_dim, deter_dim, stoch_dim, hidden, episodic=episodic,
                                             seed=None if seed is None else seed + 1)
        feature_dim = self.world_model.feature_dim
        self.actor = DreamerActor(feature_dim, self.act_dim, discrete=self.discrete, hidden=actor_hidden)
        self.critic = mlp(feature_dim, list(actor_hidden), 1, activation="elu")
        self.model_optimizer = optim.Adam(self.world_model.parameters(), lr=model_lr)
        self.actor_optimizer = optim.Adam(self.actor.parameters(), lr=actor_lr)
        self.critic_optimizer = optim.Adam(self.critic.parameters(), lr=critic_lr)

    def _actor_noise(self, n: int):
        return self.rng.uniform(size=n) if self.discrete else self.rng.standard_normal((n, self.act_dim))

    def env_action(self, action: numpy.ndarray):
        """The environment's action for one model action (a one-hot, or a point of [-1, 1]^d)."""
        if self.discrete:
            return int(numpy.argmax(action))
        low, high = self.action_space.low.astype(numpy.float64), self.action_space.high.astype(numpy.float64)
        scaled = low + (numpy.clip(action, -1.0, 1.0) + 1.0) * 0.5 * (high - low)
        return scaled.reshape(self.action_space.shape).astype(self.action_space.dtype)

    def model_action(self, env_action) -> numpy.ndarray:
        """The model's action vector of an environment action (the inverse of :meth:`env_action`)."""
        if self.discrete:
            return numpy.eye(self.act_dim)[int(env_action)]
        low, high = self.action_space.low.astype(numpy.float64), self.action_space.high.astype(numpy.float64)
        return (2.0 * (numpy.asarray(env_action, dtype=numpy.float64).reshape(-1) - low) / (high - low) - 1.0)

    def act(self, obs, state=None, explore: bool = False):
        """(env action, new state) for one observation: the policy's mode, or with ``explore`` the
        mode plus N(0, exploration_noise^2) noise (Box) or a sampled action (Discrete)."""
        rssm = self.world_model.rssm
        dtype = get_default_dtype()
        with no_grad():
            if state is None:
                h, s = rssm.initial_state(1)
                previous = tensor(numpy.zeros((1, self.act_dim), dtype=dtype))
            else:
                h, s, previous = state
            h, _, _ = rssm.prior_step(h, s, previous)
            embedded = rssm.encoder(tensor(numpy.asarray(obs, dtype=dtype).reshape(1, -1)))
            mean, _ = rssm._gaussian(rssm.posterior_net(concat([h, embedded], axis=1)))
            s = mean
            features = self.world_model.features(h, s)
            deterministic = not (explore and self.discrete)
            action = self.actor(features, noise=self._actor_noise(1), deterministic=deterministic).numpy()[0]
        action = action.astype(numpy.float64)
        if explore and not self.discrete:
            action = numpy.clip(action + self.exploration_noise * self.rng.standard_normal(action.shape), -1.0, 1.0)
        new_state = (h, s, tensor(action.reshape(1, -1).astype(dtype)))
        return self.env_action(action), new_state

    def imagine(self, h: Tensor, s: Tensor) -> tuple[Tensor, Tensor]:
        """H steps of the prior driven by the actor from (n, ...) start states: the imagined
        features (n, H, feature_dim) and actions (n, H, act_dim)."""
        rssm = self.world_model.rssm
        features, actions = [], []
        for _ in range(self.horizon):
            action = self.actor(self.world_model.features(h, s), noise=self._actor_noise(h.shape[0]))
            h, mean, std = rssm.prior_step(h, s, action)
            s = rssm._draw(mean, std, None)
            features.append(self.world_model.features(h, s))
            actions.append(action)
        return stack(features, axis=1), stack(actions, axis=1)

    def behaviour_losses(self, h: Tensor, s: Tensor) -> tuple[Tensor, Tensor, dict[str, float]]:
        """(actor loss, critic loss, floats) from start states (n, deter_dim), (n, stoch_dim),
        detached here; the world model and the critic get no gradient from the actor loss."""
        model = self.world_model
        with frozen(model, self.critic):
            features, _ = self.imagine(h.detach(), s.detach())
            n, horizon, width = features.shape
            flat = features.reshape(n * horizon, width)
            rewards = model.reward_head(flat).reshape(n, horizon)
            values = self.critic(flat).reshape(n, horizon)
            if model.continue_head is not None:
                discounts = self.gamma * sigmoid(model.continue_head(flat)).reshape(n, horizon)
            else:
                discounts = tensor(numpy.full((n, horizon), self.gamma, dtype=features.dtype))
        returns = lambda_returns(rewards[:, :-1], values[:, :-1], discounts[:, :-1], values[:, -1], self.lam)
        # weight of step t: the probability of reaching it, prod_{k < t} d_k / gamma
        reach = numpy.concatenate([numpy.ones((n, 1)), numpy.cumprod(discounts.numpy()[:, :-2], axis=1)], axis=1)
        weight = tensor((reach / self.gamma ** numpy.arange(horizon - 1)).astype(features.dtype))
        actor_loss = -mean_of(weight * returns)
        predicted = self.critic(flat.detach()).reshape(n, horizon)[:, :-1]
        error = predicted - returns.detach()
        critic_loss = mean_of(weight * 0.5 * error * error)
        stats = {"actor_loss": actor_loss.item(), "critic_loss": critic_loss.item(),
                 "imagined_return": float(returns.numpy()[:, 0].mean())}
        return actor_loss, critic_loss, stats

    def _step(self, optimizer: optim.Optimizer, loss: Tensor, module: Module) -> None:
        optimizer.zero_grad()
        loss.backward()
        grads = [p.grad for p in module.parameters() if p.grad is not None]
        norm = float(numpy.sqrt(sum(float(numpy.sum(g.astype(numpy.float64) ** 2)) for g in grads)))
        if norm > self.grad_clip:
            for g in grads:
                g *= self.grad_clip / norm
        optimizer.step()

    def update(self, observations, actions, rewards, continues=None) -> dict[str, float]:
        """One world-model step on (batch, T, ...) sequences, then one actor and one critic step
        imagined from their posterior states."""
        loss, stats, states = self.world_model.loss(observations, actions, rewards, continues,
                                                    free_nats=self.free_nats)
        self._step(self.model_optimizer, loss, self.world_model)
        h = states["h"].detach().reshape(-1, self.world_model.rssm.deter_dim)
        s = states["s"].detach().reshape(-1, self.world_model.rssm.stoch_dim)
        actor_loss, critic_loss, behaviour = self.behaviour_losses(h, s)
        self._step(self.actor_optimizer, actor_loss, self.actor)
        self._step(self.critic_optimizer, critic_loss, self.critic)
        return {**stats, **behaviour}


class SequenceReplay:
    """Whole episodes kept as arrays in RSSM's layout; ``sample`` draws (batch, length) windows
    uniformly from episodes at least ``length`` steps long."""

    def __init__(self, seed: int | None = None):
        self.episodes: list[dict[str, numpy.ndarray]] = []
        self.rng = seeded_generator(seed)

    def add(self, observations, actions, rewards, continues) -> None:
        self.episodes.append({"obs": numpy.asarray(observations), "act": numpy.asarray(actions),
                              "rew": numpy.asarray(rewards), "cont": numpy.asarray(continues)})

    def sample(self, batch: int, length: int) -> tuple[numpy.ndarray, ...]:
        usable = [e for e in self.episodes if len(e["obs"]) >= length]
        if not usable:
            raise ValueError(f"SequenceReplay.sample: no episode has {length} steps")
        dtype = get_default_dtype()
        out = {key: [] for key in ("obs", "act", "rew", "cont")}
        for _ in range(batch):
            episode = usable[self.rng.integers(len(usable))]
            start = self.rng.integers(len(episode["obs"]) - length + 1)
            for key in out:
                out[key].append(episode[key][start:start + length])
        return tuple(numpy.stack(out[key]).astype(dtype) for key in ("obs", "act", "rew", "cont"))


def run_dreamer_episode(env: Env, agent: DreamerAgent, explore: bool = False, seed: int | None = None,
                        max_steps: int = 1000) -> tuple[float, dict[str, numpy.ndarray]]:
    """One episode with ``agent.act``: (its return, the episode in RSSM's layout)."""
    obs, _ = env.reset(seed=seed)
    observations, actions, rewards, continues = [obs], [numpy.zeros(agent.act_dim)], [0.0], [1.0]
    state, total = None, 0.0
    for _ in range(max_steps):
        action, state = agent.act(obs, state, explore=explore)
        obs, reward, terminated, truncated, _ = env.step(action)
        total += float(reward)
        observations.append(obs)
        actions.append(agent.model_action(action))
        rewards.append(float(reward))
        continues.append(0.0 if terminated else 1.0)
        if terminated or truncated:
            break
    episode = {"obs": numpy.asarray(observations, dtype=numpy.float64), "act": numpy.asarray(actions),
               "rew": numpy.asarray(rewards), "cont": numpy.asarray(continues)}
    return total, episode


def train_dreamer(env: Env, steps: int, agent: DreamerAgent | None = None, prefill_episodes: int = 5,
                  updates_per_episode: int = 20, batch: int = 16, length: int = 10, seed: int | None = None,
                  **agent_kwargs) -> tuple[DreamerAgent, list[float]]:
    """Dreamer's loop: ``prefill_episodes`` of uniform random actions, then episodes with the
    exploring policy, each followed by ``updates_per_episode`` calls of :meth:`DreamerAgent.update`
    on replayed windows, until ``steps`` environment steps are taken. Returns (agent, the returns
    of the policy's episodes)."""
    if agent is None:
        agent = DreamerAgent(int(numpy.prod(env.observation_space.shape)), env.action_space, seed=seed, **agent_kwargs)
    replay = SequenceReplay(seed=None if seed is None else seed + 2)
    space_rng = seeded_generator(None if seed is None else seed + 3)
    taken, returns = 0, []
    for index in range(prefill_episodes):
        obs, _ = env.reset(seed=None if seed is None else seed + 100 + index)
        episode = {"obs": [obs], "act": [numpy.zeros(agent.act_dim)], "rew": [0.0], "cont": [1.0]}
        while True:
            if agent.discrete:
                action = int(space_rng.integers(agent.act_dim))
            else:
                action = agent.env_action(space_rng.uniform(-1.0, 1.0, agent.act_dim))
            obs, reward, terminated, truncated, _ = env.step(action)
            taken += 1
            for key, value in zip(("obs", "act", "rew", "cont"),
                                  (obs, agent.model_action(action), float(reward), 0.0 if terminated else 1.0)):
                episode[key].append(value)
            if terminated or truncated:
                break
        replay.add(*(numpy.asarray(episode[key], dtype=numpy.float64) for key in ("obs", "act", "rew", "cont")))
    while taken < steps:
        for _ in range(updates_per_episode):
            agent.update(*replay.sample(batch, length))
        total, episode = run_dreamer_episode(env, agent, explore=True)
        taken += len(episode["rew"]) - 1
        returns.append(total)
        replay.add(episode["obs"], episode["act"], episode["rew"], episode["cont"])
    return agent, returns
