"""AWQ (Lin et al., "AWQ: activation-aware weight quantization for LLM compression and
acceleration", 2023): protect the weights of the input channels that carry large activations
by scaling them up before rounding, the inverse scale moved onto the inputs.

For linears sharing an input X (n, n_in) (:class:`~lamina.nn.ptq.scaling.ScaleGroup`), with
a = mean_t |x_tj| the mean magnitude of input channel j:

    s(alpha) = a^alpha / sqrt(max a^alpha min a^alpha),     alpha in {0, 1/n_grid, ..., (n_grid - 1)/n_grid}
    alpha* = argmin || f(X) - f_alpha(X) ||^2,     f_alpha: f with each W replaced by Q(diag(s) W) diag(s)^-1

f being the computation checked (the linear, a Llama MLP whole, the attention layer whole for
W_q, W_k, W_v), Q round-to-nearest in groups. The best s is folded into the op before the
linears (a norm, a Dense without activation, the value projection for W_o) or else divides
their inputs (``input_scale``, Dense layers only); alpha = 0 is round-to-nearest.
With ``clip``, each group's weights of each output unit are then clipped to the range
[-m, m], m = (1 - i / n_grid) max |w|, i < n_grid / 2, that best keeps that group's share of
the outputs, x_g w_g, on the calibration inputs.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy

from lamina.nn.dense import Dense
from lamina.nn.module import Module
from lamina.nn.ptq.group_quant import (
    check_bits,
    check_group_size,
    group_params,
    quantize_to_grid,
    rtn_quantize_weight,
)
from lamina.nn.ptq.quant_attention import quantize_projection
from lamina.nn.ptq.quant_dense import QuantDense
from lamina.nn.ptq.scaling import ScaleGroup, fold_scales, scale_groups, set_site_weight, site_weight
from lamina.nn.ptq.sequential import (
    block_sites,
    capture_block_inputs,
    capture_layer_inputs,
    find_blocks,
    replace_layers,
    run_block,
)

__all__ = ["awq_clip_weight", "awq_quantize", "awq_search_scales"]


def _fake_quantized(weight: numpy.ndarray, s: numpy.ndarray, bits: int, group_size: int, sym: bool):
    """Q(diag(s) W) diag(s)^-1 in the weight's dtype."""
    scaled = weight.astype(numpy.float64) * s[:, None]
    return (rtn_quantize_weight(scaled, bits, group_size, sym).dequantize(numpy.float64) / s[:, None]).astype(
        weight.dtype)


def _with_kwargs(inputs: list) -> list[tuple]:
    return [item if isinstance(item, tuple) else (item, {}) for item in inputs]


def awq_search_scales(group: ScaleGroup, inputs: list, bits: int = 4, group_size: int = 128, sym: bool = False,
                      n_grid: int = 20) -> tuple[numpy.ndarray, list[float]]:
    """The scales s (n_in,) that minimise the group's quantized output error on ``inputs``
    (arrays (..., n_in), or (array, keyword arguments of ``group.inspect``) pairs), and the mean
    squared error at each alpha of the grid."""
    who = "awq_search_scales"
    if not inputs:
        raise ValueError(f"{who}: no calibration inputs for {group.name}")
    calls = _with_kwargs(inputs)
    n_in = calls[0][0].shape[-1]
    check_group_size(group_size, n_in, who)
    rows = numpy.concatenate([numpy.asarray(x, dtype=numpy.float64).reshape(-1, n_in) for x, _ in calls])
    mean_magnitude = numpy.abs(rows).mean(axis=0)
    references = [group.output(x, kwargs) for x, kwargs in calls]
    originals = [site_weight(site) for site in group.linears]
    errors, best, best_error = [], None, numpy.inf
    try:
        for k in range(n_grid):
            s = numpy.maximum(mean_magnitude ** (k / n_grid), 1e-4)
            s = s / numpy.sqrt(s.max() * s.min())
            for site, weight in zip(group.linears, originals):
                set_site_weight(site, _fake_quantized(weight, s, bits, group_size, sym))
            error = float(numpy.mean([numpy.mean((group.output(x, kwargs).astype(numpy.float64) - ref) ** 2)
                                      for (x, kwargs), ref in zip(calls, references)]))
            errors.append(error)
            if error < best_error:
                best, best_error = s, error
    finally:
        for site, weight in zip(group.linears, originals):
            set_site_weight(site, weight)
    return best, errors


