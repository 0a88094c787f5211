"""Module hooks, as in PyTorch: functions that watch, or change, a module's calls.

A module keeps three lists of hooks, each run in the order registered:

* forward pre-hooks ``hook(module, inputs)``, before ``forward``; a returned value replaces
  the inputs (a tuple, or a single value taken as a tuple of one);
* forward hooks ``hook(module, inputs, output)``, after it; a returned value replaces the output;
* full backward hooks ``hook(module, grad_input, grad_output)``, when backward has computed
  dJ/dx for the tensors x the module was called with; ``grad_input`` and ``grad_output`` are
  tuples of arrays, one per positional input and per output (None where a value is not a
  tensor, does not require grad, or was not reached by backward); a returned tuple replaces
  ``grad_input``, and so every gradient below the module.

Backward hooks work with the engine's own graph. The tensors a call receives are passed
through one :class:`_Gate` node before ``forward`` sees them, and its outputs through another
after it: dJ/doutput reaches the second gate first (it is recorded), then dJ/dinput reaches
the first gate, whose backward calls the hooks with both and hands back what they return.
One gate per side, however many tensors, makes the hooks run once per call and per
backward sweep (a module called twice in one forward has its hooks called twice): several
tensors are packed into one array by the gate and unpacked by a view each, which costs a
copy of them in the forward and in backward. A module called without tensors that require
grad has its hooks called as soon as its outputs' gradients are known, with ``grad_input``
all None; they must then return None.

:func:`capture_activations` records, with forward hooks, the output of every named
sub-module during one forward pass.

The call pipeline (:class:`lamina.nn.Module`) runs :meth:`ModuleHooks.call` in place of the
forward of a module that has hooks; this module knows nothing of ``Module`` itself.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import numpy

from lamina import backend
from lamina.autograd import Function, Tensor, graph, no_grad
from lamina.errors import ShapeError

if TYPE_CHECKING:
    from lamina.nn.module import Module

__all__ = ["HookHandle", "ModuleHooks", "capture_activations"]


class HookHandle:
    """What a module's ``register_*_hook`` methods return (and the hook's key in the
    module's table of hooks): ``remove()`` takes the hook away; removing it twice is harmless."""

    def __init__(self, hooks: dict, on_remove: Callable[[], None]):
        self.hooks = hooks
        self.on_remove = on_remove

    def remove(self) -> None:
        if self.hooks.pop(self, None) is not None:
            self.on_remove()


class ModuleHooks:
    """One module's hooks by kind, each a dict handle -> hook in registration order.

    A copy of a module (``copy.deepcopy``, as the analysis tools and weight averaging make)
    starts without the hooks a caller registered, and a pickled module leaves them out: they
    belong to the module object the caller registered them on, not to the model's description
    or weights. A hook that is part of the module's own computation (pruning's mask) says so
    with a true ``copied_with_module`` attribute; a deep copy keeps a copy of it, and a pickle
    holds it (it must be picklable itself)."""

    KINDS = ("forward_pre", "forward", "backward")

    def __init__(self):
        self.forward_pre: dict[HookHandle, Callable] = {}
        self.forward: dict[HookHandle, Callable] = {}
        self.backward: dict[HookHandle, Callable] = {}

    def __bool__(self) -> bool:
        return bool(self.forward_pre or self.forward or self.backward)

    def _own_hooks(self) -> dict[str, list[tuple[Callable, Callable]]]:
        """The hooks marked ``copied_with_module`` with their handles' ``on_remove``, by kind, in
        registration order: what a deep copy or a pickle of the module keeps."""
        return {kind: [(hook, handle.on_remove) for handle, hook in getattr(self, kind).items()
                       if getattr(hook, "copied_with_module", False) is True] for kind in self.KINDS}

    def __deepcopy__(self, memo) -> ModuleHooks:
        copied = ModuleHooks()
        copied.__setstate__(copy.deepcopy(self._own_hooks(), memo))
        return copied

    def __reduce__(self):
        return ModuleHooks, (), self._own_hooks()

    def __setstate__(self, state: dict[str, list[tuple[Callable, Callable]]]) -> None:
        for kind, hooks in state.items():
            kept = getattr(self, kind)
            for hook, on_remove in hooks:
                kept[HookHandle(kept, on_remove)] = hook

    def add(self, kind: str, hook: Callable, who: str, on_remove: Callable[[], None]) -> HookHandle:
        """Register ``hook`` under ``kind`` (one of :attr:`KINDS`); ``who`` names the caller in errors."""
        if not callable(hook):
            raise TypeError(f"{who}: expected a callable, got {type(hook).__name__}")
        hooks = getattr(self, kind)
        handle = HookHandle(hooks, on_remove)
        hooks[handle] = hook
        return handle

    def call(self, module: Module, inputs: tuple, kwargs: dict):
        """``module.forward(*inputs, **kwargs)`` with the hooks around it (the lazy build and
        any call interceptor have run already)."""
        for hook in list(self.forward_pre.values()):
            result = hook(module, inputs)
            if result is not None:
                inputs = result if isinstance(result, tuple) else (result,)
        backward_hooks = list(self.backward.values())  # the hooks of this call: those registered now
        watched = None
        if backward_hooks and graph.is_grad_enabled():
            watched = _BackwardHookCall(module, backward_hooks, inputs)
            inputs = watched.gate_inputs(inputs)
        output = module.forward(*inputs, **kwargs)
        for hook in list(self.forward.values()):
            result = hook(module, inputs, output)
            if result is not None:
                output = result
        if watched is not None:
            output = watched.gate_output(output)
        return output


