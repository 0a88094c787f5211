"""The node of the computation graph: one primitive op with its local gradient.

A subclass implements ``forward(*arrays) -> array`` and ``backward(dy) -> tuple`` on
raw arrays (one downstream gradient per input, ``None`` where none is needed) and
keeps in ``self`` whatever the backward needs. Hyperparameters are given as keywords
to :meth:`Function.apply` and become attributes. The VJP is computed directly: no
Jacobian is ever formed.
"""

from __future__ import annotations

import copy

import numpy

from lamina import backend
from lamina.autograd import autocast_state, graph
from lamina.autograd.tensor import Tensor

_ndarray = numpy.ndarray


class Function:
    inputs: tuple[Tensor, ...] | None = None
    needs_grad: tuple[bool, ...] = ()
    #: What autocast does to the op's floating inputs: ``"lower"`` (cast to the autocast
    #: dtype), ``"float32"`` (cast up to float32), ``"promote"`` (cast to the widest one),
    #: or ``None`` (leave them). :mod:`lamina.amp.policy` sets it on the listed ops.
    autocast_policy: str | None = None
    #: For the check of in-place changes (:func:`lamina.autograd.graph.check_unmodified`): input
    #: position -> the positions of the inputs whose gradients read that input's value (a product's
    #: factor serves only the other factor's gradient, a bias none), or None: assume every gradient does.
    value_used_for: dict[int, tuple[int, ...]] | None = None
    #: How the inputs' dtypes meet, as PyTorch's type promotion (:func:`result_dtype`): ``None``
    #: leaves them to NumPy; ``"promote"`` casts them to their common dtype; ``"float"`` does too,
    #: then takes integer and boolean inputs to the default float dtype (true division, exp, ...).
    dtype_rule: str | None = None

    def forward(self, *xs):
        raise NotImplementedError

    def backward(self, dy):
        raise NotImplementedError

    def backward_graph(self, dy: Tensor) -> tuple:
        """The same VJP as :meth:`backward`, computed by ops on tensors (``dy`` is a tensor;
        the inputs are ``self.inputs``) so that it is recorded on the graph and can be
        differentiated again (``grad(..., create_graph=True)``). Ops that have it override it."""
        raise RuntimeError(
            f"grad(create_graph=True): the op {type(self).__name__} has no differentiable backward, so "
            "derivatives of its gradient are not available; lamina.autograd.differentiable_ops() lists the ops "
            "that have one"
        )

    def recorded_output(self, value) -> Tensor:
        """This node's output ``value`` (an array it saved) as a tensor on the graph again,
        for a ``backward_graph`` whose VJP uses the output (tanh's 1 - a^2): the new node is
        a copy of this one, same inputs and saved arrays, so it differentiates as the op does."""
        result = Tensor._wrap(value)
        result.requires_grad, result._ctx = True, copy.copy(self)
        return result

    def linear_backward_graph(self, dy: Tensor) -> tuple:
        """``backward_graph`` for an op linear in its one input (reshape, slicing, padding,
        sums): its VJP is the adjoint map applied to dy, recorded as a :class:`LinearMap`."""
        return (LinearMap.apply(dy, op=copy.copy(self), adjoint=True),)

    def composite_backward_graph(self, dy: Tensor) -> tuple:
        """``backward_graph`` for a fused op that can also be written with ops that have one:
        its ``composite(*input_tensors)`` (the same values, from primitive ops) is run again on
        the inputs and differentiated with ``dy`` on the graph (the inputs' hooks are left to the
        sweep that called it, so they run once). It costs one more forward pass,
        only when gradients of gradients are asked for; the fused forward and backward stay
        as they are."""
        wanted = [t for t, need in zip(self.inputs, self.needs_grad) if need]
        with graph.enable_grad():
            out = self.composite(*self.inputs)
        found = iter(graph.graph_gradients(out, dy, wanted, wanted_hooks=False))   # the outer sweep runs those
        grads = []
        for t, need in zip(self.inputs, self.needs_grad):
            g = next(found) if need else None
            if need and g is None:          # the composite does not read it: a zero gradient, as backward's
                g = Tensor._wrap(backend.xp.zeros(t.shape, dtype=t.dtype))
            grads.append(g)
        return tuple(grads)

    @classmethod
    def apply(cls, *inputs, **params) -> Tensor:
        """Run the op on tensors (or array-likes), recording the node when needed. With the
        graph off (``no_grad``) or no input requiring grad, nothing is recorded: the output
        is a constant tensor and the node, with whatever its forward saved, is dropped."""
        fn = cls.__new__(cls)
        if params:
            fn.__dict__.update(params)
        tensors = inputs
        for x in inputs:
            if not isinstance(x, Tensor):
                tensors = _as_tensors(inputs)
                break
        if cls.dtype_rule is not None:
            dtype = tensors[0].data.dtype
            for t in tensors:
                if dtype.kind != "f" or (t.data.dtype is not dtype and t.data.dtype != dtype):
                    tensors = _promoted(cls.dtype_rule, inputs, tensors)
                    break
        if cls.autocast_policy is not None and autocast_state.state.dtype is not None:
            tensors = _autocast(cls.autocast_policy, tensors)
        # NumPy gives 0-d results as scalars; a tensor's data is always an array.
        out = fn.forward(*[t.data for t in tensors])
        if type(out) is not _ndarray or backend.xp is not numpy:
            out = backend.xp.asarray(out)
        result = Tensor.__new__(Tensor)
        result.data = out
        result._grad = None
        if graph._mode.enabled:
            for t in tensors:
                if t.requires_grad:
                    fn.inputs = tensors
                    fn.needs_grad = tuple(t.requires_grad for t in tensors)
                    fn.graph_depth = graph.depth_above(tensors)
                    fn.recorded_at = graph._modifications
                    result.requires_grad = True
                    result._ctx = fn
                    return result
        result.requires_grad = False
        result._ctx = None
        return result

    def release(self) -> None:
        """Drop everything kept for backward; a later backward through here raises. The node
        keeps its ``graph_depth`` and, in ``freed_inputs``, (id, node) of each input that
        requires grad (no array), so that a later ``grad`` can tell whether a wanted tensor
        lies below it, and raise only then (:func:`lamina.autograd.graph.freed_reaches`)."""
        kept = self.__dict__
        inputs, depth, freed = kept.get("inputs"), kept.get("graph_depth"), kept.get("freed_inputs")
        kept.clear()
        self.inputs = None
        if depth is not None:
            self.graph_depth = depth
        self.freed_inputs = freed if inputs is None else tuple([(id(t), t._ctx) for t in inputs if t.requires_grad])


