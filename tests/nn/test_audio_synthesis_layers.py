"""GriffinLim, InverseMelScale, MuLawEncoding / MuLawDecoding and Resample layers."""

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import assert_close, check_gradients, positive, randn
from lamina import functional as F
from lamina import nn
from lamina.errors import ShapeError


def test_griffinlim_layer_is_the_function_and_seeded():
    spec = lamina.tensor(positive(2, 17, 9, seed=1), dtype=np.float64)
    layer = nn.GriffinLim(n_fft=32, n_iter=3, hop_length=8, seed=5)
    expected = F.griffinlim(spec, 32, 8, n_iter=3, seed=5)
    assert_close(layer(spec).numpy(), expected.numpy(), 1e-12)
    assert_close(layer(spec).numpy(), expected.numpy(), 1e-12)       # the same phase every call
    zero_phase = nn.GriffinLim(n_fft=32, n_iter=0, hop_length=8, rand_init=False)(spec).numpy()
    window = torch.hann_window(32, dtype=torch.float64)
    reference = torch.istft(torch.tensor(spec.numpy()).sqrt().to(torch.complex128), 32, 8, window=window)
    assert_close(zero_phase, reference.numpy(), 1e-12)
    again = nn.GriffinLim(**layer.get_config())
    assert_close(again(spec).numpy(), expected.numpy(), 1e-12)


def test_griffinlim_layer_errors():
    with pytest.raises(ValueError, match="GriffinLim: momentum"):
        nn.GriffinLim(momentum=-0.1)
    with pytest.raises(ValueError, match="GriffinLim: win_length"):
        nn.GriffinLim(n_fft=16, win_length=32)
    with pytest.raises(ShapeError, match=r"GriffinLim.*n_fft // 2 \+ 1 = 9"):
        nn.GriffinLim(n_fft=16)(lamina.tensor(positive(10, 4)))


def test_inverse_mel_scale_layer():
    mel = randn(2, 10, 6, seed=2)
    layer = nn.InverseMelScale(n_stft=33, n_mels=10, sample_rate=8000, f_min=50.0)
    fb = F.mel_filterbank(33, 50.0, 4000.0, 10, 8000, dtype=np.float64).numpy()
    expected = torch.relu(torch.linalg.lstsq(torch.tensor(fb.T)[None], torch.tensor(mel), driver="gels").solution)
    out = layer(lamina.tensor(mel, dtype=np.float64))
    assert out.shape == layer.compute_output_shape(mel.shape) == (2, 33, 6)
    assert_close(out.numpy(), expected.numpy(), 1e-9)
    assert layer(lamina.tensor(mel.astype(np.float32))).dtype == np.float32
    assert check_gradients(layer, positive(10, 3, seed=3))
    with pytest.raises(ShapeError, match="n_mels = 10"):
        layer(lamina.tensor(np.ones((2, 9, 4))))


def test_mu_law_layers_round_trip():
    x = np.random.default_rng(4).uniform(-1, 1, (3, 50))
    codes = nn.MuLawEncoding(64)(lamina.tensor(x, dtype=np.float64))
    assert np.array_equal(codes.numpy(), F.mu_law_encoding(lamina.tensor(x, dtype=np.float64), 64).numpy())
    back = nn.MuLawDecoding(64)(codes).numpy()
    assert_close(back, F.mu_law_decoding(codes, 64).numpy(), 1e-7)
    assert np.abs(back - x).max() < 0.1
    assert nn.MuLawDecoding(**nn.MuLawDecoding(16).get_config()).quantization_channels == 16
    with pytest.raises(ValueError, match="MuLawEncoding: quantization_channels"):
        nn.MuLawEncoding(1)


def test_resample_layer_caches_its_kernel():
    x = randn(2, 300, seed=5)
    layer = nn.Resample(44100, 16000)
    kernel = layer._kernel
    out = layer(lamina.tensor(x, dtype=np.float64))
    assert_close(out.numpy(), F.resample(lamina.tensor(x, dtype=np.float64), 44100, 16000).numpy(), 1e-12)
    assert out.shape == (2, math.ceil(300 * 160 / 441))
    layer(lamina.tensor(x, dtype=np.float64))
    assert layer._kernel is kernel and len(layer._cast) == 1
    assert layer(lamina.tensor(x.astype(np.float32))).dtype == np.float32
    assert check_gradients(nn.Resample(3, 5), randn(1, 20, seed=6))
    kaiser = nn.Resample(**nn.Resample(8, 3, resampling_method="sinc_interp_kaiser", beta=6.0).get_config())
    expected = F.resample(lamina.tensor(x, dtype=np.float64), 8, 3, resampling_method="sinc_interp_kaiser", beta=6.0)
    assert_close(kaiser(lamina.tensor(x, dtype=np.float64)).numpy(), expected.numpy(), 1e-12)
    same = lamina.tensor(x)
    assert nn.Resample(100, 100)(same) is same
    with pytest.raises(ValueError, match="Resample: orig_freq must be a positive rate"):
        nn.Resample(0, 100)