# -- backward hooks ------------------------------------------------------------------------------

class _Gate(Function):
    """Tensors in, their values out unchanged: the tensor itself when there is one, else all of
    them packed into one flat array (unpacked by :class:`_Unpack`). Backward hands the
    gradients, one per tensor (None for a tensor that backward did not reach), to
    ``on_gradients`` and passes on the tuple it returns. Keywords: ``on_gradients``,
    ``reached`` (None for a single tensor, else the set of indices the unpacking views add to)."""

    def forward(self, *arrays):
        self.layout = [(a.shape, a.dtype) for a in arrays]
        if self.reached is None:
            return arrays[0]
        return backend.xp.concatenate([a.reshape(-1) for a in arrays])

    def backward(self, dy):
        if self.reached is None:
            return tuple(self.on_gradients((dy,)))
        grads, start = [], 0
        for index, (shape, dtype) in enumerate(self.layout):
            stop = start + math.prod(shape)
            grads.append(dy[start:stop].reshape(shape).astype(dtype, copy=False) if index in self.reached else None)
            start = stop
        return tuple(self.on_gradients(tuple(grads)))


class _Unpack(Function):
    """One tensor's value out of a :class:`_Gate`'s packed array (a view when the dtypes agree).
    Keywords: ``index``, ``start``, ``shape``, ``dtype``, ``reached`` (shared with the gate)."""

    def forward(self, packed):
        self.size, self.packed_dtype = packed.size, packed.dtype
        stop = self.start + math.prod(self.shape)
        return packed[self.start:stop].reshape(self.shape).astype(self.dtype, copy=False)

    def backward(self, dy):
        self.reached.add(self.index)
        full = backend.xp.zeros(self.size, dtype=self.packed_dtype)
        full[self.start:self.start + dy.size] = dy.reshape(-1)
        return (full,)


def _gate(tensors: Sequence[Tensor], on_gradients: Callable[[tuple], tuple]) -> list[Tensor]:
    """``tensors`` (each requiring grad) through one :class:`_Gate`: new tensors of the same
    values, whose gradients reach ``on_gradients`` together, in one call per backward sweep."""
    if len(tensors) == 1:
        return [_Gate.apply(tensors[0], on_gradients=on_gradients, reached=None)]
    reached: set[int] = set()
    packed = _Gate.apply(*tensors, on_gradients=on_gradients, reached=reached)
    out, start = [], 0
    for index, t in enumerate(tensors):
        out.append(_Unpack.apply(packed, index=index, start=start, shape=t.shape, dtype=t.dtype, reached=reached))
        start += t.size
    return out


def _tracked(value) -> bool:
    return isinstance(value, Tensor) and value.requires_grad


def _spread(grads: tuple, slots: list[int], count: int) -> tuple:
    """The gradients of the tensors at ``slots`` laid out over ``count`` positions (None elsewhere)."""
    out: list[Any] = [None] * count
    for slot, g in zip(slots, grads):
        out[slot] = g
    return tuple(out)


