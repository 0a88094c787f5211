"""Observers and fake-quantization modules for quantization-aware training, as ``torch.ao.quantization``.

An observer watches the tensors that pass through it and keeps their range; from the range
[min, max] (widened to hold 0) it gives the scale s and zero point z of a quantization to the
integers [q_min, q_max] (:meth:`calculate_qparams`), the same numbers as PyTorch's observer:

* affine: s = max((max - min) / (q_max - q_min), eps), z = clamp(q_min - round(min / s), q_min, q_max);
* symmetric: s = max(max(-min, max) / ((q_max - q_min) / 2), eps), z = 0 for int8, and for uint8
  128 (the full range) or (q_min + q_max) // 2 (a range of one's own).

The integer range [q_min, q_max] is the dtype's (uint8 0..255, int8 -128..127) or one's own;
``reduce_range=True`` takes one bit less, as PyTorch's (0..127, -64..63, a range of one's own
halved: q // 2), for kernels whose 16-bit sums would otherwise overflow.

:class:`MinMaxObserver` keeps the smallest and largest value seen, :class:`MovingAverageMinMaxObserver`
a moving average of each batch's min and max (m <- m + c (m_batch - m)),
:class:`PerChannelMinMaxObserver` the min and max of each slice along an axis (for weights) and
:class:`MovingAveragePerChannelMinMaxObserver` their moving averages;
:class:`~lamina.nn.histogram_observer.HistogramObserver` chooses the range from a histogram.
Before anything is observed the parameters are s = 1, z = 0, as PyTorch's; a range (or channel)
that saw NaN keeps it and gives s = NaN, as PyTorch's (the histogram observer refuses NaN).
:class:`FixedQParamsObserver` gives parameters fixed beforehand; :class:`NoopObserver` and
:class:`PlaceholderObserver` record nothing (the identity, carrying a dtype).

:class:`FakeQuantize` puts an observer in front of :func:`lamina.functional.fake_quantize_per_tensor`
(or per channel): in training it observes each input and updates its ``scale`` and
``zero_point`` buffers, then fake-quantizes with them; in evaluation it only fake-quantizes
with the parameters last found (unlike PyTorch's, which observes in both modes unless told
not to) -- ``observe_in_eval=True`` keeps it observing, as for weights, and
:class:`FusedMovingAvgObsFakeQuantize` always does, as PyTorch's fused module. Where PyTorch's would
fake-quantize with a NaN scale (an input holding NaN), lamina's raises a ValueError.
"""

from __future__ import annotations

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.fake_quantize import fake_quantize_per_channel, fake_quantize_per_tensor
from lamina.nn.layer import layer_from_config, layer_to_config, register_layer
from lamina.nn.module import Module
from lamina.nn.quantize_ops import QUANTIZED_RANGES, quant_dtype

__all__ = ["FakeQuantize", "FixedQParamsObserver", "FusedMovingAvgObsFakeQuantize", "MinMaxObserver",
           "MovingAverageMinMaxObserver", "MovingAveragePerChannelMinMaxObserver", "NoopObserver",
           "PerChannelMinMaxObserver", "PlaceholderObserver", "calculate_qparams", "default_fake_quant",
           "default_fixed_qparams_range_0to1_observer", "default_fixed_qparams_range_neg1to1_observer",
           "default_fused_act_fake_quant", "default_fused_per_channel_wt_fake_quant", "default_fused_wt_fake_quant",
           "default_observer", "default_per_channel_weight_fake_quant", "default_per_channel_weight_observer",
           "default_weight_fake_quant", "default_weight_observer", "fused_qparams", "observer_quant_range",
           "per_channel_weight_observer_range_neg_127_to_127", "weight_observer_range_neg_127_to_127"]

QSCHEMES = ("per_tensor_affine", "per_tensor_symmetric", "per_channel_affine", "per_channel_symmetric")

_EPS = float(numpy.finfo(numpy.float32).eps)


def calculate_qparams(min_val, max_val, quant_min: int, quant_max: int, symmetric: bool = False,
                      dtype: str = "uint8", eps: float = _EPS, custom_range: bool = True):
    """The scale (float32) and zero point (int64) quantizing [min_val, max_val] (numbers or one
    range per channel) to [quant_min, quant_max], by the formulas of the module's docstring;
    ``custom_range`` tells a symmetric uint8 quantization whether the range is its own (its
    zero point is then the range's midpoint) or the full 0..255 (128)."""
    xp = backend.xp
    low = xp.minimum(xp.asarray(min_val, dtype=numpy.float32), numpy.float32(0))
    high = xp.maximum(xp.asarray(max_val, dtype=numpy.float32), numpy.float32(0))
    if symmetric:
        scale = xp.maximum(xp.maximum(-low, high) / numpy.float32((quant_max - quant_min) / 2), numpy.float32(eps))
        middle = (quant_min + quant_max) // 2 if custom_range else 128
        zero_point = xp.full(scale.shape, middle if dtype == "uint8" else 0, dtype=numpy.int64)
    else:
        scale = xp.maximum((high - low) / numpy.float32(quant_max - quant_min), numpy.float32(eps))
        zero_point = xp.clip(quant_min - xp.rint(low / scale).astype(numpy.int64), quant_min, quant_max)
    return scale.astype(numpy.float32), zero_point.astype(numpy.int64)


