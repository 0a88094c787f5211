"""NAdam: Adam with Nesterov momentum."""

from __future__ import annotations

import math
from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.adam import BetasOptimizer, _pair
from lamina.optim.inplace import axpy
from lamina.optim.optimizer import ParamsLike


class NAdam(BetasOptimizer):
    r"""NAdam (Dozat, "Incorporating Nesterov Momentum into Adam").

    Nesterov momentum looks one step ahead: the update uses the momentum it will have
    *after* this step. In Adam's terms the bias-corrected momentum is replaced by a mix
    of the current gradient and the momentum, weighted with a momentum coefficient
    :math:`\mu_t` that warms up from :math:`\beta_1/2` towards :math:`\beta_1` (the
    ``momentum_decay`` :math:`\psi` sets how fast). As ``torch.optim.NAdam`` (followed step
    for step), with g = ``dJ_dw + weight_decay*w`` and t the parameter's step count::

        mu_t      = beta1 * (1 - 0.5 * 0.96**(t*psi))
        mu_{t+1}  = beta1 * (1 - 0.5 * 0.96**((t+1)*psi))
        mu_prod   = mu_1 * mu_2 * ... * mu_t                  (kept in the state)
        m = beta1*m + (1-beta1)*g;   v = beta2*v + (1-beta2)*g*g
        d = sqrt(v / (1 - beta2**t)) + eps
        w = w - lr*(1 - mu_t)/(1 - mu_prod) * g/d
              - lr*mu_{t+1}/(1 - mu_prod*mu_{t+1}) * m/d

    ``momentum_decay=0`` keeps :math:`\mu_t = \beta_1/2`.
    """

    _state_arrays = ("exp_avg", "exp_avg_sq")
    _state_numbers = ("step",)
    _state_floats = ("mu_product",)

    def __init__(self, params: ParamsLike, lr: float = 0.002, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum_decay: float = 0.004):
        super().__init__(params, lr=lr, weight_decay=weight_decay, betas=_pair(betas), eps=eps,
                         momentum_decay=momentum_decay)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        self._check_number("momentum_decay", hp["momentum_decay"], low=0.0)


    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        xp = backend.xp
        beta1, beta2 = group["betas"]
        psi = group["momentum_decay"]
        state["step"] += 1
        t = state["step"]
        mu = beta1 * (1.0 - 0.5 * 0.96 ** (t * psi))
        mu_next = beta1 * (1.0 - 0.5 * 0.96 ** ((t + 1) * psi))
        state["mu_product"] *= mu
        mu_product = state["mu_product"]
        g = self._decayed_grad(p, grad, group["weight_decay"])
        work = self._scratch(p, 1)
        ratio = self._scratch(p, 2)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        self._update_moments(m, v, g, work, group["betas"])
        xp.sqrt(v, out=work)
        work /= math.sqrt(1.0 - beta2**t)
        work += group["eps"]
        lr = group["lr"]
        xp.divide(g, work, out=ratio)
        axpy(-lr * (1.0 - mu) / (1.0 - mu_product), ratio, p.data)
        xp.divide(m, work, out=ratio)
        axpy(-lr * mu_next / (1.0 - mu_product * mu_next), ratio, p.data)
