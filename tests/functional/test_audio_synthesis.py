"""Griffin-Lim, inverse mel scale, mu-law and resampling against torch re-implementations of
torchaudio's algorithms (torchaudio itself is not a test dependency)."""

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, positive, randn
from lamina import functional as F
from lamina.errors import ShapeError
from lamina.functional import audio_synthesis as synthesis

# -- torch references, following torchaudio's source -------------------------------------------


def torch_griffinlim(spec, window, n_fft, hop, win, power, n_iter, momentum, length, angles):
    """torchaudio.functional.griffinlim with the initial phase ``angles`` (complex) given."""
    momentum = momentum / (1 + momentum)
    shape = spec.size()
    spec = spec.reshape([-1] + list(shape[-2:])).pow(1 / power)
    angles = angles.reshape(spec.shape)
    previous = torch.tensor(0.0, dtype=spec.dtype)
    for _ in range(n_iter):
        inverse = torch.istft(spec * angles, n_fft=n_fft, hop_length=hop, win_length=win, window=window,
                              length=length)
        rebuilt = torch.stft(inverse, n_fft=n_fft, hop_length=hop, win_length=win, window=window, center=True,
                             pad_mode="reflect", normalized=False, onesided=True, return_complex=True)
        angles = rebuilt
        if momentum:
            angles = angles - previous * momentum
        angles = angles / (angles.abs() + 1e-16)
        previous = rebuilt
    wave = torch.istft(spec * angles, n_fft=n_fft, hop_length=hop, win_length=win, window=window, length=length)
    return wave.reshape(shape[:-2] + wave.shape[-1:])


def torch_resample_kernel(orig, new, width_zeros=6, rolloff=0.99, method="sinc_interp_hann", beta=None):
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    base = min(o, n) * rolloff
    width = math.ceil(width_zeros * o / base)
    idx = torch.arange(-width, width + o, dtype=torch.float64)[None, None] / o
    t = torch.arange(0, -n, -1, dtype=torch.float64)[:, None, None] / n + idx
    t = (t * base).clamp(-width_zeros, width_zeros)
    if method == "sinc_interp_hann":
        window = torch.cos(t * math.pi / width_zeros / 2) ** 2
    else:
        b = torch.tensor(14.769656459379492 if beta is None else float(beta), dtype=torch.float64)
        window = torch.i0(b * torch.sqrt(1 - (t / width_zeros) ** 2)) / torch.i0(b)
    t = t * math.pi
    kernel = torch.where(t == 0, torch.ones_like(t), t.sin() / t) * window * (base / o)
    return kernel, width


def torch_resample(x, orig, new, **options):
    g = math.gcd(orig, new)
    o, n = orig // g, new // g
    kernel, width = torch_resample_kernel(orig, new, **options)
    shape = x.shape
    flat = x.reshape(-1, shape[-1])
    padded = torch.nn.functional.pad(flat, (width, width + o))
    out = torch.nn.functional.conv1d(padded[:, None], kernel.to(x.dtype), stride=o)
    out = out.transpose(1, 2).reshape(flat.shape[0], -1)[..., :math.ceil(n * shape[-1] / o)]
    return out.reshape(shape[:-1] + out.shape[-1:])


def torch_mu_law_encoding(x, channels):
    mu = torch.tensor(channels - 1.0, dtype=x.dtype)
    companded = torch.sign(x) * torch.log1p(mu * torch.abs(x)) / torch.log1p(mu)
    return ((companded + 1) / 2 * mu + 0.5).to(torch.int64)


def torch_mu_law_decoding(codes, channels):
    mu = torch.tensor(channels - 1.0, dtype=codes.dtype)
    u = codes / mu * 2 - 1.0
    return torch.sign(u) * (torch.exp(torch.abs(u) * torch.log1p(mu)) - 1.0) / mu


def torch_inverse_mel(mel, fb):
    return torch.relu(torch.linalg.lstsq(fb.transpose(-1, -2)[None], mel, driver="gels").solution)


# -- Griffin-Lim ---------------------------------------------------------------------------------

