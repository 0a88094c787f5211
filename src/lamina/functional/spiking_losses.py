"""Losses on the output spikes of a spiking network, recorded over T steps (snnTorch's
functional losses).

``spk`` is the spike record (T, batch, C), time first, and ``targets`` the class indices
(batch,). With the per-step cross-entropy CE(z, y) = -log softmax(z)_y, averaged over the batch:

- ``ce_rate_loss``: the cross-entropy of every step's spikes, averaged over the steps,
  (1/T) sum_t CE(S[t], y), which pushes the right class to fire at every step
- ``ce_count_loss``: the cross-entropy of the spike counts, CE(sum_t S[t], y)
- ``mse_count_loss``: the mean squared error between the spike counts and the target counts
  int(T correct_rate) for the right class and int(T incorrect_rate) for the others, divided
  by T: mean((sum_t S[t] - n)^2) / T

Each takes membrane potentials as well (a record of floats of the same shape).
"""

from __future__ import annotations

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.reduce import mean
from lamina.functional.reduce import sum as tensor_sum
from lamina.functional.torch_losses import cross_entropy

__all__ = ["ce_count_loss", "ce_rate_loss", "mse_count_loss"]


def _record(spk, targets, fn: str):
    """The record as a tensor (T, batch, C) and the targets as int64 indices (batch,), checked."""
    spk = spk if isinstance(spk, Tensor) else Tensor(spk)
    if spk.ndim != 3:
        raise ShapeError(f"{fn}: expected a spike record of shape (time, batch, classes), time first, got shape "
                         f"{tuple(spk.shape)}")
    labels = backend.xp.asarray(targets.data if isinstance(targets, Tensor) else targets)
    if labels.dtype.kind not in "iu" or labels.shape != spk.shape[1:2]:
        raise ShapeError(f"{fn}: targets must be class indices (integers) of shape (batch,) = {spk.shape[1:2]}, "
                         f"got {labels.dtype} of shape {labels.shape}")
    classes = spk.shape[2]
    if labels.size and (labels.min() < 0 or labels.max() >= classes):
        raise ValueError(f"{fn}: targets must lie in [0, {classes}) for {classes} output neurons, got values "
                         f"from {labels.min()} to {labels.max()}")
    return spk, labels.astype(backend.xp.int64)


def ce_rate_loss(spk, targets) -> Tensor:
    """(1/T) sum_t CE(S[t], y): the cross-entropy of each step's spikes (T, batch, C) against
    the class indices (batch,), averaged over the batch and the steps."""
    spk, labels = _record(spk, targets, "ce_rate_loss")
    return cross_entropy(spk, backend.xp.broadcast_to(labels, spk.shape[:2]))


def ce_count_loss(spk, targets) -> Tensor:
    """CE(sum_t S[t], y): the cross-entropy of the spike counts (batch, C) of the record
    (T, batch, C) against the class indices (batch,), averaged over the batch."""
    spk, labels = _record(spk, targets, "ce_count_loss")
    return cross_entropy(tensor_sum(spk, axis=0), labels)


def mse_count_loss(spk, targets, correct_rate: float = 1.0, incorrect_rate: float = 0.0) -> Tensor:
    """mean((sum_t S[t] - n)^2) / T, the target count n being int(T correct_rate) for the
    right class and int(T incorrect_rate) for the others (the rates are firing probabilities
    per step, in [0, 1])."""
    fn = "mse_count_loss"
    for what, rate in (("correct_rate", correct_rate), ("incorrect_rate", incorrect_rate)):
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0 <= rate <= 1:
            raise ValueError(f"{fn}: {what} must be a firing rate in [0, 1], got {rate!r}")
    spk, labels = _record(spk, targets, fn)
    steps, batch, classes = spk.shape
    goal = backend.xp.full((batch, classes), int(steps * incorrect_rate), dtype=spk.dtype)
    goal[backend.xp.arange(batch), labels] = int(steps * correct_rate)
    error = tensor_sum(spk, axis=0) - goal
    return mean(error * error) * (1.0 / steps)
