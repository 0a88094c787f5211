"""What an optimizer wrapper (Lookahead, SAM) passes through to the optimizer it wraps."""

from __future__ import annotations

from typing import Any

from lamina.autograd import Tensor
from lamina.optim.optimizer import Optimizer


class OptimizerWrapper:
    """Stands wherever an optimizer does: ``param_groups``, ``params``, ``lr`` (a schedule
    setting it reaches the inner optimizer) and ``zero_grad`` are the inner ``optimizer``'s."""

    optimizer: Optimizer

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        """The inner optimizer's parameter groups (the same list: changes reach it)."""
        return self.optimizer.param_groups

    @property
    def params(self) -> list[Tensor]:
        return self.optimizer.params

    @property
    def lr(self) -> float:
        """The inner optimizer's base learning rate; setting it sets the inner one's."""
        return self.optimizer.lr

    @lr.setter
    def lr(self, value: float) -> None:
        self.optimizer.lr = value

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none)
