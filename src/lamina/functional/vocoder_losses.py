"""The costs of the GAN vocoders (MelGAN, Kumar et al. 2019; HiFi-GAN, Kong et al. 2020).

Each discriminator ensemble gives, per sub-discriminator k, scores D_k(x) (any shape) and
feature maps D_k^l(x). With x real and x^ = G(s) generated (least-squares GAN, every mean over
all values of one tensor, every sum over the sub-discriminators k and layers l):

    L_D     = sum_k mean (D_k(x) - 1)^2 + mean D_k(x^)^2              (discriminator)
    L_adv   = sum_k mean (D_k(x^) - 1)^2                              (generator)
    L_fm    = 2 sum_k sum_l mean |D_k^l(x) - D_k^l(x^)|               (feature matching)
    L_mel   = 45 mean |phi(x) - phi(x^)|                               (mel spectrogram L1)

phi is :func:`vocoder_log_mel_spectrogram`, HiFi-GAN's log mel magnitude: the waveform
reflect-padded by (n_fft - hop) / 2 on both sides, uncentred STFT frames of a periodic Hann
window, magnitude sqrt(re^2 + im^2 + 1e-9), Slaney mel filters (librosa's default) and
log(max(mel, 1e-5)). The generator's cost is L_adv + L_fm + L_mel, summed over both
discriminator ensembles. The weights 2 and 45 are the paper's defaults.
"""

from __future__ import annotations

from collections.abc import Sequence

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import elementwise
from lamina.functional.arithmetic import matmul
from lamina.functional.audio import mel_filterbank
from lamina.functional.padding_nd import pad1d
from lamina.functional.shape import reshape, transpose
from lamina.functional.spectral import hann_window, stft

__all__ = [
    "feature_matching_loss", "lsgan_discriminator_loss", "lsgan_generator_loss", "mel_spectrogram_l1_loss",
    "vocoder_log_mel_spectrogram",
]

MAGNITUDE_EPS = 1e-9
MEL_FLOOR = 1e-5


def _as_tensor(x, like: Tensor | None = None) -> Tensor:
    """``x`` as a tensor; an array takes the dtype of ``like`` when given (a constant target)."""
    if isinstance(x, Tensor):
        return x
    return Tensor(x) if like is None else Tensor(x, dtype=like.dtype)


def _pairs(first, second, what: str, op: str) -> list:
    first, second = list(first), list(second)
    if len(first) != len(second):
        raise ValueError(f"{op}: {len(first)} {what} for the real waveforms but {len(second)} for the generated "
                         "ones; expected one per sub-discriminator of the same ensemble")
    return list(zip(first, second))


def lsgan_discriminator_loss(real_scores: Sequence, fake_scores: Sequence) -> Tensor:
    """L_D = sum_k mean (D_k(x) - 1)^2 + mean D_k(x^)^2 over the sub-discriminators' scores."""
    total = None
    for real, fake in _pairs(real_scores, fake_scores, "score tensors", "lsgan_discriminator_loss"):
        real, fake = _as_tensor(real), _as_tensor(fake)
        term = ((real - 1.0) * (real - 1.0)).mean() + (fake * fake).mean()
        total = term if total is None else total + term
    if total is None:
        raise ValueError("lsgan_discriminator_loss: expected at least one sub-discriminator's scores")
    return total


def lsgan_generator_loss(fake_scores: Sequence) -> Tensor:
    """L_adv = sum_k mean (D_k(x^) - 1)^2 over the sub-discriminators' scores of generated waveforms."""
    terms = [((s - 1.0) * (s - 1.0)).mean() for s in map(_as_tensor, fake_scores)]
    if not terms:
        raise ValueError("lsgan_generator_loss: expected at least one sub-discriminator's scores")
    total = terms[0]
    for term in terms[1:]:
        total = total + term
    return total


