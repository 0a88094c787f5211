"""SparseAdam: Adam that touches only the rows a batch used (embedding tables)."""

from __future__ import annotations

import math
from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.adam import BetasOptimizer, _pair
from lamina.optim.optimizer import ParamsLike


class SparseAdam(BetasOptimizer):
    r"""Adam on the rows with a gradient only, as ``torch.optim.SparseAdam`` does with the
    sparse gradients of ``Embedding(sparse=True)``.

    lamina's :class:`~lamina.nn.Embedding` gives a dense gradient, zero in the rows of the ids
    a batch did not use. Plain :class:`Adam` would still decay both moments of those rows and
    move them along their old momentum; here a row (an index of the first axis) whose
    gradient is all zero keeps its weights and both moments as they are. On the rows R with
    a nonzero gradient, with t the parameter's step count (counted at every ``step()``, used
    rows or not, as torch counts it)::

        m[R] = beta1*m[R] + (1-beta1)*g[R];   v[R] = beta2*v[R] + (1-beta2)*g[R]^2
        w[R] = w[R] - lr * sqrt(1-beta2**t)/(1-beta1**t) * m[R] / (sqrt(v[R]) + eps)

    (``eps`` is added to sqrt(v) before the bias correction, unlike :class:`Adam`.) A row that
    a batch looked up but whose gradient came out exactly zero counts as unused (torch would
    update it). No ``weight_decay``, as torch: a decay would reach every row.
    """

    _state_arrays = ("exp_avg", "exp_avg_sq")
    _state_numbers = ("step",)

    def __init__(self, params: ParamsLike, lr: float = 1e-3, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8):
        super().__init__(params, lr=lr, betas=_pair(betas), eps=eps)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        if hp["weight_decay"] != 0:
            raise ValueError(f"{self._name}: weight_decay is not supported (got {hp['weight_decay']!r}); add a "
                             "penalty such as lamina.optim.l2 to the cost")

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        xp = backend.xp
        beta1, beta2 = group["betas"]
        state["step"] += 1
        t = state["step"]
        if p.data.ndim == 0:
            rows = xp.flatnonzero(grad.reshape(1))
        else:
            rows = xp.flatnonzero(xp.any(grad.reshape(grad.shape[0], -1) != 0, axis=1))
        if rows.size == 0:
            return
        w, m, v = p.data.reshape((-1,) + p.data.shape[1:]), state["exp_avg"], state["exp_avg_sq"]
        m, v, g = m.reshape(w.shape), v.reshape(w.shape), grad.reshape(w.shape)[rows]
        m_rows = beta1 * m[rows] + (1.0 - beta1) * g
        v_rows = beta2 * v[rows] + (1.0 - beta2) * g * g
        m[rows], v[rows] = m_rows, v_rows
        step_size = group["lr"] * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
        w[rows] -= step_size * m_rows / (xp.sqrt(v_rows) + group["eps"])
