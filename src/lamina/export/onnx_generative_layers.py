"""ONNX forms of BitNet b1.58's fully connected layer, the Instant-NGP hash-grid encoding, the
Mamba-2 block, the Diffusion Transformer and the Temporal Fusion Transformer's gated residual
network:

    BitLinear          the weights' absmean ternary values W_q = clamp(round(W / beta), -1, 1) beta
                       as a constant of the export; the activations quantized in the graph, per
                       token: gamma = max(ReduceMax(Abs(x)), 1e-5), s = 127 / gamma,
                       x_q = Clip(Round(x s), -128, 127) / s (ONNX's Round halves to even, as
                       NumPy's), after the parameter-free RMSNorm x / sqrt(mean(x^2) + eps)
                       when the layer has one; then x_q W_q (+ b) and the activation
    HashGridEncoding   per level: u = Clip((x - low) / (high - low), 0, 1), p = u N_l,
                       cell = Min(Floor(p), N_l - 1) (Cast to int64), f = p - cell; the 2^d
                       corners' table rows (a mixed-radix index, or the spatial hash
                       XOR_i (c_i pi_i mod T) mod T, equal to the layer's because T is a power
                       of two: BitwiseXor, opset 18); Gather from the table; the corners'
                       weights prod_i (f_i or 1 - f_i) by ReduceProd; the levels joined by Concat
    HashGridMLP        the encoding, then its Dense layers
    Mamba2Block        the whole-sequence call from a zero state: the projections, the causal
                       depthwise convolution (the input padded d_conv - 1 steps on the left, a
                       shifted Slice per tap), and the SSD in its quadratic ("attention") form
                       over the whole sequence, the chunked algorithm with one chunk of T steps:
                       y_t = sum_{s <= t} (C_t . B_s) exp(c_t - c_s) dt_s x_s + D x_t,
                       c = CumSum(dt A) over time, the causal mask computed at run time, so
                       sequences of any length run (O(T^2) work and memory in T); then the
                       gate, the grouped RMSNorm and the output projection
    DiT                the patch Conv, the fixed position table, the conditioning
                       c = time_out(time_in(s(t))) [+ E[y]] with the sinusoidal features s(t)
                       computed in the graph (in float64, then cast), the blocks, the final
                       modulated norm and Dense, and the unpatchify Reshape / Transpose
    DiTBlock           adaLN-Zero: the six modulation vectors from Dense(silu(c)), the
                       parameter-free LayerNormalization, self-attention, the tanh GELU MLP
    GatedResidualNetwork
                       LayerNorm(skip(a) + sigmoid(W_4 eta_1) * (W_5 eta_1)),
                       eta_1 = W_1 ELU(W_2 a + W_3 c + b_2) + b_1

Further graph inputs: a DiT reads 'input' (the images), 'timestep' (float, (batch,)) and, when
class-conditional, 'label' (int64, (batch,); ``num_classes`` is "no class"); a lone DiTBlock
reads 'input' (tokens, any count) and 'condition' (batch, E) (it exports once called: E is
known only then); a gated residual network made with a ``context_size`` reads 'context'
(batch, context_size). The DiT's label dropout belongs to training and has no form; the
variable selection network returns two tensors (the selection and its weights) and has no
converter.

A Mamba-2 block's state (a continued call, ``step``) has no graph input: the export is the call
on whole sequences. A hash-grid layer raises a ValueError on points outside its bounds; a graph
cannot: the export clamps them to the bounds, so check the range before running it. A hashed
level needs opset 18 or later; the export refuses it below.
"""

from __future__ import annotations

import numpy as np

from lamina import models, nn
from lamina.export.onnx_activations import ACTIVATIONS
from lamina.export.onnx_attention_positions import causal_keep, offsets, step_positions
from lamina.export.onnx_graph import Graph, Value, convert, label, register_converter
from lamina.export.onnx_layers import layer_activation
from lamina.models.diffusion_nets import MAX_PERIOD
from lamina.nn.bitlinear import absmean_ternary
from lamina.nn.hash_encoding import HASH_PRIMES

