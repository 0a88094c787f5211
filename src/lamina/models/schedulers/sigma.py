"""The schedulers of k-diffusion (Karras et al. 2022), which integrate the probability-flow
ODE in the variance-exploding variable z = x_t / sqrt(abar_t) and noise level
sigma = sqrt((1 - abar) / abar):

    dz / dsigma = (z - D(z; sigma)) / sigma,   D = x_0^ (the denoised prediction).

The net sees z / sqrt(sigma^2 + 1) = x_t (:meth:`scale_model_input`), and the sampler starts
from noise times ``init_noise_sigma``. x_0^ from the output: epsilon z - sigma eps;
v_prediction z / (sigma^2 + 1) - sigma / sqrt(sigma^2 + 1) v; sample: the output.

* Euler: z' = z + (sigma' - sigma) d, d = (z - x_0^) / sigma (with Karras' churn: first
  sigma_hat = (1 + gamma) sigma and z += sqrt(sigma_hat^2 - sigma^2) S_noise n);
* Euler ancestral: sigma_up = sqrt(sigma'^2 (sigma^2 - sigma'^2) / sigma^2), sigma_down =
  sqrt(sigma'^2 - sigma_up^2), z' = z + (sigma_down - sigma) d + sigma_up n;
* Heun: an Euler step to sigma', then the net at sigma' and the step redone with the mean
  of the two slopes (no second stage on the last step to sigma = 0);
* LMS: z' = z + sum_j c_j d_{i-j}, c_j the integral from sigma_i to sigma_{i+1} of the
  Lagrange basis polynomial of sigma_{i-j} over the last ``order`` noise levels.

Timesteps (floats): 'linspace' linspace(0, T-1, n) reversed, 'leading' k (T // n) +
steps_offset, 'trailing' round(T - k T / n) - 1; sigmas interpolated linearly in t, then a 0
appended. ``use_karras_sigmas`` replaces them by :func:`karras_sigmas` between the training
sigmas' extremes (rho = 7), the timesteps found by interpolating log sigma.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.polynomial import polynomial as P

from lamina.models.schedulers.base import (
    COMMON_DEFAULTS,
    Scheduler,
    SchedulerOutput,
    as_array,
    karras_sigmas,
    rng_from,
)

__all__ = ["EulerAncestralDiscreteScheduler", "EulerDiscreteScheduler", "HeunDiscreteScheduler",
           "LMSDiscreteScheduler"]

SIGMA_DEFAULTS = {**COMMON_DEFAULTS, "timestep_spacing": "linspace", "use_karras_sigmas": False}


class _SigmaScheduler(Scheduler):
    defaults = SIGMA_DEFAULTS

    def _set_timesteps(self, n: int) -> None:
        timesteps, sigmas = self.sigma_timesteps(n)
        self.timesteps, self.sigmas = timesteps, np.concatenate([sigmas, [0.0]])

    def sigma_timesteps(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The n float timesteps and their sigmas, both decreasing (module notes)."""
        T, spacing = self.config["num_train_timesteps"], self.config["timestep_spacing"]
        if spacing == "linspace":
            timesteps = np.linspace(0, T - 1, n, dtype=np.float64)[::-1].copy()
        elif spacing == "leading":
            timesteps = (np.arange(n) * (T // n)).round()[::-1].astype(np.float64) + self.config["steps_offset"]
        else:
            timesteps = np.round(np.arange(T, 0, -T / n)) - 1.0
        sigmas = np.interp(timesteps, np.arange(T), self.train_sigmas)
        if self.config["use_karras_sigmas"]:
            sigmas = karras_sigmas(n, float(sigmas[-1]), float(sigmas[0]))
            timesteps = self.sigma_to_t(sigmas)
        return timesteps, sigmas

    def sigma_to_t(self, sigmas: np.ndarray) -> np.ndarray:
        """The (fractional) training timesteps of ``sigmas``: log sigma interpolated linearly."""
        T = self.config["num_train_timesteps"]
        return np.interp(np.log(sigmas), np.log(self.train_sigmas), np.arange(T, dtype=np.float64))

    @property
    def init_noise_sigma(self) -> float:
        top = float(self.sigmas.max()) if self.timesteps is not None else float(self.train_sigmas[-1])
        return top if self.config["timestep_spacing"] in ("linspace", "trailing") else math.sqrt(top ** 2 + 1)

    def scale_model_input(self, sample, timestep=None) -> np.ndarray:
        """z / sqrt(sigma^2 + 1) at the current step's sigma."""
        x = as_array(sample, f"{type(self).__name__}.scale_model_input")
        i = self._begin_step(timestep, "scale_model_input")
        return (x / math.sqrt(self.sigmas[i] ** 2 + 1)).astype(x.dtype)

    def denoised(self, output: np.ndarray, z: np.ndarray, sigma: float) -> np.ndarray:
        """x_0^ from the net's output at z and sigma (module notes)."""
        kind = self.config["prediction_type"]
        if kind == "epsilon":
            return z - sigma * output
        if kind == "v_prediction":
            return z / (sigma ** 2 + 1) - output * (sigma / math.sqrt(sigma ** 2 + 1))
        return output

    def _inputs(self, model_output, timestep, sample) -> tuple[int, np.ndarray, np.ndarray]:
        who = f"{type(self).__name__}.step"
        i = self._begin_step(timestep, "step")
        return i, as_array(model_output, who), as_array(sample, who)


class EulerDiscreteScheduler(_SigmaScheduler):
    """Euler's method on the probability-flow ODE (module notes), with Karras' optional churn
    (``s_churn`` > 0 adds noise for sigma in [s_tmin, s_tmax])."""

    def step(self, model_output, timestep, sample, s_churn: float = 0.0, s_tmin: float = 0.0,
             s_tmax: float = float("inf"), s_noise: float = 1.0, generator=None, noise=None) -> SchedulerOutput:
        i, output, z = self._inputs(model_output, timestep, sample)
        sigma, sigma_next = float(self.sigmas[i]), float(self.sigmas[i + 1])
        gamma = min(s_churn / (len(self.sigmas) - 1), math.sqrt(2) - 1) if s_tmin <= sigma <= s_tmax else 0.0
        sigma_hat = sigma * (gamma + 1)
        if gamma > 0:
            n = rng_from(generator).standard_normal(z.shape) if noise is None else as_array(noise, "Euler")
            z = z + n * s_noise * math.sqrt(sigma_hat ** 2 - sigma ** 2)
        x0 = self.denoised(output, z, sigma_hat)
        prev = z + (z - x0) / sigma_hat * (sigma_next - sigma_hat)
        self.step_index = i + 1
        return SchedulerOutput(prev.astype(z.dtype), x0.astype(z.dtype))


class EulerAncestralDiscreteScheduler(_SigmaScheduler):
    """Euler's step to sigma_down followed by fresh noise of scale sigma_up (module notes)."""

    def step(self, model_output, timestep, sample, generator=None, noise=None) -> SchedulerOutput:
        i, output, z = self._inputs(model_output, timestep, sample)
        sigma, sigma_next = float(self.sigmas[i]), float(self.sigmas[i + 1])
        x0 = self.denoised(output, z, sigma)
        sigma_up = math.sqrt(sigma_next ** 2 * (sigma ** 2 - sigma_next ** 2) / sigma ** 2)
        sigma_down = math.sqrt(sigma_next ** 2 - sigma_up ** 2)
        n = rng_from(generator).standard_normal(z.shape) if noise is None else as_array(noise, "EulerAncestral")
        prev = z + (z - x0) / sigma * (sigma_down - sigma) + n * sigma_up
        self.step_index = i + 1
        return SchedulerOutput(prev.astype(z.dtype), x0.astype(z.dtype))


class HeunDiscreteScheduler(_SigmaScheduler):
    """Heun's second-order method (module notes): every inner timestep appears twice, and
    each pair of calls to :meth:`step` makes one step."""

    order = 2

    def _set_timesteps(self, n: int) -> None:
        timesteps, sigmas = self.sigma_timesteps(n)
        sigmas = np.concatenate([sigmas, [0.0]])
        self.sigmas = np.concatenate([sigmas[:1], np.repeat(sigmas[1:-1], 2), sigmas[-1:]])
        self.timesteps = np.concatenate([timesteps[:1], np.repeat(timesteps[1:], 2)])
        self.first_stage: tuple[np.ndarray, np.ndarray, float] | None = None

    @property
    def state_in_first_order(self) -> bool:
        return self.first_stage is None

    def index_for_timestep(self, timestep) -> int:
        found = super().index_for_timestep(timestep)
        return found - 1 if found > 0 and self.timesteps[found - 1] == self.timesteps[found] else found

    def step(self, model_output, timestep, sample, generator=None) -> SchedulerOutput:
        i, output, z = self._inputs(model_output, timestep, sample)
        if self.first_stage is None:
            sigma, sigma_next = float(self.sigmas[i]), float(self.sigmas[i + 1])
            x0 = self.denoised(output, z, sigma)
            slope, dt = (z - x0) / sigma, sigma_next - sigma
            self.first_stage = (slope, z, dt) if sigma_next > 0 else None
            prev = z + slope * dt
        else:
            sigma_next = float(self.sigmas[i])
            x0 = self.denoised(output, z, sigma_next)
            first_slope, start, dt = self.first_stage
            prev = start + (first_slope + (z - x0) / sigma_next) / 2 * dt
            self.first_stage = None
        self.step_index = i + 1
        return SchedulerOutput(prev.astype(z.dtype), x0.astype(z.dtype))


class LMSDiscreteScheduler(_SigmaScheduler):
    """The linear multistep method on the probability-flow ODE (module notes), of ``order``
    (default 4; lower on the first steps) given to :meth:`step`."""

    def _set_timesteps(self, n: int) -> None:
        super()._set_timesteps(n)
        self.derivatives: list[np.ndarray] = []

    def lms_coefficient(self, order: int, i: int, j: int) -> float:
        """The integral from sigma_i to sigma_{i+1} of the Lagrange basis polynomial that is 1 at
        sigma_{i-j} and 0 at the other sigma_{i-k}, k < order."""
        basis = np.array([1.0])
        for k in range(order):
            if k != j:
                node = self.sigmas[i - k]
                basis = P.polymul(basis, np.array([-node, 1.0]) / (self.sigmas[i - j] - node))
        antiderivative = P.polyint(basis)
        return float(P.polyval(self.sigmas[i + 1], antiderivative) - P.polyval(self.sigmas[i], antiderivative))

    def step(self, model_output, timestep, sample, order: int = 4, generator=None) -> SchedulerOutput:
        i, output, z = self._inputs(model_output, timestep, sample)
        if not isinstance(order, int) or order < 1:
            raise ValueError(f"LMSDiscreteScheduler.step: order must be a positive int, got {order!r}")
        sigma = float(self.sigmas[i])
        x0 = self.denoised(output, z, sigma)
        self.derivatives = [*self.derivatives, (z - x0) / sigma][-order:]
        used = min(i + 1, order)
        prev = z + sum(self.lms_coefficient(used, i, j) * d
                       for j, d in enumerate(reversed(self.derivatives[-used:])))
        self.step_index = i + 1
        return SchedulerOutput(prev.astype(z.dtype), x0.astype(z.dtype))
