"""Shape inference by tracing: one forward pass over a batch of *zero* samples.

:func:`trace` runs ``model`` on ``zeros((0, *input_shape))`` and records every layer call
in execution order with its input and output tensors. A model of several inputs (a
functional ``Model`` built from a list of ``Input`` placeholders, or any module whose
``forward`` takes several tensors) gets one zero-sample tensor per input,
``model(x_1, ..., x_n)``; a ``forward`` of one parameter gets them as one list. The arithmetic of a zero-sample batch
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

A ``TimeDistributed`` wrapper is a row of its own: its wrapped layer runs once per time
step, on the T steps folded into the batch, (N, T, ...) -> (N T, ...), so the calls made
inside it are recorded under it (:attr:`LayerCall.inner`), with shapes of one step, and
the sequence's figures are T times theirs (:attr:`LayerCall.steps`).
"""

from __future__ import annotations

import copy
import inspect
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from lamina import backend
from lamina.autograd import Tensor, graph
from lamina.nn import init
from lamina.nn.adapt import PreprocessingLayer
from lamina.nn.functional_model import Model
from lamina.nn.layer import reads_ids, reads_strings
from lamina.nn.module import Module, intercept_calls
from lamina.nn.wrappers import TimeDistributed

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
    # the calls made inside a TimeDistributed, on the folded steps (N T, ...), in call order
    inner: list[LayerCall] = field(default_factory=list)

    @property
    def wraps_steps(self) -> bool:
        """Whether this is a ``TimeDistributed`` call, its wrapped layer run once per step."""
        return isinstance(self.module, TimeDistributed)

    @property
    def steps(self) -> int:
        """T, the runs of the wrapped layer per sample for a ``TimeDistributed`` call (its
        input's time axis); 1 for any other call."""
        return int(self.inputs[0].shape[1]) if self.wraps_steps and self.inputs else 1

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
        return sum(per_sample_bytes(t) for t in self.outputs)


@dataclass
class Trace:
    """The recorded pass: the traced copy of the model, its inputs (one zero-sample tensor
    per model input), its outputs and the layer calls."""

    model: Module
    inputs: list[Tensor]
    output: list[Tensor]
    calls: list[LayerCall] = field(default_factory=list)
    paths: dict[int, str] = field(default_factory=dict)  # id(module) -> dotted path in ``model``
    source: Module | None = None  # the caller's model (paths are the same in both)

    @property
    def input(self) -> Tensor:
        """The input of a model of one input; for several, a ``ValueError`` (see ``inputs``)."""
        if len(self.inputs) != 1:
            shapes = [tuple(t.shape[1:]) for t in self.inputs]
            raise ValueError(
                f"lamina.analysis: {self.model._label()} takes {len(self.inputs)} inputs, of shapes {shapes}; this "
                "analysis (Trace.input, e.g. receptive fields) needs a model of one input (Trace.inputs lists all)"
            )
        return self.inputs[0]

    def intermediates(self) -> list[Tensor]:
        """The op results the output depends on that are not a layer's output: tensors made
        inside a layer (the pre-activation z of a ``Conv2D(..., activation=...)``) or by a
        block's ``forward`` (a residual block's sum and ReLU, an inception concatenation),
        and the tensors made inside a ``TimeDistributed`` but its two reshapes (see
        :meth:`intermediate_bytes`)."""
        return [t for t, _ in self._intermediates()]

    def intermediate_bytes(self) -> int:
        """Bytes per sample of :meth:`intermediates`. A tensor made inside a
        ``TimeDistributed`` holds one step per row, (N T, ...): it counts T times its row.
        The wrapper's reshapes (N, T, ...) <-> (N T, ...) are views of its input and of its
        output (the row's activation): they are not counted."""
        return sum(per_sample_bytes(t) * repeats for t, repeats in self._intermediates())

    def _intermediates(self) -> list[tuple[Tensor, int]]:
        """(tensor, runs per sample) of every intermediate, walking back from the output."""
        found: list[tuple[Tensor, int]] = []
        _collect(self.output, self.calls, {id(t) for t in self.inputs}, 1, found, set())
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


def per_sample_bytes(t: Tensor) -> int:
    """Bytes per sample of a tensor of the zero-sample pass: the product of its other axes
    once its empty (batch) axis is left out, wherever that axis is (a recurrent layer keeps
    its steps time-first, (T, N, H)); 0 for a tensor with no batch axis (a constant)."""
    shape = tuple(t.shape)
    if 0 not in shape:
        return 0
    batch = shape.index(0)
    return math.prod(shape[:batch] + shape[batch + 1:]) * t.dtype.itemsize


