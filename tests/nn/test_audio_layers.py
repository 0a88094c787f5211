"""Audio front-end layers: they compute what the functions do, describe themselves, mask as
SpecAugment does, and let a small CNN tell tones apart."""

import time

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, randn
from lamina import functional as F
from lamina import nn, optim
from lamina.errors import ShapeError
from lamina.nn import (
    MFCC,
    AmplitudeToDB,
    FrequencyMasking,
    MelSpectrogram,
    Spectrogram,
    TimeMasking,
    layer_from_config,
    layer_to_config,
)

LAYERS = {
    "spectrogram": (lambda: Spectrogram(n_fft=32, hop_length=8, power=1.0), (2, 100)),
    "complex_spectrogram": (lambda: Spectrogram(n_fft=16, window="hamming", power=None, center=False), (2, 3, 60)),
    "mel": (lambda: MelSpectrogram(8000, n_fft=64, n_mels=10, norm="slaney", mel_scale="slaney"), (2, 300)),
    "mfcc": (lambda: MFCC(8000, n_mfcc=5, mel_options={"n_fft": 64, "n_mels": 10}), (2, 1, 300)),
    "db": (lambda: AmplitudeToDB("magnitude", top_db=40.0), (2, 9, 7)),
    "frequency_masking": (lambda: FrequencyMasking(4, mask_value=-1.0), (3, 9, 7)),
    "time_masking": (lambda: TimeMasking(5, p=0.5), (3, 2, 9, 10)),
}


def _input(shape, seed=0):
    return np.abs(randn(*shape, seed=seed)) + 0.1


@pytest.mark.parametrize("name", list(LAYERS))
def test_config_round_trip_and_output_shape(name):
    make, shape = LAYERS[name]
    layer = make()
    rebuilt = layer_from_config(layer_to_config(layer))
    assert type(rebuilt) is type(layer) and rebuilt.get_config() == layer.get_config()
    x = _input(shape)
    lamina.manual_seed(1)
    out = layer(lamina.tensor(x)).numpy()
    lamina.manual_seed(1)
    np.testing.assert_array_equal(rebuilt(lamina.tensor(x)).numpy(), out)
    assert layer.compute_output_shape(shape) == out.shape
    assert layer.compute_output_shape((None,) + shape[1:])[1:] == out.shape[1:]


def test_layers_compute_the_functions():
    x = lamina.tensor(randn(2, 300, seed=2), dtype=np.float64)
    window = F.hann_window(64, dtype=np.float64)
    assert_close(Spectrogram(64, hop_length=16, power=1.0)(x).numpy(),
                 F.spectrogram(x, 64, 16, window=window, power=1.0).numpy(), 1e-12)
    assert_close(MelSpectrogram(8000, n_fft=64, n_mels=10)(x).numpy(),
                 F.mel_spectrogram(x, 8000, n_fft=64, n_mels=10).numpy(), 1e-12)
    assert_close(MFCC(8000, n_mfcc=5, log_mels=True, mel_options={"n_fft": 64, "n_mels": 10})(x).numpy(),
                 F.mfcc(x, 8000, n_mfcc=5, log_mels=True, n_fft=64, n_mels=10).numpy(), 1e-12)
    power = np.abs(randn(2, 9, 7, seed=3)) + 0.01
    assert_close(AmplitudeToDB(top_db=30.0, ref_value=2.0)(power).numpy(),
                 F.amplitude_to_db(power, 10.0, 1e-10, np.log10(2.0), 30.0).numpy(), 1e-6)


def test_spectrogram_layer_matches_torch_with_gradients():
    def theirs(a):
        flat = a.reshape(-1, a.shape[-1])             # torch.stft takes (batch, samples) only
        spec = torch.stft(flat, 32, 8, window=torch.hann_window(32, dtype=a.dtype), return_complex=True)
        return (spec.abs() ** 2).reshape(a.shape[:-1] + spec.shape[-2:])

    compare_with_torch(Spectrogram(32, hop_length=8), theirs, randn(2, 3, 80, seed=4), dtype=np.float64)
    assert check_gradients(MelSpectrogram(8000, n_fft=16, n_mels=4), randn(1, 40, seed=5))


