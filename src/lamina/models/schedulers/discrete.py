"""The schedulers that step x_t between integer timesteps: DDPM (Ho et al. 2020), DDIM
(Song et al. 2021) and PNDM's pseudo linear multistep method (PLMS, Liu et al. 2022).

With a = abar_t, a' = abar_prev (1, or abar_0, before the first step), x_0^ and eps^ the
predictions (:meth:`Scheduler.x0_and_eps`):

* DDPM: x_prev = sqrt(a') beta_t' / (1 - a) x_0^ + sqrt(alpha_t') (1 - a') / (1 - a) x_t + std z,
  alpha_t' = a / a', beta_t' = 1 - alpha_t', std^2 = (1 - a') / (1 - a) beta_t' (no noise at t = 0);
* DDIM: std = eta sqrt((1 - a') / (1 - a) (1 - a / a')),
  x_prev = sqrt(a') x_0^ + sqrt(1 - a' - std^2) eps^ + std z;
* PLMS: eps' = the Adams-Bashforth combination of the last eps^ (orders 1-4, the first step a
  second-order Heun-like pair), then the deterministic DDIM transfer with eps'.
"""

from __future__ import annotations

import numpy as np

from lamina.models.schedulers.base import (
    COMMON_DEFAULTS,
    THRESHOLD_DEFAULTS,
    Scheduler,
    SchedulerOutput,
    as_array,
    rng_from,
)

__all__ = ["DDIMScheduler", "DDPMScheduler", "PNDMScheduler"]


class _DiscreteScheduler(Scheduler):
    def _set_timesteps(self, n: int) -> None:
        self.timesteps = self.discrete_timesteps(n)

    def _clean(self, x0: np.ndarray) -> np.ndarray:
        if self.config["thresholding"]:
            return self.threshold(x0)
        if self.config["clip_sample"]:
            limit = self.config["clip_sample_range"]
            return np.clip(x0, -limit, limit)
        return x0

    def _final_alpha_bar(self) -> float:
        return 1.0 if self.config.get("set_alpha_to_one", True) else float(self.alphas_cumprod[0])

    def _alpha_bar(self, t: int) -> float:
        return float(self.alphas_cumprod[t]) if t >= 0 else self._final_alpha_bar()