class _BackwardHookCall:
    """One forward call of a module that has full backward hooks: the gates its tensors pass
    through, and the gradients of its outputs, kept until the inputs' gradients arrive."""

    def __init__(self, module: Module, hooks: list[Callable], inputs: tuple):
        self.module = module
        self.hooks = hooks
        self.input_count = len(inputs)
        self.input_slots = [i for i, x in enumerate(inputs) if _tracked(x)]
        self.input_layout = {i: (inputs[i].shape, inputs[i].dtype) for i in self.input_slots}
        self.output_count = 0
        self.output_slots: list[int] = []
        self.grad_output: tuple | None = None

    def gate_inputs(self, inputs: tuple) -> tuple:
        if not self.input_slots:
            return inputs
        gated = _gate([inputs[i] for i in self.input_slots], self._on_input_gradients)
        inputs = list(inputs)
        for slot, t in zip(self.input_slots, gated):
            inputs[slot] = t
        return tuple(inputs)

    def gate_output(self, output):
        """The output with its tensors that require grad passed through a gate (a tensor, or a
        plain tuple or list of values; any other output is returned as it is, unwatched)."""
        single = isinstance(output, Tensor)
        if not single and type(output) not in (tuple, list):
            return output
        values = [output] if single else list(output)
        self.output_count = len(values)
        self.output_slots = [i for i, v in enumerate(values) if _tracked(v)]
        if not self.output_slots:
            return output
        gated = _gate([values[i] for i in self.output_slots], self._on_output_gradients)
        for slot, t in zip(self.output_slots, gated):
            values[slot] = t
        return values[0] if single else type(output)(values)

    def _on_output_gradients(self, grads: tuple) -> tuple:
        self.grad_output = _spread(grads, self.output_slots, self.output_count)
        if not self.input_slots:             # backward goes no further: the hooks run now
            grad_input = (None,) * self.input_count
            for hook in self.hooks:
                result = hook(self.module, grad_input, self.grad_output)
                if result is not None and not (isinstance(result, (tuple, list)) and all(r is None for r in result)):
                    raise ValueError(
                        f"{self._who(hook)}: the module was called with no tensor that requires grad, so there is "
                        f"no input gradient to replace; the hook must return None (it returned {_kind(result)})")
            self.grad_output = None
        return grads

    def _on_input_gradients(self, grads: tuple) -> tuple:
        grad_input = _spread(grads, self.input_slots, self.input_count)
        grad_output = self.grad_output if self.grad_output is not None else (None,) * self.output_count
        self.grad_output = None
        for hook in self.hooks:
            result = hook(self.module, grad_input, grad_output)
            if result is not None:
                grad_input = self._replacement(result, hook)
        return tuple(grad_input[i] for i in self.input_slots)

    def _replacement(self, result, hook) -> tuple:
        """A hook's returned grad_input, checked and made arrays of the inputs' dtypes."""
        if isinstance(result, (Tensor, numpy.ndarray, backend.xp.ndarray)) and self.input_count == 1:
            result = (result,)
        if not isinstance(result, (tuple, list)) or len(result) != self.input_count:
            raise ValueError(f"{self._who(hook)}: expected None or a tuple of {self.input_count} gradients "
                             f"(one per input, like grad_input), got {_kind(result)}")
        checked: list[Any] = []
        for i, g in enumerate(result):
            if g is None or i not in self.input_layout:  # nothing to pass on to an input backward does not reach
                checked.append(None)
                continue
            shape, dtype = self.input_layout[i]
            g = backend.xp.array(g.data if isinstance(g, Tensor) else g, dtype=dtype)  # a copy: the caller may keep g
            if g.shape != shape:
                raise ShapeError(f"{self._who(hook)}: the gradient returned for input {i} has shape {g.shape}; "
                                 f"the input has shape {shape}")
            checked.append(g)
        return tuple(checked)

    def _who(self, hook) -> str:
        return f"backward hook {getattr(hook, '__name__', hook)!r} of {self.module._label()}"


def _kind(value) -> str:
    if isinstance(value, (tuple, list)):
        return f"a {type(value).__name__} of {len(value)}"
    return type(value).__name__


# -- activation capture ------------------------------------------------------------------------

def _host_copy(value):
    """An output as NumPy data the model will not write over: arrays for tensors (a tuple of
    them for a tuple or list of outputs)."""
    if isinstance(value, (tuple, list)):
        return tuple(_host_copy(v) for v in value)
    if isinstance(value, Tensor):
        value = value.data
    if isinstance(value, (numpy.ndarray, backend.xp.ndarray)):
        return numpy.array(backend.to_numpy(value), copy=True)
    return value


def capture_activations(model: Module, x, layers: Sequence[str] | str | None = None) -> dict[str, Any]:
    """The output of each named sub-module of ``model`` when it runs on ``x``, by its dotted
    name from ``named_modules`` (``'dense'``, ``'block.conv'``): a NumPy array (a tuple of
    them for a layer returning several tensors), copied, in ``named_modules`` order.

    ``layers`` picks the names (default: every sub-module that runs; containers such as a
    nested ``Sequential`` included). The forward runs without recording the graph, in the
    mode the model is in; a module called more than once keeps its last output. It records
    with forward hooks registered after any of the caller's (so it sees their replaced
    outputs), and removes them afterwards, also when the forward raises."""
    named = [(name, module) for name, module in model.named_modules() if name]
    if layers is not None:
        wanted = [layers] if isinstance(layers, str) else list(layers)
        known = {name for name, _ in named}
        unknown = [name for name in wanted if name not in known]
        if unknown:
            raise ValueError(f"capture_activations: no sub-module named {unknown} in {model._label()}; "
                             f"its sub-modules are {[name for name, _ in named]}")
        named = [(name, module) for name, module in named if name in set(wanted)]
    captured: dict[str, Any] = {}

    def recorder(name: str) -> Callable:
        def record(module, inputs, output):
            captured[name] = _host_copy(output)
        return record

    handles = []
    try:
        for name, module in named:
            handles.append(module.register_forward_hook(recorder(name)))
        with no_grad():
            model(x)
    finally:
        for handle in handles:
            handle.remove()
    if layers is not None:
        silent = [name for name, _ in named if name not in captured]
        if silent:
            raise ValueError(f"capture_activations: the sub-modules {silent} of {model._label()} did not run on "
                             f"the input of shape {tuple(getattr(x, 'shape', ()))}")
    return {name: captured[name] for name, _ in named if name in captured}
