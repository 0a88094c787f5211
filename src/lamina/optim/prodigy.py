r"""Prodigy: Adam whose step size D is estimated from the run itself (learning-rate free)."""

from __future__ import annotations

import math
from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.adam import _pair
from lamina.optim.d_adaptation import DAdaptedOptimizer
from lamina.optim.inplace import axpy, scale
from lamina.optim.optimizer import ParamsLike


class Prodigy(DAdaptedOptimizer):
    r"""Prodigy (Mishchenko and Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free
    Learner", 2023), as the ``prodigyopt`` package's ``Prodigy``, step for step.

    Adam's step size is ``lr * d``, where d estimates D = ||w_0 - w*||, the distance from the
    start to a solution, and only grows. With g the gradient (plus ``weight_decay * w`` when
    not ``decouple``), w_0 each weight's first value, beta3 = sqrt(beta2) unless given,
    eta = lr * d (times sqrt(1 - beta2^t) / (1 - beta1^t) with ``use_bias_correction``) and
    the sums over every parameter of every group whose lr is not 0::

        r     = beta3 r + (d/d0) eta <g, w_0 - w>                      # d's numerator
        m     = beta1 m + d (1 - beta1) g
        v     = beta2 v + d^2 (1 - beta2) g^2
        s     = beta3 s + (d/d0) eta g           (d/d0) d g with safeguard_warmup
        d_hat = d_coef r / sum |s|
        d_max = max(d_max, d_hat)                                      # d_max starts at d0
        d     = min(d_max, growth_rate (max(d, d_hat) if d = d0 else d))
        w     = w - eta weight_decay w                                 (decouple)
        w     = w - eta m / (sqrt(v) + d eps)

    ``lr`` scales the estimated step: leave it at 1.0 (a schedule may still decay it, as
    with Adam). ``growth_rate`` caps d's growth per step (1.02: a warm-up of sorts).

    One estimate d serves every parameter group, as in the package: the hyperparameters
    it depends on (``betas``, ``beta3``, ``d0``, ``d_coef``, ``growth_rate``,
    ``use_bias_correction``, ``decouple``) take one value for all groups. A group may set
    its own ``weight_decay``, ``eps`` and ``safeguard_warmup``, and an ``lr`` of either the
    largest one or 0 (a group with lr 0 does not inform d, and its weights move only by
    the decoupled decay, as in the package). A step whose gradients are all zero changes
    the moments only (neither d nor the weights), as in the package. The estimate lives in
    :attr:`estimate` (``d``, ``d_max``, ``d_numerator``, ``d_denom``, ``d_hat``, ``k``) and in
    :meth:`state_dict`. As in the package, ``eps`` must be > 0. lamina keeps every statistic at full size (the package's
    ``slice_p`` subsampling is not offered).
    """

    _state_arrays = ("s", "p0", "exp_avg", "exp_avg_sq")
    _state_numbers = ("step",)
    _shared = ("betas", "beta3", "d0", "d_coef", "growth_rate", "use_bias_correction", "decouple")
    _estimate_keys = ("d", "d_max", "d_numerator", "d_denom", "d_hat", "k")

    def __init__(self, params: ParamsLike, lr: float = 1.0, betas: tuple[float, float] = (0.9, 0.999),
                 beta3: float | None = None, d0: float = 1e-6, d_coef: float = 1.0, weight_decay: float = 0.0,
                 decouple: bool = True, use_bias_correction: bool = False, safeguard_warmup: bool = False,
                 growth_rate: float = math.inf, eps: float = 1e-8):
        super().__init__(params, lr=lr, weight_decay=weight_decay, betas=_pair(betas), beta3=beta3, d0=d0,
                         d_coef=d_coef, decouple=decouple, use_bias_correction=use_bias_correction,
                         safeguard_warmup=safeguard_warmup, growth_rate=growth_rate, eps=eps)
        #: The shared D estimate and the number of steps that updated it.
        self.estimate: dict[str, Any] = {"d": float(d0), "d_max": float(d0), "d_numerator": 0.0, "d_denom": 0.0,
                                         "d_hat": float(d0), "k": 0}

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        if hp["beta3"] is not None:
            self._check_number("beta3", hp["beta3"], low=0.0, high=1.0, high_open=True)
        self._check_number("d_coef", hp["d_coef"], low=0.0)
        if not isinstance(hp["safeguard_warmup"], bool):
            raise ValueError(f"{self._name}: invalid safeguard_warmup {hp['safeguard_warmup']!r} (must be True or "
                             "False)")

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        xp = backend.xp
        return {"step": 0, "s": xp.zeros_like(p.data), "p0": p.data.copy(), "exp_avg": xp.zeros_like(p.data),
                "exp_avg_sq": xp.zeros_like(p.data)}

    def _update_all(self) -> None:
        xp = backend.xp
        hp, est = self.param_groups[0], self.estimate   # the shared hyperparameters: the first group's
        beta1, beta2 = hp["betas"]
        beta3 = math.sqrt(beta2) if hp["beta3"] is None else hp["beta3"]
        lr = self._common_lr()
        d, d0, k = est["d"], hp["d0"], est["k"]
        dlr = d * lr * self._bias_correction(hp, k)
        numerator, denominator = est["d_numerator"] * beta3, 0.0
        live = list(self._live())
        for i, p, grad, group in live:
            state = self.state[i]
            g = grad if hp["decouple"] else self._decayed_grad(p, grad, group["weight_decay"])
            if group["lr"] == 0:
                continue
            work = self._scratch(p, 1)
            xp.subtract(state["p0"], p.data, out=work)
            numerator += (d / d0) * dlr * float(xp.vdot(g.ravel(), work.ravel()))
            scale(beta1, state["exp_avg"])
            axpy(d * (1.0 - beta1), g, state["exp_avg"])
            scale(beta2, state["exp_avg_sq"])
            xp.multiply(g, g, out=work)
            axpy(d * d * (1.0 - beta2), work, state["exp_avg_sq"])
            s = state["s"]
            scale(beta3, s)
            axpy((d / d0) * (d if group["safeguard_warmup"] else dlr), g, s)
            xp.abs(s, out=work)
            denominator += float(work.sum())
        if denominator == 0:
            return
        d_hat = hp["d_coef"] * numerator / denominator
        if d == d0:
            d = max(d, d_hat)
        d_max = max(est["d_max"], d_hat)
        d = min(d_max, d * hp["growth_rate"])
        est.update(d=d, d_max=d_max, d_numerator=numerator, d_denom=denominator, d_hat=d_hat, k=k + 1)
        for i, p, _, group in live:
            state = self.state[i]
            state["step"] += 1
            denom = self._scratch(p, 1)
            xp.sqrt(state["exp_avg_sq"], out=denom)
            denom += d * group["eps"]
            if hp["decouple"] and group["weight_decay"]:
                scale(1.0 - group["weight_decay"] * dlr, p.data)
            xp.divide(state["exp_avg"], denom, out=denom)
            axpy(-dlr, denom, p.data)
