"""STFT / ISTFT against torch, spectrograms, mel filter banks, decibels and MFCCs."""

import math

import numpy as np
import pytest
import scipy.fft
import torch

import lamina
from helpers import (
    assert_close,
    check_gradients,
    check_second_derivatives,
    compare_double_backward_with_torch,
    compare_with_torch,
    randn,
)
from lamina import functional as F
from lamina.errors import ShapeError

# (n_fft, hop, win_length, center, pad_mode, normalized, onesided, window kind)
STFT_CASES = {
    "hann_default_hop": (64, None, None, True, "reflect", False, True, "hann"),
    "odd_n_fft_short_window": (63, 10, 40, False, "reflect", True, True, "hann"),
    "two_sided_constant_pad": (32, 8, 20, True, "constant", False, False, "hamming"),
    "hop_not_dividing_replicate": (32, 7, 32, True, "replicate", True, True, "hann"),
    "rectangular_circular": (16, 5, None, True, "circular", False, True, None),
    "hop_longer_than_window": (16, 20, 12, False, "reflect", False, True, "hamming"),
}


def _window(kind, length):
    if kind is None:
        return None
    return (np.hanning(length + 1)[:-1] if kind == "hann" else np.hamming(length + 1)[:-1]) + 0.05


def _torch_stft(x, n_fft, hop, win, center, mode, normalized, onesided, window):
    w = None if window is None else torch.tensor(window, dtype=x.dtype)
    return torch.view_as_real(torch.stft(x, n_fft, hop, win, w, center, mode, normalized, onesided,
                                         return_complex=True))


@pytest.mark.filterwarnings("ignore:A window was not provided")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(STFT_CASES))
def test_stft_matches_torch(case, dtype):
    n_fft, hop, win, center, mode, normalized, onesided, kind = STFT_CASES[case]
    window = _window(kind, win or n_fft)
    x = randn(2, 150, seed=1)
    compare_with_torch(lambda a: F.stft(a, n_fft, hop, win, window, center, mode, normalized, onesided),
                       lambda a: _torch_stft(a, n_fft, hop, win, center, mode, normalized, onesided, window),
                       x, dtype=dtype)


