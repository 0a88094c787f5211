"""RAdam: Adam with its adaptive step rectified while the second moment rests on few gradients."""

from __future__ import annotations

import math
from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.adam import BetasOptimizer, _pair
from lamina.optim.inplace import axpy
from lamina.optim.optimizer import ParamsLike


class RAdam(BetasOptimizer):
    r"""Rectified Adam (Liu et al., "On the Variance of the Adaptive Learning Rate and Beyond").

    In Adam's first steps :math:`v` averages a handful of squared gradients and the
    adaptive factor :math:`1/\sqrt{v}` has a large variance (the reason warm-up helps).
    RAdam estimates the length :math:`\rho_t` of the simple moving average that the
    exponential one approximates; while :math:`\rho_t \le 5` the variance is intractable
    and the step is plain momentum SGD, after that the adaptive step is scaled by a
    rectification term :math:`r_t \to 1`. As ``torch.optim.RAdam`` (followed step for
    step), with g = ``dJ_dw + weight_decay*w`` and t the parameter's step count::

        m = beta1*m + (1-beta1)*g;   v = beta2*v + (1-beta2)*g*g
        m_hat   = m / (1 - beta1**t)
        rho_inf = 2/(1 - beta2) - 1
        rho_t   = rho_inf - 2*t*beta2**t / (1 - beta2**t)
        r_t     = sqrt((rho_t - 4)(rho_t - 2) rho_inf / ((rho_inf - 4)(rho_inf - 2) rho_t))
        w = w - lr * r_t * m_hat * sqrt(1 - beta2**t) / (sqrt(v) + eps)     if rho_t > 5
        w = w - lr * m_hat                                                 otherwise

    With the default ``beta2=0.999`` the first five steps are un-rectified.
    """

    _state_arrays = ("exp_avg", "exp_avg_sq")
    _state_numbers = ("step",)

    def __init__(self, params: ParamsLike, lr: float = 0.001, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, lr=lr, weight_decay=weight_decay, betas=_pair(betas), eps=eps)



    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        xp = backend.xp
        beta1, beta2 = group["betas"]
        state["step"] += 1
        t = state["step"]
        g = self._decayed_grad(p, grad, group["weight_decay"])
        work = self._scratch(p, 1)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        self._update_moments(m, v, g, work, group["betas"])
        bias_correction1 = 1.0 - beta1**t
        bias_correction2 = 1.0 - beta2**t
        rho_inf = 2.0 / (1.0 - beta2) - 1.0
        rho_t = rho_inf - 2.0 * t * beta2**t / bias_correction2
        step_size = group["lr"] / bias_correction1
        if rho_t > 5.0:
            rect = math.sqrt((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t))
            xp.sqrt(v, out=work)
            work += group["eps"]
            xp.divide(m, work, out=work)
            axpy(-step_size * rect * math.sqrt(bias_correction2), work, p.data)
        else:
            axpy(-step_size, m, p.data)
