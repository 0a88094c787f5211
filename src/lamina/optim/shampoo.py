"""Shampoo: a Kronecker-factored full-matrix AdaGrad preconditioner per parameter."""

from __future__ import annotations

import math
from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.inplace import axpy, scale
from lamina.optim.optimizer import Optimizer, ParamsLike

GRAFTS = ("none", "sgd", "adagrad")


class Shampoo(Optimizer):
    r"""Shampoo (Gupta, Koren and Singer, "Shampoo: Preconditioned Stochastic Tensor
    Optimization", 2018) for a matrix G (a 1-D parameter is one vector, a parameter of
    more axes the matrix (shape[0], the product of the others)). With g = ``dJ_dw +
    weight_decay*w`` in its matrix view G::

        L = L + G G^T,   R = R + G^T G           (L, R start at epsilon*I)
        every update_freq steps:  PL = L^(-1/4),  PR = R^(-1/4)      (eigh-based roots)
        D = PL G PR                              (a vector: D = P g with P = S^(-1/2), S += g g^T)
        D = D * ||A|| / ||D||                    (grafting: 'sgd' A = g, 'adagrad' A = g/(sqrt(a)+epsilon)
                                                  with a += g*g; 'none' leaves D)
        b = momentum*b + D;   w = w - lr*b

    The roots come from the eigendecomposition of the symmetric statistic, eigenvalues
    below ``epsilon * largest`` raised to that floor first. Grafting takes the step size
    of a simpler optimizer and Shampoo's direction, which makes lr transferable from it.
    The statistics hold dim^2 values per dimension: keep it to layers of moderate width.
    """

    _state_arrays = ("stat_left", "stat_right", "root_left", "root_right", "momentum_buffer", "graft_sum")
    _state_numbers = ("step",)

    def __init__(self, params: ParamsLike, lr: float = 0.1, momentum: float = 0.0, weight_decay: float = 0.0,
                 epsilon: float = 1e-4, update_freq: int = 1, graft: str = "none"):
        super().__init__(params, lr=lr, weight_decay=weight_decay, momentum=momentum, epsilon=epsilon,
                         update_freq=update_freq, graft=graft)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        self._check_number("momentum", hp["momentum"], low=0.0, high=1.0, high_open=True)
        self._check_number("epsilon", hp["epsilon"], low=0.0)
        freq = hp["update_freq"]
        if not isinstance(freq, int) or isinstance(freq, bool) or freq < 1:
            raise ValueError(f"{self._name}: invalid update_freq {freq!r} (must be a positive integer)")
        if hp["graft"] not in GRAFTS:
            raise ValueError(f"{self._name}: invalid graft {hp['graft']!r} (must be one of {GRAFTS})")

    def _state_shape(self, name: str, p: Tensor) -> tuple[int, ...]:
        rows, cols = _matrix_shape(p.data.shape)
        if name.endswith("_left"):
            return (rows, rows)
        if name.endswith("_right"):
            return (cols, cols)
        return tuple(p.data.shape)

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        xp = backend.xp
        rows, cols = _matrix_shape(p.data.shape)
        dtype = p.data.dtype
        state = {"step": 0, "stat_left": group["epsilon"] * xp.eye(rows, dtype=dtype),
                 "root_left": xp.eye(rows, dtype=dtype), "momentum_buffer": xp.zeros_like(p.data)}
        if cols:
            state["stat_right"] = group["epsilon"] * xp.eye(cols, dtype=dtype)
            state["root_right"] = xp.eye(cols, dtype=dtype)
        if group["graft"] == "adagrad":
            state["graft_sum"] = xp.zeros_like(p.data)
        return state

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        xp = backend.xp
        g = self._decayed_grad(p, grad, group["weight_decay"])
        state["step"] += 1
        rows, cols = _matrix_shape(p.data.shape)
        refresh = (state["step"] - 1) % group["update_freq"] == 0
        eps = group["epsilon"]
        if cols:
            matrix = g.reshape(rows, cols)
            state["stat_left"] += matrix @ matrix.T
            state["stat_right"] += matrix.T @ matrix
            if refresh:
                state["root_left"] = inverse_root(state["stat_left"], 4, eps)
                state["root_right"] = inverse_root(state["stat_right"], 4, eps)
            direction = (state["root_left"] @ matrix @ state["root_right"]).reshape(p.data.shape)
        else:
            vector = g.reshape(-1)
            state["stat_left"] += xp.outer(vector, vector)
            if refresh:
                state["root_left"] = inverse_root(state["stat_left"], 2, eps)
            direction = (state["root_left"] @ vector).reshape(p.data.shape)
        if group["graft"] != "none":
            reference = g
            if group["graft"] == "adagrad":
                total = state["graft_sum"]
                total += g * g
                reference = g / (xp.sqrt(total) + eps)
            norm = math.sqrt(float(xp.vdot(direction, direction)))
            if norm > 0:
                direction *= math.sqrt(float(xp.vdot(reference, reference))) / norm
        buffer = state["momentum_buffer"]
        scale(group["momentum"], buffer)
        axpy(1.0, direction, buffer)
        axpy(-group["lr"], buffer, p.data)


def _matrix_shape(shape: tuple[int, ...]) -> tuple[int, int]:
    """(rows, cols) of the matrix view; cols is 0 for a vector (one preconditioner)."""
    if len(shape) <= 1:
        return (math.prod(shape), 0)
    return (shape[0], math.prod(shape[1:]))


def inverse_root(matrix, order: int, epsilon: float):
    """matrix^(-1/order) of a symmetric positive semi-definite matrix, from its eigh,
    eigenvalues floored at ``epsilon`` times the largest (and at the smallest normal number)."""
    xp = backend.xp
    values, vectors = xp.linalg.eigh(matrix)
    floor = max(epsilon * float(values.max()), float(xp.finfo(values.dtype).tiny))
    values = xp.maximum(values, floor) ** (-1.0 / order)
    return (vectors * values) @ vectors.T
