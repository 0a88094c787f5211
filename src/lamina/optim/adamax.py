"""Adamax: Adam with the infinity norm of the past gradients in place of their RMS."""

from __future__ import annotations

from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.adam import BetasOptimizer, _pair
from lamina.optim.inplace import axpy, scale
from lamina.optim.optimizer import ParamsLike


class Adamax(BetasOptimizer):
    r"""Adamax (Kingma and Ba, "Adam: A Method for Stochastic Optimization", section 7.1).

    Adam scales its step by the root of an average of squared gradients (an L2 norm);
    Adamax lets the exponent go to infinity, which turns the average into a decaying
    maximum of the gradients' magnitudes :math:`u`. :math:`u` needs no bias correction;
    the momentum term does. As ``torch.optim.Adamax`` (followed step for step), ``eps``
    enters inside the maximum, so :math:`u > 0` from the first step. With
    g = ``dJ_dw + weight_decay*w`` and t the parameter's step count::

        m = beta1*m + (1-beta1)*g
        u = max(beta2*u, |g| + eps)
        w = w - (lr/(1-beta1**t)) * m / u
    """

    _state_arrays = ("exp_avg", "exp_inf")
    _state_numbers = ("step",)

    def __init__(self, params: ParamsLike, lr: float = 0.002, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0):
        super().__init__(params, lr=lr, weight_decay=weight_decay, betas=_pair(betas), eps=eps)



    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        xp = backend.xp
        beta1, beta2 = group["betas"]
        state["step"] += 1
        t = state["step"]
        g = self._decayed_grad(p, grad, group["weight_decay"])
        work = self._scratch(p, 1)
        m, u = state["exp_avg"], state["exp_inf"]
        scale(beta1, m)
        axpy(1.0 - beta1, g, m)
        scale(beta2, u)
        xp.abs(g, out=work)
        work += group["eps"]
        xp.maximum(u, work, out=u)
        xp.divide(m, u, out=work)
        axpy(-group["lr"] / (1.0 - beta1**t), work, p.data)
