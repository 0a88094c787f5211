"""Adadelta: RMSProp with the learning rate's units taken from the past updates."""

from __future__ import annotations

from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.inplace import axpy, scale
from lamina.optim.optimizer import Optimizer, ParamsLike


class Adadelta(Optimizer):
    r"""Adadelta (Zeiler, "ADADELTA: An Adaptive Learning Rate Method").

    Like RMSProp it divides the gradient by the RMS of the recent gradients, and it
    multiplies by the RMS of the recent *updates*, so the step has the units of the
    weights and needs no hand-tuned rate (``lr=1`` is the paper's method; ``lr`` scales
    every step, as in ``torch.optim.Adadelta``, which this class follows step for step).
    With g = ``dJ_dw + weight_decay*w``::

        grad_sq  = rho*grad_sq + (1-rho)*g*g
        delta    = sqrt(delta_sq + eps) / sqrt(grad_sq + eps) * g
        delta_sq = rho*delta_sq + (1-rho)*delta*delta
        w = w - lr*delta

    ``eps`` is inside both square roots; it also sets the size of the first steps, when
    ``delta_sq`` is still 0.
    """

    _state_arrays = ("square_avg", "acc_delta")
    _state_numbers = ("step",)

    def __init__(self, params: ParamsLike, lr: float = 1.0, rho: float = 0.9, eps: float = 1e-6,
                 weight_decay: float = 0.0):
        super().__init__(params, lr=lr, weight_decay=weight_decay, rho=rho, eps=eps)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        self._check_number("rho", hp["rho"], low=0.0, high=1.0)
        self._check_number("eps", hp["eps"], low=0.0)

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        xp = backend.xp
        return {"step": 0, "square_avg": xp.zeros_like(p.data), "acc_delta": xp.zeros_like(p.data)}

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        xp = backend.xp
        state["step"] += 1
        rho, eps = group["rho"], group["eps"]
        g = self._decayed_grad(p, grad, group["weight_decay"])
        work = self._scratch(p, 1)
        delta = self._scratch(p, 2)
        square_avg, acc_delta = state["square_avg"], state["acc_delta"]
        scale(rho, square_avg)
        xp.multiply(g, g, out=work)
        axpy(1.0 - rho, work, square_avg)
        xp.add(square_avg, eps, out=work)
        xp.sqrt(work, out=work)                 # std
        xp.add(acc_delta, eps, out=delta)
        xp.sqrt(delta, out=delta)
        delta /= work
        delta *= g
        scale(rho, acc_delta)
        xp.multiply(delta, delta, out=work)
        axpy(1.0 - rho, work, acc_delta)
        axpy(-group["lr"], delta, p.data)