@pytest.mark.parametrize("layer_class, axis", [(FrequencyMasking, -2), (TimeMasking, -1)])
def test_masking_sets_one_band_per_spectrogram_in_training(layer_class, axis):
    layer = layer_class(6, mask_value=-7.0)
    x = _input((40, 2, 12, 15), seed=6)
    lamina.manual_seed(0)
    xt = lamina.tensor(x, requires_grad=True, dtype=np.float64)
    out = layer(xt)
    (out * lamina.tensor(np.ones(x.shape))).sum().backward()
    masked = out.numpy() == -7.0
    other = -1 if axis == -2 else -2
    band = masked.all(axis=other)                      # (40, 2, size): the masked rows or columns
    assert (masked == np.expand_dims(band, other)).all()        # whole rows (columns), nothing else
    widths = band.sum(axis=-1)
    assert widths.max() <= 6 and widths.max() >= 4 and len(np.unique(widths)) > 2
    for row in band.reshape(-1, band.shape[-1]):       # one contiguous band
        idx = np.flatnonzero(row)
        assert idx.size == 0 or (np.diff(idx) == 1).all()
    assert_close(xt.grad, (~masked).astype(float), 0.0)
    assert_close(out.numpy()[~masked], x[~masked], 0.0)


def test_masking_is_the_identity_in_evaluation_and_respects_p():
    layer = TimeMasking(50, p=0.2)
    x = _input((30, 8, 20))
    layer.eval()
    np.testing.assert_array_equal(layer(lamina.tensor(x, dtype=np.float64)).numpy(), x)
    layer.train()
    out = layer(lamina.tensor(x, dtype=np.float64)).numpy()
    assert (out == 0.0).all(axis=1).sum(axis=-1).max() <= 4        # at most p * 20 frames


def test_layer_errors_name_the_layer():
    with pytest.raises(ShapeError, match="Spectrogram.*waveforms"):
        Spectrogram(16)(np.zeros((2, 3, 4, 50)))
    with pytest.raises(ValueError, match="Spectrogram: window must be one of"):
        Spectrogram(16, window="kaiser")
    with pytest.raises(ValueError, match="MFCC: n_mfcc=20 cannot exceed n_mels=10"):
        MFCC(n_mfcc=20, mel_options={"n_mels": 10})
    with pytest.raises(ValueError, match="AmplitudeToDB: stype"):
        AmplitudeToDB("energy")


def _tones(n, sample_rate, seconds, seed):
    """Sines at one of three pitches (random phase, loudness and slight detuning) in noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    labels = rng.integers(0, 3, n)
    pitch = np.array([330.0, 660.0, 1320.0])[labels] * rng.uniform(0.97, 1.03, n)
    loudness = rng.uniform(0.3, 1.0, n)
    waves = loudness[:, None] * np.sin(2 * np.pi * pitch[:, None] * t + rng.uniform(0, 2 * np.pi, (n, 1)))
    return (waves + 0.5 * rng.standard_normal(waves.shape)).astype(np.float32), labels


def test_small_cnn_tells_three_pitches_apart_from_mel_features():
    lamina.manual_seed(0)
    sample_rate = 4000
    x_train, y_train = _tones(240, sample_rate, 0.25, seed=0)
    x_test, y_test = _tones(90, sample_rate, 0.25, seed=1)
    model = nn.Sequential(
        MelSpectrogram(sample_rate, n_fft=128, hop_length=64, n_mels=16), AmplitudeToDB(top_db=60.0),
        FrequencyMasking(2), nn.Reshape((16, 16, 1)), nn.BatchNorm(),
        nn.Conv2D(8, 3, padding="same"), nn.ReLU(), nn.MaxPool2D(2),
        nn.Flatten(), nn.Dense(3),
    )
    model.build((None, x_train.shape[1]))
    opt = optim.Adam(model.parameters(), lr=1e-2)
    started = time.perf_counter()
    rng = np.random.default_rng(0)
    for _ in range(6):
        model.train()
        order = rng.permutation(len(x_train))
        for batch in np.array_split(order, 8):
            cost = F.categorical_cross_entropy(model(lamina.tensor(x_train[batch])), y_train[batch], from_logits=True)
            opt.zero_grad()
            cost.backward()
            opt.step()
    elapsed = time.perf_counter() - started
    model.eval()
    with lamina.no_grad():
        accuracy = float((model(lamina.tensor(x_test)).numpy().argmax(axis=1) == y_test).mean())
    assert accuracy >= 0.9, f"test accuracy {accuracy:.3f} (chance 0.33) after {elapsed:.1f} s"
