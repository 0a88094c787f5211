"""ONNX forms of the minimal recurrent layers, differential attention, multi-head latent
attention and the Hyena operator, on whole sequences (batch, time, features) of any length:

    MinGRU, MinLSTM            the gates and candidates of every step by one MatMul, then an ONNX
                               Scan over time of h_t = a_t h_{t-1} + b_t from h_0 = 0 (the log
                               mode's positive candidates g(h~) included: the same recurrence)
    DifferentialAttention      two causal softmax maps of the query / key halves, their difference
                               (lambda fixed at export) times V, the heads' RMSNorm, W_O
    MultiHeadLatentAttention   the naive form: per-head keys and values up-projected from the
                               latents, the shared rotary key, causal softmax (no latent cache)
    HyenaOperator              the short filter as a causal depthwise Conv; each long convolution
                               (h ** z)_t = sum_{s <= t} h_{t-s} z_s as a depthwise Conv whose
                               l_max taps are the filter reversed, padded l_max - 1 steps on the
                               left: the filters are constants of the export, and the same kernel
                               is exact for every length up to l_max (no DFT needed)

Rotary positions, causal masks and lengths are computed from the input's runtime length. A
multi-head latent attention layer that is caching latents is refused: the graph holds no cache.
"""

from __future__ import annotations

import numpy as np

from lamina import nn
from lamina.autograd import no_grad
from lamina.export.onnx_attention_positions import causal_keep, offsets, rotary_tables, rotate, step_positions
from lamina.export.onnx_graph import Graph, Value, label, register_converter

__all__: list[str] = []


def _check_sequence(layer, value: Value, features: int) -> None:
    if len(value.shape) != 3 or value.shape[-1] != features:
        raise NotImplementedError(f"export_onnx: {layer._label()} ({type(layer).__name__}) reads sequences (batch, "
                                  f"time, {features}); got a value of shape {value.shape}")


def _int64(graph: Graph, values, hint: str) -> str:
    return graph.constant(list(values), hint, np.int64)


def _matmul(graph: Graph, x: str, weight: np.ndarray, hint: str, bias=None) -> str:
    product = graph.node("MatMul", [x, graph.constant(weight, f"{hint}_weight")],
                         hint if bias is None else f"{hint}_matmul")
    return product if bias is None else graph.node("Add", [product, graph.constant(bias, f"{hint}_bias")], hint)


def _dense(graph: Graph, layer: nn.Dense, x: str, hint: str) -> str:
    return _matmul(graph, x, layer.weight.numpy(), hint, layer.bias.numpy() if layer.use_bias else None)


def _slice(graph: Graph, x: str, start: int, end: int, axis: int, hint: str) -> str:
    return graph.node("Slice", [x, _int64(graph, [start], f"{hint}_start"), _int64(graph, [end], f"{hint}_end"),
                                _int64(graph, [axis], f"{hint}_axis")], hint)


def _split_heads(graph: Graph, x: str, heads: int, features: int, hint: str) -> str:
    """(N, T, heads features) -> (N, heads, T, features)."""
    split = graph.node("Reshape", [x, _int64(graph, [0, 0, heads, features], f"{hint}_split")], f"{hint}_split")
    return graph.node("Transpose", [split], hint, perm=[0, 2, 1, 3])


def _join_heads(graph: Graph, x: str, features: int, hint: str) -> str:
    """(N, heads, T, d) -> (N, T, features)."""
    steps = graph.node("Transpose", [x], f"{hint}_steps_first", perm=[0, 2, 1, 3])
    return graph.node("Reshape", [steps, _int64(graph, [0, 0, features], f"{hint}_join")], hint)


def _rms_norm(graph: Graph, x: str, weight, eps: float, hint: str) -> str:
    """x / sqrt(mean(x^2) + eps) * weight over the last axis."""
    squares = graph.node("Mul", [x, x], f"{hint}_squares")
    mean = graph.node("ReduceMean", [squares], f"{hint}_mean_square", axes=[-1], keepdims=1) \
        if (graph.opset or 17) < 18 else graph.node(
            "ReduceMean", [squares, _int64(graph, [-1], f"{hint}_axes")], f"{hint}_mean_square", keepdims=1)
    root = graph.node("Sqrt", [graph.node("Add", [mean, graph.constant(eps, f"{hint}_eps")], f"{hint}_shifted")],
                      f"{hint}_root")
    normalized = graph.node("Div", [x, root], f"{hint}_normalized")
    if weight is None:
        return normalized
    return graph.node("Mul", [normalized, graph.constant(weight, f"{hint}_weight")], hint)


