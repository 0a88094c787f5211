"""RMSProp: Adagrad with an exponentially weighted average in place of the sum."""

from __future__ import annotations

from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.inplace import axpy, scale
from lamina.optim.optimizer import Optimizer, ParamsLike


class RMSProp(Optimizer):
    r"""RMSProp (course notes, "Solutions - RMSProp")::

        grad_sq = beta*grad_sq + (1-beta)*dJ_dw*dJ_dw
        w = w - learning_rate*dJ_dw/sqrt(grad_sq)

    ``grad_sq`` is the exponentially weighted average of the squared gradients
    (:class:`~lamina.optim.ExponentialMovingAverage` without bias correction),
    :math:`\beta` is ``alpha`` here. The course formula has no :math:`\epsilon`; like
    ``torch.optim.RMSprop`` (followed step for step) lamina adds ``eps`` *outside* the
    square root. With g = ``dJ_dw + weight_decay*w``::

        grad_sq = alpha*grad_sq + (1 - alpha)*g*g
        avg     = sqrt(grad_sq - grad_avg**2) + eps   if centered   (grad_avg: EWA of g)
                  sqrt(grad_sq) + eps                 otherwise
        buf     = momentum*buf + g/avg;  w = w - lr*buf      if momentum > 0
        w       = w - lr*g/avg                               otherwise

    ``eps=0`` gives the course formula.
    """

    _state_arrays = ("square_avg", "momentum_buffer", "grad_avg")
    _state_numbers = ("step",)

    def __init__(self, params: ParamsLike, lr: float = 0.01, alpha: float = 0.99, eps: float = 1e-8,
                 momentum: float = 0.0, weight_decay: float = 0.0, centered: bool = False):
        super().__init__(params, lr=lr, weight_decay=weight_decay, alpha=alpha, eps=eps, momentum=momentum,
                         centered=centered)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        self._check_number("alpha", hp["alpha"], low=0.0, high=1.0)
        self._check_number("eps", hp["eps"], low=0.0)
        self._check_number("momentum", hp["momentum"], low=0.0)
        if not isinstance(hp["centered"], bool):
            raise ValueError(f"{self._name}: invalid centered {hp['centered']!r} (must be True or False)")

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        return {"step": 0, "square_avg": backend.xp.zeros_like(p.data)}

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        xp = backend.xp
        state["step"] += 1
        alpha = group["alpha"]
        g = self._decayed_grad(p, grad, group["weight_decay"])
        work = self._scratch(p, 1)
        square_avg = state["square_avg"]
        scale(alpha, square_avg)
        xp.multiply(g, g, out=work)
        axpy(1.0 - alpha, work, square_avg)
        if group["centered"]:
            grad_avg = state.get("grad_avg")
            if grad_avg is None:
                grad_avg = state["grad_avg"] = xp.zeros_like(p.data)
            scale(alpha, grad_avg)
            axpy(1.0 - alpha, g, grad_avg)
            xp.multiply(grad_avg, grad_avg, out=work)
            xp.subtract(square_avg, work, out=work)
            xp.sqrt(work, out=work)
        else:
            xp.sqrt(square_avg, out=work)
        work += group["eps"]
        xp.divide(g, work, out=work)  # g / avg
        if group["momentum"] > 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = xp.zeros_like(p.data)
            scale(group["momentum"], buf)
            axpy(1.0, work, buf)
            axpy(-group["lr"], buf, p.data)
        else:
            axpy(-group["lr"], work, p.data)


RMSprop = RMSProp
