"""Audio synthesis layers, torchaudio-style: spectrograms back to waveforms, mu-law, resampling.

:class:`GriffinLim` and :class:`InverseMelScale` undo :class:`lamina.nn.Spectrogram` and the
mel projection of :class:`lamina.nn.MelSpectrogram`; :class:`MuLawEncoding` /
:class:`MuLawDecoding` compand waveforms in [-1, 1] to integer codes and back;
:class:`Resample` changes the sampling rate with a windowed-sinc kernel built once. None of
them has weights. See :mod:`lamina.functional.audio_synthesis` for the formulas.
"""

from __future__ import annotations

from lamina.autograd import Tensor
from lamina.functional import audio_synthesis as synthesis
from lamina.functional.activation import relu
from lamina.functional.arithmetic import matmul
from lamina.nn.audio import WINDOWS, _window_name
from lamina.nn.layer import input_error, positive_int, register_layer
from lamina.nn.module import Module, as_tensor

__all__ = ["GriffinLim", "InverseMelScale", "MuLawDecoding", "MuLawEncoding", "Resample"]


@register_layer
class GriffinLim(Module):
    """A waveform (..., time) from a power (``power`` 2) or magnitude (1) spectrogram (...,
    n_fft // 2 + 1, frames) by ``n_iter`` fast Griffin-Lim iterations with ``momentum``, as
    ``torchaudio.transforms.GriffinLim``; ``seed`` fixes the random initial phase (``rand_init``).
    See :func:`lamina.functional.griffinlim`."""

    def __init__(self, n_fft: int = 400, n_iter: int = 32, win_length: int | None = None,
                 hop_length: int | None = None, window: str = "hann", power: float = 2.0, momentum: float = 0.99,
                 length: int | None = None, rand_init: bool = True, seed: int | None = None,
                 name: str | None = None):
        super().__init__(name=name)
        self.n_fft = positive_int(n_fft, "GriffinLim: n_fft")
        if isinstance(n_iter, bool) or not isinstance(n_iter, int) or n_iter < 0:
            raise ValueError(f"GriffinLim: n_iter must be an int >= 0, got {n_iter!r}")
        self.n_iter = n_iter
        self.win_length = self.n_fft if win_length is None else positive_int(win_length, "GriffinLim: win_length")
        if self.win_length > self.n_fft:
            raise ValueError(f"GriffinLim: win_length={self.win_length} must not exceed n_fft={self.n_fft}")
        self.hop_length = (max(self.win_length // 2, 1) if hop_length is None
                           else positive_int(hop_length, "GriffinLim: hop_length"))
        self.window = _window_name(window, "GriffinLim")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"GriffinLim: momentum must be in [0, 1), got {momentum!r}")
        if not power > 0:
            raise ValueError(f"GriffinLim: power must be > 0, got {power!r}")
        self.power, self.momentum, self.length = float(power), float(momentum), length
        self.rand_init, self.seed = bool(rand_init), seed

    def forward(self, specgram) -> Tensor:
        spec = as_tensor(specgram)
        if spec.ndim < 2 or spec.shape[-2] != self.n_fft // 2 + 1:
            raise input_error(self, spec, f"spectrograms (..., n_fft // 2 + 1 = {self.n_fft // 2 + 1}, frames)")
        window = WINDOWS[self.window](self.win_length, dtype=spec.dtype)
        return synthesis.griffinlim(spec, self.n_fft, self.hop_length, self.win_length, window, self.power,
                                    self.n_iter, self.momentum, self.length, self.rand_init, self.seed)

    def get_config(self) -> dict:
        return {"n_fft": self.n_fft, "n_iter": self.n_iter, "win_length": self.win_length,
                "hop_length": self.hop_length, "window": self.window, "power": self.power,
                "momentum": self.momentum, "length": self.length, "rand_init": self.rand_init, "seed": self.seed,
                "name": self.name}