__all__ = ["HASHED_GRID_OPSET"]

HASHED_GRID_OPSET = 18     # BitwiseXor
_Q_MAX = 127.0
_GAMMA_FLOOR = 1e-5


def _reduce(graph: Graph, op: str, x: str, axis: int, hint: str) -> str:
    """``op`` (ReduceMax, ReduceMean, ReduceProd) over one axis, kept: axes an attribute below
    opset 18, an input from it (ReduceSum takes an input from opset 13)."""
    if op == "ReduceSum" or (graph.opset or 17) >= 18:
        return graph.node(op, [x, graph.constant([axis], f"{hint}_axes", np.int64)], hint, keepdims=1)
    return graph.node(op, [x], hint, axes=[axis], keepdims=1)


# -- BitLinear -------------------------------------------------------------------------------------
def _parameter_free_rms_norm(graph: Graph, x: str, eps: float, hint: str) -> str:
    """x * 1 / sqrt(mean(x^2) + eps) over the last axis (lamina's rms_norm, op for op)."""
    mean = _reduce(graph, "ReduceMean", graph.node("Mul", [x, x], f"{hint}_squares"), -1, f"{hint}_mean_square")
    root = graph.node("Sqrt", [graph.node("Add", [mean, graph.constant(eps, f"{hint}_eps")], f"{hint}_shifted")],
                      f"{hint}_root")
    return graph.node("Mul", [x, graph.node("Reciprocal", [root], f"{hint}_inverse_root")], hint)


def _absmax_8bit(graph: Graph, x: str, hint: str) -> str:
    """x quantized per row of the last axis to 8 bits by its absolute maximum, as values."""
    peak = _reduce(graph, "ReduceMax", graph.node("Abs", [x], f"{hint}_abs"), -1, f"{hint}_absmax")
    gamma = graph.node("Max", [peak, graph.constant(_GAMMA_FLOOR, f"{hint}_floor")], f"{hint}_gamma")
    scale = graph.node("Div", [graph.constant(_Q_MAX, f"{hint}_levels"), gamma], f"{hint}_scale")
    rounded = graph.node("Round", [graph.node("Mul", [x, scale], f"{hint}_scaled")], f"{hint}_rounded")
    clipped = graph.node("Clip", [rounded, graph.scalar(-128.0, f"{hint}_low", graph.dtype),
                                  graph.scalar(_Q_MAX, f"{hint}_high", graph.dtype)], f"{hint}_int8")
    return graph.node("Div", [clipped, scale], hint)


@register_converter(nn.BitLinear)
def _bit_linear(graph: Graph, layer, value: Value) -> Value:
    value = graph.layout(value, "nhwc")
    hint = label(layer)
    weight = layer.weight.numpy()
    w_int, beta = absmean_ternary(weight)
    ternary = graph.constant(w_int.astype(weight.dtype) * np.asarray(beta, weight.dtype), f"{hint}_ternary_weight")
    x = _parameter_free_rms_norm(graph, value.name, layer.eps, f"{hint}_norm") if layer.norm else value.name
    x_q = _absmax_8bit(graph, x, f"{hint}_quantized")
    out = graph.node("MatMul", [x_q, ternary], f"{hint}_matmul" if layer.use_bias else hint)
    if layer.use_bias:
        out = graph.node("Add", [out, graph.constant(layer.bias.numpy(), f"{hint}_bias")], hint)
    return layer_activation(graph, layer, Value(out, (*value.shape[:-1], layer.units)))


# -- the hash-grid encoding ------------------------------------------------------------------------
def _corner_offsets(in_dim: int) -> np.ndarray:
    """(2^d, d): corner k's offset along axis i is bit i of k (the layer's corner order)."""
    corners = np.arange(2 ** in_dim)
    return (corners[:, None] >> np.arange(in_dim)[None, :]) & 1


