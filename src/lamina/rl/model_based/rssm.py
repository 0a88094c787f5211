"""A recurrent state-space model (Hafner et al., 2019, PlaNet; 2020, Dreamer) for vector
observations.

The latent state is a deterministic GRU state h_t and a stochastic Gaussian state s_t::

    h_t = GRU(h_{t-1}, f([s_{t-1}, a_{t-1}]))           deterministic path
    prior      p(s_t | h_t)       = N(mu_p(h_t), sigma_p(h_t)^2)
    posterior  q(s_t | h_t, o_t)  = N(mu_q(h_t, e(o_t)), sigma_q(h_t, e(o_t))^2)
    decoder    o_t ~ N(g(h_t, s_t), I)

with sigma = softplus(raw) + min_std. :meth:`RSSM.observe` filters a sequence with the posterior;
:meth:`RSSM.imagine` rolls forward with the prior only. The loss is the reconstruction error
plus the KL term with free nats and KL balancing (DreamerV2), sg the stop-gradient::

    KL = beta [alpha max(F, KL(sg(q) || p)) + (1 - alpha) max(F, KL(q || sg(p)))]

(alpha = 1/2 gives the plain KL, as in PlaNet and DreamerV1; each KL is averaged over the
batch and time before the free-nats floor F is applied)."""

from __future__ import annotations

import numpy

from lamina.autograd import Tensor, tensor
from lamina.backend import get_default_dtype
from lamina.errors import ShapeError
from lamina.functional import concat, log, maximum, softplus, stack
from lamina.functional import mean as mean_of
from lamina.functional import sum as sum_of
from lamina.nn import Dense, GRUCell, Module
from lamina.rl.networks import mlp
from lamina.rl.spaces import seeded_generator


def diagonal_gaussian_kl(mean1: Tensor, std1: Tensor, mean2: Tensor, std2: Tensor) -> Tensor:
    """KL(N(mean1, std1^2) || N(mean2, std2^2)) of diagonal Gaussians, summed over the last axis:

        sum_j log(std2_j / std1_j) + (std1_j^2 + (mean1_j - mean2_j)^2) / (2 std2_j^2) - 1/2"""
    diff = mean1 - mean2
    per_dim = log(std2) - log(std1) + (std1 * std1 + diff * diff) / (2.0 * std2 * std2) - 0.5
    return sum_of(per_dim, axis=-1)


