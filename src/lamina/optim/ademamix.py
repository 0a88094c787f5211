"""AdEMAMix: Adam with a second, much slower momentum mixed into the step."""

from __future__ import annotations

import math
from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.adam import _check_betas_eps
from lamina.optim.inplace import axpy, scale
from lamina.optim.optimizer import Optimizer, ParamsLike


class AdEMAMix(Optimizer):
    r"""AdEMAMix (Pagliardini, Ablin and Grangier, "The AdEMAMix Optimizer: Better, Faster,
    Older", 2024). Two exponential averages of the gradient g, a fast bias-corrected one
    and a slow uncorrected one, share Adam's denominator (t the parameter's step count)::

        m1 = beta1*m1 + (1-beta1)*g
        m2 = beta3(t)*m2 + (1-beta3(t))*g
        nu = beta2*nu + (1-beta2)*g**2
        w  = w - lr * ((m1/(1-beta1**t) + alpha(t)*m2) / (sqrt(nu)/sqrt(1-beta2**t) + eps) + weight_decay*w)

    With ``alpha_warmup`` = T_alpha, alpha(t) rises linearly from 0 to ``alpha`` over the first
    T_alpha steps; with ``beta3_warmup`` = T_beta3, beta3(t) moves from beta1 to ``beta3``
    over T_beta3 steps linearly in the half-life ln(0.5)/ln(beta) - 1 (the paper's
    schedulers; without them alpha and beta3 are constant).
    """

    _state_arrays = ("exp_avg_fast", "exp_avg_slow", "exp_avg_sq")
    _state_numbers = ("step",)

    def __init__(self, params: ParamsLike, lr: float = 1e-3,
                 betas: tuple[float, float, float] = (0.9, 0.999, 0.9999), alpha: float = 2.0,
                 alpha_warmup: int | None = None, beta3_warmup: int | None = None, eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr=lr, weight_decay=weight_decay,
                         betas=tuple(betas) if isinstance(betas, list) else betas, alpha=alpha,
                         alpha_warmup=alpha_warmup, beta3_warmup=beta3_warmup, eps=eps)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        betas = hp["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 3:
            raise ValueError(f"{self._name}: invalid betas {betas!r} (must be a triple (beta1, beta2, beta3))")
        _check_betas_eps(self, {"betas": betas[:2], "eps": hp["eps"]})
        self._check_number("beta3", betas[2], low=0.0, high=1.0, high_open=True)
        self._check_number("alpha", hp["alpha"], low=0.0)
        for name in ("alpha_warmup", "beta3_warmup"):
            value = hp[name]
            if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
                raise ValueError(f"{self._name}: invalid {name} {value!r} (must be None or a positive integer)")

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        xp = backend.xp
        return {"step": 0, **{name: xp.zeros_like(p.data) for name in self._state_arrays}}

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        xp = backend.xp
        beta1, beta2, beta3_final = group["betas"]
        state["step"] += 1
        t = state["step"]
        alpha = alpha_schedule(t, group["alpha"], group["alpha_warmup"])
        beta3 = beta3_schedule(t, beta1, beta3_final, group["beta3_warmup"])
        fast, slow, nu = state["exp_avg_fast"], state["exp_avg_slow"], state["exp_avg_sq"]
        scale(beta1, fast)
        axpy(1.0 - beta1, grad, fast)
        scale(beta3, slow)
        axpy(1.0 - beta3, grad, slow)
        work = self._scratch(p, 0)
        xp.multiply(grad, grad, out=work)
        scale(beta2, nu)
        axpy(1.0 - beta2, work, nu)
        denom = self._scratch(p, 1)
        xp.sqrt(nu, out=denom)
        denom /= math.sqrt(1.0 - beta2**t)
        denom += group["eps"]
        xp.multiply(slow, alpha, out=work)
        axpy(1.0 / (1.0 - beta1**t), fast, work)
        work /= denom
        if group["weight_decay"]:
            axpy(group["weight_decay"], p.data, work)
        axpy(-group["lr"], work, p.data)


def alpha_schedule(step: int, alpha: float, warmup: int | None) -> float:
    """alpha(t): linear from 0 at t=0 to ``alpha`` at t=``warmup``, then constant."""
    if warmup is None or step >= warmup:
        return alpha
    return alpha * step / warmup


def beta3_schedule(step: int, beta_start: float, beta_end: float, warmup: int | None) -> float:
    """beta3(t): from ``beta_start`` to ``beta_end`` over ``warmup`` steps, linear in the
    half-life f(beta) = ln(0.5)/ln(beta) - 1, so the slow average lengthens steadily."""
    if warmup is None or step >= warmup:
        return beta_end

    def half_life(beta: float) -> float:
        return math.log(0.5) / math.log(beta + 1e-8) - 1.0

    a = step / warmup
    mixed = (1.0 - a) * half_life(beta_start) + a * half_life(beta_end)
    return math.pow(0.5, 1.0 / (mixed + 1.0))
