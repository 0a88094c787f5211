"""Hypergradient descent: SGD and Adam that learn their own learning rate online.

Baydin et al. 2018, "Online Learning Rate Adaptation with Hypergradient Descent". The
update of step t-1 was ``w_{t-1} = w_{t-2} - alpha * d_{t-2}``, so the derivative of the
cost at ``w_{t-1}`` with respect to the learning rate is ``-g_t . d_{t-2}`` (g_t the
gradient at ``w_{t-1}``). One gradient step on alpha before each parameter step::

    alpha_t = alpha_{t-1} + beta * g_t . d_{t-1}      # beta: hyper_lr; d_0 = 0
    w_t     = w_{t-1} - alpha_t * d_t

with ``d_t = g_t`` for SGD and ``d_t = m_hat_t / (sqrt(v_hat_t) + eps)`` for Adam. The dot
product runs over every parameter of a group, and each group keeps its own alpha in
``group["lr"]``.
"""

from __future__ import annotations

from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.adam import Adam
from lamina.optim.inplace import axpy
from lamina.optim.optimizer import Optimizer, ParamsLike


class _Hypergradient:
    """The shared learning-rate step: before the parameters move, each group's ``lr`` grows by
    ``hyper_lr`` times the dot product of the new gradients with the previous directions."""

    def _update_all(self) -> None:
        xp = backend.xp
        dots: dict[int, float] = {}
        for i, p, group in self._indexed():
            state = self.state.get(i)
            if p.grad is None or state is None or not getattr(p, "trainable", True):
                continue
            grad = p.grad.data if isinstance(p.grad, Tensor) else p.grad
            g = self._decayed_grad(p, grad, group["weight_decay"])
            dots[id(group)] = dots.get(id(group), 0.0) + float(xp.vdot(g, state["prev_direction"]))
        for group in self.param_groups:
            group["lr"] += group["hyper_lr"] * dots.get(id(group), 0.0)
        super()._update_all()

    def _check_hyper_lr(self, hp: dict) -> None:
        self._check_number("hyper_lr", hp["hyper_lr"], low=0.0)


class HDSGD(_Hypergradient, Optimizer):
    r"""Plain SGD whose learning rate follows hypergradient descent (SGD-HD)::

        alpha_t = alpha_{t-1} + hyper_lr * g_t . g_{t-1}
        w_t     = w_{t-1} - alpha_t * g_t

    with ``g = dJ/dw + weight_decay*w``. Consecutive gradients that agree raise the rate,
    ones that oppose (overshooting) lower it.
    """

    _state_arrays = ("prev_direction",)

    def __init__(self, params: ParamsLike, lr: float = 0.001, hyper_lr: float = 1e-4, weight_decay: float = 0.0):
        super().__init__(params, lr=lr, weight_decay=weight_decay, hyper_lr=hyper_lr)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        self._check_hyper_lr(hp)

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        return {"prev_direction": backend.xp.zeros_like(p.data)}

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        g = self._decayed_grad(p, grad, group["weight_decay"])
        state["prev_direction"][...] = g
        axpy(-group["lr"], g, p.data)


class HDAdam(_Hypergradient, Adam):
    r"""Adam whose learning rate follows hypergradient descent (Adam-HD). With ``d_t`` Adam's
    bias-corrected direction (eps added after the correction, as :class:`~lamina.optim.Adam`)::

        alpha_t = alpha_{t-1} + hyper_lr * g_t . d_{t-1}
        d_t     = (m_t / (1 - beta1**t)) / (sqrt(v_t / (1 - beta2**t)) + eps)
        w_t     = w_{t-1} - alpha_t * d_t
    """

    _state_arrays = ("exp_avg", "exp_avg_sq", "prev_direction")

    def __init__(self, params: ParamsLike, lr: float = 0.001, hyper_lr: float = 1e-7,
                 betas: tuple[float, float] = (0.9, 0.999), eps: float = 1e-8, weight_decay: float = 0.0):
        Optimizer.__init__(self, params, lr=lr, weight_decay=weight_decay, betas=betas, eps=eps, amsgrad=False,
                           hyper_lr=hyper_lr)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        self._check_hyper_lr(hp)

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        xp = backend.xp
        return {"step": 0, "exp_avg": xp.zeros_like(p.data), "exp_avg_sq": xp.zeros_like(p.data),
                "prev_direction": xp.zeros_like(p.data)}

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        xp = backend.xp
        beta1, beta2 = group["betas"]
        state["step"] += 1
        t = state["step"]
        g = self._decayed_grad(p, grad, group["weight_decay"])
        m, v, d = state["exp_avg"], state["exp_avg_sq"], state["prev_direction"]
        self._update_moments(m, v, g, self._scratch(p, 1), group["betas"])
        xp.sqrt(v / (1.0 - beta2**t), out=d)
        d += group["eps"]
        xp.divide(m / (1.0 - beta1**t), d, out=d)
        axpy(-group["lr"], d, p.data)
