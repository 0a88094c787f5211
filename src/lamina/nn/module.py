"""``Module``: the base of every layer and model.

PyTorch's bookkeeping (parameters, buffers and sub-modules registered by assignment,
``state_dict``, ``train()``/``eval()``) with Keras's lazy shapes: a layer creates its
weights in ``build(input_shape)`` on its first call, so ``Dense(120)`` needs no input
size.

Call interception (:func:`lamina.nn.call_interception.intercept_calls`) lets tools watch
every module call (input and output shapes in execution order) without changing any layer;
:mod:`lamina.analysis` uses it for :meth:`Module.summary`.

Hooks (PyTorch's ``register_forward_pre_hook``, ``register_forward_hook``,
``register_full_backward_hook``; see :mod:`lamina.nn.hooks`) ride on the same mechanism: while
any module has a hook, one interceptor sits innermost and runs a hooked module's hooks around
its forward. A program without hooks pays nothing for them. With hooks somewhere, every call
goes through that interceptor, and a ``Sequential`` runs its layers one call each, without
inference fusion, as under any interceptor, so that no hooked layer is skipped.
"""

from __future__ import annotations

import contextlib
import functools
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, NamedTuple

import numpy

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn.call_interception import (  # noqa: F401  (the lists and helpers are read here too)
    _CALL_INTERCEPTORS,
    _HOOKED_MODULES,
    _forget_unhooked_modules,
    _intercepted_call,
    _run_module_hooks,
    _stop_running_hooks,
    intercept_calls,
)
from lamina.nn.hooks import HookHandle, ModuleHooks
from lamina.nn.parameter import Parameter

if TYPE_CHECKING:  # lamina.analysis imports lamina.nn, never the other way at import time
    from lamina.analysis import Summary


@contextlib.contextmanager
def evaluation_mode(model: Module) -> Iterator[Module]:
    """Within the block ``model`` is in evaluation mode; on exit every module below it gets
    back its own mode (a model may mix them, e.g. a frozen batch norm left in eval)."""
    modes = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            object.__setattr__(module, "training", training)


# What a call on symbolic placeholders runs instead of the forward pass: empty until the first
# ``lamina.nn.Input``, so that programs without functional models pay one truth test.
_SYMBOLIC_CALL: list[Callable] = []


# The modules whose lazy build (on their first call) is running: while one is, ``Module.build``
# only marks a module built, for the call that follows builds its children.
_LAZY_BUILDS: list = []