def _causal_attention(graph: Graph, scores: str, keep: str, values: str, hint: str) -> str:
    masked = graph.node("Where", [keep, scores, graph.constant(-np.inf, f"{hint}_masked")], f"{hint}_causal")
    weights = graph.node("Softmax", [masked], f"{hint}_weights", axis=-1)
    return graph.node("MatMul", [weights, values], hint)


def _transposed(graph: Graph, x: str, hint: str) -> str:
    return graph.node("Transpose", [x], hint, perm=[0, 1, 3, 2])


# -- minGRU and minLSTM ------------------------------------------------------------------------
def _positive(graph: Graph, x: str, hint: str) -> str:
    """g(x) = x + 1/2 for x >= 0, sigmoid(x) below."""
    above = graph.node("Add", [graph.node("Relu", [x], f"{hint}_relu"), graph.constant(0.5, f"{hint}_half")],
                       f"{hint}_above")
    below = graph.node("Sigmoid", [x], f"{hint}_below")
    sign = graph.node("GreaterOrEqual", [x, graph.constant(0.0, f"{hint}_zero")], f"{hint}_nonnegative")
    return graph.node("Where", [sign, above, below], hint)


def _scan(graph: Graph, a: str, b: str, hidden: int, hint: str) -> str:
    """All states h_t = a_t h_{t-1} + b_t (N, T, hidden) from h_0 = 0, by an ONNX Scan over axis 1."""
    helper, elem = graph.helper, graph.helper.np_dtype_to_tensor_dtype(graph.dtype)
    state_in, a_t, b_t = (graph.fresh(f"{hint}_{part}") for part in ("state_in", "a_t", "b_t"))
    decayed, state_out, output = (graph.fresh(f"{hint}_{part}") for part in ("decayed", "state_out", "output_t"))
    body = helper.make_graph(
        [helper.make_node("Mul", [a_t, state_in], [decayed], name=decayed),
         helper.make_node("Add", [decayed, b_t], [state_out], name=state_out),
         helper.make_node("Identity", [state_out], [output], name=output)],
        f"{hint}_step",
        [helper.make_tensor_value_info(name, elem, ["batch", hidden]) for name in (state_in, a_t, b_t)],
        [helper.make_tensor_value_info(name, elem, ["batch", hidden]) for name in (state_out, output)])
    first = graph.node("Gather", [b, graph.scalar(0, f"{hint}_first_step")], f"{hint}_first_b", axis=1)
    zeros = graph.node("ConstantOfShape", [graph.node("Shape", [first], f"{hint}_state_shape")], f"{hint}_h0",
                       value=graph.onnx.numpy_helper.from_array(np.zeros(1, dtype=graph.dtype)))
    out = graph.fresh(hint)
    graph.nodes.append(helper.make_node("Scan", [zeros, a, b], [graph.fresh(f"{hint}_last_state"), out], name=out,
                                        body=body, num_scan_inputs=2, scan_input_axes=[1, 1],
                                        scan_output_axes=[1]))
    return out


@register_converter(nn.MinGRU, nn.MinLSTM)
def _minimal_rnn(graph: Graph, layer, value: Value) -> Value:
    _check_sequence(layer, value, layer.input_size)
    value = graph.layout(value, "nhwc")
    hint, h = label(layer), layer.hidden_size
    mixed = _matmul(graph, value.name, layer.kernel.numpy(), f"{hint}_projections", layer.bias.numpy())
    parts = [_slice(graph, mixed, k * h, (k + 1) * h, 2, f"{hint}_part{k}") for k in range(layer.gate_count + 1)]
    *gates, candidate = parts
    if layer.mode == "log":
        candidate = _positive(graph, candidate, f"{hint}_positive")
    if isinstance(layer, nn.MinLSTM):
        forget, inp = (graph.node("Sigmoid", [g], f"{hint}_{n}") for g, n in zip(gates, ("forget", "input")))
        total = graph.node("Add", [forget, inp], f"{hint}_total")
        a = graph.node("Div", [forget, total], f"{hint}_a")
        keep = graph.node("Div", [inp, total], f"{hint}_input_share")
    else:
        keep = graph.node("Sigmoid", [gates[0]], f"{hint}_update")
        a = graph.node("Sub", [graph.constant(1.0, f"{hint}_one"), keep], f"{hint}_a")
    b = graph.node("Mul", [keep, candidate], f"{hint}_b")
    return Value(_scan(graph, a, b, h, hint), (*value.shape[:2], h))


