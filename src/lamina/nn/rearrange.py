"""Layers of einops-style axis algebra: ``Rearrange`` and ``Reduce``, the layer forms of
:func:`lamina.functional.rearrange` and :func:`lamina.functional.reduce`.

``Sequential(Rearrange("b (h p) (w q) c -> b (h w) (p q c)", p=4, q=4), Dense(dim))`` is a
ViT's patch embedding; ``Reduce("b h w c -> b c", "mean")`` is global average pooling. The
pattern is checked when the layer is made, so a mistake shows before any input arrives.
"""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.functional import rearrange as F_rearrange
from lamina.functional.rearrange import check_pattern, output_shape
from lamina.functional.rearrange import reduce as F_reduce
from lamina.nn.layer import register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["Rearrange", "Reduce"]

LAYER_REDUCTIONS = ("mean", "sum", "max", "min", "prod")


class _Pattern(Module):
    op = ""

    def __init__(self, pattern: str, /, name: str | None = None, **axis_sizes: int):
        super().__init__(name=name)
        self.pattern = pattern
        self.axis_sizes = dict(axis_sizes)
        check_pattern(self.op, pattern, self.axis_sizes)

    def compute_output_shape(self, input_shape):
        return output_shape(self.op, self.pattern, tuple(input_shape), **self.axis_sizes)

    def get_config(self) -> dict:
        return {"pattern": self.pattern, "axis_sizes": dict(self.axis_sizes), "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> Module:
        config = dict(config)
        sizes = config.pop("axis_sizes", {}) or {}
        return cls(config.pop("pattern"), **config, **sizes)

    def extra_repr(self) -> str:
        sizes = "".join(f", {k}={v}" for k, v in self.axis_sizes.items())
        return f"{self.pattern!r}{sizes}"


@register_layer
class Rearrange(_Pattern):
    """y = rearrange(x, pattern, **axis_sizes): axes reordered, merged and split, e.g.
    ``Rearrange("b h w c -> b (h w) c")`` turns a feature map into a sequence of tokens."""

    op = "rearrange"

    def forward(self, x) -> Tensor:
        return F_rearrange(as_tensor(x), self.pattern, **self.axis_sizes)


@register_layer
class Reduce(_Pattern):
    """y = reduce(x, pattern, reduction, **axis_sizes): the axes the right side leaves out
    are reduced by 'mean', 'sum', 'max', 'min' or 'prod', e.g.
    ``Reduce("b (h 2) (w 2) c -> b h w c", "max")`` is 2 x 2 max pooling."""

    op = "reduce"

    def __init__(self, pattern: str, /, reduction: str = "mean", name: str | None = None, **axis_sizes: int):
        if reduction not in LAYER_REDUCTIONS:
            raise ValueError(f"Reduce({pattern!r}): reduction must be one of {LAYER_REDUCTIONS}, got {reduction!r}")
        super().__init__(pattern, name=name, **axis_sizes)
        self.reduction = reduction

    def forward(self, x) -> Tensor:
        return F_reduce(as_tensor(x), self.pattern, self.reduction, **self.axis_sizes)

    def get_config(self) -> dict:
        return {**super().get_config(), "reduction": self.reduction}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, reduction={self.reduction!r}"
