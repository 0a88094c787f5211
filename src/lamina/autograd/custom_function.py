"""Custom differentiable functions written as in PyTorch (``torch.autograd.Function``).

A subclass gives a static ``forward`` and a static ``backward``, and is called through
``apply``::

    class Exp(CustomFunction):
        @staticmethod
        def forward(ctx, x):
            y = x.exp()
            ctx.save_for_backward(y)
            return y

        @staticmethod
        def backward(ctx, dy):           # dJ/dx = dJ/dy * e^x
            (y,) = ctx.saved_tensors
            return dy * y

    y = Exp.apply(x)

``forward(ctx, *args, **kwargs)`` gets the arguments as given (lamina tensors and any other
values) and runs with the graph off, as PyTorch runs it under ``no_grad``; it returns a
tensor or a tuple of tensors. The PyTorch 2 form is accepted too: ``forward(*args)`` without
ctx and a static ``setup_context(ctx, inputs, output)`` that fills the ctx. ``backward(ctx,
*grad_outputs)`` gets one gradient tensor per output (dJ/dy_k) and returns one gradient per
positional argument of forward (dJ/dx_i), ``None`` for an argument that is not a tensor or
needs none; a gradient of a shape that the argument broadcasts to is summed back to the
argument's shape, and one of another dtype is cast, as in PyTorch. The ctx is a
:class:`~lamina.autograd.FunctionCtx`.

Backward runs with the graph off for an ordinary backward pass, and recorded under
``grad(..., create_graph=True)``: a backward written with lamina ops on tensors can be
differentiated again, and one marked :func:`~lamina.autograd.once_differentiable` raises if it is.

How this maps onto the engine: the call becomes one graph node (a
:class:`~lamina.autograd.Function` named ``<Name>Backward``, as PyTorch's ``grad_fn``), whose
inputs are the tensor arguments. A function with several differentiable outputs gets one
small node per output (also named ``<Name>Backward``), each leading to the shared node, which
calls ``backward`` once with the gradients of all outputs; an output no gradient reached gets
zeros or None (:meth:`FunctionCtx.set_materialize_grads`).

PyTorch names and the lamina ones: ``torch.autograd.Function`` is
:class:`CustomFunction` (lamina's :class:`~lamina.autograd.Function` is the engine's primitive
op, on arrays); ``torch.autograd.function.FunctionCtx`` and ``once_differentiable`` are
``lamina.autograd.FunctionCtx`` and ``lamina.autograd.once_differentiable``. Not supported:
``mark_dirty`` (no in-place tensors; it raises), ``jvp``/``vmap``, and tensors passed as keyword
arguments get no gradient (PyTorch's inputs are the positional arguments too). ``apply``
returns new tensors holding forward's arrays, not the tensors forward returned; a saved output
is the returned one.
"""

from __future__ import annotations

import inspect

from lamina import backend
from lamina.autograd import graph
from lamina.autograd.function import Function, cast
from lamina.autograd.function_ctx import FunctionCtx, once_differentiable
from lamina.autograd.profiler import record_function
from lamina.autograd.tensor import Tensor
from lamina.errors import ShapeError

__all__ = ["CustomFunction", "FunctionCtx", "once_differentiable"]


class CustomFunction:
    """Base class of a differentiable function given by a static ``forward`` and ``backward``
    (see the module's docstring); use it through the class method :meth:`apply`."""

    @staticmethod
    def forward(ctx: FunctionCtx, *args, **kwargs):
        raise NotImplementedError("a CustomFunction subclass defines a static forward(ctx, *args)")

    @staticmethod
    def setup_context(ctx: FunctionCtx, inputs: tuple, output) -> None:
        raise NotImplementedError("optional: forward(*args) without ctx, then setup_context(ctx, inputs, output)")

    @staticmethod
    def backward(ctx: FunctionCtx, *grad_outputs):
        raise NotImplementedError("a CustomFunction subclass defines a static backward(ctx, *grad_outputs)")

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        name = f"{cls.__name__}Backward"
        fields = {"function": cls, "__module__": cls.__module__, "__qualname__": name}
        cls._node_class = type(name, (CustomNode,), dict(fields))
        cls._output_class = type(name, (OutputNode,), dict(fields))

    def __init__(self, *args, **kwargs):
        raise TypeError(f"{type(self).__name__} is not instantiated: its methods are static; "
                        f"call {type(self).__name__}.apply(...)")

    @classmethod
    def apply(cls, *args, **kwargs) -> Tensor | tuple:
        """forward's outputs for ``args``, recorded on the graph when an argument that is a
        tensor requires grad (and the graph is on), so that backward reaches ``backward``."""
        if cls is CustomFunction:
            raise TypeError("CustomFunction.apply: subclass CustomFunction with a static forward and backward")
        separate_setup = cls.setup_context is not CustomFunction.setup_context
        if separate_setup:                   # as PyTorch: the inputs are the arguments with defaults filled in
            bound = inspect.signature(cls.forward).bind(*args, **kwargs)
            bound.apply_defaults()
            args, kwargs = bound.args, bound.kwargs
        recording = graph.is_grad_enabled() and any(isinstance(a, Tensor) and a.requires_grad for a in args)
        # as PyTorch's, needs_input_grad follows requires_grad even under no_grad
        ctx = FunctionCtx(cls.__name__, tuple(isinstance(a, Tensor) and a.requires_grad for a in args))
        with graph.no_grad(), record_function(cls.__name__):      # a profile shows forward as a range
            if separate_setup:
                output = cls.forward(*args, **kwargs)
                cls.setup_context(ctx, args, output)
            else:
                output = cls.forward(ctx, *args, **kwargs)
        several = isinstance(output, tuple)
        outputs = output if several else (output,)
        if recording:
            outputs = _record(cls, ctx, args, outputs)
        else:
            outputs = tuple(o.detach() if isinstance(o, Tensor) and o.requires_grad else o for o in outputs)
        return outputs if several else outputs[0]