def _collect(outputs: list[Tensor], calls: list[LayerCall], stop: set[int], repeats: int,
             found: list[tuple[Tensor, int]], seen: set[int], rows: bool = True) -> None:
    """Append to ``found`` the op results reachable back from ``outputs`` (not crossing the
    tensors in ``stop``), each with ``repeats``, but the outputs of ``calls`` when they are
    ``rows`` (their outputs are the activations). The inside of a ``TimeDistributed`` call
    is walked with ``repeats`` x T; its layers are not rows, their outputs are collected."""
    layer_outputs = {id(t): call for call in calls for t in call.outputs}
    stack = list(outputs)
    while stack:
        t = stack.pop()
        if id(t) in seen or id(t) in stop:
            continue
        seen.add(id(t))
        ctx = getattr(t, "_ctx", None)
        if ctx is None:
            continue  # the input, parameters, constants
        call = layer_outputs.get(id(t))
        if call is None or not rows:
            found.append((t, repeats))
        if call is not None and call.wraps_steps:
            _collect_steps(call, t, repeats, found, seen)
            stack.extend(call.inputs)
        else:
            stack.extend(ctx.inputs or ())


def _collect_steps(call: LayerCall, output: Tensor, repeats: int, found: list[tuple[Tensor, int]],
                   seen: set[int]) -> None:
    """The intermediates inside a ``TimeDistributed`` call, from its output (N, T, ...out)
    back to its input: every tensor made on the folded steps (N T, ...) but the folded
    input and the wrapped layer's output, of which the call's input and ``output`` are
    reshapes."""
    inputs = {id(t) for t in call.inputs}
    unfolded = list(output._ctx.inputs or ())
    inside: list[tuple[Tensor, int]] = []
    _collect(unfolded, call.inner, inputs, repeats * call.steps, inside, seen, rows=False)
    views = {id(t) for t in unfolded}
    found.extend((t, n) for t, n in inside
                 if id(t) not in views and not any(id(u) in inputs for u in t._ctx.inputs or ()))


def is_layer(module: Module) -> bool:
    """Whether a call of ``module`` is a row: no sub-modules, or weights of its own, or a
    ``TimeDistributed`` wrapper (the layers it wraps are recorded inside its call), or a
    preprocessing layer (``TextVectorization``: its lookup table is a part of its one step)."""
    return not module._modules or bool(module._parameters) or any(
        b is not None for b in module._buffers.values()) or isinstance(module, (TimeDistributed, PreprocessingLayer))


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


def _is_batched_shape(value) -> bool:
    """Whether ``value`` is one shape with its batch axis: (None, 224, 224, 3)."""
    return isinstance(value, (tuple, list)) and len(value) > 1 and all(
        isinstance(n, int) or n is None for n in value)


def default_input_shapes(model: Module) -> list[tuple[int, ...]] | None:
    """The shapes (without batch) ``model`` was built for, one per input, or the
    ``input_shape`` (batch axis first, e.g. ``(None, 224, 224, 3)``, or a list of such shapes
    for a model of several inputs) a builder recorded on it; None when a size is unknown."""
    for attr in ("build_input_shape", "input_shape"):
        value = getattr(model, attr, None)
        if _is_batched_shape(value):
            shapes = [value]
        elif isinstance(value, (tuple, list)) and value and all(_is_batched_shape(s) for s in value):
            shapes = list(value)
        else:
            continue
        rests = [tuple(shape[1:]) for shape in shapes]
        if all(isinstance(n, int) for rest in rests for n in rest):
            return rests
    return None


def _one_shape(shape, given) -> tuple[int, ...]:
    """A shape without the batch axis (an int for vectors), checked."""
    if isinstance(shape, int) and not isinstance(shape, bool):
        shape = (shape,)
    try:
        sizes = tuple(int(n) for n in shape)
    except (TypeError, ValueError):
        sizes = ()
    if not sizes or min(sizes) < 1:
        raise ValueError(f"lamina.analysis: input_shape must be positive sizes without the batch axis, or a list "
                         f"of such shapes (one per input), got {given!r}")
    return sizes


def _input_shapes(input_shape, model: Module) -> list[tuple[int, ...]]:
    """One shape (without batch) per model input: from ``input_shape`` (a shape, or a list of
    shapes) or, when it is None, the shapes the model was built for."""
    if input_shape is None:
        shapes = default_input_shapes(model)
        if shapes is None:
            raise ValueError(
                f"lamina.analysis: {model._label()} was not built for a known input shape; pass "
                "input_shape (without the batch axis), e.g. (224, 224, 3), or a list of shapes for a model "
                "of several inputs, e.g. [(8,), (32, 32, 3)]"
            )
        return shapes
    if isinstance(input_shape, (tuple, list)) and any(isinstance(s, (tuple, list)) for s in input_shape):
        return [_one_shape(s, input_shape) for s in input_shape]
    return [_one_shape(input_shape, input_shape)]


