"""Import an ONNX model as a lamina Module that runs, and fine-tunes, with lamina's ops
(``pip install lamina[onnx]``).

``load_onnx(path)`` reads the graph and returns an :class:`OnnxModule`: the float
initializers become its Parameters (buffers with ``trainable=False``), the integer ones
(shapes, indices) and the running statistics of BatchNormalization its buffers, each named
after its initializer (made a valid attribute name; the original names are kept in
``onnx_names`` and in the model that :meth:`OnnxModule.to_onnx` writes). Calling the module
runs the nodes in topological order with lamina's ops, so gradients reach the Parameters
and the model can be trained like any other.

The graph keeps its layout: an NCHW graph takes NCHW inputs. Convolutions, poolings and
normalizations run lamina's NHWC kernels; the transposes around them are only carried out
where an op needs the other layout (see :mod:`lamina.export.onnx_import_layers`), so the
pairs that cancel (a Transpose node to NCHW before a convolution and back after it, as
lamina's exporter writes) cost nothing. Shape computations (Shape, Gather, Concat on
integers...) run on plain integer arrays. Operators are listed by
:func:`supported_onnx_ops`; :func:`register_onnx_op` adds one. BatchNormalization and
Dropout always take their inference form.
"""

from __future__ import annotations

import os
import re
from collections import OrderedDict

import numpy as np

from lamina import backend, nn
from lamina.autograd import Tensor
from lamina.export import (  # noqa: F401  (operator handlers)
    onnx_import_layers,
    onnx_import_more,
    onnx_import_ops,
    onnx_import_recurrent,
)
from lamina.export.onnx_cost import onnx_macs
from lamina.export.onnx_import_ops import float_cast
from lamina.export.onnx_import_values import (
    Node,
    Permuted,
    constant,
    handler,
    logical,
    register_onnx_op,
    supported_onnx_ops,
)
from lamina.io.atomic import write_bytes_atomic

__all__ = ["OnnxModule", "load_onnx", "register_onnx_op", "supported_onnx_ops"]

_STATISTICS = {"BatchNormalization": (3, 4)}      # input positions that hold running statistics


def _onnx():
    try:
        import onnx
    except ImportError:
        raise ImportError("load_onnx needs the onnx package: pip install 'lamina[onnx]'") from None
    return onnx


def load_onnx(model, trainable: bool = True) -> OnnxModule:
    """An ONNX model (a path or a ``ModelProto``) as an :class:`OnnxModule`.

    ``trainable``: float initializers become Parameters (True) or, like the integer ones,
    buffers (False: a model for inference only, its state dict the same).
    Raises NotImplementedError naming the first node whose operator has no handler.
    """
    onnx = _onnx()
    if isinstance(model, (str, os.PathLike)):
        model = onnx.load(os.fspath(model))
    elif not isinstance(model, onnx.ModelProto):
        raise TypeError(f"load_onnx: expected a path or an onnx.ModelProto, got {type(model).__name__}")
    return OnnxModule(model, trainable=trainable)