def _record(cls: type[CustomFunction], ctx: FunctionCtx, args: tuple, outputs: tuple) -> tuple:
    """The outputs as new tensors on the graph, below one node of ``cls`` (or none if no
    output is differentiable); a saved output becomes the new tensor."""
    own = {id(a) for a in args if isinstance(a, Tensor)}
    marked = {id(t) for t in ctx._non_differentiable}
    ctx._non_differentiable = []
    fresh, renamed, differentiable = [], {}, []
    for i, out in enumerate(outputs):
        if not isinstance(out, Tensor):
            fresh.append(out)
            continue
        new = Tensor._wrap(out.data)
        if id(out) not in own:
            renamed[id(out)] = new
        fresh.append(new)
        if out.dtype.kind == "f" and id(out) not in marked:
            differentiable.append(i)
    ctx._saved = tuple(None if t is None else renamed.get(id(t), t) for t in ctx._saved)
    if not differentiable:
        ctx._release()
        return tuple(fresh)
    node = cls._node_class.__new__(cls._node_class)
    node.ctx = ctx
    node.inputs = tuple(a for a in args if isinstance(a, Tensor))
    node.needs_grad = tuple(t.requires_grad for t in node.inputs)
    node.graph_depth = graph.depth_above(node.inputs)
    node.positions = tuple(i for i, a in enumerate(args) if isinstance(a, Tensor))
    node.argument_count = len(args)
    node.output_specs = tuple((o.shape, o.dtype) if isinstance(o, Tensor) else None for o in fresh)
    if len(differentiable) == 1:
        node.direct = differentiable[0]
        _attach(fresh[node.direct], node)
    else:
        node.direct = None
        hub = Tensor._wrap(backend.xp.empty((0,), dtype=fresh[differentiable[0]].dtype))
        _attach(hub, node)
        for i in differentiable:
            slot = cls._output_class.__new__(cls._output_class)
            slot.inputs, slot.needs_grad, slot.index, slot.count = (hub,), (True,), i, len(fresh)
            slot.graph_depth = node.graph_depth + 1
            _attach(fresh[i], slot)
    return tuple(fresh)


def _attach(t: Tensor, node: Function) -> None:
    t.requires_grad = True
    t._ctx = node


class _OutputGrads:
    """The gradients that reached a multi-output function's outputs, one entry per output
    (None where none came): what its output nodes hand to the shared node, added up as the
    engine adds gradients. ``shape`` is the engine's placeholder tensor's."""

    __slots__ = ("grads",)
    shape = (0,)

    def __init__(self, grads: list):
        self.grads = grads

    def __add__(self, other: _OutputGrads) -> _OutputGrads:
        return _OutputGrads([a if b is None else b if a is None else a + b for a, b in zip(self.grads, other.grads)])


class OutputNode(Function):
    """Output ``index`` of a multi-output custom function: hands its gradient, in its slot,
    to the function's shared node (its one input)."""

    def backward(self, dy):
        grads = [None] * self.count
        grads[self.index] = dy
        return (_OutputGrads(grads),)

    backward_graph = backward


