"""The position-dependent parts of self-attention in ONNX (:mod:`lamina.export.onnx_attention`),
each built from the runtime length T of the sequence, so that one export takes any length:

    rotary positions   y_j = x_j cos(p theta_j) - x_{j+d/2} sin(p theta_j),
                       y_{j+d/2} = x_j sin(p theta_j) + x_{j+d/2} cos(p theta_j),
                       theta_j = base^(-2j / d), for the step at position p (RoPE, "rotate half");
                       the angles and their cosines and sines in float64, as lamina takes them
    ALiBi              bias[h, i, j] = -m_h |i - j|, added to the scores of head h
    causal mask        query i sees the keys j <= i
    sliding window     query i sees the keys i - w < j <= i

Positions come from Range(0, T) on the value's axis 1; a query's offset i - j from a key is
the (T, T) difference of two broadcast copies of them.
"""

from __future__ import annotations

import numpy as np

from lamina.export.onnx_graph import Graph
from lamina.functional.attention_masks import alibi_slopes

__all__ = ["alibi_bias", "causal_keep", "offsets", "rotary_tables", "rotate", "step_positions"]


def step_positions(graph: Graph, x: str, hint: str) -> str:
    """The int64 positions 0 .. T-1 of the steps of ``x`` (N, T, ...), T read at run time."""
    shape = graph.node("Shape", [x], f"{hint}_shape")
    steps = graph.node("Gather", [shape, graph.scalar(1, f"{hint}_time_axis")], f"{hint}_steps", axis=0)
    zero, one = graph.scalar(0, f"{hint}_zero"), graph.scalar(1, f"{hint}_one")
    return graph.node("Range", [zero, steps, one], f"{hint}_positions")


def offsets(graph: Graph, positions: str, hint: str) -> str:
    """(T, T) int64, offset[i, j] = i - j: how far key j lies behind query i."""
    queries = graph.node("Unsqueeze", [positions, graph.constant([1], f"{hint}_column_axis", np.int64)],
                         f"{hint}_query_positions")
    return graph.node("Sub", [queries, positions], f"{hint}_offsets")


def causal_keep(graph: Graph, offset: str, hint: str, window: int | None = None) -> str:
    """(T, T) booleans: keep[i, j] = 0 <= i - j (< ``window`` when given)."""
    keep = graph.node("GreaterOrEqual", [offset, graph.scalar(0, f"{hint}_zero_offset")], f"{hint}_causal_keep")
    if window is None:
        return keep
    near = graph.node("Less", [offset, graph.scalar(window, f"{hint}_window")], f"{hint}_in_window")
    return graph.node("And", [keep, near], f"{hint}_window_keep")


def alibi_bias(graph: Graph, offset: str, num_heads: int, hint: str) -> str:
    """(h, T, T), bias[h, i, j] = -m_h |i - j|, in the export's float type."""
    distance = graph.node("Cast", [graph.node("Abs", [offset], f"{hint}_distance_steps")], f"{hint}_distance",
                          to=graph.helper.np_dtype_to_tensor_dtype(graph.dtype))
    slopes = -np.asarray(alibi_slopes(num_heads), dtype=np.float64).reshape(-1, 1, 1)
    return graph.node("Mul", [graph.constant(slopes, f"{hint}_slopes"), distance], f"{hint}_alibi")


def rotary_tables(graph: Graph, positions: str, head_dim: int, base: float, hint: str,
                  frequencies=None, attention_factor: float = 1.0) -> tuple[str, str]:
    """(cos, sin), each (T, d): m [cos(p theta), cos(p theta)] and the same for sin, the angles
    p theta_j (T, d/2) and their cosines and sines in float64, then cast to the export's type;
    theta = ``frequencies`` when given (a layer's, scaled perhaps), else base^(-2j / d), and
    m = ``attention_factor`` (YaRN's; 1 leaves the tables unscaled)."""
    theta = (base ** (-np.arange(0, head_dim // 2, dtype=np.float64) * 2.0 / head_dim) if frequencies is None
             else np.asarray(frequencies, dtype=np.float64))
    as_double = graph.node("Cast", [positions], f"{hint}_float_positions", to=graph.onnx.TensorProto.DOUBLE)
    column = graph.node("Unsqueeze", [as_double, graph.constant([1], f"{hint}_angle_axis", np.int64)],
                        f"{hint}_position_column")
    angles = graph.node("Mul", [column, graph.constant(theta[None, :], f"{hint}_theta", np.float64)],
                        f"{hint}_angles")
    float_type = graph.helper.np_dtype_to_tensor_dtype(graph.dtype)
    tables = []
    for op in ("Cos", "Sin"):
        wave = graph.node(op, [angles], f"{hint}_{op.lower()}_double")
        if attention_factor != 1.0:
            wave = graph.node("Mul", [wave, graph.scalar(attention_factor, f"{hint}_{op.lower()}_factor",
                                                         np.float64)], f"{hint}_{op.lower()}_scaled")
        half = graph.node("Cast", [wave], f"{hint}_{op.lower()}_half", to=float_type)
        tables.append(graph.node("Concat", [half, half], f"{hint}_{op.lower()}", axis=-1))
    return tables[0], tables[1]


def rotate(graph: Graph, heads: str, tables: tuple[str, str], head_dim: int, hint: str) -> str:
    """x cos + rotate_half(x) sin for heads (N, h, T, d), rotate_half(x) = [-x_2, x_1] of the
    halves x_1 = x[..., :d/2] and x_2 = x[..., d/2:]."""
    half = head_dim // 2
    axis = graph.constant([-1], f"{hint}_feature_axis", np.int64)
    first = graph.node("Slice", [heads, graph.constant([0], f"{hint}_first_start", np.int64),
                                 graph.constant([half], f"{hint}_first_end", np.int64), axis], f"{hint}_first_half")
    second = graph.node("Slice", [heads, graph.constant([half], f"{hint}_second_start", np.int64),
                                  graph.constant([head_dim], f"{hint}_second_end", np.int64), axis],
                        f"{hint}_second_half")
    turned = graph.node("Concat", [graph.node("Neg", [second], f"{hint}_negated_half"), first],
                        f"{hint}_rotated_half", axis=-1)
    cos, sin = tables
    return graph.node("Add", [graph.node("Mul", [heads, cos], f"{hint}_times_cos"),
                              graph.node("Mul", [turned, sin], f"{hint}_times_sin")], f"{hint}_rotated")
