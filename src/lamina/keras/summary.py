"""Keras's ``model.summary()`` table from lamina's layer trace.

One row per layer of the model (nested layers are inside their parent's row): its name
and type, its output shape with the batch axis as None, and its parameter count as Keras
counts it, every weight, trainable or not (so a batch normalization of C channels counts
4 C: gamma, beta and the two moving statistics). Then the totals: trainable parameters are
the trainable lamina parameters, non-trainable ones the rest of the weights.
"""

from __future__ import annotations

import numpy as np

from lamina.analysis.summary import summary as layer_table
from lamina.nn import Module

__all__ = ["count_weights", "print_summary", "summary_rows"]


def count_weights(layer: Module) -> tuple[int, int]:
    """(all weights, trainable weights) of ``layer``, counted in values."""
    total = int(sum(np.size(v) for v in layer.state_dict().values()))
    trainable = int(sum(p.size for p in layer.parameters(trainable_only=True)))
    return total, trainable


def _shape_text(shape) -> str:
    if shape and isinstance(shape[0], (list, tuple)):
        return ", ".join(_shape_text(s) for s in shape)
    return "(" + ", ".join(["None", *(str(n) for n in shape)]) + ")"


def _wrapper_shape(layer: Module, first_input, last_output):
    """The output shape (without the batch axis) of a layer the trace gives no row of its own:
    its ``compute_output_shape`` of its first sub-layer's input, else its last sub-layer's output."""
    single = first_input and not isinstance(first_input[0], (list, tuple))
    if single and hasattr(layer, "compute_output_shape"):
        try:
            shape = layer.compute_output_shape((None, *first_input))
        except (TypeError, ValueError, NotImplementedError):
            return last_output
        if shape and not isinstance(shape[0], (list, tuple)):
            return tuple(shape[1:])
    return last_output


def summary_rows(model: Module) -> list[tuple[str, str, str, int]]:
    """(name, type, output shape, parameters) of each top-level layer, in call order.

    The layer trace gives no row to a layer that only wraps others (Keras's
    MultiHeadAttention around lamina's, Bidirectional around its two recurrent layers), only
    to its sub-layers (``mha.attention``): such a layer gets its row at its first sub-layer's
    place, its output shape from :func:`_wrapper_shape`."""
    table = layer_table(model)
    own: dict[str, object] = {}          # top-level name -> output shape of its own row (first call)
    first_input: dict[str, object] = {}  # ... input shape of its first sub-layer row
    last_output: dict[str, object] = {}  # ... output shape of its last sub-layer row
    order: dict[str, None] = {}
    for row in table.rows:
        name = row["name"]
        top = name.split(".")[0]
        if top not in model._modules:
            continue
        order.setdefault(top)
        if name == top:
            own.setdefault(top, row["output_shape"])
        else:
            first_input.setdefault(top, row["input_shape"])
            last_output[top] = row["output_shape"]
    rows = []
    for name in order:
        layer = model._modules[name]
        shape = own[name] if name in own else _wrapper_shape(layer, first_input[name], last_output[name])
        rows.append((name, type(layer).__name__, _shape_text(shape), count_weights(layer)[0]))
    return rows


def print_summary(model: Module, print_fn=None) -> None:
    """Print (or hand each line to ``print_fn``) Keras's summary table of ``model``."""
    emit = print if print_fn is None else print_fn
    rows = summary_rows(model)
    header = ("Layer (type)", "Output Shape", "Param #")
    cells = [(f"{name} ({kind})", shape, f"{params:,}") for name, kind, shape, params in rows]
    widths = [max(len(header[i]), *(len(c[i]) for c in cells)) if cells else len(header[i]) for i in range(3)]
    rule = "-" * (sum(widths) + 6)
    emit(f'Model: "{model.name or type(model).__name__.lower()}"')
    emit(rule)
    emit("  ".join(h.ljust(w) for h, w in zip(header, widths)))
    emit(rule.replace("-", "="))
    for cell in cells:
        emit("  ".join(c.ljust(w) for c, w in zip(cell, widths)))
    emit(rule.replace("-", "="))
    total, trainable = count_weights(model)
    emit(f"Total params: {total:,}")
    emit(f"Trainable params: {trainable:,}")
    emit(f"Non-trainable params: {total - trainable:,}")
