"""Layers comparing two inputs vector by vector, over :mod:`lamina.functional.similarity`:
the cosine of the angle between them and the p-norm of their difference (a siamese
network's score, the course notes' distance between two signature vectors).

Both are called with the two tensors, ``layer(a, b)`` (or ``layer([a, b])``), which are
broadcast together, and have no weights.
"""

from __future__ import annotations

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.reduce_more import vector_order
from lamina.nn.layer import register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["CosineSimilarity", "PairwiseDistance"]


def _pair(layer: Module, inputs: tuple) -> tuple[Tensor, Tensor]:
    """The two inputs, given as two arguments or as one list or tuple of two."""
    if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
        inputs = tuple(inputs[0])
    if len(inputs) != 2:
        raise ShapeError(f"{layer._label()}: expected two inputs, layer(a, b), got {len(inputs)}")
    return as_tensor(inputs[0]), as_tensor(inputs[1])


def _broadcast_shapes(layer: Module, input_shape) -> tuple:
    """The shape two input shapes broadcast to (None for an unknown length)."""
    if (not isinstance(input_shape, (list, tuple)) or len(input_shape) != 2
            or not all(isinstance(s, (list, tuple)) for s in input_shape)):
        raise ShapeError(f"{layer._label()}: expected the shapes of two inputs, got {input_shape!r}")
    first, second = (tuple(s) for s in input_shape)
    ndim = max(len(first), len(second))
    padded = [(1,) * (ndim - len(s)) + s for s in (first, second)]
    out = []
    for a, b in zip(*padded):
        if a is None or b is None:             # the known length wins unless it is 1
            known = a if b is None else b
            out.append(None if known in (None, 1) else known)
        elif a != b and 1 not in (a, b):
            raise ShapeError(f"{layer._label()}: input shapes {first} and {second} cannot be broadcast together")
        else:
            out.append(max(a, b))
    return tuple(out)


@register_layer
class CosineSimilarity(Module):
    """cos(a, b) = a . b / (max(||a||, eps) max(||b||, eps)) along ``axis``, which the
    output loses: PyTorch's ``nn.CosineSimilarity`` (there ``dim``, default 1; here the
    last axis by default, where lamina keeps features)."""

    def __init__(self, axis: int = -1, eps: float = 1e-8, name: str | None = None):
        super().__init__(name=name)
        if isinstance(axis, bool) or not isinstance(axis, int):
            raise ValueError(f"CosineSimilarity: axis must be an int, got {axis!r}")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
            raise ValueError(f"CosineSimilarity: eps must be a number >= 0, got {eps!r}")
        self.axis = axis
        self.eps = float(eps)

    def forward(self, *inputs) -> Tensor:
        a, b = _pair(self, inputs)
        return F.cosine_similarity(a, b, axis=self.axis, eps=self.eps)

    def compute_output_shape(self, input_shape):
        shape = _broadcast_shapes(self, input_shape)
        if not -len(shape) <= self.axis < len(shape):
            raise ShapeError(f"{self._label()}: axis {self.axis} is out of range for inputs broadcast to {shape}")
        axis = self.axis % len(shape)
        return shape[:axis] + shape[axis + 1:]

    def get_config(self) -> dict:
        return {"axis": self.axis, "eps": self.eps, "name": self.name}

    def extra_repr(self) -> str:
        return f"axis={self.axis}, eps={self.eps}"


@register_layer
class PairwiseDistance(Module):
    """||a - b + eps||_p along the last axis, which the output loses (kept with length 1
    when ``keepdim``): PyTorch's ``nn.PairwiseDistance``. ``p`` is 1, 2 or inf; eps, added
    to every difference, keeps the gradient finite where a = b."""

    def __init__(self, p: float = 2, eps: float = 1e-6, keepdim: bool = False, name: str | None = None):
        super().__init__(name=name)
        self.p = vector_order(p, "PairwiseDistance", "p")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps >= 0:
            raise ValueError(f"PairwiseDistance: eps must be a number >= 0, got {eps!r}")
        self.eps = float(eps)
        self.keepdim = bool(keepdim)

    def forward(self, *inputs) -> Tensor:
        a, b = _pair(self, inputs)
        distance = F.pairwise_distance(a, b, p=self.p, eps=self.eps)
        return F.expand_dims(distance, -1) if self.keepdim else distance

    def compute_output_shape(self, input_shape):
        shape = _broadcast_shapes(self, input_shape)
        if not shape:
            raise ShapeError(f"{self._label()}: both inputs are scalars; expected vectors along the last axis")
        return shape[:-1] + ((1,) if self.keepdim else ())

    def get_config(self) -> dict:
        return {"p": self.p, "eps": self.eps, "keepdim": self.keepdim, "name": self.name}

    def extra_repr(self) -> str:
        return f"p={self.p}, eps={self.eps}" + (", keepdim=True" if self.keepdim else "")
