"""Adan: adaptive Nesterov momentum from an average of gradient differences."""

from __future__ import annotations

import math
from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.adam import _check_betas_eps
from lamina.optim.inplace import axpy, scale
from lamina.optim.lamb import _check_flags
from lamina.optim.optimizer import Optimizer, ParamsLike


class Adan(Optimizer):
    r"""Adan (Xie et al., "Adan: Adaptive Nesterov Momentum Algorithm for Faster Optimizing
    Deep Models", 2022), as the authors' PyTorch code (betas as there: the weights of the
    past, (0.98, 0.92, 0.99), the paper's 1 - beta). With g the gradient, g_prev the
    previous one (g itself at the first step, so the difference starts at 0) and t the
    parameter's step count::

        d = g - g_prev
        m = beta1*m + (1-beta1)*g                         # momentum of the gradient
        v = beta2*v + (1-beta2)*d                         # momentum of its difference
        n = beta3*n + (1-beta3)*(g + beta2*d)**2          # second moment of the Nesterov gradient
        u = (m/(1-beta1**t) + beta2*v/(1-beta2**t)) / (sqrt(n)/sqrt(1-beta3**t) + eps)
        w = (w - lr*u) / (1 + lr*weight_decay)             # proximal decay
        w = w*(1 - lr*weight_decay) - lr*u                 (no_prox: decoupled decay)
    """

    _state_arrays = ("exp_avg", "exp_avg_diff", "exp_avg_sq", "pre_grad")
    _state_numbers = ("step",)

    def __init__(self, params: ParamsLike, lr: float = 1e-3, betas: tuple[float, float, float] = (0.98, 0.92, 0.99),
                 eps: float = 1e-8, weight_decay: float = 0.0, no_prox: bool = False):
        super().__init__(params, lr=lr, weight_decay=weight_decay,
                         betas=tuple(betas) if isinstance(betas, list) else betas, eps=eps, no_prox=no_prox)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        betas = hp["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 3:
            raise ValueError(f"{self._name}: invalid betas {betas!r} (must be a triple (beta1, beta2, beta3))")
        _check_betas_eps(self, {"betas": betas[:2], "eps": hp["eps"]})
        self._check_number("beta3", betas[2], low=0.0, high=1.0, high_open=True)
        _check_flags(self, hp, "no_prox")

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        xp = backend.xp
        return {"step": 0, **{name: xp.zeros_like(p.data) for name in self._state_arrays}}

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        xp = backend.xp
        beta1, beta2, beta3 = group["betas"]
        lr, weight_decay = group["lr"], group["weight_decay"]
        state["step"] += 1
        t = state["step"]
        m, v, n, g_prev = state["exp_avg"], state["exp_avg_diff"], state["exp_avg_sq"], state["pre_grad"]
        if t == 1:
            g_prev[...] = grad
        diff = self._scratch(p, 0)
        xp.subtract(grad, g_prev, out=diff)
        nesterov = self._scratch(p, 1)
        nesterov[...] = grad
        axpy(beta2, diff, nesterov)
        scale(beta1, m)
        axpy(1.0 - beta1, grad, m)
        scale(beta2, v)
        axpy(1.0 - beta2, diff, v)
        xp.multiply(nesterov, nesterov, out=nesterov)
        scale(beta3, n)
        axpy(1.0 - beta3, nesterov, n)
        denom = nesterov
        xp.sqrt(n, out=denom)
        denom /= math.sqrt(1.0 - beta3**t)
        denom += group["eps"]
        update = diff
        xp.multiply(v, beta2 / (1.0 - beta2**t), out=update)
        axpy(1.0 / (1.0 - beta1**t), m, update)
        update /= denom
        if group["no_prox"]:
            if weight_decay:
                scale(1.0 - lr * weight_decay, p.data)
            axpy(-lr, update, p.data)
        else:
            axpy(-lr, update, p.data)
            if weight_decay:
                scale(1.0 / (1.0 + lr * weight_decay), p.data)
        g_prev[...] = grad