_SMALL_SCALE = numpy.float32(6.1e-5)


def fused_qparams(min_val, max_val, quant_min: int, quant_max: int, symmetric: bool):
    """The scale (float32) and zero point (int64) PyTorch's fused moving-average fake quantization
    takes for the range [min_val, max_val] (numbers or one per channel), its ``ChooseQuantizationParams``:

    * symmetric schemes keep 0 exact instead: a range with min < 0 < max is widened to
      [m q'_min, m q'_max], m = max(min / q'_min, max / q'_max), q'_max = (q_max - q_min) // 2,
      q'_min = -q'_max - 1, and z is the midpoint (q_min + q_max) / 2 rounded half to even; other
      ranges, and every affine one, as below;
    * affine: [min, max] widened to hold 0, s = (max - min) / (q_max - q_min) (0.1 for a range of
      width 0), raised to 6.1e-5 with the range scaled along, z = q - bound / s from the end
      (q_min with min, or q_max with max) with the smaller |q| + |bound / s|, rounded and clamped
      to [q_min, q_max].

    The arithmetic follows PyTorch's float32 bounds and float64 scale."""
    xp = backend.xp
    low = xp.array(min_val, dtype=numpy.float32, ndmin=1)
    high = xp.array(max_val, dtype=numpy.float32, ndmin=1)
    shape = numpy.shape(min_val)
    spans = (low < 0) & (high > 0) if symmetric else xp.zeros(low.shape, dtype=bool)
    if symmetric:
        inner_max = (quant_max - quant_min) // 2
        inner_min = -inner_max - 1
        m = xp.maximum(xp.abs(low / numpy.float32(inner_min)), xp.abs(high / numpy.float32(inner_max)))
        m = m.astype(numpy.float64)
        low = xp.where(spans, (m * inner_min).astype(numpy.float32), low)
        high = xp.where(spans, (m * inner_max).astype(numpy.float32), high)
    low, high = xp.minimum(low, numpy.float32(0)), xp.maximum(high, numpy.float32(0))
    width = quant_max - quant_min
    scale = (high.astype(numpy.float64) - low) / width
    with numpy.errstate(divide="ignore"):
        degenerate = (scale.astype(numpy.float32) == 0) | xp.isinf(numpy.float32(1) / scale.astype(numpy.float32))
    scale = xp.where(degenerate, 0.1, scale)
    small = scale < _SMALL_SCALE
    if small.any():
        amplifier = (_SMALL_SCALE / xp.where(small, scale, 1).astype(numpy.float32)).astype(numpy.float32)
        floor = _SMALL_SCALE * numpy.float32(width)
        new_low = xp.where(low == 0, low, xp.where(high == 0, -floor, low * amplifier))
        new_high = xp.where(low == 0, floor, xp.where(high == 0, high, high * amplifier))
        low = xp.where(small, new_low, low).astype(numpy.float32)
        high = xp.where(small, new_high, high).astype(numpy.float32)
        scale = xp.where(small, numpy.float64(_SMALL_SCALE), scale)
    scale = scale.astype(numpy.float32)
    low_steps, high_steps = low / scale.astype(numpy.float64), high / scale.astype(numpy.float64)
    from_min, from_max = quant_min - low_steps, quant_max - high_steps
    closer_min = abs(quant_min) + xp.abs(low_steps) < abs(quant_max) + xp.abs(high_steps)
    zero_point = xp.where(spans, (quant_min + quant_max) / 2, xp.where(closer_min, from_min, from_max))
    zero_point = xp.clip(xp.rint(zero_point), quant_min, quant_max).astype(numpy.int64)
    return scale.reshape(shape), zero_point.reshape(shape)


def _values(x):
    data = x.data if isinstance(x, Tensor) else backend.xp.asarray(x)
    return data.astype(numpy.float32, copy=False)