class OnnxModule(nn.Module):
    """An ONNX graph run with lamina's ops: ``module(*inputs)`` takes the graph's inputs (those
    that are not initializers) in order and returns its output, or a tuple of them."""

    def __init__(self, model, trainable: bool = True):
        super().__init__(name=model.graph.name or None)
        onnx = _onnx()
        graph = model.graph
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
        initializers = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
        self.proto = onnx.ModelProto()          # the graph without its weights (they live in the module)
        self.proto.CopyFrom(model)
        del self.proto.graph.initializer[:]
        self.nodes = _sorted_nodes(self.proto.graph, set(initializers))
        self.input_names = [i.name for i in graph.input if i.name not in initializers]
        self.input_dtypes = [_elem_dtype(onnx, i) for i in graph.input if i.name not in initializers]
        self.output_names = [o.name for o in graph.output]
        self.onnx_names: OrderedDict[str, str] = OrderedDict()     # attribute -> initializer name
        self._slot: dict[str, str] = {}                            # initializer name -> attribute
        statistics = {n.input[i] for n in self.nodes for i in _STATISTICS.get(n.op_type, ()) if i < len(n.input)}
        for name, value in initializers.items():
            attr = self._fresh_attribute(name)
            self.onnx_names[attr], self._slot[name] = name, attr
            if trainable and value.dtype.kind == "f" and name not in statistics:
                self.add_parameter(attr, value.copy())
            else:
                self.register_buffer(attr, value.copy())
        self._check_operators()
        self._described = [Node(n.op_type, n.name, {a.name: _attribute(onnx, a) for a in n.attribute}, len(n.output),
                                self.opset) for n in self.nodes]
        self._last_use = _last_uses(self.nodes, set(self.output_names))
        self.input_shape = _declared_shapes(graph, set(initializers))
        self.built = True

    def macs(self, input_shapes, output_shapes) -> int:
        """Multiply-accumulates of one sample (:func:`lamina.export.onnx_cost.onnx_macs`), the
        count :mod:`lamina.analysis` shows for the graph."""
        weights = {name: backend.to_numpy(getattr(value, "data", value))
                   for name, value in ((name, getattr(self, slot)) for name, slot in self._slot.items())}
        return onnx_macs(self.proto, weights, [tuple(s) for s in input_shapes])

    def _fresh_attribute(self, name: str) -> str:
        attr = re.sub(r"\W", "_", name) or "initializer"
        if attr[0].isdigit():
            attr = f"w_{attr}"
        base, k = attr, 1
        while attr in self.onnx_names or hasattr(self, attr):
            k += 1
            attr = f"{base}_{k}"
        return attr

    def _check_operators(self) -> None:
        for node in self.nodes:
            if node.domain not in ("", "ai.onnx") or handler(node.op_type) is None:
                kind = node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"
                raise NotImplementedError(
                    f"load_onnx: operator {kind!r} (node {node.name!r}) is not supported; supported: "
                    f"{', '.join(supported_onnx_ops())}; add one with register_onnx_op")

    def forward(self, *inputs):
        if len(inputs) != len(self.input_names):
            raise TypeError(f"{self._label()}: the graph takes {len(self.input_names)} inputs "
                            f"({', '.join(self.input_names)}), got {len(inputs)}")
        values: dict[str, object] = {"": None}
        for name, slot in self._slot.items():
            values[name] = getattr(self, slot) if slot in self._parameters else constant(getattr(self, slot))
        weights = next((values[n].dtype for n in self._slot if values[n].dtype.kind == "f"), None)
        for name, x, dtype in zip(self.input_names, inputs, self.input_dtypes):
            if weights is not None and dtype is not None and dtype.kind == "f":
                dtype = weights                 # the float type the weights have now (after .double())
            values[name] = _as_input(x, dtype)
        transposed: dict[str, Tensor] = {}      # held values carried out, once each
        for step, (proto, node) in enumerate(zip(self.nodes, self._described)):
            self._run(proto, node, values, transposed)
            for name in self._last_use.get(step, ()):
                values.pop(name, None)          # no later node reads it: let its memory go
                transposed.pop(name, None)
        outputs = tuple(logical(values[name]) for name in self.output_names)
        return outputs[0] if len(outputs) == 1 else outputs

    def _run(self, proto, node: Node, values: dict, transposed: dict) -> None:
        run, layout_aware = handler(proto.op_type)
        args = [values[name] for name in proto.input]
        if not layout_aware:
            for i, (name, a) in enumerate(zip(proto.input, args)):
                if isinstance(a, Permuted):
                    if name not in transposed:
                        transposed[name] = a.materialize()
                    args[i] = transposed[name]
        while args and args[-1] is None:
            args.pop()
        result = run(node, *args)
        results = result if isinstance(result, tuple) else (result,)
        for name, value in zip(proto.output, results):
            if name:
                values[name] = value

    def to_onnx(self, path: str | os.PathLike | None = None):
        """The ONNX model with the current weights (after fine-tuning, say) as its
        initializers, under their original names; written atomically to ``path`` if given."""
        onnx = _onnx()
        model = onnx.ModelProto()
        model.CopyFrom(self.proto)
        for name, slot in self._slot.items():
            value = getattr(self, slot)
            value = value.numpy() if isinstance(value, Tensor) else np.asarray(value)
            model.graph.initializer.append(onnx.numpy_helper.from_array(np.ascontiguousarray(value), name))
        if path is not None:
            write_bytes_atomic(path, model.SerializeToString())
        return model

    def extra_repr(self) -> str:
        return f"{len(self.nodes)} nodes, opset {self.opset}, inputs {self.input_names}"


def _last_uses(nodes, kept: set) -> dict[int, list[str]]:
    """For each node's position, the values read there for the last time (not the outputs)."""
    last = {}
    for step, node in enumerate(nodes):
        for name in node.input:
            if name and name not in kept:
                last[name] = step
    found: dict[int, list[str]] = {}
    for name, step in last.items():
        found.setdefault(step, []).append(name)
    return found


def _declared_shapes(graph, initializers: set[str]):
    """The graph's input shapes with the batch axis as None, ``(None, 8, 8, 2)`` (a list of
    them for several inputs), as a built model's ``input_shape``; None when a size past the
    batch axis is not a number."""
    shapes = []
    for value in graph.input:
        if value.name in initializers:
            continue
        dims = value.type.tensor_type.shape.dim
        rest = [d.dim_value if d.HasField("dim_value") else 0 for d in dims[1:]]
        if not dims or min(rest, default=1) < 1:
            return None
        shapes.append((None, *rest))
    if not shapes:
        return None
    return shapes[0] if len(shapes) == 1 else shapes


def _elem_dtype(onnx, value_info):
    elem = value_info.type.tensor_type.elem_type
    return np.dtype(onnx.helper.tensor_dtype_to_np_dtype(elem)) if elem else None


def _as_input(x, dtype) -> Tensor:
    """An input as a tensor of the graph's declared type (a tensor of that type as it is)."""
    if isinstance(x, Tensor):
        if dtype is None or x.dtype == dtype:
            return x
        return float_cast(x, dtype) if x.dtype.kind == dtype.kind == "f" else x.astype(dtype)
    return Tensor._wrap(np.asarray(x, dtype=dtype))


def _attribute(onnx, attribute):
    value = onnx.helper.get_attribute_value(attribute)
    if isinstance(value, bytes):
        return value.decode()
    if isinstance(value, onnx.TensorProto):
        return onnx.numpy_helper.to_array(value)
    if isinstance(value, list) and value and isinstance(value[0], bytes):
        return [v.decode() for v in value]
    return value


def _sorted_nodes(graph, initializers: set) -> list:
    """The nodes in an order where each runs after the nodes making its inputs."""
    known = {i.name for i in graph.input} | initializers | {""}
    pending, ordered = list(graph.node), []
    while pending:
        waiting = []
        for n in pending:
            if all(i in known for i in n.input):
                ordered.append(n)
                known.update(n.output)
            else:
                waiting.append(n)
        if len(waiting) == len(pending):
            missing = sorted({i for n in waiting for i in n.input if i not in known})
            raise ValueError(f"load_onnx: the graph is not well formed: no node makes the values {missing[:8]} "
                             "(or the nodes form a cycle)")
        pending = waiting
    return ordered
