"""``grad``: the gradients of one output with respect to chosen tensors, as values.

Where :meth:`Tensor.backward` adds dJ/dw into every leaf's ``grad``, :func:`grad` hands
back dJ/dt for the tensors asked about and leaves every ``grad`` as it was: the tool for
gradients of intermediate values, for a penalty on a gradient's size (computed from the
returned arrays), and for a backward that runs inside another one (a checkpoint).
"""

from __future__ import annotations

from collections.abc import Sequence

from lamina.autograd import graph
from lamina.autograd.tensor import Tensor, output_gradient

__all__ = ["grad"]


def grad(output: Tensor, inputs: Tensor | Sequence[Tensor], grad_output=None, retain_graph: bool = False,
         allow_unused: bool = False) -> list:
    """[dJ/dt for t in inputs] as arrays, J being ``output`` (a scalar) or, with
    ``grad_output`` = dJ/doutput, any function of it. No tensor's ``grad`` changes.

    ``inputs`` are tensors that require grad (leaves or computed ones). A tensor that
    ``output`` does not depend on raises, unless ``allow_unused=True``, when its entry is
    ``None``. As with ``backward``, the graph's saved arrays are freed unless
    ``retain_graph=True``.
    """
    wanted = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    if not isinstance(output, Tensor):
        raise TypeError(f"grad: output must be a Tensor, got {type(output).__name__}")
    for i, t in enumerate(wanted):
        if not isinstance(t, Tensor):
            raise TypeError(f"grad: inputs[{i}] must be a Tensor, got {type(t).__name__}")
        if not t.requires_grad:
            raise RuntimeError(f"grad: inputs[{i}] (shape {t.shape}) does not require grad")
    if not output.requires_grad:
        raise RuntimeError("grad: the output does not require grad: none of the inputs was used to compute it")
    grad_output = output_gradient(output, grad_output, "grad", "grad_output")
    results = graph.gradients(output, grad_output, wanted, retain_graph=retain_graph)
    for i, g in enumerate(results):
        if g is None and not allow_unused:
            raise RuntimeError(f"grad: the output does not depend on inputs[{i}] (shape {wanted[i].shape}); "
                               "pass allow_unused=True to get None for it")
    return results