def observer_quant_range(dtype: str, quant_min: int | None, quant_max: int | None, reduce_range: bool,
                         who: str) -> tuple[int, int]:
    """The integer range [q_min, q_max] an observer quantizes to, as PyTorch's ``calculate_qmin_qmax``:
    the full range of ``dtype`` (uint8 0..255, int8 -128..127), or ``reduce_range`` one bit less
    (0..127, -64..63); a range of one's own, checked (ints, q_min <= 0 <= q_max, q_min < q_max,
    inside the dtype's range), with ``reduce_range`` halved: (q_min // 2, q_max // 2)."""
    full = QUANTIZED_RANGES[dtype]
    if quant_min is None and quant_max is None:
        return (full[0] // 2, full[1] // 2) if reduce_range else full
    if quant_min is None or quant_max is None:
        raise ValueError(f"{who}: give both quant_min and quant_max, or neither (the full {dtype} range); got "
                         f"quant_min={quant_min!r}, quant_max={quant_max!r}")
    integers = all(isinstance(q, (int, numpy.integer)) and not isinstance(q, bool) for q in (quant_min, quant_max))
    if not integers or not quant_min <= 0 <= quant_max or quant_min >= quant_max or quant_min < full[0] \
            or quant_max > full[1]:
        raise ValueError(f"{who}: the range [quant_min, quant_max] must be ints with quant_min <= 0 <= quant_max, "
                         f"quant_min < quant_max, inside the {dtype} range {list(full)}; got "
                         f"[{quant_min!r}, {quant_max!r}]")
    quant_min, quant_max = int(quant_min), int(quant_max)
    if reduce_range and quant_min // 2 == quant_max // 2:
        raise ValueError(f"{who}: reduce_range halves [quant_min, quant_max] = [{quant_min}, {quant_max}] to the "
                         f"single integer {quant_min // 2}; expected a range that keeps at least two integers")
    return (quant_min // 2, quant_max // 2) if reduce_range else (quant_min, quant_max)


def _check_eps(eps, who: str) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float, numpy.floating)) or not 0 < eps < numpy.inf:
        raise ValueError(f"{who}: eps must be a positive finite number (the smallest scale), got {eps!r}")
    return float(eps)


def _check_averaging_constant(c, who: str) -> float:
    if isinstance(c, bool) or not isinstance(c, (int, float, numpy.floating)) or not 0 < c <= 1:
        raise ValueError(f"{who}: averaging_constant must be in (0, 1], got {c!r}")
    return float(c)


def _moving_average(observer, low, high) -> None:
    """The first range as it is, then m <- m + c (m_batch - m) for the min and for the max, the
    max raised to the min where float32 rounding put it below (by an ulp, when the two averages
    meet, as after a constant batch with c = 1)."""
    if not observer._observed():
        observer.min_val, observer.max_val = backend.xp.asarray(low), backend.xp.asarray(high)
        return
    c = numpy.float32(observer.averaging_constant)
    observer.min_val = (observer.min_val + c * (low - observer.min_val)).astype(numpy.float32)
    high = (observer.max_val + c * (high - observer.max_val)).astype(numpy.float32)
    observer.max_val = backend.xp.maximum(high, observer.min_val)


def _fit_buffers(module: Module, names: tuple[str, ...], prefix: str, state: dict) -> list:
    """Replace each of ``module``'s buffers ``names`` by zeros of the length of the
    one-dimensional array ``state`` holds for it; (module, name, old buffer) for each replaced."""
    replaced = []
    for name in names:
        value = state.get(prefix + name)
        if value is not None and numpy.ndim(value) == 1:
            old = module._buffers[name]
            replaced.append((module, name, old))
            module._buffers[name] = backend.xp.zeros((numpy.shape(value)[0],), old.dtype)
    return replaced


class _Observer(Module):
    """The settings every observer shares: the integer type, the scheme, the range, eps.
    ``reduce_range`` quantizes to one bit less (see :func:`observer_quant_range`); PyTorch
    refuses it for a symmetric uint8 quantization, and so does lamina."""

    per_channel = False

    def __init__(self, dtype: str = "uint8", qscheme: str = "per_tensor_affine", quant_min: int | None = None,
                 quant_max: int | None = None, eps: float = _EPS, name: str | None = None, *,
                 reduce_range: bool = False):
        super().__init__(name=name)
        who = type(self).__name__
        self.dtype = quant_dtype(dtype, who)
        schemes = [s for s in QSCHEMES if s.startswith("per_channel") == self.per_channel]
        if qscheme not in schemes:
            raise ValueError(f"{who}: qscheme must be one of {schemes}, got {qscheme!r}")
        self.qscheme = qscheme
        if not isinstance(reduce_range, (bool, numpy.bool_)):
            raise ValueError(f"{who}: reduce_range must be a bool, got {reduce_range!r}")
        self.reduce_range = bool(reduce_range)
        if self.reduce_range and self.symmetric and self.dtype == "uint8":
            raise ValueError(f"{who}: reduce_range is not available for a symmetric uint8 quantization "
                             f"(qscheme={qscheme!r}, dtype='uint8'), as in PyTorch")
        self.custom_range = quant_min is not None and quant_max is not None
        self.quant_min, self.quant_max = observer_quant_range(self.dtype, quant_min, quant_max, self.reduce_range,
                                                              who)
        self.given_range = (int(quant_min), int(quant_max)) if self.custom_range else (None, None)
        self.eps = _check_eps(eps, who)
        self.built = True

    @property
    def symmetric(self) -> bool:
        return self.qscheme.endswith("symmetric")

    def _observed(self) -> bool:
        """Whether a range was recorded: per channel, buffers of one value per channel; per
        tensor, anything but the (+inf, -inf) of a fresh observer."""
        if not self.min_val.size:
            return False
        return self.per_channel or not (float(self.min_val) == numpy.inf and float(self.max_val) == -numpy.inf)

    def calculate_qparams(self):
        """(scale, zero_point) for the range observed so far: 0-d arrays, or one per channel;
        (1, 0) before anything was observed. A range (or channel) that saw NaN gives a NaN scale,
        as PyTorch's (its zero point means nothing); a range with min > max (a state loaded from
        elsewhere) is refused."""
        if not self._observed():
            return numpy.float32(1) + backend.xp.zeros((), numpy.float32), backend.xp.zeros((), numpy.int64)
        if bool(backend.xp.any(self.min_val > self.max_val)):
            raise ValueError(f"{self._label()}: the observed range has min > max (min_val "
                             f"{backend.to_numpy(self.min_val).tolist()}, max_val "
                             f"{backend.to_numpy(self.max_val).tolist()}); expected min <= max")
        with numpy.errstate(invalid="ignore", over="ignore"):      # the zero point of a NaN range
            return calculate_qparams(self.min_val, self.max_val, self.quant_min, self.quant_max, self.symmetric,
                                     self.dtype, self.eps, self.custom_range)

    def get_config(self) -> dict:
        quant_min, quant_max = self.given_range
        return {"dtype": str(self.dtype), "qscheme": self.qscheme, "quant_min": quant_min, "quant_max": quant_max,
                "eps": self.eps, "reduce_range": self.reduce_range, "name": self.name}

    def extra_repr(self) -> str:
        reduced = ", reduce_range=True" if self.reduce_range else ""
        return (f"dtype={self.dtype}, qscheme={self.qscheme}, quant_min={self.quant_min}, "
                f"quant_max={self.quant_max}{reduced}")