def _corner_rows(graph: Graph, cell: str, bits: np.ndarray, resolution: int, rows: int, hashed: bool,
                 offset: int, hint: str) -> str:
    """The stacked table's rows (..., 2^d) of the corners of each point's cell (..., d)."""
    corners = graph.node("Add", [graph.node("Unsqueeze", [cell, graph.constant([-2], f"{hint}_corner_axis",
                                                                                np.int64)], f"{hint}_cell"),
                                 graph.constant(bits, f"{hint}_bits", np.int64)], f"{hint}_corners")   # (..., 2^d, d)
    in_dim = bits.shape[1]
    if not hashed:
        strides = [(resolution + 1) ** i for i in range(in_dim)]
        weighted = graph.node("Mul", [corners, graph.constant(strides, f"{hint}_strides", np.int64)],
                              f"{hint}_weighted")
        index = graph.node("ReduceSum", [weighted, graph.constant([-1], f"{hint}_sum_axes", np.int64)],
                           f"{hint}_index", keepdims=0)
    else:
        terms = graph.node("Mod", [graph.node("Mul", [corners, graph.constant(HASH_PRIMES[:in_dim], f"{hint}_primes",
                                                                             np.int64)], f"{hint}_products"),
                                   graph.scalar(min(rows, 2 ** 32), f"{hint}_rows")], f"{hint}_terms")
        parts = [graph.node("Gather", [terms, graph.scalar(i, f"{hint}_axis{i}")], f"{hint}_term{i}", axis=-1)
                 for i in range(in_dim)]
        index = parts[0]
        for i, part in enumerate(parts[1:], 1):
            index = graph.node("BitwiseXor", [index, part], f"{hint}_xor{i}")
    return graph.node("Add", [index, graph.scalar(offset, f"{hint}_offset")], f"{hint}_rows") if offset else index


def _corner_weights(graph: Graph, frac: str, bits: np.ndarray, hint: str) -> str:
    """prod_i (f_i on a corner's upper side, else 1 - f_i): (..., 2^d, 1)."""
    f = graph.node("Unsqueeze", [frac, graph.constant([-2], f"{hint}_corner_axis", np.int64)], f"{hint}_fraction")
    upper = graph.constant(bits, f"{hint}_upper")
    lower = graph.constant(1 - bits, f"{hint}_lower")
    below = graph.node("Sub", [graph.constant(1.0, f"{hint}_one"), f], f"{hint}_complement")
    factors = graph.node("Add", [graph.node("Mul", [f, upper], f"{hint}_upper_part"),
                                 graph.node("Mul", [below, lower], f"{hint}_lower_part")], f"{hint}_factors")
    return _reduce(graph, "ReduceProd", factors, -1, hint)


