"""Audio front-end layers, torchaudio-style: waveforms in, (mel) spectrograms and MFCCs out.

Inputs are waveforms (..., samples): (batch, samples) or (batch, channels, samples). The
transforms give (..., freq, frames), frequency before time, so (batch, samples) becomes
(batch, freq, frames); add a trailing axis (``Reshape``) to feed it to 2-D convolutions as a
one-channel NHWC image (batch, freq, frames, 1). The maskings (SpecAugment, Park et al., 2019)
work on such spectrograms (..., freq, frames) and draw one mask per spectrogram, i.e. per
leading index (batch and channel), from :func:`lamina.backend.rng`; they are the identity in
evaluation. None of these layers has weights; all are differentiable.
"""

from __future__ import annotations

import math

import numpy

from lamina import backend
from lamina.autograd import Tensor
from lamina.functional import audio, spectral
from lamina.functional.elementwise import where
from lamina.nn.layer import check_shape_ndim, input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["MFCC", "AmplitudeToDB", "FrequencyMasking", "MelSpectrogram", "Spectrogram", "TimeMasking"]

WINDOWS = {"hann": spectral.hann_window, "hamming": spectral.hamming_window}


def _window_name(window: str, who: str) -> str:
    if window not in WINDOWS:
        raise ValueError(f"{who}: window must be one of {tuple(WINDOWS)}, got {window!r}")
    return window


def _waveform(layer: Module, x) -> Tensor:
    x = as_tensor(x)
    if x.ndim not in (2, 3):
        raise input_error(layer, x, "waveforms (batch, samples) or (batch, channels, samples)")
    return x