@register_layer
class MinMaxObserver(_Observer):
    """Keeps the smallest and largest value of every input it sees (buffers ``min_val`` and
    ``max_val``, +inf and -inf before the first); see the module's docstring for the parameters."""

    def __init__(self, dtype: str = "uint8", qscheme: str = "per_tensor_affine", quant_min: int | None = None,
                 quant_max: int | None = None, eps: float = _EPS, name: str | None = None, *,
                 reduce_range: bool = False):
        super().__init__(dtype, qscheme, quant_min, quant_max, eps, name, reduce_range=reduce_range)
        self.reset_min_max_vals()

    def reset_min_max_vals(self) -> None:
        self.register_buffer("min_val", backend.xp.asarray(numpy.float32(numpy.inf)).reshape(()))
        self.register_buffer("max_val", backend.xp.asarray(numpy.float32(-numpy.inf)).reshape(()))

    def _update(self, low, high) -> None:
        self.min_val = backend.xp.minimum(low, self.min_val)
        self.max_val = backend.xp.maximum(high, self.max_val)

    def forward(self, x):
        """Record the range of ``x``; return ``x`` unchanged."""
        values = _values(x)
        if values.size:
            self._update(values.min(), values.max())
        return x


@register_layer
class MovingAverageMinMaxObserver(MinMaxObserver):
    """Keeps moving averages of the inputs' min and max: the first batch's own, then
    m <- m + c (m_batch - m) with c = ``averaging_constant``."""

    def __init__(self, averaging_constant: float = 0.01, dtype: str = "uint8", qscheme: str = "per_tensor_affine",
                 quant_min: int | None = None, quant_max: int | None = None, eps: float = _EPS,
                 name: str | None = None, *, reduce_range: bool = False):
        super().__init__(dtype, qscheme, quant_min, quant_max, eps, name, reduce_range=reduce_range)
        self.averaging_constant = _check_averaging_constant(averaging_constant, type(self).__name__)

    def get_config(self) -> dict:
        return {"averaging_constant": self.averaging_constant, **super().get_config()}

    def _update(self, low, high) -> None:
        _moving_average(self, low, high)


