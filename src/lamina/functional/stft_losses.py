"""Multi-resolution STFT loss (Yamamoto et al. 2020, Parallel WaveGAN).

For one resolution (FFT size, hop, Hann window of ``win_length`` samples), with |X| the STFT
magnitude of the prediction x and |Y| that of the target y, both floored as
sqrt(max(re^2 + im^2, 1e-7)),

    L_sc  = || |Y| - |X| ||_F / || |Y| ||_F                       (spectral convergence)
    L_mag = mean | log |Y| - log |X| |                             (log STFT magnitude)

the norms and the mean taken over the whole batch. The multi-resolution loss averages each
term over the resolutions and returns L_sc + L_mag (or the two apart).
"""

from __future__ import annotations

from collections.abc import Sequence

from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.functional import elementwise
from lamina.functional.spectral import hann_window, stft

__all__ = ["log_stft_magnitude_loss", "multi_resolution_stft_loss", "spectral_convergence_loss", "stft_magnitude"]

POWER_FLOOR = 1e-7


def stft_magnitude(x: Tensor, fft_size: int, hop_size: int, win_length: int) -> Tensor:
    """sqrt(max(|STFT(x)|^2, 1e-7)) (..., freq, frames) with a periodic Hann window, centred
    frames and reflect padding (torch.stft's defaults)."""
    spec = stft(x, fft_size, hop_size, win_length, hann_window(win_length, dtype=x.dtype))
    return elementwise.sqrt(elementwise.clip((spec * spec).sum(axis=-1), POWER_FLOOR, None))


def spectral_convergence_loss(predicted_magnitude: Tensor, target_magnitude: Tensor) -> Tensor:
    """|| |Y| - |X| ||_F / || |Y| ||_F over every element."""
    difference = target_magnitude - predicted_magnitude
    return elementwise.sqrt((difference * difference).sum() / (target_magnitude * target_magnitude).sum())


def log_stft_magnitude_loss(predicted_magnitude: Tensor, target_magnitude: Tensor) -> Tensor:
    """mean | log |Y| - log |X| |."""
    return elementwise.abs(elementwise.log(target_magnitude) - elementwise.log(predicted_magnitude)).mean()


def multi_resolution_stft_loss(pred, target, fft_sizes: Sequence[int] = (1024, 2048, 512),
                               hop_sizes: Sequence[int] = (120, 240, 50), win_lengths: Sequence[int] = (600, 1200, 240),
                               return_terms: bool = False):
    """Spectral convergence plus log STFT magnitude L1 between waveforms ``pred`` and ``target``
    (..., time), each averaged over the resolutions (fft_sizes[i], hop_sizes[i], win_lengths[i])
    (defaults: Parallel WaveGAN's). With ``return_terms`` returns (L_sc, L_mag) instead of
    their sum."""
    op = "multi_resolution_stft_loss"
    pred = pred if isinstance(pred, Tensor) else Tensor._constant(pred, None)
    target = target if isinstance(target, Tensor) else Tensor._constant(target, pred.dtype)
    if pred.shape != target.shape or pred.ndim < 1:
        raise ShapeError(f"{op}: pred and target must have the same shape (..., time), got {tuple(pred.shape)} "
                         f"and {tuple(target.shape)}")
    resolutions = list(zip(fft_sizes, hop_sizes, win_lengths, strict=False))
    if not resolutions or not len(fft_sizes) == len(hop_sizes) == len(win_lengths):
        raise ValueError(f"{op}: fft_sizes, hop_sizes and win_lengths must be non-empty and of equal length, got "
                         f"{list(fft_sizes)}, {list(hop_sizes)}, {list(win_lengths)}")
    convergence = magnitude_l1 = 0.0
    for fft_size, hop_size, win_length in resolutions:
        if win_length > fft_size:
            raise ValueError(f"{op}: win_length {win_length} exceeds fft_size {fft_size}")
        predicted = stft_magnitude(pred, fft_size, hop_size, win_length)
        wanted = stft_magnitude(target, fft_size, hop_size, win_length)
        convergence = convergence + spectral_convergence_loss(predicted, wanted)
        magnitude_l1 = magnitude_l1 + log_stft_magnitude_loss(predicted, wanted)
    convergence, magnitude_l1 = convergence / len(resolutions), magnitude_l1 / len(resolutions)
    return (convergence, magnitude_l1) if return_terms else convergence + magnitude_l1