@register_converter(nn.HashGridEncoding)
def _hash_grid_encoding(graph: Graph, layer, value: Value) -> Value:
    if value.shape[-1] != layer.in_dim:
        raise NotImplementedError(f"export_onnx: {layer._label()} reads points (..., {layer.in_dim}); got a value "
                                  f"of shape {value.shape}")
    if any(hashed for _, _, hashed in layer.levels) and (graph.opset or 17) < HASHED_GRID_OPSET:
        raise NotImplementedError(f"export_onnx: {layer._label()} has hashed levels, whose XOR needs opset "
                                  f">= {HASHED_GRID_OPSET} (BitwiseXor); got opset {graph.opset}: pass "
                                  f"opset={HASHED_GRID_OPSET}")
    value = graph.layout(value, "nhwc")
    hint = label(layer)
    low, high = layer.bounds
    shifted = graph.node("Sub", [value.name, graph.constant(low, f"{hint}_low")], f"{hint}_shifted")
    scaled = graph.node("Mul", [shifted, graph.constant(1.0 / (high - low), f"{hint}_inverse_span")],
                        f"{hint}_scaled")
    unit = graph.node("Clip", [scaled, graph.scalar(0.0, f"{hint}_zero", graph.dtype),
                               graph.scalar(1.0, f"{hint}_one", graph.dtype)], f"{hint}_unit")
    table = graph.constant(layer.table.numpy(), f"{hint}_table")
    bits = _corner_offsets(layer.in_dim)
    outputs, offset = [], 0
    for level, (resolution, rows, hashed) in enumerate(layer.levels):
        at = f"{hint}_level{level}"
        position = graph.node("Mul", [unit, graph.constant(float(resolution), f"{at}_resolution")], f"{at}_position")
        cell = graph.node("Min", [graph.node("Floor", [position], f"{at}_floor"),
                                  graph.constant(float(resolution - 1), f"{at}_last_cell")], f"{at}_cell")
        frac = graph.node("Sub", [position, cell], f"{at}_fraction")
        index = graph.node("Cast", [cell], f"{at}_cell_index", to=graph.onnx.TensorProto.INT64)
        corner_rows = _corner_rows(graph, index, bits, resolution, rows, hashed, offset, at)
        features = graph.node("Gather", [table, corner_rows], f"{at}_features", axis=0)     # (..., 2^d, F)
        weighted = graph.node("Mul", [features, _corner_weights(graph, frac, bits, f"{at}_weights")],
                              f"{at}_weighted")
        outputs.append(graph.node("ReduceSum", [weighted, graph.constant([-2], f"{at}_corner_sum", np.int64)], at,
                                  keepdims=0))
        offset += rows
    out = outputs[0] if len(outputs) == 1 else graph.node("Concat", outputs, hint, axis=-1)
    return Value(out, (*value.shape[:-1], layer.out_features))


@register_converter(nn.HashGridMLP)
def _hash_grid_mlp(graph: Graph, layer, value: Value) -> Value:
    value = convert(graph, layer.encoding, value)
    for dense in layer.layers:
        value = convert(graph, dense, value)
    return value


# -- the Mamba-2 block -----------------------------------------------------------------------------
def _ints(graph: Graph, values, hint: str) -> str:
    return graph.constant(list(values), hint, np.int64)


def _slice_last(graph: Graph, x: str, start: int, end: int, hint: str) -> str:
    return graph.node("Slice", [x, _ints(graph, [start], f"{hint}_start"), _ints(graph, [end], f"{hint}_end"),
                                _ints(graph, [-1], f"{hint}_axis")], hint)


def _silu(graph: Graph, x: str, hint: str) -> str:
    return graph.node("Mul", [x, graph.node("Sigmoid", [x], f"{hint}_sigmoid")], hint)


def _reshape(graph: Graph, x: str, shape, hint: str) -> str:
    return graph.node("Reshape", [x, _ints(graph, shape, f"{hint}_shape")], hint)


def _causal_depthwise_conv(graph: Graph, x: str, weight: np.ndarray, bias: np.ndarray, hint: str) -> str:
    """out_t = sum_i x_{t - K + 1 + i} w[:, i] + b over (N, T, C), zeros before the start: the
    input padded K - 1 steps on the left, each tap a shifted Slice of it (as the layer sums them;
    ONNX Runtime has no float64 Conv)."""
    taps = weight.shape[1]
    padded = graph.node("Pad", [x, _ints(graph, [0, taps - 1, 0, 0, 0, 0], f"{hint}_pads")], f"{hint}_padded")
    out = None
    for i in range(taps):
        end = i - (taps - 1) if i < taps - 1 else np.iinfo(np.int64).max
        bounds = [_ints(graph, [i], f"{hint}_start{i}"), _ints(graph, [end], f"{hint}_end{i}")]
        shifted = graph.node("Slice", [padded, *bounds, _ints(graph, [1], f"{hint}_axis{i}")], f"{hint}_shifted{i}")
        term = graph.node("Mul", [shifted, graph.constant(weight[:, i], f"{hint}_tap{i}")], f"{hint}_term{i}")
        out = term if out is None else graph.node("Add", [out, term], f"{hint}_sum{i}")
    return graph.node("Add", [out, graph.constant(bias, f"{hint}_bias")], hint)