@register_layer
class PerChannelMinMaxObserver(_Observer):
    """Keeps the min and max of each slice of the inputs along ``ch_axis`` (buffers of one value
    per channel, empty before the first input); symmetric per channel by default, for weights."""

    per_channel = True

    def __init__(self, ch_axis: int = 0, dtype: str = "int8", qscheme: str = "per_channel_symmetric",
                 quant_min: int | None = None, quant_max: int | None = None, eps: float = _EPS,
                 name: str | None = None, *, reduce_range: bool = False):
        super().__init__(dtype, qscheme, quant_min, quant_max, eps, name, reduce_range=reduce_range)
        if isinstance(ch_axis, bool) or not isinstance(ch_axis, (int, numpy.integer)):
            raise ValueError(f"{type(self).__name__}: ch_axis must be an int, got {ch_axis!r}")
        self.ch_axis = int(ch_axis)
        self.reset_min_max_vals()

    def reset_min_max_vals(self) -> None:
        self.register_buffer("min_val", backend.xp.zeros((0,), numpy.float32))
        self.register_buffer("max_val", backend.xp.zeros((0,), numpy.float32))

    def forward(self, x):
        """Record each channel's range in ``x``; return ``x`` unchanged."""
        values = _values(x)
        if not values.size:
            return x
        if not -values.ndim <= self.ch_axis < values.ndim:
            raise ShapeError(f"{self._label()}: ch_axis {self.ch_axis} is not an axis of an input of shape "
                             f"{tuple(values.shape)}")
        rows = backend.xp.moveaxis(values, self.ch_axis, 0).reshape(values.shape[self.ch_axis], -1)
        low, high = rows.min(axis=1), rows.max(axis=1)
        if self.min_val.size and self.min_val.shape != low.shape:
            raise ShapeError(f"{self._label()}: an input of shape {tuple(values.shape)} has {low.shape[0]} "
                             f"channels along axis {self.ch_axis}; earlier inputs had {self.min_val.shape[0]}")
        self._update(low, high)
        return x

    def _update(self, low, high) -> None:
        if self.min_val.size:
            low, high = backend.xp.minimum(low, self.min_val), backend.xp.maximum(high, self.max_val)
        self.min_val, self.max_val = low, high

    def _fit_to_state(self, prefix: str, state: dict) -> list:
        """A never-observed observer takes the number of channels of the state's ``min_val``
        and ``max_val`` before a load, as PyTorch's, wherever it sits in a model."""
        return [] if self.min_val.size else _fit_buffers(self, ("min_val", "max_val"), prefix, state)

    def get_config(self) -> dict:
        """The settings, and ``channels``: how many channels the observed range has (0 before the
        first input), the length of the buffers a state dict fills."""
        return {"ch_axis": self.ch_axis, **super().get_config(), "channels": int(self.min_val.size)}

    @classmethod
    def from_config(cls, config: dict) -> PerChannelMinMaxObserver:
        config = dict(config)
        channels = config.pop("channels", 0)
        observer = cls(**config)
        if channels:
            observer.min_val = backend.xp.zeros((channels,), numpy.float32)
            observer.max_val = backend.xp.zeros((channels,), numpy.float32)
        return observer

    def extra_repr(self) -> str:
        return f"ch_axis={self.ch_axis}, {super().extra_repr()}"


@register_layer
class MovingAveragePerChannelMinMaxObserver(PerChannelMinMaxObserver):
    """Keeps, per channel along ``ch_axis``, moving averages of the inputs' min and max: the first
    input's own, then m_k <- m_k + c (m_batch,k - m_k) with c = ``averaging_constant``."""

    def __init__(self, averaging_constant: float = 0.01, ch_axis: int = 0, dtype: str = "int8",
                 qscheme: str = "per_channel_symmetric", quant_min: int | None = None, quant_max: int | None = None,
                 eps: float = _EPS, name: str | None = None, *, reduce_range: bool = False):
        super().__init__(ch_axis, dtype, qscheme, quant_min, quant_max, eps, name, reduce_range=reduce_range)
        self.averaging_constant = _check_averaging_constant(averaging_constant, type(self).__name__)

    def _update(self, low, high) -> None:
        _moving_average(self, low, high)

    def get_config(self) -> dict:
        return {"averaging_constant": self.averaging_constant, **super().get_config()}

    def extra_repr(self) -> str:
        return f"averaging_constant={self.averaging_constant}, {super().extra_repr()}"


@register_layer
class FixedQParamsObserver(_Observer):
    """Observes nothing: its parameters are the ``scale`` and ``zero_point`` it was given (buffers),
    as PyTorch's, for outputs whose range is known beforehand (a sigmoid's [0, 1]: scale 1/256,
    zero point 0). Per tensor only."""

    def __init__(self, scale: float, zero_point: int, dtype: str = "uint8", qscheme: str = "per_tensor_affine",
                 quant_min: int | None = None, quant_max: int | None = None, name: str | None = None):
        super().__init__(dtype, qscheme, quant_min, quant_max, name=name)
        who = type(self).__name__
        if isinstance(scale, bool) or not isinstance(scale, (int, float, numpy.floating)) or not 0 < scale < numpy.inf:
            raise ValueError(f"{who}: scale must be a positive finite number, got {scale!r}")
        if isinstance(zero_point, bool) or not isinstance(zero_point, (int, numpy.integer)) \
                or not self.quant_min <= zero_point <= self.quant_max:
            raise ValueError(f"{who}: zero_point must be an int in [quant_min, quant_max] = "
                             f"[{self.quant_min}, {self.quant_max}], got {zero_point!r}")
        self.register_buffer("scale", backend.xp.asarray(numpy.float32(scale)).reshape(()))
        self.register_buffer("zero_point", backend.xp.asarray(numpy.int64(zero_point)).reshape(()))

    def forward(self, x):
        """Return ``x`` unchanged."""
        return x

    def calculate_qparams(self):
        """The fixed (scale, zero_point), 0-d arrays."""
        return self.scale, self.zero_point

    def get_config(self) -> dict:
        config = super().get_config()
        del config["eps"], config["reduce_range"]
        return {"scale": float(self.scale), "zero_point": int(self.zero_point), **config}

    def extra_repr(self) -> str:
        return f"scale={float(self.scale):.6g}, zero_point={int(self.zero_point)}, {super().extra_repr()}"


