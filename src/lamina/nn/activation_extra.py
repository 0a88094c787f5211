"""Layers for the rest of PyTorch's activations (:mod:`lamina.functional.activation_extra`
has the formulas and slopes):

    Hardtanh(min_val, max_val)  a = min(max(z, min_val), max_val)
    Softsign                    a = z / (1 + |z|)
    LogSigmoid                  a = log sigma(z)
    CELU(alpha)                 a = max(z, 0) + alpha (e^(min(z, 0) / alpha) - 1)
    Softmin(axis)               a = softmax(-z) along ``axis``
    Tanhshrink                  a = z - tanh z
    Hardshrink(lambd)           a = z where |z| > lambd, else 0
    Softshrink(lambd)           a = z - lambd sign(z) where |z| > lambd, else 0
    Threshold(threshold, value) a = z where z > threshold, else value

None has weights; each keeps its input's shape.
"""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.functional.activation_extra import (
    celu,
    hardshrink,
    hardtanh,
    log_sigmoid,
    softmin,
    softshrink,
    softsign,
    tanhshrink,
    threshold,
)
from lamina.nn.activation import Softmax, _Elementwise
from lamina.nn.layer import register_layer
from lamina.nn.module import as_tensor

__all__ = ["CELU", "Hardshrink", "Hardtanh", "LogSigmoid", "Softmin", "Softshrink", "Softsign", "Tanhshrink",
           "Threshold"]


@register_layer
class Hardtanh(_Elementwise):
    """a = min(max(z, min_val), max_val), by default clipping to [-1, 1]."""

    def __init__(self, min_val: float = -1.0, max_val: float = 1.0, name: str | None = None):
        super().__init__(name=name)
        if not float(min_val) < float(max_val):
            raise ValueError(f"Hardtanh: min_val must be less than max_val, got min_val={min_val}, max_val={max_val}")
        self.min_val, self.max_val = float(min_val), float(max_val)

    def forward(self, x) -> Tensor:
        return hardtanh(as_tensor(x), self.min_val, self.max_val)

    def get_config(self) -> dict:
        return {"min_val": self.min_val, "max_val": self.max_val, "name": self.name}

    def extra_repr(self) -> str:
        return f"min_val={self.min_val}, max_val={self.max_val}"


@register_layer
class Softsign(_Elementwise):
    """a = z / (1 + |z|)."""

    def __init__(self, name: str | None = None):
        super().__init__(name=name)

    def forward(self, x) -> Tensor:
        return softsign(as_tensor(x))


@register_layer
class LogSigmoid(_Elementwise):
    """a = log sigma(z) = -log(1 + e^-z), finite for every z."""

    def __init__(self, name: str | None = None):
        super().__init__(name=name)

    def forward(self, x) -> Tensor:
        return log_sigmoid(as_tensor(x))


@register_layer
class CELU(_Elementwise):
    """a = max(z, 0) + alpha (e^(min(z, 0) / alpha) - 1), alpha > 0: an ELU whose slope is
    1 at 0 for every alpha."""

    default_name = "celu"

    def __init__(self, alpha: float = 1.0, name: str | None = None):
        super().__init__(name=name)
        if not float(alpha) > 0:
            raise ValueError(f"CELU: alpha must be positive, got {alpha!r}")
        self.alpha = float(alpha)

    def forward(self, x) -> Tensor:
        return celu(as_tensor(x), self.alpha)

    def get_config(self) -> dict:
        return {"alpha": self.alpha, "name": self.name}

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}"


@register_layer
class Softmin(Softmax):
    """a_i = e^(-z_i) / sum_j e^(-z_j) along ``axis`` (Softmax's options and configuration)."""

    def forward(self, x) -> Tensor:
        return softmin(as_tensor(x), axis=self.axis)


@register_layer
class Tanhshrink(_Elementwise):
    """a = z - tanh z."""

    def __init__(self, name: str | None = None):
        super().__init__(name=name)

    def forward(self, x) -> Tensor:
        return tanhshrink(as_tensor(x))


class _Shrink(_Elementwise):
    def __init__(self, lambd: float = 0.5, name: str | None = None):
        super().__init__(name=name)
        if not float(lambd) >= 0:
            raise ValueError(f"{type(self).__name__}: lambd must be non-negative, got {lambd!r}")
        self.lambd = float(lambd)

    def get_config(self) -> dict:
        return {"lambd": self.lambd, "name": self.name}

    def extra_repr(self) -> str:
        return f"lambd={self.lambd}"


@register_layer
class Hardshrink(_Shrink):
    """a = z where |z| > lambd, else 0."""

    def forward(self, x) -> Tensor:
        return hardshrink(as_tensor(x), self.lambd)


@register_layer
class Softshrink(_Shrink):
    """a = z - lambd sign(z) where |z| > lambd, else 0."""

    def forward(self, x) -> Tensor:
        return softshrink(as_tensor(x), self.lambd)


@register_layer
class Threshold(_Elementwise):
    """a = z where z > threshold, else ``value`` (both required, as PyTorch's)."""

    def __init__(self, threshold: float, value: float, name: str | None = None):
        super().__init__(name=name)
        self.threshold, self.value = float(threshold), float(value)

    def forward(self, x) -> Tensor:
        return threshold(as_tensor(x), self.threshold, self.value)

    def get_config(self) -> dict:
        return {"threshold": self.threshold, "value": self.value, "name": self.name}

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, value={self.value}"
