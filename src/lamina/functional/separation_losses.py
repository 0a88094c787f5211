"""Source separation metrics and permutation-invariant training.

Signals lie along the last axis (..., time), typically (batch, sources, time). With e the
estimate, s the reference and eps the machine epsilon of their dtype (torchmetrics' choice),

    SNR    = 10 log10((||s||^2 + eps) / (||s - e||^2 + eps))
    SI-SDR = 10 log10((||a s||^2 + eps) / (||a s - e||^2 + eps)),  a = (<e, s> + eps) / (||s||^2 + eps)

(Le Roux et al. 2019): a s is the projection of e on s, so scaling e does not change SI-SDR.
``zero_mean`` subtracts each signal's mean first; SI-SNR is SI-SDR with zero means (Luo &
Mesgarani). The plain SDR, 10 log10(||s||^2 / ||s - e||^2), is the SNR without the mean
removal (bss_eval's SDR, which first fits a distortion filter, is not this one).

Permutation-invariant training (Yu et al. 2017) scores the sources up to their order: with
L[b, i, j] the loss of estimate i against reference j, it takes min over permutations p of
mean_j L[b, p(j), j], by trying all S! orders or, for many sources, by the Hungarian algorithm
on L (scipy's linear_sum_assignment). The order is chosen on the values; the loss is then
gathered from L, so gradients flow through the chosen pairs alone.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable

import numpy as np

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import elementwise, shape

__all__ = ["permutation_invariant_loss", "sdr", "si_sdr", "si_sdr_loss", "si_snr", "snr"]


def _pair(estimate, reference, op: str) -> tuple[Tensor, Tensor]:
    estimate = estimate if isinstance(estimate, Tensor) else Tensor._constant(estimate, None)
    reference = reference if isinstance(reference, Tensor) else Tensor._constant(reference, estimate.dtype)
    if estimate.ndim < 1 or estimate.shape != reference.shape:
        raise ShapeError(f"{op}: estimate and reference must have the same shape (..., time), got "
                         f"{tuple(estimate.shape)} and {tuple(reference.shape)}")
    if np.dtype(estimate.dtype).kind != "f":
        raise TypeError(f"{op}: expected floating signals, got dtype {estimate.dtype}")
    return estimate, reference


def _centred(x: Tensor) -> Tensor:
    return x - x.mean(axis=-1, keepdims=True)


def _ratio_db(signal: Tensor, noise: Tensor, eps: float) -> Tensor:
    """10 log10((||signal||^2 + eps) / (||noise||^2 + eps)) over the last axis."""
    power = (signal * signal).sum(axis=-1) + eps
    return elementwise.log(power / ((noise * noise).sum(axis=-1) + eps)) * (10.0 / math.log(10.0))


def si_sdr(estimate, reference, zero_mean: bool = False) -> Tensor:
    """Scale-invariant signal-to-distortion ratio in dB (..., time) -> (...) (see the module
    docstring), as ``torchmetrics.functional.scale_invariant_signal_distortion_ratio``."""
    estimate, reference = _pair(estimate, reference, "si_sdr")
    if zero_mean:
        estimate, reference = _centred(estimate), _centred(reference)
    eps = float(np.finfo(estimate.dtype).eps)
    scale = ((estimate * reference).sum(axis=-1, keepdims=True) + eps) / (
        (reference * reference).sum(axis=-1, keepdims=True) + eps)
    target = scale * reference
    return _ratio_db(target, target - estimate, eps)


def si_snr(estimate, reference) -> Tensor:
    """Scale-invariant signal-to-noise ratio in dB: :func:`si_sdr` with zero means."""
    return si_sdr(estimate, reference, zero_mean=True)


def snr(estimate, reference, zero_mean: bool = False) -> Tensor:
    """Signal-to-noise ratio in dB, 10 log10((||s||^2 + eps) / (||s - e||^2 + eps)) over the
    last axis, as ``torchmetrics.functional.signal_noise_ratio``."""
    estimate, reference = _pair(estimate, reference, "snr")
    if zero_mean:
        estimate, reference = _centred(estimate), _centred(reference)
    return _ratio_db(reference, reference - estimate, float(np.finfo(estimate.dtype).eps))


def sdr(estimate, reference) -> Tensor:
    """Plain signal-to-distortion ratio in dB, 10 log10(||s||^2 / ||s - e||^2) (with eps as
    :func:`snr`): scale-dependent, no distortion filter."""
    return snr(estimate, reference, zero_mean=False)


def _reduce(values: Tensor, reduction: str, op: str) -> Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise ValueError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")


def si_sdr_loss(estimate, reference, zero_mean: bool = True, reduction: str = "mean") -> Tensor:
    """The negative SI-SDR, -si_sdr(estimate, reference, zero_mean), reduced over every
    signal ('mean', 'sum' or 'none'); zero means by default, as asteroid's neg-SI-SDR."""
    return _reduce(-si_sdr(estimate, reference, zero_mean=zero_mean), reduction, "si_sdr_loss")


