"""Adam: momentum plus RMSProp, both bias-corrected; AdamW, the same with decoupled weight decay."""

from __future__ import annotations

import math
from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.inplace import axpy, scale
from lamina.optim.optimizer import Optimizer, ParamsLike


class BetasOptimizer(Optimizer):
    """What the Adam family shares: the checks of ``betas`` (a pair in [0, 1)) and ``eps``
    (>= 0), and a first state holding every entry the class declares (moment arrays of
    zeros like the parameter, counts at 0, running products at 1)."""

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        _check_betas_eps(self, hp)

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        xp = backend.xp
        return {**{name: 0 for name in self._state_numbers}, **{name: 1.0 for name in self._state_floats},
                **{name: xp.zeros_like(p.data) for name in self._state_arrays}}

    @staticmethod
    def _update_moments(m, v, g, work, betas) -> None:
        """The two exponentially weighted averages, in place: m = beta1 m + (1 - beta1) g and
        v = beta2 v + (1 - beta2) g^2 (``work`` receives g^2)."""
        beta1, beta2 = betas
        scale(beta1, m)
        axpy(1.0 - beta1, g, m)
        scale(beta2, v)
        backend.xp.multiply(g, g, out=work)
        axpy(1.0 - beta2, work, v)


class Adam(BetasOptimizer):
    r"""Adam (course notes, "Adam: combines RMSProp and momentum")::

        v1_biased = beta1*v1_biased + (1-beta1)*dJ_dw           # momentum
        v2_biased = beta2*v2_biased + (1-beta2)*dJ_dw*dJ_dw     # RMSProp
        v1 = v1_biased / (1 - beta1**(i+1))                     # bias correction
        v2 = v2_biased / (1 - beta2**(i+1))
        w = w - learning_rate*v1/sqrt(v2)

    ``v1`` and ``v2`` are bias-corrected exponentially weighted averages, exactly
    :class:`~lamina.optim.ExponentialMovingAverage` of the gradient and of its square
    (inlined here, in place, for speed). The course formula has no :math:`\epsilon`;
    like ``torch.optim.Adam`` (followed step for step) lamina adds ``eps`` to
    ``sqrt(v2)`` *after* the bias correction. With g = ``dJ_dw + weight_decay*w`` (L2
    added to the gradient, not decoupled AdamW decay) and t = i+1 the parameter's step
    count::

        v1 = beta1*v1 + (1-beta1)*g;   v2 = beta2*v2 + (1-beta2)*g*g
        v2max = max(v2max, v2)                               (amsgrad only; used for v2)
        w  = w - (lr/(1-beta1**t)) * v1 / (sqrt(v2)/sqrt(1-beta2**t) + eps)

    ``eps=0`` gives the course formula.
    """

    _state_arrays = ("exp_avg", "exp_avg_sq", "max_exp_avg_sq")
    _state_numbers = ("step",)
    #: Weight decay as a shrink of w before the step (AdamW) instead of a term of the gradient.
    _decoupled_decay = False

    def __init__(self, params: ParamsLike, lr: float = 0.001, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, amsgrad: bool = False):
        super().__init__(params, lr=lr, weight_decay=weight_decay, betas=_pair(betas), eps=eps,
                         amsgrad=amsgrad)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        _check_amsgrad(self, hp)

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        return _adam_state(p, group)

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        xp = backend.xp
        beta1, beta2 = group["betas"]
        state["step"] += 1
        t = state["step"]
        if self._decoupled_decay:
            if group["weight_decay"]:
                scale(1.0 - group["lr"] * group["weight_decay"], p.data)
            g = grad
        else:
            g = self._decayed_grad(p, grad, group["weight_decay"])
        work = self._scratch(p, 1)
        v1, v2 = state["exp_avg"], state["exp_avg_sq"]
        self._update_moments(v1, v2, g, work, group["betas"])
        if group["amsgrad"]:
            v2max = state.get("max_exp_avg_sq")
            if v2max is None:
                v2max = state["max_exp_avg_sq"] = xp.zeros_like(p.data)
            xp.maximum(v2max, v2, out=v2max)
            v2 = v2max
        step_size = group["lr"] / (1.0 - beta1**t)
        xp.sqrt(v2, out=work)
        work /= math.sqrt(1.0 - beta2**t)
        work += group["eps"]
        xp.divide(v1, work, out=work)
        axpy(-step_size, work, p.data)


class AdamW(Adam):
    r"""Adam with decoupled weight decay (Loshchilov and Hutter, "Decoupled Weight Decay
    Regularization"), as ``torch.optim.AdamW``: before the Adam step on the plain gradient,
    each weight shrinks by its own fraction of the learning rate::

        w = w * (1 - lr*weight_decay)
        w = w - (lr/(1-beta1**t)) * v1 / (sqrt(v2)/sqrt(1-beta2**t) + eps)

    With L2 added to the gradient (:class:`Adam`'s ``weight_decay``), the decay of a weight
    is divided by sqrt(v2) like the rest of its gradient, so weights with large gradients
    are hardly decayed; here every weight decays at the same rate. The default
    ``weight_decay=0.01`` is PyTorch's.
    """

    _decoupled_decay = True

    def __init__(self, params: ParamsLike, lr: float = 0.001, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.01, amsgrad: bool = False):
        super().__init__(params, lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, amsgrad=amsgrad)


def _pair(betas: Any) -> Any:
    return tuple(betas) if isinstance(betas, list) else betas


def _check_betas_eps(opt: Optimizer, hp: dict) -> None:
    """The checks of the Adam family: ``betas`` a pair in [0, 1), ``eps`` >= 0."""
    betas = hp["betas"]
    if not isinstance(betas, (tuple, list)) or len(betas) != 2:
        raise ValueError(f"{opt._name}: invalid betas {betas!r} (must be a pair (beta1, beta2))")
    opt._check_number("beta1", betas[0], low=0.0, high=1.0, high_open=True)
    opt._check_number("beta2", betas[1], low=0.0, high=1.0, high_open=True)
    opt._check_number("eps", hp["eps"], low=0.0)


def _check_amsgrad(opt: Optimizer, hp: dict) -> None:
    if not isinstance(hp["amsgrad"], bool):
        raise ValueError(f"{opt._name}: invalid amsgrad {hp['amsgrad']!r} (must be True or False)")


def _adam_state(p: Tensor, group: dict) -> dict[str, Any]:
    """Adam's first state: step 0, zero moments like ``p`` (and their running maximum with amsgrad)."""
    xp = backend.xp
    state = {"step": 0, "exp_avg": xp.zeros_like(p.data), "exp_avg_sq": xp.zeros_like(p.data)}
    if group["amsgrad"]:
        state["max_exp_avg_sq"] = xp.zeros_like(p.data)
    return state
