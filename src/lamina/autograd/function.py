"""The node of the computation graph: one primitive op with its local gradient.

A subclass implements ``forward(*arrays) -> array`` and ``backward(dy) -> tuple`` on
raw arrays (one downstream gradient per input, ``None`` where none is needed) and
keeps in ``self`` whatever the backward needs. Hyperparameters are given as keywords
to :meth:`Function.apply` and become attributes. The VJP is computed directly: no
Jacobian is ever formed.
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import graph
from lamina.autograd.tensor import Tensor


class Function:
    inputs: tuple[Tensor, ...] | None = None
    needs_grad: tuple[bool, ...] = ()

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    @classmethod
    def apply(cls, *inputs, **params) -> Tensor:
        """Run the op on tensors (or array-likes), recording the node when needed."""
        fn = cls.__new__(cls)
        if params:
            fn.__dict__.update(params)
        tensors = _as_tensors(inputs)
        # NumPy gives 0-d results as scalars; a tensor's data is always an array.
        out = backend.xp.asarray(fn.forward(*[t.data for t in tensors]))
        if graph._grad_enabled:
            needs = tuple(t.requires_grad for t in tensors)
            if any(needs):
                fn.inputs = tensors
                fn.needs_grad = needs
                result = Tensor.__new__(Tensor)
                result.data = out
                result.grad = None
                result.requires_grad = True
                result._ctx = fn
                return result
        result = Tensor.__new__(Tensor)
        result.data = out
        result.grad = None
        result.requires_grad = False
        result._ctx = None
        return result

    def release(self) -> None:
        """Drop everything kept for backward; a later backward through here raises."""
        self.__dict__.clear()
        self.inputs = None


def _as_tensors(inputs) -> tuple[Tensor, ...]:
    dtype = None
    for x in inputs:
        if isinstance(x, Tensor):
            dtype = x.data.dtype
            break
    out = []
    for x in inputs:
        if isinstance(x, Tensor):
            out.append(x)
        else:
            out.append(Tensor._constant(x, dtype))
    return tuple(out)


def constant_like(value, dtype):
    """An array of ``value`` in ``dtype`` (floats keep the tensor's precision)."""
    return backend.xp.asarray(value, dtype=dtype)
