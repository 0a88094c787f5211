"""ONNX forms of the recurrent layers (course notes, Recurrent Neural Networks): SimpleRNN,
GRU and LSTM as ONNX's RNN, GRU and LSTM operators, and Bidirectional as one operator run
in both directions.

ONNX's operators read sequences time first, (T, N, D), so a Transpose goes in and one comes
out where the whole sequence is returned; no node depends on N or T. Direction k of an
operator holds

* ``W[k]`` (G H, D) and ``R[k]`` (G H, H): lamina's ``kernel`` W_ax and
  ``recurrent_kernel`` W_aa transposed, gate blocks in ONNX's order;
* ``B[k]`` (2 G H,): ``bias`` then ``recurrent_bias``, in the same order.

lamina keeps PyTorch's gate order (GRU r, z, n; LSTM i, f, g, o); ONNX's is GRU z, r, h and
LSTM i, o, f, c, so the blocks are reordered. lamina's GRU applies the reset gate to the
recurrent product, n = tanh(x W_xn + b_n + r * (a^<t-1> W_hn + b'_n)): ONNX's
``linear_before_reset=1``.

A layer reading backwards (``go_backwards``) is ONNX's 'reverse' direction, whose outputs
Y[t] sit at the step they were read from; lamina returns them in reading order, so the
sequence is flipped back. ``stateful=True`` and ``return_state=True`` have no ONNX form
here (states carried between calls; several outputs) and raise NotImplementedError.
"""

from __future__ import annotations

import numpy as np

from lamina import nn
from lamina.export.onnx_graph import Graph, Value, label, register_converter

__all__: list[str] = []

# ONNX's gate block k is lamina's block _GATE_ORDER[cls][k]
_GATE_ORDER = {nn.SimpleRNN: (0,), nn.GRU: (1, 0, 2), nn.LSTM: (0, 3, 1, 2)}
_OPERATOR = {nn.SimpleRNN: "RNN", nn.GRU: "GRU", nn.LSTM: "LSTM"}
_SIMPLE_ACTIVATION = {"tanh": "Tanh", "relu": "Relu"}
_INT64_MIN = np.iinfo(np.int64).min


def _check_exportable(layer, owner=None) -> None:
    """Raise NotImplementedError for the options without an ONNX form."""
    who = (owner or layer)._label()
    if layer.stateful:
        raise NotImplementedError(f"export_onnx: {who} has stateful=True (states carried from call to call), "
                                  "which has no ONNX form; export a copy built with stateful=False")
    if layer.return_state:
        raise NotImplementedError(f"export_onnx: {who} has return_state=True, which gives several outputs; "
                                  "the exported graph has one: build the layer with return_state=False")


def _gate_blocks(matrix: np.ndarray, units: int, order: tuple[int, ...]) -> np.ndarray:
    """lamina's gate columns (..., G H) taken in ONNX's block ``order``."""
    return np.concatenate([matrix[..., k * units:(k + 1) * units] for k in order], axis=-1)


def _direction_weights(layer) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """(W, R, B) of one ONNX direction from ``layer``: (G H, D), (G H, H), (2 G H,) or None."""
    order, h = _GATE_ORDER[type(layer)], layer.units
    w = _gate_blocks(layer.kernel.numpy(), h, order).T
    r = _gate_blocks(layer.recurrent_kernel.numpy(), h, order).T
    if not layer.use_bias:
        return w, r, None
    b = np.concatenate([_gate_blocks(layer.bias.numpy(), h, order), _gate_blocks(layer.recurrent_bias.numpy(), h,
                                                                                   order)])
    return w, r, b


def _recurrence(graph: Graph, layers: list, x: str, direction: str, hint: str, sequence: bool) -> str:
    """One ONNX RNN/GRU/LSTM node over ``x`` (T, N, D), direction k from ``layers[k]``.
    Returns Y (T, K, N, H) if ``sequence``, else the final states Y_h (K, N, H)."""
    first = layers[0]
    weights = [_direction_weights(layer) for layer in layers]
    inputs = [x, graph.constant(np.stack([w for w, _, _ in weights]), f"{hint}_W"),
              graph.constant(np.stack([r for _, r, _ in weights]), f"{hint}_R")]
    if first.use_bias:
        inputs.append(graph.constant(np.stack([b for _, _, b in weights]), f"{hint}_B"))
    attributes = {"hidden_size": first.units, "direction": direction}
    if isinstance(first, nn.GRU):
        attributes["linear_before_reset"] = 1
    elif isinstance(first, nn.SimpleRNN):
        attributes["activations"] = [_SIMPLE_ACTIVATION[layer.activation] for layer in layers]
    out = graph.fresh(f"{hint}_Y" if sequence else f"{hint}_Y_h")
    outputs = [out] if sequence else ["", out]
    graph.nodes.append(graph.helper.make_node(_OPERATOR[type(first)], inputs, outputs, name=out, **attributes))
    return out