# -- differential attention --------------------------------------------------------------------
@register_converter(nn.DifferentialAttention)
def _differential_attention(graph: Graph, layer: nn.DifferentialAttention, value: Value) -> Value:
    """``layer(x)`` with the layer's own ``causal``: (map_1 - lambda map_2) V per head, the
    heads' RMSNorm times (1 - lambda_init), then W_O."""
    _check_sequence(layer, value, layer.d_model)
    value = graph.layout(value, "nhwc")
    hint, x = label(layer), value.name
    heads, d = layer.num_heads, layer.head_dim
    positions = step_positions(graph, x, hint)
    tables = rotary_tables(graph, positions, d, layer.rope_theta, f"{hint}_rotary") if layer.rotary else None
    halves = {}
    for name, dense in (("q", layer.q_proj), ("k", layer.k_proj)):
        weight = dense.weight.numpy() * (d ** -0.5 if name == "q" else 1.0)
        both = _split_heads(graph, _matmul(graph, x, weight, f"{hint}_{name}"), 2 * heads, d, f"{hint}_{name}_halves")
        # (N, 2H, T, d): row 2h + i is half i of head h
        both = graph.node("Reshape", [both, _int64(graph, [0, heads, 2, -1, d], f"{hint}_{name}_pairs")],
                          f"{hint}_{name}_pairs")
        for i in (0, 1):
            half = graph.node("Gather", [both, graph.scalar(i, f"{hint}_{name}{i}_index")], f"{hint}_{name}{i}",
                              axis=2)
            halves[f"{name}{i}"] = rotate(graph, half, tables, d, f"{hint}_{name}{i}") if tables else half
    v = _split_heads(graph, _matmul(graph, x, layer.v_proj.weight.numpy(), f"{hint}_v"), heads, 2 * d, f"{hint}_v")
    keep = causal_keep(graph, offsets(graph, positions, hint), hint) if layer.causal else None
    maps = []
    for i in (0, 1):
        scores = graph.node("MatMul", [halves[f"q{i}"], _transposed(graph, halves[f"k{i}"], f"{hint}_k{i}_t")],
                            f"{hint}_scores{i}")
        if keep is None:
            weights = graph.node("Softmax", [scores], f"{hint}_weights{i}", axis=-1)
            maps.append(graph.node("MatMul", [weights, v], f"{hint}_context{i}"))
        else:
            maps.append(_causal_attention(graph, scores, keep, v, f"{hint}_context{i}"))
    with no_grad():
        lam = float(layer.lambda_value().numpy())
    second = graph.node("Mul", [maps[1], graph.constant(lam, f"{hint}_lambda")], f"{hint}_weighted_second")
    difference = graph.node("Sub", [maps[0], second], f"{hint}_difference")
    normed = _rms_norm(graph, difference, layer.norm_weight.numpy() * (1.0 - layer.lambda_init), layer.eps,
                       f"{hint}_head_norm")
    joined = _join_heads(graph, normed, layer.d_model, f"{hint}_joined")
    return graph.like(value, _matmul(graph, joined, layer.out_proj.weight.numpy(), hint))


# -- multi-head latent attention ---------------------------------------------------------------
def _norm_layer(graph: Graph, norm: nn.RMSNorm, x: str, features: int, hint: str) -> str:
    weight = norm.weight.numpy() if norm.elementwise_affine else None
    eps = float(np.finfo(graph.dtype).eps) if norm.eps is None else norm.eps
    return _rms_norm(graph, x, weight, eps, hint)


