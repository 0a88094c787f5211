"""Diffusion Policy (Chi et al. 2023): a policy that draws a whole sequence of actions from a
denoising diffusion model conditioned on the last observations, so that it can represent the
several modes of an expert's behaviour where a regression to the mean action falls between them.

Data: windows (O, A) of To observations and H actions (:func:`demonstration_windows`), each
dimension mapped to [-1, 1] by the demonstrations' range, x' = 2 (x - low) / (high - low) - 1
(dimensions of zero range are only shifted, x' = x - low). Training (DDPM's noise prediction,
:mod:`lamina.models.diffusion`): with k ~ U{0, ..., K-1} and eps ~ N(0, I),

    A_k = sqrt(abar_k) A' + sqrt(1 - abar_k) eps,    L = mean ||eps - eps_theta(A_k, k, O')||^2

(``prediction='x0'`` or ``'v'`` regress A' or v = sqrt(abar_k) eps - sqrt(1 - abar_k) A'
instead), eps_theta the :class:`TemporalUNet` with O' flattened as its condition. Acting:
A_K ~ N(0, I) is denoised by DDPM's ancestral steps or DDIM's deterministic ones (x_0 clipped
to [-1, 1]), mapped back to action units, and only the first Ta = ``n_action_steps`` of its H
actions are executed before the policy plans again from the new observations (receding horizon).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy

from lamina import backend, optim
from lamina.autograd import Tensor, no_grad, tensor
from lamina.errors import ShapeError
from lamina.functional import reshape
from lamina.models.diffusion import PREDICTIONS, SAMPLERS
from lamina.models.diffusion_schedule import make_schedule
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.layer import describe, positive_int
from lamina.nn.module import Module, as_tensor, evaluation_mode
from lamina.parallel import one_blas_thread
from lamina.rl.env import Env
from lamina.rl.offline.dataset import OfflineDataset
from lamina.rl.offline.demonstrations import demonstration_windows
from lamina.rl.offline.temporal_unet import TemporalUNet
from lamina.rl.spaces import seeded_generator

__all__ = ["DiffusionPolicy", "rollout_diffusion_policy", "train_diffusion_policy"]


@register_with_arguments
class DiffusionPolicy(Module):
    """The diffusion policy of the module notes for ``obs_dim`` observations and ``action_dim``
    actions: plans of ``horizon`` actions from the last ``n_obs_steps`` observations, of which
    ``n_action_steps`` are executed. The denoiser is a :class:`TemporalUNet` (``down_dims``,
    ``kernel_size``, ``groups``, ``step_embed_dim``); the noise schedule ``schedule`` has
    ``num_timesteps`` steps. The normalisation ranges (buffers, saved with the weights) are set
    by :meth:`fit_normalizer`. Calling the policy runs the denoiser on normalised inputs."""

    def __init__(self, obs_dim: int, action_dim: int, horizon: int = 8, n_obs_steps: int = 2,
                 n_action_steps: int = 4, down_dims: Sequence[int] = (32, 64), kernel_size: int = 5, groups: int = 8,
                 step_embed_dim: int = 32, num_timesteps: int = 100, schedule: str = "cosine",
                 prediction: str = "eps", name: str | None = None):
        super().__init__(name=name)
        who = "DiffusionPolicy"
        self.obs_dim = positive_int(obs_dim, f"{who}: obs_dim")
        self.action_dim = positive_int(action_dim, f"{who}: action_dim")
        self.horizon = positive_int(horizon, f"{who}: horizon")
        self.n_obs_steps = positive_int(n_obs_steps, f"{who}: n_obs_steps")
        self.n_action_steps = positive_int(n_action_steps, f"{who}: n_action_steps")
        if self.n_action_steps > self.horizon:
            raise ValueError(f"{who}: n_action_steps={n_action_steps} exceeds the horizon {horizon}")
        if prediction not in PREDICTIONS:
            raise ValueError(f"{who}: prediction must be one of {PREDICTIONS}, got {prediction!r}")
        self.prediction = prediction
        self.schedule = make_schedule(schedule, positive_int(num_timesteps, f"{who}: num_timesteps"))
        self.net = TemporalUNet(self.action_dim, self.n_obs_steps * self.obs_dim, down_dims, kernel_size, groups,
                                step_embed_dim, name="net")
        if self.horizon % self.net.length_multiple:
            raise ValueError(f"{who}: horizon={horizon} must be a multiple of 2^(levels - 1) = "
                             f"{self.net.length_multiple} for down_dims={tuple(down_dims)}")
        for label, size in (("obs", self.obs_dim), ("action", self.action_dim)):
            self.register_buffer(f"{label}_low", numpy.full(size, -1.0))
            self.register_buffer(f"{label}_high", numpy.full(size, 1.0))
        self.built = True

    # -- normalisation --------------------------------------------------------------------
    def fit_normalizer(self, observations, actions) -> None:
        """Set the ranges [low, high] per dimension from arrays of observations (..., obs_dim)
        and actions (..., action_dim)."""
        for label, values, size in (("obs", observations, self.obs_dim), ("action", actions, self.action_dim)):
            values = numpy.asarray(values, dtype=numpy.float64)
            if values.ndim < 1 or values.shape[-1] != size or values.size == 0:
                raise ShapeError(f"{self._label()}.fit_normalizer: got {label}s of {describe(values)}; expected "
                                 f"(..., {size})")
            flat = values.reshape(-1, size)
            self.register_buffer(f"{label}_low", flat.min(axis=0))
            self.register_buffer(f"{label}_high", flat.max(axis=0))

    def _range(self, label: str) -> tuple[numpy.ndarray, numpy.ndarray]:
        low = numpy.asarray(backend.to_numpy(self._buffers[f"{label}_low"]), dtype=numpy.float64)
        high = numpy.asarray(backend.to_numpy(self._buffers[f"{label}_high"]), dtype=numpy.float64)
        half = (high - low) / 2.0
        scale = numpy.where(half > 1e-8, half, 1.0)
        return numpy.where(half > 1e-8, low + half, low), scale

    def normalize(self, values, kind: str = "action") -> numpy.ndarray:
        """x' = (x - centre) / half-range per dimension (:meth:`fit_normalizer`'s ranges) for
        ``kind`` 'obs' or 'action'."""
        centre, scale = self._range(kind)
        return (numpy.asarray(values, dtype=numpy.float64) - centre) / scale

    def unnormalize(self, values, kind: str = "action") -> numpy.ndarray:
        """The inverse of :meth:`normalize`: x = x' half-range + centre."""
        centre, scale = self._range(kind)
        return numpy.asarray(values, dtype=numpy.float64) * scale + centre

    # -- the denoiser ---------------------------------------------------------------------
    def _dtype(self):
        return self.net.parameters()[0].dtype

    def _obs_history(self, obs_history, who: str) -> numpy.ndarray:
        obs = numpy.asarray(backend.to_numpy(obs_history.data) if isinstance(obs_history, Tensor) else obs_history)
        if obs.ndim != 3 or obs.shape[1:] != (self.n_obs_steps, self.obs_dim):
            raise ShapeError(f"{self._label()}.{who}: got an observation history of {describe(obs)}; expected "
                             f"(batch, n_obs_steps={self.n_obs_steps}, obs_dim={self.obs_dim}), the last "
                             f"{self.n_obs_steps} observations")
        return obs

    def forward(self, noisy_actions, t, obs_history) -> Tensor:
        """eps_theta(A_k, k, O') for normalised action sequences (N, horizon, action_dim), N steps
        k and normalised observation histories (N, n_obs_steps, obs_dim)."""
        x, obs = as_tensor(noisy_actions), as_tensor(obs_history)
        if x.ndim != 3 or tuple(x.shape[1:]) != (self.horizon, self.action_dim):
            raise ShapeError(f"{self._label()}: got action sequences of {describe(x)}; expected (batch, "
                             f"{self.horizon}, {self.action_dim})")
        self._obs_history(obs, "forward")
        return self.net(x, t, reshape(obs, obs.shape[0], self.n_obs_steps * self.obs_dim))

    def loss(self, obs_history, actions, t=None, noise=None, rng: numpy.random.Generator | None = None) -> Tensor:
        """L of the module notes for a batch of windows in the data's units: observation
        histories (N, n_obs_steps, obs_dim) and action sequences (N, horizon, action_dim). ``t``
        (N ints) and ``noise`` (like the actions) are drawn from ``rng`` (default: lamina's
        generator) unless given."""
        obs = self._obs_history(obs_history, "loss")
        target_shape = (obs.shape[0], self.horizon, self.action_dim)
        actions = numpy.asarray(actions)
        if actions.shape != target_shape:
            raise ShapeError(f"{self._label()}.loss: got actions of {describe(actions)}; expected {target_shape}")
        rng = backend.rng() if rng is None else rng
        n, dtype = obs.shape[0], self._dtype()
        steps = rng.integers(0, self.schedule.num_timesteps, n) if t is None else self.schedule.timesteps(
            t, n, f"{self._label()}.loss")
        noise = rng.standard_normal(target_shape) if noise is None else numpy.asarray(noise)
        if noise.shape != target_shape:
            raise ShapeError(f"{self._label()}.loss: got noise of {describe(noise)}; expected {target_shape}")
        x0 = tensor(self.normalize(actions, "action"), dtype=dtype)
        eps = tensor(noise, dtype=dtype)
        output = self(self.schedule.q_sample(x0, steps, eps), steps, tensor(self.normalize(obs, "obs"), dtype=dtype))
        target = {"eps": eps, "x0": x0, "v": self.schedule.velocity(x0, steps, eps)}[self.prediction]
        diff = output - target
        return (diff * diff).mean()

    # -- acting ---------------------------------------------------------------------------
    def _x0_eps(self, x, t: int, obs: Tensor) -> tuple[Tensor, Tensor]:
        steps = numpy.full(x.shape[0], t, dtype=numpy.int64)
        out, schedule = self(x, steps, obs), self.schedule
        if self.prediction == "eps":
            x0 = schedule.predict_x0(x, steps, out)
        elif self.prediction == "x0":
            x0 = out
        else:
            x0 = schedule.x0_from_velocity(x, steps, out)
        x0 = Tensor._wrap(backend.xp.clip(x0.data, -1.0, 1.0))
        return x0, schedule.predict_eps(x, steps, x0)

    def predict_action(self, obs_history, steps: int | None = None, method: str = "ddim", eta: float = 0.0,
                       seed: int | None = None) -> numpy.ndarray:
        """Action plans in the data's units, (batch, horizon, action_dim), for observation
        histories (batch, n_obs_steps, obs_dim) (or one history (n_obs_steps, obs_dim), giving
        one plan (horizon, action_dim)), sampled by ``method`` ('ddpm' or 'ddim', eta its noise
        scale) over ``steps`` of the schedule's timesteps (None: all), with noise from a
        generator seeded by ``seed``. The first ``n_action_steps`` are the ones to execute."""
        who = "predict_action"
        if method not in SAMPLERS:
            raise ValueError(f"{self._label()}.{who}: method must be one of {SAMPLERS}, got {method!r}")
        raw = numpy.asarray(obs_history)
        single = raw.ndim == 2
        obs = self._obs_history(raw[None] if single else raw, who)
        k = self.schedule.num_timesteps if steps is None else positive_int(steps, f"{self._label()}.{who}: steps")
        if k > self.schedule.num_timesteps:
            raise ValueError(f"{self._label()}.{who}: steps={k} exceeds the schedule's {self.schedule.num_timesteps}")
        timesteps = numpy.round(numpy.linspace(self.schedule.num_timesteps - 1, 0, k))[::-1].astype(numpy.int64)
        respaced = self.schedule.respaced(timesteps)
        rng, dtype = seeded_generator(seed), self._dtype()
        shape = (obs.shape[0], self.horizon, self.action_dim)
        x = tensor(rng.standard_normal(shape), dtype=dtype)
        condition = tensor(self.normalize(obs, "obs"), dtype=dtype)
        with no_grad(), evaluation_mode(self):
            for i in range(len(timesteps) - 1, -1, -1):
                x0, eps = self._x0_eps(x, int(timesteps[i]), condition)
                z = tensor(rng.standard_normal(shape), dtype=dtype) if i > 0 else None
                if method == "ddim":
                    previous = int(timesteps[i - 1]) if i > 0 else -1
                    x = self.schedule.ddim_step(x0, eps, int(timesteps[i]), previous, eta, z if eta > 0 else None)
                else:
                    mean, variance = respaced.posterior_mean_variance(x0, x, i)
                    x = mean + tensor(numpy.sqrt(backend.to_numpy(variance.data)), dtype=dtype) * z if i > 0 else mean
        plans = self.unnormalize(numpy.clip(backend.to_numpy(x.data), -1.0, 1.0), "action").astype(numpy.float32)
        return plans[0] if single else plans

    def extra_repr(self) -> str:
        return (f"obs_dim={self.obs_dim}, action_dim={self.action_dim}, horizon={self.horizon}, "
                f"n_obs_steps={self.n_obs_steps}, n_action_steps={self.n_action_steps}")


