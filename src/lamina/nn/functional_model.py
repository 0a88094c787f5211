"""Keras's functional API: a model as a graph of layer calls.

    inputs = Input((8, 8, 1))
    a = Conv2D(16, 3, padding="same", activation="relu")(inputs)
    b = Add()([a, Conv2D(16, 3, padding="same")(a)])        # a residual connection
    outputs = Dense(10, activation="softmax")(Flatten()(b))
    model = Model(inputs, outputs)

``Input(shape)`` returns a :class:`SymbolicTensor`, a placeholder with a shape whose batch
axis is unknown (None) and no values. Calling a layer on placeholders computes nothing: it
records a :class:`Node` (the layer and the arguments it was given) and returns placeholders
for the layer's outputs. Nothing is recorded globally: each placeholder knows the node that
produced it and each node knows its arguments, so the graph hangs off the outputs.
``Module.__call__`` hands calls on placeholders to :func:`call_symbolic` (once the first
``Input`` has been made), which can also be called directly.

Shape inference for a call: the layer is built (if it is not yet) for the placeholders'
shapes, batch axis None, and its output shape is ``layer.compute_output_shape``. When the
layer does not implement it, or the call has keyword arguments (which may change what the
layer returns, e.g. attention weights), the layer runs once on zeros of batch 1 (any other
unknown size also 1) in evaluation mode without gradients, and the outputs' shapes, batch
axis set back to None, and dtypes are taken from that run. A shape that does not fit
raises :class:`lamina.ShapeError` at the call, naming the layer and the shapes.

``Model(inputs, outputs)`` walks back from the outputs to the inputs and keeps the nodes met
on the way, in the order they were created (an order in which every node comes after the
nodes it reads). Its forward pass calls the layers in that order on real tensors, so the
graph may branch, merge (``Add``, ``Concatenate``), take several inputs and give several
outputs, and a layer called twice shares its weights between the calls. The layers are the
model's sub-modules, registered under their names (an unnamed layer is named as in
``Sequential``: 'dense', 'dense_1', ...), so parameters have dotted names such as
``'dense_1.weight'`` and a shared layer is counted once.

The architecture is JSON (:meth:`Model.get_config`): the inputs' shapes, each layer's config
under its name, the calls in order with their arguments, where a tensor is written as
``{"from_layer": [layer name, call index, output index]}`` or ``{"from_input": i}``, and the
outputs written the same way; other arguments must be JSON values.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Callable

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.nn.layer import default_name, layer_from_config, layer_to_config, register_layer
from lamina.nn.module import _SYMBOLIC_CALL, Module, build_on_first_call, evaluation_mode

__all__ = ["Input", "Model", "Node", "SymbolicTensor", "call_symbolic", "is_symbolic"]

# Creation stamps of nodes: sorting a graph's nodes by them gives a topological order.
_creation_order = itertools.count()


class SymbolicTensor:
    """A placeholder in a graph under construction: a shape (batch axis None) and a dtype,
    no values. ``node`` is the call that produced it (None for an :func:`Input`) and
    ``index`` its position among that call's outputs."""

    # what ``Module.__call__`` looks for to hand a call to :func:`call_symbolic`
    is_symbolic = True

    def __init__(self, shape: tuple, dtype, name: str | None = None, node: Node | None = None, index: int = 0):
        self.shape = tuple(None if n is None else int(n) for n in shape)
        self.dtype = np.dtype(dtype)
        self.name = name
        self.node = node
        self.index = index

    @property
    def ndim(self) -> int:
        return len(self.shape)

    def describe(self) -> str:
        """'Input 'image' of shape (None, 8)' or 'the output of Dense 'dense' (shape (None, 4))'."""
        if self.node is None:
            label = f"Input {self.name!r}" if self.name else "an Input"
            return f"{label} of shape {self.shape}"
        return f"the output of {self.node.layer._label()} (shape {self.shape})"

    def __array__(self, *args, **kwargs):
        raise TypeError(
            f"{self.describe()} is a symbolic placeholder and holds no values: call lamina layers on it "
            "(e.g. nn.ReLU() rather than F.relu) to build a Model, and call the Model on real arrays"
        )

    def __repr__(self) -> str:
        return f"SymbolicTensor(shape={self.shape}, dtype={self.dtype}{f', name={self.name!r}' if self.name else ''})"


