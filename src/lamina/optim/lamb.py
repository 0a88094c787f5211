"""LAMB and LARS: layer-wise trust ratios for large-batch training."""

from __future__ import annotations

from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.adam import BetasOptimizer, _pair
from lamina.optim.inplace import axpy, scale
from lamina.optim.optimizer import Optimizer, ParamsLike


def trust_ratio(weight_norm: float, update_norm: float, coefficient: float = 1.0) -> float:
    """``coefficient * weight_norm / update_norm``, or 1 when either norm is 0 (a weight at
    zero, or nothing to do, keeps the plain step)."""
    if weight_norm > 0 and update_norm > 0:
        return coefficient * weight_norm / update_norm
    return 1.0


def _norm(a) -> float:
    return float(backend.xp.linalg.norm(a.ravel()))


class LAMB(BetasOptimizer):
    r"""LAMB (You et al., "Large Batch Optimization for Deep Learning: Training BERT in 76
    minutes", 2020): Adam's step rescaled per parameter tensor ("layer") so that its norm
    is a fixed fraction of the weights' norm. With g = ``dJ_dw`` and t the step count::

        m = beta1*m + (1-beta1)*g;   v = beta2*v + (1-beta2)*g*g
        r = (m/(1-beta1**t)) / (sqrt(v/(1-beta2**t)) + eps)   # Adam's direction, bias-corrected
        u = r + weight_decay*w                                  # decay inside the ratio
        ratio = ||w|| / ||u||    (1 when either norm is 0; at most max_trust_ratio if given)
        w = w - lr * ratio * u

    This is the paper's algorithm with its scaling function phi the identity, and timm's
    ``Lamb`` with ``always_adapt=True`` and no global gradient clipping (clip with
    :func:`lamina.optim.clip_grad_norm` before ``step()`` for that). ``bias_correction=False``
    drops the two bias corrections (the paper's listing has none; its experiments, like
    timm, use them). ``max_trust_ratio`` clips the ratio (timm's ``trust_clip`` is 1.0).

    Biases and normalisation scales are commonly left out of the adaptation and the decay:
    give them a parameter group ``{'params': [...], 'adapt': False, 'weight_decay': 0.0}``
    (their step is then Adam's).
    """

    _state_arrays = ("exp_avg", "exp_avg_sq")
    _state_numbers = ("step",)

    def __init__(self, params: ParamsLike, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-6, weight_decay: float = 0.01, bias_correction: bool = True,
                 max_trust_ratio: float | None = None, adapt: bool = True):
        super().__init__(params, lr=lr, weight_decay=weight_decay, betas=_pair(betas), eps=eps,
                         bias_correction=bias_correction, max_trust_ratio=max_trust_ratio, adapt=adapt)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        _check_flags(self, hp, "bias_correction", "adapt")
        if hp["max_trust_ratio"] is not None:
            self._check_number("max_trust_ratio", hp["max_trust_ratio"], low=0.0)

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        xp = backend.xp
        beta1, beta2 = group["betas"]
        state["step"] += 1
        t = state["step"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        update = self._scratch(p, 1)
        self._update_moments(m, v, grad, update, group["betas"])
        first_correction, second_correction = (1.0 - beta1**t, 1.0 - beta2**t) if group["bias_correction"] \
            else (1.0, 1.0)
        xp.divide(v, second_correction, out=update)
        xp.sqrt(update, out=update)
        update += group["eps"]
        xp.divide(m, update, out=update)
        update /= first_correction
        if group["weight_decay"]:
            axpy(group["weight_decay"], p.data, update)
        ratio = 1.0
        if group["adapt"]:
            ratio = trust_ratio(_norm(p.data), _norm(update))
            if group["max_trust_ratio"] is not None:
                ratio = min(ratio, group["max_trust_ratio"])
        axpy(-group["lr"] * ratio, update, p.data)


class LARS(Optimizer):
    r"""LARS, layer-wise adaptive rate scaling (You, Gitman and Ginsburg, "Large Batch
    Training of Convolutional Networks", 2017): SGD with momentum whose step is rescaled
    per parameter tensor by a local learning rate. With g = ``dJ_dw``, eta the
    ``trust_coefficient`` and v the momentum buffer (0 at the start)::

        local_lr = eta * ||w|| / (||g|| + weight_decay*||w|| + eps)   (1 when ||w|| or ||g|| is 0)
        d = local_lr * (g + weight_decay*w)
        v = momentum*v + d
        w = w - lr * (d + momentum*v   if nesterov   else   v)

    the paper's algorithm (its global rate gamma is ``lr``), and timm's ``Lars`` with
    ``always_adapt=True``. The step of a layer is about ``lr * eta`` times its weights' norm
    whatever the scale of its gradient, which is what lets very large batches (and their
    large learning rates) train. Leave biases and normalisation scales out of the scaling
    with a parameter group ``{'params': [...], 'adapt': False, 'weight_decay': 0.0}``
    (plain momentum SGD for them).
    """

    _state_arrays = ("momentum_buffer",)

    def __init__(self, params: ParamsLike, lr: float = 1.0, momentum: float = 0.9, weight_decay: float = 0.0,
                 trust_coefficient: float = 0.001, eps: float = 1e-8, nesterov: bool = False, adapt: bool = True):
        super().__init__(params, lr=lr, weight_decay=weight_decay, momentum=momentum,
                         trust_coefficient=trust_coefficient, eps=eps, nesterov=nesterov, adapt=adapt)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        self._check_number("momentum", hp["momentum"], low=0.0)
        self._check_number("trust_coefficient", hp["trust_coefficient"], low=0.0)
        self._check_number("eps", hp["eps"], low=0.0)
        _check_flags(self, hp, "nesterov", "adapt")

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        return {"momentum_buffer": backend.xp.zeros_like(p.data)}

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        weight_decay, momentum = group["weight_decay"], group["momentum"]
        direction = self._scratch(p, 1)
        direction[...] = grad
        if weight_decay:
            axpy(weight_decay, p.data, direction)
        if group["adapt"]:
            weight_norm, grad_norm = _norm(p.data), _norm(grad)
            local_lr = trust_ratio(weight_norm, grad_norm + weight_decay * weight_norm + group["eps"],
                                   group["trust_coefficient"]) if grad_norm > 0 else 1.0
            scale(local_lr, direction)
        buffer = state["momentum_buffer"]
        scale(momentum, buffer)
        axpy(1.0, direction, buffer)
        if group["nesterov"]:
            axpy(momentum, buffer, direction)
        else:
            direction = buffer
        axpy(-group["lr"], direction, p.data)


def _check_flags(opt: Optimizer, hp: dict, *names: str) -> None:
    for name in names:
        if not isinstance(hp[name], bool):
            raise ValueError(f"{opt._name}: invalid {name} {hp[name]!r} (must be True or False)")
