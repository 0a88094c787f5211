"""DPM-Solver(++) single-step (Lu et al. 2022): the timesteps are grouped into blocks of 1, 2
or 3 steps (``order_list``); inside a block every step restarts from the block's first sample
x_s, so the step ending a block of k steps is a k-th order single-step solver over the whole
block, using the net's outputs at its intermediate points.

Notation as in :mod:`dpm_solver`; for the step to t ending a block that started at s_{k-1}
(newest output m_0 at s0), h = lambda_t - lambda_s(k-1) and r_j = (lambda_sj - lambda_s(k-1)) / h.
Order 2 (data form; the noise form as in :mod:`dpm_solver`), D0 = m_1, D1 = (m_0 - m_1) / r_0:

    x_t = (sigma'_t / sigma'_s1) x_s1 - alpha_t (e^{-h} - 1) D0 - alpha_t (e^{-h} - 1) D1 / 2    (midpoint)
                                            + alpha_t ((e^{-h} - 1) / h + 1) D1 in place of the last (heun)

Order 3: D0 = m_2, D1_0 = (m_1 - m_2) / r_1, D1_1 = (m_0 - m_2) / r_0, D1 = (r_0 D1_0 - r_1 D1_1)
/ (r_0 - r_1), D2 = 2 (D1_1 - D1_0) / (r_0 - r_1); 'midpoint' adds
alpha_t ((e^{-h} - 1) / h + 1) D1_1, 'heun' adds the same with D1 and subtracts
alpha_t ((e^{-h} - 1 + h) / h^2 - 1/2) D2. The blocks (diffusers' order list) for n steps and
``solver_order`` p: [1, 2, 3] repeated, the remainder in a last short block, with
``lower_order_final`` ending on lower orders ([..., 1, 2, 1] when 3 divides n, [..., 1, 1] for
p = 2 and even n); a final step to sigma = 0 is always first order.
"""

from __future__ import annotations

import numpy as np

from lamina.models.schedulers.base import COMMON_DEFAULTS, Scheduler, SchedulerOutput, as_array
from lamina.models.schedulers.dpm_solver import (
    ALGORITHM_TYPES,
    FINAL_SIGMAS,
    SOLVER_TYPES,
    DPMSolverMultistepScheduler,
)

__all__ = ["DPMSolverSinglestepScheduler", "singlestep_orders"]


