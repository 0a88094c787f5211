"""Function transforms under torch.func's names: ``grad``, ``grad_and_value``, ``vjp``, ``jvp``,
``jacrev``, ``jacfwd`` and ``hessian``.

Unlike :func:`lamina.autograd.grad`, which takes tensors already computed, each transform takes
a function and gives a function (or, for ``vjp`` and ``jvp``, values): ``grad(f)(x)`` is df/dx
at x. Arguments may be tensors, arrays or nested dicts, lists and tuples of them (a model's
parameters by name). They compose: ``grad(grad(f))``, ``jacrev(grad(f))``, ``vmap(grad(f))``.

How: each differentiated argument is replaced by a fresh tensor that requires grad; the
function runs on the graph and one backward pass per requested gradient (per output element
for a Jacobian) gives the result. The result is itself on the graph, so that an outer transform
can differentiate it again, exactly when the function's graph reaches a tensor that requires
grad from outside (an outer transform's input, or a captured parameter) while the graph is
being recorded; otherwise the plain, faster backward is used. Differentiating a result again
needs ops with a differentiable backward (:func:`lamina.autograd.differentiable_ops`).

``jacfwd`` is computed by reverse mode, as ``jacrev``: one backward pass per output element,
not one forward pass per input element; it has the same value. ``jvp`` uses the double-VJP
trick (J v is the derivative of <J^T u, v> in u), so it needs second-order ops too.
"""

from __future__ import annotations

from collections.abc import Callable

from lamina import backend
from lamina.autograd import Tensor, enable_grad, is_grad_enabled
from lamina.autograd import grad as autograd_grad
from lamina.autograd.graph import topological_order
from lamina.errors import ShapeError
from lamina.func._tree import flatten, unflatten
from lamina.functional.shape import reshape, stack

__all__ = ["grad", "grad_and_value", "hessian", "jacfwd", "jacrev", "jvp", "vjp"]


# -- the machinery shared by the transforms ------------------------------------------------------
class _Inputs:
    """The arguments to differentiate, each leaf replaced by a tensor requiring grad: a fresh
    leaf, or (for a tensor on a graph being recorded) a new node on that graph, so that the
    result stays differentiable with respect to the caller's tensor."""

    def __init__(self, values: tuple, where: str, recording: bool, positions: tuple[int, ...] | None = None):
        self.specs, self.tensors, self.fresh = [], [], set()
        for k, value in zip(positions or range(len(values)), values):
            leaves, spec = flatten(value)
            if not leaves:
                raise ValueError(f"{where}: argument {k} holds no tensor to differentiate")
            self.specs.append(spec)
            self.tensors.append([self._track(leaf, where, k, recording) for leaf in leaves])

    def _track(self, value, where: str, k: int, recording: bool) -> Tensor:
        if isinstance(value, Tensor) and value.requires_grad and recording:
            with enable_grad():
                return reshape(value, value.shape)
        if isinstance(value, Tensor):
            data = value.data
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            data = Tensor(float(value)).data
        else:
            data = backend.xp.asarray(value)
        if data.dtype.kind != "f":
            raise TypeError(f"{where}: argument {k} has dtype {data.dtype}; a derivative needs floating point")
        leaf = Tensor(data, requires_grad=True, dtype=data.dtype)
        self.fresh.add(id(leaf))
        return leaf

    def values(self) -> list:
        return [unflatten(spec, tensors) for spec, tensors in zip(self.specs, self.tensors)]

    def flat(self) -> list[Tensor]:
        return [t for tensors in self.tensors for t in tensors]

    def regroup(self, flat: list) -> tuple:
        out, start = [], 0
        for spec, tensors in zip(self.specs, self.tensors):
            out.append(unflatten(spec, flat[start:start + len(tensors)]))
            start += len(tensors)
        return tuple(out)


def _reaches_outside(roots, own: set[int]) -> bool:
    """Whether the graphs below ``roots`` hold a leaf requiring grad that is not in ``own``."""
    for root in roots:
        if isinstance(root, Tensor) and root.requires_grad:
            for t in topological_order(root):
                if t._ctx is None and id(t) not in own:
                    return True
    return False


