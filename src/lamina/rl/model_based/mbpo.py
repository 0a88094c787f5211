"""MBPO (Janner et al., 2019, "When to Trust Your Model"): short branched rollouts of a learned
ensemble, started from real states with the current policy, fill a model buffer; SAC then
updates on batches drawn mostly from that buffer (a fraction ``real_ratio`` from real data)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy

from lamina.autograd import no_grad
from lamina.parallel import one_blas_thread
from lamina.rl.env import Env
from lamina.rl.model_based.ensemble import ProbabilisticEnsemble, TrajectorySampling
from lamina.rl.networks import obs_tensor
from lamina.rl.replay import Batch, ReplayBuffer
from lamina.rl.sac import SAC


def model_rollouts(ensemble: ProbabilisticEnsemble, start_states, policy, horizon: int,
                   buffer: ReplayBuffer | None = None, termination_fn=None, action_scale=None,
                   seed: int | None = None) -> ReplayBuffer:
    """MBPO's branched rollouts: from each start state, ``horizon`` steps of ``policy(states) ->
    actions`` (a batch of rows) through the ensemble, each row's member drawn among the elites
    at every step (TS1); every model transition (s, a, r, s', done) is added to ``buffer`` (a new
    one when None) and a row stops once ``termination_fn(next_states)`` says so.

    ``action_scale=(low, high)`` stores actions mapped to [-1, 1] (the convention of the SAC and
    TD3 buffers) while the model sees them in the environment's bounds. Returns the buffer."""
    if isinstance(horizon, bool) or not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"model_rollouts: horizon must be a positive int, got {horizon!r}")
    states = numpy.asarray(start_states, dtype=numpy.float64)
    if states.ndim != 2 or states.shape[1] != ensemble.obs_dim:
        raise ValueError(f"model_rollouts: start_states must have shape (n, {ensemble.obs_dim}), got {states.shape}")
    if buffer is None:
        buffer = ReplayBuffer(len(states) * horizon, (ensemble.obs_dim,), (ensemble.act_dim,),
                              action_dtype=numpy.float32, seed=seed)
    sampler = TrajectorySampling(ensemble, "ts1", seed=seed)
    for _ in range(horizon):
        if not len(states):
            break
        actions = numpy.asarray(policy(states), dtype=numpy.float64).reshape(len(states), ensemble.act_dim)
        next_states, rewards = sampler(states, actions)
        done = (numpy.zeros(len(states), dtype=bool) if termination_fn is None
                else numpy.asarray(termination_fn(next_states), dtype=bool).reshape(-1))
        stored = actions
        if action_scale is not None:
            low, high = (numpy.asarray(b, dtype=numpy.float64) for b in action_scale)
            stored = 2.0 * (actions - low) / (high - low) - 1.0
        for i in range(len(states)):
            buffer.add(states[i], stored[i], rewards[i], next_states[i], done[i])
        states = next_states[~done]
    return buffer


