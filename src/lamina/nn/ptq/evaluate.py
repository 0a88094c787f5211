"""Measuring a quantized language model: perplexity on token batches, the output error of each
quantized layer, and the round-to-nearest baseline the other methods are measured against."""

from __future__ import annotations

import copy
from collections.abc import Iterable

import numpy

from lamina.autograd import Tensor, no_grad
from lamina.nn.dense import Dense
from lamina.nn.module import Module, evaluation_mode, intercept_calls
from lamina.nn.multi_head_attention import MultiHeadAttention
from lamina.nn.ptq.group_quant import check_bits, rtn_quantize_weight
from lamina.nn.ptq.quant_attention import PROJECTIONS, quantize_projection
from lamina.nn.ptq.quant_dense import QuantDense
from lamina.nn.ptq.sequential import find_blocks, replace_layers

__all__ = ["block_output_errors", "layer_output_errors", "perplexity", "rtn_quantize"]


def rtn_quantize(model: Module, bits: int = 4, group_size: int = 128, sym: bool = False, skip=("lm_head",),
                 attention: bool = True, inplace: bool = False) -> Module:
    """``model`` (a copy unless ``inplace``) with its built Dense layers outside ``skip``
    replaced by round-to-nearest :class:`QuantDense` layers, and with ``attention`` the
    projections of its MultiHeadAttention layers rounded too."""
    who = "rtn_quantize"
    bits = check_bits(bits, who)
    if not isinstance(model, Module):
        raise TypeError(f"{who}: expected a lamina Module, got {type(model).__name__}")
    model = model if inplace else copy.deepcopy(model)
    skip = (skip,) if isinstance(skip, str) else tuple(skip or ())
    kept = [(path, m) for path, m in model.named_modules() if not any(path == n or path.endswith("." + n)
                                                                      for n in skip)]
    chosen = {id(m): QuantDense.from_dense(m, bits, group_size, sym) for _, m in kept if type(m) is Dense}
    attention_layers = [m for _, m in kept if attention and type(m) is MultiHeadAttention and m.built]
    if not chosen and not attention_layers:
        raise ValueError(f"{who}: {model._label()} has no Dense layer to quantize outside skip={skip!r}")
    for layer in attention_layers:
        for name in PROJECTIONS:
            quantize_projection(layer, name, rtn_quantize_weight(layer._parameters[name].data, bits, group_size, sym))
    replace_layers(model, chosen)
    return model


def perplexity(model: Module, batches: Iterable) -> float:
    """exp of the mean negative log-likelihood of each next token: each batch of token ids
    (N, T) is read as inputs ids[:, :-1] and targets ids[:, 1:]."""
    total, count = 0.0, 0
    with evaluation_mode(model), no_grad():
        for ids in batches:
            ids = numpy.asarray(ids)
            if ids.ndim != 2 or ids.shape[1] < 2:
                raise ValueError(f"perplexity: expected token ids of shape (batch, time >= 2), got {ids.shape}")
            logits = model(ids[:, :-1]).data.astype(numpy.float64)
            shifted = logits - logits.max(axis=-1, keepdims=True)
            log_probs = shifted - numpy.log(numpy.exp(shifted).sum(axis=-1, keepdims=True))
            picked = numpy.take_along_axis(log_probs, ids[:, 1:, None], axis=-1)
            total -= float(picked.sum())
            count += picked.size
    if not count:
        raise ValueError("perplexity: no batches given")
    return float(numpy.exp(total / count))


def layer_output_errors(reference: Module, quantized: Module, batches: Iterable) -> dict[str, float]:
    """For each layer of ``quantized`` that replaced a Dense layer of ``reference`` (the same
    path), ||X W - layer(X)|| / ||X W|| over the inputs X it receives while ``quantized`` runs
    on ``batches``. For weights that were only rounded (RTN, GPTQ): after AWQ's or
    SmoothQuant's scalings a layer computes a rescaled function; compare blocks then
    (:func:`block_output_errors`)."""
    originals = dict(reference.named_modules())
    targets = {id(m): path for path, m in quantized.named_modules()
               if type(m) is not Dense and type(originals.get(path)) is Dense}
    sums: dict[str, list[float]] = {}

    def compare(module, inputs, kwargs, forward):
        out = forward()
        path = targets.get(id(module))
        if path is not None:
            x = inputs[0]
            expected = originals[path](x if isinstance(x, Tensor) else Tensor._wrap(x)).data
            totals = sums.setdefault(path, [0.0, 0.0])
            totals[0] += float(numpy.sum((out.data.astype(numpy.float64) - expected) ** 2))
            totals[1] += float(numpy.sum(expected.astype(numpy.float64) ** 2))
        return out

    with evaluation_mode(quantized), evaluation_mode(reference), no_grad(), intercept_calls(compare):
        for batch in batches:
            quantized(*batch) if isinstance(batch, tuple) else quantized(batch)
    return {path: float(numpy.sqrt(err / max(norm, 1e-30))) for path, (err, norm) in sums.items()}


def block_output_errors(reference: Module, quantized: Module, batches: Iterable, blocks=None,
                        reference_blocks=None) -> list[float]:
    """For each block of ``quantized``, ||B(h) - B_q(h)|| / ||B(h)|| over the inputs h it
    receives while ``quantized`` runs on ``batches``, B the same block of ``reference``. The
    scalings of AWQ and SmoothQuant stay inside a block, so this compares every method."""
    who = "block_output_errors"
    ours = find_blocks(quantized, blocks, who)
    theirs = find_blocks(reference, reference_blocks, who)
    if len(ours) != len(theirs):
        raise ValueError(f"{who}: the models have {len(theirs)} and {len(ours)} blocks")
    index = {id(block): i for i, block in enumerate(ours)}
    sums = [[0.0, 0.0] for _ in ours]

    def compare(module, inputs, kwargs, forward):
        out = forward()
        i = index.get(id(module))
        if i is not None:
            expected = theirs[i](*inputs, **kwargs).data.astype(numpy.float64)
            sums[i][0] += float(numpy.sum((out.data - expected) ** 2))
            sums[i][1] += float(numpy.sum(expected ** 2))
        return out

    with evaluation_mode(quantized), evaluation_mode(reference), no_grad(), intercept_calls(compare):
        for batch in batches:
            quantized(*batch) if isinstance(batch, tuple) else quantized(batch)
    return [float(numpy.sqrt(err / max(norm, 1e-30))) for err, norm in sums]