N_FFT, HOP = 32, 8


def _power_spec(signal):
    window = torch.hann_window(N_FFT, dtype=torch.float64)
    return torch.stft(torch.tensor(signal), N_FFT, HOP, window=window, return_complex=True).abs() ** 2


def _complex(angles):
    a = angles.numpy()
    return torch.complex(torch.tensor(a[..., 0]), torch.tensor(a[..., 1]))


def test_griffinlim_without_iterations_is_the_istft_with_the_initial_phase():
    spec = _power_spec(randn(2, 120, seed=1))
    angles = synthesis.griffinlim_initial_phase(tuple(spec.shape), rand_init=True, seed=3, dtype=np.float64)
    out = F.griffinlim(lamina.tensor(spec.numpy(), dtype=np.float64), N_FFT, HOP, n_iter=0, init_angles=angles)
    window = torch.hann_window(N_FFT, dtype=torch.float64)
    expected = torch.istft(spec.sqrt() * _complex(angles), N_FFT, HOP, window=window)
    assert_close(out.numpy(), expected.numpy(), 1e-12)


@pytest.mark.parametrize("momentum, power, length", [(0.99, 2.0, 150), (0.0, 1.0, None), (0.5, 2.0, None)])
def test_griffinlim_matches_torchaudio_algorithm(momentum, power, length):
    spec = _power_spec(randn(2, 150, seed=2)) ** (power / 2)
    angles = synthesis.griffinlim_initial_phase(tuple(spec.shape), seed=4, dtype=np.float64)
    ours = F.griffinlim(lamina.tensor(spec.numpy(), dtype=np.float64), N_FFT, HOP, power=power, n_iter=6,
                        momentum=momentum, length=length, init_angles=angles)
    window = torch.hann_window(N_FFT, dtype=torch.float64)
    theirs = torch_griffinlim(spec, window, N_FFT, HOP, N_FFT, power, 6, momentum, length, _complex(angles))
    assert_close(ours.numpy(), theirs.numpy(), 1e-10)


def test_griffinlim_zero_phase_start_is_all_ones():
    angles = synthesis.griffinlim_initial_phase((3, 4), rand_init=False, dtype=np.float64).numpy()
    assert np.array_equal(angles[..., 0], np.ones((3, 4))) and not angles[..., 1].any()


def test_griffinlim_spectral_error_decreases_over_iterations():
    t = np.arange(400)
    signal = np.sin(2 * np.pi * 0.03 * t) + 0.5 * np.sin(2 * np.pi * 0.11 * t + 1.0)
    spec = _power_spec(signal)
    target = spec.sqrt().numpy()
    window = torch.hann_window(N_FFT, dtype=torch.float64)
    errors = []
    for n_iter in (0, 2, 8, 32):
        wave = F.griffinlim(lamina.tensor(spec.numpy(), dtype=np.float64), N_FFT, HOP, n_iter=n_iter, seed=0,
                            length=400)
        rebuilt = torch.stft(torch.tensor(wave.numpy()), N_FFT, HOP, window=window, return_complex=True).abs()
        errors.append(np.linalg.norm(rebuilt.numpy() - target) / np.linalg.norm(target))
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 0.3 * errors[0]


