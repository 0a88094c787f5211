"""Mini-batch gradient descent, with classic or Nesterov momentum."""

from __future__ import annotations

from typing import Any

from lamina.autograd import Tensor
from lamina.optim.inplace import axpy, scale
from lamina.optim.optimizer import Optimizer, ParamsLike


class SGD(Optimizer):
    r"""Mini-batch (stochastic) gradient descent, optionally with momentum.

    Course notes ("Mini-Batch gradient descent", one update per mini-batch)::

        w = w - learning_rate*dJ_dw

    With ``momentum`` :math:`\beta` (course notes, "Exponentially weighted averages" /
    "Classic Momentum", with the :math:`1-\beta` factor folded into the learning rate)::

        v = beta*v + dJ_dw            # v_t = beta v_{t-1} + dJ/dw
        w = w - learning_rate*v

    This is exactly what ``torch.optim.SGD`` computes, and what this class does, with
    g = ``dJ_dw + weight_decay*w``::

        v_1 = g                                   # first step: the buffer starts at g
        v_t = momentum*v_{t-1} + (1 - dampening)*g
        d   = g + momentum*v_t   if nesterov   else   v_t
        w   = w - lr*d

    ``dampening`` = :math:`\beta` turns the velocity into the course notes' weighted
    average :math:`v_t = \beta v_{t-1} + (1-\beta)\,dJ/dw` from the second step on (torch
    does not dampen the first step, and neither does lamina). ``nesterov=True`` is
    Nesterov momentum in Sutskever's reformulation: the step uses the gradient plus the
    look-ahead velocity ``momentum*v_t``; it needs ``momentum > 0`` and ``dampening == 0``.
    """

    _state_arrays = ("momentum_buffer",)

    def __init__(self, params: ParamsLike, lr: float, momentum: float = 0.0, nesterov: bool = False,
                 dampening: float = 0.0, weight_decay: float = 0.0):
        super().__init__(params, lr=lr, weight_decay=weight_decay, momentum=momentum,
                         dampening=dampening, nesterov=nesterov)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        _check_momentum(self, hp)

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        momentum = group["momentum"]
        d = self._decayed_grad(p, grad, group["weight_decay"])
        if momentum != 0:
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = state["momentum_buffer"] = d.copy()
            else:
                scale(momentum, buf)
                axpy(1.0 - group["dampening"], d, buf)
            if group["nesterov"]:
                # d = g + momentum * v_t, written into slot 0 (which may already hold g)
                out = self._scratch(p, 0)
                if out is not d:
                    out[...] = d
                axpy(momentum, buf, out)
                d = out
            else:
                d = buf
        axpy(-group["lr"], d, p.data)


def _check_momentum(opt: Optimizer, hp: dict) -> None:
    """SGD's checks: ``momentum`` >= 0, ``dampening`` in [0, 1], ``nesterov`` a bool that needs
    momentum > 0 and no dampening."""
    opt._check_number("momentum", hp["momentum"], low=0.0)
    opt._check_number("dampening", hp["dampening"], low=0.0, high=1.0)
    if not isinstance(hp["nesterov"], bool):
        raise ValueError(f"{opt._name}: invalid nesterov {hp['nesterov']!r} (must be True or False)")
    if hp["nesterov"] and (hp["momentum"] <= 0 or hp["dampening"] != 0):
        raise ValueError(f"{opt._name}: nesterov=True needs momentum > 0 and dampening == 0, got "
                         f"momentum={hp['momentum']!r}, dampening={hp['dampening']!r}")