class DDPMScheduler(_DiscreteScheduler):
    """DDPM's ancestral step (module notes) over the chosen timesteps; variance 'fixed_small'
    (the posterior's) or 'fixed_large' (beta_t')."""

    defaults = {**COMMON_DEFAULTS, **THRESHOLD_DEFAULTS, "clip_sample": True, "variance_type": "fixed_small"}

    def __init__(self, **config):
        super().__init__(**config)
        if self.config["variance_type"] not in ("fixed_small", "fixed_large"):
            raise ValueError(f"DDPMScheduler: variance_type must be 'fixed_small' or 'fixed_large', got "
                             f"{self.config['variance_type']!r}")

    def previous_timestep(self, index: int) -> int:
        return int(self.timesteps[index + 1]) if index + 1 < len(self.timesteps) else -1

    def step(self, model_output, timestep, sample, generator=None, noise=None) -> SchedulerOutput:
        i = self._begin_step(timestep, "step")
        output, x = as_array(model_output, "DDPMScheduler.step"), as_array(sample, "DDPMScheduler.step")
        t, t_prev = int(self.timesteps[i]), self.previous_timestep(i)
        a = float(self.alphas_cumprod[t])
        a_prev = float(self.alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
        alpha_t = a / a_prev
        beta_t = 1.0 - alpha_t
        x0 = self._clean(self.x0_and_eps(output, x, a)[0])
        mean = (np.sqrt(a_prev) * beta_t / (1 - a)) * x0 + (np.sqrt(alpha_t) * (1 - a_prev) / (1 - a)) * x
        if t > 0:
            variance = beta_t if self.config["variance_type"] == "fixed_large" else \
                max((1 - a_prev) / (1 - a) * beta_t, 1e-20)
            z = rng_from(generator).standard_normal(x.shape) if noise is None else as_array(noise, "DDPMScheduler")
            mean = mean + np.sqrt(variance) * z
        self.step_index = i + 1
        return SchedulerOutput(mean.astype(x.dtype), x0.astype(x.dtype))


class DDIMScheduler(_DiscreteScheduler):
    """DDIM's step (module notes), noise scale ``eta`` given to :meth:`step` (0: deterministic).
    As diffusers, the previous timestep is t - T // num_inference_steps, and before the first
    timestep abar is 1 (``set_alpha_to_one``) or abar_0."""

    defaults = {**COMMON_DEFAULTS, **THRESHOLD_DEFAULTS, "clip_sample": True, "set_alpha_to_one": True}

    def step(self, model_output, timestep, sample, eta: float = 0.0, use_clipped_model_output: bool = False,
             generator=None, noise=None) -> SchedulerOutput:
        i = self._begin_step(timestep, "step")
        output, x = as_array(model_output, "DDIMScheduler.step"), as_array(sample, "DDIMScheduler.step")
        if not eta >= 0:
            raise ValueError(f"DDIMScheduler.step: eta must be >= 0, got {eta!r}")
        t = int(self.timesteps[i])
        a = float(self.alphas_cumprod[t])
        a_prev = self._alpha_bar(t - self.config["num_train_timesteps"] // self.num_inference_steps)
        x0, eps = self.x0_and_eps(output, x, a)
        x0 = self._clean(x0)
        if use_clipped_model_output:
            eps = (x - np.sqrt(a) * x0) / np.sqrt(1 - a)
        std = eta * np.sqrt((1 - a_prev) / (1 - a) * (1 - a / a_prev))
        prev = np.sqrt(a_prev) * x0 + np.sqrt(max(1 - a_prev - std ** 2, 0.0)) * eps
        if eta > 0:
            z = rng_from(generator).standard_normal(x.shape) if noise is None else as_array(noise, "DDIMScheduler")
            prev = prev + std * z
        self.step_index = i + 1
        return SchedulerOutput(prev.astype(x.dtype), x0.astype(x.dtype))


class PNDMScheduler(_DiscreteScheduler):
    """PLMS (module notes; diffusers' PNDM with ``skip_prk_steps=True``). Its timesteps repeat
    the second-to-last one, where the first step is completed."""

    defaults = {**COMMON_DEFAULTS, "skip_prk_steps": True, "set_alpha_to_one": False}

    def __init__(self, **config):
        super().__init__(**config)
        if not self.config["skip_prk_steps"]:
            raise ValueError("PNDMScheduler: only the PLMS steps are implemented; skip_prk_steps must be True")
        if self.config["prediction_type"] == "sample":
            raise ValueError("PNDMScheduler: prediction_type must be 'epsilon' or 'v_prediction', got 'sample'")

    def _set_timesteps(self, n: int) -> None:
        steps = self.discrete_timesteps(n)[::-1]
        self.timesteps = np.concatenate([steps[:-1], steps[-2:-1], steps[-1:]])[::-1].copy()
        self.eps_history: list[np.ndarray] = []
        self.counter, self.first_sample = 0, None

    def step(self, model_output, timestep, sample, generator=None) -> SchedulerOutput:
        i = self._begin_step(timestep, "step")
        output, x = as_array(model_output, "PNDMScheduler.step"), as_array(sample, "PNDMScheduler.step")
        t = int(self.timesteps[i])
        stride = self.config["num_train_timesteps"] // self.num_inference_steps
        t_prev = t - stride
        if self.counter != 1:
            self.eps_history = [*self.eps_history[-3:], output]
        else:
            t_prev, t = t, t + stride
        history = self.eps_history
        if len(history) == 1 and self.counter == 0:
            eps, self.first_sample = output, x
        elif len(history) == 1 and self.counter == 1:
            eps, x, self.first_sample = (output + history[-1]) / 2, self.first_sample, None
        elif len(history) == 2:
            eps = (3 * history[-1] - history[-2]) / 2
        elif len(history) == 3:
            eps = (23 * history[-1] - 16 * history[-2] + 5 * history[-3]) / 12
        else:
            eps = (55 * history[-1] - 59 * history[-2] + 37 * history[-3] - 9 * history[-4]) / 24
        self.counter += 1
        self.step_index = i + 1
        prev, x0 = self._transfer(x, t, t_prev, eps)
        return SchedulerOutput(prev.astype(x.dtype), x0.astype(x.dtype))

    def _transfer(self, x: np.ndarray, t: int, t_prev: int, output: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The deterministic DDIM step from t to t_prev with the combined output."""
        a, a_prev = float(self.alphas_cumprod[t]), self._alpha_bar(t_prev)
        x0, eps = self.x0_and_eps(output, x, a)
        return np.sqrt(a_prev) * x0 + np.sqrt(1 - a_prev) * eps, x0