class _PassThroughObserver(Module):
    """An observer that records nothing and only carries its settings (the dtype of a later
    conversion): the identity, with no quantization parameters to give."""

    def __init__(self, dtype: str, name: str | None = None):
        super().__init__(name=name)
        if not isinstance(dtype, str):
            raise ValueError(f"{type(self).__name__}: dtype must be a str (such as 'float16'), got {dtype!r}")
        self.dtype = dtype
        self.built = True

    def forward(self, x):
        """Return ``x`` unchanged."""
        return x

    def calculate_qparams(self):
        raise RuntimeError(f"{self._label()}: calculate_qparams is not defined for an observer that records nothing; "
                           "use MinMaxObserver or another observer that watches its inputs")

    def get_config(self) -> dict:
        return {"dtype": self.dtype, "name": self.name}

    def extra_repr(self) -> str:
        return f"dtype={self.dtype}"


@register_layer
class NoopObserver(_PassThroughObserver):
    """PyTorch's NoopObserver: the identity, carrying a dtype (float16 by default)."""

    def __init__(self, dtype: str = "float16", name: str | None = None):
        super().__init__(dtype, name)


@register_layer
class PlaceholderObserver(_PassThroughObserver):
    """PyTorch's PlaceholderObserver: the identity, carrying a dtype (float32 by default) and
    ``is_dynamic`` (the later quantization takes each input's own range)."""

    def __init__(self, dtype: str = "float32", is_dynamic: bool = False, name: str | None = None):
        super().__init__(dtype, name)
        self.is_dynamic = bool(is_dynamic)

    def get_config(self) -> dict:
        return {**super().get_config(), "is_dynamic": self.is_dynamic}

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, is_dynamic={self.is_dynamic}"


@register_layer
class FakeQuantize(Module):
    """Observe, then fake-quantize (see the module's docstring). Buffers ``scale`` and
    ``zero_point`` hold the parameters in use (one per channel for a per-channel observer).
    ``enable_observer``/``disable_observer`` and ``enable_fake_quant``/``disable_fake_quant``
    switch either step off (without fake quantization the module is the identity)."""

    def __init__(self, observer: _Observer | None = None, observe_in_eval: bool = False, name: str | None = None):
        super().__init__(name=name)
        observer = MovingAverageMinMaxObserver() if observer is None else observer
        if not isinstance(observer, _Observer):
            raise ValueError(f"FakeQuantize: observer must be one of lamina's observers, got {type(observer).__name__}")
        self.observer = observer
        self.observe_in_eval = bool(observe_in_eval)
        self.observer_enabled = True
        self.fake_quant_enabled = True
        scale, zero_point = observer.calculate_qparams()
        self.register_buffer("scale", scale)
        self.register_buffer("zero_point", zero_point)
        self.built = True

    @property
    def quant_min(self) -> int:
        return self.observer.quant_min

    @property
    def quant_max(self) -> int:
        return self.observer.quant_max

    @property
    def per_channel(self) -> bool:
        return self.observer.per_channel

    def enable_observer(self, enabled: bool = True) -> FakeQuantize:
        self.observer_enabled = bool(enabled)
        return self

    def disable_observer(self) -> FakeQuantize:
        return self.enable_observer(False)

    def enable_fake_quant(self, enabled: bool = True) -> FakeQuantize:
        self.fake_quant_enabled = bool(enabled)
        return self

    def disable_fake_quant(self) -> FakeQuantize:
        return self.enable_fake_quant(False)

    def _fit_to_state(self, prefix: str, state: dict) -> list:
        """Over a per-channel observer, ``scale`` and ``zero_point`` that have no channels yet (0-d,
        nothing observed) take the number of channels of the state's before a load (the observer
        fits its own range, whichever of the two is visited first)."""
        if not isinstance(self.observer, PerChannelMinMaxObserver) or self.scale.ndim:
            return []
        return _fit_buffers(self, ("scale", "zero_point"), prefix, state)

    def calculate_qparams(self):
        """The observer's (scale, zero_point) for what it has seen, as PyTorch's FakeQuantize gives."""
        return self.observer.calculate_qparams()

    def observe(self, x) -> None:
        """Show ``x`` to the observer and take its new parameters; a range that saw NaN (a NaN
        scale) is refused with a ValueError naming the channels, and the parameters stay as they were."""
        self.observer(x)
        self._take_qparams()

    def _take_qparams(self) -> None:
        """``scale`` and ``zero_point`` from the observer's range (see :meth:`observe`)."""
        scale, zero_point = self._qparams()
        nan = numpy.isnan(backend.to_numpy(scale))
        if nan.any():
            where = f"channels {numpy.flatnonzero(nan).tolist()} along axis {self.observer.ch_axis}" \
                if self.per_channel else "the range"
            raise ValueError(f"{self._label()}: {self.observer._label()} saw NaN in {where}, so it has no scale "
                             "(NaN); expected inputs without NaN")
        self.scale, self.zero_point = scale, zero_point

    def _qparams(self):
        """The (scale, zero_point) the buffers take after an observation."""
        return self.observer.calculate_qparams()

    def forward(self, x):
        if self.observer_enabled and (self.training or self.observe_in_eval):
            self.observe(x)
        if not self.fake_quant_enabled:
            return x
        return self._fake_quantize(x, "run it in training mode first")

    def _fake_quantize(self, x, remedy: str):
        """x fake-quantized with the buffers (``remedy`` ends the error of an unobserved per-channel range)."""
        if self.per_channel:
            if self.scale.ndim == 0 or not self.scale.size:
                raise RuntimeError(f"{self._label()}: a per-channel fake quantization has observed nothing yet, so it "
                                   f"has no per-channel parameters; {remedy}")
            return fake_quantize_per_channel(x, self.scale, self.zero_point, self.observer.ch_axis, self.quant_min,
                                             self.quant_max)
        return fake_quantize_per_tensor(x, self.scale, self.zero_point, self.quant_min, self.quant_max)

    def get_config(self) -> dict:
        return {"observer": layer_to_config(self.observer), "observe_in_eval": self.observe_in_eval,
                "observer_enabled": self.observer_enabled, "fake_quant_enabled": self.fake_quant_enabled,
                "name": self.name}

    @classmethod
    def from_config(cls, config: dict) -> FakeQuantize:
        """A fake quantization whose ``scale`` and ``zero_point`` have the shapes the observer's
        (placeholder) range gives them; a state dict then fills both."""
        config = dict(config)
        observer_enabled, fake_quant_enabled = config.pop("observer_enabled"), config.pop("fake_quant_enabled")
        fake_quant = cls(layer_from_config(config.pop("observer")), **config)
        return fake_quant.enable_observer(observer_enabled).enable_fake_quant(fake_quant_enabled)

    def extra_repr(self) -> str:
        return (f"quant_min={self.quant_min}, quant_max={self.quant_max}, observer_enabled={self.observer_enabled}, "
                f"fake_quant_enabled={self.fake_quant_enabled}")


