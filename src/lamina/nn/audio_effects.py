"""Waveform effect layers, torchaudio-style: Fade, Preemphasis, Deemphasis (no weights).
See :mod:`lamina.functional.audio_effects` for the formulas."""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.functional import audio_effects as effects
from lamina.nn.layer import register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["Deemphasis", "Fade", "Preemphasis"]


@register_layer
class Fade(Module):
    """Fades waveforms (..., time) in over ``fade_in_len`` and out over ``fade_out_len`` samples
    with ``fade_shape`` (linear, exponential, logarithmic, quarter_sine, half_sine), as
    ``torchaudio.transforms.Fade``."""

    def __init__(self, fade_in_len: int = 0, fade_out_len: int = 0, fade_shape: str = "linear",
                 name: str | None = None):
        super().__init__(name=name)
        if fade_shape not in effects.FADE_SHAPES:
            raise ValueError(f"Fade: fade_shape must be one of {effects.FADE_SHAPES}, got {fade_shape!r}")
        for what, value in (("fade_in_len", fade_in_len), ("fade_out_len", fade_out_len)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise ValueError(f"Fade: {what} must be an int >= 0, got {value!r}")
        self.fade_in_len, self.fade_out_len, self.fade_shape = fade_in_len, fade_out_len, fade_shape

    def forward(self, waveform) -> Tensor:
        return effects.fade(as_tensor(waveform), self.fade_in_len, self.fade_out_len, self.fade_shape)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"fade_in_len": self.fade_in_len, "fade_out_len": self.fade_out_len, "fade_shape": self.fade_shape,
                "name": self.name}


@register_layer
class Preemphasis(Module):
    """y[i] = x[i] - coeff x[i - 1] over the last axis (``torchaudio.transforms.Preemphasis``)."""

    def __init__(self, coeff: float = 0.97, name: str | None = None):
        super().__init__(name=name)
        self.coeff = float(coeff)

    def forward(self, waveform) -> Tensor:
        return effects.preemphasis(as_tensor(waveform), self.coeff)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"coeff": self.coeff, "name": self.name}


@register_layer
class Deemphasis(Preemphasis):
    """y[i] = x[i] + coeff y[i - 1] over the last axis, clamped to [-1, 1]
    (``torchaudio.transforms.Deemphasis``)."""

    def forward(self, waveform) -> Tensor:
        return effects.deemphasis(as_tensor(waveform), self.coeff)