def train_diffusion_policy(policy: DiffusionPolicy, dataset: OfflineDataset, steps: int, batch_size: int = 256,
                           lr: float = 1e-3, weight_decay: float = 1e-6, seed: int | None = None,
                           callback: Callable[[int, float], None] | None = None) -> list[float]:
    """Fit ``policy`` to the demonstrations ``dataset``: its windows (:func:`demonstration_windows`),
    the normaliser set from their ranges, then ``steps`` AdamW updates on the loss of batches of
    ``batch_size`` windows drawn uniformly. Returns the losses."""
    positive_int(steps, "train_diffusion_policy: steps")
    positive_int(batch_size, "train_diffusion_policy: batch_size")
    if dataset.observation_dim != policy.obs_dim or dataset.discrete or dataset.actions.shape[1:] != (
            policy.action_dim,):
        raise ValueError(f"train_diffusion_policy: the policy takes {policy.obs_dim} observations and "
                         f"{policy.action_dim} continuous actions; the dataset has {dataset.observation_dim} and "
                         f"{dataset.actions.dtype} actions of shape {dataset.actions.shape[1:]}")
    obs, actions = demonstration_windows(dataset, policy.horizon, policy.n_obs_steps)
    policy.fit_normalizer(dataset.observations.reshape(len(dataset), -1), dataset.actions)
    optimizer = optim.AdamW(policy.parameters(), lr=lr, weight_decay=weight_decay)
    rng, losses = seeded_generator(seed), []
    with one_blas_thread():
        for step in range(steps):
            index = rng.integers(len(obs), size=batch_size)
            loss = policy.loss(obs[index], actions[index], rng=rng)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if callback is not None:
                callback(step, losses[-1])
    return losses


