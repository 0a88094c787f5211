"""ONNX's control flow (:mod:`lamina.export.onnx_import`): If, Loop and Scan, their subgraphs
run with lamina's ops (:class:`lamina.export.onnx_import_graph.Subgraph`). The condition and
trip count are read as plain values; the taken branch, and every iteration, is recorded like
any other op, so gradients flow through them to the outer values and Parameters they read.
"""

from __future__ import annotations

import numpy as np

from lamina import functional as F
from lamina.export.onnx_import_graph import scalar
from lamina.export.onnx_import_values import Node, axis_of, constant, register_onnx_op


@register_onnx_op("If", scoped=True)
def _if(node: Node, scope: dict, cond):
    """The outputs of then_branch when cond is true, else those of else_branch."""
    branch = node.attr("then_branch") if bool(scalar(cond)) else node.attr("else_branch")
    outputs = branch.run(scope, [])
    return tuple(outputs) if len(outputs) > 1 else outputs[0]


@register_onnx_op("Loop", scoped=True)
def _loop(node: Node, scope: dict, trip_count=None, cond=None, *carried):
    """for i in range(M) while cond: (cond, carried..., scans...) = body(i, cond, carried...).
    Outputs: the final carried values, then each scan output stacked over the iterations
    (axis 0). M or cond may be omitted (empty or None): no bound from it."""
    body = node.attr("body")
    limit = None if trip_count is None or trip_count.data.size == 0 else int(scalar(trip_count))
    going = True if cond is None or cond.data.size == 0 else bool(scalar(cond))
    state = list(carried)
    scans: list[list] = [[] for _ in range(len(body.output_names) - 1 - len(state))]
    i = 0
    while going and (limit is None or i < limit):
        step = constant(np.array(i, dtype=np.int64))
        outputs = body.run(scope, [step, constant(np.array(going)), *state])
        going = bool(scalar(outputs[0]))
        state = outputs[1:1 + len(state)]
        for stack, value in zip(scans, outputs[1 + len(state):]):
            stack.append(value)
        i += 1
    stacked = [_stacked(node, parts, 0) for parts in scans]
    results = (*state, *stacked)
    return results if len(results) != 1 else results[0]


@register_onnx_op("Scan", scoped=True)
def _scan(node: Node, scope: dict, *inputs):
    """Run the body once per slice of the scan inputs (along scan_input_axes, backwards where
    scan_input_directions says 1), carrying the states: (states..., outputs...) =
    body(states..., slices...). Outputs: the final states, then each scan output's slices
    stacked along scan_output_axes (in reverse order where scan_output_directions says 1)."""
    body = node.attr("body")
    count = node.attr("num_scan_inputs")
    state, sequences = list(inputs[:len(inputs) - count]), inputs[len(inputs) - count:]
    in_axes = [axis_of(a, x.ndim, node) for a, x in zip(node.attr("scan_input_axes") or [0] * count, sequences)]
    in_back = node.attr("scan_input_directions") or [0] * count
    lengths = {x.shape[a] for x, a in zip(sequences, in_axes)}
    if len(lengths) != 1:
        raise ValueError(f"{node.where()}: the scan inputs have different lengths {sorted(lengths)} along their "
                         f"scan axes {in_axes}")
    length = lengths.pop()
    n_out = len(body.output_names) - len(state)
    scans: list[list] = [[] for _ in range(n_out)]
    for t in range(length):
        slices = [_slice(x, a, length - 1 - t if back else t) for x, a, back in zip(sequences, in_axes, in_back)]
        outputs = body.run(scope, [*state, *slices])
        state = outputs[:len(state)]
        for stack, value in zip(scans, outputs[len(state):]):
            stack.append(value)
    out_axes = node.attr("scan_output_axes") or [0] * n_out
    out_back = node.attr("scan_output_directions") or [0] * n_out
    stacked = []
    for parts, a, back in zip(scans, out_axes, out_back):
        parts = parts[::-1] if back else parts
        stacked.append(_stacked(node, parts, a % (parts[0].ndim + 1) if parts else 0))
    results = (*state, *stacked)
    return results if len(results) != 1 else results[0]


def _slice(x, axis: int, index: int):
    return F.getitem(x, (slice(None),) * axis + (index,))


def _stacked(node: Node, parts: list, axis: int):
    """The per-iteration values stacked along a new ``axis`` (a (0,) float array for none)."""
    if not parts:
        return constant(np.zeros((0,), dtype=np.float32))
    if all(p.dtype.kind != "f" for p in parts):
        return constant(np.stack([np.asarray(p.data) for p in parts], axis=axis))
    return F.stack(parts, axis=axis)
