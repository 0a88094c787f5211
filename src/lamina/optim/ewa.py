"""Exponentially weighted (moving) averages, with bias correction."""

from __future__ import annotations

import numbers
from typing import Any

from lamina import backend
from lamina.autograd import Tensor


class ExponentialMovingAverage:
    r"""An exponentially weighted average of a stream of numbers or arrays.

    Course notes, "Exponentially weighted averages"::

        v_t = beta*v_{t-1} + (1 - beta)*theta_t        (v_0 = 0)
        v_t (corrected) = v_t / (1 - beta**t)          (bias correction)

    :math:`v_t` averages roughly the last :math:`1/(1-\beta)` values. Starting from
    :math:`v_0 = 0` biases the first averages towards 0; dividing by
    :math:`1-\beta^t` removes that bias (the first corrected average is the first value
    itself). The same averages, of the gradient and of its square, are what
    :class:`~lamina.optim.Adam` and :class:`~lamina.optim.RMSProp` keep per parameter.

    ``update(value)`` returns the (corrected, unless ``bias_correction=False``) average;
    it works on floats and on arrays of a fixed shape (the caller's array is not
    modified). Useful for smoothing a loss curve in progress reports.
    """

    def __init__(self, beta: float = 0.9, bias_correction: bool = True):
        if not (isinstance(beta, numbers.Real) and 0.0 <= beta < 1.0):
            raise ValueError(f"ExponentialMovingAverage: invalid beta {beta!r} (must be in [0, 1))")
        self.beta = float(beta)
        self.bias_correction = bool(bias_correction)
        self.t = 0
        self.biased: Any = None

    def update(self, value: Any) -> Any:
        """Fold ``value`` (:math:`\\theta_t`) into the average; returns the average."""
        if isinstance(value, Tensor):
            value = value.data
        if isinstance(value, numbers.Real):
            value = float(value)
        self.t += 1
        if self.biased is None:
            self.biased = (1.0 - self.beta) * value
        else:
            self.biased = self.beta * self.biased + (1.0 - self.beta) * value
        return self.value

    @property
    def value(self) -> Any:
        """The current average (``None`` before the first update)."""
        if self.biased is None:
            return None
        if not self.bias_correction:
            return self.biased
        return self.biased / (1.0 - self.beta**self.t)

    def reset(self) -> None:
        """Forget every value seen."""
        self.t = 0
        self.biased = None

    def state_dict(self) -> dict[str, Any]:
        biased = self.biased
        if biased is not None and not isinstance(biased, float):
            biased = backend.to_numpy(biased).copy()
        return {"beta": self.beta, "bias_correction": self.bias_correction, "t": self.t, "biased": biased}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.beta = float(state["beta"])
        self.bias_correction = bool(state["bias_correction"])
        self.t = int(state["t"])
        biased = state["biased"]
        if biased is not None and not isinstance(biased, numbers.Real):
            biased = backend.xp.array(biased)
        self.biased = float(biased) if isinstance(biased, numbers.Real) else biased

    def __repr__(self) -> str:
        return f"ExponentialMovingAverage(beta={self.beta}, bias_correction={self.bias_correction}, t={self.t})"
