"""Read-only views of the computation graph, as PyTorch shows it through ``grad_fn``.

A tensor computed by an op keeps the op's node (a :class:`~lamina.autograd.Function`) in
``_ctx``; ``tensor.grad_fn`` wraps that node in a :class:`GradFn`, whose
``next_functions`` lead to the nodes of its inputs: another :class:`GradFn`, an
:class:`AccumulateGrad` for a leaf that requires grad (where backward stores ``.grad``),
or ``None`` for an input that needs no gradient (a constant). Walking ``next_functions``
from the loss visits the graph backward propagation runs through.

The views are made on demand and hold nothing the graph does not already hold, so
recording a graph costs the same with or without them. A node is named by its lamina op
(``"Mul"``, ``"MatMul"``, ``"SoftmaxCrossEntropy"``); PyTorch's names end in
``Backward0`` and come from its own op decomposition, so names (and, for fused ops, node
counts) can differ while the graph of the same primitives has the same shape.

Backward frees what each node kept for it once the node is done (unless
``retain_graph=True``): a freed node's ``next_functions`` is then empty and it keeps no
arrays (:attr:`GradFn.released`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from lamina.autograd.function import Function
    from lamina.autograd.tensor import Tensor

_GRAPH_FIELDS = ("inputs", "needs_grad")


class GradFn:
    """The node that computed a tensor: its op's name, the nodes of its inputs, and the arrays
    it keeps for backward. Two views of the same node compare equal (and hash alike)."""

    __slots__ = ("_fn",)

    def __init__(self, fn: Function):
        self._fn = fn

    @property
    def name(self) -> str:
        """The op's class name, e.g. ``"Mul"`` (PyTorch's ``grad_fn.name()`` says ``"MulBackward0"``)."""
        return type(self._fn).__name__

    @property
    def function(self) -> Function:
        """The :class:`~lamina.autograd.Function` node itself."""
        return self._fn

    @property
    def released(self) -> bool:
        """Whether backward has freed this node (its inputs and saved arrays are gone)."""
        return self._fn.inputs is None

    @property
    def next_functions(self) -> tuple[tuple[GradFn | AccumulateGrad | None, int], ...]:
        """One ``(node, 0)`` per input, as in PyTorch: the input's :class:`GradFn`, an
        :class:`AccumulateGrad` for a leaf that requires grad, ``None`` for a constant
        (ops here have one output, hence the 0)."""
        inputs = self._fn.inputs
        if inputs is None:
            return ()
        return tuple((node_of(t), 0) for t in inputs)

    @property
    def inputs(self) -> tuple[Tensor, ...]:
        """The input tensors (empty once released)."""
        return tuple(self._fn.inputs or ())

    def saved_arrays(self) -> dict[str, object]:
        """The arrays this node keeps for its backward, by attribute name (``"a"``, ``"mask"``;
        an array inside a tuple or list attribute is ``"name[i]"``); empty once released."""
        return saved_arrays(self._fn)

    def __eq__(self, other) -> bool:
        return isinstance(other, GradFn) and other._fn is self._fn

    def __hash__(self) -> int:
        return hash((GradFn, id(self._fn)))

    def __repr__(self) -> str:
        return f"<GradFn {self.name}>"


class AccumulateGrad:
    """The end of a path through the graph: the leaf ``variable`` that requires grad, whose
    ``grad`` backward adds to. It has no ``next_functions``."""

    __slots__ = ("variable",)
    name = "AccumulateGrad"
    next_functions: tuple = ()

    def __init__(self, variable: Tensor):
        self.variable = variable

    def __eq__(self, other) -> bool:
        return isinstance(other, AccumulateGrad) and other.variable is self.variable

    def __hash__(self) -> int:
        return hash((AccumulateGrad, id(self.variable)))

    def __repr__(self) -> str:
        return f"<AccumulateGrad of a leaf of shape {tuple(self.variable.shape)}>"


def node_of(t: Tensor) -> GradFn | AccumulateGrad | None:
    """The node backward reaches ``t`` through: its op's :class:`GradFn`, an
    :class:`AccumulateGrad` for a leaf that requires grad, ``None`` for a constant."""
    if not t.requires_grad:
        return None
    return AccumulateGrad(t) if t._ctx is None else GradFn(t._ctx)


def grad_fn_of(t: Tensor) -> GradFn | None:
    """``t.grad_fn``: the :class:`GradFn` of the op that computed ``t``; None for a leaf or a constant."""
    return None if t._ctx is None else GradFn(t._ctx)


def saved_arrays(fn: Function) -> dict[str, object]:
    """The arrays ``fn`` keeps for its backward: every attribute holding an array (or a tuple or
    list of them), apart from the graph links (``inputs``, ``needs_grad``)."""
    found: dict[str, object] = {}
    for key, value in vars(fn).items():
        if key in _GRAPH_FIELDS:
            continue
        if _is_array(value):
            found[key] = value
        elif isinstance(value, (tuple, list)):
            for i, item in enumerate(value):
                if _is_array(item):
                    found[f"{key}[{i}]"] = item
    return found


def _is_array(value) -> bool:
    """An n-d array of the backend (NumPy or CuPy), not a NumPy scalar or a Python number."""
    return type(value).__name__ == "ndarray" and hasattr(value, "nbytes")
