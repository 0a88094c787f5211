r"""GaLore: gradient low-rank projection (Zhao et al. 2024, "GaLore: Memory-Efficient LLM
Training by Gradient Low-Rank Projection").

For a weight matrix W (m x n) with gradient G, every ``update_proj_gap`` steps (the first
step included) GaLore takes the top-r singular vectors of the current G on its shorter side:

    m < n:   P = U[:, :r]   (m x r),   R = P^T G   (r x n),   G~ = P N
    m >= n:  P = V[:, :r]   (n x r),   R = G P     (m x r),   G~ = N P^T

where N is the base optimizer's step direction computed from R with moments kept in the
projected (r-sized) space; the weight moves by ``lr * scale * G~``. Adam's two moments cost
2 r (m or n) numbers and P r * min(m, n), against 2 m n for Adam on the full matrix.
Parameters that are not matrices (biases, norm gains) get the base update unprojected.

The Adam step follows :class:`~lamina.optim.AdamW` (eps after the bias correction, decoupled
decay ``w = w (1 - lr weight_decay)`` applied to the full weight before the step)::

    m = beta1 m + (1 - beta1) R;   v = beta2 v + (1 - beta2) R^2
    N = (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)

``base="adam"`` adds ``weight_decay * w`` to G before the projection instead; ``base="sgd"``
uses N = b with the momentum buffer b = momentum b + R (N = R without momentum).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.adam import _check_betas_eps, _pair
from lamina.optim.optimizer import Optimizer, ParamsLike

__all__ = ["GaLore", "optimizer_state_bytes"]

_BASES = ("adamw", "adam", "sgd")


class GaLore(Optimizer):
    """GaLore around an Adam, AdamW or SGD step (see the module docstring).

    Parameters
    ----------
    base: ``"adamw"`` (default), ``"adam"`` or ``"sgd"``.
    rank: r, the number of singular vectors kept (at most the shorter side of a matrix).
    update_proj_gap: the projection is recomputed from the gradient every this many steps.
    scale: the factor alpha on the projected-back update.
    lr, betas, eps, weight_decay, momentum: the base optimizer's hyperparameters
    (``momentum`` is SGD's; ``betas`` and ``eps`` Adam's).
    """

    _state_arrays = ("projection", "exp_avg", "exp_avg_sq", "momentum_buffer")
    _state_numbers = ("step",)

    def __init__(self, params: ParamsLike, base: str = "adamw", rank: int = 128, update_proj_gap: int = 200,
                 scale: float = 0.25, lr: float = 0.001, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0, momentum: float = 0.0):
        super().__init__(params, lr=lr, weight_decay=weight_decay, base=base, rank=rank,
                         update_proj_gap=update_proj_gap, scale=scale, betas=_pair(betas), eps=eps,
                         momentum=momentum)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        if hp["base"] not in _BASES:
            raise ValueError(f"{self._name}: invalid base {hp['base']!r} (must be one of {list(_BASES)})")
        for name in ("rank", "update_proj_gap"):
            value = hp[name]
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
                raise ValueError(f"{self._name}: invalid {name} {value!r} (must be a positive int)")
        self._check_number("scale", hp["scale"], low=0.0)
        self._check_number("momentum", hp["momentum"], low=0.0, high=1.0, high_open=True)
        _check_betas_eps(self, hp)

    # -- shapes ------------------------------------------------------------------
    def _group_of(self, p: Tensor) -> dict:
        return next(g for g in self.param_groups if any(q is p for q in g["params"]))

    @staticmethod
    def _projected_shape(shape: tuple[int, ...], rank: int) -> tuple[tuple[int, ...], tuple[int, ...]]:
        """(shape of P, shape of the projected gradient R) for a matrix of ``shape``."""
        m, n = shape
        r = min(rank, m, n)
        return ((m, r), (r, n)) if m < n else ((n, r), (m, r))

    def _state_shape(self, name: str, p: Tensor) -> tuple[int, ...]:
        if p.data.ndim != 2:
            return tuple(p.data.shape)
        projection, reduced = self._projected_shape(tuple(p.data.shape), self._group_of(p)["rank"])
        return projection if name == "projection" else reduced

    # -- the step ----------------------------------------------------------------
    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        xp = backend.xp
        shape = tuple(p.data.shape)
        if p.data.ndim == 2:
            shape = self._projected_shape(shape, group["rank"])[1]
        if group["base"] == "sgd":
            return {"step": 0, "momentum_buffer": xp.zeros(shape, dtype=p.data.dtype)}
        return {"step": 0, "exp_avg": xp.zeros(shape, dtype=p.data.dtype),
                "exp_avg_sq": xp.zeros(shape, dtype=p.data.dtype)}

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        state["step"] += 1
        lr, decay = group["lr"], group["weight_decay"]
        if group["base"] == "adamw":
            if decay:
                p.data *= 1.0 - lr * decay
        elif decay:
            grad = grad + decay * p.data
        if p.data.ndim != 2:
            p.data -= lr * self._direction(grad, state, group)
            return
        if (state["step"] - 1) % group["update_proj_gap"] == 0:
            state["projection"] = _top_singular_vectors(grad, group["rank"])
        projection = state["projection"]
        left = p.data.shape[0] < p.data.shape[1]
        reduced = projection.T @ grad if left else grad @ projection
        direction = self._direction(reduced, state, group)
        full = projection @ direction if left else direction @ projection.T
        p.data -= (lr * group["scale"]) * full.astype(p.data.dtype, copy=False)

    @staticmethod
    def _direction(g, state: dict[str, Any], group: dict):
        """The base optimizer's step direction N for the (projected) gradient g, its state advanced."""
        if group["base"] == "sgd":
            buf = state["momentum_buffer"]
            buf *= group["momentum"]
            buf += g
            return buf
        beta1, beta2 = group["betas"]
        t = state["step"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        m += (1.0 - beta1) * g
        v *= beta2
        v += (1.0 - beta2) * g * g
        denom = backend.xp.sqrt(v) / math.sqrt(1.0 - beta2**t) + group["eps"]
        return (m / (1.0 - beta1**t)) / denom

    def state_bytes(self) -> int:
        """Bytes held by the optimizer's per-parameter state arrays (see :func:`optimizer_state_bytes`)."""
        return optimizer_state_bytes(self)


def _top_singular_vectors(grad, rank: int):
    """P: the top-``rank`` left singular vectors of ``grad`` (m < n) or right ones (m >= n), as
    columns, each signed so that its largest entry in magnitude is positive (an SVD leaves the
    signs free; fixed signs keep the moments of a direction that did not change at a refresh)."""
    xp = backend.xp
    m, n = grad.shape
    u, _, vt = xp.linalg.svd(grad, full_matrices=False)
    r = min(rank, m, n)
    p = u[:, :r] if m < n else vt[:r].T
    biggest = xp.abs(p).argmax(axis=0)
    signs = xp.where(p[biggest, xp.arange(r)] < 0, -1.0, 1.0).astype(p.dtype)
    return xp.ascontiguousarray(p * signs).astype(grad.dtype, copy=False)


def optimizer_state_bytes(optimizer: Optimizer) -> int:
    """The bytes of every array in ``optimizer.state`` (moments, projections, buffers): the
    optimizer's memory beyond the parameters and gradients, for any lamina optimizer."""
    total = 0
    for entry in optimizer.state.values():
        for value in entry.values():
            if hasattr(value, "nbytes") and not np.isscalar(value):
                total += int(value.nbytes)
    return total