def _gradients(output: Tensor, wanted: list[Tensor], cotangent, create: bool) -> list[Tensor]:
    """d<output, cotangent>/dt for t in ``wanted`` as tensors (zeros where unused); on the graph
    when ``create``. ``cotangent`` is None for a one-value output."""
    if output.requires_grad:
        found = autograd_grad(output, wanted, grad_output=cotangent, retain_graph=True, allow_unused=True,
                              create_graph=create)
    else:
        found = [None] * len(wanted)
    return [Tensor._wrap(backend.xp.zeros_like(t.data)) if g is None else g if isinstance(g, Tensor)
            else Tensor._wrap(g) for t, g in zip(wanted, found)]


def _argnums(argnums, n_args: int, where: str) -> tuple[tuple[int, ...], bool]:
    """The argument positions as a tuple, and whether one int was given."""
    single = isinstance(argnums, int) and not isinstance(argnums, bool)
    positions = (argnums,) if single else argnums
    if not isinstance(positions, tuple) or not positions or any(
            isinstance(i, bool) or not isinstance(i, int) for i in positions):
        raise TypeError(f"{where}: argnums must be an int or a non-empty tuple of ints, got {argnums!r}")
    out = []
    for i in positions:
        if not -n_args <= i < n_args:
            raise ValueError(f"{where}: argnums {argnums!r} out of range for a call with {n_args} positional "
                             "arguments")
        out.append(i % n_args)
    if len(set(out)) != len(out):
        raise ValueError(f"{where}: argnums {argnums!r} names an argument twice")
    return tuple(out), single


def _split_aux(result, has_aux: bool, where: str):
    if not has_aux:
        return result, None
    if not isinstance(result, tuple) or len(result) != 2:
        raise TypeError(f"{where}(has_aux=True): the function must return a pair (output, aux), got "
                        f"{type(result).__name__}")
    return result


def _run(fn, args: tuple, kwargs: dict, positions: tuple[int, ...], where: str):
    """(inputs, the function's result) with the arguments at ``positions`` tracked."""
    inputs = _Inputs(tuple(args[i] for i in positions), where, is_grad_enabled(), positions)
    call = list(args)
    for i, value in zip(positions, inputs.values()):
        call[i] = value
    with enable_grad():
        return inputs, fn(*call, **kwargs)


def _scalar(output, where: str) -> Tensor:
    if not isinstance(output, Tensor):
        raise TypeError(f"{where}: the function must return a Tensor, got {type(output).__name__}")
    if output.data.size != 1 or output.data.dtype.kind != "f":
        raise ShapeError(f"{where}: the function must return one floating value (a scalar), got shape "
                         f"{tuple(output.shape)} ({output.dtype})")
    return output


# -- grad -------------------------------------------------------------------------------------------
def grad_and_value(fn: Callable, argnums: int | tuple[int, ...] = 0, has_aux: bool = False) -> Callable:
    """A function returning (df/dx, f(x)) for a scalar-valued ``fn``: the gradient with respect
    to the argument ``argnums`` (a tuple of them: a tuple of gradients), each shaped as its
    argument (a dict of tensors gives a dict). With ``has_aux``, ``fn`` returns (value, aux) and
    the result is (gradient, (value, aux))."""
    def wrapped(*args, **kwargs):
        positions, single = _argnums(argnums, len(args), "grad")
        inputs, result = _run(fn, args, kwargs, positions, "grad")
        output, aux = _split_aux(result, has_aux, "grad")
        output = _scalar(output, "grad")
        wanted = inputs.flat()
        create = is_grad_enabled() and _reaches_outside([output], inputs.fresh)
        grads = inputs.regroup(_gradients(output, wanted, None, create))
        grads = grads[0] if single else grads
        return (grads, (output, aux)) if has_aux else (grads, output)

    return wrapped


def grad(fn: Callable, argnums: int | tuple[int, ...] = 0, has_aux: bool = False) -> Callable:
    """The gradient function of a scalar-valued ``fn``, as ``torch.func.grad``: ``grad(f)(x)``
    is df/dx at x, shaped as x. ``argnums`` picks the argument(s) (a tuple: a tuple of
    gradients); with ``has_aux``, ``fn`` returns (value, aux) and the result is (gradient, aux)."""
    with_value = grad_and_value(fn, argnums, has_aux)

    def wrapped(*args, **kwargs):
        grads, value = with_value(*args, **kwargs)
        return (grads, value[1]) if has_aux else grads

    return wrapped


