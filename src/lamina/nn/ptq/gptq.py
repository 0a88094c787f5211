"""GPTQ (Frantar et al., "GPTQ: accurate post-training quantization for generative pre-trained
transformers", 2022): quantize a linear layer's weight one input row at a time, spreading
each row's rounding error over the rows not yet quantized so as to keep the layer's outputs
on calibration inputs X (n_samples, n_in):

    minimise ||X W - X Q||^2,    H = 2 X^T X / n_samples    (the Hessian of that error in W)

In the paper's Algorithm 1 (rows here are the paper's columns: lamina stores W as (n_in, units)),
with U the upper Cholesky factor of H^-1 (H^-1 = U^T U) after dampening H += percdamp mean(diag H) I:

    for i in 0 .. n_in - 1:
        q_i = quant(w_i),   e_i = (w_i - q_i) / U_ii
        w_j -= U_ij e_i     for the rows j > i not yet quantized

done lazily in blocks of ``block_size`` rows: inside a block the update reaches the block's
rows at once, the rest of the weight once per block (E U[block, rest]). With groups, the scale
and zero point of a group are fixed when its first row comes up, from the rows of the group as
the weight then stands (the updates of earlier blocks applied, those of the current block not
yet, as the reference code does). ``act_order`` quantizes the rows by decreasing diag(H) (the
largest inputs first), recording in ``g_idx`` the group each row fell in. Inputs that are never
non-zero (diag H = 0) get weight 0 and H_ii = 1. The quantizer is AutoGPTQ's min/max one
(:mod:`lamina.nn.ptq.group_quant`).

:func:`gptq_quantize` runs it on a model block after block: the inputs of the first block are
caught from the calibration batches, each weight of a block (Dense layers, and the query/key/
value and output projections of self-attention layers) is quantized in the order the block
uses them, with its Hessian taken from inputs computed by the block whose earlier weights are
already quantized, and the quantized block's outputs feed the next block.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from dataclasses import dataclass

import numpy

from lamina.nn.module import Module
from lamina.nn.ptq.group_quant import (
    QuantizedWeight,
    check_bits,
    check_group_size,
    group_params,
    quantize_to_grid,
)
from lamina.nn.ptq.quant_attention import quantize_projection
from lamina.nn.ptq.quant_dense import QuantDense
from lamina.nn.ptq.scaling import site_weight
from lamina.nn.ptq.sequential import (
    block_sites,
    capture_block_inputs,
    capture_layer_inputs,
    find_blocks,
    replace_layers,
    run_block,
)

__all__ = ["GPTQResult", "HessianAccumulator", "gptq_quantize", "gptq_quantize_weight"]


class HessianAccumulator:
    """H = 2 / n sum_t x_t x_t^T over the n rows x_t of the inputs fed to :meth:`add`
    (any leading axes are rows), in float64."""

    def __init__(self, in_features: int):
        self.in_features = int(in_features)
        self.sum = numpy.zeros((self.in_features, self.in_features))
        self.count = 0

    def add(self, x) -> None:
        rows = numpy.asarray(x, dtype=numpy.float64).reshape(-1, self.in_features)
        self.sum += rows.T @ rows
        self.count += rows.shape[0]

    @property
    def hessian(self) -> numpy.ndarray:
        if not self.count:
            raise ValueError("HessianAccumulator: no inputs were added; the layer was never called on the "
                             "calibration data")
        return 2.0 * self.sum / self.count


@dataclass
class GPTQResult:
    """The quantized weight and the loss sum_i (w_i - q_i)^2 / (2 U_ii^2) GPTQ tracked."""

    weight: QuantizedWeight
    loss: float


def _check_hessian(hessian, n_in: int, who: str) -> numpy.ndarray:
    h = numpy.array(hessian, dtype=numpy.float64)
    if h.shape != (n_in, n_in):
        raise ValueError(f"{who}: the Hessian must be ({n_in}, {n_in}) for a weight with {n_in} inputs, got "
                         f"shape {h.shape}")
    return h


def _inverse_cholesky(h: numpy.ndarray, percdamp: float) -> numpy.ndarray:
    """U upper triangular with U^T U = (H + percdamp mean(diag H) I)^-1."""
    h = h + percdamp * numpy.mean(numpy.diag(h)) * numpy.eye(h.shape[0])
    inverse = numpy.linalg.inv(h)
    return numpy.linalg.cholesky((inverse + inverse.T) / 2).T


def gptq_quantize_weight(weight, hessian, bits: int = 4, group_size: int = 128, sym: bool = False,
                         act_order: bool = False, percdamp: float = 0.01, block_size: int = 128) -> GPTQResult:
    """GPTQ of one weight (n_in, units) for the input Hessian ``hessian`` (n_in, n_in) (see the
    module's docstring); float64 throughout."""
    who = "gptq_quantize_weight"
    bits = check_bits(bits, who)
    if not 0 <= percdamp < 1:
        raise ValueError(f"{who}: percdamp must be in [0, 1), got {percdamp!r}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"{who}: block_size must be a positive int, got {block_size!r}")
    w = numpy.array(getattr(weight, "data", weight), dtype=numpy.float64).T       # (units, n_in): the paper's W
    if w.ndim != 2 or not w.size:
        raise ValueError(f"{who}: expected a non-empty weight of shape (n_in, units), got {numpy.shape(weight)}")
    units, n_in = w.shape
    size = check_group_size(group_size, n_in, who)
    h = _check_hessian(hessian, n_in, who)
    grouped = size < n_in
    if not grouped:
        scale, zero = group_params(w, bits, sym, axis=1)
    dead = numpy.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    order = numpy.argsort(-numpy.diag(h), kind="stable") if act_order else numpy.arange(n_in)
    w, h = w[:, order], h[order][:, order]
    u = _inverse_cholesky(h, percdamp)
    q = numpy.zeros_like(w)
    scales, zeros = [], []
    loss = 0.0
    for start in range(0, n_in, block_size):
        stop = min(start + block_size, n_in)
        block = w[:, start:stop].copy()
        errors = numpy.zeros_like(block)
        u_block = u[start:stop, start:stop]
        for i in range(stop - start):
            column = start + i
            if grouped and column % size == 0:
                scale, zero = group_params(w[:, column:column + size], bits, sym, axis=1)
                scales.append(scale)
                zeros.append(zero)
            values = block[:, i]
            codes = quantize_to_grid(values, scale, zero, bits)
            q[:, column] = codes
            dequantized = scale * (codes - zero)
            d = u_block[i, i]
            loss += float(numpy.sum((values - dequantized) ** 2) / d ** 2) / 2
            error = (values - dequantized) / d
            block[:, i:] -= numpy.outer(error, u_block[i, i:])
            errors[:, i] = error
        w[:, stop:] -= errors @ u[start:stop, stop:]
    if not grouped:
        scales, zeros = [scale], [zero]
    inverse = numpy.argsort(order)
    g_idx = (numpy.arange(n_in) // size)[inverse]
    quantized = QuantizedWeight(q[:, inverse].T.astype(numpy.uint8), numpy.stack(scales).astype(numpy.float32),
                                numpy.stack(zeros).astype(numpy.uint8), g_idx.astype(numpy.int32), bits, size,
                                bool(sym))
    return GPTQResult(quantized, loss)


def gptq_quantize(model: Module, calibration_batches: Iterable, bits: int = 4, group_size: int = 128,
                  sym: bool = False, act_order: bool = False, percdamp: float = 0.01, block_size: int = 128,
                  blocks=None, skip=("lm_head",), attention: bool = True, inplace: bool = False) -> Module:
    """``model`` with the Dense layers of its blocks replaced by :class:`QuantDense` layers
    quantized by GPTQ, block after block (see the module's docstring), and with ``attention``
    the projections of its self-attention layers too (:class:`QuantMultiHeadAttention`).
    ``calibration_batches``: an iterable of what the model is called with (token ids (N, T),
    or a tuple of arguments). ``blocks``: the sequence of blocks (default the model's
    ``layers``, ``h`` or ``blocks`` ModuleList); layers named in ``skip`` stay in float. A copy
    unless ``inplace``."""
    who = "gptq_quantize"
    bits = check_bits(bits, who)
    model = model if inplace else copy.deepcopy(model)
    blocks = find_blocks(model, blocks, who)
    states = capture_block_inputs(model, blocks, calibration_batches, who)
    for block in blocks:
        for path, layer, name in block_sites(block, states[0], skip, who, attention):
            weight = site_weight(layer if name is None else (layer, name))
            check_group_size(group_size, weight.shape[0], f"{who} ({path}{'' if name is None else '.' + name})")
            hessian = HessianAccumulator(weight.shape[0])
            for x in capture_layer_inputs(block, layer, states, name):
                hessian.add(x)
            result = gptq_quantize_weight(weight, hessian.hessian, bits, group_size, sym, act_order, percdamp,
                                          block_size)
            if name is None:
                replace_layers(block, {id(layer): QuantDense.from_dense(layer, quantized=result.weight)})
            else:
                quantize_projection(layer, name, result.weight)
        states = run_block(block, states)
    return model