class MBPOAgent:
    """SAC trained on model rollouts (module docstring). Every ``model_train_freq`` environment
    steps after ``learning_starts``, the ensemble is refitted on all real transitions and
    ``rollout_batch`` rollouts of ``rollout_horizon`` steps from sampled real states are added
    to the model buffer; every environment step after ``learning_starts`` runs
    ``updates_per_step`` SAC updates on batches with ``real_ratio`` real transitions.
    ``sac_kwargs`` go to :class:`~lamina.rl.SAC` (whose buffer holds the real transitions)."""

    def __init__(self, obs_dim: int, action_space, hidden: Sequence[int] = (64, 64), ensemble_size: int = 5,
                 num_elites: int | None = None, model_train_freq: int = 250, model_epochs: int = 20,
                 rollout_batch: int = 400, rollout_horizon: int = 1, model_buffer_size: int = 100_000,
                 real_ratio: float = 0.05, updates_per_step: int = 1, learning_starts: int = 250,
                 termination_fn=None, seed: int | None = None, **sac_kwargs):
        for name, value in (("model_train_freq", model_train_freq), ("model_epochs", model_epochs),
                            ("rollout_batch", rollout_batch), ("rollout_horizon", rollout_horizon),
                            ("updates_per_step", updates_per_step)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"MBPOAgent: {name} must be a positive int, got {value!r}")
        if not 0.0 <= real_ratio <= 1.0:
            raise ValueError(f"MBPOAgent: real_ratio must be in [0, 1], got {real_ratio!r}")
        self.sac = SAC(obs_dim, action_space, learning_starts=learning_starts, seed=seed, **sac_kwargs)
        act_dim = self.sac.action_dim
        self.ensemble = ProbabilisticEnsemble(obs_dim, act_dim, hidden, ensemble_size, num_elites, seed=seed)
        self.model_buffer = ReplayBuffer(model_buffer_size, (obs_dim,), (act_dim,), action_dtype=numpy.float32,
                                         seed=seed)
        self.model_train_freq, self.model_epochs = model_train_freq, model_epochs
        self.rollout_batch, self.rollout_horizon = rollout_batch, rollout_horizon
        self.real_ratio, self.updates_per_step = real_ratio, updates_per_step
        self.learning_starts, self.termination_fn = learning_starts, termination_fn
        self.rng = numpy.random.default_rng(seed)

    def act(self, obs, deterministic: bool = False) -> numpy.ndarray:
        return self.sac.act(obs, deterministic)

    def policy(self, states) -> numpy.ndarray:
        """Stochastic SAC actions for a batch of states, in the environment's bounds."""
        with no_grad(), one_blas_thread():
            unit, _ = self.sac.actor.sample(obs_tensor(states), self.rng.standard_normal((len(states),
                                                                                           self.sac.action_dim)))
        return self.sac.to_env(unit.numpy()).astype(numpy.float64)

    def fit_model(self) -> dict[str, list[float]]:
        """Refit the ensemble on every real transition (actions moved back to the bounds)."""
        real, n = self.sac.buffer, len(self.sac.buffer)
        return self.ensemble.fit(real.obs[:n], self.sac.to_env(real.actions[:n]), real.next_obs[:n],
                                 real.rewards[:n], epochs=self.model_epochs)

    def rollout(self) -> None:
        """Branch ``rollout_batch`` model rollouts from real states into the model buffer."""
        starts = self.sac.buffer.sample(min(self.rollout_batch, len(self.sac.buffer))).obs
        model_rollouts(self.ensemble, starts, self.policy, self.rollout_horizon, self.model_buffer,
                       self.termination_fn, (self.sac.low, self.sac.high), seed=int(self.rng.integers(2**31)))

    def mixed_batch(self) -> Batch:
        """A SAC batch: round(real_ratio batch_size) real transitions, the rest from the model buffer."""
        size = self.sac.batch_size
        n_real = size if len(self.model_buffer) == 0 else int(round(self.real_ratio * size))
        parts = [buffer.sample(n) for buffer, n in ((self.sac.buffer, n_real), (self.model_buffer, size - n_real))
                 if n > 0]
        return Batch(*(numpy.concatenate(arrays) for arrays in zip(*parts)))

    def observe(self, obs, action, reward: float, next_obs, terminated: bool) -> None:
        """Store a real transition and run the model fits, rollouts and SAC updates that are due."""
        self.sac.buffer.add(obs, self.sac.to_unit(action), reward, next_obs, terminated)
        self.sac.env_steps += 1
        steps = self.sac.env_steps
        if steps < max(self.learning_starts, self.sac.batch_size):
            return
        if (steps - self.learning_starts) % self.model_train_freq == 0:
            self.fit_model()
            self.rollout()
        with one_blas_thread():
            for _ in range(self.updates_per_step):
                self.sac.update(self.mixed_batch())

    def train(self, env: Env, total_steps: int, seed: int | None = None) -> list[float]:
        """Run ``total_steps`` environment steps; returns every finished episode's return."""
        returns, episode_return = [], 0.0
        obs, _ = env.reset(seed=seed)
        for _ in range(total_steps):
            action = self.act(obs)
            next_obs, reward, terminated, truncated, _ = env.step(action)
            self.observe(obs, action, reward, next_obs, terminated)
            episode_return += reward
            obs = next_obs
            if terminated or truncated:
                returns.append(episode_return)
                episode_return = 0.0
                obs, _ = env.reset()
        return returns
