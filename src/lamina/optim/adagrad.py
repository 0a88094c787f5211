"""Adagrad: per-parameter learning rates from the sum of squared gradients."""

from __future__ import annotations

from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.inplace import axpy
from lamina.optim.optimizer import Optimizer, ParamsLike


class Adagrad(Optimizer):
    r"""Adagrad (course notes, "Per-parameter adaptive learning rates")::

        grad_sq = grad_sq + dJ_dw * dJ_dw
        w = w - learning_rate*dJ_dw/sqrt(grad_sq)

    Large accumulated gradients damp a dimension's steps, small ones accelerate them.
    The course formula has no :math:`\epsilon`; like ``torch.optim.Adagrad`` (which this
    class follows step for step) lamina adds ``eps`` *outside* the square root and
    starts ``grad_sq`` at ``initial_accumulator_value``. With g = ``dJ_dw +
    weight_decay*w`` and t the parameter's step count::

        lr_t    = lr / (1 + (t - 1)*lr_decay)
        grad_sq = grad_sq + g*g
        w       = w - lr_t * g / (sqrt(grad_sq) + eps)

    ``eps=0`` and ``initial_accumulator_value=0`` give the course formula (the first step
    then divides by ``|g|``).
    """

    _state_arrays = ("sum",)
    _state_numbers = ("step",)

    def __init__(self, params: ParamsLike, lr: float = 0.01, eps: float = 1e-10, weight_decay: float = 0.0,
                 initial_accumulator_value: float = 0.0, lr_decay: float = 0.0):
        super().__init__(params, lr=lr, weight_decay=weight_decay, eps=eps,
                         initial_accumulator_value=initial_accumulator_value, lr_decay=lr_decay)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        self._check_number("eps", hp["eps"], low=0.0)
        self._check_number("initial_accumulator_value", hp["initial_accumulator_value"], low=0.0)
        self._check_number("lr_decay", hp["lr_decay"], low=0.0)

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        xp = backend.xp
        return {"step": 0, "sum": xp.full(p.data.shape, group["initial_accumulator_value"], dtype=p.data.dtype)}

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        xp = backend.xp
        state["step"] += 1
        g = self._decayed_grad(p, grad, group["weight_decay"])
        clr = group["lr"] / (1 + (state["step"] - 1) * group["lr_decay"])
        work = self._scratch(p, 1)
        grad_sq = state["sum"]
        xp.multiply(g, g, out=work)
        axpy(1.0, work, grad_sq)
        xp.sqrt(grad_sq, out=work)
        work += group["eps"]
        xp.divide(g, work, out=work)
        axpy(-clr, work, p.data)