def awq_clip_weight(weight, inputs: numpy.ndarray, bits: int = 4, group_size: int = 128, sym: bool = False,
                    n_grid: int = 20, max_shrink: float = 0.5) -> numpy.ndarray:
    """``weight`` (n_in, units) with each group of each unit clipped to [-m, m], m the one of
    (1 - i / n_grid) max |w|, i < max_shrink n_grid, whose round-to-nearest keeps x_g w_g best
    on ``inputs`` (n, n_in)."""
    w = numpy.asarray(weight, dtype=numpy.float64)
    n_in, units = w.shape
    size = check_group_size(group_size, n_in, "awq_clip_weight")
    x = numpy.asarray(inputs, dtype=numpy.float64).reshape(-1, n_in)
    clipped = w.copy()
    for start in range(0, n_in, size):
        xg, wg = x[:, start:start + size], w[start:start + size]
        reference = xg @ wg
        top = numpy.abs(wg).max(axis=0)
        best_error = numpy.full(units, numpy.inf)
        for i in range(int(max_shrink * n_grid)):
            limit = top * (1 - i / n_grid)
            candidate = numpy.clip(wg, -limit, limit)
            scale, zero = group_params(candidate, bits, sym, axis=0)
            dequantized = scale * (quantize_to_grid(candidate, scale, zero, bits) - zero)
            error = numpy.mean((xg @ dequantized - reference) ** 2, axis=0)
            better = error < best_error
            best_error = numpy.where(better, error, best_error)
            clipped[start:start + size, better] = candidate[:, better]
    return clipped.astype(numpy.asarray(weight).dtype)


def awq_quantize(model: Module, calibration_batches: Iterable, bits: int = 4, group_size: int = 128,
                 sym: bool = False, n_grid: int = 20, clip: bool = True, blocks=None, skip=("lm_head",),
                 attention: bool = True, inplace: bool = False) -> Module:
    """``model`` with the Dense layers of its blocks replaced by :class:`QuantDense` layers
    (and with ``attention`` the projections of its self-attention layers quantized) after
    AWQ's scaling and clipping: block after block, each group's scales searched on the inputs
    the block (its float weights, its earlier groups already scaled) computes from the
    quantized earlier blocks' outputs, then the block's weights rounded to nearest. An
    attention projection without an op to fold its scales into is clipped only. Arguments as
    :func:`lamina.nn.ptq.gptq_quantize`; a copy unless ``inplace``."""
    who = "awq_quantize"
    bits = check_bits(bits, who)
    model = model if inplace else copy.deepcopy(model)
    blocks = find_blocks(model, blocks, who)
    states = capture_block_inputs(model, blocks, calibration_batches, who)
    for block in blocks:
        sites = [layer if name is None else (layer, name)
                 for _, layer, name in block_sites(block, states[0], skip, who, attention)]
        for site in sites:
            check_group_size(group_size, site_weight(site).shape[0], f"{who} ({_label(site)})")
        input_scales: dict[int, numpy.ndarray] = {}
        for group in scale_groups(block, sites):
            first = group.linears[0]
            layer, name = (first, None) if isinstance(first, Dense) else first
            calls = list(capture_layer_inputs(block, layer, states, name, with_kwargs=True))
            n_in = calls[0][0].shape[-1]
            s = numpy.ones(n_in)
            if group.scalable:
                s, _ = awq_search_scales(group, calls, bits, group_size, sym, n_grid)
                fold_scales(group, s)
                if group.previous is None:
                    input_scales.update((id(site), s) for site in group.linears)
            if clip:
                rows = numpy.concatenate([x.reshape(-1, n_in) for x, _ in calls]) / s
                for site in group.linears:
                    set_site_weight(site, awq_clip_weight(site_weight(site), rows, bits, group_size, sym, n_grid))
        replacements = {}
        for site in sites:
            if isinstance(site, Dense):
                replacements[id(site)] = QuantDense.from_dense(site, bits, group_size, sym,
                                                               input_scale=input_scales.get(id(site)))
            else:
                quantize_projection(site[0], site[1], rtn_quantize_weight(site_weight(site), bits, group_size, sym))
        replace_layers(block, replacements)
        states = run_block(block, states)
    return model


def _label(site) -> str:
    return site._label() if isinstance(site, Dense) else f"{site[0]._label()}.{site[1]}"
