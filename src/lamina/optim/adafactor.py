"""Adafactor: Adam-like steps with factored second moments (sublinear memory)."""

from __future__ import annotations

import math
from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.inplace import axpy, scale
from lamina.optim.optimizer import Optimizer, ParamsLike


class Adafactor(Optimizer):
    r"""Adafactor (Shazeer and Stern, "Adafactor: Adaptive Learning Rates with Sublinear
    Memory Cost", 2018), as ``torch.optim.Adafactor`` (same defaults, step for step).

    For a parameter of two or more dimensions, shaped (..., n, m), the running average of
    the squared gradient is not stored: only its row means R (..., n, 1) and column means
    C (..., 1, m) are, and the full estimate is their outer product rescaled,
    ``V = R C / mean(R)``; vectors keep the plain average V. With g the gradient (negated
    when ``maximize``), t the step count and (eps1, eps2) = ``eps``::

        beta2_t = 1 - t**beta2_decay                     # 0 at t = 1, then towards 1
        rho     = min(lr, 1/sqrt(t))                     # relative step size
        alpha   = max(eps2, rms(w)) * rho                # step relative to the weights' scale
        w       = w - lr*weight_decay*w                  # decoupled decay
        R = beta2_t R + (1-beta2_t) mean_cols(g^2);  C = beta2_t C + (1-beta2_t) mean_rows(g^2)
        V = R C / max(mean_rows(R), eps1)                (V = beta2_t V + (1-beta2_t) g^2 for vectors)
        U = g / sqrt(max(V, eps1^2))
        w = w - alpha * U / max(1, rms(U)/d)             # update clipping at threshold d

    ``lr`` is not the step size: it caps the relative step size rho and scales the weight
    decay (torch's reading; the paper caps rho at 0.01, torch's default ``lr``). ``eps1``
    of ``None`` is the machine epsilon of the parameter's dtype. There is no momentum
    (the paper's beta1 = 0): the memory is O(n + m) per matrix.
    """

    _state_arrays = ("row_var", "col_var", "variance")
    _state_numbers = ("step",)

    def __init__(self, params: ParamsLike, lr: float = 1e-2, beta2_decay: float = -0.8,
                 eps: tuple[float | None, float] = (None, 1e-3), d: float = 1.0, weight_decay: float = 0.0,
                 maximize: bool = False):
        super().__init__(params, lr=lr, weight_decay=weight_decay, beta2_decay=beta2_decay,
                         eps=tuple(eps) if isinstance(eps, list) else eps, d=d, maximize=maximize)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        self._check_number("beta2_decay", hp["beta2_decay"])
        if hp["beta2_decay"] > 0:
            raise ValueError(f"{self._name}: invalid beta2_decay {hp['beta2_decay']!r} (must be <= 0)")
        eps = hp["eps"]
        if not isinstance(eps, (tuple, list)) or len(eps) != 2:
            raise ValueError(f"{self._name}: invalid eps {eps!r} (must be a pair (eps1 or None, eps2))")
        if eps[0] is not None:
            self._check_number("eps1", eps[0], low=0.0)
        self._check_number("eps2", eps[1], low=0.0)
        self._check_number("d", hp["d"], low=1.0)
        if not isinstance(hp["maximize"], bool):
            raise ValueError(f"{self._name}: invalid maximize {hp['maximize']!r} (must be True or False)")

    def _state_shape(self, name: str, p: Tensor) -> tuple[int, ...]:
        shape = tuple(p.data.shape)
        if name == "row_var":
            return shape[:-1] + (1,)
        if name == "col_var":
            return shape[:-2] + (1, shape[-1])
        return shape

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        xp = backend.xp
        dtype = p.data.dtype
        if p.data.ndim > 1:
            return {"step": 0, "row_var": xp.zeros(self._state_shape("row_var", p), dtype=dtype),
                    "col_var": xp.zeros(self._state_shape("col_var", p), dtype=dtype)}
        return {"step": 0, "variance": xp.zeros_like(p.data)}

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        xp = backend.xp
        w = p.data
        eps1, eps2 = group["eps"]
        if eps1 is None:
            eps1 = float(xp.finfo(w.dtype).eps)
        lr = group["lr"]
        state["step"] += 1
        t = float(state["step"])
        new_weight = t ** group["beta2_decay"]          # 1 - beta2_t
        rho = min(lr, 1.0 / math.sqrt(t))
        alpha = max(eps2, float(xp.linalg.norm(w.ravel())) / math.sqrt(max(w.size, 1))) * rho
        if group["weight_decay"]:
            scale(1.0 - lr * group["weight_decay"], w)
        g = -grad if group["maximize"] else grad
        squared = self._scratch(p, 0)
        xp.multiply(g, g, out=squared)
        if w.ndim > 1:
            row_var, col_var = state["row_var"], state["col_var"]
            _lerp(row_var, squared.mean(axis=-1, keepdims=True), new_weight)
            _lerp(col_var, squared.mean(axis=-2, keepdims=True), new_weight)
            estimate = squared                            # g^2 is no longer needed
            xp.multiply(row_var, col_var, out=estimate)
            estimate /= xp.maximum(row_var.mean(axis=-2, keepdims=True), eps1)
        else:
            _lerp(state["variance"], squared, new_weight)
            estimate = squared
            estimate[...] = state["variance"]
        update = estimate
        xp.maximum(update, eps1 * eps1, out=update)
        xp.sqrt(update, out=update)
        xp.divide(g, update, out=update)
        rms = float(xp.linalg.norm(update.ravel())) / math.sqrt(max(update.size, 1))
        axpy(-alpha / max(1.0, rms / group["d"]), update, w)


def _lerp(start, end, weight: float) -> None:
    """start += weight (end - start), in place, rounded as torch's ``lerp_`` rounds it
    (from the nearer end: ``end - (1 - weight)(end - start)`` when weight >= 1/2)."""
    if weight < 0.5:
        start += weight * (end - start)
    else:
        start[...] = end - (1.0 - weight) * (end - start)