def _input_dtypes(model: Module, count: int) -> list:
    """The dtype of each input's zero batch: integer for an input declared integer (a
    functional ``Model``'s ``Input(..., dtype="int64")``, an imported ONNX graph's int64
    input) or for the one input of a model whose first layer reads ids (an ``Embedding``),
    strings for the one input of a model whose first layer reads strings
    (``TextVectorization``, ``Hashing``), else the default float dtype."""
    if isinstance(model, Model):
        declared = [t.dtype for t in model.inputs]
    else:  # an imported ONNX graph declares its inputs' dtypes
        declared = list(getattr(model, "input_dtypes", None) or [])
    if len(declared) != count:
        declared = [None] * count
    ids = count == 1 and reads_ids(model)
    strings = count == 1 and not ids and reads_strings(model)
    dtypes = []
    for dtype in declared:
        if dtype is not None and dtype.kind in "iu":
            dtypes.append(dtype)
        else:
            dtypes.append(backend.xp.int64 if ids else backend.xp.str_ if strings else backend.get_default_dtype())
    return dtypes


def _zero_batch(shape: tuple[int, ...], dtype) -> Tensor:
    """zeros((0, *shape)); a float one requires grad, so the graph is recorded from it; a
    string one stays an array (tensors hold numbers)."""
    zeros = backend.xp.zeros((0, *shape), dtype=dtype)
    if backend.xp.dtype(dtype).kind == "U":
        return zeros
    if backend.xp.dtype(dtype).kind in "iu":
        return Tensor(zeros)
    return Tensor(zeros, requires_grad=True)


def _call(model: Module, xs: list[Tensor]):
    """``model(x)`` for one input; ``model(x_1, ..., x_n)`` for several, or ``model([x_1, ...,
    x_n])`` when its ``forward`` takes exactly one positional parameter."""
    if len(xs) == 1:
        return model(xs[0])
    parameters = inspect.signature(model.forward).parameters.values()
    if any(p.kind is p.VAR_POSITIONAL for p in parameters):
        return model(*xs)
    positional = [p for p in parameters if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return model(xs) if len(positional) == 1 else model(*xs)


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


def trace(model: Module | Callable[[], Module],
          input_shape: Sequence[int] | Sequence[Sequence[int]] | None = None) -> Trace:
    """Run ``model`` (a Module or a zero-argument builder) on a zero-sample batch of
    ``input_shape`` (no batch axis; a list of shapes, one per input, for a model of several
    inputs; default: the shapes it was built for) and record its layer calls. The caller's
    model is left exactly as it was (see the module docstring)."""
    source = resolve_model(model)
    shapes = _input_shapes(input_shape, source)
    traced = copy.deepcopy(source, _weights_memo(source))
    traced.eval()
    paths = {id(m): p for p, m in traced.named_modules()}
    calls: list[LayerCall] = []
    seen: set[int] = set()
    wrappers: list[LayerCall] = []  # the TimeDistributed calls running now, innermost last

    def record(module: Module, inputs: tuple, kwargs: dict, forward: Callable):
        if not is_layer(module):
            return forward()
        # tensors given by keyword (an attention layer's key and value) count as inputs too
        given = _tensors(inputs) + [v for v in kwargs.values() if isinstance(v, Tensor)]
        siblings = wrappers[-1].inner if wrappers else calls
        call = LayerCall(len(siblings), paths.get(id(module), module.name or type(module).__name__), module,
                         given, [], first=id(module) not in seen)
        seen.add(id(module))
        siblings.append(call)  # appended before the forward: rows follow the call order
        if call.wraps_steps:
            wrappers.append(call)
        try:
            out = forward()
        finally:
            if call.wraps_steps:
                wrappers.pop()
        call.outputs = _tensors(out)
        return out

    xs = [_zero_batch(shape, dtype) for shape, dtype in zip(shapes, _input_dtypes(traced, len(shapes)))]
    previous = graph._mode.enabled
    graph._mode.enabled = True  # record the graph: receptive fields follow it through glue ops
    try:
        with init.meta(), intercept_calls(record):
            out = _call(traced, xs)
    except Exception as exc:
        batches = "a zero-sample batch of shape" if len(xs) == 1 else "zero-sample batches of shapes"
        exc.add_note(f"(raised while lamina.analysis traced {source._label()} on {batches} "
                     f"{', '.join(str(tuple(x.shape)) for x in xs)})")
        raise
    finally:
        graph._mode.enabled = previous
    return Trace(traced, xs, _tensors(out), calls, paths, source)
