"""``grad``, ``vjp`` and ``jacobian``: derivatives handed back as values.

Where :meth:`Tensor.backward` adds dJ/dw into every leaf's ``grad``, :func:`grad` hands
back dJ/dt for the tensors asked about and leaves every ``grad`` as it was: the tool for
gradients of intermediate values, for a penalty on a gradient's size (computed from the
returned arrays), and for a backward that runs inside another one (a checkpoint). :func:`vjp` and :func:`jacobian`
take a function instead of a graph already built, as ``torch.autograd.functional`` does;
so do :func:`hvp`, :func:`vhp`, :func:`hessian` and :func:`jvp`, which differentiate a
gradient recorded with ``grad(..., create_graph=True)`` once more.

Those functions take torch's arguments and give its structures: ``inputs`` is one tensor
(or array) or a tuple of them, and a derivative per input is one value or a tuple alike; a
function may return one tensor or a tuple of them (``vjp``, ``jvp``, ``jacobian``). They
hand back arrays; with ``create_graph=True``, tensors on the graph instead, differentiable
with respect to the inputs that require grad (and to ``v``). ``strict=True`` raises where an
output does not depend on an input, instead of giving zeros.
"""

from __future__ import annotations

from collections.abc import Sequence

from lamina import backend
from lamina.autograd import graph
from lamina.autograd.tensor import Tensor, output_gradient
from lamina.errors import ShapeError

__all__ = ["grad", "hessian", "hvp", "jacobian", "jvp", "vhp", "vjp"]


def grad(output: Tensor | Sequence[Tensor], inputs: Tensor | Sequence[Tensor], grad_output=None,
         retain_graph: bool = False, allow_unused: bool = False, create_graph: bool = False, *,
         grad_outputs=None, materialize_grads: bool = False) -> list:
    """[dJ/dt for t in inputs] as arrays, J being ``output`` (a scalar) or, with
    ``grad_output`` = dJ/doutput, any function of it. No tensor's ``grad`` changes.

    ``inputs`` are tensors that require grad (leaves or computed ones). A tensor that
    ``output`` does not depend on raises, unless ``allow_unused=True``, when its entry is
    ``None`` (zeros of its shape with ``materialize_grads=True``, which implies
    ``allow_unused``). As with ``backward``, the graph's saved arrays are freed unless
    ``retain_graph=True``. As ``torch.autograd.grad``: ``output`` may be a sequence of
    tensors, ``grad_output`` then one gradient (or None, for a scalar) per output, and the
    VJPs add up; ``grad_outputs`` is torch's name for ``grad_output``.

    With ``create_graph=True`` the gradients come back as tensors computed on the graph, so
    they can be differentiated again: a gradient penalty ||dJ/dx||^2 added to a cost, a
    Hessian-vector product, second derivatives. ``grad_output`` may then be a tensor on the
    graph too. Nothing is freed. Every op between ``output`` and ``inputs`` needs a
    differentiable backward (:func:`differentiable_ops` lists them); one without raises.
    """
    if grad_outputs is not None:
        if grad_output is not None:
            raise TypeError("grad: got both grad_output and grad_outputs (torch's name for it); pass one")
        grad_output = grad_outputs
    allow_unused = allow_unused or materialize_grads
    wanted = [inputs] if isinstance(inputs, Tensor) else list(inputs)
    several = isinstance(output, (list, tuple))
    outputs = list(output) if several else [output]
    if several and not outputs:
        raise ValueError("grad: expected at least one output, got an empty sequence")
    if several:
        seeds = [None] * len(outputs) if grad_output is None else grad_output
        if isinstance(seeds, Tensor) or not isinstance(seeds, (list, tuple)) or len(seeds) != len(outputs):
            raise ValueError(f"grad: with {len(outputs)} outputs, grad_output must be a sequence of "
                             f"{len(outputs)} gradients (None for a scalar output)")
    else:
        seeds = [grad_output]
    for i, out in enumerate(outputs):
        if not isinstance(out, Tensor):
            where = f"outputs[{i}]" if several else "output"
            raise TypeError(f"grad: {where} must be a Tensor, got {type(out).__name__}")
    for i, t in enumerate(wanted):
        if not isinstance(t, Tensor):
            raise TypeError(f"grad: inputs[{i}] must be a Tensor, got {type(t).__name__}")
        if not t.requires_grad:
            raise RuntimeError(f"grad: inputs[{i}] (shape {t.shape}) does not require grad")
    used = [(out, seed) for out, seed in zip(outputs, seeds) if out.requires_grad]
    if not used:
        raise RuntimeError("grad: the output does not require grad: none of the inputs was used to compute it")
    if create_graph:
        starts = []
        for out, seed in used:
            start = seed if isinstance(seed, Tensor) and seed.shape == out.shape else None
            starts.append(start if start is not None
                          else Tensor._wrap(output_gradient(out, seed, "grad", "grad_output")))
        roots = [out for out, _ in used]
        results = graph.graph_gradients(roots if several else roots[0], starts if several else starts[0], wanted)
    else:
        starts = [output_gradient(out, seed, "grad", "grad_output") for out, seed in used]
        roots = [out for out, _ in used]
        results = graph.gradients(roots if several else roots[0], starts if several else starts[0], wanted,
                                  retain_graph=retain_graph)
    for i, g in enumerate(results):
        if g is None and not allow_unused:
            raise RuntimeError(f"grad: the output does not depend on inputs[{i}] (shape {wanted[i].shape}); "
                               "pass allow_unused=True to get None for it")
        if g is None and materialize_grads:
            zeros = backend.xp.zeros(wanted[i].shape, dtype=wanted[i].dtype)
            results[i] = Tensor._wrap(zeros) if create_graph else zeros
    return results