def _pick(graph: Graph, name: str, index: int, axis: int, hint: str) -> str:
    """Entry ``index`` of ``axis``, the axis dropped (one direction of Y or Y_h)."""
    return graph.node("Gather", [name, graph.scalar(index, f"{hint}_index")], hint, axis=axis)


def _reverse_time(graph: Graph, name: str, hint: str) -> str:
    """A (T, ...) sequence in the opposite order, for any T."""
    bounds = [graph.constant([value], f"{hint}_{what}", np.int64)
              for what, value in (("starts", -1), ("ends", _INT64_MIN), ("axes", 0), ("steps", -1))]
    return graph.node("Slice", [name, *bounds], hint)


def _time_first(graph: Graph, value: Value, hint: str) -> str:
    if len(value.shape) != 3:
        raise NotImplementedError(f"export_onnx: {hint} expects a sequence (batch, time, features), got a value "
                                  f"of shape {value.shape}")
    return graph.node("Transpose", [value.name], f"{hint}_time_first", perm=[1, 0, 2])


def _batch_first(graph: Graph, name: str, hint: str) -> str:
    return graph.node("Transpose", [name], hint, perm=[1, 0, 2])


@register_converter(nn.SimpleRNN, nn.GRU, nn.LSTM)
def _recurrent(graph: Graph, layer, value: Value) -> Value:
    """a^<T> (N, H), or every a^<t> (N, T, H) in reading order with ``return_sequences``."""
    _check_exportable(layer)
    hint = label(layer)
    x = _time_first(graph, value, hint)
    direction = "reverse" if layer.go_backwards else "forward"
    n, steps = value.shape[:2]
    out = _recurrence(graph, [layer], x, direction, hint, layer.return_sequences)
    if not layer.return_sequences:
        return Value(_pick(graph, out, 0, 0, f"{hint}_state"), (n, layer.units))
    sequence = _pick(graph, out, 0, 1, f"{hint}_sequence")
    if layer.go_backwards:
        sequence = _reverse_time(graph, sequence, f"{hint}_reading_order")
    return Value(_batch_first(graph, sequence, hint), (n, steps, layer.units))


def _merge(graph: Graph, mode: str, a: str, b: str, hint: str) -> str:
    """Bidirectional's merge of the two directions' outputs."""
    if mode == "concat":
        return graph.node("Concat", [a, b], hint, axis=-1)
    if mode == "sum":
        return graph.node("Add", [a, b], hint)
    if mode == "ave":
        total = graph.node("Add", [a, b], f"{hint}_sum")
        return graph.node("Mul", [total, graph.constant(0.5, f"{hint}_half")], hint)
    return graph.node("Mul", [a, b], hint)


@register_converter(nn.Bidirectional)
def _bidirectional(graph: Graph, layer, value: Value) -> Value:
    """Both directions as one ONNX node: direction 0 the layer reading forwards, 1 the one
    reading backwards. lamina's backward output, put back in time order, is ONNX's Y[:, 1]
    as it is; with a wrapped ``go_backwards`` layer the roles swap and the merged sequence
    comes in reversed time order."""
    fwd, bwd = layer.forward_layer, layer.backward_layer
    for sub in (fwd, bwd):
        _check_exportable(sub, owner=layer)
    if layer.merge_mode is None:
        raise NotImplementedError(f"export_onnx: {layer._label()} has merge_mode=None, which gives two outputs; "
                                  "the exported graph has one: use 'concat', 'sum', 'ave' or 'mul'")
    hint = label(layer)
    x = _time_first(graph, value, hint)
    swapped = fwd.go_backwards
    readers = [bwd, fwd] if swapped else [fwd, bwd]
    sequence = fwd.return_sequences
    out = _recurrence(graph, readers, x, "bidirectional", hint, sequence)
    axis = 1 if sequence else 0
    first = _pick(graph, out, int(swapped), axis, f"{hint}_forward")
    second = _pick(graph, out, 1 - int(swapped), axis, f"{hint}_backward")
    merged = _merge(graph, layer.merge_mode, first, second, f"{hint}_{layer.merge_mode}")
    units = fwd.units * (2 if layer.merge_mode == "concat" else 1)
    n, steps = value.shape[:2]
    if not sequence:
        return Value(merged, (n, units))
    if swapped:
        merged = _reverse_time(graph, merged, f"{hint}_reading_order")
    return Value(_batch_first(graph, merged, hint), (n, steps, units))
