"""SOAP: Adam run in the eigenbasis of Shampoo's preconditioners."""

from __future__ import annotations

import math
from typing import Any

from lamina import backend
from lamina.autograd import Tensor
from lamina.optim.adam import _check_betas_eps, _pair
from lamina.optim.optimizer import Optimizer, ParamsLike


class SOAP(Optimizer):
    r"""SOAP, "ShampoO with Adam in the Preconditioner's eigenbasis" (Vyas et al., "SOAP:
    Improving and Stabilizing Shampoo using Adam", 2024), as the authors' code. A parameter's
    gradient is seen as a matrix G (shape[0] by the product of the other axes; a vector is
    left in its own basis unless ``precondition_1d``). With b = ``shampoo_beta`` (beta2 when
    None) and QL, QR orthogonal bases (identity for an axis longer than ``max_precond_dim``)::

        first step: L = (1-b) G G^T,  R = (1-b) G^T G,  QL, QR = their eigenvectors; w unchanged
        then, with t counting these later steps:
            G' = QL^T G QR                                  # the gradient in the eigenbasis
            m = beta1*m + (1-beta1)*G;   v = beta2*v + (1-beta2)*G'^2
            w = w - lr*sqrt(1-beta2**t)/(1-beta1**t) * QL ((QL^T m QR) / (sqrt(v) + eps)) QR^T
            w = w - lr*weight_decay*w
            L = b L + (1-b) G G^T,  R = b R + (1-b) G^T G
            every precondition_frequency steps: one power iteration and QR per basis,
            QL = qr(L QL') with QL' the columns of QL sorted by decreasing QL^T L QL
            (v's rows and columns permuted alike)
    """

    _state_arrays = ("exp_avg", "exp_avg_sq", "gg_left", "gg_right", "q_left", "q_right")
    _state_numbers = ("step", "started")

    def __init__(self, params: ParamsLike, lr: float = 3e-3, betas: tuple[float, float] = (0.95, 0.95),
                 shampoo_beta: float | None = None, eps: float = 1e-8, weight_decay: float = 0.01,
                 precondition_frequency: int = 10, max_precond_dim: int = 10000, precondition_1d: bool = False):
        super().__init__(params, lr=lr, weight_decay=weight_decay, betas=_pair(betas), shampoo_beta=shampoo_beta,
                         eps=eps, precondition_frequency=precondition_frequency, max_precond_dim=max_precond_dim,
                         precondition_1d=precondition_1d)

    def _validate(self, hp: dict) -> None:
        super()._validate(hp)
        _check_betas_eps(self, hp)
        if hp["shampoo_beta"] is not None:
            self._check_number("shampoo_beta", hp["shampoo_beta"], low=0.0, high=1.0, high_open=True)
        for name in ("precondition_frequency", "max_precond_dim"):
            value = hp[name]
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{self._name}: invalid {name} {value!r} (must be a positive integer)")
        if not isinstance(hp["precondition_1d"], bool):
            raise ValueError(f"{self._name}: invalid precondition_1d {hp['precondition_1d']!r} (must be True or False)")

    def _sides(self, shape: tuple[int, ...], group: dict) -> dict[str, int]:
        """The preconditioned sides of the matrix view and their sizes."""
        rows, cols = (shape[0], math.prod(shape[1:])) if len(shape) > 1 else (math.prod(shape), 0)
        sides = {"left": rows, "right": cols} if cols or group["precondition_1d"] else {}
        return {side: n for side, n in sides.items() if 0 < n <= group["max_precond_dim"]}

    def _state_shape(self, name: str, p: Tensor) -> tuple[int, ...]:
        if name.startswith(("gg_", "q_")):
            shape = tuple(p.data.shape)
            rows, cols = (shape[0], math.prod(shape[1:])) if len(shape) > 1 else (math.prod(shape), 0)
            n = rows if name.endswith("left") else cols
            return (n, n)
        return tuple(p.data.shape)

    def _init_state(self, p: Tensor, group: dict) -> dict[str, Any]:
        xp = backend.xp
        state = {"step": 0, "started": 0, "exp_avg": xp.zeros_like(p.data), "exp_avg_sq": xp.zeros_like(p.data)}
        for side, n in self._sides(tuple(p.data.shape), group).items():
            state[f"gg_{side}"] = xp.zeros((n, n), dtype=p.data.dtype)
        return state

    def _update(self, p: Tensor, grad, state: dict[str, Any], group: dict) -> None:
        xp = backend.xp
        matrix = _matrix(grad)
        if not state["started"]:
            self._accumulate(matrix, state, group)
            for side in ("left", "right"):
                if f"gg_{side}" in state:
                    state[f"q_{side}"] = _eigenvectors(state[f"gg_{side}"])
            state["started"] = 1
            return
        beta1, beta2 = group["betas"]
        state["step"] += 1
        t = state["step"]
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m *= beta1
        m += (1.0 - beta1) * grad
        rotated = _project(matrix, state)
        v *= beta2
        v += (1.0 - beta2) * (rotated * rotated).reshape(v.shape)
        direction = _project(_matrix(m), state) / (xp.sqrt(_matrix(v)) + group["eps"])
        step_size = group["lr"] * math.sqrt(1.0 - beta2**t) / (1.0 - beta1**t)
        p.data -= step_size * _project_back(direction, state).reshape(p.data.shape)
        if group["weight_decay"]:
            p.data *= 1.0 - group["lr"] * group["weight_decay"]
        self._accumulate(matrix, state, group)
        if t % group["precondition_frequency"] == 0:
            self._refresh_bases(state)

    @staticmethod
    def _accumulate(matrix, state: dict[str, Any], group: dict) -> None:
        b = group["betas"][1] if group["shampoo_beta"] is None else group["shampoo_beta"]
        if "gg_left" in state:
            state["gg_left"] *= b
            state["gg_left"] += (1.0 - b) * (matrix @ matrix.T)
        if "gg_right" in state:
            state["gg_right"] *= b
            state["gg_right"] += (1.0 - b) * (matrix.T @ matrix)

    @staticmethod
    def _refresh_bases(state: dict[str, Any]) -> None:
        """One power iteration per basis, its columns (and v's axis) sorted first by the
        estimated eigenvalues, largest first."""
        xp = backend.xp
        v = _matrix(state["exp_avg_sq"])
        for axis, side in enumerate(("left", "right")):
            if f"q_{side}" not in state:
                continue
            gg, q = state[f"gg_{side}"], state[f"q_{side}"]
            estimates = xp.einsum("ij,ik,kj->j", q, gg, q)
            order = xp.argsort(-estimates, kind="stable")
            v = xp.take(v, order, axis=axis)
            state[f"q_{side}"] = xp.linalg.qr(gg @ q[:, order])[0]
        state["exp_avg_sq"] = xp.ascontiguousarray(v.reshape(state["exp_avg_sq"].shape))


def _matrix(array):
    """The matrix view: (shape[0], rest), a vector as a column."""
    return array.reshape(array.shape[0], -1) if array.ndim > 1 else array.reshape(-1, 1)


def _project(matrix, state: dict[str, Any]):
    if "q_left" in state:
        matrix = state["q_left"].T @ matrix
    if "q_right" in state:
        matrix = matrix @ state["q_right"]
    return matrix


def _project_back(matrix, state: dict[str, Any]):
    if "q_left" in state:
        matrix = state["q_left"] @ matrix
    if "q_right" in state:
        matrix = matrix @ state["q_right"].T
    return matrix


def _eigenvectors(symmetric):
    """Eigenvectors as columns, largest eigenvalue first."""
    xp = backend.xp
    _, vectors = xp.linalg.eigh(symmetric + 1e-30 * xp.eye(symmetric.shape[0], dtype=symmetric.dtype))
    return xp.ascontiguousarray(vectors[:, ::-1])
