"""Spike encoders and decoders (snnTorch's ``spikegen`` and its accuracy helpers).

Encoders turn values into spike trains, time first, of 0s and 1s in the data's floating
dtype (the default dtype for integer data):

- :func:`rate`: each step an independent Bernoulli draw with probability p = clip(gain x +
  offset, 0, 1), so a value x spikes at the mean rate p
- :func:`latency`: one spike per value, the earlier the larger the value: the time an RC
  circuit charged by x takes to reach the threshold, t = tau ln(x / (x - threshold))
  (``linear=True``: t = tau (1 - x)), see :func:`latency_times`
- :func:`delta`: a spike where a signal (T, ...) rises by at least ``threshold`` from one step
  to the next (-1 where it falls as much, with ``off_spike``)

Decoders read a record (T, batch, classes): :func:`spike_count`, :func:`firing_rate` (both
differentiable), :func:`first_spike_time`, and the predicted classes by the most spikes
(:func:`predict_rate`) or the first spike (:func:`predict_latency`), with their accuracies.
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.reduce import mean
from lamina.functional.reduce import sum as tensor_sum

__all__ = [
    "accuracy_latency", "accuracy_rate", "delta", "firing_rate", "first_spike_time", "latency", "latency_times",
    "predict_latency", "predict_rate", "rate", "spike_count",
]


def _array(data):
    return backend.xp.asarray(data.data if isinstance(data, Tensor) else data)


def _float_dtype(values):
    return values.dtype if values.dtype.kind == "f" else backend.get_default_dtype()


def _steps(num_steps, fn: str) -> int:
    if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 1:
        raise ValueError(f"{fn}: num_steps must be a positive int, got {num_steps!r}")
    return num_steps


# -- encoders ------------------------------------------------------------------------------
def rate(data, num_steps: int | None = None, gain: float = 1.0, offset: float = 0.0) -> Tensor:
    """Rate-coded spikes (num_steps, *data.shape): at each step, 1 with probability
    p = clip(gain data + offset, 0, 1), independently. ``num_steps=None`` draws once per value
    of ``data`` as given (data that already has its time axis). Draws from
    :func:`lamina.backend.rng` (seeded by :func:`lamina.manual_seed`)."""
    values = _array(data)
    dtype = _float_dtype(values)
    p = backend.xp.clip(values * gain + offset, 0, 1)
    shape = p.shape if num_steps is None else (_steps(num_steps, "rate"), *p.shape)
    return Tensor._wrap((backend.rng().random(shape) < p).astype(dtype))


def latency_times(data, num_steps: int | None = None, threshold: float = 0.01, tau: float = 1.0,
                  first_spike_time: int = 0, linear: bool = False, normalize: bool = False,
                  epsilon: float = 1e-7) -> numpy.ndarray:
    """The spike times (floats, data's shape) of :func:`latency`, before rounding:

    - RC (default): t = first_spike_time + tau ln(x / (x - threshold)), the values at or below
      the threshold taken as threshold + epsilon (the latest time)
    - ``linear``: t = first_spike_time + tau (1 - x), the values below the threshold taken as
      the threshold

    ``normalize`` (needs ``num_steps``) sets tau so that the latest time is the last step,
    num_steps - 1: tau = (num_steps - 1 - first_spike_time) / (1 - threshold) for ``linear``,
    divided by ln((threshold + epsilon) / epsilon) for RC."""
    fn = "latency"
    if not threshold > 0 or not tau > 0 or not epsilon > 0:
        raise ValueError(f"{fn}: threshold, tau and epsilon must be positive, got {threshold!r}, {tau!r}, "
                         f"{epsilon!r}")
    if linear and threshold >= 1:
        raise ValueError(f"{fn}: with linear=True the threshold must be below 1 (the largest value), got {threshold}")
    x = _array(data).astype(backend.xp.float64)
    if normalize:
        if num_steps is None:
            raise ValueError(f"{fn}: normalize=True needs num_steps")
        span = _steps(num_steps, fn) - 1 - first_spike_time
        tau = span / (1 - threshold) if linear else span / math.log((threshold + epsilon) / epsilon)
    if linear:
        return first_spike_time + tau * (1 - backend.xp.maximum(x, threshold))
    x = backend.xp.maximum(x, threshold + epsilon)
    return first_spike_time + tau * backend.xp.log(x / (x - threshold))


def latency(data, num_steps: int, threshold: float = 0.01, tau: float = 1.0, first_spike_time: int = 0,
            linear: bool = False, normalize: bool = False, clip: bool = False, epsilon: float = 1e-7) -> Tensor:
    """Latency-coded spikes (num_steps, *data.shape): one spike per value, at the step
    round(t) of :func:`latency_times` (times past the last step spike at the last step).
    Values below ``threshold`` spike at their (late) time too, or never with ``clip=True``."""
    steps = _steps(num_steps, "latency")
    values = _array(data)
    times = latency_times(values, steps, threshold, tau, first_spike_time, linear, normalize, epsilon)
    index = backend.xp.clip(backend.xp.rint(times), 0, steps - 1).astype(backend.xp.int64)
    spikes = backend.xp.arange(steps).reshape((steps,) + (1,) * index.ndim) == index
    if clip:
        spikes &= values >= threshold
    return Tensor._wrap(spikes.astype(_float_dtype(values)))


def delta(data, threshold: float = 0.1, padding: bool = False, off_spike: bool = False) -> Tensor:
    """Delta-modulated spikes of a signal (T, ...), time first: 1 at step t where
    x[t] - x[t-1] >= threshold, with x[-1] = 0 (``padding=True``: x[-1] = x[0], so the first
    step never spikes); with ``off_spike``, -1 where x[t] - x[t-1] <= -threshold."""
    x = _array(data)
    if x.ndim < 1:
        raise ShapeError("delta: expected a signal with its time axis first, got a scalar")
    previous = backend.xp.concatenate([x[:1] if padding else backend.xp.zeros_like(x[:1]), x[:-1]])
    change = x - previous
    out = (change >= threshold).astype(_float_dtype(x))
    if off_spike:
        out -= change <= -threshold
    return Tensor._wrap(out)


# -- decoders ------------------------------------------------------------------------------
def _record(spk, fn: str) -> Tensor:
    spk = spk if isinstance(spk, Tensor) else Tensor(spk)
    if spk.ndim < 2:
        raise ShapeError(f"{fn}: expected a record (time, batch, ...), time first, got shape {tuple(spk.shape)}")
    return spk


def spike_count(spk) -> Tensor:
    """The number of spikes of each neuron over the record (T, batch, ...): sum over time."""
    return tensor_sum(_record(spk, "spike_count"), axis=0)


def firing_rate(spk) -> Tensor:
    """The mean spikes per step of each neuron over the record (T, batch, ...)."""
    return mean(_record(spk, "firing_rate"), axis=0)


def first_spike_time(spk) -> numpy.ndarray:
    """The step of each neuron's first spike (int64, the record's shape without time), T for
    a neuron that never fires."""
    fired = _record(spk, "first_spike_time").data > 0
    return backend.xp.where(fired.any(axis=0), fired.argmax(axis=0), fired.shape[0]).astype(backend.xp.int64)


def predict_rate(spk) -> numpy.ndarray:
    """The class of the most spikes (batch,) from a record (T, batch, classes); ties go to
    the lower class."""
    return backend.to_numpy(spike_count(spk).data).argmax(axis=-1)


def predict_latency(spk) -> numpy.ndarray:
    """The class that fires first (batch,) from a record (T, batch, classes); ties go to the
    lower class."""
    return backend.to_numpy(first_spike_time(spk)).argmin(axis=-1)


def _accuracy(predicted, targets) -> float:
    labels = backend.to_numpy(_array(targets))
    if labels.shape != predicted.shape:
        raise ShapeError(f"accuracy: targets of shape {labels.shape} for predictions of shape {predicted.shape}")
    return float((predicted == labels).mean())


def accuracy_rate(spk, targets) -> float:
    """The fraction of samples whose most-spiking class (:func:`predict_rate`) is the target."""
    return _accuracy(predict_rate(spk), targets)


def accuracy_latency(spk, targets) -> float:
    """The fraction of samples whose first-firing class (:func:`predict_latency`) is the target."""
    return _accuracy(predict_latency(spk), targets)
