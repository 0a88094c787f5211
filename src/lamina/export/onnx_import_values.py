"""The values an imported ONNX graph passes between its nodes, and the registry of operator
handlers (:func:`register_onnx_op`) that :mod:`lamina.export.onnx_import` runs.

A value is a lamina :class:`Tensor` (floats, on the graph so gradients flow; integer
tensors carry shapes, axes and indices, evaluated on plain arrays without gradient) or a
:class:`Permuted` tensor: the ONNX value is ``transpose(tensor, perm)``, not yet carried
out. An NCHW convolution runs lamina's NHWC kernel and hands on its output as
``Permuted(y_nhwc, (0, 3, 1, 2))``; the next convolution, pooling, normalization or
elementwise op reads it as it is, so the transposes between such layers cost nothing, and a
Transpose node only changes ``perm``. A handler registered as layout-aware receives
Permuted values; the others receive them transposed (one copy, made once per value).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor

__all__ = ["Node", "OpHandler", "Permuted", "register_onnx_op", "supported_onnx_ops"]


@dataclass(frozen=True)
class Permuted:
    """The ONNX value ``transpose(tensor, perm)``, kept untransposed."""

    tensor: Tensor
    perm: tuple[int, ...]

    @property
    def shape(self) -> tuple[int, ...]:
        return tuple(self.tensor.shape[p] for p in self.perm)

    @property
    def ndim(self) -> int:
        return len(self.perm)

    def materialize(self) -> Tensor:
        return transposed(self.tensor, self.perm)


def transposed(t: Tensor, perm) -> Tensor:
    """``t`` transposed by ``perm``; no op when ``perm`` is the identity."""
    perm = tuple(perm)
    return t if perm == tuple(range(len(perm))) else F.transpose(t, perm)


def held(value) -> Permuted:
    """Any value as a Permuted one (a plain tensor with the identity permutation)."""
    if isinstance(value, Permuted):
        return value
    return Permuted(value, tuple(range(value.ndim)))


def logical(value):
    """The ONNX value itself: a Permuted value transposed, anything else as it is."""
    return value.materialize() if isinstance(value, Permuted) else value


def channels_last(value) -> Tensor:
    """An NCHW value (N, C, H, W) as lamina's NHWC tensor (N, H, W, C): free when it is the
    output of a layer that ran in NHWC, one transpose otherwise."""
    v = held(value)
    return transposed(v.tensor, [v.perm[i] for i in (0, 2, 3, 1)])


def from_channels_last(t: Tensor) -> Permuted:
    """lamina's NHWC result (N, H, W, C) as the NCHW ONNX value, untransposed."""
    return Permuted(t, (0, 3, 1, 2))


@dataclass
class Node:
    """What a handler knows of its node: ``op_type``, ``name``, the decoded ``attrs``, the
    number of outputs asked for, and the graph's opset of the default domain."""

    op_type: str
    name: str
    attrs: dict = field(default_factory=dict)
    outputs: int = 1
    opset: int = 17

    def attr(self, key: str, default=None):
        return self.attrs.get(key, default)

    def where(self) -> str:
        return f"load_onnx: {self.op_type} node {self.name!r}"


OpHandler = Callable[..., object]
_HANDLERS: dict[str, tuple[OpHandler, bool]] = {}
_SCOPED: set[str] = set()


def register_onnx_op(op_type: str, fn: OpHandler | None = None, layout_aware: bool = False,
                     scoped: bool = False):
    """Add (or replace) the handler of ONNX operator ``op_type``: ``fn(node, *inputs)``
    returns the output value, or a tuple for several outputs. ``node`` is a :class:`Node`;
    inputs are lamina Tensors (None for an omitted optional input). A layout-aware handler
    receives :class:`Permuted` values as they are. A scoped handler (an operator with
    subgraphs) is called as ``fn(node, scope, *inputs)``, ``scope`` the dict of the values
    its subgraphs may read by name. Usable as a decorator: ``@register_onnx_op('Celu')``."""
    def add(handler: OpHandler) -> OpHandler:
        _HANDLERS[op_type] = (handler, layout_aware)
        if scoped:
            _SCOPED.add(op_type)
        else:
            _SCOPED.discard(op_type)
        return handler
    return add if fn is None else add(fn)


def handler(op_type: str) -> tuple[OpHandler, bool] | None:
    return _HANDLERS.get(op_type)


def reads_scope(op_type: str) -> bool:
    """Whether the operator's handler takes the scope of visible values (If, Loop, Scan)."""
    return op_type in _SCOPED


def supported_onnx_ops() -> list[str]:
    """The ONNX operator types load_onnx can run."""
    return sorted(_HANDLERS)


# -- reading inputs --------------------------------------------------------------------------
def is_float(value) -> bool:
    return value is not None and held(value).tensor.dtype.kind == "f"


def plain(*values) -> bool:
    """No value is floating: integer/boolean arithmetic, run on NumPy arrays."""
    return not any(is_float(v) for v in values if v is not None)


def array(value) -> np.ndarray:
    """The value's data as a NumPy array (no gradient)."""
    return np.asarray(logical(value).data)


def ints(value) -> list[int]:
    """A 1-D integer input (shape, axes, pads) as a list of ints."""
    return [int(v) for v in array(value).reshape(-1)]


def constant(a) -> Tensor:
    """A constant tensor wrapping an array (no copy)."""
    return Tensor._wrap(np.asarray(a))


def axis_of(axis: int, ndim: int, node: Node) -> int:
    if not -ndim <= axis < ndim:
        raise ValueError(f"{node.where()}: axis {axis} is out of range for a value of rank {ndim}")
    return axis % ndim