class Module:
    # Whether a sequence may be fed one step at a time, recurrent layers carrying their
    # states, with the outputs of one call on the whole sequence: True for the layers that
    # act on each step alone (Dense, Embedding, activations) and for causal recurrent layers.
    streamable = False

    def __init__(self, name: str | None = None):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_buffers", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)
        object.__setattr__(self, "built", False)
        object.__setattr__(self, "name", name)
        object.__setattr__(self, "build_input_shape", None)

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        if "build" in cls.__dict__:
            cls.build = _keeping_input_shape(cls.__dict__["build"])

    # -- registration --------------------------------------------------------
    def __setattr__(self, key: str, value) -> None:
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        for registry in (self._parameters, self._buffers, self._modules):
            if key in registry and not _same_kind(registry, self, value):
                if registry is self._parameters and value is not None:
                    raise TypeError(f"{self._label()}: cannot assign a {type(value).__name__} as parameter {key!r} "
                                    "(a Parameter or None expected); wrap it, lamina.nn.Parameter(array), write "
                                    f"the values into {key}.data, or delete the parameter first (del module.{key})")
                if registry is self._modules and value is not None:
                    raise TypeError(f"{self._label()}: cannot assign a {type(value).__name__} as sub-module {key!r} "
                                    f"(a Module or None expected); delete the sub-module first (del module.{key})")
                del registry[key]
        if isinstance(value, Parameter):
            self._parameters[key] = value
        elif isinstance(value, Module):
            self._modules[key] = value
        elif key in self._buffers:
            self._buffers[key] = _checked_buffer(self, key, value, "")
        else:
            object.__setattr__(self, key, value)
            return
        self.__dict__.pop(key, None)

    def __getattr__(self, key: str):
        d = self.__dict__
        if "_modules" in d:                  # set last of the three registries
            for registry in (d["_parameters"], d["_buffers"], d["_modules"]):
                if key in registry:
                    return registry[key]
        else:
            for registry in ("_parameters", "_buffers"):
                if registry in d and key in d[registry]:
                    return d[registry][key]
        raise AttributeError(f"{type(self).__name__} has no attribute {key!r}")

    def __delattr__(self, key: str) -> None:
        for registry in (self._parameters, self._buffers, self._modules):
            if key in registry:
                del registry[key]
                return
        object.__delattr__(self, key)

    def __setstate__(self, state: dict) -> None:
        # a copy that kept hooks (see ModuleHooks.__deepcopy__) must have them run
        self.__dict__.update(state)
        if state.get("_module_hooks"):
            _HOOKED_MODULES.add(self)
            if _run_module_hooks not in _CALL_INTERCEPTORS:
                _CALL_INTERCEPTORS.insert(0, _run_module_hooks)

    def register_buffer(self, name: str, array) -> None:
        """A non-trainable array saved in the state dict (running means and the like): an
        array (NumPy's or the backend's, a NumPy scalar included), a Tensor, or None (an empty
        slot, left out of the state dict). It may take the place of a plain attribute or of a
        buffer of that name, not of a parameter or a sub-module."""
        if not isinstance(name, str):
            raise TypeError(f"{self._label()}.register_buffer: the name must be a str, got {type(name).__name__}")
        if not name or "." in name:
            raise KeyError(f"{self._label()}.register_buffer: the name must be non-empty and hold no '.' (a dotted "
                           f"key would read as a path into a sub-module), got {name!r}")
        for registry, kind in ((self._parameters, "parameter"), (self._modules, "sub-module")):
            if name in registry:
                raise KeyError(f"{self._label()}.register_buffer: attribute {name!r} already exists (a {kind}); "
                               f"delete it first (del module.{name}) or choose another name")
        array = _checked_buffer(self, name, array, ".register_buffer")
        self.__dict__.pop(name, None)
        self._buffers[name] = array

    def add_parameter(self, name: str, data, trainable: bool = True) -> Parameter:
        """Create and register a parameter from an array."""
        param = Parameter(data, trainable=trainable, dtype=getattr(data, "dtype", None))
        setattr(self, name, param)
        return param

    # -- running -------------------------------------------------------------
    def build(self, input_shape) -> None:
        """Create the weights for inputs of ``input_shape`` (batch axis included).

        A model of one input that only holds other modules (no ``build`` of its own) builds
        them when this is called explicitly, as Keras's ``Model.build`` does: it runs once on
        zeros of that shape (a sample of one where the batch axis is None; integer zeros for a
        model that reads ids), without the graph and in evaluation mode, so that no running
        statistic moves. For several inputs (whose kinds a shape cannot tell), where an axis
        beyond the batch is None, and in the lazy build of a first call, it only marks the
        module built, and its children build on their first calls. Once every child is built the
        shape is kept as ``build_input_shape`` (a model file records it), unless one is kept already."""
        if not _LAZY_BUILDS and type(self).build is Module.build and any(not m.built for m in self.children()):
            self._build_by_running(input_shape)
        self.built = True
        if all(m.built for m in self.children()):
            _keep_input_shape(self, input_shape)

    def _build_by_running(self, input_shape) -> None:
        from lamina.nn.layer import reads_ids  # layer.py builds on this module

        shape = input_shape
        if isinstance(shape, list) and shape and isinstance(shape[0], (list, tuple)):
            return                                   # several inputs
        if not isinstance(shape, (list, tuple)) or not all(n is None or isinstance(n, int) for n in shape):
            raise ShapeError(f"{self._label()}.build: expected an input shape (a tuple of ints, None for the batch "
                             f"axis) or a list of them, got {input_shape!r}")
        if not shape or any(n is None for n in shape[1:]):
            return
        dtype = "int64" if reads_ids(self) else backend.get_default_dtype()
        zeros = Tensor(backend.xp.zeros([1 if n is None else n for n in shape], dtype=dtype))
        with no_grad(), evaluation_mode(self):
            self(zeros)
        object.__setattr__(self, "build_input_shape", input_shape)    # as asked, not the sample's batch of one

    def forward(self, *inputs):
        raise NotImplementedError(f"{type(self).__name__}.forward is not implemented")

    def __call__(self, *inputs, **kwargs):
        """Build on the first call, then run ``forward``. A built module called with tensors
        while no interceptor is installed (no hooks, summary, profiler or tracing) goes straight
        to ``forward`` after three truth tests."""
        if _SYMBOLIC_CALL and (_holds_placeholder(inputs) or _holds_placeholder(kwargs.values())):
            return _SYMBOLIC_CALL[0](self, *inputs, **kwargs)  # building a functional Model
        if not self.built:
            shapes = [_shape_of(x) for x in inputs]
            build_on_first_call(self, shapes[0] if len(shapes) == 1 else shapes)
        if _CALL_INTERCEPTORS:
            interceptors = tuple(_CALL_INTERCEPTORS)
            return _intercepted_call(self, inputs, kwargs, interceptors, len(interceptors) - 1)
        if kwargs:
            return self.forward(*inputs, **kwargs)
        return self.forward(*inputs)

    # -- hooks ---------------------------------------------------------------
    def register_forward_pre_hook(self, hook: Callable) -> HookHandle:
        """Call ``hook(module, inputs)`` before each forward, ``inputs`` the tuple of positional
        inputs; a value returned replaces them (a tuple, or one value taken as a tuple of one).
        The lazy build on the first call sees the inputs as given. Returns a handle whose
        ``remove()`` unregisters the hook."""
        return self._add_hook("forward_pre", hook, "register_forward_pre_hook")

    def register_forward_hook(self, hook: Callable) -> HookHandle:
        """Call ``hook(module, inputs, output)`` after each forward (``inputs`` as the forward
        received them); a value returned replaces the output. Returns a handle whose
        ``remove()`` unregisters the hook."""
        return self._add_hook("forward", hook, "register_forward_hook")

    def register_full_backward_hook(self, hook: Callable) -> HookHandle:
        """Call ``hook(module, grad_input, grad_output)`` when backward has computed the
        gradients dJ/dx of the tensors x this module was called with. Both are tuples of
        arrays: one per positional input, one per output (a tensor, or a tuple or list of
        them), None where a value is not a tensor, needs no gradient or was not reached. A
        tuple returned replaces ``grad_input``, and so every gradient below the module.

        It fires once per call of the module and per backward sweep (twice for a module
        called twice), for calls made with the graph recorded; only tensors passed directly
        as positional inputs count (not those inside a list, as a merge layer takes them).
        A call with no input requiring grad fires it once the outputs' gradients are known,
        with ``grad_input`` all None (it must return None then). The hooks of a call are the
        ones registered when it ran. Returns a handle whose ``remove()`` unregisters the hook."""
        return self._add_hook("backward", hook, "register_full_backward_hook")

    def _add_hook(self, kind: str, hook: Callable, who: str) -> HookHandle:
        hooks = self.__dict__.get("_module_hooks")
        if hooks is None:
            hooks = ModuleHooks()
            object.__setattr__(self, "_module_hooks", hooks)
        handle = hooks.add(kind, hook, f"{self._label()}.{who}", _forget_unhooked_modules)
        _HOOKED_MODULES.add(self)
        if _run_module_hooks not in _CALL_INTERCEPTORS:
            _CALL_INTERCEPTORS.insert(0, _run_module_hooks)
        return handle

    def compute_output_shape(self, input_shape):
        """Output shape for an input shape, by shape inference alone (no weights needed)."""
        raise NotImplementedError(f"{type(self).__name__} does not infer its output shape")

    # -- architecture ----------------------------------------------------------
    def get_config(self) -> dict:
        """The constructor arguments as a JSON-serialisable dict (``cls(**config)`` rebuilds
        the layer without its weights); see :func:`lamina.nn.layer_from_config`."""
        raise NotImplementedError(f"{type(self).__name__} does not describe its configuration")

    @classmethod
    def from_config(cls, config: dict) -> Module:
        """The inverse of :meth:`get_config`."""
        return cls(**config)

    # -- traversal -----------------------------------------------------------
    def children(self) -> Iterator[Module]:
        for _, child in self.named_children():
            yield child

    def named_modules(self, prefix: str = "", remove_duplicate: bool = True) -> Iterator[tuple[str, Module]]:
        """Self (named ``prefix``) and every module below it by dotted path, depth first. A
        module reachable by several paths (one layer stored under two names) comes once,
        under its first path, unless ``remove_duplicate`` is False."""
        return self._modules_reached(prefix, set() if remove_duplicate else None)

    def _modules_reached(self, prefix: str, seen: set | None) -> Iterator[tuple[str, Module]]:
        if seen is not None:
            if id(self) in seen:
                return
            seen.add(id(self))
        yield prefix, self
        for key, child in self._modules.items():
            yield from child._modules_reached(f"{prefix}.{key}" if prefix else key, seen)

    def modules(self) -> Iterator[Module]:
        for _, module in self.named_modules():
            yield module

    def apply(self, fn: Callable[[Module], object]) -> Module:
        """Call ``fn(module)`` on every sub-module, children before their parent, then on
        self (to initialise weights, say), once per module however many paths reach it;
        returns self."""
        self._apply_each_once(fn, set())
        return self

    def _apply_each_once(self, fn: Callable[[Module], object], seen: set) -> None:
        seen.add(id(self))
        for child in self._modules.values():
            if id(child) not in seen:
                child._apply_each_once(fn, seen)
        fn(self)

    def named_parameters(self, prefix: str = "", trainable_only: bool = False) -> Iterator[tuple[str, Parameter]]:
        seen: set[int] = set()
        for path, module in self.named_modules(prefix):
            for key, param in module._parameters.items():
                if id(param) in seen or (trainable_only and not param.trainable):
                    continue
                seen.add(id(param))
                yield (f"{path}.{key}" if path else key), param

    def parameters(self, trainable_only: bool = False) -> list[Parameter]:
        return [p for _, p in self.named_parameters(trainable_only=trainable_only)]

    def named_buffers(self, prefix: str = "") -> Iterator[tuple[str, object]]:
        for path, module in self.named_modules(prefix):
            for key, buf in module._buffers.items():
                yield (f"{path}.{key}" if path else key), buf

    def num_parameters(self, trainable_only: bool = False) -> int:
        return sum(p.size for p in self.parameters(trainable_only=trainable_only))

    def named_children(self) -> Iterator[tuple[str, Module]]:
        """The direct sub-modules by name; one stored under two names comes once, under the first."""
        seen: set[int] = set()
        for key, child in self._modules.items():
            if id(child) not in seen:
                seen.add(id(child))
                yield key, child

    def get_submodule(self, target: str) -> Module:
        """The sub-module at dotted path ``target`` ('' is self), as named by ``named_modules``."""
        module = self
        for i, key in enumerate(target.split(".") if target else []):
            if key not in module._modules:
                where = ".".join(target.split(".")[:i]) or "the model"
                raise AttributeError(f"{self._label()}: {where} has no sub-module {key!r} (path {target!r}); "
                                     f"its children are {list(module._modules)}")
            module = module._modules[key]
        return module

    def to(self, dtype) -> Module:
        """Every floating parameter, gradient and buffer cast to ``dtype`` in place (the
        parameters stay the same objects, so references to them remain valid; an optimizer's
        state is not converted: create optimizers after the cast). The model must be built.
        Inputs keep their own dtype: give a float64 model float64 tensors
        (``lamina.tensor(x, dtype=numpy.float64)``; a plain array becomes the default dtype)."""
        dtype = numpy.dtype(dtype)
        if dtype.kind != "f":
            raise ValueError(f"{self._label()}.to: expected a floating dtype, got {dtype}")
        if not self.built and not any(m.built for m in self.modules()):
            raise ValueError(f"{self._label()}.to({dtype}): the model has no weights yet; call it once or "
                             "build(input_shape) first, or build it after lamina.set_default_dtype")
        for module in self.modules():
            for p in module._parameters.values():
                if p.data.dtype.kind == "f":
                    p.data = p.data.astype(dtype, copy=False)
                    p.grad = None if p.grad is None else p.grad.astype(dtype, copy=False)
            for key, buf in module._buffers.items():
                if getattr(buf, "dtype", None) is not None and buf.dtype.kind == "f":
                    module._buffers[key] = buf.astype(dtype, copy=False)
        return self

    def double(self) -> Module:
        """``to(float64)``: for gradient checks of a whole model."""
        return self.to(numpy.float64)

    def float(self) -> Module:
        """``to(float32)``."""
        return self.to(numpy.float32)

    def requires_grad_(self, requires_grad: bool = True) -> Module:
        """Unfreeze (True) or freeze (False) every parameter, as PyTorch's method."""
        return self.unfreeze() if requires_grad else self.freeze()

    # -- modes ---------------------------------------------------------------
    def train(self, mode: bool = True) -> Module:
        """Training mode: dropout drops, batch norm uses batch statistics."""
        for module in self.modules():
            object.__setattr__(module, "training", mode)
        return self

    def eval(self) -> Module:
        """Evaluation mode: dropout is the identity, batch norm uses running statistics."""
        return self.train(False)

    def freeze(self) -> Module:
        """Stop learning every parameter below (transfer learning)."""
        for p in self.parameters():
            p.freeze()
        return self

    def unfreeze(self) -> Module:
        for p in self.parameters():
            p.unfreeze()
        return self

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Forget every parameter's gradient: None, or with ``set_to_none=False`` the existing
        gradients filled with zeros in place (as PyTorch's method)."""
        for p in self.parameters():
            if set_to_none:
                p.grad = None
            elif p.grad is not None:
                p.grad.fill(0)

    # -- state ---------------------------------------------------------------
    def state_dict(self) -> OrderedDict:
        """Every parameter, then every buffer, by dotted name, as arrays (no copies). A module or
        parameter reachable by several paths (a layer stored twice, tied weights) is under each
        path, as in PyTorch, so that the state loads back into the same architecture."""
        slots = self._state_slots()
        return OrderedDict((name, value) for name, (_, _, value) in slots.items())

    def load_state_dict(self, state: dict, strict: bool = True) -> IncompatibleKeys:
        """Copy arrays into the parameters and buffers, checking names and shapes first.
        Returns the model's names the state lacks and the state's names the model lacks
        (``missing_keys``, ``unexpected_keys``), which ``strict`` refuses. Buffers whose length
        only the data fixes (a per-channel observer that has seen nothing) first take the
        state's (see :meth:`_fit_to_state`); a refused state leaves them as they were."""
        replaced = [slot for path, module in self.named_modules()
                    for slot in module._fit_to_state(f"{path}." if path else "", state)]
        try:
            return self._load_checked(state, strict)
        except Exception:
            for owner, attr, old in replaced:
                owner._buffers[attr] = old
            raise

    def _fit_to_state(self, prefix: str, state: dict) -> list:
        """Give this module's buffers that have no size of their own yet the size of the arrays
        ``state`` holds for them (keys ``prefix`` + name) before a load; returns (module, name,
        old buffer) for each buffer replaced. Nothing here: modules with such buffers override it."""
        return []

    def _load_checked(self, state: dict, strict: bool) -> IncompatibleKeys:
        own = self._state_slots()
        if not own and state and not self.built:
            raise RuntimeError(
                f"{self._label()}.load_state_dict: the module has no weights yet; build it first "
                "(call it on an input or call build(input_shape))"
            )
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        if strict and (missing or unexpected):
            raise KeyError(
                f"{self._label()}.load_state_dict: missing keys {missing}, unexpected keys {unexpected}"
            )
        for key, (_, _, current) in own.items():
            if key not in state:
                continue
            value = backend.xp.asarray(state[key])
            if tuple(value.shape) != tuple(current.shape):
                raise ShapeError(
                    f"{self._label()}.load_state_dict: {key!r} has shape {tuple(value.shape)} in the "
                    f"state dict but {tuple(current.shape)} in the model"
                )
        for key, (owner, attr, current) in own.items():
            if key not in state:
                continue
            value = backend.xp.asarray(state[key], dtype=current.dtype)
            if attr in owner._parameters:
                owner._parameters[attr].data = value.copy()
            else:
                owner._buffers[attr] = value.copy()
        return IncompatibleKeys(missing, unexpected)

    def _state_slots(self) -> dict:
        """Dotted name -> (owning module, attribute, array) for every parameter, then every
        buffer that is not None, along every path (a shared module or tied parameter is under
        each of its names)."""
        modules = list(self.named_modules(remove_duplicate=False))
        slots = {}
        for path, module in modules:
            for attr, p in module._parameters.items():
                slots[f"{path}.{attr}" if path else attr] = (module, attr, p.data)
        for path, module in modules:
            for attr, buf in module._buffers.items():
                if buf is not None:
                    slots[f"{path}.{attr}" if path else attr] = (module, attr, buf)
        return slots

    # -- description ---------------------------------------------------------
    def summary(self, input_shape: tuple[int, ...] | None = None, batch_size: int = 1,
                optimizer: str = "adam") -> Summary:
        """The layer table of :func:`lamina.analysis.summary`: per layer the output volume,
        parameters, MACs and activation memory, with the totals and a training-memory
        estimate at ``batch_size``. ``input_shape`` excludes the batch axis (default: the
        shape the model was built for). Computed by shape inference: an unbuilt model is
        summarised without allocating its weights and is left unbuilt."""
        from lamina.analysis import summary

        return summary(self, input_shape, batch_size=batch_size, optimizer=optimizer)

    def _label(self) -> str:
        return f"{type(self).__name__}{f' {self.name!r}' if self.name else ''}"

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for key, child in self._modules.items():
            child_repr = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({key}): {child_repr}")
        return "\n".join(lines) + ("\n)" if len(lines) > 1 else ")")


class IncompatibleKeys(NamedTuple):
    """What :meth:`Module.load_state_dict` returns (PyTorch's named tuple): the model's names
    the state lacked and the state's names the model does not have."""

    missing_keys: list[str]
    unexpected_keys: list[str]


def _checked_buffer(module: Module, name: str, value, who: str):
    """``value`` if a buffer may hold it (an array, a NumPy scalar, a Tensor or None), else a TypeError."""
    if value is None or isinstance(value, (numpy.ndarray, numpy.generic, backend.xp.ndarray, Tensor)):
        return value
    raise TypeError(f"{module._label()}{who}: buffer {name!r} must be an array, a Tensor or None, "
                    f"got {type(value).__name__} {value!r:.60}")


def _same_kind(registry, module, value) -> bool:
    if registry is module._parameters:
        return isinstance(value, Parameter)
    if registry is module._modules:
        return isinstance(value, Module)
    return not isinstance(value, (Parameter, Module))


def _holds_placeholder(values) -> bool:
    """Whether a symbolic ``Input`` placeholder (:mod:`lamina.nn.functional_model`) is among
    ``values`` or in a list or tuple among them."""
    return any(getattr(v, "is_symbolic", False) is True or (isinstance(v, (list, tuple)) and _holds_placeholder(v))
               for v in values)


def build_on_first_call(module: Module, input_shape) -> None:
    """The lazy build before a module's first call on inputs of ``input_shape``: ``build``,
    which only creates the module's own weights (its children build on their own calls)."""
    _LAZY_BUILDS.append(module)
    try:
        module.build(input_shape)
    finally:
        _LAZY_BUILDS.pop()
    module.built = True
    object.__setattr__(module, "build_input_shape", input_shape)


def _keep_input_shape(module: Module, input_shape) -> None:
    """After an explicit ``build(input_shape)``: keep the shape, as the lazy build of a first call
    does (that one, running for ``module``, keeps the shape it saw itself), where none is kept yet."""
    if input_shape is not None and module.__dict__.get("build_input_shape") is None \
            and not any(m is module for m in _LAZY_BUILDS):
        object.__setattr__(module, "build_input_shape", input_shape)


def _keeping_input_shape(build: Callable) -> Callable:
    """A subclass's ``build`` that also keeps the input shape it was given (:func:`_keep_input_shape`)."""
    @functools.wraps(build)
    def build_and_keep(self, *args, **kwargs):
        result = build(self, *args, **kwargs)
        _keep_input_shape(self, args[0] if args else kwargs.get("input_shape"))
        return result

    return build_and_keep


def _shape_of(x):
    """An input's shape; a list or tuple of inputs (merge layers) gives a list of shapes."""
    if isinstance(x, (list, tuple)):
        return [_shape_of(v) for v in x]
    shape = getattr(x, "shape", None)
    return tuple(shape) if shape is not None else None


def read_parameter(module: Module, name: str):
    """``getattr(module, name)`` for a hot path: a registered parameter is read from the
    registry, skipping the ordinary lookup that fails (raising an exception inside the
    interpreter) before :meth:`Module.__getattr__`; anything else (a parametrized weight, a
    buffer) is read as the attribute."""
    found = module.__dict__["_parameters"].get(name)
    return getattr(module, name) if found is None else found


def as_tensor(x) -> Tensor:
    """Wrap an array as a constant tensor (layers accept arrays or tensors)."""
    return x if isinstance(x, Tensor) else Tensor(x)
