"""MARS-AdamW: AdamW on a variance-reduced, norm-clipped gradient."""

from __future__ import annotations

import math
from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.adam import _check_betas_eps, _pair
from lamina.optim.inplace import axpy, scale
from lamina.optim.optimizer import Optimizer, ParamsLike


class MARS(Optimizer):
    r"""MARS-AdamW (Yuan et al., "MARS: Unleashing the Power of Variance Reduction for
    Training Large Models", 2024), the practical approximate variant of the authors' code:
    the correction uses the previous step's gradient (zero before the first step) instead of
    a second gradient at the previous weights. With g the gradient and t the parameter's step
    count::

        c = g + gamma * beta1/(1-beta1) * (g - g_prev)     # scaled gradient correction
        c = c / ||c||          if ||c|| > 1                 # norm of the whole tensor
        m = beta1*m + (1-beta1)*c
        v = beta2*v + (1-beta2)*c*c
        w = w - lr*weight_decay*w - (lr/(1-beta1**t)) * m / (sqrt(v)/sqrt(1-beta2**t) + eps)
        g_prev = g

    ``gamma = 0`` (and gradients of norm <= 1) is :class:`~lamina.optim.AdamW`. Every
    parameter takes this rule; the authors' code can instead give vectors (biases, norm
    scales) a plain AdamW with hyperparameters of their own.
    """

    _state_arrays = ("exp_avg", "exp_avg_sq", "last_grad")
    _state_numbers = ("step",)

    def __init__(self, params: ParamsLike, lr: float = 3e-3, betas: tuple[float, float] = (0.95, 0.99),
                 eps: float = 1e-8, weight_decay: float = 0.0, gamma: float = 0.025):
        super().__init__(params, lr=lr, weight_decay=weight_decay, betas=_pair(betas), eps=eps, gamma=gamma)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        _check_betas_eps(self, hp)
        self._check_number("gamma", hp["gamma"], low=0.0)

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        xp = backend.xp
        return {"step": 0, **{name: xp.zeros_like(p.data) for name in self._state_arrays}}

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        xp = backend.xp
        beta1, beta2 = group["betas"]
        lr = group["lr"]
        state["step"] += 1
        t = state["step"]
        m, v, g_prev = state["exp_avg"], state["exp_avg_sq"], state["last_grad"]
        c = self._scratch(p, 0)
        xp.subtract(grad, g_prev, out=c)
        scale(group["gamma"] * beta1 / (1.0 - beta1), c)
        c += grad
        norm = float(xp.sqrt(xp.vdot(c.ravel(), c.ravel())))
        if norm > 1.0:
            c /= norm
        scale(beta1, m)
        axpy(1.0 - beta1, c, m)
        work = self._scratch(p, 1)
        xp.multiply(c, c, out=work)
        scale(beta2, v)
        axpy(1.0 - beta2, work, v)
        xp.sqrt(v, out=work)
        work /= math.sqrt(1.0 - beta2**t)
        work += group["eps"]
        xp.divide(m, work, out=work)
        if group["weight_decay"]:
            scale(1.0 - lr * group["weight_decay"], p.data)
        axpy(-lr / (1.0 - beta1**t), work, p.data)
        g_prev[...] = grad