def feature_matching_loss(real_features: Sequence, fake_features: Sequence, weight: float = 2.0) -> Tensor:
    """L_fm = weight sum_k sum_l mean |D_k^l(x) - D_k^l(x^)|: ``real_features[k][l]`` and
    ``fake_features[k][l]`` the l-th feature map of sub-discriminator k (equal shapes)."""
    total = None
    for real_maps, fake_maps in _pairs(real_features, fake_features, "feature-map lists", "feature_matching_loss"):
        for real, fake in _pairs(real_maps, fake_maps, "feature maps", "feature_matching_loss"):
            fake = _as_tensor(fake)
            real = _as_tensor(real, fake)
            if real.shape != fake.shape:
                raise ShapeError(f"feature_matching_loss: a real feature map of shape {tuple(real.shape)} against a "
                                 f"generated one of shape {tuple(fake.shape)}; expected equal shapes")
            term = elementwise.abs(real - fake).mean()
            total = term if total is None else total + term
    if total is None:
        raise ValueError("feature_matching_loss: expected at least one feature map")
    return total * float(weight)


def vocoder_log_mel_spectrogram(wave, sample_rate: int = 22050, n_fft: int = 1024, n_mels: int = 80,
                                hop_length: int = 256, win_length: int = 1024, f_min: float = 0.0,
                                f_max: float | None = 8000.0) -> Tensor:
    """HiFi-GAN's log mel magnitude (module docstring): waveforms (batch, T) -> (batch, frames,
    n_mels), channels-last as :class:`lamina.models.HiFiGANGenerator` reads it. With n_fft - hop
    even, T samples give (T + n_fft - hop - n_fft) // hop + 1 frames: T / hop when hop divides T.
    ``f_max`` None is sample_rate / 2."""
    wave = _as_tensor(wave)
    if wave.ndim != 2:
        raise ShapeError(f"vocoder_log_mel_spectrogram: expected waveforms (batch, samples), got shape "
                         f"{tuple(wave.shape)}")
    pad = (n_fft - hop_length) // 2
    if pad >= wave.shape[1]:
        raise ShapeError(f"vocoder_log_mel_spectrogram: waveforms of {wave.shape[1]} samples are too short to "
                         f"reflect-pad by {pad}; expected more than {pad} samples")
    padded = pad1d(reshape(wave, (*wave.shape, 1)), (pad, pad), mode="reflect")
    padded = reshape(padded, padded.shape[:2])
    spec = stft(padded, n_fft, hop_length, win_length, hann_window(win_length, dtype=wave.dtype), center=False)
    magnitude = elementwise.sqrt((spec * spec).sum(axis=-1) + MAGNITUDE_EPS)              # (batch, freq, frames)
    f_max = sample_rate / 2 if f_max is None else f_max
    filters = mel_filterbank(n_fft // 2 + 1, f_min, f_max, n_mels, sample_rate, "slaney", "slaney", dtype=wave.dtype)
    mel = matmul(transpose(magnitude, 0, 2, 1), filters)
    return elementwise.log(elementwise.clip(mel, MEL_FLOOR, None))


def mel_spectrogram_l1_loss(predicted, target, weight: float = 45.0, **mel_options) -> Tensor:
    """L_mel = weight mean |phi(target) - phi(predicted)| between waveforms (batch, T), phi
    :func:`vocoder_log_mel_spectrogram` with ``mel_options``."""
    predicted = _as_tensor(predicted)
    target = _as_tensor(target, predicted)
    if predicted.shape != target.shape:
        raise ShapeError(f"mel_spectrogram_l1_loss: predicted waveforms of shape {tuple(predicted.shape)} against "
                         f"targets of shape {tuple(target.shape)}; expected equal shapes")
    difference = vocoder_log_mel_spectrogram(target, **mel_options) - vocoder_log_mel_spectrogram(predicted,
                                                                                                 **mel_options)
    return elementwise.abs(difference).mean() * float(weight)
