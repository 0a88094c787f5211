"""Synthetic source-filter speakers and trial lists."""

import numpy as np
import pytest

from lamina.data.speakers import SpeakerVoice, random_speakers, synthesize_utterance, synthetic_speakers, trial_pairs


def test_shapes_labels_and_reproducibility():
    waves, labels, voices = synthetic_speakers(3, 4, duration=0.25, sample_rate=8000, seed=5)
    assert waves.shape == (12, 2000) and waves.dtype == np.float32
    np.testing.assert_array_equal(labels, np.repeat(np.arange(3), 4))
    assert len(voices) == 3 and all(isinstance(v, SpeakerVoice) for v in voices)
    again, _, _ = synthetic_speakers(3, 4, duration=0.25, sample_rate=8000, seed=5)
    np.testing.assert_array_equal(waves, again)
    assert not np.allclose(waves[0], waves[1])                      # two utterances of one speaker differ


def _autocorrelation_pitch(wave, sample_rate):
    wave = wave - wave.mean()
    corr = np.correlate(wave, wave, mode="full")[len(wave) - 1:]
    low, high = int(sample_rate / 400), int(sample_rate / 70)
    return sample_rate / (low + np.argmax(corr[low:high]))


def test_pitch_and_formants_follow_the_voice():
    voice = SpeakerVoice(f0=120.0, formants=(500.0, 1500.0, 2500.0), bandwidths=(60.0, 80.0, 100.0), tilt=0.7,
                         breathiness=0.02)
    wave = synthesize_utterance(voice, 0.5, 8000, np.random.default_rng(0), variability=0.0)
    assert _autocorrelation_pitch(wave, 8000) == pytest.approx(120.0, rel=0.03)
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    freqs = np.fft.rfftfreq(len(wave), 1 / 8000)
    envelope = np.convolve(spectrum, np.ones(41) / 41, mode="same")       # smooth over the harmonics
    for formant in (500.0, 1500.0):
        near = (freqs > formant - 150) & (freqs < formant + 150)
        between = (freqs > 900) & (freqs < 1100)
        assert envelope[near].max() > 2 * envelope[between].mean()


def test_random_speakers_lie_in_their_ranges():
    voices = random_speakers(50, seed=1)
    assert all(85 <= v.f0 <= 260 and 300 <= v.formants[0] <= 850 and 0.6 <= v.tilt <= 0.95 for v in voices)
    assert len({round(v.f0, 6) for v in voices}) == 50


def test_trial_pairs():
    labels = np.array([0, 0, 1, 1, 1, 2])
    first, second, target = trial_pairs(labels)
    assert len(first) == 15 and np.all(first < second)
    np.testing.assert_array_equal(target, labels[first] == labels[second])
    assert target.sum() == 1 + 3
    first, second, target = trial_pairs(labels, num_trials=8, target_fraction=0.25, seed=0)
    assert len(first) == 8 and target.sum() == 2
    assert len(set(zip(first.tolist(), second.tolist()))) == 8


def test_errors():
    with pytest.raises(ValueError, match="num_speakers must be a positive int"):
        random_speakers(0)
    with pytest.raises(ValueError, match="utterances_per_speaker"):
        synthetic_speakers(2, 0)
    with pytest.raises(ValueError, match="at least 16"):
        synthesize_utterance(random_speakers(1)[0], duration=0.001)
    with pytest.raises(ValueError, match="at least 2 utterances"):
        trial_pairs([0])
