"""Lion: the sign of an interpolated momentum as the update."""

from __future__ import annotations

from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.inplace import axpy, scale
from lamina.optim.optimizer import Optimizer, ParamsLike


class Lion(Optimizer):
    r"""Lion, "EvoLved Sign Momentum" (Chen et al., "Symbolic Discovery of Optimization
    Algorithms", 2023). With g = ``dJ_dw`` and m the momentum (0 at the start)::

        c = beta1*m + (1-beta1)*g          # interpolate momentum and gradient
        w = w - lr*sign(c) - lr*wd*w       # every weight moves by exactly lr (or 0)
        m = beta2*m + (1-beta2)*g          # then update the momentum, with another beta

    The update has the same size, ``lr``, for every weight, so Lion wants a learning rate
    3 to 10 times smaller than Adam's (and a weight decay as many times larger). The weight
    decay is decoupled (AdamW-style: a shrink of w, not a term of the gradient). Only one
    moment is kept: half of Adam's memory.
    """

    _state_arrays = ("exp_avg",)

    def __init__(self, params: ParamsLike, lr: float = 1e-4, betas: tuple[float, float] = (0.9, 0.99),
                 weight_decay: float = 0.0):
        super().__init__(params, lr=lr, weight_decay=weight_decay,
                         betas=tuple(betas) if isinstance(betas, list) else betas)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        betas = hp["betas"]
        if not isinstance(betas, (tuple, list)) or len(betas) != 2:
            raise ValueError(f"{self._name}: invalid betas {betas!r} (must be a pair (beta1, beta2))")
        self._check_number("beta1", betas[0], low=0.0, high=1.0, high_open=True)
        self._check_number("beta2", betas[1], low=0.0, high=1.0, high_open=True)

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        return {"exp_avg": backend.xp.zeros_like(p.data)}

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        xp = backend.xp
        beta1, beta2 = group["betas"]
        lr = group["lr"]
        m = state["exp_avg"]
        if group["weight_decay"]:
            scale(1.0 - lr * group["weight_decay"], p.data)
        c = self._scratch(p, 0)
        xp.multiply(m, beta1, out=c)
        axpy(1.0 - beta1, grad, c)
        xp.sign(c, out=c)
        axpy(-lr, c, p.data)
        scale(beta2, m)
        axpy(1.0 - beta2, grad, m)
