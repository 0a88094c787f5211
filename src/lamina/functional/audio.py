"""Audio features on spectrograms, as torchaudio computes them: mel filter banks, decibels, MFCCs.

Mel scales (``mel_scale``):

    htk       m = 2595 log10(1 + f / 700)
    slaney    m = 3 f / 200 below 1 kHz, 15 + 27 ln(f / 1000) / ln(6.4) above (linear, then logarithmic)

A filter bank has n_mels triangles whose corners are n_mels + 2 points equally spaced in mels
between f_min and f_max; filter m rises from corner m to corner m + 1 and falls to corner m + 2,
evaluated at the n_freqs STFT bin frequencies linspace(0, sample_rate // 2, n_freqs). With
``norm='slaney'`` each triangle is divided by its width in Hz over 2 (equal area).

Decibels: dB = multiplier log10(max(x, amin)) - multiplier log10(max(amin, ref)), floored at
(max dB - top_db) when top_db is given. MFCCs are the DCT-II (over the mel axis) of the
log-mel spectrogram.

Spectrograms are (..., freq, frames): frequency second to last, time last, as torchaudio's.
"""

from __future__ import annotations

import math

from lamina import backend
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import elementwise, reduce, shape
from lamina.functional.arithmetic import matmul
from lamina.functional.spectral import spectrogram

__all__ = ["amplitude_to_db", "dct_matrix", "hz_to_mel", "mel_filterbank", "mel_spectrogram", "mel_to_hz", "mfcc",
           "mfcc_from_mel"]

MEL_SCALES = ("htk", "slaney")

_SLANEY_LINEAR_HZ = 200.0 / 3        # Hz per mel below the break
_SLANEY_BREAK_HZ = 1000.0
_SLANEY_BREAK_MEL = _SLANEY_BREAK_HZ / _SLANEY_LINEAR_HZ     # 15
_SLANEY_LOG_STEP = math.log(6.4) / 27.0


def _check_scale(mel_scale: str, op: str) -> None:
    if mel_scale not in MEL_SCALES:
        raise ValueError(f"{op}: mel_scale must be one of {MEL_SCALES}, got {mel_scale!r}")


def hz_to_mel(freqs, mel_scale: str = "htk"):
    """Frequencies in Hz (an array or a number) to mels on the ``mel_scale``."""
    _check_scale(mel_scale, "hz_to_mel")
    xp = backend.xp
    f = xp.asarray(freqs, dtype=xp.float64)
    if mel_scale == "htk":
        return 2595.0 * xp.log10(1.0 + f / 700.0)
    above = _SLANEY_BREAK_MEL + xp.log(xp.maximum(f, _SLANEY_BREAK_HZ) / _SLANEY_BREAK_HZ) / _SLANEY_LOG_STEP
    return xp.where(f >= _SLANEY_BREAK_HZ, above, f / _SLANEY_LINEAR_HZ)


def mel_to_hz(mels, mel_scale: str = "htk"):
    """Mels on the ``mel_scale`` (an array or a number) to frequencies in Hz."""
    _check_scale(mel_scale, "mel_to_hz")
    xp = backend.xp
    m = xp.asarray(mels, dtype=xp.float64)
    if mel_scale == "htk":
        return 700.0 * (10.0 ** (m / 2595.0) - 1.0)
    above = _SLANEY_BREAK_HZ * xp.exp(_SLANEY_LOG_STEP * (xp.maximum(m, _SLANEY_BREAK_MEL) - _SLANEY_BREAK_MEL))
    return xp.where(m >= _SLANEY_BREAK_MEL, above, m * _SLANEY_LINEAR_HZ)