class Node:
    """One call of a layer in a graph: the layer, its positional and keyword arguments as
    given (placeholders in place of tensors) and the placeholders of its outputs."""

    def __init__(self, layer: Module, args: tuple, kwargs: dict):
        self.layer = layer
        self.args = args
        self.kwargs = kwargs
        self.outputs: list[SymbolicTensor] = []
        self.returns_sequence = False  # the layer returns a list of tensors (even of one)
        self.order = next(_creation_order)

    def inputs(self) -> list[SymbolicTensor]:
        """The placeholders among the arguments, in order."""
        return _placeholders((self.args, self.kwargs))


def Input(shape, name: str | None = None, dtype="float32") -> SymbolicTensor:
    """A model input: a placeholder for batches of samples of ``shape`` (without the batch
    axis; an int for vectors; None for a size known only at run time)."""
    dims = (shape,) if isinstance(shape, int) else shape
    try:
        dims = tuple(dims)
    except TypeError:
        raise ValueError(f"Input: shape must be a tuple of sizes without the batch axis, got {shape!r}") from None
    if any(n is not None and (isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1) for n in dims):
        raise ValueError(f"Input: shape must hold positive ints (or None), got {shape!r}")
    if name is not None and not isinstance(name, str):
        raise ValueError(f"Input: name must be a string, got {name!r}")
    if not _SYMBOLIC_CALL:                 # from now on, layers called on placeholders record nodes
        _SYMBOLIC_CALL.append(call_symbolic)
    return SymbolicTensor((None, *dims), dtype, name=name)


def is_symbolic(value) -> bool:
    """Whether ``value`` is a placeholder, or a list, tuple or dict holding one."""
    return bool(_placeholders(value))


def _placeholders(value) -> list[SymbolicTensor]:
    if isinstance(value, SymbolicTensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for v in value for t in _placeholders(v)]
    if isinstance(value, dict):
        return [t for v in value.values() for t in _placeholders(v)]
    return []


def _substitute(value, values: dict):
    """``value`` with every placeholder replaced by ``values[id(placeholder)]``."""
    if isinstance(value, SymbolicTensor):
        return values[id(value)]
    if isinstance(value, list):
        return [_substitute(v, values) for v in value]
    if isinstance(value, tuple):
        return tuple(_substitute(v, values) for v in value)
    if isinstance(value, dict):
        return {k: _substitute(v, values) for k, v in value.items()}
    return value


def _is_shape(value) -> bool:
    return isinstance(value, (tuple, list)) and all(n is None or isinstance(n, (int, np.integer)) for n in value)


def _shape_of(x):
    """An argument's shape, a list of shapes for a list of arguments (as ``Module.__call__``
    builds a layer: merge layers get a list of shapes)."""
    if isinstance(x, (list, tuple)):
        return [_shape_of(v) for v in x]
    shape = getattr(x, "shape", None)
    return tuple(shape) if shape is not None else None