# -- vjp and jvp -------------------------------------------------------------------------------------
def _outputs(output, where: str) -> tuple[list[Tensor], object]:
    leaves, spec = flatten(output)
    for leaf in leaves:
        if not isinstance(leaf, Tensor):
            raise TypeError(f"{where}: the function must return tensors (or a tuple, list or dict of them), "
                            f"got a {type(leaf).__name__}")
    return leaves, spec


def _contracted(outputs: list[Tensor], cotangents: list) -> Tensor:
    """sum_k <outputs_k, cotangents_k> on the graph: its gradient is sum_k J_k^T cotangent_k."""
    total = None
    for o, c in zip(outputs, cotangents):
        term = (o * c).sum()
        total = term if total is None else total + term
    return total


def _as_cotangents(cotangents, outputs: list[Tensor], spec, where: str, what: str = "cotangent") -> list:
    """The leaves of ``cotangents`` as tensors, checked against ``outputs`` (their structure ``spec``)."""
    leaves, got = flatten(cotangents)
    if got != spec:
        raise ValueError(f"{where}: the {what}s must have the structure of the value they go with")
    out = []
    for k, (c, o) in enumerate(zip(leaves, outputs)):
        if not isinstance(c, Tensor):
            c = Tensor(backend.xp.asarray(c, dtype=o.dtype), dtype=o.dtype)
        if tuple(c.shape) != tuple(o.shape):
            raise ShapeError(f"{where}: {what} {k} has shape {tuple(c.shape)}, its value {tuple(o.shape)}")
        out.append(c)
    return out


def _vjp(fn, primals: tuple, has_aux: bool, where: str):
    inputs, result = _run(fn, primals, {}, tuple(range(len(primals))), where)
    output, aux = _split_aux(result, has_aux, where)
    outputs, spec = _outputs(output, where)

    def vjp_fn(cotangents) -> tuple:
        cts = _as_cotangents(cotangents, outputs, spec, where)
        roots = outputs + [c for c in cts if c.requires_grad]
        create = is_grad_enabled() and _reaches_outside(roots, inputs.fresh)
        wanted = inputs.flat()
        if len(outputs) == 1:
            ct = cts[0] if create else cts[0].data
            grads = _gradients(outputs[0], wanted, ct, create)
        else:
            with enable_grad():
                total = _contracted(outputs, cts if create else [c.detach() for c in cts])
            grads = _gradients(total, wanted, None, create)
        return inputs.regroup(grads)

    return output, vjp_fn, aux, inputs


def vjp(fn: Callable, *primals, has_aux: bool = False) -> tuple:
    """(fn(*primals), vjp_fn), as ``torch.func.vjp``: ``vjp_fn(v)`` is the tuple of v^T J, one
    entry per primal (shaped as it), v having the output's structure. ``vjp_fn`` may be called
    many times. With ``has_aux``: (output, vjp_fn, aux)."""
    if not primals:
        raise ValueError("vjp: no primals given")
    output, vjp_fn, aux, _ = _vjp(fn, primals, has_aux, "vjp")
    return (output, vjp_fn, aux) if has_aux else (output, vjp_fn)


def jvp(fn: Callable, primals: tuple, tangents: tuple, has_aux: bool = False) -> tuple:
    """(fn(*primals), J v), as ``torch.func.jvp``: the derivative of ``fn`` at ``primals`` in the
    direction ``tangents`` (tuples of the same structure). Computed as the derivative of
    <J^T u, v> with respect to u (two backward passes; the Jacobian is never formed). With
    ``has_aux``: (output, J v, aux)."""
    if not isinstance(primals, tuple) or not isinstance(tangents, tuple):
        raise TypeError(f"jvp: primals and tangents must be tuples, got {type(primals).__name__} and "
                        f"{type(tangents).__name__}")
    if len(primals) != len(tangents):
        raise ValueError(f"jvp: {len(primals)} primals but {len(tangents)} tangents")
    recording = is_grad_enabled()
    output, vjp_fn, aux, inputs = _vjp(fn, primals, has_aux, "jvp")
    outputs, spec = _outputs(output, "jvp")
    directions = _as_cotangents(tangents, inputs.flat(), flatten(tuple(inputs.values()))[1], "jvp", "tangent")
    u = [Tensor(backend.xp.zeros_like(o.data), requires_grad=True, dtype=o.dtype) for o in outputs]
    with enable_grad():
        transposed = flatten(vjp_fn(unflatten(spec, u)))[0]
        inner = _contracted(transposed, directions)
    own = inputs.fresh | {id(t) for t in u}
    create = recording and _reaches_outside([inner], own)
    products = _gradients(inner, u, None, create)
    tangent_out = unflatten(spec, products)
    return (output, tangent_out, aux) if has_aux else (output, tangent_out)


