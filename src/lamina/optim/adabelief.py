"""AdaBelief: Adam whose second moment tracks the gradient's deviation from its momentum."""

from __future__ import annotations

import math
from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.adam import BetasOptimizer, _pair
from lamina.optim.inplace import axpy, scale
from lamina.optim.lamb import _check_flags
from lamina.optim.optimizer import ParamsLike


class AdaBelief(BetasOptimizer):
    r"""AdaBelief (Zhuang et al., "AdaBelief Optimizer: Adapting Stepsizes by the Belief in
    Observed Gradients", 2020), as the authors' ``adabelief-pytorch`` 0.2. With
    g = ``dJ_dw`` and t the parameter's step count::

        m = beta1*m + (1-beta1)*g
        s = beta2*s + (1-beta2)*(g - m)**2 + eps          # the "belief": how far g is from m
        s_max = max(s_max, s)                             (amsgrad only; used for s)
        w = w - (lr/(1-beta1**t)) * m / (sqrt(s)/sqrt(1-beta2**t) + eps)

    A gradient close to its prediction m gives a small s and so a large step; a surprising
    one a small step. With ``weight_decouple`` (the default) the weight decay is a shrink
    ``w = w*(1 - lr*weight_decay)`` before the step (``w*(1 - weight_decay)`` with
    ``fixed_decay``), otherwise ``weight_decay*w`` is added to g (L2).

    ``rectify`` replaces the last line by RAdam's variance rectification (Liu et al., 2020),
    with rho_inf = 2/(1-beta2) - 1 and rho_t = rho_inf - 2 t beta2**t / (1-beta2**t)::

        rho_t >= 5:  r_t = sqrt((rho_t-4)(rho_t-2) rho_inf / ((rho_inf-4)(rho_inf-2) rho_t))
                     w = w - lr r_t sqrt(1-beta2**t)/(1-beta1**t) * m / (sqrt(s) + eps)
        rho_t < 5:   w = w - (lr/(1-beta1**t)) * m    (``degenerated_to_sgd``; else no step)

    The threshold 5 and the use of s rather than s_max in the rectified step (amsgrad then
    only keeps s_max up to date) are those of the reference code.
    """

    _state_arrays = ("exp_avg", "exp_avg_var", "max_exp_avg_var")
    _state_numbers = ("step",)

    def __init__(self, params: ParamsLike, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-16, weight_decay: float = 0.0, amsgrad: bool = False,
                 weight_decouple: bool = True, fixed_decay: bool = False, rectify: bool = False,
                 degenerated_to_sgd: bool = True):
        super().__init__(params, lr=lr, weight_decay=weight_decay, betas=_pair(betas), eps=eps, amsgrad=amsgrad,
                         weight_decouple=weight_decouple, fixed_decay=fixed_decay, rectify=rectify,
                         degenerated_to_sgd=degenerated_to_sgd)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        _check_flags(self, hp, "amsgrad", "weight_decouple", "fixed_decay", "rectify", "degenerated_to_sgd")

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        xp = backend.xp
        state = {"step": 0, "exp_avg": xp.zeros_like(p.data), "exp_avg_var": xp.zeros_like(p.data)}
        if group["amsgrad"]:
            state["max_exp_avg_var"] = xp.zeros_like(p.data)
        return state

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        xp = backend.xp
        beta1, beta2 = group["betas"]
        lr, weight_decay, eps = group["lr"], group["weight_decay"], group["eps"]
        state["step"] += 1
        t = state["step"]
        if group["weight_decouple"]:
            if weight_decay:
                scale(1.0 - (weight_decay if group["fixed_decay"] else lr * weight_decay), p.data)
            g = grad
        else:
            g = self._decayed_grad(p, grad, weight_decay)
        m, s = state["exp_avg"], state["exp_avg_var"]
        scale(beta1, m)
        axpy(1.0 - beta1, g, m)
        work = self._scratch(p, 1)
        xp.subtract(g, m, out=work)
        xp.multiply(work, work, out=work)
        scale(beta2, s)
        axpy(1.0 - beta2, work, s)
        s += eps
        if group["amsgrad"]:
            s_max = state.get("max_exp_avg_var")
            if s_max is None:
                s_max = state["max_exp_avg_var"] = xp.zeros_like(p.data)
            xp.maximum(s_max, s, out=s_max)
            s = s_max
        if group["rectify"]:
            self._rectified_step(p, m, state["exp_avg_var"], t, group, work)
            return
        xp.sqrt(s, out=work)
        work /= math.sqrt(1.0 - beta2**t)
        work += eps
        xp.divide(m, work, out=work)
        axpy(-lr / (1.0 - beta1**t), work, p.data)

    @staticmethod
    def _rectified_step(p: Tensor, m, s, t: int, group: dict, work) -> None:
        """The rectified update of the class docstring; ``work`` is scratch of p's shape."""
        xp = backend.xp
        beta1, beta2 = group["betas"]
        lr, eps = group["lr"], group["eps"]
        beta2_t = beta2**t
        rho_inf = 2.0 / (1.0 - beta2) - 1.0
        rho_t = rho_inf - 2.0 * t * beta2_t / (1.0 - beta2_t)
        if rho_t >= 5:
            rectification = math.sqrt((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t))
            xp.sqrt(s, out=work)
            work += eps
            xp.divide(m, work, out=work)
            axpy(-lr * rectification * math.sqrt(1.0 - beta2_t) / (1.0 - beta1**t), work, p.data)
        elif group["degenerated_to_sgd"]:
            axpy(-lr / (1.0 - beta1**t), m, p.data)
