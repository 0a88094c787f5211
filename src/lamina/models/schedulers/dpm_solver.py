"""DPM-Solver++ multistep (Lu et al. 2022), data-prediction form, orders 1 to 3, and the
original DPM-Solver (noise-prediction form).

With alpha_s = 1 / sqrt(sigma_s^2 + 1), sigma'_s = sigma_s alpha_s (the x_t-space noise scale),
lambda_s = log(alpha_s / sigma'_s), h = lambda_t - lambda_s0 and D_k the x_0^ of the last
steps (newest first), the step from s0 to t is

    x_t = (sigma'_t / sigma'_s0) x_s0 - alpha_t (e^{-h} - 1) D_0                      (order 1)
          - alpha_t (e^{-h} - 1) D1 / 2                                         (+ 2, midpoint)
          + alpha_t ((e^{-h} - 1) / h + 1) D1                                      (+ 2, heun)
          + alpha_t ((e^{-h} - 1) / h + 1) D1' - alpha_t ((e^{-h} - 1 + h) / h^2 - 1/2) D2  (3)

D1 = (D_0 - D_1) / r0 with r0 = h_0 / h, h_0 = lambda_s0 - lambda_s1; for order 3, D1' =
D1_0 + r0 / (r0 + r1) (D1_0 - D1_1) and D2 = (D1_0 - D1_1) / (r0 + r1). The first steps use
lower orders (no history yet). ``algorithm_type='dpmsolver'`` works on the eps^ of the
last steps instead (D_k), with phi = e^h - 1:

    x_t = (alpha_t / alpha_s0) x_s0 - sigma'_t phi D_0                                 (order 1)
          - sigma'_t phi D1 / 2                                                 (+ 2, midpoint)
          - sigma'_t (phi / h - 1) D1                                               (+ 2, heun)
          - sigma'_t (phi / h - 1) D1' - sigma'_t ((phi - h) / h^2 - 1/2) D2                 (3)

and needs ``final_sigmas_type='sigma_min'`` (the step to sigma' = 0 is undefined). In both
forms ``lower_order_final`` also lowers the last steps (when fewer
than 15), and a final step to sigma = 0 is always first order. Timesteps: 'linspace'
rounds linspace(0, T-1, n+1) reversed, dropping the 0; 'leading' k (T // (n+1)) +
steps_offset; 'trailing' round(T - k T / n) - 1; ``use_karras_sigmas`` as in :mod:`sigma`.
"""

from __future__ import annotations

import numpy as np

from lamina.models.schedulers.base import (
    COMMON_DEFAULTS,
    Scheduler,
    SchedulerOutput,
    as_array,
    karras_sigmas,
)

__all__ = ["DPMSolverMultistepScheduler"]

SOLVER_TYPES = ("midpoint", "heun")
ALGORITHM_TYPES = ("dpmsolver++", "dpmsolver")
FINAL_SIGMAS = ("zero", "sigma_min")


