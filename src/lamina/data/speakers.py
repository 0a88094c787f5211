"""Synthetic speakers for speaker-recognition experiments: source-filter voices and trial lists.

A voice is a source-filter model. The source is a glottal pulse train at the fundamental
frequency f0 (with a slow glide and cycle-to-cycle jitter), smoothed by a two-pole low-pass
(spectral tilt, pole ``tilt``), plus aspiration noise; the filter is a cascade of resonant
biquads, one per formant F_k with bandwidth BW_k,

    H_k(z) = (1 - 2 r cos(theta) + r^2) / (1 - 2 r cos(theta) z^-1 + r^2 z^-2),
    r = exp(-pi BW_k / sample_rate),  theta = 2 pi F_k / sample_rate          (H_k(1) = 1).

A speaker keeps its f0, formants, bandwidths, tilt and breathiness; each utterance moves f0
and the formants a little (the "phonetic content"), scales the level and adds noise, so that
two utterances of one speaker differ while speakers stay apart. The filters are applied in
the frequency domain on a zero-padded FFT (their impulse responses die out well within it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["SpeakerVoice", "random_speakers", "synthesize_utterance", "synthetic_speakers", "trial_pairs"]


@dataclass(frozen=True)
class SpeakerVoice:
    """One synthetic speaker: ``f0`` (Hz), ``formants`` and ``bandwidths`` (Hz, one per
    resonator), ``tilt`` (the source low-pass pole, in [0, 1)) and ``breathiness`` (the
    aspiration noise level relative to the pulses)."""

    f0: float
    formants: tuple[float, ...]
    bandwidths: tuple[float, ...]
    tilt: float
    breathiness: float


FORMANT_RANGES = ((300.0, 850.0), (900.0, 2300.0), (2300.0, 3400.0))


def random_speakers(num_speakers: int, seed: int | None = 0) -> list[SpeakerVoice]:
    """``num_speakers`` voices with f0 log-uniform in [85, 260] Hz, three formants uniform in
    FORMANT_RANGES, bandwidths in [50, 160] Hz, tilt in [0.6, 0.95], breathiness in [0.02, 0.2]."""
    if isinstance(num_speakers, bool) or not isinstance(num_speakers, int) or num_speakers < 1:
        raise ValueError(f"random_speakers: num_speakers must be a positive int, got {num_speakers!r}")
    rng = np.random.default_rng(seed)
    voices = []
    for _ in range(num_speakers):
        voices.append(SpeakerVoice(
            f0=float(np.exp(rng.uniform(np.log(85.0), np.log(260.0)))),
            formants=tuple(float(rng.uniform(low, high)) for low, high in FORMANT_RANGES),
            bandwidths=tuple(float(b) for b in rng.uniform(50.0, 160.0, len(FORMANT_RANGES))),
            tilt=float(rng.uniform(0.6, 0.95)),
            breathiness=float(rng.uniform(0.02, 0.2)),
        ))
    return voices


def _pulse_train(f0: np.ndarray, sample_rate: int) -> np.ndarray:
    """A unit impulse at the start of each glottal cycle of the f0 contour (Hz per sample)."""
    cycles = np.cumsum(f0 / sample_rate)
    pulses = np.zeros(len(f0))
    pulses[1:][np.floor(cycles[1:]) > np.floor(cycles[:-1])] = 1.0
    return pulses


def _resonator_response(frequency: float, bandwidth: float, sample_rate: int, z_inv: np.ndarray) -> np.ndarray:
    r = np.exp(-np.pi * bandwidth / sample_rate)
    theta = 2 * np.pi * frequency / sample_rate
    a1, a2 = -2 * r * np.cos(theta), r * r
    return (1 + a1 + a2) / (1 + a1 * z_inv + a2 * z_inv * z_inv)


def synthesize_utterance(voice: SpeakerVoice, duration: float = 0.3, sample_rate: int = 8000,
                         rng: np.random.Generator | None = None, variability: float = 1.0) -> np.ndarray:
    """One utterance (samples,) of ``voice``; ``variability`` scales the per-utterance changes
    (f0 by about 6 %, each formant by about 7 %, a glide of up to 15 %, level within x/3 .. 3x,
    additive noise 20-35 dB below the voice)."""
    rng = np.random.default_rng() if rng is None else rng
    samples = int(round(duration * sample_rate))
    if samples < 16:
        raise ValueError(f"synthesize_utterance: duration {duration} s at {sample_rate} Hz gives {samples} samples; "
                         "expected at least 16")
    t = np.arange(samples) / samples
    f0 = voice.f0 * np.exp(variability * (0.06 * rng.standard_normal() + rng.uniform(-0.15, 0.15) * (t - 0.5)))
    f0 = f0 * (1 + 0.01 * variability * rng.standard_normal(samples))
    source = _pulse_train(f0, sample_rate) + voice.breathiness * rng.standard_normal(samples)
    n_fft = 1 << int(np.ceil(np.log2(2 * samples)))
    z_inv = np.exp(-2j * np.pi * np.fft.rfftfreq(n_fft))
    response = (1 - voice.tilt) ** 2 / (1 - voice.tilt * z_inv) ** 2
    for formant, bandwidth in zip(voice.formants, voice.bandwidths):
        shifted = min(formant * np.exp(0.07 * variability * rng.standard_normal()), 0.45 * sample_rate)
        response = response * _resonator_response(shifted, bandwidth, sample_rate, z_inv)
    voiced = np.fft.irfft(np.fft.rfft(source, n_fft) * response, n_fft)[:samples]
    voiced = voiced / (np.sqrt(np.mean(voiced ** 2)) + 1e-12)
    noise_db = rng.uniform(20.0, 35.0)
    noisy = voiced + 10 ** (-noise_db / 20) * rng.standard_normal(samples)
    return noisy * np.exp(variability * rng.uniform(-np.log(3.0), np.log(3.0)))


def synthetic_speakers(num_speakers: int, utterances_per_speaker: int, duration: float = 0.3,
                       sample_rate: int = 8000, seed: int | None = 0, variability: float = 1.0,
                       dtype=np.float32) -> tuple[np.ndarray, np.ndarray, list[SpeakerVoice]]:
    """(waveforms (N, samples), labels (N,) int64, voices): ``utterances_per_speaker``
    utterances of each of ``num_speakers`` :func:`random_speakers`, speaker by speaker
    (labels 0, 0, ..., 1, 1, ...)."""
    if isinstance(utterances_per_speaker, bool) or not isinstance(utterances_per_speaker, int) \
            or utterances_per_speaker < 1:
        raise ValueError(f"synthetic_speakers: utterances_per_speaker must be a positive int, got "
                         f"{utterances_per_speaker!r}")
    voices = random_speakers(num_speakers, seed)
    rng = np.random.default_rng(None if seed is None else seed + 1)
    waves = [synthesize_utterance(voice, duration, sample_rate, rng, variability)
             for voice in voices for _ in range(utterances_per_speaker)]
    labels = np.repeat(np.arange(num_speakers, dtype=np.int64), utterances_per_speaker)
    return np.stack(waves).astype(dtype), labels, voices


def trial_pairs(labels, num_trials: int | None = None, target_fraction: float = 0.5,
                seed: int | None = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A trial list over utterances with speaker ``labels`` (N,): (first, second, target), index
    arrays and 1 (same speaker) / 0 labels. ``num_trials`` None: every pair i < j; otherwise that
    many distinct pairs drawn, a ``target_fraction`` of them target trials (as far as there are)."""
    labels = np.asarray(labels)
    if labels.ndim != 1 or len(labels) < 2:
        raise ValueError(f"trial_pairs: labels must be 1-D with at least 2 utterances, got shape {labels.shape}")
    first, second = np.triu_indices(len(labels), k=1)
    target = (labels[first] == labels[second]).astype(np.int64)
    if num_trials is not None:
        if not 0 <= target_fraction <= 1:
            raise ValueError(f"trial_pairs: target_fraction must lie in [0, 1], got {target_fraction!r}")
        rng = np.random.default_rng(seed)
        targets, nontargets = np.flatnonzero(target == 1), np.flatnonzero(target == 0)
        n_target = min(len(targets), int(round(num_trials * target_fraction)))
        n_nontarget = min(len(nontargets), num_trials - n_target)
        chosen = np.sort(np.r_[rng.choice(targets, n_target, replace=False),
                               rng.choice(nontargets, n_nontarget, replace=False)])
        first, second, target = first[chosen], second[chosen], target[chosen]
    return first, second, target