class _STFTOptions(Module):
    """The STFT settings shared by the spectrogram layers (torchaudio's defaults)."""

    def __init__(self, n_fft: int, win_length: int | None, hop_length: int | None, window: str, power: float | None,
                 normalized: bool, center: bool, pad_mode: str, name: str | None):
        super().__init__(name=name)
        who = type(self).__name__
        self.n_fft = positive_int(n_fft, f"{who}: n_fft")
        self.win_length = n_fft if win_length is None else positive_int(win_length, f"{who}: win_length")
        self.hop_length = (max(self.win_length // 2, 1) if hop_length is None
                           else positive_int(hop_length, f"{who}: hop_length"))
        self.window = _window_name(window, type(self).__name__)
        self.power, self.normalized, self.center, self.pad_mode = power, bool(normalized), bool(center), pad_mode

    def _window(self, dtype) -> Tensor:
        return WINDOWS[self.window](self.win_length, dtype=dtype)

    def _frames(self, samples: int | None) -> int | None:
        if samples is None:
            return None
        padded = samples + 2 * (self.n_fft // 2) if self.center else samples
        return 1 + (padded - self.n_fft) // self.hop_length

    def _stft_config(self) -> dict:
        return {"n_fft": self.n_fft, "win_length": self.win_length, "hop_length": self.hop_length,
                "window": self.window, "power": self.power, "normalized": self.normalized, "center": self.center,
                "pad_mode": self.pad_mode, "name": self.name}

    def _waveform_shape(self, input_shape) -> tuple:
        return check_shape_ndim(self, input_shape, (2, 3), "waveforms (batch, samples) or (batch, channels, samples)")


@register_layer
class Spectrogram(_STFTOptions):
    """|STFT(x)|^power: (..., samples) -> (..., n_fft // 2 + 1, frames); ``power`` None keeps the
    complex STFT as (..., freq, frames, 2). See :func:`lamina.functional.spectrogram`."""

    def __init__(self, n_fft: int = 400, win_length: int | None = None, hop_length: int | None = None,
                 window: str = "hann", power: float | None = 2.0, normalized: bool = False, center: bool = True,
                 pad_mode: str = "reflect", name: str | None = None):
        super().__init__(n_fft, win_length, hop_length, window, power, normalized, center, pad_mode, name)

    def forward(self, x) -> Tensor:
        x = _waveform(self, x)
        return spectral.spectrogram(x, self.n_fft, self.hop_length, self.win_length, self._window(x.dtype),
                                    self.power, self.normalized, self.center, self.pad_mode)

    def compute_output_shape(self, input_shape):
        shape = self._waveform_shape(input_shape)
        out = shape[:-1] + (self.n_fft // 2 + 1, self._frames(shape[-1]))
        return out + (2,) if self.power is None else out

    def get_config(self) -> dict:
        return self._stft_config()


@register_layer
class MelSpectrogram(_STFTOptions):
    """fb^T |STFT(x)|^power: (..., samples) -> (..., n_mels, frames). See
    :func:`lamina.functional.mel_spectrogram` and :func:`lamina.functional.mel_filterbank`."""

    def __init__(self, sample_rate: int = 16000, n_fft: int = 400, win_length: int | None = None,
                 hop_length: int | None = None, f_min: float = 0.0, f_max: float | None = None, n_mels: int = 128,
                 window: str = "hann", power: float = 2.0, normalized: bool = False, center: bool = True,
                 pad_mode: str = "reflect", norm: str | None = None, mel_scale: str = "htk", name: str | None = None):
        super().__init__(n_fft, win_length, hop_length, window, power, normalized, center, pad_mode, name)
        self.sample_rate = positive_int(sample_rate, "MelSpectrogram: sample_rate")
        self.f_min, self.f_max = float(f_min), None if f_max is None else float(f_max)
        self.n_mels = positive_int(n_mels, "MelSpectrogram: n_mels")
        self.norm, self.mel_scale = norm, mel_scale
        audio.mel_filterbank(self.n_fft // 2 + 1, self.f_min, self._f_max(), self.n_mels, self.sample_rate,
                             norm, mel_scale)      # checks the settings now rather than on the first call

    def _f_max(self) -> float:
        return float(self.sample_rate // 2) if self.f_max is None else self.f_max

    def _mel_options(self) -> dict:
        return {"n_fft": self.n_fft, "win_length": self.win_length, "hop_length": self.hop_length,
                "f_min": self.f_min, "f_max": self.f_max, "n_mels": self.n_mels, "power": self.power,
                "normalized": self.normalized, "center": self.center, "pad_mode": self.pad_mode,
                "norm": self.norm, "mel_scale": self.mel_scale}

    def forward(self, x) -> Tensor:
        x = _waveform(self, x)
        return audio.mel_spectrogram(x, self.sample_rate, window=self._window(x.dtype), **self._mel_options())

    def compute_output_shape(self, input_shape):
        shape = self._waveform_shape(input_shape)
        return shape[:-1] + (self.n_mels, self._frames(shape[-1]))

    def get_config(self) -> dict:
        return {"sample_rate": self.sample_rate, **self._mel_options(), "window": self.window, "name": self.name}


@register_layer
class MFCC(Module):
    """Mel-frequency cepstral coefficients: (..., samples) -> (..., n_mfcc, frames), the DCT-II of
    the log-mel spectrogram (in dB floored ``top_db`` below the maximum, or log(mel + 1e-6) with
    ``log_mels``). ``mel_options`` configure the :class:`MelSpectrogram` (n_mels 128 by default).
    See :func:`lamina.functional.mfcc`."""

    def __init__(self, sample_rate: int = 16000, n_mfcc: int = 40, dct_norm: str | None = "ortho",
                 log_mels: bool = False, top_db: float | None = 80.0, mel_options: dict | None = None,
                 name: str | None = None):
        super().__init__(name=name)
        self.mel_options = dict(mel_options or {})
        self.mel = MelSpectrogram(sample_rate, **self.mel_options)
        self.sample_rate = self.mel.sample_rate
        self.n_mfcc = positive_int(n_mfcc, "MFCC: n_mfcc")
        if n_mfcc > self.mel.n_mels:
            raise ValueError(f"MFCC: n_mfcc={n_mfcc} cannot exceed n_mels={self.mel.n_mels}")
        self.dct_norm, self.log_mels, self.top_db = dct_norm, bool(log_mels), top_db
        audio.dct_matrix(self.n_mfcc, self.mel.n_mels, dct_norm)          # checks dct_norm

    def forward(self, x) -> Tensor:
        return audio.mfcc_from_mel(self.mel(x), self.n_mfcc, self.dct_norm, self.log_mels, self.top_db)

    def compute_output_shape(self, input_shape):
        shape = self.mel.compute_output_shape(input_shape)
        return shape[:-2] + (self.n_mfcc, shape[-1])

    def get_config(self) -> dict:
        return {"sample_rate": self.sample_rate, "n_mfcc": self.n_mfcc, "dct_norm": self.dct_norm,
                "log_mels": self.log_mels, "top_db": self.top_db, "mel_options": dict(self.mel_options),
                "name": self.name}


@register_layer
class AmplitudeToDB(Module):
    """Power (``stype='power'``, 10 log10) or amplitude (``'magnitude'``, 20 log10) spectrograms to
    decibels relative to ``ref_value``, floored ``top_db`` below the maximum when given. See
    :func:`lamina.functional.amplitude_to_db` (whose maximum spans the last three axes)."""

    STYPES = {"power": 10.0, "magnitude": 20.0}

    def __init__(self, stype: str = "power", top_db: float | None = None, amin: float = 1e-10, ref_value: float = 1.0,
                 name: str | None = None):
        super().__init__(name=name)
        if stype not in self.STYPES:
            raise ValueError(f"AmplitudeToDB: stype must be one of {tuple(self.STYPES)}, got {stype!r}")
        if top_db is not None and top_db < 0:
            raise ValueError(f"AmplitudeToDB: top_db must be >= 0, got {top_db!r}")
        self.stype, self.top_db, self.amin, self.ref_value = stype, top_db, float(amin), float(ref_value)

    def forward(self, x) -> Tensor:
        db_multiplier = math.log10(max(self.amin, self.ref_value))
        return audio.amplitude_to_db(as_tensor(x), self.STYPES[self.stype], self.amin, db_multiplier, self.top_db)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"stype": self.stype, "top_db": self.top_db, "amin": self.amin, "ref_value": self.ref_value,
                "name": self.name}


class _AxisMasking(Module):
    """Sets a random band [start, start + width) along ``axis`` (-2 frequency, -1 time) of each
    spectrogram (..., freq, frames) to ``mask_value`` in training: width = floor(u1 W),
    start = floor(u2 (size - u1 W)) with u1, u2 uniform on [0, 1) and W the mask parameter (as
    torchaudio's ``mask_along_axis``). The gradient is zero inside the band."""

    axis = -1

    def __init__(self, mask_param: int, mask_value: float, name: str | None):
        super().__init__(name=name)
        if isinstance(mask_param, bool) or not isinstance(mask_param, int) or mask_param < 0:
            raise ValueError(f"{type(self).__name__}: mask_param must be an int >= 0, got {mask_param!r}")
        self.mask_param, self.mask_value = mask_param, float(mask_value)

    def _largest_width(self, size: int) -> int:
        return self.mask_param

    def forward(self, x) -> Tensor:
        x = as_tensor(x)
        if x.ndim < 2:
            raise input_error(self, x, "spectrograms (..., freq, frames)")
        if not self.training or x.size == 0:
            return x
        xp, rng = backend.xp, backend.rng()
        lead, size = x.shape[:-2], x.shape[self.axis]
        width = numpy.asarray(rng.random(lead)) * self._largest_width(size)
        start = numpy.asarray(rng.random(lead)) * (size - width)
        first, stop = xp.asarray(start.astype(int)), xp.asarray((start + width).astype(int))
        positions = xp.arange(size)
        inside = (positions >= first[..., None]) & (positions < stop[..., None])      # (..., size)
        inside = inside[..., :, None] if self.axis == -2 else inside[..., None, :]
        return where(inside, self.mask_value, x)

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"mask_param": self.mask_param, "mask_value": self.mask_value, "name": self.name}


@register_layer
class FrequencyMasking(_AxisMasking):
    """SpecAugment frequency masking: in training, one band of up to ``mask_param`` frequency rows
    of each spectrogram (..., freq, frames) set to ``mask_value``; the identity in evaluation."""

    axis = -2

    def __init__(self, mask_param: int, mask_value: float = 0.0, name: str | None = None):
        super().__init__(mask_param, mask_value, name)


@register_layer
class TimeMasking(_AxisMasking):
    """SpecAugment time masking: in training, one band of up to min(``mask_param``, p frames) time
    steps of each spectrogram (..., freq, frames) set to ``mask_value``; the identity in evaluation."""

    axis = -1

    def __init__(self, mask_param: int, mask_value: float = 0.0, p: float = 1.0, name: str | None = None):
        super().__init__(mask_param, mask_value, name)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"TimeMasking: p must be in [0, 1], got {p!r}")
        self.p = float(p)

    def _largest_width(self, size: int) -> int:
        return self.mask_param if self.p == 1.0 else min(self.mask_param, int(self.p * size))

    def get_config(self) -> dict:
        return {**super().get_config(), "p": self.p}
