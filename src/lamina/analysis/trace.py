"""Shape inference by tracing: one forward pass over a batch of *zero* samples.

:func:`trace` runs ``model`` on ``zeros((0, *input_shape))`` and records every layer call
in execution order with its input and output tensors. The arithmetic of a zero-sample batch
is free (every activation has 0 elements), yet each op computes its real output shape, so
the table follows exactly what ``forward`` does, including the wiring of composite blocks
(residual additions, inception concatenations) that lives only in their ``forward``.

No weights are allocated: the model is deep-copied (sharing the weights that already
exist, so the copy costs only the module objects) and the copy is built inside
:func:`lamina.nn.init.meta`, where initializers return zero-stride views of one zero. The
caller's model is never modified: an unbuilt model stays unbuilt and gets real weights on
its first real call. The pass runs in evaluation mode (dropout off, batch norm on its
running statistics, auxiliary classifiers skipped) with the graph recorded, so that
:func:`lamina.analysis.receptive_field` can follow the data flow through the glue ops of
composite blocks.

A *layer* (a row of the summary) is a called module without sub-modules, or one that owns
parameters or buffers itself (a ``Conv2D`` with an activation layer inside); containers
such as ``Sequential`` and composite blocks are not rows, their layers are.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lamina import backend
from lamina.autograd import Tensor, graph
from lamina.nn import init
from lamina.nn.layer import reads_ids
from lamina.nn.module import Module, intercept_calls

__all__ = ["LayerCall", "Trace", "is_layer", "resolve_model", "trace"]


@dataclass
class LayerCall:
    """One call of a layer during the trace."""

    index: int
    path: str
    module: Module
    inputs: list[Tensor]
    outputs: list[Tensor]
    first: bool = True  # the first call of this module (its parameters are counted here)

    @property
    def input_shapes(self) -> list[tuple[int, ...]]:
        """Input shapes without the batch axis."""
        return [tuple(t.shape[1:]) for t in self.inputs]

    @property
    def output_shapes(self) -> list[tuple[int, ...]]:
        """Output shapes without the batch axis."""
        return [tuple(t.shape[1:]) for t in self.outputs]

    @property
    def output_elements(self) -> int:
        """Values per sample in the outputs."""
        return sum(math.prod(s) for s in self.output_shapes)

    @property
    def output_bytes(self) -> int:
        """Bytes per sample of the outputs."""
        return sum(math.prod(t.shape[1:]) * t.dtype.itemsize for t in self.outputs)


@dataclass
class Trace:
    """The recorded pass: the traced copy of the model, its input and the layer calls."""

    model: Module
    input: Tensor
    output: list[Tensor]
    calls: list[LayerCall] = field(default_factory=list)
    paths: dict[int, str] = field(default_factory=dict)  # id(module) -> dotted path in ``model``
    source: Module | None = None  # the caller's model (paths are the same in both)

    def intermediates(self) -> list[Tensor]:
        """The op results the output depends on that are not a layer's output: tensors made
        inside a layer (the pre-activation z of a ``Conv2D(..., activation=...)``) or by a
        block's ``forward`` (a residual block's sum and ReLU, an inception concatenation)."""
        layer_outputs = {id(t) for call in self.calls for t in call.outputs}
        layer_outputs.add(id(self.input))
        found: list[Tensor] = []
        seen: set[int] = set()
        stack = list(self.output)
        while stack:
            t = stack.pop()
            if id(t) in seen:
                continue
            seen.add(id(t))
            ctx = getattr(t, "_ctx", None)
            if ctx is None:
                continue  # the input, parameters, constants
            if id(t) not in layer_outputs:
                found.append(t)
            stack.extend(ctx.inputs or ())
        return found

    def path_of(self, module: Module) -> str | None:
        """The dotted path of ``module`` (of the traced copy or of the caller's model)."""
        if id(module) in self.paths:
            return self.paths[id(module)]
        if self.source is not None:
            for path, m in self.source.named_modules():
                if m is module:
                    return path
        return None


def is_layer(module: Module) -> bool:
    """Whether a call of ``module`` is a row: no sub-modules, or weights of its own."""
    return not module._modules or bool(module._parameters) or any(
        b is not None for b in module._buffers.values())


def resolve_model(model: Module | Callable[[], Module]) -> Module:
    """``model`` itself, or the model a zero-argument builder returns, built in meta mode
    (weights are shape-only, so e.g. ``lamina.models.vgg16`` costs no weight memory)."""
    if isinstance(model, Module):
        return model
    if callable(model):
        with init.meta():
            built = model()
        if not isinstance(built, Module):
            raise TypeError(f"lamina.analysis: the builder {model!r} returned {type(built).__name__}, not a Module")
        return built
    raise TypeError(f"lamina.analysis: expected a Module or a builder function, got {type(model).__name__}")


def default_input_shape(model: Module) -> tuple[int, ...] | None:
    """The shape (without batch) ``model`` was built for, or the ``input_shape`` (batch axis
    first, e.g. ``(None, 224, 224, 3)``) a builder recorded on it."""
    for attr in ("build_input_shape", "input_shape"):
        shape = getattr(model, attr, None)
        if isinstance(shape, (tuple, list)) and len(shape) > 1 and all(isinstance(n, int) or n is None
                                                                         for n in shape):
            rest = tuple(shape[1:])
            if all(isinstance(n, int) for n in rest):
                return rest
    return None


def _shape(input_shape, model: Module) -> tuple[int, ...]:
    if input_shape is None:
        shape = default_input_shape(model)
        if shape is None:
            raise ValueError(
                f"lamina.analysis: {model._label()} was not built for a known input shape; pass "
                "input_shape (without the batch axis), e.g. (224, 224, 3)"
            )
        return shape
    if isinstance(input_shape, int):
        input_shape = (input_shape,)
    shape = tuple(int(n) for n in input_shape)
    if not shape or min(shape) < 1:
        raise ValueError(f"lamina.analysis: input_shape must be positive sizes without the batch axis, "
                         f"got {input_shape!r}")
    return shape


def _weights_memo(model: Module) -> dict:
    """A deepcopy memo that keeps every parameter and buffer shared (not copied)."""
    memo: dict = {}
    for _, module in model.named_modules():
        for p in module._parameters.values():
            memo[id(p)] = p
        for b in module._buffers.values():
            if b is not None:
                memo[id(b)] = b
    return memo


def _tensors(value) -> list[Tensor]:
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _tensors(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _tensors(v)]
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        return [Tensor._wrap(backend.xp.asarray(value))]
    return []


def trace(model: Module | Callable[[], Module], input_shape: Sequence[int] | None = None) -> Trace:
    """Run ``model`` (a Module or a zero-argument builder) on a zero-sample batch of
    ``input_shape`` (no batch axis; default: the shape it was built for) and record its
    layer calls. The caller's model is left exactly as it was (see the module docstring)."""
    source = resolve_model(model)
    shape = _shape(input_shape, source)
    traced = copy.deepcopy(source, _weights_memo(source))
    traced.eval()
    paths = {id(m): p for p, m in traced.named_modules()}
    calls: list[LayerCall] = []
    seen: set[int] = set()

    def record(module: Module, inputs: tuple, kwargs: dict, forward: Callable):
        if not is_layer(module):
            return forward()
        # tensors given by keyword (an attention layer's key and value) count as inputs too
        given = _tensors(inputs) + [v for v in kwargs.values() if isinstance(v, Tensor)]
        call = LayerCall(len(calls), paths.get(id(module), module.name or type(module).__name__), module,
                         given, [], first=id(module) not in seen)
        seen.add(id(module))
        calls.append(call)  # appended before the forward: rows follow the call order
        out = forward()
        call.outputs = _tensors(out)
        return out

    if reads_ids(traced):
        x = Tensor(backend.xp.zeros((0, *shape), dtype=backend.xp.int64))
    else:
        x = Tensor(backend.xp.zeros((0, *shape), dtype=backend.get_default_dtype()), requires_grad=True)
    previous = graph._grad_enabled
    graph._grad_enabled = True  # record the graph: receptive fields follow it through glue ops
    try:
        with init.meta(), intercept_calls(record):
            out = traced(x)
    except Exception as exc:
        exc.add_note(f"(raised while lamina.analysis traced {source._label()} on a zero-sample batch of "
                     f"shape {tuple(x.shape)})")
        raise
    finally:
        graph._grad_enabled = previous
    return Trace(traced, x, _tensors(out), calls, paths, source)
