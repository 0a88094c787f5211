"""Muon: momentum orthogonalised by a Newton-Schulz iteration, for 2-D weights."""

from __future__ import annotations

import math
from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.inplace import axpy, scale
from lamina.optim.optimizer import Optimizer, ParamsLike

#: The quintic's coefficients (a, b, c): chosen for the steepest slope at zero, so that five
#: iterations push the singular values of a normalised matrix into about [0.7, 1.2] (all but
#: those below about 1/400 of the Frobenius norm, which stay smaller).
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)
LR_ADJUSTMENTS = (None, "original", "match_rms_adamw")


def newton_schulz(matrix, coefficients: tuple[float, float, float] = NS_COEFFICIENTS, steps: int = 5,
                  eps: float = 1e-7):
    r"""An approximate orthogonalisation of a 2-D array: with G = U S V^T, about U V^T.

    X is G / max(||G||_F, eps) (all singular values in [0, 1]), transposed to be wide when G
    is tall, then ``steps`` times::

        A = X X^T
        X = a X + (b A + c A A) X        # X -> a X + b (X X^T) X + c (X X^T)^2 X

    a polynomial in the singular values alone, which pulls each of them towards 1. Computed
    in the array's own dtype (torch rounds to bfloat16 here).
    """
    xp = backend.xp
    a, b, c = coefficients
    tall = matrix.shape[0] > matrix.shape[1]
    x = matrix.T.copy() if tall else matrix.copy()
    x /= max(float(xp.linalg.norm(x)), eps)
    for _ in range(steps):
        gram = x @ x.T
        polynomial = b * gram + c * (gram @ gram)
        x = a * x + polynomial @ x
    return x.T if tall else x


class Muon(Optimizer):
    r"""Muon ("MomentUm Orthogonalized by Newton-Schulz", Jordan et al. 2024), as
    ``torch.optim.Muon`` (its defaults, step for step) for 2-D weights only: biases,
    norms' scales and embeddings belong to another optimizer (AdamW), hidden layers' weight
    matrices to this one. With g = ``dJ_dw`` and B the momentum buffer (0 at the start)::

        B = momentum*B + (1-momentum)*g                      # an exponential average
        M = (1-momentum)*g + momentum*B   if nesterov   else   B
        O = newton_schulz(M)                                 # ~ U V^T for M = U S V^T
        w = w - lr*weight_decay*w                            # decoupled decay
        w = w - lr_adjusted * O

    Every direction of the update gets the same size, whatever the gradient's spectrum.
    ``adjust_lr_fn`` gives lr_adjusted for a weight shaped (A, B): ``None``/``"original"``:
    ``lr*sqrt(max(1, A/B))``; ``"match_rms_adamw"``: ``0.2*lr*sqrt(max(A, B))`` (an update
    of AdamW's root mean square, so AdamW's lr and weight decay can be reused).

    torch runs the Newton-Schulz iteration in bfloat16; lamina runs it in the parameter's
    dtype, so the two agree to bfloat16's precision (about 3 significant digits) and not
    closer.
    """

    _state_arrays = ("momentum_buffer",)

    def __init__(self, params: ParamsLike, lr: float = 1e-3, weight_decay: float = 0.1, momentum: float = 0.95,
                 nesterov: bool = True, ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
                 eps: float = 1e-7, ns_steps: int = 5, adjust_lr_fn: str | None = None):
        super().__init__(params, lr=lr, weight_decay=weight_decay, momentum=momentum, nesterov=nesterov,
                         ns_coefficients=tuple(ns_coefficients) if isinstance(ns_coefficients, list)
                         else ns_coefficients, eps=eps, ns_steps=ns_steps, adjust_lr_fn=adjust_lr_fn)

    def add_param_group(self, group: dict) -> None:
        super().add_param_group(group)
        for p in self.param_groups[-1]["params"]:
            if p.data.ndim != 2:
                self.param_groups.pop()
                raise ValueError(f"{self._name}: only 2-D parameters (weight matrices) are supported, got one "
                                 f"of shape {tuple(p.data.shape)}; train it with another optimizer (AdamW)")

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        self._check_number("momentum", hp["momentum"], low=0.0, high=1.0, high_open=True)
        self._check_number("eps", hp["eps"], low=0.0)
        if not isinstance(hp["nesterov"], bool):
            raise ValueError(f"{self._name}: invalid nesterov {hp['nesterov']!r} (must be True or False)")
        coefficients = hp["ns_coefficients"]
        if not isinstance(coefficients, (tuple, list)) or len(coefficients) != 3:
            raise ValueError(f"{self._name}: invalid ns_coefficients {coefficients!r} (must be a triple (a, b, c))")
        for name, value in zip("abc", coefficients):
            self._check_number(f"ns_coefficients {name}", value)
        steps = hp["ns_steps"]
        if not isinstance(steps, int) or isinstance(steps, bool) or not 0 <= steps < 100:
            raise ValueError(f"{self._name}: invalid ns_steps {steps!r} (must be an integer in [0, 100))")
        if hp["adjust_lr_fn"] not in LR_ADJUSTMENTS:
            raise ValueError(f"{self._name}: invalid adjust_lr_fn {hp['adjust_lr_fn']!r} (must be one of "
                             f"{LR_ADJUSTMENTS})")

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        return {"momentum_buffer": backend.xp.zeros_like(p.data)}

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        momentum = group["momentum"]
        buffer = state["momentum_buffer"]
        scale(momentum, buffer)
        axpy(1.0 - momentum, grad, buffer)
        if group["nesterov"]:
            direction = self._scratch(p, 0)
            backend.xp.multiply(grad, 1.0 - momentum, out=direction)
            axpy(momentum, buffer, direction)
        else:
            direction = buffer
        update = newton_schulz(direction, group["ns_coefficients"], group["ns_steps"], group["eps"])
        rows, cols = p.data.shape
        if group["adjust_lr_fn"] == "match_rms_adamw":
            step = 0.2 * group["lr"] * math.sqrt(max(rows, cols))
        else:
            step = group["lr"] * math.sqrt(max(1.0, rows / cols))
        if group["weight_decay"]:
            scale(1.0 - group["lr"] * group["weight_decay"], p.data)
        axpy(-step, update.astype(p.data.dtype, copy=False), p.data)