@register_layer
class FusedMovingAvgObsFakeQuantize(FakeQuantize):
    """``torch.ao.quantization.FusedMovingAvgObsFakeQuantize``: a :class:`FakeQuantize` over a
    moving-average min-max observer that, as PyTorch's fused op, observes whenever its observer is
    enabled, in training and in evaluation alike, and takes its ``scale`` and ``zero_point`` by
    the fused op's own rule (:func:`fused_qparams`; :meth:`calculate_qparams` still gives the
    observer's, as PyTorch's). ``observer`` is the observer's class
    (:class:`MovingAverageMinMaxObserver`, the default, or :class:`MovingAveragePerChannelMinMaxObserver`)
    built with ``quant_min``, ``quant_max`` and ``observer_kwargs`` (``averaging_constant``,
    ``dtype``, ``qscheme``, ``ch_axis``, ...), or an instance of one of them."""

    def __init__(self, observer=MovingAverageMinMaxObserver, quant_min: int | None = 0, quant_max: int | None = 255,
                 name: str | None = None, **observer_kwargs):
        if isinstance(observer, type) and issubclass(observer, _MOVING_AVERAGE_OBSERVERS):
            observer = observer(quant_min=quant_min, quant_max=quant_max, **observer_kwargs)
        elif observer_kwargs:
            raise ValueError(f"FusedMovingAvgObsFakeQuantize: observer keywords {sorted(observer_kwargs)} need an "
                             f"observer class, got an instance of {type(observer).__name__}")
        if not isinstance(observer, _MOVING_AVERAGE_OBSERVERS):
            what = observer.__name__ if isinstance(observer, type) else type(observer).__name__
            raise ValueError(f"FusedMovingAvgObsFakeQuantize: observer must be MovingAverageMinMaxObserver or "
                             f"MovingAveragePerChannelMinMaxObserver (a class or an instance), got {what}")
        if observer.qscheme.endswith("symmetric") and observer.quant_max - observer.quant_min < 2:
            raise ValueError(f"FusedMovingAvgObsFakeQuantize: a symmetric quantization needs at least three integers, "
                             f"got [{observer.quant_min}, {observer.quant_max}]")
        super().__init__(observer, observe_in_eval=True, name=name)

    def forward(self, x):
        """As PyTorch's fused op: the observer (when enabled) updates its range, then (when fake
        quantization is enabled) ``scale`` and ``zero_point`` are taken from the range, whatever it
        holds, and x is fake-quantized with them; the buffers stay as they were otherwise."""
        if self.observer_enabled:
            self.observer(x)
        if not self.fake_quant_enabled:
            return x
        if not (self.per_channel and not self.observer.min_val.size):
            self._take_qparams()
        return self._fake_quantize(x, "enable its observer")

    def _qparams(self):
        observer = self.observer
        return fused_qparams(observer.min_val, observer.max_val, observer.quant_min, observer.quant_max,
                             observer.qscheme.endswith("symmetric"))

    def get_config(self) -> dict:
        config = super().get_config()
        del config["observe_in_eval"]
        return config


