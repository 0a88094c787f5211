"""UniPC multistep (Zhao et al. 2023): a predictor UniP of order p and a corrector UniC that
re-solves the last step once the net has been evaluated at its result.

With the notation of :mod:`dpm_solver` (alpha_s, sigma'_s, lambda_s), h = lambda_t - lambda_s0,
hh = -h when predicting x_0 (``predict_x0``) and hh = h when predicting the noise, the models
m_k of the last steps (newest m_0), r_k = (lambda_sk - lambda_s0) / h and D_k = (m_k - m_0) / r_k,
phi_1 = e^{hh} - 1, phi_{k+1} = phi_k / hh - 1 / (k+1)! (phi_1 / hh - 1 first) and
B(h) = hh ('bh1') or e^{hh} - 1 ('bh2'), the coefficients solve R rho = b with
R_ij = r_j^i and b_i = phi_{i+1} i! / B(h). The predictor is (x_0 form)

    x_t = (sigma'_t / sigma'_s0) x_s0 - alpha_t phi_1 m_0 - alpha_t B(h) sum_k rho^p_k D_k

(rho^p = 1/2 for order 2, else the solution over the history r_1..r_{p-1}); in the noise form
alpha_t / alpha_s0 and sigma'_t replace sigma'_t / sigma'_s0 and alpha_t. The corrector adds
the net's model at t itself, D_t = m_t - m_0 with r = 1, with rho^c solving the full system
(1/2 for order 1), and is applied at the start of every step but the first (so never to the
final sample), unless the previous step's index is in ``disable_corrector``.
``lower_order_final`` caps the order at the steps left; timesteps and sigmas as in
:mod:`dpm_solver`.
"""

from __future__ import annotations

import math

import numpy as np

from lamina.models.schedulers.base import COMMON_DEFAULTS, Scheduler, SchedulerOutput, as_array
from lamina.models.schedulers.dpm_solver import FINAL_SIGMAS, DPMSolverMultistepScheduler

__all__ = ["UniPCMultistepScheduler"]

SOLVER_TYPES = ("bh1", "bh2")