class DPMSolverMultistepScheduler(Scheduler):
    """DPM-Solver++ or DPM-Solver (``algorithm_type``, module notes): ``solver_order`` 1-3,
    ``solver_type`` 'midpoint' or 'heun', ``lower_order_final``, ``final_sigmas_type`` 'zero' or
    'sigma_min', Karras sigmas."""

    defaults = {**COMMON_DEFAULTS, "thresholding": False, "dynamic_thresholding_ratio": 0.995,
                "sample_max_value": 1.0, "timestep_spacing": "linspace", "solver_order": 2,
                "algorithm_type": "dpmsolver++", "solver_type": "midpoint", "lower_order_final": True,
                "use_karras_sigmas": False, "final_sigmas_type": "zero"}

    def __init__(self, **config):
        super().__init__(**config)
        c = self.config
        self.check_solver_options(solver_type=SOLVER_TYPES, algorithm_type=ALGORITHM_TYPES,
                                  final_sigmas_type=FINAL_SIGMAS)
        if c["algorithm_type"] == "dpmsolver" and c["final_sigmas_type"] == "zero":
            raise ValueError("DPMSolverMultistepScheduler: algorithm_type='dpmsolver' cannot step to sigma = 0; "
                             "use final_sigmas_type='sigma_min'")
        self.order = c["solver_order"]

    def _set_timesteps(self, n: int) -> None:
        T, spacing = self.config["num_train_timesteps"], self.config["timestep_spacing"]
        if spacing == "linspace":
            timesteps = np.linspace(0, T - 1, n + 1).round()[::-1][:-1]
        elif spacing == "leading":
            timesteps = (np.arange(n + 1) * (T // (n + 1))).round()[::-1][:-1] + self.config["steps_offset"]
        else:
            timesteps = np.round(np.arange(T, 0, -T / n)) - 1
        sigmas = np.interp(timesteps, np.arange(T), self.train_sigmas)
        if self.config["use_karras_sigmas"]:
            sigmas = karras_sigmas(n, float(self.train_sigmas[0]), float(self.train_sigmas[-1]))
            timesteps = np.interp(np.log(sigmas), np.log(self.train_sigmas), np.arange(T)).round()
        last = 0.0 if self.config["final_sigmas_type"] == "zero" else float(self.train_sigmas[0])
        self.timesteps = timesteps.astype(np.int64)
        self.sigmas = np.concatenate([sigmas, [last]])
        self.model_outputs: list[np.ndarray] = []
        self.lower_order_nums = 0

    @staticmethod
    def alpha_sigma(sigma: float) -> tuple[float, float]:
        """(alpha_t, sigma'_t) of the x_t-space at noise level sigma."""
        alpha = 1.0 / np.sqrt(sigma ** 2 + 1)
        return alpha, sigma * alpha

    def _lambda(self, index: int) -> tuple[float, float, float]:
        alpha, sigma = self.alpha_sigma(float(self.sigmas[index]))
        with np.errstate(divide="ignore"):
            return alpha, sigma, float(np.log(alpha) - np.log(sigma))

    def convert_model_output(self, model_output: np.ndarray, sample: np.ndarray, index: int) -> np.ndarray:
        """x_0^ (thresholded when asked) from the net's output at step ``index``, or eps^ for
        'dpmsolver' (from the thresholded x_0^ when thresholding)."""
        alpha, sigma = self.alpha_sigma(float(self.sigmas[index]))
        x0, eps = self.x0_and_eps(model_output, sample, alpha ** 2)
        if self.config["thresholding"]:
            x0 = self.threshold(x0)
            eps = (sample - alpha * x0) / sigma
        return x0 if self.config["algorithm_type"] == "dpmsolver++" else eps

    def _update(self, sample: np.ndarray, order: int, i: int) -> np.ndarray:
        alpha_t, sigma_t, lambda_t = self._lambda(i + 1)
        alpha_s0, sigma_s0, lambda_s0 = self._lambda(i)
        h = lambda_t - lambda_s0
        outputs = self.model_outputs
        if self.config["algorithm_type"] == "dpmsolver":
            return self._noise_update(sample, order, i, h, alpha_t / alpha_s0, sigma_t)
        phi = np.expm1(-h)                         # e^{-h} - 1
        x = (sigma_t / sigma_s0) * sample - alpha_t * phi * outputs[-1]
        if order == 1:
            return x
        lambda_s1 = self._lambda(i - 1)[2]
        r0 = (lambda_s0 - lambda_s1) / h
        d1_0 = (outputs[-1] - outputs[-2]) / r0
        if order == 2:
            if self.config["solver_type"] == "midpoint":
                return x - 0.5 * alpha_t * phi * d1_0
            return x + alpha_t * (phi / h + 1) * d1_0
        r1 = (lambda_s1 - self._lambda(i - 2)[2]) / h
        d1_1 = (outputs[-2] - outputs[-3]) / r1
        d1 = d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1)
        d2 = (d1_0 - d1_1) / (r0 + r1)
        return x + alpha_t * (phi / h + 1) * d1 - alpha_t * ((phi + h) / h ** 2 - 0.5) * d2

    def _differences(self, i: int, h: float) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(D1, D1', D2) of the module notes at step ``i`` (None where the history is short)."""
        outputs = self.model_outputs
        if len(outputs) < 2:
            return None, None, None
        lambda_s0, lambda_s1 = self._lambda(i)[2], self._lambda(i - 1)[2]
        r0 = (lambda_s0 - lambda_s1) / h
        d1_0 = (outputs[-1] - outputs[-2]) / r0
        if len(outputs) < 3:
            return d1_0, None, None
        r1 = (lambda_s1 - self._lambda(i - 2)[2]) / h
        d1_1 = (outputs[-2] - outputs[-3]) / r1
        return d1_0, d1_0 + r0 / (r0 + r1) * (d1_0 - d1_1), (d1_0 - d1_1) / (r0 + r1)

    def _noise_update(self, sample: np.ndarray, order: int, i: int, h: float, alpha_ratio: float,
                      sigma_t: float) -> np.ndarray:
        """The DPM-Solver step (noise form, module notes)."""
        phi = np.expm1(h)                          # e^h - 1
        x = alpha_ratio * sample - sigma_t * phi * self.model_outputs[-1]
        if order == 1:
            return x
        d1_0, d1, d2 = self._differences(i, h)
        if order == 2:
            if self.config["solver_type"] == "midpoint":
                return x - 0.5 * sigma_t * phi * d1_0
            return x - sigma_t * (phi / h - 1) * d1_0
        return x - sigma_t * (phi / h - 1) * d1 - sigma_t * ((phi - h) / h ** 2 - 0.5) * d2

    def step(self, model_output, timestep, sample, generator=None) -> SchedulerOutput:
        i = self._begin_step(timestep, "step")
        output, x = as_array(model_output, "DPMSolverMultistepScheduler.step"), as_array(
            sample, "DPMSolverMultistepScheduler.step")
        n, c = len(self.timesteps), self.config
        few = c["lower_order_final"] and n < 15
        lower_final = i == n - 1 and (few or c["final_sigmas_type"] == "zero")
        lower_second = i == n - 2 and few
        x0 = self.convert_model_output(output, x, i)
        self.model_outputs = [*self.model_outputs, x0][-c["solver_order"]:]
        if c["solver_order"] == 1 or self.lower_order_nums < 1 or lower_final:
            order = 1
        elif c["solver_order"] == 2 or self.lower_order_nums < 2 or lower_second:
            order = 2
        else:
            order = 3
        with np.errstate(divide="ignore", invalid="ignore"):
            prev = self._update(x, order, i)
        self.lower_order_nums = min(self.lower_order_nums + 1, c["solver_order"])
        self.step_index = i + 1
        return SchedulerOutput(prev.astype(x.dtype), x0.astype(x.dtype))