def _leaves(inputs, where: str, create_graph: bool = False) -> tuple[list[Tensor], bool]:
    """Tensors that require grad standing for ``inputs`` (one tensor or array, or a tuple of
    them), and whether several were given. A copy, a fresh leaf, for each; with
    ``create_graph``, a tensor that requires grad is kept on its graph instead (through an
    identity op), so that the results stay differentiable with respect to it."""
    several = isinstance(inputs, tuple)
    values = list(inputs) if several else [inputs]
    if not values:
        raise ValueError(f"{where}: no inputs given")
    leaves = []
    for i, value in enumerate(values):
        data = value.data if isinstance(value, Tensor) else value
        array = data if hasattr(data, "dtype") else Tensor(data).data
        if array.dtype.kind != "f":
            raise TypeError(f"{where}: inputs[{i}] has dtype {array.dtype}; a derivative needs floating point")
        if create_graph and isinstance(value, Tensor) and value.requires_grad:
            with graph.enable_grad():
                leaves.append(value.reshape(value.shape))
        else:
            leaves.append(Tensor(array.copy(), dtype=array.dtype, requires_grad=True))
    return leaves, several


def _call(fn, leaves: list[Tensor], where: str, strict: bool) -> tuple[list[Tensor], bool]:
    """fn's outputs (one tensor or a tuple of them) as a list, and whether it was a tuple."""
    with graph.enable_grad():
        output = fn(*leaves)
    several = isinstance(output, tuple)
    outputs = list(output) if several else [output]
    for i, o in enumerate(outputs):
        if not isinstance(o, Tensor):
            shown = f"or a tuple of them, output {i} is a" if several else "got"
            raise TypeError(f"{where}: fn must return a Tensor, {shown} {type(o).__name__}")
        if strict and not o.requires_grad:
            raise RuntimeError(f"{where}(strict=True): output {i} of fn does not depend on the inputs (it does not "
                               "require grad)")
    return outputs, several


def _scalar_output(fn, leaves, where: str, strict: bool) -> Tensor:
    outputs, several = _call(fn, leaves, where, strict)
    if several:
        raise TypeError(f"{where}: fn must return a Tensor holding one value, got a tuple of {len(outputs)}")
    if outputs[0].data.size != 1:
        raise ValueError(f"{where}: fn must return a scalar (one value), got shape {outputs[0].shape}")
    return outputs[0]


def _pack(values: list, several: bool):
    return tuple(values) if several else values[0]


def _values(outputs: list[Tensor], several: bool, create_graph: bool):
    """fn's outputs handed back: tensors on the graph with ``create_graph``, else arrays."""
    return _pack(outputs if create_graph else [o.data for o in outputs], several)


