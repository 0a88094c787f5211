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
Dropout always take their inference form. Convolutions and poolings take 1, 2 or 3 spatial
axes (:mod:`lamina.export.onnx_import_volumes`), DFT runs on :mod:`lamina.fft`
(:mod:`lamina.export.onnx_import_spectral`), and If, Loop and Scan run their subgraphs
(:mod:`lamina.export.onnx_import_control`), gradients flowing through the branch taken and
every iteration. ``lamina.save`` stores an OnnxModule (the graph with its weights) and
``lamina.load`` rebuilds it.
"""

from __future__ import annotations

import base64
import os
import re
from collections import OrderedDict

import numpy as np

from lamina import backend, nn
from lamina.autograd import Tensor
from lamina.export import (  # noqa: F401  (operator handlers)
    onnx_import_control,
    onnx_import_layers,
    onnx_import_more,
    onnx_import_ops,
    onnx_import_recurrent,
    onnx_import_spectral,
)
from lamina.export.onnx_cost import onnx_macs
from lamina.export.onnx_import_graph import check_operators, describe, last_uses, run_node, sorted_nodes
from lamina.export.onnx_import_ops import float_cast
from lamina.export.onnx_import_values import constant, logical, register_onnx_op, supported_onnx_ops
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


@nn.register_layer
class OnnxModule(nn.Module):
    """An ONNX graph run with lamina's ops: ``module(*inputs)`` takes the graph's inputs (those
    that are not initializers) in order and returns its output, or a tuple of them.
    ``lamina.save`` stores the graph with the weights and ``lamina.load`` rebuilds it."""

    def __init__(self, model, trainable: bool = True):
        super().__init__(name=model.graph.name or None)
        onnx = _onnx()
        graph = model.graph
        self._float_parameters = trainable      # float initializers as Parameters (else buffers)
        self.opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), 17)
        initializers = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
        self.proto = onnx.ModelProto()          # the graph without its weights (they live in the module)
        self.proto.CopyFrom(model)
        del self.proto.graph.initializer[:]
        known = {i.name for i in graph.input} | set(initializers)
        self.nodes = sorted_nodes(self.proto.graph.node, known)
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
        check_operators(self.nodes)
        self._described = [describe(n, self.opset) for n in self.nodes]
        self._last_use = last_uses(self.nodes, set(self.output_names))
        self.input_shape = _declared_shapes(graph, set(initializers))
        self.built = True

    def get_config(self) -> dict:
        """The graph without its weights (base64 text; the weights travel in the state dict),
        each initializer's name, type and shape, and ``trainable``: what :meth:`from_config`
        rebuilds the module from."""
        initializers = []
        for name, slot in self._slot.items():
            value = getattr(self, slot)
            data = backend.to_numpy(getattr(value, "data", value))
            initializers.append([name, data.dtype.str, list(data.shape)])
        return {"graph": base64.b64encode(self.proto.SerializeToString()).decode("ascii"),
                "initializers": initializers, "trainable": self._float_parameters}

    @classmethod
    def from_config(cls, config: dict) -> OnnxModule:
        """The module of :meth:`get_config`'s graph, its initializers zero until a state dict
        is loaded."""
        onnx = _onnx()
        model = onnx.ModelProto.FromString(base64.b64decode(config["graph"]))
        for name, dtype, shape in config["initializers"]:
            model.graph.initializer.append(onnx.numpy_helper.from_array(np.zeros(shape, dtype=np.dtype(dtype)), name))
        return cls(model, trainable=config.get("trainable", True))

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
            run_node(proto, node, values, transposed)
            for name in self._last_use.get(step, ()):
                values.pop(name, None)          # no later node reads it: let its memory go
                transposed.pop(name, None)
        outputs = tuple(logical(values[name]) for name in self.output_names)
        return outputs[0] if len(outputs) == 1 else outputs

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