@register_converter(nn.MultiHeadLatentAttention)
def _latent_attention(graph: Graph, layer: nn.MultiHeadLatentAttention, value: Value) -> Value:
    """``layer(x, causal=True)`` in the naive form (the absorbed form gives the same values)."""
    if layer.caching:
        raise NotImplementedError(f"export_onnx: {layer._label()} (MultiHeadLatentAttention) is caching latents; "
                                  "the graph computes whole sequences without a cache: call stop_caching() first")
    _check_sequence(layer, value, layer.d_model)
    value = graph.layout(value, "nhwc")
    hint, x = label(layer), value.name
    heads, nope, rope, rank = layer.num_heads, layer.qk_nope_head_dim, layer.qk_rope_head_dim, layer.kv_lora_rank
    positions = step_positions(graph, x, hint)
    tables = rotary_tables(graph, positions, rope, layer.rope_theta, f"{hint}_rotary")
    if layer.q_lora_rank is None:
        q = _matmul(graph, x, layer.q_proj.weight.numpy() * layer.scale, f"{hint}_q")
    else:
        q = _dense(graph, layer.q_a_proj, x, f"{hint}_q_a")
        q = _norm_layer(graph, layer.q_a_layernorm, q, layer.q_lora_rank, f"{hint}_q_a_norm")
        q = _matmul(graph, q, layer.q_b_proj.weight.numpy() * layer.scale, f"{hint}_q")
    q = _split_heads(graph, q, heads, nope + rope, f"{hint}_q_heads")
    q_nope = _slice(graph, q, 0, nope, 3, f"{hint}_q_nope")
    q_rope = rotate(graph, _slice(graph, q, nope, nope + rope, 3, f"{hint}_q_rope_plain"), tables, rope,
                    f"{hint}_q_rope")
    compressed = _dense(graph, layer.kv_a_proj_with_mqa, x, f"{hint}_kv_a")
    latent = _norm_layer(graph, layer.kv_a_layernorm, _slice(graph, compressed, 0, rank, 2, f"{hint}_latent_plain"),
                         rank, f"{hint}_latent")
    rope_key = _slice(graph, compressed, rank, rank + rope, 2, f"{hint}_rope_key_plain")
    rope_key = graph.node("Unsqueeze", [rope_key, _int64(graph, [1], f"{hint}_head_axis")], f"{hint}_rope_key_heads")
    rope_key = rotate(graph, rope_key, tables, rope, f"{hint}_rope_key")                      # (N, 1, T, d_R)
    kv = _split_heads(graph, _dense(graph, layer.kv_b_proj, latent, f"{hint}_kv_b"), heads, nope + layer.v_head_dim,
                      f"{hint}_kv_heads")
    k_nope = _slice(graph, kv, 0, nope, 3, f"{hint}_k_nope")
    v = _slice(graph, kv, nope, nope + layer.v_head_dim, 3, f"{hint}_v")
    scores = graph.node("Add", [
        graph.node("MatMul", [q_nope, _transposed(graph, k_nope, f"{hint}_k_nope_t")], f"{hint}_nope_scores"),
        graph.node("MatMul", [q_rope, _transposed(graph, rope_key, f"{hint}_rope_key_t")], f"{hint}_rope_scores")],
        f"{hint}_scores")
    keep = causal_keep(graph, offsets(graph, positions, hint), hint)
    context = _causal_attention(graph, scores, keep, v, f"{hint}_context")
    joined = _join_heads(graph, context, heads * layer.v_head_dim, f"{hint}_joined")
    return graph.like(value, _matmul(graph, joined, layer.o_proj.weight.numpy(), hint))


# -- Hyena -------------------------------------------------------------------------------------
def _depthwise_causal(graph: Graph, x: str, kernel: np.ndarray, bias, hint: str) -> str:
    """y_t = b + sum_j kernel[c, j] x_{t + j - (k - 1)} per channel c of x (N, C, T)."""
    channels, taps = kernel.shape
    inputs = [x, graph.constant(kernel[:, None, :], f"{hint}_weight")]
    if bias is not None:
        inputs.append(graph.constant(bias, f"{hint}_bias"))
    return graph.node("Conv", inputs, hint, kernel_shape=[taps], pads=[taps - 1, 0], group=channels)


@register_converter(nn.HyenaOperator)
def _hyena(graph: Graph, layer: nn.HyenaOperator, value: Value) -> Value:
    _check_sequence(layer, value, layer.d_model)
    value = graph.layout(value, "nhwc")
    hint, d = label(layer), layer.d_model
    projected = _dense(graph, layer.in_proj, value.name, f"{hint}_in")
    channels_first = graph.node("Transpose", [projected], f"{hint}_channels_first", perm=[0, 2, 1])
    mixed = _depthwise_causal(graph, channels_first, layer.short_filter_weight.numpy().T,
                              layer.short_filter_bias.numpy(), f"{hint}_short_conv")       # (N, (order + 1) d, T)
    streams = [_slice(graph, mixed, k * d, (k + 1) * d, 1, f"{hint}_stream{k}") for k in range(layer.order + 1)]
    *gates, z = streams
    with no_grad():
        filters = layer.long_filters(layer.l_max).numpy()                                # (order, l_max, d)
    skips = layer.filter_bias.numpy()
    for n, gate in enumerate(gates):
        long = _depthwise_causal(graph, z, filters[n][::-1].T, None, f"{hint}_long_conv{n}")
        skip = graph.node("Mul", [z, graph.constant(skips[n][:, None], f"{hint}_skip{n}_weight")], f"{hint}_skip{n}")
        z = graph.node("Mul", [gate, graph.node("Add", [long, skip], f"{hint}_filtered{n}")], f"{hint}_z{n + 1}")
    steps_last = graph.node("Transpose", [z], f"{hint}_steps_first", perm=[0, 2, 1])
    return graph.like(value, _dense(graph, layer.out_proj, steps_last, hint))
