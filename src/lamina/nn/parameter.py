"""``Parameter``: a tensor a module learns."""

from __future__ import annotations

from lamina.autograd import Tensor


class Parameter(Tensor):
    """A leaf tensor registered by a module; ``trainable=False`` freezes it (no gradient)."""

    __slots__ = ("trainable",)

    def __init__(self, data, trainable: bool = True, dtype=None):
        super().__init__(data, requires_grad=trainable, dtype=dtype)
        self.trainable = trainable

    def freeze(self) -> None:
        self.trainable = False
        self.requires_grad = False
        self.grad = None

    def unfreeze(self) -> None:
        self.trainable = True
        self.requires_grad = True

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, trainable={self.trainable})"
