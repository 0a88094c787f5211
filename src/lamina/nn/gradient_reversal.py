"""The gradient reversal layer of DANN (Ganin et al. 2016), see
:func:`lamina.functional.gradient_reversal`."""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.functional.domain_adaptation import gradient_reversal
from lamina.nn.layer import register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["GradientReversal"]


@register_layer
class GradientReversal(Module):
    """a = x forward; dJ/dx = -lambda_ dJ/da backward. ``lambda_`` is a plain attribute, so a
    training loop may change it from step to step (DANN's schedule 2 / (1 + exp(-10 p)) - 1,
    :func:`lamina.train.dann_lambda`)."""

    def __init__(self, lambda_: float = 1.0, name: str | None = None):
        super().__init__(name=name)
        self.lambda_ = float(lambda_)

    def forward(self, x) -> Tensor:
        return gradient_reversal(as_tensor(x), self.lambda_)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"lambda_": self.lambda_, "name": self.name}

    def extra_repr(self) -> str:
        return f"lambda_={self.lambda_}"
