"""``grad``, ``vjp`` and ``jacobian``: derivatives handed back as values.

Where :meth:`Tensor.backward` adds dJ/dw into every leaf's ``grad``, :func:`grad` hands
back dJ/dt for the tensors asked about and leaves every ``grad`` as it was: the tool for
gradients of intermediate values, for a penalty on a gradient's size (computed from the
returned arrays), and for a backward that runs inside another one (a checkpoint). :func:`vjp` and :func:`jacobian`
take a function instead of a graph already built, as ``torch.autograd.functional`` does.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy

from lamina import backend
from lamina.autograd import graph
from lamina.autograd.tensor import Tensor, output_gradient

__all__ = ["grad", "jacobian", "vjp"]


def grad(output: Tensor, inputs: Tensor | Sequence[Tensor], grad_output=None, retain_graph: bool = False,
         allow_unused: bool = False, create_graph: bool = False) -> list:
    """[dJ/dt for t in inputs] as arrays, J being ``output`` (a scalar) or, with
    ``grad_output`` = dJ/doutput, any function of it. No tensor's ``grad`` changes.

    ``inputs`` are tensors that require grad (leaves or computed ones). A tensor that
    ``output`` does not depend on raises, unless ``allow_unused=True``, when its entry is
    ``None``. As with ``backward``, the graph's saved arrays are freed unless
    ``retain_graph=True``.

    With ``create_graph=True`` the gradients come back as tensors computed on the graph, so
    they can be differentiated again: a gradient penalty ||dJ/dx||^2 added to a cost, a
    Hessian-vector product, second derivatives. ``grad_output`` may then be a tensor on the
    graph too. Nothing is freed. Every op between ``output`` and ``inputs`` needs a
    differentiable backward (:func:`differentiable_ops` lists them); one without raises.
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
    if create_graph:
        start = grad_output if isinstance(grad_output, Tensor) and grad_output.shape == output.shape else None
        if start is None:
            start = Tensor._wrap(output_gradient(output, grad_output, "grad", "grad_output"))
        results = graph.graph_gradients(output, start, wanted)
    else:
        grad_output = output_gradient(output, grad_output, "grad", "grad_output")
        results = graph.gradients(output, grad_output, wanted, retain_graph=retain_graph)
    for i, g in enumerate(results):
        if g is None and not allow_unused:
            raise RuntimeError(f"grad: the output does not depend on inputs[{i}] (shape {wanted[i].shape}); "
                               "pass allow_unused=True to get None for it")
    return results


def _leaves(inputs, where: str) -> tuple[list[Tensor], bool]:
    """Fresh leaves that require grad, holding copies of ``inputs`` (one tensor or array, or
    a tuple of them), and whether several were given. Arrays keep their dtype."""
    several = isinstance(inputs, tuple)
    values = list(inputs) if several else [inputs]
    if not values:
        raise ValueError(f"{where}: no inputs given")
    leaves = []
    for i, value in enumerate(values):
        data = value.data if isinstance(value, Tensor) else value
        array = data.copy() if hasattr(data, "dtype") else Tensor(data).data
        if array.dtype.kind != "f":
            raise TypeError(f"{where}: inputs[{i}] has dtype {array.dtype}; a derivative needs floating point")
        leaves.append(Tensor(array, dtype=array.dtype, requires_grad=True))
    return leaves, several


def vjp(fn, inputs, v=None) -> tuple:
    """(fn(inputs), v^T J): the output's value and the vector-Jacobian product, which is one
    backward pass with dJ/doutput = ``v`` (1 for a scalar output). ``inputs`` is one tensor or
    array, or a tuple of them (then the product is a tuple, one array per input); they are
    copied, so nothing of the caller's changes."""
    leaves, several = _leaves(inputs, "vjp")
    output = fn(*leaves)
    if not isinstance(output, Tensor):
        raise TypeError(f"vjp: fn must return a Tensor, got {type(output).__name__}")
    if not output.requires_grad:
        grads = [backend.xp.zeros_like(leaf.data) for leaf in leaves]
    else:
        v = output_gradient(output, v, "vjp", "v")
        grads = graph.gradients(output, v, leaves)
        grads = [backend.xp.zeros_like(leaf.data) if g is None else g for leaf, g in zip(leaves, grads)]
    return output.data, (tuple(grads) if several else grads[0])


def jacobian(fn, inputs):
    """The Jacobian dy/dx of ``y = fn(x)``, of shape ``y.shape + x.shape``: row i is the
    vector-Jacobian product with the i-th unit vector, so it costs one backward pass per
    element of y (reverse mode's price; fine for the small functions one inspects). With a
    tuple of inputs, a tuple of Jacobians, one per input (as ``torch.autograd.functional.jacobian``)."""
    leaves, several = _leaves(inputs, "jacobian")
    output = fn(*leaves)
    if not isinstance(output, Tensor):
        raise TypeError(f"jacobian: fn must return a Tensor, got {type(output).__name__}")
    xp = backend.xp
    out_shape = tuple(output.shape)
    jacobians = [xp.zeros(out_shape + tuple(leaf.shape), dtype=leaf.data.dtype) for leaf in leaves]
    if output.requires_grad:
        size = int(numpy.prod(out_shape))
        for i in range(size):
            unit = xp.zeros(size, dtype=output.data.dtype)
            unit[i] = 1
            grads = graph.gradients(output, unit.reshape(out_shape), leaves, retain_graph=i < size - 1)
            row = numpy.unravel_index(i, out_shape) if out_shape else ()
            for jac, g in zip(jacobians, grads):
                if g is not None:
                    jac[row] = g
    return tuple(jacobians) if several else jacobians[0]
