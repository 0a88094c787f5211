"""Vector quantisation (VQ-VAE, van den Oord et al. 2017) and finite scalar quantisation
(FSQ, Mentzer et al. 2023).

A codebook e of K vectors of size D replaces each input vector z (the last axis of z) by its
nearest code, found by squared distance,

    k(z) = argmin_j ||z - e_j||^2 = argmin_j (||z||^2 - 2 z . e_j + ||e_j||^2),

the expanded form costing one matrix product, computed over chunks of rows so that the
(rows, K) distance matrix stays small. argmin has no gradient, so the output is the
straight-through estimate

    z_q = z + sg(e_k - z)        (value e_k, dz_q/dz = identity; sg: stop gradient)

and the codebook learns from its own term of the loss

    L = ||sg(z) - e_k||^2 + beta ||z - sg(e_k)||^2   (means over all elements)

(the codebook pulled to the encoder outputs, the commitment term keeping the encoder near
its codes). The perplexity exp(-sum_j p_j log p_j) of the codes' frequencies p_j counts the
codes in use: 1 when one code takes everything, K when all are used equally.

FSQ has no codebook: each of the d channels is bounded to L_i levels and rounded,

    f(z) = tanh(z + s) (L - 1)(1 + eps) / 2 - o,   o = 1/2 for an even L, 0 for an odd one,
    s = atanh(o / ((L - 1)(1 + eps) / 2)),        q = round_ste(f(z)) / floor(L / 2),

round_ste(x) = x + sg(round(x) - x), so that q lies on L_i values in [-1, 1] and the codes
form a grid of prod(L_i) points.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.segment import take_rows

__all__ = ["VQResult", "check_levels", "codebook_perplexity", "finite_scalar_quantize", "fsq_codes_to_indices",
           "fsq_indices_to_codes", "nearest_codes", "straight_through", "vector_quantize"]

CHUNK_ROWS = 8192
"""Rows of z whose distances to the whole codebook are formed at once."""


class VQResult(NamedTuple):
    """What a vector quantiser returns: the straight-through codes (the input's shape), the
    scalar loss, the perplexity of the codes used (a float) and the code indices (z's shape
    without its last axis)."""

    quantized: Tensor
    loss: Tensor
    perplexity: float
    indices: numpy.ndarray


def _data(x):
    return x.data if isinstance(x, Tensor) else backend.xp.asarray(x)


def nearest_codes(z, codebook, chunk_rows: int = CHUNK_ROWS):
    """The index of the nearest code (squared distance) for every vector on z's last axis:
    an integer array of z.shape[:-1]. ``codebook``: (K, D); ties go to the lower index."""
    xp = backend.xp
    z, codebook = _data(z), _data(codebook)
    if codebook.ndim != 2 or z.ndim < 1 or z.shape[-1] != codebook.shape[1]:
        raise ShapeError(f"nearest_codes: z of shape {tuple(z.shape)} and a codebook of shape "
                         f"{tuple(codebook.shape)}; expected a codebook (K, D) with D = z.shape[-1]")
    flat = z.reshape(-1, z.shape[-1])
    code_norms = (codebook * codebook).sum(axis=1)
    out = xp.empty(flat.shape[0], dtype=xp.int64)
    for start in range(0, flat.shape[0], chunk_rows):
        rows = flat[start:start + chunk_rows]
        distances = (rows * rows).sum(axis=1, keepdims=True) - 2 * rows @ codebook.T + code_norms
        out[start:start + chunk_rows] = distances.argmin(axis=1)
    return out.reshape(z.shape[:-1])


def straight_through(x: Tensor, y) -> Tensor:
    """x + sg(y - x): the value of ``y`` with the gradient of the identity in ``x``."""
    return x + Tensor._wrap(_data(y) - x.data)


def codebook_perplexity(indices, num_codes: int) -> float:
    """exp(entropy) of the codes' frequencies in ``indices``: the number of codes in use."""
    counts = numpy.bincount(numpy.asarray(backend.to_numpy(_data(indices))).reshape(-1), minlength=num_codes)
    p = counts / max(counts.sum(), 1)
    p = p[p > 0]
    return float(math.exp(-(p * numpy.log(p)).sum()))


def vector_quantize(z: Tensor, codebook: Tensor, commitment_cost: float = 0.25,
                    chunk_rows: int = CHUNK_ROWS) -> VQResult:
    """z (..., D) -> its nearest codes in ``codebook`` (K, D) with the straight-through
    gradient, the loss ||sg(z) - e_k||^2 + beta ||z - sg(e_k)||^2 (means; beta =
    ``commitment_cost``), the perplexity and the indices (see the module docstring)."""
    z = z if isinstance(z, Tensor) else Tensor(z)
    codebook = codebook if isinstance(codebook, Tensor) else Tensor(codebook)
    if codebook.ndim != 2 or z.ndim < 1 or z.shape[-1] != codebook.shape[1]:
        raise ShapeError(f"vector_quantize: z of shape {tuple(z.shape)} and a codebook of shape "
                         f"{tuple(codebook.shape)}; expected a codebook (K, D) with D = z.shape[-1]")
    indices = nearest_codes(z, codebook, chunk_rows)
    codes = take_rows(codebook, indices.reshape(-1)).reshape(z.shape)
    codebook_loss = (z.detach() - codes).square().mean()
    commitment_loss = (z - codes.detach()).square().mean()
    loss = codebook_loss + commitment_cost * commitment_loss
    return VQResult(straight_through(z, codes.data), loss, codebook_perplexity(indices, codebook.shape[0]), indices)


# -- finite scalar quantisation --------------------------------------------------------------
def check_levels(levels, who: str) -> tuple[int, ...]:
    try:
        values = tuple(int(n) for n in levels)
    except (TypeError, ValueError):
        raise ValueError(f"{who}: levels must be a sequence of ints >= 2, got {levels!r}") from None
    if not values or any(n < 2 or n != float(m) for n, m in zip(values, levels)):
        raise ValueError(f"{who}: levels must be a non-empty sequence of ints >= 2, got {levels!r}")
    return values


def finite_scalar_quantize(z: Tensor, levels, eps: float = 1e-3) -> Tensor:
    """z (..., d) -> codes in [-1, 1] with ``levels[i]`` values on channel i, the rounding
    passed straight through (see the module docstring); d = len(levels)."""
    levels = check_levels(levels, "finite_scalar_quantize")
    z = z if isinstance(z, Tensor) else Tensor(z)
    if z.ndim < 1 or z.shape[-1] != len(levels):
        raise ShapeError(f"finite_scalar_quantize: z of shape {tuple(z.shape)} needs {len(levels)} channels on "
                         f"its last axis, one per entry of levels={list(levels)}")
    xp = backend.xp
    lv = xp.asarray(levels, dtype=z.dtype)
    half_l = (lv - 1) * (1 + eps) / 2
    offset = xp.where(lv % 2 == 0, 0.5, 0.0).astype(z.dtype)
    shift = xp.arctanh(offset / half_l)
    bounded = (z + Tensor._wrap(shift)).tanh() * Tensor._wrap(half_l) - Tensor._wrap(offset)
    rounded = straight_through(bounded, xp.round(bounded.data))
    return rounded / Tensor._wrap(xp.floor(lv / 2))


def fsq_codes_to_indices(codes, levels):
    """FSQ codes (..., d) in [-1, 1] -> integer indices in [0, prod(levels)) (mixed radix,
    channel 0 varying fastest)."""
    levels = check_levels(levels, "fsq_codes_to_indices")
    xp = backend.xp
    lv = xp.asarray(levels)
    digits = xp.rint(_data(codes) * (lv // 2) + lv // 2).astype(xp.int64)
    basis = xp.cumprod(xp.asarray((1, *levels[:-1]), dtype=xp.int64))
    return (digits * basis).sum(axis=-1)


def fsq_indices_to_codes(indices, levels, dtype=None):
    """The inverse of :func:`fsq_codes_to_indices`: integer indices (...) -> codes (..., d)."""
    levels = check_levels(levels, "fsq_indices_to_codes")
    xp = backend.xp
    lv = xp.asarray(levels)
    basis = xp.cumprod(xp.asarray((1, *levels[:-1]), dtype=xp.int64))
    digits = (xp.asarray(_data(indices))[..., None] // basis) % lv
    return ((digits - lv // 2) / (lv // 2)).astype(dtype or backend.get_default_dtype())