def _softplus(graph: Graph, x: str, hint: str) -> str:
    """log(1 + e^x) = max(x, 0) + log(1 + e^-|x|), x itself above 20 (lamina's threshold); from
    elementary ops, which ONNX Runtime runs in float64 too (its Softplus is float32 only)."""
    tail = graph.node("Exp", [graph.node("Neg", [graph.node("Abs", [x], f"{hint}_abs")], f"{hint}_negative")],
                      f"{hint}_tail")
    log_term = graph.node("Log", [graph.node("Add", [tail, graph.constant(1.0, f"{hint}_one")], f"{hint}_shifted")],
                          f"{hint}_log")
    smooth = graph.node("Add", [graph.node("Relu", [x], f"{hint}_positive"), log_term], f"{hint}_smooth")
    large = graph.node("Greater", [x, graph.constant(20.0, f"{hint}_threshold")], f"{hint}_large")
    return graph.node("Where", [large, x, smooth], hint)


def _ssd_quadratic(graph: Graph, layer, xs: str, dt: str, b: str, c: str, hint: str) -> str:
    """y (N, T, H, P) of the SSD from a zero state in one chunk of the whole sequence."""
    heads, per_group = layer.nheads, layer.nheads // layer.ngroups
    decays = graph.node("Mul", [dt, graph.constant(-np.exp(layer.A_log.numpy()), f"{hint}_A")], f"{hint}_decays")
    cums = graph.node("CumSum", [decays, graph.scalar(1, f"{hint}_time_axis")], f"{hint}_cums")
    cums = graph.node("Transpose", [cums], f"{hint}_cums_by_head", perm=[0, 2, 1])            # (N, H, T)
    differences = graph.node("Sub", [graph.node("Unsqueeze", [cums, _ints(graph, [-1], f"{hint}_rows_axis")],
                                                f"{hint}_cums_rows"),
                                     graph.node("Unsqueeze", [cums, _ints(graph, [-2], f"{hint}_cols_axis")],
                                                f"{hint}_cums_cols")], f"{hint}_differences")  # (N, H, T, T)
    keep = causal_keep(graph, offsets(graph, step_positions(graph, xs, hint), hint), hint)
    masked = graph.node("Where", [keep, differences, graph.constant(-np.inf, f"{hint}_masked")], f"{hint}_causal")
    decay = graph.node("Exp", [masked], f"{hint}_decay")
    c_first = graph.node("Transpose", [c], f"{hint}_c_by_group", perm=[0, 2, 1, 3])            # (N, G, T, S)
    b_last = graph.node("Transpose", [b], f"{hint}_b_by_group", perm=[0, 2, 3, 1])             # (N, G, S, T)
    scores = graph.node("MatMul", [c_first, b_last], f"{hint}_scores")                         # (N, G, T, T)
    scores = graph.node("Gather", [scores, _ints(graph, [h // per_group for h in range(heads)], f"{hint}_group_of")],
                        f"{hint}_head_scores", axis=1)                                         # (N, H, T, T)
    weights = graph.node("Mul", [scores, decay], f"{hint}_weights")
    inputs = graph.node("Mul", [xs, graph.node("Unsqueeze", [dt, _ints(graph, [-1], f"{hint}_dt_axis")],
                                               f"{hint}_dt")], f"{hint}_inputs")               # (N, T, H, P)
    mixed = graph.node("MatMul", [weights, graph.node("Transpose", [inputs], f"{hint}_inputs_by_head",
                                                      perm=[0, 2, 1, 3])], f"{hint}_mixed")  # (N, H, T, P)
    return graph.node("Transpose", [mixed], hint, perm=[0, 2, 1, 3])


@register_converter(nn.Mamba2Block)
def _mamba2_block(graph: Graph, layer, value: Value) -> Value:
    if len(value.shape) != 3 or value.shape[-1] != layer.d_model:
        raise NotImplementedError(f"export_onnx: {layer._label()} reads sequences (batch, time, {layer.d_model}); "
                                  f"got a value of shape {value.shape}")
    value = graph.layout(value, "nhwc")
    hint = label(layer)
    inner, groups, states, heads = layer.d_inner, layer.ngroups, layer.d_state, layer.nheads
    projected = graph.node("MatMul", [value.name, graph.constant(layer.in_proj.weight.numpy(), f"{hint}_in_weight")],
                           f"{hint}_in_proj")
    gate = _slice_last(graph, projected, 0, inner, f"{hint}_gate")
    xbc = _slice_last(graph, projected, inner, inner + layer.conv_dim, f"{hint}_xbc")
    dt = _slice_last(graph, projected, inner + layer.conv_dim, inner + layer.conv_dim + heads, f"{hint}_dt_raw")
    xbc = _silu(graph, _causal_depthwise_conv(graph, xbc, layer.conv_weight.numpy(), layer.conv_bias.numpy(),
                                              f"{hint}_conv"), f"{hint}_xbc_silu")
    xs = _reshape(graph, _slice_last(graph, xbc, 0, inner, f"{hint}_x_flat"), [0, 0, heads, layer.headdim],
                  f"{hint}_x")
    b = _reshape(graph, _slice_last(graph, xbc, inner, inner + groups * states, f"{hint}_b_flat"),
                 [0, 0, groups, states], f"{hint}_b")
    c = _reshape(graph, _slice_last(graph, xbc, inner + groups * states, layer.conv_dim, f"{hint}_c_flat"),
                 [0, 0, groups, states], f"{hint}_c")
    dt = _softplus(graph, graph.node("Add", [dt, graph.constant(layer.dt_bias.numpy(), f"{hint}_dt_bias")],
                                     f"{hint}_dt_shifted"), f"{hint}_dt")
    y = _ssd_quadratic(graph, layer, xs, dt, b, c, f"{hint}_ssd")
    y = graph.node("Add", [y, graph.node("Mul", [xs, graph.constant(layer.D.numpy().reshape(heads, 1), f"{hint}_D")],
                                         f"{hint}_skip")], f"{hint}_y")
    y = graph.node("Mul", [_reshape(graph, y, [0, 0, inner], f"{hint}_y_flat"),
                           _silu(graph, gate, f"{hint}_gate_silu")], f"{hint}_gated")
    grouped = _reshape(graph, y, [0, 0, groups, inner // groups], f"{hint}_grouped")
    mean = _reduce(graph, "ReduceMean", graph.node("Mul", [grouped, grouped], f"{hint}_squares"), -1,
                   f"{hint}_mean_square")
    root = graph.node("Sqrt", [graph.node("Add", [mean, graph.constant(layer.eps, f"{hint}_eps")], f"{hint}_shifted")],
                      f"{hint}_root")
    normed = graph.node("Mul", [grouped, graph.node("Reciprocal", [root], f"{hint}_inverse_root")], f"{hint}_normed")
    y = graph.node("Mul", [_reshape(graph, normed, [0, 0, inner], f"{hint}_normed_flat"),
                           graph.constant(layer.norm_weight.numpy(), f"{hint}_norm_weight")], f"{hint}_norm")
    out = graph.node("MatMul", [y, graph.constant(layer.out_proj.weight.numpy(), f"{hint}_out_weight")], hint)
    return Value(out, value.shape)


# -- the Diffusion Transformer ---------------------------------------------------------------------
def _silu_dense(graph: Graph, layer: nn.Dense, c: Value) -> str:
    """layer(silu(c)) on the conditioning (N, E)."""
    return convert(graph, layer, Value(_silu(graph, c.name, f"{label(layer)}_silu"), c.shape)).name


def _modulation_parts(graph: Graph, modulation: str, count: int, dim: int, hint: str) -> list[str]:
    """(N, count dim) -> ``count`` values (N, 1, dim)."""
    return [graph.node("Unsqueeze", [_slice_last(graph, modulation, k * dim, (k + 1) * dim, f"{hint}_part{k}"),
                                     _ints(graph, [1], f"{hint}_token_axis{k}")], f"{hint}_{k}")
            for k in range(count)]


def _modulate(graph: Graph, x: str, shift: str, scale: str, hint: str) -> str:
    """x (1 + scale) + shift."""
    widened = graph.node("Add", [scale, graph.constant(1.0, f"{hint}_one")], f"{hint}_widened")
    return graph.node("Add", [graph.node("Mul", [x, widened], f"{hint}_scaled"), shift], hint)


def _dit_block(graph: Graph, block, tokens: Value, c: Value) -> Value:
    hint = label(block)
    dim = block.dim
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = _modulation_parts(
        graph, _silu_dense(graph, block.modulation, c), 6, dim, f"{hint}_modulation")
    normed = convert(graph, block.norm1, tokens)
    attended = convert(graph, block.attn, graph.like(tokens, _modulate(graph, normed.name, shift_a, scale_a,
                                                                      f"{hint}_attention_input")))
    x = graph.node("Add", [tokens.name, graph.node("Mul", [gate_a, attended.name], f"{hint}_attention_gated")],
                   f"{hint}_after_attention")
    normed = convert(graph, block.norm2, graph.like(tokens, x))
    hidden = convert(graph, block.mlp_in, graph.like(tokens, _modulate(graph, normed.name, shift_m, scale_m,
                                                                      f"{hint}_mlp_input")))
    hidden = ACTIVATIONS["gelu_tanh"](graph, hidden, f"{hint}_gelu")
    out = convert(graph, block.mlp_out, hidden)
    return graph.like(tokens, graph.node("Add", [x, graph.node("Mul", [gate_m, out.name], f"{hint}_mlp_gated")],
                                         hint))


@register_converter(models.DiTBlock)
def _lone_dit_block(graph: Graph, layer, value: Value) -> Value:
    if len(value.shape) != 3 or value.shape[-1] != layer.dim:
        raise NotImplementedError(f"export_onnx: {layer._label()} reads tokens (batch, tokens, {layer.dim}); got a "
                                  f"value of shape {value.shape}")
    width = layer.modulation.weight.shape[0]
    c = Value(graph.add_input("condition", graph.dtype, ["batch", width]), (1, width))
    return _dit_block(graph, layer, graph.layout(value, "nhwc"), c)


def _timestep_features(graph: Graph, steps: str, dim: int, hint: str) -> str:
    """(N, dim): sin(t / 10000^(2i / dim)) in the even columns, cos in the odd ones, i = j // 2,
    computed in float64 as the layer does, then cast to the export's type."""
    pair = np.arange(dim) // 2
    periods = np.power(MAX_PERIOD, 2.0 * pair / dim)
    t = graph.node("Cast", [steps], f"{hint}_steps", to=graph.onnx.TensorProto.DOUBLE)
    angles = graph.node("Div", [graph.node("Unsqueeze", [t, _ints(graph, [1], f"{hint}_axis")], f"{hint}_column"),
                                graph.constant(periods, f"{hint}_periods", np.float64)], f"{hint}_angles")
    even = graph.constant(np.arange(dim) % 2 == 0, f"{hint}_even", np.bool_)
    table = graph.node("Where", [even, graph.node("Sin", [angles], f"{hint}_sin"),
                                 graph.node("Cos", [angles], f"{hint}_cos")], f"{hint}_table")
    return graph.node("Cast", [table], hint, to=graph.helper.np_dtype_to_tensor_dtype(graph.dtype))


@register_converter(models.DiT)
def _dit(graph: Graph, layer, value: Value) -> Value:
    hint = label(layer)
    steps = graph.add_input("timestep", graph.dtype, ["batch"])
    features = _timestep_features(graph, steps, layer.time_dim, f"{hint}_time_features")
    c = convert(graph, layer.time_out, convert(graph, layer.time_in, Value(features, (1, layer.time_dim))))
    if layer.num_classes is not None:
        labels = graph.add_input("label", np.int64, ["batch"])
        table = graph.constant(layer.class_embedding.weight.numpy(), f"{hint}_class_table")
        embedded = graph.node("Gather", [table, labels], f"{hint}_class_embedding", axis=0)
        c = graph.like(c, graph.node("Add", [c.name, embedded], f"{hint}_condition"))
    patches = graph.layout(convert(graph, layer.patch_embed, value), "nhwc")
    tokens = _reshape(graph, patches.name, [0, -1, layer.dim], f"{hint}_tokens")
    rows, cols = (n // layer.patch_size for n in layer.image_size)
    h = Value(graph.node("Add", [tokens, graph.constant(layer.position_table, f"{hint}_positions")],
                         f"{hint}_positioned"), (1, rows * cols, layer.dim))
    for block in layer.blocks:
        h = _dit_block(graph, block, h, c)
    shift, scale = _modulation_parts(graph, _silu_dense(graph, layer.final_modulation, c), 2, layer.dim,
                                     f"{hint}_final_modulation")
    normed = convert(graph, layer.final_norm, h)
    out = convert(graph, layer.final_linear, graph.like(h, _modulate(graph, normed.name, shift, scale,
                                                                    f"{hint}_final_input")))
    p, channels = layer.patch_size, layer.out_channels
    grid = _reshape(graph, out.name, [0, rows, cols, p, p, channels], f"{hint}_patch_grid")
    image = graph.node("Transpose", [grid], f"{hint}_patch_rows", perm=[0, 1, 3, 2, 4, 5])
    height, width = layer.image_size
    return Value(_reshape(graph, image, [0, height, width, channels], hint), (1, height, width, channels))


# -- the Temporal Fusion Transformer's gated residual network --------------------------------------
@register_converter(models.GatedResidualNetwork)
def _gated_residual_network(graph: Graph, layer, value: Value) -> Value:
    if value.shape[-1] != layer.input_size:
        raise NotImplementedError(f"export_onnx: {layer._label()} reads (batch, ..., {layer.input_size}); got a "
                                  f"value of shape {value.shape}")
    value = graph.layout(value, "nhwc")
    hint = label(layer)
    z = convert(graph, layer.input_layer, value)
    if layer.context_size is not None:
        context = Value(graph.add_input("context", graph.dtype, ["batch", layer.context_size]),
                        (1, layer.context_size))
        projected = convert(graph, layer.context_layer, context).name
        if len(value.shape) > 2:
            projected = graph.node("Unsqueeze", [projected, _ints(graph, range(1, len(value.shape) - 1),
                                                                  f"{hint}_time_axes")], f"{hint}_context_along")
        z = graph.like(z, graph.node("Add", [z.name, projected], f"{hint}_with_context"))
    eta_1 = convert(graph, layer.hidden_layer, ACTIVATIONS["elu"](graph, z, f"{hint}_elu"))
    residual = convert(graph, layer.skip, value) if layer.output_size != layer.input_size else value
    glu = layer.glu
    gated = graph.node("Mul", [convert(graph, glu.gate, eta_1).name, convert(graph, glu.value, eta_1).name],
                       f"{hint}_glu")
    return convert(graph, glu.norm, graph.like(residual, graph.node("Add", [residual.name, gated],
                                                                        f"{hint}_gated_skip")))