def test_griffinlim_gradients():
    spec = positive(N_FFT // 2 + 1, 6, seed=5)
    angles = synthesis.griffinlim_initial_phase(spec.shape, seed=1, dtype=np.float64)
    assert check_gradients(lambda s: F.griffinlim(s, N_FFT, HOP, n_iter=2, init_angles=angles), spec)


def test_griffinlim_errors():
    spec = lamina.tensor(positive(10, 5))
    with pytest.raises(ShapeError, match=r"n_fft // 2 \+ 1 = 17"):
        F.griffinlim(spec, 32)
    with pytest.raises(ValueError, match="momentum"):
        F.griffinlim(lamina.tensor(positive(17, 5)), 32, momentum=1.0)
    with pytest.raises(ValueError, match="power"):
        F.griffinlim(lamina.tensor(positive(17, 5)), 32, power=0.0)
    with pytest.raises(ShapeError, match="init_angles"):
        F.griffinlim(lamina.tensor(positive(17, 5)), 32, init_angles=np.ones((17, 5)))


# -- inverse mel scale ---------------------------------------------------------------------------

N_STFT, N_MELS, RATE = 33, 12, 16000


def _fb(norm=None, mel_scale="htk"):
    return F.mel_filterbank(N_STFT, 0.0, RATE / 2, N_MELS, RATE, norm, mel_scale, dtype=np.float64).numpy()


@pytest.mark.parametrize("norm, mel_scale", [(None, "htk"), ("slaney", "slaney")])
def test_inverse_mel_matches_least_squares_and_clamp(norm, mel_scale):
    mel = randn(2, N_MELS, 7, seed=6)          # some solutions negative: the clamp matters
    fb = torch.tensor(_fb(norm, mel_scale))
    compare_with_torch(lambda m: F.inverse_mel_scale(m, N_STFT, RATE, norm=norm, mel_scale=mel_scale),
                       lambda m: torch_inverse_mel(m, fb), mel, dtype=np.float64, rtol=1e-9)


def test_mel_of_inverse_mel_recovers_mels_in_the_filterbank_range():
    fb = _fb()
    spec = fb @ positive(N_MELS, 5, seed=7)    # non-negative and in the row space of fb^T
    mel = fb.T @ spec
    rebuilt = F.inverse_mel_scale(lamina.tensor(mel, dtype=np.float64), N_STFT, RATE).numpy()
    assert_close(rebuilt, spec, 1e-9)
    assert_close(fb.T @ rebuilt, mel, 1e-9)


def test_inverse_mel_gradients():
    assert check_gradients(lambda m: F.inverse_mel_scale(m, N_STFT, RATE), positive(N_MELS, 4, seed=8))


def test_inverse_mel_errors():
    with pytest.raises(ShapeError, match="n_mels, frames"):
        F.inverse_mel_scale(lamina.tensor(np.ones(5)), N_STFT)
    with pytest.raises(ValueError, match="n_stft"):
        F.inverse_mel_scale(lamina.tensor(np.ones((4, 5))), 1)


# -- mu-law ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("channels", [256, 16, 2])
def test_mu_law_matches_torchaudio_formulas(channels):
    x = np.concatenate([np.random.default_rng(9).uniform(-1, 1, 500), [-1.0, 0.0, 1.0]])
    codes = F.mu_law_encoding(lamina.tensor(x, dtype=np.float64), channels).numpy()
    assert codes.dtype == np.int64
    assert np.array_equal(codes, torch_mu_law_encoding(torch.tensor(x), channels).numpy())
    assert codes.min() == 0 and codes.max() == channels - 1
    decoded = F.mu_law_decoding(codes, channels).numpy()
    expected = torch_mu_law_decoding(torch.tensor(codes, dtype=torch.float32), channels).numpy()
    assert_close(decoded, expected, 1e-6)


def test_mu_law_round_trip_error_is_within_half_a_code():
    mu = 255.0
    x = np.random.default_rng(10).uniform(-1, 1, 2000)
    back = F.mu_law_decoding(F.mu_law_encoding(lamina.tensor(x, dtype=np.float64), 256), 256).numpy()

    def compand(v):
        return np.sign(v) * np.log1p(mu * np.abs(v)) / np.log1p(mu)

    assert np.abs(compand(back) - compand(x)).max() <= 1 / mu + 1e-6     # half a step of 2 / mu
    small = np.abs(x) < 0.01
    assert np.abs(back - x)[small].max() < 1e-3                           # fine steps near silence
    steepest = (1 + mu) * np.log1p(mu) / mu ** 2      # |dx/du| at |x| = 1 times half a step
    assert np.abs(back - x).max() <= steepest + 1e-6


def test_mu_law_decoding_gradients_and_torch():
    codes = np.random.default_rng(11).uniform(0, 255, (3, 7))
    compare_with_torch(lambda c: F.mu_law_decoding(c, 256), lambda c: torch_mu_law_decoding(c, 256), codes,
                       dtype=np.float64)
    assert check_gradients(lambda c: F.mu_law_decoding(c, 256), codes)


def test_mu_law_errors():
    with pytest.raises(ValueError, match="quantization_channels must be an int >= 2"):
        F.mu_law_encoding(lamina.tensor(np.zeros(3)), 1)
    with pytest.raises(ValueError, match="quantization_channels"):
        F.mu_law_decoding(np.zeros(3, dtype=np.int64), 1)
    with pytest.raises(TypeError, match="float signal"):
        F.mu_law_encoding(np.zeros(3, dtype=np.int64), 256)


# -- resampling ------------------------------------------------------------------------------------


@pytest.mark.parametrize("orig, new", [(16000, 8000), (44100, 16000), (8000, 16000), (48000, 44100)])
def test_resample_matches_torchaudio_kernel(orig, new):
    x = randn(2, 3, 250, seed=12)
    compare_with_torch(lambda s: F.resample(s, orig, new), lambda s: torch_resample(s, orig, new), x,
                       dtype=np.float64)


@pytest.mark.parametrize("options", [{"resampling_method": "sinc_interp_kaiser"},
                                     {"resampling_method": "sinc_interp_kaiser", "beta": 8.0},
                                     {"lowpass_filter_width": 3, "rolloff": 0.8}])
def test_resample_options_match(options):
    x = randn(1, 200, seed=13)
    ours = F.resample(lamina.tensor(x, dtype=np.float64), 24000, 16000, **options)
    kernel, _ = F.resample_kernel(24000, 16000, **options, dtype=np.float64)
    ref_options = {"width_zeros": options.get("lowpass_filter_width", 6), "rolloff": options.get("rolloff", 0.99),
                   "method": options.get("resampling_method", "sinc_interp_hann"), "beta": options.get("beta")}
    assert_close(kernel.numpy(), torch_resample_kernel(24000, 16000, **ref_options)[0][:, 0].numpy(), 1e-12)
    assert_close(ours.numpy(), torch_resample(torch.tensor(x), 24000, 16000, **ref_options).numpy(), 1e-10)


@pytest.mark.parametrize("orig, new", [(16000, 8000), (8000, 16000), (44100, 16000)])
def test_resampled_sine_keeps_frequency_and_amplitude(orig, new):
    freq, seconds = 1000.0, 0.05
    t = np.arange(int(orig * seconds)) / orig
    out = F.resample(lamina.tensor(np.sin(2 * np.pi * freq * t), dtype=np.float64), orig, new).numpy()
    t_new = np.arange(out.shape[-1]) / new
    inner = slice(60, -60)                       # away from the zero-padded edges
    assert_close(out[inner], np.sin(2 * np.pi * freq * t_new)[inner], 2e-3)
    spectrum = np.abs(np.fft.rfft(out[inner] * np.hanning(out[inner].size)))
    peak = np.fft.rfftfreq(out[inner].size, 1 / new)[spectrum.argmax()]
    assert abs(peak - freq) <= new / out[inner].size


def test_resample_gradients_and_identity():
    assert check_gradients(lambda s: F.resample(s, 6, 4), randn(2, 30, seed=14))
    x = lamina.tensor(randn(5))
    assert F.resample(x, 100, 100) is x
    assert F.resample(lamina.tensor(randn(2, 101)), 3, 2).shape == (2, 68)


def test_resample_errors():
    x = lamina.tensor(randn(10))
    with pytest.raises(ValueError, match="orig_freq must be a positive rate"):
        F.resample(x, 0, 8000)
    with pytest.raises(ValueError, match="new_freq must be a positive rate"):
        F.resample(x, 8000, -1)
    with pytest.raises(ValueError, match="whole number"):
        F.resample(x, 44100, 5512.5)
    with pytest.raises(ValueError, match="resampling_method"):
        F.resample(x, 2, 1, resampling_method="linear")
    with pytest.raises(ValueError, match="lowpass_filter_width"):
        F.resample(x, 2, 1, lowpass_filter_width=0)