# -- calling a layer on placeholders ---------------------------------------------------------
def call_symbolic(layer: Module, *inputs, **kwargs):
    """``layer(*inputs, **kwargs)`` on placeholders: build the layer for their shapes if
    needed, infer its outputs (see the module docstring) and return placeholders for them,
    one or a list as the layer returns one tensor or a list."""
    if not isinstance(layer, Module):
        raise TypeError(f"call_symbolic: only lamina layers (Modules) can be called on Input placeholders; "
                        f"got {type(layer).__name__} {layer!r}")
    shapes = [_shape_of(x) for x in inputs]
    input_shape = shapes[0] if len(shapes) == 1 else shapes
    try:
        if not layer.built:
            build_on_first_call(layer, input_shape)
        specs, returns_sequence = _output_specs(layer, inputs, kwargs, input_shape)
    except ShapeError as exc:
        raise ShapeError(f"{layer._label()} cannot be called on inputs of shape {input_shape}: {exc}") from exc
    node = Node(layer, inputs, kwargs)
    node.outputs = [SymbolicTensor(shape, dtype, node=node, index=i) for i, (shape, dtype) in enumerate(specs)]
    node.returns_sequence = returns_sequence
    return list(node.outputs) if returns_sequence else node.outputs[0]


def _output_specs(layer: Module, inputs: tuple, kwargs: dict, input_shape) -> tuple[list[tuple], bool]:
    """[(shape, dtype)] of the layer's outputs and whether it returns a list of them."""
    if not kwargs:
        try:
            shape = layer.compute_output_shape(input_shape)
        except NotImplementedError:
            pass
        else:
            dtype = backend.get_default_dtype()
            if _is_shape(shape):
                return [(tuple(shape), dtype)], False
            return [(tuple(s), dtype) for s in shape], True
    return _output_specs_by_running(layer, inputs, kwargs)


def _output_specs_by_running(layer: Module, inputs: tuple, kwargs: dict) -> tuple[list[tuple], bool]:
    """The outputs of one run of ``layer`` on zeros of batch 1 in evaluation mode."""
    zeros = {id(t): Tensor(backend.xp.zeros(tuple(1 if n is None else n for n in t.shape), dtype=t.dtype))
             for t in _placeholders((inputs, kwargs))}
    with no_grad(), evaluation_mode(layer):
        out = layer(*_substitute(inputs, zeros), **_substitute(kwargs, zeros))
    outs = list(out) if isinstance(out, (list, tuple)) else [out]
    return [((None, *o.shape[1:]), o.dtype) for o in outs], isinstance(out, (list, tuple))


# -- the model ---------------------------------------------------------------------------------
def _as_placeholders(value, what: str) -> tuple[list[SymbolicTensor], bool]:
    """The placeholders given as ``inputs`` or ``outputs`` and whether a list was given."""
    many = isinstance(value, (list, tuple))
    items = list(value) if many else [value]
    if not items:
        raise ValueError(f"Model: {what} is empty; expected at least one placeholder")
    for k, t in enumerate(items):
        if not isinstance(t, SymbolicTensor):
            raise TypeError(f"Model: {what}[{k}] is a {type(t).__name__}, not a placeholder; build {what} "
                            "from lamina.nn.Input(...) and layer calls")
    return items, many


def _graph_nodes(inputs: list[SymbolicTensor], outputs: list[SymbolicTensor], input_names: list[str]) -> list[Node]:
    """The nodes between ``inputs`` and ``outputs``, in creation (topological) order."""
    given = {id(t) for t in inputs}
    nodes: dict[int, Node] = {}
    for k, output in enumerate(outputs):
        stack, seen = [output], set()
        while stack:
            t = stack.pop()
            if id(t) in given or id(t) in seen:
                continue
            seen.add(id(t))
            if t.node is None:
                raise ValueError(
                    f"Model: output {k} ({output.describe()}) depends on {t.describe()}, which is not among the "
                    f"model's inputs {input_names}; pass it in inputs, or build the output from the given inputs"
                )
            if not isinstance(t.node.layer, Module):
                raise TypeError(f"Model: the graph holds a call of {t.node.layer!r}, which is not a lamina layer "
                                "(a Module)")
            nodes[id(t.node)] = t.node
            stack.extend(t.node.inputs())
    return sorted(nodes.values(), key=lambda node: node.order)


def _free_name(base: str, taken) -> str:
    if base not in taken:
        return base
    i = 1
    while f"{base}_{i}" in taken:
        i += 1
    return f"{base}_{i}"


