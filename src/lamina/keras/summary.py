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


def summary_rows(model: Module) -> list[tuple[str, str, str, int]]:
    """(name, type, output shape, parameters) of each top-level layer, in call order."""
    table = layer_table(model)
    rows, seen = [], set()
    for row in table.rows:
        name = row["name"]
        if "." in name or name in seen or name not in model._modules:
            continue
        seen.add(name)
        layer = model._modules[name]
        rows.append((name, type(layer).__name__, _shape_text(row["output_shape"]), count_weights(layer)[0]))
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
