"""Whisper's log-mel front end for 16 kHz audio, 25 ms windows every 10 ms:

    P = |STFT(audio)|^2        n_fft 400, hop 160, periodic Hann, centred (reflect), last frame dropped
    M = log10(max(fb^T P, 1e-10))          fb: Slaney-scale, Slaney-normalised mel filters
    features = (max(M, max(M) - 8) + 4) / 4

One 30 s window (:data:`N_SAMPLES` samples, :func:`pad_or_trim`) gives :data:`N_FRAMES` = 3000
frames; :func:`whisper_sinusoids` are the encoder's fixed positions.
"""

from __future__ import annotations

import math

import numpy as np

from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional.audio import mel_filterbank
from lamina.functional.spectral import spectrogram
from lamina.nn.layer import positive_int
from lamina.nn.module import as_tensor

__all__ = ["CHUNK_SECONDS", "HOP_LENGTH", "N_FFT", "N_FRAMES", "N_SAMPLES", "SAMPLE_RATE", "pad_or_trim",
           "whisper_log_mel_spectrogram", "whisper_sinusoids"]

SAMPLE_RATE = 16000
N_FFT = 400
HOP_LENGTH = 160
CHUNK_SECONDS = 30
N_SAMPLES = CHUNK_SECONDS * SAMPLE_RATE          # 480,000 samples in one 30 s window
N_FRAMES = N_SAMPLES // HOP_LENGTH                 # 3,000 frames in one 30 s window


def pad_or_trim(x, length: int = N_SAMPLES, axis: int = -1):
    """``x`` (a NumPy array or a Tensor) cut or zero-padded at the end of ``axis`` to ``length``
    entries: audio to one 30 s window (the default), or features to :data:`N_FRAMES` frames."""
    length = positive_int(length, "pad_or_trim: length")
    if isinstance(x, Tensor):
        size = x.shape[axis]
        if size > length:
            return F.index_select(x, axis, np.arange(length))
        if size < length:
            widths = [(0, 0)] * x.ndim
            widths[axis] = (0, length - size)
            return F.pad(x, tuple(widths))
        return x
    x = np.asarray(x)
    size = x.shape[axis]
    if size > length:
        return np.take(x, np.arange(length), axis=axis)
    widths = [(0, 0)] * x.ndim
    widths[axis] = (0, length - size)
    return np.pad(x, widths)


def whisper_log_mel_spectrogram(audio, n_mels: int = 80, padding: int = 0) -> Tensor:
    """Whisper's log-mel features (..., n_mels, frames) of 16 kHz ``audio`` (..., samples)
    (see the module docstring): one frame per 160 samples, the STFT's last frame dropped, so
    :func:`pad_or_trim` (audio) gives :data:`N_FRAMES` frames, as Hugging Face's
    ``WhisperFeatureExtractor``. The floor max - 8 takes the maximum over each example's
    (n_mels, frames). ``padding`` zero samples are appended first. Differentiable in ``audio``."""
    n_mels = positive_int(n_mels, "whisper_log_mel_spectrogram: n_mels")
    x = as_tensor(audio)
    if x.ndim < 1 or x.shape[-1] < N_FFT // 2 + 1:
        raise ShapeError(f"whisper_log_mel_spectrogram: expected audio (..., samples) with more than {N_FFT // 2} "
                         f"samples (the reflect padding of the STFT), got shape {tuple(x.shape)}")
    if padding:
        x = F.pad(x, ((0, 0),) * (x.ndim - 1) + ((0, int(padding)),))
    power = spectrogram(x, N_FFT, HOP_LENGTH, power=2.0)[..., :-1]
    filters = mel_filterbank(N_FFT // 2 + 1, 0.0, SAMPLE_RATE / 2, n_mels, SAMPLE_RATE, norm="slaney",
                             mel_scale="slaney", dtype=x.dtype)
    mel = F.matmul(F.transpose(filters, 1, 0), power)
    log_mel = F.mul(F.log(F.clip(mel, 1e-10, None)), 1.0 / math.log(10.0))
    log_mel = F.maximum(log_mel, F.sub(F.max(log_mel, axis=(-2, -1), keepdims=True), 8.0))
    return F.div(F.add(log_mel, 4.0), 4.0)


def whisper_sinusoids(length: int, channels: int, max_timescale: float = 10000.0, dtype=None) -> np.ndarray:
    """Whisper's fixed encoder positions (length, channels): [sin(t w_i) | cos(t w_i)] with
    w_i = max_timescale^(-i / (channels / 2 - 1)), i = 0 .. channels / 2 - 1."""
    if channels % 2 or channels < 4:
        raise ValueError(f"whisper_sinusoids: channels must be an even number >= 4, got {channels}")
    step = math.log(max_timescale) / (channels // 2 - 1)
    angles = np.arange(length)[:, None] * np.exp(-step * np.arange(channels // 2))[None, :]
    table = np.concatenate([np.sin(angles), np.cos(angles)], axis=1)
    return table if dtype is None else table.astype(dtype)