def _best_exhaustive(losses: np.ndarray) -> np.ndarray:
    """(batch, S) the permutation p (estimate p[j] for reference j) minimising sum_j L[p[j], j]."""
    sources = losses.shape[-1]
    orders = np.array(list(itertools.permutations(range(sources))), dtype=np.int64)   # (S!, S)
    totals = losses[:, orders, np.arange(sources)].sum(axis=-1)                        # (batch, S!)
    return orders[totals.argmin(axis=1)]


def _best_hungarian(losses: np.ndarray) -> np.ndarray:
    from scipy.optimize import linear_sum_assignment

    best = np.empty(losses.shape[:2], dtype=np.int64)
    for b, matrix in enumerate(losses):
        rows, cols = linear_sum_assignment(matrix)       # estimate rows[k] goes with reference cols[k]
        best[b, cols] = rows
    return best


def permutation_invariant_loss(loss_fn: Callable[[Tensor, Tensor], Tensor], estimate, reference,
                               mode: str = "exhaustive", reduction: str = "mean") -> tuple[Tensor, np.ndarray]:
    """The loss under the best pairing of estimated and reference sources (batch, S, time).

    ``loss_fn(estimate, reference)`` maps signals (..., time) to losses (...) (e.g.
    :func:`si_sdr_loss` with ``reduction='none'``, or ``lambda e, r: -si_snr(e, r)``); it is
    called once on every (estimate i, reference j) pair, broadcast as (batch, S, S, time).
    ``mode``: 'exhaustive' (all S! orders) or 'hungarian' (linear_sum_assignment, for many
    sources). Returns (loss, permutation): the mean over sources of the chosen pairs' losses,
    reduced over the batch ('mean', 'sum' or 'none'), and the int64 array (batch, S) whose
    [b, j] is the estimate matched to reference j (``estimate[b, permutation[b]]`` reorders the
    estimates as the references)."""
    op = "permutation_invariant_loss"
    if mode not in ("exhaustive", "hungarian"):
        raise ValueError(f"{op}: mode must be 'exhaustive' or 'hungarian', got {mode!r}")
    estimate, reference = _pair(estimate, reference, op)
    if estimate.ndim != 3:
        raise ShapeError(f"{op}: expected (batch, sources, time) signals, got shape {tuple(estimate.shape)}")
    batch, sources, length = estimate.shape
    pairs = (batch, sources, sources, length)
    pairwise = loss_fn(shape.broadcast_to(shape.expand_dims(estimate, 2), pairs),
                       shape.broadcast_to(shape.expand_dims(reference, 1), pairs))
    if tuple(pairwise.shape) != (batch, sources, sources):
        raise ShapeError(f"{op}: loss_fn must map (..., time) signals to (...) losses; on pairs of shape {pairs} "
                         f"it returned shape {tuple(pairwise.shape)}, expected {(batch, sources, sources)}")
    values = backend.to_numpy(pairwise.data)
    best = _best_exhaustive(values) if mode == "exhaustive" else _best_hungarian(values)
    chosen = pairwise[np.arange(batch)[:, None], best, np.arange(sources)[None, :]]       # (batch, S)
    return _reduce(chosen.mean(axis=-1), reduction, op), best
