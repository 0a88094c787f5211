"""ADOPT: Adam with the current gradient normalised by the previous second moment."""

from __future__ import annotations

from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.adam import _check_betas_eps, _pair
from lamina.optim.inplace import axpy, scale
from lamina.optim.lamb import _check_flags
from lamina.optim.optimizer import Optimizer, ParamsLike


class ADOPT(Optimizer):
    r"""ADOPT (Taniguchi et al., "ADOPT: Modified Adam Can Converge with Any beta2 with the
    Optimal Rate", 2024), as the authors' PyTorch code. Adam's second moment also holds the
    current gradient, which makes the step correlated with it; ADOPT divides the gradient by
    the second moment of the steps *before*, and takes the momentum *after* the division.
    With g the gradient (plus ``weight_decay * w`` unless ``decouple``) and t the
    parameter's step count::

        t = 1:  v = g*g                                     (no change to w)
        t > 1:  u = g / max(sqrt(v), eps)
                u = clip(u, -(t-1)**clip_exponent, (t-1)**clip_exponent)   (unless clip_exponent is None)
                m = beta1*m + (1-beta1)*u
                w = w*(1 - lr*weight_decay)                 (decouple only)
                w = w - lr*m
                v = beta2*v + (1-beta2)*g*g

    The clip (the official ``clip_lambda``, step**0.25) keeps the first normalised steps,
    whose v comes from a single gradient, from growing large. No bias correction is needed:
    v starts from a gradient, not from zero, and m averages normalised steps.
    """

    _state_arrays = ("exp_avg", "exp_avg_sq")
    _state_numbers = ("step",)

    def __init__(self, params: ParamsLike, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.9999),
                 eps: float = 1e-6, weight_decay: float = 0.0, decouple: bool = False,
                 clip_exponent: float | None = 0.25):
        super().__init__(params, lr=lr, weight_decay=weight_decay, betas=_pair(betas), eps=eps,
                         decouple=decouple, clip_exponent=clip_exponent)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        _check_betas_eps(self, hp)
        _check_flags(self, hp, "decouple")
        if hp["clip_exponent"] is not None:
            self._check_number("clip_exponent", hp["clip_exponent"], low=0.0)

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        xp = backend.xp
        return {"step": 0, "exp_avg": xp.zeros_like(p.data), "exp_avg_sq": xp.zeros_like(p.data)}

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        xp = backend.xp
        beta1, beta2 = group["betas"]
        lr, weight_decay = group["lr"], group["weight_decay"]
        state["step"] += 1
        t = state["step"]
        g = grad if group["decouple"] else self._decayed_grad(p, grad, weight_decay)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        if t == 1:
            xp.multiply(g, g, out=v)
            return
        normed = self._scratch(p, 1)
        xp.sqrt(v, out=normed)
        xp.maximum(normed, group["eps"], out=normed)
        xp.divide(g, normed, out=normed)
        if group["clip_exponent"] is not None:
            bound = float(t - 1) ** group["clip_exponent"]
            xp.clip(normed, -bound, bound, out=normed)
        scale(beta1, m)
        axpy(1.0 - beta1, normed, m)
        if group["decouple"] and weight_decay:
            scale(1.0 - lr * weight_decay, p.data)
        axpy(-lr, m, p.data)
        xp.multiply(g, g, out=normed)
        scale(beta2, v)
        axpy(1.0 - beta2, normed, v)