class UniPCMultistepScheduler(Scheduler):
    """UniPC (module notes): ``solver_order`` 1-3, ``solver_type`` 'bh1' or 'bh2', ``predict_x0``,
    ``disable_corrector`` (step indices), ``lower_order_final``, Karras sigmas, ``final_sigmas_type``."""

    defaults = {**COMMON_DEFAULTS, "thresholding": False, "dynamic_thresholding_ratio": 0.995,
                "sample_max_value": 1.0, "timestep_spacing": "linspace", "solver_order": 2, "predict_x0": True,
                "solver_type": "bh2", "lower_order_final": True, "disable_corrector": [],
                "use_karras_sigmas": False, "final_sigmas_type": "zero"}

    def __init__(self, **config):
        super().__init__(**config)
        c = self.config
        self.check_solver_options(solver_type=SOLVER_TYPES, final_sigmas_type=FINAL_SIGMAS)
        if not c["predict_x0"] and c["final_sigmas_type"] == "zero":
            raise ValueError("UniPCMultistepScheduler: predict_x0=False cannot step to sigma = 0 (the noise form "
                             "divides by it); use final_sigmas_type='sigma_min'")
        c["disable_corrector"] = [int(k) for k in c["disable_corrector"]]
        self.order = c["solver_order"]

    alpha_sigma = staticmethod(DPMSolverMultistepScheduler.alpha_sigma)
    _lambda = DPMSolverMultistepScheduler._lambda

    def _set_timesteps(self, n: int) -> None:
        DPMSolverMultistepScheduler._set_timesteps(self, n)
        self.last_sample: np.ndarray | None = None
        self.this_order = 1

    def convert_model_output(self, model_output: np.ndarray, sample: np.ndarray, index: int) -> np.ndarray:
        """x_0^ (thresholded when asked) or, with predict_x0=False, eps^ from the net's output."""
        alpha, _ = self.alpha_sigma(float(self.sigmas[index]))
        x0, eps = self.x0_and_eps(model_output, sample, alpha ** 2)
        if not self.config["predict_x0"]:
            return eps
        return self.threshold(x0) if self.config["thresholding"] else x0

    def _coefficients(self, hh: float, rks: list[float]) -> tuple[np.ndarray, np.ndarray, float]:
        """(R, b, B(h)) of the module notes for the ratios ``rks`` (ending with 1)."""
        b_h = hh if self.config["solver_type"] == "bh1" else math.expm1(hh)
        phi_k = math.expm1(hh) / hh - 1
        rows, b = [], []
        for i in range(1, len(rks) + 1):
            rows.append(np.asarray(rks) ** (i - 1))
            b.append(phi_k * math.factorial(i) / b_h)
            phi_k = phi_k / hh - 1 / math.factorial(i + 1)
        return np.stack(rows), np.asarray(b), b_h

    def _update(self, x: np.ndarray, target: int, source: int, order: int, history_from: int,
                model_t: np.ndarray | None) -> np.ndarray:
        """One UniP step (``model_t`` None) or UniC step from index ``source`` to ``target``; the
        k-th older model was made at index ``history_from - k``."""
        alpha_t, sigma_t, lambda_t = self._lambda(target)
        alpha_s0, sigma_s0, lambda_s0 = self._lambda(source)
        h = lambda_t - lambda_s0
        outputs = self.model_outputs
        m0 = outputs[-1]
        rks, d1s = [], []
        for k in range(1, order):
            rk = (self._lambda(history_from - k)[2] - lambda_s0) / h
            rks.append(rk)
            d1s.append((outputs[-(k + 1)] - m0) / rk)
        rks.append(1.0)
        hh = -h if self.config["predict_x0"] else h
        R, b, b_h = self._coefficients(hh, rks)
        if model_t is None:
            rhos = np.array([0.5]) if order == 2 else (np.linalg.solve(R[:-1, :-1], b[:-1]) if order > 2 else [])
            residual = sum(r * d for r, d in zip(rhos, d1s))
            if order == 1:      # no history term (B(h) is infinite on a bh1 step to sigma = 0)
                b_h = 0.0
        else:
            rhos = np.array([0.5]) if order == 1 else np.linalg.solve(R, b)
            residual = sum(r * d for r, d in zip(rhos[:-1], d1s)) + rhos[-1] * (model_t - m0)
        if self.config["predict_x0"]:
            return sigma_t / sigma_s0 * x - alpha_t * math.expm1(hh) * m0 - alpha_t * b_h * residual
        return alpha_t / alpha_s0 * x - sigma_t * math.expm1(hh) * m0 - sigma_t * b_h * residual

    def step(self, model_output, timestep, sample, generator=None) -> SchedulerOutput:
        i = self._begin_step(timestep, "step")
        name = "UniPCMultistepScheduler.step"
        output, x = as_array(model_output, name), as_array(sample, name)
        c = self.config
        converted = self.convert_model_output(output, x, i)
        with np.errstate(divide="ignore", invalid="ignore"):
            if i > 0 and self.last_sample is not None and i - 1 not in c["disable_corrector"]:
                x = self._update(self.last_sample, i, i - 1, self.this_order, i - 1, converted).astype(x.dtype)
            self.model_outputs = [*self.model_outputs, converted][-c["solver_order"]:]
            order = min(c["solver_order"], len(self.timesteps) - i) if c["lower_order_final"] else c["solver_order"]
            self.this_order = min(order, len(self.model_outputs))
            self.last_sample = x
            prev = self._update(x, i + 1, i, self.this_order, i, None)
        self.step_index = i + 1
        x0 = converted if c["predict_x0"] else None
        return SchedulerOutput(prev.astype(x.dtype), None if x0 is None else x0.astype(x.dtype))