class CustomNode(Function):
    """The graph node of one call of a :class:`CustomFunction` (``function``): its inputs are
    the call's tensor arguments; its backward calls ``function.backward`` with ``ctx``."""

    function: type[CustomFunction]

    def backward(self, dy):
        grad_outputs = self._grad_outputs(dy, on_graph=False)
        with graph.no_grad():
            results = self.function.backward(self.ctx, *grad_outputs)
        return self._input_gradients(results, on_graph=False)

    def backward_graph(self, dy: Tensor) -> tuple:
        grad_outputs = self._grad_outputs(dy, on_graph=True)
        results = self.function.backward(self.ctx, *grad_outputs)      # recorded: the sweep has the graph on
        gradients = self._input_gradients(results, on_graph=True)
        if getattr(self.function.backward, "once_differentiable", False):
            sources = [t for t, need in zip(self.inputs, self.needs_grad) if need]
            sources += [g for g in grad_outputs if isinstance(g, Tensor) and g.requires_grad]
            gradients = tuple(None if g is None else OnceDifferentiable.apply(g, *sources, name=self.function.__name__)
                              for g in gradients)
        return gradients

    def release(self) -> None:
        ctx = self.__dict__.get("ctx")
        if ctx is not None:
            ctx._release()
        super().release()

    def _grad_outputs(self, dy, on_graph: bool) -> list:
        """One gradient per output for ``backward``: tensors, zeros (or None, as the ctx says)
        where none reached the output, None for an output that is not a tensor."""
        per_output = [None] * len(self.output_specs)
        if self.direct is None:
            per_output = dy.grads
        else:
            per_output[self.direct] = dy
        grads = []
        for g, spec in zip(per_output, self.output_specs):
            if g is None:
                if spec is not None and self.ctx.materialize_grads:
                    g = Tensor._wrap(backend.xp.zeros(spec[0], dtype=spec[1]))
            elif not on_graph:
                g = Tensor._wrap(backend.xp.asarray(g))
            grads.append(g)
        return grads

    def _input_gradients(self, results, on_graph: bool) -> tuple:
        """backward's ``results`` checked and made one gradient per tensor input (arrays, or
        tensors ``on_graph``)."""
        name = self.function.__name__
        if not isinstance(results, (tuple, list)):
            results = (results,)
        count = self.argument_count
        if len(results) < count or any(r is not None for r in results[count:]):
            raise RuntimeError(
                f"{name}.backward returned {len(results)} gradients for the {count} arguments of forward: it must "
                f"return one per argument (None for one that is not a tensor or needs no gradient)")
        positions = set(self.positions)
        for i in range(count):
            if i not in positions and results[i] is not None:
                raise TypeError(f"{name}.backward returned a gradient at index {i}, but argument {i} of forward is "
                                "not a tensor: return None there")
        gradients = []
        for i, t, need in zip(self.positions, self.inputs, self.needs_grad):
            g = results[i]
            gradients.append(None if g is None or not need else _conform(g, t, name, i, on_graph))
        if not on_graph:
            gradients = self._unshared(gradients)
        return tuple(gradients)

    def _unshared(self, gradients: list) -> list:
        """The gradient arrays, each copied if it is the array of an input or a saved tensor
        (returned as it is by backward): a leaf's ``grad`` must not alias another tensor."""
        held = {id(t.data) for t in (*self.inputs, *self.ctx.saved_tensors) if t is not None}
        return [g.copy() if g is not None and (id(g) in held or id(g.base) in held) else g for g in gradients]


def _conform(g, t: Tensor, name: str, index: int, on_graph: bool):
    """The gradient ``g`` for input ``t`` in its shape and dtype; a gradient of a shape ``t``
    broadcasts to is summed over the broadcast axes. A tensor on the graph, or an array."""
    xp = backend.xp
    if on_graph:
        g = g if isinstance(g, Tensor) else Tensor._wrap(xp.asarray(g))
    else:
        g = xp.asarray(g.data if isinstance(g, Tensor) else g)
    if g.shape != t.shape:
        axes = _broadcast_axes(t.shape, g.shape)
        if axes is None:
            raise ShapeError(f"{name}.backward returned a gradient of shape {g.shape} at index {index}, for argument "
                             f"{index} of forward, a tensor of shape {t.shape}: expected that shape (or one it "
                             "broadcasts to)")
        leading, stretched = axes
        if leading:
            g = g.sum(axis=leading)
        if stretched:
            g = g.sum(axis=stretched, keepdims=True)
        if not on_graph:
            g = xp.asarray(g)
    if g.dtype != t.dtype:
        g = cast(g, t.dtype) if on_graph else g.astype(t.dtype)
    return g


def _broadcast_axes(shape: tuple, grad_shape: tuple) -> tuple[tuple, tuple] | None:
    """For an input of ``shape`` broadcast to ``grad_shape``: the leading axes to sum away and
    then the axes of size 1 to sum with keepdims; None if it does not broadcast."""
    extra = len(grad_shape) - len(shape)
    if extra < 0:
        return None
    stretched = []
    for i, (size, grad_size) in enumerate(zip(shape, grad_shape[extra:])):
        if size != grad_size:
            if size != 1:
                return None
            stretched.append(i)
    return tuple(range(extra)), tuple(stretched)


class OnceDifferentiable(Function):
    """A gradient from a backward marked @once_differentiable, computed off the graph: its
    value passes through; differentiating it raises, naming the function (``name``)."""

    def forward(self, g, *sources):
        return g

    def backward(self, dy):
        raise RuntimeError(
            f"{self.name}.backward is marked @once_differentiable: the gradients it gives cannot be differentiated "
            "again; write its backward with lamina ops on tensors, without the decorator, for second derivatives")
