"""``grad``, ``vjp`` and ``jacobian``: derivatives handed back as values.

Where :meth:`Tensor.backward` adds dJ/dw into every leaf's ``grad``, :func:`grad` hands
back dJ/dt for the tensors asked about and leaves every ``grad`` as it was: the tool for
gradients of intermediate values, for a penalty on a gradient's size (computed from the
returned arrays), and for a backward that runs inside another one (a checkpoint). :func:`vjp` and :func:`jacobian`
take a function instead of a graph already built, as ``torch.autograd.functional`` does;
so do :func:`hvp`, :func:`hessian` and :func:`jvp`, which differentiate a gradient recorded
with ``grad(..., create_graph=True)`` once more.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy

from lamina import backend
from lamina.autograd import graph
from lamina.autograd.tensor import Tensor, output_gradient

__all__ = ["grad", "hessian", "hvp", "jacobian", "jvp", "vjp"]


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


def _scalar_output(fn, leaves, where: str) -> Tensor:
    output = fn(*leaves)
    if not isinstance(output, Tensor):
        raise TypeError(f"{where}: fn must return a Tensor, got {type(output).__name__}")
    if output.data.size != 1:
        raise ValueError(f"{where}: fn must return a scalar (one value), got shape {output.shape}")
    return output


def _contract(grads, vectors) -> Tensor | None:
    """sum_i <g_i, v_i> as a tensor on the graph, over the gradients that are tensors."""
    total = None
    for g, v in zip(grads, vectors):
        if g is not None:
            term = (g * Tensor._wrap(v)).sum()
            total = term if total is None else total + term
    return total


def _directions(v, leaves, several: bool, where: str) -> list:
    vectors = list(v) if several else [v]
    if len(vectors) != len(leaves):
        raise ValueError(f"{where}: {len(leaves)} inputs but {len(vectors)} vectors v")
    arrays = []
    for i, (vec, leaf) in enumerate(zip(vectors, leaves)):
        vec = backend.xp.asarray(vec.data if isinstance(vec, Tensor) else vec, dtype=leaf.data.dtype)
        if vec.shape != leaf.shape:
            from lamina.errors import ShapeError

            raise ShapeError(f"{where}: v[{i}] has shape {vec.shape}, input {i} has shape {leaf.shape}")
        arrays.append(vec)
    return arrays


def hvp(fn, inputs, v) -> tuple:
    """(fn(inputs), H v): the value of a scalar function and its Hessian times ``v``, by
    differentiating <dJ/dx, v> (the gradient recorded with ``create_graph=True``) once more:
    two backward passes, the Hessian never formed (Pearlmutter's trick). ``inputs`` and
    ``v`` are one array or tensor each, or tuples of them (then H v is a tuple)."""
    leaves, several = _leaves(inputs, "hvp")
    vectors = _directions(v, leaves, several, "hvp")
    output = _scalar_output(fn, leaves, "hvp")
    products = [backend.xp.zeros_like(leaf.data) for leaf in leaves]
    if output.requires_grad:
        first = grad(output, leaves, create_graph=True, allow_unused=True)
        inner = _contract(first, vectors)
        if inner is not None and inner.requires_grad:
            second = grad(inner, leaves, allow_unused=True)
            products = [p if s is None else s for p, s in zip(products, second)]
    return output.data, (tuple(products) if several else products[0])


def hessian(fn, inputs):
    """The Hessian d^2 J / dx dx of a scalar function, of shape ``x.shape + x.shape``: one
    Hessian-vector product per row (one per element of x). With a tuple of inputs, a tuple
    of tuples: block [i][j] = d^2 J / dx_i dx_j, of shape x_i.shape + x_j.shape (as
    ``torch.autograd.functional.hessian``)."""
    leaves, several = _leaves(inputs, "hessian")
    output = _scalar_output(fn, leaves, "hessian")
    xp = backend.xp
    blocks = [[xp.zeros(tuple(a.shape) + tuple(b.shape), dtype=a.data.dtype) for b in leaves] for a in leaves]
    if output.requires_grad:
        first = grad(output, leaves, create_graph=True, allow_unused=True)
        for i, g in enumerate(first):
            if g is None or not g.requires_grad:
                continue
            flat = g.reshape(-1)
            for k in range(flat.shape[0]):
                row = grad(flat[k], leaves, retain_graph=True, allow_unused=True)
                index = numpy.unravel_index(k, leaves[i].shape) if leaves[i].ndim else ()
                for j, r in enumerate(row):
                    if r is not None:
                        blocks[i][j][index] = r
    if several:
        return tuple(tuple(row) for row in blocks)
    return blocks[0][0]


def jvp(fn, inputs, v) -> tuple:
    """(fn(inputs), J v): the Jacobian-vector product (forward-mode derivative along ``v``)
    by the double-VJP trick: u -> J^T u is linear in u, so the derivative of <J^T u, v> with
    respect to u is J v. Two backward passes; J is never formed."""
    leaves, several = _leaves(inputs, "jvp")
    vectors = _directions(v, leaves, several, "jvp")
    output = fn(*leaves)
    if not isinstance(output, Tensor):
        raise TypeError(f"jvp: fn must return a Tensor, got {type(output).__name__}")
    result = backend.xp.zeros_like(output.data)
    if output.requires_grad:
        u = Tensor(backend.xp.zeros_like(output.data), requires_grad=True, dtype=output.data.dtype)
        transposed = grad(output, leaves, grad_output=u, create_graph=True, allow_unused=True)
        inner = _contract(transposed, vectors)
        if inner is not None and inner.requires_grad:
            (product,) = grad(inner, [u], allow_unused=True)
            if product is not None:
                result = product
    return output.data, result