def test_stft_of_one_signal_and_of_a_channel_stack():
    x = randn(3, 2, 90, seed=2)
    ours = F.stft(lamina.tensor(x, dtype=np.float64), 16, 4, window=F.hann_window(16, dtype=np.float64)).numpy()
    assert ours.shape == (3, 2, 9, 1 + 90 // 4, 2)
    one = F.stft(lamina.tensor(x[1, 0], dtype=np.float64), 16, 4, window=F.hann_window(16, dtype=np.float64))
    assert_close(one.numpy(), ours[1, 0], 1e-12)


def test_stft_gradients_and_second_derivatives():
    x = randn(2, 40, seed=3)
    window = _window("hann", 12)
    assert check_gradients(lambda a: F.stft(a, 16, 4, 12, window, normalized=True), x)
    assert check_gradients(lambda a: F.stft(a, 16, 5, window=None, center=False, onesided=False), x)
    assert check_second_derivatives(lambda a: F.stft(a, 16, 4, 12, window) ** 2, x)
    compare_double_backward_with_torch(
        lambda a: F.magnitude(F.stft(a, 16, 4, 12, window)),
        lambda a: torch.stft(a, 16, 4, 12, torch.tensor(window), return_complex=True).abs(), x)


@pytest.mark.parametrize("mode", ["circular", "replicate"])
@pytest.mark.parametrize("length", [1, 2, 3, 4, 5])
def test_stft_gradient_when_the_padding_wraps_more_than_once(mode, length):
    # n_fft // 2 = 4 padded samples on each side of fewer than 4 samples repeat a source in one border;
    # torch's pad refuses this, so its reference pads by indexing
    x = randn(2, length, seed=12)
    dy = randn(2, 5, 1 + (length + 8 - 8) // 2, 2, seed=13)
    positions = np.arange(-4, length + 4)
    index = positions % length if mode == "circular" else np.clip(positions, 0, length - 1)

    def theirs(a):
        w = torch.ones(8, dtype=a.dtype)
        return torch.view_as_real(torch.stft(a[..., index], 8, 2, window=w, center=False, return_complex=True))

    xl = lamina.tensor(x, dtype=np.float64, requires_grad=True)
    out = F.stft(xl, 8, 2, center=True, pad_mode=mode)
    (out * lamina.tensor(dy, dtype=np.float64)).sum().backward()
    xt = torch.tensor(x, requires_grad=True)
    ref = theirs(xt)
    (ref * torch.tensor(dy)).sum().backward()
    assert_close(out.numpy(), ref.detach().numpy(), 1e-12)
    assert_close(xl.grad, xt.grad.numpy(), 1e-12)


ISTFT_CASES = {
    "hann_centre": (64, 16, None, True, False, True, None),
    "no_centre_normalized": (63, 10, None, False, True, True, None),
    "two_sided_short_window": (32, 8, 20, True, False, False, None),
    "cut_to_length": (32, 8, 32, True, True, True, 150),
    "zero_extended_to_length": (16, 4, None, True, False, True, 230),
}


def _spectrum(x, n_fft, hop, win, center, normalized, onesided, window, noise_seed=None):
    spec = _torch_stft(torch.tensor(x), n_fft, hop, win, center, "reflect", normalized, onesided, window).numpy()
    if noise_seed is not None:              # not the STFT of any signal: tests the least-squares inverse
        spec = spec + 0.1 * randn(*spec.shape, seed=noise_seed)
    return spec


@pytest.mark.filterwarnings("ignore::UserWarning")
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("case", list(ISTFT_CASES))
def test_istft_matches_torch(case, dtype):
    n_fft, hop, win, center, normalized, onesided, length = ISTFT_CASES[case]
    window = _window("hann", win or n_fft)
    spec = _spectrum(randn(2, 200, seed=4), n_fft, hop, win, center, normalized, onesided, window, noise_seed=5)

    def theirs(s):
        return torch.istft(torch.view_as_complex(s.contiguous()), n_fft, hop, win, torch.tensor(window, dtype=s.dtype),
                           center, normalized, onesided, length)

    compare_with_torch(lambda s: F.istft(s, n_fft, hop, win, window, center, normalized, onesided, length),
                       theirs, spec, dtype=dtype)


@pytest.mark.parametrize("case", list(ISTFT_CASES))
def test_istft_inverts_stft(case):
    n_fft, hop, win, center, normalized, onesided, _ = ISTFT_CASES[case]
    window = _window("hann", win or n_fft)
    x = randn(2, 200, seed=6)
    spec = F.stft(lamina.tensor(x, dtype=np.float64), n_fft, hop, win, window, center, "reflect", normalized,
                  onesided)
    kept = 200 if center else n_fft + hop * (spec.shape[-2] - 1)
    y = F.istft(spec, n_fft, hop, win, window, center, normalized, onesided, length=kept).numpy()
    assert_close(y, x[:, :kept], 1e-12)


def test_istft_gradients_and_second_derivatives():
    spec = _spectrum(randn(1, 45, seed=7), 16, 4, None, True, False, True, _window("hann", 16), noise_seed=8)
    assert check_gradients(lambda s: F.istft(s, 16, 4, window=_window("hann", 16), length=45), spec)
    assert check_gradients(lambda s: F.istft(s, 16, 4, center=False, normalized=True), spec)
    assert check_second_derivatives(lambda s: F.istft(s, 16, 4, window=_window("hann", 16)) ** 2, spec)


def test_istft_refuses_a_window_that_vanishes_where_samples_are_kept():
    spec = np.zeros((5, 4, 2))
    with pytest.raises(ValueError, match="istft: the overlap-added squared window"):
        F.istft(spec, 8, 4, win_length=4, center=False)


def test_stft_errors_name_the_op_and_the_shapes():
    with pytest.raises(ShapeError, match=r"stft: reflect padding .* shape \(2, 5\)"):
        F.stft(np.zeros((2, 5)), 16)
    with pytest.raises(ShapeError, match=r"stft: window must be 1-D of win_length 16"):
        F.stft(np.zeros((2, 50)), 16, window=np.ones(8))
    with pytest.raises(ShapeError, match="istft: a one-sided spectrum of n_fft=16 has 9"):
        F.istft(np.zeros((7, 3, 2)), 16)
    with pytest.raises(TypeError, match="stft: expected a float32 or float64 input, got dtype int64"):
        F.stft(lamina.tensor(np.zeros((2, 50), dtype=np.int64)), 16)


@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize("length", [1, 8, 31])
def test_windows_match_torch(length, periodic):
    assert_close(F.hann_window(length, periodic, dtype=np.float64).numpy(),
                 torch.hann_window(length, periodic, dtype=torch.float64).numpy(), 1e-14)
    assert_close(F.hamming_window(length, periodic, dtype=np.float64).numpy(),
                 torch.hamming_window(length, periodic, dtype=torch.float64).numpy(), 1e-14)


@pytest.mark.parametrize("periodic", [True, False])
@pytest.mark.parametrize("length", [0, 1, 2, 8, 31])
def test_blackman_bartlett_and_kaiser_windows_match_torch(length, periodic):
    for name in ("blackman_window", "bartlett_window"):
        assert_close(getattr(F, name)(length, periodic, dtype=np.float64).numpy(),
                     getattr(torch, name)(length, periodic, dtype=torch.float64).numpy(), 1e-14, name)
    for beta in (0.0, 5.0, 12.0):
        assert_close(F.kaiser_window(length, periodic, beta, dtype=np.float64).numpy(),
                     torch.kaiser_window(length, periodic, beta, dtype=torch.float64).numpy(), 1e-13, "kaiser_window")
    assert F.kaiser_window(length).dtype == np.float32


def test_windows_refuse_bad_lengths_and_beta():
    with pytest.raises(ValueError, match="blackman_window: window_length must be an int >= 0, got -1"):
        F.blackman_window(-1)
    with pytest.raises(ValueError, match="kaiser_window: beta must be a finite number, got inf"):
        F.kaiser_window(8, beta=float("inf"))


@pytest.mark.parametrize("power", [1.0, 2.0, 0.5])
@pytest.mark.parametrize("normalized", [False, True])
def test_spectrogram_matches_torch(power, normalized):
    def theirs(a):
        w = torch.hann_window(32, dtype=a.dtype)
        out = torch.stft(a, 32, 16, window=w, return_complex=True).abs().pow(power)
        return out / w.pow(2).sum().sqrt().pow(power) if normalized else out

    for dtype in (np.float32, np.float64):
        compare_with_torch(lambda a: F.spectrogram(a, 32, power=power, normalized=normalized), theirs,
                           randn(2, 100, seed=9), dtype=dtype, rtol=1e-4 if dtype == np.float32 else None)


def test_magnitude_gradient_is_zero_at_zero_as_torch_abs():
    z = randn(3, 4, 2, seed=10)
    z[1, 2] = 0.0
    compare_with_torch(F.magnitude, lambda a: torch.view_as_complex(a).abs(), z, dtype=np.float64)
    assert check_gradients(F.magnitude, randn(3, 4, 2, seed=11))


# -- mel scale and filter banks -----------------------------------------------------------------


def test_mel_scales_known_values():
    assert F.hz_to_mel(1000.0, "htk") == pytest.approx(2595 * math.log10(1 + 1000 / 700))
    assert F.hz_to_mel(700.0, "htk") == pytest.approx(2595 * math.log10(2))
    assert F.hz_to_mel(440.0, "slaney") == pytest.approx(6.6)        # 3 f / 200 below 1 kHz
    assert F.hz_to_mel(1000.0, "slaney") == pytest.approx(15.0)
    assert F.hz_to_mel(6400.0, "slaney") == pytest.approx(15.0 + 27.0)   # 27 mels per factor 6.4 above 1 kHz
    freqs = np.array([0.0, 120.0, 999.0, 1000.0, 4321.0, 8000.0])
    for scale in ("htk", "slaney"):
        assert_close(F.mel_to_hz(F.hz_to_mel(freqs, scale), scale), freqs, 1e-12)


def _reference_filterbank(n_freqs, f_min, f_max, n_mels, sample_rate, norm, scale):
    """Filter m at frequency f, written as the piecewise triangle of the HTK book / librosa."""
    if scale == "htk":
        to_mel, to_hz = (lambda f: 2595 * math.log10(1 + f / 700)), (lambda m: 700 * (10 ** (m / 2595) - 1))
    else:
        def to_mel(f):
            return 3 * f / 200 if f < 1000 else 15 + 27 * math.log(f / 1000) / math.log(6.4)

        def to_hz(m):
            return 200 * m / 3 if m < 15 else 1000 * 6.4 ** ((m - 15) / 27)
    low, high = to_mel(f_min), to_mel(f_max)
    corners = [to_hz(low + (high - low) * i / (n_mels + 1)) for i in range(n_mels + 2)]
    fb = np.zeros((n_freqs, n_mels))
    for k in range(n_freqs):
        f = (sample_rate // 2) * k / (n_freqs - 1)
        for m in range(n_mels):
            left, centre, right = corners[m:m + 3]
            if left < f <= centre:
                fb[k, m] = (f - left) / (centre - left)
            elif centre < f < right:
                fb[k, m] = (right - f) / (right - centre)
            if norm == "slaney":
                fb[k, m] *= 2 / (right - left)
    return fb


@pytest.mark.parametrize("norm", [None, "slaney"])
@pytest.mark.parametrize("scale", ["htk", "slaney"])
def test_mel_filterbank_rows_follow_the_formulas(norm, scale):
    ours = F.mel_filterbank(129, 50.0, 7000.0, 20, 16000, norm, scale, dtype=np.float64).numpy()
    assert ours.shape == (129, 20)
    assert_close(ours, _reference_filterbank(129, 50.0, 7000.0, 20, 16000, norm, scale), 1e-12)


def test_mel_filterbank_shapes():
    fb = F.mel_filterbank(513, 0.0, 8000.0, 40, 16000, dtype=np.float64).numpy()
    assert fb.max() <= 1.0 and fb.min() >= 0.0
    assert (fb.max(axis=0) > 0.5).all()                  # every filter reaches its peak near a bin
    assert (np.diff(fb.argmax(axis=0)) > 0).all()        # peaks rise with the mel index
    slaney = F.mel_filterbank(2049, 0.0, 8000.0, 40, 16000, "slaney", "slaney", dtype=np.float64).numpy()
    assert_close(slaney.sum(axis=0) * (8000.0 / 2048), np.ones(40), 2e-3)   # each triangle has area 1


# -- decibels, DCT, MFCC --------------------------------------------------------------------


def _torch_amplitude_to_db(x, multiplier, amin, db_multiplier, top_db):
    """torchaudio.functional.amplitude_to_db, written out."""
    db = multiplier * torch.log10(torch.clamp(x, min=amin)) - multiplier * db_multiplier
    if top_db is None:
        return db
    axes = tuple(range(max(db.ndim - 3, 0), db.ndim))
    return torch.max(db, db.amax(dim=axes, keepdim=True) - top_db)


@pytest.mark.parametrize("shape", [(6, 5), (2, 6, 5), (2, 3, 6, 5)])
@pytest.mark.parametrize("top_db", [None, 20.0])
def test_amplitude_to_db_matches_torchaudio(shape, top_db):
    x = np.exp(randn(*shape, seed=12, scale=3.0))
    for dtype in (np.float32, np.float64):
        compare_with_torch(lambda a: F.amplitude_to_db(a, 20.0, 1e-5, 0.3, top_db),
                           lambda a: _torch_amplitude_to_db(a, 20.0, 1e-5, 0.3, top_db), x, dtype=dtype,
                           rtol=1e-5 if dtype == np.float32 else 1e-10)
    assert check_gradients(lambda a: F.amplitude_to_db(a, 10.0, 1e-5, 0.0, top_db), x)


def test_amplitude_to_db_floors_at_top_db_below_the_maximum():
    x = np.array([[1.0, 1e-3, 1e-9, 0.0]])
    db = F.amplitude_to_db(x, 10.0, 1e-10, 0.0, top_db=50.0).numpy()
    assert_close(db, np.array([[0.0, -30.0, -50.0, -50.0]]), 1e-6)


@pytest.mark.parametrize("norm", [None, "ortho"])
def test_dct_matrix_is_scipys_dct_ii(norm):
    x = randn(3, 12, seed=13)
    d = F.dct_matrix(5, 12, norm, dtype=np.float64).numpy()
    assert_close(x @ d, scipy.fft.dct(x, type=2, norm=norm, axis=-1)[:, :5], 1e-12)
    if norm == "ortho":
        full = F.dct_matrix(12, 12, norm, dtype=np.float64).numpy()
        assert_close(full.T @ full, np.eye(12), 1e-12)


def _torch_mel_spectrogram(a, sample_rate, n_fft, n_mels):
    fb = torch.tensor(_reference_filterbank(n_fft // 2 + 1, 0.0, sample_rate // 2, n_mels, sample_rate, None, "htk"),
                      dtype=a.dtype)
    power = torch.stft(a, n_fft, n_fft // 2, window=torch.hann_window(n_fft, dtype=a.dtype),
                       return_complex=True).abs() ** 2
    return (power.transpose(-1, -2) @ fb).transpose(-1, -2)


def test_mel_spectrogram_and_mfcc_match_torch():
    x = randn(2, 400, seed=14)
    options = {"sample_rate": 8000, "n_fft": 64, "n_mels": 12}
    compare_with_torch(lambda a: F.mel_spectrogram(a, **options), lambda a: _torch_mel_spectrogram(a, 8000, 64, 12),
                       x, dtype=np.float64)
    dct = torch.tensor(scipy.fft.dct(np.eye(12), type=2, norm="ortho", axis=0)[:6].T.copy())

    def theirs(a):
        db = _torch_amplitude_to_db(_torch_mel_spectrogram(a, 8000, 64, 12), 10.0, 1e-10, 0.0, 80.0)
        return (db.transpose(-1, -2) @ dct).transpose(-1, -2)

    out = compare_with_torch(lambda a: F.mfcc(a, n_mfcc=6, **options), theirs, x, dtype=np.float64)
    assert out[0].shape == (2, 6, 1 + 400 // 32)
    assert check_gradients(lambda a: F.mfcc(a, n_mfcc=4, log_mels=True, sample_rate=8000, n_fft=16, n_mels=6),
                           randn(1, 40, seed=15))


def test_mel_spectrogram_follows_a_chirp():
    sample_rate, seconds = 8000, 1.0
    t = np.arange(int(sample_rate * seconds)) / sample_rate
    f0, f1 = 200.0, 3500.0
    chirp = np.sin(2 * np.pi * (f0 * t + (f1 - f0) * t ** 2 / (2 * seconds)))       # f(t) = f0 + (f1 - f0) t
    hop, n_mels = 128, 40
    mel = F.mel_spectrogram(lamina.tensor(chirp[None], dtype=np.float64), sample_rate, n_fft=512, hop_length=hop,
                            n_mels=n_mels).numpy()[0]
    corners = F.mel_to_hz(np.linspace(0.0, F.hz_to_mel(sample_rate / 2), n_mels + 2))
    centres = corners[1:-1]
    frames = np.arange(4, mel.shape[1] - 4)                    # away from the reflected ends
    expected = np.abs(centres[None, :] - (f0 + (f1 - f0) * frames[:, None] * hop / sample_rate)).argmin(axis=1)
    found = mel[:, frames].argmax(axis=0)
    assert np.abs(found - expected).max() <= 1
    assert (np.diff(found) >= 0).all()