def rollout_diffusion_policy(policy: DiffusionPolicy, envs: Sequence[Env], seeds: Sequence[int],
                             steps: int | None = 10, method: str = "ddim", seed: int | None = None,
                             max_steps: int = 1000) -> list[dict]:
    """One episode in each env of ``envs`` (reset with ``seeds``), run side by side with receding
    horizon: the policy plans from the last ``n_obs_steps`` observations (the first repeated at
    the start), the first ``n_action_steps`` actions are executed, then it plans again; one
    batched :meth:`~DiffusionPolicy.predict_action` call per replanning (its seed drawn from
    ``seed``). Returns per episode ``return``, ``length``, ``info`` (the last step's) and
    ``observations`` (length + 1, obs_dim)."""
    if len(envs) != len(seeds) or not envs:
        raise ValueError(f"rollout_diffusion_policy: needs one seed per env, got {len(envs)} envs and "
                         f"{len(seeds)} seeds")
    rng = seeded_generator(seed)
    paths = [[numpy.asarray(env.reset(seed=s)[0], dtype=numpy.float32).reshape(-1)] for env, s in zip(envs, seeds)]
    results = [{"return": 0.0, "length": 0, "info": {}} for _ in envs]
    running = list(range(len(envs)))
    with one_blas_thread():
        while running:
            history = numpy.stack([[paths[i][max(len(paths[i]) - policy.n_obs_steps + j, 0)]
                                    for j in range(policy.n_obs_steps)] for i in running])
            plans = policy.predict_action(history, steps=steps, method=method, seed=int(rng.integers(2**31)))
            for plan, i in zip(plans, list(running)):
                for action in plan[:policy.n_action_steps]:
                    obs, reward, terminated, truncated, info = envs[i].step(action)
                    paths[i].append(numpy.asarray(obs, dtype=numpy.float32).reshape(-1))
                    result = results[i]
                    result["return"] += float(reward)
                    result["length"] += 1
                    result["info"] = info
                    if terminated or truncated or result["length"] >= max_steps:
                        running.remove(i)
                        break
    for result, path in zip(results, paths):
        result["observations"] = numpy.stack(path)
    return results