def mel_filterbank(n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int,
                   norm: str | None = None, mel_scale: str = "htk", dtype=None) -> Tensor:
    """Triangular mel filters (n_freqs, n_mels), as ``torchaudio.functional.melscale_fbanks``:

        fb[k, m] = max(0, min((f_k - c_m) / (c_{m+1} - c_m), (c_{m+2} - f_k) / (c_{m+2} - c_{m+1})))

    f_k = k (sample_rate // 2) / (n_freqs - 1) the bin frequencies, c the n_mels + 2 corners equally
    spaced in mels over [f_min, f_max]; ``norm='slaney'`` multiplies filter m by 2 / (c_{m+2} - c_m).
    A spectrogram (..., n_freqs, frames) maps to mels by fb^T @ spec."""
    _check_scale(mel_scale, "mel_filterbank")
    if norm not in (None, "slaney"):
        raise ValueError(f"mel_filterbank: norm must be None or 'slaney', got {norm!r}")
    if n_freqs < 2 or n_mels < 1:
        raise ValueError(f"mel_filterbank: need n_freqs >= 2 and n_mels >= 1, got n_freqs={n_freqs}, n_mels={n_mels}")
    if not 0.0 <= f_min < f_max:
        raise ValueError(f"mel_filterbank: need 0 <= f_min < f_max, got f_min={f_min}, f_max={f_max}")
    xp = backend.xp
    bins = xp.linspace(0.0, float(sample_rate // 2), n_freqs)
    mels = xp.linspace(hz_to_mel(f_min, mel_scale), hz_to_mel(f_max, mel_scale), n_mels + 2)
    corners = mel_to_hz(mels, mel_scale)
    widths = xp.diff(corners)                                   # (n_mels + 1,)
    offsets = corners[None, :] - bins[:, None]                  # (n_freqs, n_mels + 2)
    rising = -offsets[:, :-2] / widths[:-1]
    falling = offsets[:, 2:] / widths[1:]
    fb = xp.maximum(0.0, xp.minimum(rising, falling))
    if norm == "slaney":
        fb *= 2.0 / (corners[2:] - corners[:-2])
    dtype = backend.get_default_dtype() if dtype is None else dtype
    return Tensor._wrap(fb.astype(dtype))


def _as_tensor(x) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor._constant(x, None)


def amplitude_to_db(x: Tensor, multiplier: float = 10.0, amin: float = 1e-10, db_multiplier: float = 0.0,
                    top_db: float | None = None) -> Tensor:
    """dB = multiplier log10(max(x, amin)) - multiplier db_multiplier, as
    ``torchaudio.functional.amplitude_to_db`` (multiplier 10 for power, 20 for amplitude
    spectrograms; db_multiplier = log10(max(amin, ref))). With ``top_db`` the result is floored
    at max dB - top_db, the maximum taken (as torchaudio) over the last three axes for x of 3 or
    more axes, so over a whole (batch, freq, frames) stack, and over all of x otherwise."""
    x = _as_tensor(x)
    if amin <= 0:
        raise ValueError(f"amplitude_to_db: amin must be > 0, got {amin!r}")
    db = elementwise.log(elementwise.clip(x, amin, None)) * (multiplier / math.log(10.0))
    if db_multiplier:
        db = db - multiplier * db_multiplier
    if top_db is None:
        return db
    if top_db < 0:
        raise ValueError(f"amplitude_to_db: top_db must be >= 0, got {top_db!r}")
    axes = tuple(range(max(db.ndim - 3, 0), db.ndim))
    floor = reduce.max(db, axis=axes, keepdims=True) - float(top_db)
    return elementwise.maximum(db, floor)


def dct_matrix(n_mfcc: int, n_mels: int, norm: str | None = "ortho", dtype=None) -> Tensor:
    """The DCT-II as an (n_mels, n_mfcc) matrix, as ``torchaudio.functional.create_dct``:
    D[n, k] = 2 cos(pi k (n + 1/2) / n_mels), or with ``norm='ortho'`` sqrt(2 / n_mels)
    cos(pi k (n + 1/2) / n_mels), column 0 further divided by sqrt(2) (an orthonormal basis)."""
    if norm not in (None, "ortho"):
        raise ValueError(f"dct_matrix: norm must be None or 'ortho', got {norm!r}")
    if not 1 <= n_mfcc <= n_mels:
        raise ValueError(f"dct_matrix: need 1 <= n_mfcc <= n_mels, got n_mfcc={n_mfcc}, n_mels={n_mels}")
    xp = backend.xp
    n = xp.arange(n_mels, dtype=xp.float64)[:, None]
    k = xp.arange(n_mfcc, dtype=xp.float64)[None, :]
    d = xp.cos(math.pi / n_mels * (n + 0.5) * k)
    if norm is None:
        d *= 2.0
    else:
        d[:, 0] *= 1.0 / math.sqrt(2.0)
        d *= math.sqrt(2.0 / n_mels)
    dtype = backend.get_default_dtype() if dtype is None else dtype
    return Tensor._wrap(d.astype(dtype))


def _apply_on_freq_axis(matrix: Tensor, spec: Tensor, op: str) -> Tensor:
    """matrix (freq_in, freq_out) applied to spec (..., freq_in, frames): (..., freq_out, frames)."""
    if spec.ndim < 2 or spec.shape[-2] != matrix.shape[0]:
        raise ShapeError(f"{op}: expected a spectrogram (..., {matrix.shape[0]}, frames), "
                         f"got shape {tuple(spec.shape)}")
    return matmul(shape.transpose(matrix, 1, 0), spec)


def mel_spectrogram(x: Tensor, sample_rate: int = 16000, n_fft: int = 400, win_length: int | None = None,
                    hop_length: int | None = None, f_min: float = 0.0, f_max: float | None = None, n_mels: int = 128,
                    window=None, power: float = 2.0, normalized: bool = False, center: bool = True,
                    pad_mode: str = "reflect", norm: str | None = None, mel_scale: str = "htk") -> Tensor:
    """fb^T |STFT(x)|^power: signals (..., samples) -> (..., n_mels, frames), as torchaudio's
    MelSpectrogram (Hann window of win_length = n_fft, hop win_length // 2, f_max sample_rate // 2
    by default); see :func:`spectrogram` and :func:`mel_filterbank`."""
    x = _as_tensor(x)
    spec = spectrogram(x, n_fft, hop_length, win_length, window, power=power, normalized=normalized,
                       center=center, pad_mode=pad_mode)
    f_max = float(sample_rate // 2) if f_max is None else f_max
    fb = mel_filterbank(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate, norm, mel_scale, dtype=x.dtype)
    return _apply_on_freq_axis(fb, spec, "mel_spectrogram")


def mfcc(x: Tensor, sample_rate: int = 16000, n_mfcc: int = 40, dct_norm: str | None = "ortho",
         log_mels: bool = False, top_db: float | None = 80.0, **mel_options) -> Tensor:
    """Mel-frequency cepstral coefficients: signals (..., samples) -> (..., n_mfcc, frames), as
    torchaudio's MFCC: D^T L with L = log(mel + 1e-6) when ``log_mels``, else the mel power
    spectrogram in dB (:func:`amplitude_to_db` with multiplier 10 and ``top_db``), D the
    :func:`dct_matrix`. ``mel_options`` go to :func:`mel_spectrogram` (n_mels defaults to 128)."""
    mel = mel_spectrogram(_as_tensor(x), sample_rate, **mel_options)
    return mfcc_from_mel(mel, n_mfcc, dct_norm, log_mels, top_db)


def mfcc_from_mel(mel: Tensor, n_mfcc: int = 40, dct_norm: str | None = "ortho", log_mels: bool = False,
                  top_db: float | None = 80.0) -> Tensor:
    """The cepstral half of :func:`mfcc`: a mel power spectrogram (..., n_mels, frames) ->
    (..., n_mfcc, frames)."""
    mel = _as_tensor(mel)
    if mel.ndim < 2:
        raise ShapeError(f"mfcc: expected a mel spectrogram (..., n_mels, frames), got shape {tuple(mel.shape)}")
    if log_mels:
        log_mel = elementwise.log(mel + 1e-6)
    else:
        log_mel = amplitude_to_db(mel, 10.0, 1e-10, 0.0, top_db)
    dct = dct_matrix(n_mfcc, mel.shape[-2], dct_norm, dtype=mel.dtype)
    return _apply_on_freq_axis(dct, log_mel, "mfcc")