def _vectors(v, refs: list[Tensor], several: bool, where: str, create_graph: bool, of: str) -> list:
    """``v`` (one per tensor of ``refs``, shaped alike; None: a 1 for a single one-value
    ``refs``) as arrays, or as tensors for those that require grad when ``create_graph``."""
    if v is None:
        if len(refs) != 1 or refs[0].data.size != 1:
            raise RuntimeError(f"{where}: v can only be omitted when the {of} is one tensor of one value")
        return [backend.xp.ones_like(refs[0].data)]
    vectors = list(v) if isinstance(v, tuple) else [v]
    if len(vectors) != len(refs):
        raise ValueError(f"{where}: {len(refs)} {of}s but {len(vectors)} vectors v")
    out = []
    for i, (vec, ref) in enumerate(zip(vectors, refs)):
        if not (create_graph and isinstance(vec, Tensor) and vec.requires_grad):
            vec = backend.xp.asarray(vec.data if isinstance(vec, Tensor) else vec, dtype=ref.data.dtype)
        if tuple(vec.shape) != tuple(ref.shape):
            raise ShapeError(f"{where}: v[{i}] has shape {tuple(vec.shape)}, {of} {i} has shape {tuple(ref.shape)}")
        out.append(vec)
    return out


def _contract(grads, vectors) -> Tensor | None:
    """sum_i <g_i, v_i> as a tensor on the graph, over the gradients that are tensors."""
    total = None
    with graph.enable_grad():
        for g, v in zip(grads, vectors):
            if g is not None:
                term = (g * (v if isinstance(v, Tensor) else Tensor._wrap(v))).sum()
                total = term if total is None else total + term
    return total


def _pullback(outputs: list[Tensor], cotangents: list, wanted: list[Tensor], create_graph: bool,
              retain_graph: bool = True) -> list:
    """sum_k J_k^T c_k with respect to each of ``wanted`` (J_k: d outputs[k] / d wanted), None
    where no output depends on it; tensors on the graph with ``create_graph``, else arrays.
    Outputs that do not require grad are left out."""
    pairs = [(o, c) for o, c in zip(outputs, cotangents) if o.requires_grad]
    if not pairs:
        return [None] * len(wanted)
    if len(pairs) == 1:
        root, start = pairs[0]
    else:
        root, start = _contract(*zip(*pairs)), None
    with graph.enable_grad():
        return grad(root, wanted, grad_output=start, retain_graph=retain_graph, allow_unused=True,
                    create_graph=create_graph)


def _filled(found: list, refs: list[Tensor], create_graph: bool, strict: str | None) -> list:
    """``found`` with zeros shaped as ``refs`` in place of None. ``strict``: None, or the
    error for a None (or, with ``create_graph``, a result off the graph), '{i}' its index."""
    out = []
    for i, (g, ref) in enumerate(zip(found, refs)):
        if strict and (g is None or create_graph and not g.requires_grad):
            raise RuntimeError(strict.format(i=i))
        if g is None:
            g = backend.xp.zeros_like(ref.data)
            g = Tensor._wrap(g) if create_graph else g
        out.append(g)
    return out


def _strict(where: str, strict: bool, what: str) -> str | None:
    return f"{where}(strict=True): {what} is independent of input {{i}}" if strict else None


def vjp(fn, inputs, v=None, create_graph: bool = False, strict: bool = False) -> tuple:
    """(fn(inputs), v^T J), as ``torch.autograd.functional.vjp``: the output's value and the
    vector-Jacobian product sum_k v_k^T dy_k/dx, which is one backward pass with dJ/dy_k =
    ``v_k``. ``inputs`` is one tensor or array, or a tuple of them (then the product is a
    tuple, one per input); ``fn`` returns one tensor or a tuple of them, and ``v`` is shaped
    alike (it may be omitted for one output of one value: 1). Inputs are copied, so nothing of
    the caller's changes. ``create_graph``, ``strict``: see the module."""
    leaves, several = _leaves(inputs, "vjp", create_graph)
    outputs, several_out = _call(fn, leaves, "vjp", strict)
    cotangents = _vectors(v, outputs, several_out, "vjp", create_graph, "output")
    found = _pullback(outputs, cotangents, leaves, create_graph, retain_graph=create_graph)
    grads = _filled(found, leaves, create_graph, _strict("vjp", strict, "the output"))
    return _values(outputs, several_out, create_graph), _pack(grads, several)


def _stacked(rows: list[Tensor], shape: tuple) -> Tensor:
    # the ops live above this package; they are loaded whenever a Tensor's methods are
    from lamina.functional.shape import stack

    return stack(rows, axis=0).reshape(shape)


