"""Export a model to ONNX, for ONNX Runtime, TensorRT, OpenVINO and the other engines that
read it (``pip install lamina[onnx]``).

The exporter walks the model's layers in order and writes each as ONNX nodes, its weights
as initializers: a ``Sequential`` of the built-in layers, with nested ``Sequential``\\ s and
the zoo's blocks (``ConvBN``, ResNet's residual blocks, the Inception modules and other
branching networks joined by ``Add`` or ``Concatenate``), so LeNet, AlexNet, MobileNet,
GoogLeNet, Inception-v3 and the ResNets export; recurrent layers (SimpleRNN, GRU, LSTM,
Bidirectional) become ONNX's RNN operators, and Transformer encoder layers are written out
from MatMul and Softmax. The graph reads and writes what the lamina model does: images NHWC
(batch, h, w, c), any batch size; sequences (batch, time, features) or word ids, any length.
ONNX's convolution, pooling and normalization operators want NCHW, so a value changes layout
only where the next layer needs the other one: a whole convolutional stack costs one
Transpose in and one out.

Layers without a converter raise an error that names them; :func:`register_converter` adds
one: ``fn(graph, layer, value) -> value`` in the style of those in
:mod:`lamina.export.onnx_layers`.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from lamina import nn
from lamina.export import onnx_attention, onnx_branching, onnx_layers, onnx_recurrent, onnx_sequence_layers  # noqa: F401  (converters)
from lamina.export.onnx_graph import Graph, Value, convert, label, register_converter
from lamina.io.atomic import write_bytes_atomic

__all__ = ["export_onnx", "register_converter"]

DEFAULT_OPSET = 17


def export_onnx(model: nn.Module, path: str | os.PathLike, input_shape: tuple | None = None,
                opset: int = DEFAULT_OPSET, dtype=np.float32, check: bool = True) -> Path:
    """Write ``model`` (its evaluation-mode computation) to ``path`` as an ONNX model.

    ``input_shape``: one sample's shape, e.g. (28, 28, 1) (default: the shape the model was
    built for); the batch axis is left free. Inputs are ``dtype`` (float32 by default) and
    weights are stored in it; a model starting with an Embedding takes int64 ids. The graph
    has one input, 'input', and one output, 'output'. ``check`` runs ONNX's model checker
    before writing. The file is written atomically. Returns the path.
    """
    try:
        import onnx
    except ImportError:
        raise ImportError("export_onnx needs the onnx package: pip install 'lamina[onnx]'") from None
    if not isinstance(model, nn.Module):
        raise TypeError(f"export_onnx: expected a lamina model (a Module), got {type(model).__name__}")
    shape = _input_shape(model, input_shape)
    if not model.built:
        model.build(shape)
    first = next((m for m in model.modules() if not isinstance(m, nn.Sequential)), None)
    ids = isinstance(first, nn.Embedding)
    graph = Graph(onnx, dtype)
    value = Value(graph.fresh("input"), shape)
    out = graph.layout(convert(graph, model, value), "nhwc")
    final = graph.node("Identity", [out.name], "output")
    elem = onnx.helper.np_dtype_to_tensor_dtype(np.dtype(np.int64 if ids else dtype))
    out_elem = onnx.helper.np_dtype_to_tensor_dtype(graph.dtype)
    dims = ["batch", *shape[1:]]
    out_dims = ["batch", *out.shape[1:]]
    if _free_length(model):
        dims[1] = "time"
        if len(out.shape) == 3 and out.shape[1] == shape[1]:
            out_dims[1] = "time"
    proto = onnx.helper.make_model(
        onnx.helper.make_graph(graph.nodes, label(model),
                               [onnx.helper.make_tensor_value_info(value.name, elem, dims)],
                               [onnx.helper.make_tensor_value_info(final, out_elem, out_dims)],
                               initializer=graph.initializers),
        opset_imports=[onnx.helper.make_opsetid("", opset)], producer_name="lamina")
    if check:
        onnx.checker.check_model(proto, full_check=True)
    path = Path(path)
    write_bytes_atomic(path, proto.SerializeToString())
    return path


_SEQUENCE_LAYERS = (nn.SimpleRNN, nn.GRU, nn.LSTM, nn.Bidirectional, nn.MultiHeadAttention,
                    nn.TransformerEncoderLayer, nn.PositionalEncoding, nn.PositionEmbedding)
_FIXED_LENGTH_LAYERS = (nn.Flatten, nn.Reshape)


def _free_length(model: nn.Module) -> bool:
    """Whether the input's axis 1 is a sequence's time axis that no node fixes: the model
    holds a sequence layer and nothing that flattens or reshapes across the steps."""
    layers = list(model.modules())
    return (any(isinstance(m, _SEQUENCE_LAYERS) for m in layers)
            and not any(isinstance(m, _FIXED_LENGTH_LAYERS) for m in layers))


def _input_shape(model: nn.Module, input_shape) -> tuple:
    if input_shape is not None:
        shape = tuple(input_shape)
        if not shape or any(not isinstance(n, (int, np.integer)) or n < 1 for n in shape):
            raise ValueError(f"export_onnx: input_shape must be one sample's shape of positive ints, e.g. "
                             f"(28, 28, 1), got {input_shape!r}")
        return (1, *(int(n) for n in shape))
    built = model.build_input_shape if model.built else getattr(model, "input_shape", None)
    if built is None or any(n is None for n in tuple(built)[1:]):
        raise ValueError(f"export_onnx: {model._label()} has no known input shape (got {built}); pass "
                         "input_shape=(h, w, c) or build the model first")
    return (1, *tuple(built)[1:])