def singlestep_orders(n: int, solver_order: int, lower_order_final: bool, final_to_zero: bool) -> list[int]:
    """The order of each of the ``n`` steps (module notes)."""
    p = solver_order
    if p == 1:
        orders = [1] * n
    elif not lower_order_final:
        orders = list(range(1, p + 1)) * (n // p) + list(range(1, n % p + 1))
    elif p == 3:
        orders = {0: [1, 2, 3] * (n // 3 - 1) + [1, 2, 1], 1: [1, 2, 3] * (n // 3) + [1],
                  2: [1, 2, 3] * (n // 3) + [1, 2]}[n % 3]
    else:
        orders = [1, 2] * (n // 2 - 1) + [1, 1] if n % 2 == 0 else [1, 2] * (n // 2) + [1]
    if final_to_zero:
        orders[-1] = 1
    return orders


class DPMSolverSinglestepScheduler(Scheduler):
    """DPM-Solver(++) single-step (module notes): ``solver_order`` 1-3, ``algorithm_type``
    'dpmsolver++' or 'dpmsolver', ``solver_type`` 'midpoint' or 'heun', ``lower_order_final``,
    Karras sigmas, ``final_sigmas_type``."""

    defaults = {**COMMON_DEFAULTS, "thresholding": False, "dynamic_thresholding_ratio": 0.995,
                "sample_max_value": 1.0, "timestep_spacing": "linspace", "solver_order": 2,
                "algorithm_type": "dpmsolver++", "solver_type": "midpoint", "lower_order_final": True,
                "use_karras_sigmas": False, "final_sigmas_type": "zero"}

    def __init__(self, **config):
        super().__init__(**config)
        c, name = self.config, "DPMSolverSinglestepScheduler"
        self.check_solver_options(solver_type=SOLVER_TYPES, algorithm_type=ALGORITHM_TYPES,
                                  final_sigmas_type=FINAL_SIGMAS)
        if c["algorithm_type"] == "dpmsolver" and c["final_sigmas_type"] == "zero":
            raise ValueError(f"{name}: algorithm_type='dpmsolver' cannot step to sigma = 0; use "
                             "final_sigmas_type='sigma_min'")
        self.order = c["solver_order"]

    alpha_sigma = staticmethod(DPMSolverMultistepScheduler.alpha_sigma)
    _lambda = DPMSolverMultistepScheduler._lambda
    convert_model_output = DPMSolverMultistepScheduler.convert_model_output

    def _set_timesteps(self, n: int) -> None:
        DPMSolverMultistepScheduler._set_timesteps(self, n)
        c = self.config
        self.order_list = singlestep_orders(n, c["solver_order"], c["lower_order_final"],
                                            c["final_sigmas_type"] == "zero")
        self.block_start: np.ndarray | None = None

    def _update(self, x: np.ndarray, order: int, i: int) -> np.ndarray:
        """The step to index i + 1 of a block of ``order`` steps that started at x (index i + 1 - order)."""
        alpha_t, sigma_t, lambda_t = self._lambda(i + 1)
        alpha_b, sigma_b, lambda_b = self._lambda(i + 1 - order)
        h = lambda_t - lambda_b
        m = self.model_outputs
        if self.config["algorithm_type"] == "dpmsolver++":
            scale, first, phi = sigma_t / sigma_b, -alpha_t, np.expm1(-h)
            # x_t gains tail (phi_2 D1 - phi_3 D2) from the higher differences
            tail, phi_2, phi_3 = alpha_t, phi / h + 1, (phi + h) / h ** 2 - 0.5
        else:
            scale, first, phi = alpha_t / alpha_b, -sigma_t, np.expm1(h)
            tail, phi_2, phi_3 = -sigma_t, phi / h - 1, -((phi - h) / h ** 2 - 0.5)
        x_t = scale * x + first * phi * m[-order]
        if order == 1:
            return x_t
        heun = self.config["solver_type"] == "heun"
        r0 = (self._lambda(i)[2] - lambda_b) / h
        if order == 2:
            d1 = (m[-1] - m[-2]) / r0
            return x_t + tail * phi_2 * d1 if heun else x_t + first * phi * d1 / 2
        r1 = (self._lambda(i - 1)[2] - lambda_b) / h
        d1_0, d1_1 = (m[-2] - m[-3]) / r1, (m[-1] - m[-3]) / r0
        if not heun:
            return x_t + tail * phi_2 * d1_1
        d1 = (r0 * d1_0 - r1 * d1_1) / (r0 - r1)
        d2 = 2.0 * (d1_1 - d1_0) / (r0 - r1)
        return x_t + tail * (phi_2 * d1 - phi_3 * d2)

    def step(self, model_output, timestep, sample, generator=None) -> SchedulerOutput:
        i = self._begin_step(timestep, "step")
        name = "DPMSolverSinglestepScheduler.step"
        output, x = as_array(model_output, name), as_array(sample, name)
        converted = self.convert_model_output(output, x, i)
        self.model_outputs = [*self.model_outputs, converted][-self.config["solver_order"]:]
        order = min(self.order_list[i], len(self.model_outputs))
        if order == 1 or self.block_start is None:
            order, self.block_start = 1, x
        with np.errstate(divide="ignore", invalid="ignore"):
            prev = self._update(self.block_start, order, i)
        self.step_index = i + 1
        x0 = converted if self.config["algorithm_type"] == "dpmsolver++" else None
        return SchedulerOutput(prev.astype(x.dtype), None if x0 is None else x0.astype(x.dtype))
