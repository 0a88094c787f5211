"""Multi-resolution STFT loss against a torch rewrite of Parallel WaveGAN's, built on torch.stft."""

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, compare_with_torch, randn
from lamina import functional as F

FFT_SIZES, HOP_SIZES, WIN_LENGTHS = (32, 64, 16), (8, 12, 4), (24, 48, 10)


def torch_magnitude(x, fft_size, hop_size, win_length):
    window = torch.hann_window(win_length, dtype=x.dtype)
    spec = torch.view_as_real(torch.stft(x, fft_size, hop_size, win_length, window, return_complex=True))
    return torch.sqrt(torch.clamp(spec[..., 0] ** 2 + spec[..., 1] ** 2, min=1e-7))


def torch_terms(pred, target, fft_sizes=FFT_SIZES, hop_sizes=HOP_SIZES, win_lengths=WIN_LENGTHS):
    sc = mag = 0.0
    for n_fft, hop, win in zip(fft_sizes, hop_sizes, win_lengths):
        x_mag, y_mag = torch_magnitude(pred, n_fft, hop, win), torch_magnitude(target, n_fft, hop, win)
        sc = sc + torch.norm(y_mag - x_mag, p="fro") / torch.norm(y_mag, p="fro")
        mag = mag + torch.nn.functional.l1_loss(torch.log(y_mag), torch.log(x_mag))
    return sc / len(fft_sizes), mag / len(fft_sizes)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_matches_torch_stft_rewrite_in_values_and_gradients(dtype):
    target = randn(3, 160, seed=1)
    pred = target + 0.3 * randn(3, 160, seed=2)
    rtol = 1e-3 if dtype == np.float32 else 1e-9     # log of small float32 magnitudes
    compare_with_torch(lambda p, t: F.multi_resolution_stft_loss(p, t, FFT_SIZES, HOP_SIZES, WIN_LENGTHS),
                       lambda p, t: sum(torch_terms(p, t)), pred, target, dtype=dtype, rtol=rtol)
    compare_with_torch(lambda p, t: list(F.multi_resolution_stft_loss(p, t, FFT_SIZES, HOP_SIZES, WIN_LENGTHS,
                                                                      return_terms=True)),
                       lambda p, t: list(torch_terms(p, t)), pred, target, dtype=dtype, rtol=rtol)


def test_default_resolutions_match_parallel_wavegan():
    target = randn(1, 1300, seed=3)
    pred = target + randn(1, 1300, seed=4)
    compare_with_torch(F.multi_resolution_stft_loss,
                       lambda p, t: sum(torch_terms(p, t, (1024, 2048, 512), (120, 240, 50), (600, 1200, 240))),
                       pred, target, dtype=np.float64, rtol=1e-9, grad=[True, False])


def test_gradients_float64_and_zero_at_the_target():
    target = randn(1, 48, seed=5)
    pred = target + 0.5 * randn(1, 48, seed=6)
    assert check_gradients(lambda p: F.multi_resolution_stft_loss(p, lamina.tensor(target, dtype=np.float64),
                                                                  (16,), (4,), (12,)), pred)
    same = F.multi_resolution_stft_loss(lamina.tensor(target), lamina.tensor(target), (16,), (4,), (12,))
    assert float(same.numpy()) == 0.0


def test_bad_resolutions_are_rejected():
    x = np.zeros((1, 64), dtype=np.float32)
    with pytest.raises(ValueError, match="equal length"):
        F.multi_resolution_stft_loss(x, x, (16, 32), (4,), (12,))
    with pytest.raises(ValueError, match="win_length 20 exceeds fft_size 16"):
        F.multi_resolution_stft_loss(x, x, (16,), (4,), (20,))