_MOVING_AVERAGE_OBSERVERS = (MovingAverageMinMaxObserver, MovingAveragePerChannelMinMaxObserver)


# -- PyTorch's default observers and fake quantizations (fresh modules, one per call) --------------

def default_observer() -> MinMaxObserver:
    """``torch.ao.quantization.default_observer``: min-max, uint8 affine to 0..127."""
    return MinMaxObserver(quant_min=0, quant_max=127)


def default_weight_observer() -> MinMaxObserver:
    """``default_weight_observer``: min-max, int8 symmetric per tensor."""
    return MinMaxObserver("int8", "per_tensor_symmetric")


def default_per_channel_weight_observer() -> PerChannelMinMaxObserver:
    """``default_per_channel_weight_observer``: min-max per channel along axis 0, int8 symmetric."""
    return PerChannelMinMaxObserver(0, "int8", "per_channel_symmetric")


def weight_observer_range_neg_127_to_127() -> MinMaxObserver:
    """``weight_observer_range_neg_127_to_127``: int8 symmetric to -127..127, eps 2^-12."""
    return MinMaxObserver("int8", "per_tensor_symmetric", -127, 127, eps=2 ** -12)


def per_channel_weight_observer_range_neg_127_to_127() -> PerChannelMinMaxObserver:
    """``per_channel_weight_observer_range_neg_127_to_127``: as above, per channel along axis 0."""
    return PerChannelMinMaxObserver(0, "int8", "per_channel_symmetric", -127, 127, eps=2 ** -12)


def default_fixed_qparams_range_0to1_observer() -> FixedQParamsObserver:
    """``default_fixed_qparams_range_0to1_observer``: [0, 1) as uint8, s = 1/256, z = 0 (a sigmoid's output)."""
    return FixedQParamsObserver(1 / 256, 0)


def default_fixed_qparams_range_neg1to1_observer() -> FixedQParamsObserver:
    """``default_fixed_qparams_range_neg1to1_observer``: [-1, 1) as uint8, s = 2/256, z = 128 (a tanh's output)."""
    return FixedQParamsObserver(2 / 256, 128)


def default_fake_quant() -> FakeQuantize:
    """``default_fake_quant``: activations, moving-average min-max, uint8 affine with ``reduce_range``
    (0..127)."""
    return FakeQuantize(MovingAverageMinMaxObserver(quant_min=0, quant_max=255, reduce_range=True))


def default_weight_fake_quant() -> FakeQuantize:
    """``default_weight_fake_quant``: weights, moving-average min-max, int8 symmetric per tensor,
    observing in evaluation too."""
    observer = MovingAverageMinMaxObserver(dtype="int8", qscheme="per_tensor_symmetric", quant_min=-128, quant_max=127)
    return FakeQuantize(observer, observe_in_eval=True)


def default_per_channel_weight_fake_quant() -> FakeQuantize:
    """``default_per_channel_weight_fake_quant``: weights, moving-average min-max per channel along
    axis 0, int8 symmetric, observing in evaluation too."""
    observer = MovingAveragePerChannelMinMaxObserver(0.01, 0, "int8", "per_channel_symmetric", -128, 127)
    return FakeQuantize(observer, observe_in_eval=True)


def default_fused_act_fake_quant() -> FusedMovingAvgObsFakeQuantize:
    """``default_fused_act_fake_quant``: activations, moving-average min-max, uint8 affine 0..255."""
    return FusedMovingAvgObsFakeQuantize(MovingAverageMinMaxObserver, 0, 255, dtype="uint8")


def default_fused_wt_fake_quant() -> FusedMovingAvgObsFakeQuantize:
    """``default_fused_wt_fake_quant``: weights, moving-average min-max, int8 symmetric per tensor."""
    return FusedMovingAvgObsFakeQuantize(MovingAverageMinMaxObserver, -128, 127, dtype="int8",
                                         qscheme="per_tensor_symmetric")


def default_fused_per_channel_wt_fake_quant() -> FusedMovingAvgObsFakeQuantize:
    """``default_fused_per_channel_wt_fake_quant``: weights, moving-average min-max per channel along
    axis 0, int8 symmetric."""
    return FusedMovingAvgObsFakeQuantize(MovingAveragePerChannelMinMaxObserver, -128, 127, dtype="int8",
                                         qscheme="per_channel_symmetric")
