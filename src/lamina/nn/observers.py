"""Observers and fake-quantization modules for quantization-aware training, as ``torch.ao.quantization``.

An observer watches the tensors that pass through it and keeps their range; from the range
[min, max] (widened to hold 0) it gives the scale s and zero point z of a quantization to the
integers [q_min, q_max] (:meth:`calculate_qparams`), the same numbers as PyTorch's observer:

* affine: s = max((max - min) / (q_max - q_min), eps), z = clamp(q_min - round(min / s), q_min, q_max);
* symmetric: s = max(max(-min, max) / ((q_max - q_min) / 2), eps), z = 0 for int8, and for uint8
  128 (the full range) or (q_min + q_max) // 2 (a range of one's own).

:class:`MinMaxObserver` keeps the smallest and largest value seen, :class:`MovingAverageMinMaxObserver`
a moving average of each batch's min and max (m <- m + c (m_batch - m)), and
:class:`PerChannelMinMaxObserver` the min and max of each slice along an axis (for weights).
Before anything is observed the parameters are s = 1, z = 0, as PyTorch's.

:class:`FakeQuantize` puts an observer in front of :func:`lamina.functional.fake_quantize_per_tensor`
(or per channel): in training it observes each input and updates its ``scale`` and
``zero_point`` buffers, then fake-quantizes with them; in evaluation it only fake-quantizes
with the parameters last found (unlike PyTorch's, which observes in both modes unless told
not to) -- ``observe_in_eval=True`` keeps it observing, as for weights.
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

__all__ = ["FakeQuantize", "MinMaxObserver", "MovingAverageMinMaxObserver", "PerChannelMinMaxObserver",
           "calculate_qparams"]

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


def _values(x):
    data = x.data if isinstance(x, Tensor) else backend.xp.asarray(x)
    return data.astype(numpy.float32, copy=False)


class _Observer(Module):
    """The settings every observer shares: the integer type, the scheme, the range, eps."""

    per_channel = False

    def __init__(self, dtype: str = "uint8", qscheme: str = "per_tensor_affine", quant_min: int | None = None,
                 quant_max: int | None = None, eps: float = _EPS, name: str | None = None):
        super().__init__(name=name)
        who = type(self).__name__
        self.dtype = quant_dtype(dtype, who)
        schemes = [s for s in QSCHEMES if s.startswith("per_channel") == self.per_channel]
        if qscheme not in schemes:
            raise ValueError(f"{who}: qscheme must be one of {schemes}, got {qscheme!r}")
        self.qscheme = qscheme
        self.custom_range = quant_min is not None and quant_max is not None
        self.quant_min, self.quant_max = self._check_range(quant_min, quant_max, who)
        self.eps = float(eps)
        self.built = True

    def _check_range(self, quant_min, quant_max, who: str) -> tuple[int, int]:
        full = QUANTIZED_RANGES[self.dtype]
        if not self.custom_range:
            if (quant_min is None) != (quant_max is None):
                raise ValueError(f"{who}: give both quant_min and quant_max, or neither (the full {self.dtype} range)")
            return full
        if not (isinstance(quant_min, int) and isinstance(quant_max, int)) or not quant_min <= 0 <= quant_max \
                or quant_min >= quant_max or quant_min < full[0] or quant_max > full[1]:
            raise ValueError(f"{who}: the range [quant_min, quant_max] must be ints with quant_min <= 0 <= quant_max, "
                             f"quant_min < quant_max, inside the {self.dtype} range {list(full)}; got "
                             f"[{quant_min!r}, {quant_max!r}]")
        return quant_min, quant_max

    @property
    def symmetric(self) -> bool:
        return self.qscheme.endswith("symmetric")

    def _observed(self) -> bool:
        low = self.min_val
        return bool(low.size) and bool(numpy.all(backend.to_numpy(low) <= backend.to_numpy(self.max_val)))

    def calculate_qparams(self):
        """(scale, zero_point) for the range observed so far: 0-d arrays, or one per channel;
        (1, 0) before anything was observed."""
        if not self._observed():
            return numpy.float32(1) + backend.xp.zeros((), numpy.float32), backend.xp.zeros((), numpy.int64)
        return calculate_qparams(self.min_val, self.max_val, self.quant_min, self.quant_max, self.symmetric,
                                 self.dtype, self.eps, self.custom_range)

    def get_config(self) -> dict:
        quant_min, quant_max = (self.quant_min, self.quant_max) if self.custom_range else (None, None)
        return {"dtype": str(self.dtype), "qscheme": self.qscheme, "quant_min": quant_min, "quant_max": quant_max,
                "eps": self.eps, "name": self.name}

    def extra_repr(self) -> str:
        return (f"dtype={self.dtype}, qscheme={self.qscheme}, quant_min={self.quant_min}, "
                f"quant_max={self.quant_max}")


@register_layer
class MinMaxObserver(_Observer):
    """Keeps the smallest and largest value of every input it sees (buffers ``min_val`` and
    ``max_val``, +inf and -inf before the first); see the module's docstring for the parameters."""

    def __init__(self, dtype: str = "uint8", qscheme: str = "per_tensor_affine", quant_min: int | None = None,
                 quant_max: int | None = None, eps: float = _EPS, name: str | None = None):
        super().__init__(dtype, qscheme, quant_min, quant_max, eps, name)
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
                 name: str | None = None):
        super().__init__(dtype, qscheme, quant_min, quant_max, eps, name)
        if not 0 < averaging_constant <= 1:
            raise ValueError(f"MovingAverageMinMaxObserver: averaging_constant must be in (0, 1], "
                             f"got {averaging_constant!r}")
        self.averaging_constant = float(averaging_constant)

    def get_config(self) -> dict:
        return {"averaging_constant": self.averaging_constant, **super().get_config()}

    def _update(self, low, high) -> None:
        if not self._observed():
            self.min_val, self.max_val = backend.xp.asarray(low), backend.xp.asarray(high)
            return
        c = numpy.float32(self.averaging_constant)
        self.min_val = (self.min_val + c * (low - self.min_val)).astype(numpy.float32)
        self.max_val = (self.max_val + c * (high - self.max_val)).astype(numpy.float32)


