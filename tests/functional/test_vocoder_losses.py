import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import functional as F
from lamina.errors import ShapeError

MEL = dict(sample_rate=4000, n_fft=64, n_mels=12, hop_length=16, win_length=48, f_min=50.0, f_max=1800.0)


# -- references: the published formulas in torch, and librosa's Slaney mel filters in NumPy -------

def torch_discriminator_loss(real, fake):
    return sum(torch.mean((1 - r) ** 2) + torch.mean(g ** 2) for r, g in zip(real, fake))


def torch_generator_loss(fake):
    return sum(torch.mean((1 - g) ** 2) for g in fake)


def torch_feature_loss(real_maps, fake_maps):
    return 2 * sum(torch.mean(torch.abs(r - g)) for dr, dg in zip(real_maps, fake_maps) for r, g in zip(dr, dg))


def slaney_mel_filters(sr, n_fft, n_mels, fmin, fmax):
    """librosa.filters.mel(htk=False, norm='slaney'): (n_mels, n_fft // 2 + 1)."""
    f_sp, min_log_hz, logstep = 200.0 / 3, 1000.0, np.log(6.4) / 27.0
    min_log_mel = min_log_hz / f_sp

    def hz_to_mel(f):
        f = np.asarray(f, dtype=np.float64)
        return np.where(f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp)

    def mel_to_hz(m):
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    corners = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    bins = np.linspace(0, sr / 2, n_fft // 2 + 1)
    ramps = corners[:, None] - bins[None, :]
    widths = np.diff(corners)
    lower = -ramps[:-2] / widths[:-1, None]
    upper = ramps[2:] / widths[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return weights * (2.0 / (corners[2:] - corners[:-2]))[:, None]


def torch_log_mel(y, sample_rate, n_fft, n_mels, hop_length, win_length, f_min, f_max):
    """HiFi-GAN's meldataset.mel_spectrogram, (batch, n_mels, frames)."""
    basis = torch.from_numpy(slaney_mel_filters(sample_rate, n_fft, n_mels, f_min, f_max))
    pad = (n_fft - hop_length) // 2
    y = TF.pad(y[:, None], (pad, pad), mode="reflect")[:, 0]
    spec = torch.stft(y, n_fft, hop_length, win_length, torch.hann_window(win_length, dtype=y.dtype), center=False,
                      return_complex=True)
    spec = torch.sqrt(spec.real ** 2 + spec.imag ** 2 + 1e-9)
    return torch.log(torch.clamp(basis @ spec, min=1e-5))


def _scores(seed):
    return [randn(2, 5, seed=seed), randn(3, seed=seed + 1), randn(2, 1, seed=seed + 2)]


# -- LSGAN and feature matching -------------------------------------------------------------------

def test_lsgan_losses_match_the_formulas_in_values_and_gradients():
    real, fake = _scores(0), _scores(10)
    lam_real = [lamina.tensor(a, dtype=np.float64, requires_grad=True) for a in real]
    lam_fake = [lamina.tensor(a, dtype=np.float64, requires_grad=True) for a in fake]
    t_real = [torch.tensor(a, requires_grad=True) for a in real]
    t_fake = [torch.tensor(a, requires_grad=True) for a in fake]
    d, d_t = F.lsgan_discriminator_loss(lam_real, lam_fake), torch_discriminator_loss(t_real, t_fake)
    g, g_t = F.lsgan_generator_loss(lam_fake), torch_generator_loss(t_fake)
    assert_close(d.item(), d_t.item(), 1e-12)
    assert_close(g.item(), g_t.item(), 1e-12)
    (d + 3.0 * g).backward()
    (d_t + 3.0 * g_t).backward()
    for a, b in zip(lam_real + lam_fake, t_real + t_fake):
        assert_close(a.grad, b.grad.numpy(), 1e-12, "gradient")


def test_lsgan_losses_pass_a_gradient_check_and_reject_mismatched_lists():
    real, fake = _scores(20), _scores(30)
    assert check_gradients(lambda *s: F.lsgan_discriminator_loss(s[:3], s[3:]), *real, *fake)
    assert check_gradients(lambda *s: F.lsgan_generator_loss(s), *fake)
    with pytest.raises(ValueError, match="one per sub-discriminator"):
        F.lsgan_discriminator_loss(real, fake[:2])
    with pytest.raises(ValueError, match="at least one"):
        F.lsgan_generator_loss([])


def test_feature_matching_loss_matches_the_formula_in_values_and_gradients():
    shapes = [[(2, 6, 3), (2, 3, 4)], [(2, 5, 2, 3), (2, 1)]]
    real = [[randn(*s, seed=40 + 3 * i + j) for j, s in enumerate(maps)] for i, maps in enumerate(shapes)]
    fake = [[randn(*s, seed=60 + 3 * i + j) for j, s in enumerate(maps)] for i, maps in enumerate(shapes)]
    lam_fake = [[lamina.tensor(a, dtype=np.float64, requires_grad=True) for a in maps] for maps in fake]
    t_fake = [[torch.tensor(a, requires_grad=True) for a in maps] for maps in fake]
    loss = F.feature_matching_loss(real, lam_fake)
    loss_t = torch_feature_loss([[torch.tensor(a) for a in maps] for maps in real], t_fake)
    assert_close(loss.item(), loss_t.item(), 1e-12)
    loss.backward()
    loss_t.backward()
    for maps, maps_t in zip(lam_fake, t_fake):
        for a, b in zip(maps, maps_t):
            assert_close(a.grad, b.grad.numpy(), 1e-12, "gradient")
    flat_real = [a for maps in real for a in maps]
    assert check_gradients(
        lambda *f: F.feature_matching_loss(real, [list(f[:2]), list(f[2:])], weight=1.5),
        *[a for maps in fake for a in maps])
    assert F.feature_matching_loss(real, real).item() == 0.0
    with pytest.raises(ShapeError, match="equal shapes"):
        F.feature_matching_loss([flat_real[:1]], [flat_real[1:2]])


# -- the mel spectrogram and its L1 loss ----------------------------------------------------------

def test_log_mel_spectrogram_matches_hifigan_reference():
    wave = randn(2, 160, seed=70, scale=0.3)
    got = F.vocoder_log_mel_spectrogram(lamina.tensor(wave, dtype=np.float64), **MEL)
    expected = torch_log_mel(torch.tensor(wave), **MEL).permute(0, 2, 1).numpy()
    assert got.shape == (2, 160 // 16, 12)                     # T / hop frames, channels-last
    assert_close(got.data, expected, 1e-9)


def test_mel_l1_loss_matches_reference_in_values_and_gradients():
    target, predicted = randn(2, 128, seed=71, scale=0.3), randn(2, 128, seed=72, scale=0.3)
    x = lamina.tensor(predicted, dtype=np.float64, requires_grad=True)
    x_t = torch.tensor(predicted, requires_grad=True)
    loss = F.mel_spectrogram_l1_loss(x, target, **MEL)
    loss_t = 45 * TF.l1_loss(torch_log_mel(x_t, **MEL), torch_log_mel(torch.tensor(target), **MEL))
    assert_close(loss.item(), loss_t.item(), 1e-10)
    loss.backward()
    loss_t.backward()
    assert_close(x.grad, x_t.grad.numpy(), 1e-8, "gradient")
    short = dict(MEL, n_fft=16, win_length=16, hop_length=8, n_mels=4)
    assert check_gradients(lambda p: F.mel_spectrogram_l1_loss(p, target[:1, :32], weight=2.0, **short),
                           predicted[:1, :32])


def test_mel_loss_rejects_mismatched_or_short_waveforms():
    with pytest.raises(ShapeError, match="equal shapes"):
        F.mel_spectrogram_l1_loss(randn(1, 64), randn(1, 48), **MEL)
    with pytest.raises(ShapeError, match="too short"):
        F.vocoder_log_mel_spectrogram(randn(1, 20), **MEL)
    with pytest.raises(ShapeError, match=r"\(batch, samples\)"):
        F.vocoder_log_mel_spectrogram(randn(64), **MEL)