def _jacobian_of(output: Tensor, leaves: list[Tensor], create_graph: bool, strict: str | None, keep: bool) -> list:
    """d output / d leaf for each leaf, of shape output.shape + leaf.shape: one backward pass
    per element of the output. The graph is freed after the last one unless ``keep``."""
    xp = backend.xp
    out_shape = tuple(output.shape)
    size = output.data.size
    rows: list[list] = [[] for _ in leaves]
    for k in range(size):
        unit = xp.zeros(size, dtype=output.data.dtype)
        unit[k] = 1
        found = _pullback([output], [unit.reshape(out_shape)], leaves, create_graph,
                          retain_graph=keep or k < size - 1)
        for row, g in zip(rows, _filled(found, leaves, create_graph, strict)):
            row.append(g)
    jacobians = []
    for leaf, row in zip(leaves, rows):
        shape = out_shape + tuple(leaf.shape)
        if not row:
            empty = xp.zeros(shape, dtype=leaf.data.dtype)
            jacobians.append(Tensor._wrap(empty) if create_graph else empty)
        elif create_graph:
            jacobians.append(_stacked(row, shape))
        else:
            jacobians.append(xp.stack(row).reshape(shape))
    return jacobians


def _check_strategy(strategy: str, where: str, argument: str) -> None:
    if strategy not in ("reverse-mode", "forward-mode"):
        raise ValueError(f"{where}: {argument} must be 'reverse-mode' or 'forward-mode', got {strategy!r}")


def jacobian(fn, inputs, create_graph: bool = False, strict: bool = False, vectorize: bool = False,
             strategy: str = "reverse-mode"):
    """The Jacobian dy/dx of ``y = fn(x)``, of shape ``y.shape + x.shape``, as
    ``torch.autograd.functional.jacobian``: row i is the vector-Jacobian product with the i-th
    unit vector, so it costs one backward pass per element of y (reverse mode's price; fine
    for the small functions one inspects). With a tuple of inputs, a tuple of Jacobians, one
    per input; with a tuple of outputs, one entry per output; both: entry [i][j] = dy_i/dx_j.
    ``vectorize`` and ``strategy`` ('reverse-mode' or 'forward-mode') are accepted for torch's
    signature and change nothing: the rows are computed one by one, by reverse mode.
    ``create_graph``, ``strict``: see the module."""
    _check_strategy(strategy, "jacobian", "strategy")
    leaves, several = _leaves(inputs, "jacobian", create_graph)
    outputs, several_out = _call(fn, leaves, "jacobian", strict)
    per_output = []
    for i, output in enumerate(outputs):
        message = _strict("jacobian", strict, f"output {i}")
        keep = create_graph or i < len(outputs) - 1
        per_output.append(_pack(_jacobian_of(output, leaves, create_graph, message, keep), several))
    return _pack(per_output, several_out)


def _first_derivatives(output: Tensor, leaves: list[Tensor], where: str, strict: bool) -> list:
    """dJ/dx for each leaf, on the graph (None where J does not depend on it)."""
    first = _pullback([output], [None], leaves, create_graph=True)
    if strict:
        for i, g in enumerate(first):
            if g is None:
                raise RuntimeError(f"{where}(strict=True): the output is independent of input {i}")
            if not g.requires_grad:
                raise RuntimeError(f"{where}(strict=True): the gradient with respect to input {i} is independent of "
                                   "the inputs (a linear function has no Hessian but 0)")
    return first


def _hessian_product(fn, inputs, v, create_graph: bool, strict: bool, where: str) -> tuple:
    """(fn(inputs), the derivative of <dJ/dx, v>): v^T H, which is H v for a symmetric H."""
    leaves, several = _leaves(inputs, where, create_graph)
    vectors = _vectors(v, leaves, several, where, create_graph, "input")
    output = _scalar_output(fn, leaves, where, strict)
    inner = _contract(_first_derivatives(output, leaves, where, strict), vectors)
    found = [None] * len(leaves)
    if inner is not None and inner.requires_grad:
        found = _pullback([inner], [None], leaves, create_graph, retain_graph=create_graph)
    products = _filled(found, leaves, create_graph, _strict(where, strict, "the Hessian"))
    return _values([output], False, create_graph), _pack(products, several)


