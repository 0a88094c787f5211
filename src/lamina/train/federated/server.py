"""Server optimizers: how the server turns the round's pseudo-gradient into new global weights.

After a round the server holds the aggregated client update (the pseudo-gradient)
``Delta = sum_k p_k (w_k - w)`` (``p_k`` the aggregation weights, summing to 1) and applies
it like a gradient step in the ascent direction. With Reddi et al. (2021), "Adaptive
Federated Optimization", Algorithm 2 (server learning rate eta, beta1, beta2, tau)::

    ServerSGD / FedAvgM:  v = momentum * v + Delta;              w = w + eta * v
    FedAdagrad:           m = b1 * m + (1 - b1) * Delta;  v = v + Delta^2
    FedAdam:              m = b1 * m + (1 - b1) * Delta;  v = b2 * v + (1 - b2) * Delta^2
    FedYogi:              m = b1 * m + (1 - b1) * Delta;  v = v - (1 - b2) * Delta^2 * sign(v - Delta^2)
    (the adaptive three)  w = w + eta * m / (sqrt(v) + tau)

``ServerSGD(lr=1)`` is plain FedAvg (w = weighted mean of the client weights); FedAvgM is
server momentum (Hsu, Qi and Brown 2019). As in the paper there is no bias correction, and
``v`` starts at ``initial_accumulator`` (the paper asks ``v_{-1} >= tau^2``; default
``tau^2``; Flower starts at 0).
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import numpy as np

__all__ = ["FedAdagrad", "FedAdam", "FedAvgM", "FedYogi", "ServerOptimizer", "ServerSGD"]

Weights = dict[str, np.ndarray]


def _number(value: Any, name: str, who: str, low: float, high: float = math.inf, low_open: bool = False) -> float:
    bad = isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value)
    if bad or value < low or (low_open and value == low) or value > high:
        bound = f"> {low}" if low_open else f">= {low}"
        upper = "" if high == math.inf else f" and <= {high}"
        raise ValueError(f"{who}: {name} must be a finite number {bound}{upper}; got {value!r}")
    return float(value)


class ServerOptimizer:
    """Base class: :meth:`step` maps (global weights, pseudo-gradient) to the new weights,
    keeping per-name state (moments) between rounds."""

    def __init__(self, lr: float):
        self.lr = _number(lr, "lr", type(self).__name__, 0.0, low_open=True)
        self.state: dict[str, dict[str, np.ndarray]] = {}

    def step(self, weights: Weights, delta: Weights) -> Weights:
        """New weights ``w + direction(Delta)`` for each name in ``delta``."""
        if set(delta) != set(weights):
            raise KeyError(f"{type(self).__name__}.step: the update has names {sorted(delta)} but the weights "
                           f"have {sorted(weights)}")
        new = {}
        for name, w in weights.items():
            state = self.state.setdefault(name, {})
            new[name] = (w + self._direction(np.asarray(delta[name], dtype=w.dtype), state)).astype(w.dtype)
        return new

    def _direction(self, delta: np.ndarray, state: dict) -> np.ndarray:
        raise NotImplementedError

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in vars(self).items() if k != "state")
        return f"{type(self).__name__}({settings})"


class ServerSGD(ServerOptimizer):
    """``v = momentum * v + Delta``, ``w = w + lr * v`` (v starts at 0). ``lr=1``, no momentum
    is FedAvg."""

    def __init__(self, lr: float = 1.0, momentum: float = 0.0):
        super().__init__(lr)
        self.momentum = _number(momentum, "momentum", type(self).__name__, 0.0)

    def _direction(self, delta: np.ndarray, state: dict) -> np.ndarray:
        if self.momentum == 0:
            return self.lr * delta
        state["velocity"] = self.momentum * state.get("velocity", 0) + delta
        return self.lr * state["velocity"]


class FedAvgM(ServerSGD):
    """FedAvg with server momentum (Hsu et al. 2019): :class:`ServerSGD` with momentum 0.9 by default."""

    def __init__(self, lr: float = 1.0, momentum: float = 0.9):
        super().__init__(lr, momentum)


class _Adaptive(ServerOptimizer):
    def __init__(self, lr: float = 0.01, beta1: float = 0.9, beta2: float = 0.99, tau: float = 1e-3,
                 initial_accumulator: float | None = None):
        super().__init__(lr)
        who = type(self).__name__
        self.beta1 = _number(beta1, "beta1", who, 0.0, 1.0)
        self.beta2 = _number(beta2, "beta2", who, 0.0, 1.0)
        self.tau = _number(tau, "tau", who, 0.0, low_open=True)
        start = tau ** 2 if initial_accumulator is None else initial_accumulator
        self.initial_accumulator = _number(start, "initial_accumulator", who, 0.0)

    def _direction(self, delta: np.ndarray, state: dict) -> np.ndarray:
        m = state.get("m", np.zeros_like(delta))
        v = state.get("v", np.full_like(delta, self.initial_accumulator))
        state["m"] = self.beta1 * m + (1 - self.beta1) * delta
        state["v"] = self._second_moment(v, delta * delta)
        return self.lr * state["m"] / (np.sqrt(state["v"]) + self.tau)

    def _second_moment(self, v: np.ndarray, squared: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class FedAdagrad(_Adaptive):
    """``v = v + Delta^2`` (Reddi et al. 2021, Algorithm 2)."""

    def _second_moment(self, v, squared):
        return v + squared


class FedAdam(_Adaptive):
    """``v = beta2 * v + (1 - beta2) * Delta^2`` (Reddi et al. 2021, Algorithm 2)."""

    def _second_moment(self, v, squared):
        return self.beta2 * v + (1 - self.beta2) * squared


class FedYogi(_Adaptive):
    """``v = v - (1 - beta2) * Delta^2 * sign(v - Delta^2)`` (Reddi et al. 2021, Algorithm 2)."""

    def _second_moment(self, v, squared):
        return v - (1 - self.beta2) * squared * np.sign(v - squared)