class LinearMap(Function):
    """y = L x or y = L^T x for the linear one-input op ``op`` (L x is ``op.forward``, L^T dy
    is ``op.backward``): the derivative of each is the other, to any order."""

    def forward(self, x):
        return self.op.backward(x)[0] if self.adjoint else self.op.forward(x)

    def backward(self, dy):
        return (self.op.forward(dy) if self.adjoint else self.op.backward(dy)[0],)

    def backward_graph(self, dy: Tensor) -> tuple:
        return (LinearMap.apply(dy, op=self.op, adjoint=not self.adjoint),)


class Cast(Function):
    """y = x in another floating ``dtype``; the gradient goes back in the input's dtype."""

    def forward(self, x):
        self.source = x.dtype
        return x.astype(self.dtype)

    def backward(self, dy):
        return (dy.astype(self.source),)

    def backward_graph(self, dy: Tensor) -> tuple:
        return (Cast.apply(dy, dtype=self.source),)


def cast(x: Tensor, dtype) -> Tensor:
    """``x`` in ``dtype``, on the graph (the gradient is cast back); ``x`` itself if it has it."""
    dtype = backend.xp.dtype(dtype)
    return x if x.dtype == dtype else Cast.apply(x, dtype=dtype)


def _autocast(policy: str, tensors: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """The inputs as autocast's ``policy`` wants them: float64 is never touched (as in torch)."""
    xp = backend.xp
    floats = [t.dtype for t in tensors if t.dtype.kind == "f" and t.dtype != xp.float64]
    if not floats:
        return tensors
    if policy == "lower":
        target = autocast_state.state.dtype
    elif policy == "float32":
        target = xp.dtype(xp.float32)
    else:
        target = max(floats, key=lambda d: d.itemsize)
    return tuple(cast(t, target) if t.dtype.kind == "f" and t.dtype != xp.float64 else t for t in tensors)


_CATEGORY = {"b": 0, "u": 1, "i": 1, "f": 2, "c": 3}


def _widest(dtypes: list) -> numpy.dtype:
    """The common dtype of those in the highest category (bool < integer < float < complex):
    an integer meeting a float takes the float's dtype, as PyTorch's (NumPy would widen int64
    with float32 to float64)."""
    top = max(_CATEGORY[d.kind] for d in dtypes)
    found = None
    for d in dtypes:
        if _CATEGORY[d.kind] == top:
            found = d if found is None else numpy.promote_types(found, d)
    return found


def _default_of(category: int) -> numpy.dtype:
    xp = backend.xp
    if category == 1:
        return xp.dtype(xp.int64)
    default = xp.dtype(backend.get_default_dtype())
    if category == 3:
        return xp.dtype(xp.complex128 if default == xp.float64 else xp.complex64)
    return default


def result_dtype(dims: list, zero_dims: list, numbers: list, to_float: bool = False) -> numpy.dtype:
    """PyTorch's result dtype of an element-wise op from its operands' dtypes, in three
    classes: tensors with dimensions, 0-d tensors, and plain numbers or arrays (``numbers``).

    The tensors with dimensions decide among themselves (the highest category, then the
    widest); a 0-d tensor counts only when its category is higher than theirs (a float32
    tensor times a float64 0-d tensor stays float32); a number only when its category is
    higher than all tensors', and then as the default dtype of its category (an integer tensor
    plus 0.5 gives the default float dtype, float32). ``to_float``: integer or boolean results
    become the default float dtype (true division)."""
    result = _widest(dims) if dims else None
    if zero_dims:
        zero = _widest(zero_dims)
        if result is None or _CATEGORY[zero.kind] > _CATEGORY[result.kind]:
            result = zero
    if numbers:
        if result is None:
            result = _widest(numbers)
        else:
            top = max(_CATEGORY[d.kind] for d in numbers)
            if top > _CATEGORY[result.kind]:
                result = _default_of(top)
    if to_float and result.kind in "biu":
        result = _default_of(2)
    return result


def _promoted(rule: str, inputs: tuple, tensors: tuple[Tensor, ...]) -> tuple[Tensor, ...]:
    """``tensors`` cast to the op's result dtype (:func:`result_dtype`); the inputs that were
    not tensors count as plain numbers. Nothing is done when they share a float dtype."""
    first = tensors[0].data.dtype
    if all(t.data.dtype == first for t in tensors[1:]) and (rule == "promote" or first.kind == "f"):
        return tensors
    dims, zero_dims, numbers = [], [], []
    for given, t in zip(inputs, tensors):
        if not isinstance(given, Tensor):
            numbers.append(t.data.dtype)
        elif t.data.ndim:
            dims.append(t.data.dtype)
        else:
            zero_dims.append(t.data.dtype)
    if not dims and not zero_dims:                  # no tensor at all: the values decide as tensors
        dims, numbers = numbers, []
    target = result_dtype(dims, zero_dims, numbers, to_float=rule == "float")
    return tuple(t if t.data.dtype == target else cast(t, target) for t in tensors)


def differentiable_ops() -> list[str]:
    """Names of the ops (Function subclasses loaded so far) whose backward is itself
    differentiable, so that gradients through them can be differentiated again."""
    found, stack = set(), [Function]
    while stack:
        cls = stack.pop()
        for sub in cls.__subclasses__():
            stack.append(sub)
            if sub.backward_graph is not Function.backward_graph:
                found.add(sub.__name__)
    return sorted(found)


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