@register_layer
class PerChannelMinMaxObserver(_Observer):
    """Keeps the min and max of each slice of the inputs along ``ch_axis`` (buffers of one value
    per channel, empty before the first input); symmetric per channel by default, for weights."""

    per_channel = True

    def __init__(self, ch_axis: int = 0, dtype: str = "int8", qscheme: str = "per_channel_symmetric",
                 quant_min: int | None = None, quant_max: int | None = None, eps: float = _EPS,
                 name: str | None = None):
        super().__init__(dtype, qscheme, quant_min, quant_max, eps, name)
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
        if self.min_val.size:
            if self.min_val.shape != low.shape:
                raise ShapeError(f"{self._label()}: an input of shape {tuple(values.shape)} has {low.shape[0]} "
                                 f"channels along axis {self.ch_axis}; earlier inputs had {self.min_val.shape[0]}")
            low, high = backend.xp.minimum(low, self.min_val), backend.xp.maximum(high, self.max_val)
        self.min_val, self.max_val = low, high
        return x

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

    def observe(self, x) -> None:
        """Show ``x`` to the observer and take its new parameters."""
        self.observer(x)
        self.scale, self.zero_point = self.observer.calculate_qparams()

    def forward(self, x):
        if self.observer_enabled and (self.training or self.observe_in_eval):
            self.observe(x)
        if not self.fake_quant_enabled:
            return x
        if self.per_channel:
            if self.scale.ndim == 0:
                raise RuntimeError(f"{self._label()}: a per-channel fake quantization has observed nothing yet, so it "
                                   "has no per-channel parameters; run it in training mode first")
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