def vhp(fn, inputs, v=None, create_graph: bool = False, strict: bool = False) -> tuple:
    """(fn(inputs), v^T H), as ``torch.autograd.functional.vhp``: the value of a scalar
    function J and the vector-Hessian product, the derivative of <dJ/dx, v> (the gradient
    recorded with ``create_graph=True``): two backward passes, the Hessian never formed.
    ``inputs`` and ``v`` are one array or tensor each, or tuples of them (then v^T H is a
    tuple); ``v`` may be omitted for one input of one value. ``create_graph``, ``strict``:
    see the module."""
    return _hessian_product(fn, inputs, v, create_graph, strict, "vhp")


def hvp(fn, inputs, v=None, create_graph: bool = False, strict: bool = False) -> tuple:
    """(fn(inputs), H v), as ``torch.autograd.functional.hvp``: the value of a scalar function
    and its Hessian times ``v``. H is symmetric (for a function twice continuously
    differentiable), so H v = (v^T H)^T is computed as :func:`vhp` does: by differentiating
    <dJ/dx, v> once more (Pearlmutter's trick), two backward passes. Arguments as for
    :func:`vhp`."""
    return _hessian_product(fn, inputs, v, create_graph, strict, "hvp")


def hessian(fn, inputs, create_graph: bool = False, strict: bool = False, vectorize: bool = False,
            outer_jacobian_strategy: str = "reverse-mode"):
    """The Hessian d^2 J / dx dx of a scalar function, of shape ``x.shape + x.shape``, as
    ``torch.autograd.functional.hessian``: the Jacobian of the gradient recorded with
    ``create_graph=True``, one backward pass per element of x. With a tuple of inputs, a tuple
    of tuples: block [i][j] = d^2 J / dx_i dx_j, of shape x_i.shape + x_j.shape.
    ``vectorize`` and ``outer_jacobian_strategy`` are accepted for torch's signature and
    change nothing. ``create_graph``, ``strict``: see the module."""
    _check_strategy(outer_jacobian_strategy, "hessian", "outer_jacobian_strategy")
    leaves, several = _leaves(inputs, "hessian", create_graph)
    output = _scalar_output(fn, leaves, "hessian", strict)
    first = _first_derivatives(output, leaves, "hessian", strict)
    blocks = []
    for i, g in enumerate(first):
        message = _strict("hessian", strict, f"the gradient with respect to input {i}")
        if g is None or not g.requires_grad:
            g = Tensor._wrap(backend.xp.zeros_like(leaves[i].data))
        blocks.append(_pack(_jacobian_of(g, leaves, create_graph, message, keep=True), several))
    return _pack(blocks, several)


def jvp(fn, inputs, v=None, create_graph: bool = False, strict: bool = False) -> tuple:
    """(fn(inputs), J v), as ``torch.autograd.functional.jvp``: the Jacobian-vector product
    (forward-mode derivative along ``v``) by the double-VJP trick: u -> J^T u is linear in u,
    so the derivative of <J^T u, v> with respect to u is J v. Two backward passes; J is never
    formed. ``inputs`` and ``v`` are one tensor each or tuples of them (``v`` may be omitted
    for one input of one value); ``fn`` returns one tensor or a tuple of them, and J v is
    shaped alike. ``create_graph``, ``strict``: see the module."""
    leaves, several = _leaves(inputs, "jvp", create_graph)
    vectors = _vectors(v, leaves, several, "jvp", create_graph, "input")
    outputs, several_out = _call(fn, leaves, "jvp", strict)
    xp = backend.xp
    u = [Tensor(xp.zeros_like(o.data), requires_grad=True, dtype=o.data.dtype) for o in outputs]
    transposed = _pullback(outputs, u, leaves, create_graph=True)
    if strict:
        for i, t in enumerate(transposed):
            if t is None:
                raise RuntimeError(f"jvp(strict=True): the output is independent of input {i}")
    inner = _contract(transposed, vectors)
    found = [None] * len(u)
    if inner is not None and inner.requires_grad:
        found = _pullback([inner], [None], u, create_graph, retain_graph=create_graph)
    message = "jvp(strict=True): output {i} does not depend on the inputs along v" if strict else None
    products = _filled(found, outputs, create_graph, message)
    return _values(outputs, several_out, create_graph), _pack(products, several_out)