@register_layer
class InverseMelScale(Module):
    """A non-negative linear spectrogram (..., n_stft, frames) from a mel spectrogram (...,
    n_mels, frames): relu(pinv(fb^T) M), as ``torchaudio.transforms.InverseMelScale`` (>= 2.1,
    least squares then clamping). The pseudo-inverse is computed once, in float64."""

    def __init__(self, n_stft: int, n_mels: int = 128, sample_rate: int = 16000, f_min: float = 0.0,
                 f_max: float | None = None, norm: str | None = None, mel_scale: str = "htk",
                 name: str | None = None):
        super().__init__(name=name)
        self.n_stft = positive_int(n_stft, "InverseMelScale: n_stft")
        self.n_mels = positive_int(n_mels, "InverseMelScale: n_mels")
        self.sample_rate = positive_int(sample_rate, "InverseMelScale: sample_rate")
        self.f_min, self.f_max = float(f_min), None if f_max is None else float(f_max)
        self.norm, self.mel_scale = norm, mel_scale
        self._pinv = synthesis.inverse_mel_matrix(self.n_stft, self.n_mels, self.sample_rate, self.f_min,
                                                  self.f_max, norm, mel_scale, dtype="float64")

    def forward(self, melspec) -> Tensor:
        mel = as_tensor(melspec)
        if mel.ndim < 2 or mel.shape[-2] != self.n_mels:
            raise input_error(self, mel, f"mel spectrograms (..., n_mels = {self.n_mels}, frames)")
        pinv = Tensor._wrap(self._pinv.data.astype(mel.dtype))
        return relu(matmul(pinv, mel))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape[:-2]) + (self.n_stft, input_shape[-1])

    def get_config(self) -> dict:
        return {"n_stft": self.n_stft, "n_mels": self.n_mels, "sample_rate": self.sample_rate, "f_min": self.f_min,
                "f_max": self.f_max, "norm": self.norm, "mel_scale": self.mel_scale, "name": self.name}


class _MuLaw(Module):
    def __init__(self, quantization_channels: int, name: str | None):
        super().__init__(name=name)
        synthesis._mu(quantization_channels, type(self).__name__)
        self.quantization_channels = quantization_channels

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)

    def get_config(self) -> dict:
        return {"quantization_channels": self.quantization_channels, "name": self.name}


@register_layer
class MuLawEncoding(_MuLaw):
    """Waveforms in [-1, 1] to int64 mu-law codes in [0, quantization_channels); see
    :func:`lamina.functional.mu_law_encoding`."""

    def __init__(self, quantization_channels: int = 256, name: str | None = None):
        super().__init__(quantization_channels, name)

    def forward(self, x) -> Tensor:
        return synthesis.mu_law_encoding(as_tensor(x), self.quantization_channels)


@register_layer
class MuLawDecoding(_MuLaw):
    """Mu-law codes in [0, quantization_channels) to waveforms in [-1, 1]; see
    :func:`lamina.functional.mu_law_decoding`."""

    def __init__(self, quantization_channels: int = 256, name: str | None = None):
        super().__init__(quantization_channels, name)

    def forward(self, x) -> Tensor:
        return synthesis.mu_law_decoding(as_tensor(x), self.quantization_channels)


@register_layer
class Resample(Module):
    """Waveforms (..., time) at ``orig_freq`` to ``new_freq`` (..., ceil(time new / orig)) by
    windowed-sinc interpolation, as ``torchaudio.transforms.Resample``; the kernel is built once
    (float64, cast per call). See :func:`lamina.functional.resample`."""

    def __init__(self, orig_freq: int = 16000, new_freq: int = 16000, resampling_method: str = "sinc_interp_hann",
                 lowpass_filter_width: int = 6, rolloff: float = 0.99, beta: float | None = None,
                 name: str | None = None):
        super().__init__(name=name)
        self.orig_freq, self.new_freq = synthesis._check_rates(orig_freq, new_freq, "Resample")
        self.resampling_method, self.lowpass_filter_width = resampling_method, lowpass_filter_width
        self.rolloff, self.beta = float(rolloff), beta
        self._kernel, self._width = synthesis.resample_kernel(self.orig_freq, self.new_freq, lowpass_filter_width,
                                                              rolloff, resampling_method, beta, dtype="float64")
        self._cast = {}

    def _kernel_for(self, dtype) -> Tensor:
        key = str(dtype)
        if key not in self._cast:
            self._cast[key] = Tensor._wrap(self._kernel.data.astype(dtype))
        return self._cast[key]

    def forward(self, waveform) -> Tensor:
        x = as_tensor(waveform)
        if self.orig_freq == self.new_freq:
            return x
        return synthesis.apply_resample_kernel(x, self.orig_freq, self.new_freq, self._kernel_for(x.dtype),
                                               self._width)

    def get_config(self) -> dict:
        return {"orig_freq": self.orig_freq, "new_freq": self.new_freq, "resampling_method": self.resampling_method,
                "lowpass_filter_width": self.lowpass_filter_width, "rolloff": self.rolloff, "beta": self.beta,
                "name": self.name}