class RSSM(Module):
    """The PlaNet / Dreamer world model (module docstring) with an MLP encoder and decoder.

    ``observe(observations, actions)`` takes (batch, T, obs_dim) and (batch, T, act_dim), where
    actions[:, t] is the action taken just before observations[:, t] (zeros at t = 0), and returns
    a dict of (batch, T, ...) tensors: "h", "s" (posterior draws), "prior_mean", "prior_std",
    "post_mean", "post_std". ``imagine((h, s), actions)`` returns "h", "s", "prior_mean" and
    "prior_std" from the prior alone. Draws use ``noise`` (standard normal, (batch, T, stoch_dim))
    when given, else the generator seeded by ``seed``; the weights come from lamina's generator
    (:func:`lamina.manual_seed`)."""

    def __init__(self, obs_dim: int, act_dim: int, deter_dim: int = 32, stoch_dim: int = 8, hidden: int = 32,
                 embed_dim: int = 32, min_std: float = 0.1, seed: int | None = None):
        super().__init__()
        for name, value in (("obs_dim", obs_dim), ("act_dim", act_dim), ("deter_dim", deter_dim),
                            ("stoch_dim", stoch_dim), ("hidden", hidden), ("embed_dim", embed_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"RSSM: {name} must be a positive int, got {value!r}")
        self.obs_dim, self.act_dim, self.deter_dim, self.stoch_dim = obs_dim, act_dim, deter_dim, stoch_dim
        self.min_std = float(min_std)
        self.rng = seeded_generator(seed)
        self.encoder = mlp(obs_dim, [hidden], embed_dim, activation="elu")
        self.input_layer = Dense(hidden, activation="elu")
        self.input_layer.build((None, stoch_dim + act_dim))
        self.cell = GRUCell(deter_dim)
        self.cell.build((None, hidden))
        self.prior_net = mlp(deter_dim, [hidden], 2 * stoch_dim, activation="elu")
        self.posterior_net = mlp(deter_dim + embed_dim, [hidden], 2 * stoch_dim, activation="elu")
        self.decoder = mlp(deter_dim + stoch_dim, [hidden], obs_dim, activation="elu")
        self.built = True

    def _gaussian(self, raw: Tensor) -> tuple[Tensor, Tensor]:
        return raw[:, :self.stoch_dim], softplus(raw[:, self.stoch_dim:]) + self.min_std

    def _draw(self, mean: Tensor, std: Tensor, noise) -> Tensor:
        noise = self.rng.standard_normal(mean.shape) if noise is None else noise
        return mean + std * tensor(numpy.asarray(noise), dtype=mean.dtype)

    def initial_state(self, batch: int) -> tuple[Tensor, Tensor]:
        """Zero (h, s) for ``batch`` sequences."""
        dtype = get_default_dtype()
        return (tensor(numpy.zeros((batch, self.deter_dim), dtype=dtype)),
                tensor(numpy.zeros((batch, self.stoch_dim), dtype=dtype)))

    def prior_step(self, h: Tensor, s: Tensor, action: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """One step of the deterministic path and the prior: (h_t, mu_p, sigma_p)."""
        h = self.cell(self.input_layer(concat([s, action], axis=1)), h)
        mean, std = self._gaussian(self.prior_net(h))
        return h, mean, std

    def _check(self, label: str, actions, observations=None) -> tuple[Tensor, Tensor | None]:
        actions = actions if isinstance(actions, Tensor) else tensor(numpy.asarray(actions, dtype=get_default_dtype()))
        if actions.ndim != 3 or actions.shape[2] != self.act_dim:
            raise ShapeError(f"RSSM.{label}: actions must have shape (batch, T, {self.act_dim}), got {actions.shape}")
        if observations is None:
            return actions, None
        if not isinstance(observations, Tensor):
            observations = tensor(numpy.asarray(observations, dtype=get_default_dtype()))
        if observations.shape != (*actions.shape[:2], self.obs_dim):
            raise ShapeError(f"RSSM.{label}: observations must have shape {(*actions.shape[:2], self.obs_dim)} "
                             f"to match actions {actions.shape}, got {observations.shape}")
        return actions, observations

    def observe(self, observations, actions, state=None, noise=None) -> dict[str, Tensor]:
        actions, observations = self._check("observe", actions, observations)
        batch, steps = actions.shape[:2]
        h, s = self.initial_state(batch) if state is None else state
        embedded = self.encoder(observations.reshape(batch * steps, self.obs_dim)).reshape(batch, steps, -1)
        out: dict[str, list[Tensor]] = {k: [] for k in ("h", "s", "prior_mean", "prior_std", "post_mean", "post_std")}
        for t in range(steps):
            h, prior_mean, prior_std = self.prior_step(h, s, actions[:, t])
            post_mean, post_std = self._gaussian(self.posterior_net(concat([h, embedded[:, t]], axis=1)))
            s = self._draw(post_mean, post_std, None if noise is None else noise[:, t])
            for key, value in zip(out, (h, s, prior_mean, prior_std, post_mean, post_std)):
                out[key].append(value)
        return {key: stack(values, axis=1) for key, values in out.items()}

    def imagine(self, state: tuple[Tensor, Tensor], actions, noise=None) -> dict[str, Tensor]:
        actions, _ = self._check("imagine", actions)
        h, s = state
        out: dict[str, list[Tensor]] = {k: [] for k in ("h", "s", "prior_mean", "prior_std")}
        for t in range(actions.shape[1]):
            h, mean, std = self.prior_step(h, s, actions[:, t])
            s = self._draw(mean, std, None if noise is None else noise[:, t])
            for key, value in zip(out, (h, s, mean, std)):
                out[key].append(value)
        return {key: stack(values, axis=1) for key, values in out.items()}

    def decode(self, h: Tensor, s: Tensor) -> Tensor:
        """The decoder's mean observation for latent states (..., deter_dim) and (..., stoch_dim)."""
        lead = h.shape[:-1]
        features = concat([h.reshape(-1, self.deter_dim), s.reshape(-1, self.stoch_dim)], axis=1)
        return self.decoder(features).reshape(*lead, self.obs_dim)

    def loss(self, observations, actions, free_nats: float = 1.0, kl_balance: float = 0.8,
             kl_scale: float = 1.0, noise=None) -> tuple[Tensor, dict[str, float]]:
        """reconstruction + KL (module docstring): the reconstruction term is
        1/2 sum_j (o_j - g_j)^2 averaged over batch and time. Returns (loss, floats)."""
        if not 0.0 <= kl_balance <= 1.0:
            raise ValueError(f"RSSM.loss: kl_balance must be in [0, 1], got {kl_balance!r}")
        actions, observations = self._check("loss", actions, observations)
        states = self.observe(observations, actions, noise=noise)
        diff = self.decode(states["h"], states["s"]) - observations
        reconstruction = mean_of(0.5 * sum_of(diff * diff, axis=-1))
        q = (states["post_mean"], states["post_std"])
        p = (states["prior_mean"], states["prior_std"])
        kl_prior = mean_of(diagonal_gaussian_kl(q[0].detach(), q[1].detach(), *p))
        kl_post = mean_of(diagonal_gaussian_kl(*q, p[0].detach(), p[1].detach()))
        kl = kl_balance * maximum(kl_prior, free_nats) + (1.0 - kl_balance) * maximum(kl_post, free_nats)
        total = reconstruction + kl_scale * kl
        return total, {"reconstruction": reconstruction.item(), "kl": kl_prior.item()}


def collect_sequences(env, batch: int, length: int, policy=None, seed: int | None = None
                      ) -> tuple[numpy.ndarray, numpy.ndarray]:
    """``batch`` sequences of ``length`` observations from ``env`` with ``policy(obs)`` (uniform
    random actions of a Box by default), as (observations, actions) with actions[:, t] the action
    taken before observations[:, t] (zeros at t = 0), the layout :meth:`RSSM.observe` takes."""
    rng = seeded_generator(seed)
    low, high = env.action_space.low.astype(numpy.float64), env.action_space.high.astype(numpy.float64)
    observations = numpy.zeros((batch, length, *env.observation_space.shape))
    actions = numpy.zeros((batch, length, len(low)))
    for b in range(batch):
        obs, _ = env.reset(seed=None if seed is None else seed + b)
        observations[b, 0] = obs
        for t in range(1, length):
            action = rng.uniform(low, high) if policy is None else numpy.asarray(policy(obs), dtype=numpy.float64)
            obs, _, terminated, truncated, _ = env.step(action.astype(numpy.float32))
            observations[b, t], actions[b, t] = obs, action
            if terminated or truncated:
                obs, _ = env.reset()
    dtype = get_default_dtype()
    return observations.astype(dtype), actions.astype(dtype)