@register_layer
class Model(Module):
    """A model defined by a graph of layer calls from ``inputs`` to ``outputs`` (one
    placeholder or a list of them; see the module docstring).

    Called like any layer on real tensors or arrays, one per input (as arguments or one
    list), it returns one tensor, or a list when ``outputs`` is a list. ``layers`` lists the
    layers in execution order, :meth:`get_layer` finds one by name, and
    ``Model(model.inputs, model.layer_output("dense"))`` is a feature extractor sharing the
    model's weights.
    """

    def __init__(self, inputs, outputs, name: str | None = None):
        super().__init__(name=name)
        input_list, many_inputs = _as_placeholders(inputs, "inputs")
        output_list, many_outputs = _as_placeholders(outputs, "outputs")
        if len({id(t) for t in input_list}) != len(input_list):
            raise ValueError("Model: the same placeholder is given twice in inputs")
        self.input_names = self._input_names(input_list)
        self._nodes = _graph_nodes(input_list, output_list, self.input_names)
        self.inputs = input_list
        self.outputs = output_list
        self._many_inputs = many_inputs
        self._many_outputs = many_outputs
        self._register({id(node.layer): node.layer for node in self._nodes}.values())
        shapes = [t.shape for t in input_list]
        self.build_input_shape = shapes if many_inputs else shapes[0]
        self.built = True

    @staticmethod
    def _input_names(inputs: list[SymbolicTensor]) -> list[str]:
        explicit = [t.name for t in inputs if t.node is None and t.name]
        duplicated = sorted({n for n in explicit if explicit.count(n) > 1})
        if duplicated:
            raise ValueError(f"Model: two inputs named {duplicated[0]!r}; input names must be unique")
        names: list[str] = []
        for t in inputs:
            names.append(t.name if t.node is None and t.name else _free_name("input", set(explicit) | set(names)))
        return names

    def _register(self, layers) -> None:
        """Add the layers as sub-modules under their names, in order; an unnamed layer is named
        as in Sequential, after the names already given are reserved."""
        named: dict[str, Module] = {}
        for layer in layers:
            if layer.name is not None:
                if str(layer.name) in named:
                    raise ValueError(f"Model: two layers named {layer.name!r} ({named[str(layer.name)]._label()} "
                                     f"and another {type(layer).__name__}); layer names must be unique")
                named[str(layer.name)] = layer
        for layer in layers:
            if layer.name is None:
                layer.name = _free_name(default_name(layer), named)
                named[layer.name] = layer
        for layer in layers:
            self._modules[str(layer.name)] = layer

    # -- the graph ---------------------------------------------------------------------------
    @property
    def layers(self) -> list[Module]:
        """The layers in execution order (a shared layer once, at its first call)."""
        return list(self._modules.values())

    def get_layer(self, name: str) -> Module:
        """The layer named ``name``."""
        if name not in self._modules:
            raise ValueError(f"{self._label()}.get_layer: no layer named {name!r}; layers: {list(self._modules)}")
        return self._modules[name]

    def layer_output(self, name: str, call: int = 0):
        """The placeholder(s) of the outputs of the ``call``-th call of the layer ``name`` in
        this model (one, or a list for a layer returning a list)."""
        layer = self.get_layer(name)
        nodes = [node for node in self._nodes if node.layer is layer]
        if not 0 <= call < len(nodes):
            raise ValueError(f"{self._label()}.layer_output: layer {name!r} is called {len(nodes)} time(s); "
                             f"there is no call {call}")
        node = nodes[call]
        return list(node.outputs) if node.returns_sequence else node.outputs[0]

    @property
    def input_shape(self):
        """The input shape, batch axis None (a list of shapes for a model of several inputs)."""
        shapes = [t.shape for t in self.inputs]
        return shapes if self._many_inputs else shapes[0]

    @property
    def output_shape(self):
        """The output shape, batch axis None (a list of shapes for a list of outputs)."""
        shapes = [t.shape for t in self.outputs]
        return shapes if self._many_outputs else shapes[0]

    # -- running ------------------------------------------------------------------------------
    def forward(self, *inputs):
        values = self._check_inputs(inputs)
        return self._run(values, lambda layer, args, kwargs: layer(*args, **kwargs))

    def _check_inputs(self, inputs: tuple) -> list:
        if len(inputs) == 1 and isinstance(inputs[0], (list, tuple)):
            inputs = tuple(inputs[0])
        if len(inputs) != len(self.inputs):
            raise ValueError(f"{self._label()}: called on {len(inputs)} input(s); expected {len(self.inputs)} "
                             f"({', '.join(self.input_names)})")
        for name, placeholder, x in zip(self.input_names, self.inputs, inputs):
            shape = tuple(getattr(x, "shape", ()))
            if len(shape) != placeholder.ndim or any(
                    want is not None and got != want for got, want in zip(shape, placeholder.shape)):
                raise ShapeError(f"{self._label()}: input {name!r} has shape {shape}; expected {placeholder.shape} "
                                 "(None: any size)")
        return list(inputs)

    @property
    def output_layer(self) -> Module | None:
        """The layer whose call gives the model's one output, when that call took one input
        (None for a model of several outputs or an output taken straight from an input)."""
        node = self._output_node()
        return node.layer if node is not None else None

    def _output_node(self) -> Node | None:
        if self._many_outputs or not self._nodes or not any(t is self.outputs[0] for t in self._nodes[-1].outputs):
            return None
        node = self._nodes[-1]
        return node if len(node.outputs) == 1 and len(node.inputs()) == 1 else None

    def forward_to_output_layer(self, *inputs):
        """The value that :attr:`output_layer` receives: the model run without its last call,
        e.g. the logits of a classifier ending in Softmax (for a fused, stable cross-entropy)."""
        node = self._output_node()
        if node is None:
            raise ValueError(f"{self._label()}.forward_to_output_layer: the model has no single output layer "
                             "called on one input")
        values = self._check_inputs(inputs)
        return self._run(values, lambda layer, args, kwargs: layer(*args, **kwargs), until=node)

    def _run(self, values: list, call: Callable, until: Node | None = None):
        """Evaluate the graph from ``values`` (one per input) with ``call(layer, args, kwargs)``;
        with ``until``, stop before that node and return the value of its one input."""
        computed = {id(t): v for t, v in zip(self.inputs, values)}
        for node in self._nodes:
            if node is until:
                return computed[id(node.inputs()[0])]
            out = call(node.layer, _substitute(node.args, computed), _substitute(node.kwargs, computed))
            outs = list(out) if node.returns_sequence else [out]
            if len(outs) != len(node.outputs):
                raise ValueError(f"{self._label()}: {node.layer._label()} returned {len(outs)} outputs; the graph "
                                 f"was built with {len(node.outputs)}")
            computed.update((id(t), o) for t, o in zip(node.outputs, outs))
        results = [computed[id(t)] for t in self.outputs]
        return results if self._many_outputs else results[0]

    def compute_output_shape(self, input_shape):
        """Output shape(s) by running the graph on placeholders of ``input_shape`` (a list of
        shapes for a model of several inputs)."""
        shapes = input_shape if self._many_inputs or not _is_shape(input_shape) else [input_shape]
        if len(shapes) != len(self.inputs) or not all(_is_shape(s) for s in shapes):
            raise ShapeError(f"{self._label()}: got input shape(s) {input_shape!r}; expected {len(self.inputs)} "
                             f"shape(s) like {self.input_shape}")
        placeholders = [SymbolicTensor(s, t.dtype) for s, t in zip(shapes, self.inputs)]
        outs = self._run(placeholders, lambda layer, args, kwargs: call_symbolic(layer, *args, **kwargs))
        return [t.shape for t in outs] if self._many_outputs else outs.shape

    # -- architecture ---------------------------------------------------------------------------
    def get_config(self) -> dict:
        names = {id(layer): name for name, layer in self._modules.items()}
        calls: dict[int, int] = {}  # id(node) -> its index among its layer's calls
        made: dict[int, int] = {}  # id(layer) -> its calls so far
        for node in self._nodes:
            calls[id(node)] = made.get(id(node.layer), 0)
            made[id(node.layer)] = calls[id(node)] + 1
        input_index = {id(t): k for k, t in enumerate(self.inputs)}

        def encode(value):
            if isinstance(value, SymbolicTensor):
                if id(value) in input_index:
                    return {"from_input": input_index[id(value)]}
                return {"from_layer": [names[id(value.node.layer)], calls[id(value.node)], value.index]}
            if isinstance(value, (list, tuple)):
                return [encode(v) for v in value]
            if isinstance(value, dict):
                return {str(k): encode(v) for k, v in value.items()}
            return value

        nodes = []
        for node in self._nodes:
            entry = {"layer": names[id(node.layer)], "args": encode(node.args), "kwargs": encode(node.kwargs)}
            try:
                json.dumps(entry)
            except TypeError as exc:
                raise ValueError(f"{self._label()}.get_config: the call of {node.layer._label()} has an argument "
                                 f"that is not a tensor or a JSON value ({exc})") from None
            nodes.append(entry)
        inputs = [{"name": name, "shape": list(t.shape[1:]), "dtype": str(t.dtype)}
                  for name, t in zip(self.input_names, self.inputs)]
        outputs = [encode(t) for t in self.outputs]
        return {
            "name": self.name,
            "inputs": inputs if self._many_inputs else inputs[0],
            "layers": [{"name": name, "layer": layer_to_config(layer)} for name, layer in self._modules.items()],
            "nodes": nodes,
            "outputs": outputs if self._many_outputs else outputs[0],
        }

    @classmethod
    def from_config(cls, config: dict) -> Model:
        """Rebuild the graph (fresh weights) by calling the rebuilt layers on new placeholders."""
        layers = {}
        for entry in config["layers"]:
            layer = layer_from_config(entry["layer"])
            layer.name = entry["name"]
            layers[entry["name"]] = layer
        many_inputs = isinstance(config["inputs"], list)
        specs = config["inputs"] if many_inputs else [config["inputs"]]
        inputs = [Input(spec["shape"], name=spec["name"], dtype=spec["dtype"]) for spec in specs]
        produced: dict[str, list[list[SymbolicTensor]]] = {name: [] for name in layers}

        def decode(value):
            if isinstance(value, dict) and set(value) == {"from_input"}:
                return inputs[value["from_input"]]
            if isinstance(value, dict) and set(value) == {"from_layer"}:
                name, call, index = value["from_layer"]
                try:
                    return produced[name][call][index]
                except (KeyError, IndexError):
                    raise ValueError(f"Model.from_config: a call reads output {index} of call {call} of layer "
                                     f"{name!r}, which comes later or does not exist") from None
            if isinstance(value, list):
                return [decode(v) for v in value]
            if isinstance(value, dict):
                return {k: decode(v) for k, v in value.items()}
            return value

        for node in config["nodes"]:
            if node["layer"] not in layers:
                raise ValueError(f"Model.from_config: a call of layer {node['layer']!r}, which is not among the "
                                 f"layers {list(layers)}")
            out = call_symbolic(layers[node["layer"]], *decode(node["args"]), **decode(node["kwargs"]))
            produced[node["layer"]].append(out if isinstance(out, list) else [out])
        outputs = decode(config["outputs"])
        return cls(inputs if many_inputs else inputs[0], outputs, name=config.get("name"))

    def extra_repr(self) -> str:
        return f"inputs={self.input_shape}, outputs={self.output_shape}"