# -- Jacobians and the Hessian ---------------------------------------------------------------------
def _unit(shape, k: int, dtype):
    e = backend.xp.zeros(shape, dtype=dtype)
    e.reshape(-1)[k] = 1
    return e


def jacrev(fn: Callable, argnums: int | tuple[int, ...] = 0, has_aux: bool = False) -> Callable:
    """The Jacobian function of ``fn``, as ``torch.func.jacrev``: ``jacrev(f)(x)`` has shape
    ``f(x).shape + x.shape``, one backward pass (a vjp with a unit vector) per output element.
    A tuple ``argnums`` gives a tuple of Jacobians; a tuple (list, dict) of outputs gives one
    entry per output. With ``has_aux``: (jacobian, aux)."""
    def wrapped(*args, **kwargs):
        positions, single = _argnums(argnums, len(args), "jacrev")

        def partial(*diff):
            call = list(args)
            for i, value in zip(positions, diff):
                call[i] = value
            return fn(*call, **kwargs)

        output, vjp_fn, aux, _ = _vjp(partial, tuple(args[i] for i in positions), has_aux, "jacrev")
        outputs, spec = _outputs(output, "jacrev")
        per_output = []
        for j, o in enumerate(outputs):
            rows = []
            for k in range(o.data.size):
                cts = [_unit(p.shape, k, p.dtype) if m == j else backend.xp.zeros_like(p.data)
                       for m, p in enumerate(outputs)]
                rows.append(flatten(vjp_fn(unflatten(spec, [Tensor._wrap(c) for c in cts])))[0])
            arg_leaves = flatten(tuple(args[i] for i in positions))[0]
            jacobians = []
            for m, x in enumerate(arg_leaves):
                x_shape = tuple(getattr(x, "shape", ()))
                column = [row[m] for row in rows]
                if not column:
                    stacked = Tensor._wrap(backend.xp.zeros((0, *x_shape), dtype=o.dtype))
                elif any(c.requires_grad for c in column):
                    stacked = stack(column, axis=0)
                else:
                    stacked = Tensor._wrap(backend.xp.stack([c.data for c in column]))
                jacobians.append(reshape(stacked, tuple(o.shape) + x_shape))
            per_arg = _regroup_like(tuple(args[i] for i in positions), jacobians)
            per_output.append(per_arg[0] if single else per_arg)
        result = unflatten(spec, per_output)
        return (result, aux) if has_aux else result

    return wrapped


def _regroup_like(values: tuple, flat: list) -> tuple:
    out, start = [], 0
    for value in values:
        leaves, spec = flatten(value)
        out.append(unflatten(spec, flat[start:start + len(leaves)]))
        start += len(leaves)
    return tuple(out)


def jacfwd(fn: Callable, argnums: int | tuple[int, ...] = 0, has_aux: bool = False) -> Callable:
    """The Jacobian function under ``torch.func.jacfwd``'s name. lamina has reverse mode only:
    it is computed as :func:`jacrev` is (one backward pass per output element), same value."""
    return jacrev(fn, argnums, has_aux)


def hessian(fn: Callable, argnums: int | tuple[int, ...] = 0) -> Callable:
    """The Hessian function of a scalar-valued ``fn``, as ``torch.func.hessian``: the Jacobian
    of the gradient, of shape ``x.shape + x.shape`` (a tuple ``argnums``: blocks [i][j] of
    shape x_i.shape + x_j.shape)."""
    return jacfwd(jacrev(fn, argnums), argnums)
