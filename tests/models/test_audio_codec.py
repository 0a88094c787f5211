"""AudioCodec: shapes, the bitrate, codes decoded back, and a short training run on sums of
sine tones that lifts the SI-SDR well above an untrained codec's, higher with more stages."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import run_readme_section
from lamina import functional as F
from lamina import models, optim
from lamina.autograd import no_grad
from lamina.errors import ShapeError


def tones(n, length=256, seed=0):
    """Sums of three sines of random whole-cycle frequencies, phases and amplitudes."""
    rng = np.random.default_rng(seed)
    t = np.arange(length) / length
    out = np.zeros((n, length))
    for _ in range(3):
        f, phase = rng.integers(2, 12, (n, 1)), rng.uniform(0, 2 * np.pi, (n, 1))
        out += rng.uniform(0.3, 1, (n, 1)) * np.sin(2 * np.pi * f * t + phase)
    return (out / 3).astype(np.float32)


def si_sdr_db(codec, x, n_q=None) -> float:
    codec.eval()
    with no_grad():
        estimate = codec.decode(codec.encode(x, n_q)).numpy()[..., 0]
    codec.train()
    return float(F.si_sdr(estimate, x).numpy().mean())


def test_shapes_bitrate_and_codes_round_trip():
    codec = models.AudioCodec(channels=4, strides=(2, 3), dim=6, num_quantizers=3, codebook_size=32,
                              sample_rate=24000, seed=0).eval()
    x = tones(2, length=48)
    out = codec(x)
    assert out.reconstruction.shape == (2, 48, 1) and out.codes.shape == (2, 8, 3)
    assert codec.hop_length == 6 and codec.frame_rate == 4000
    assert codec.bitrate() == 3 * 5 * 4000 and codec.bitrate(1) == 5 * 4000
    codes = codec.encode(x)
    np.testing.assert_array_equal(codes, out.codes)
    np.testing.assert_allclose(codec.decode(codes).numpy(), out.reconstruction.numpy(), rtol=1e-5, atol=1e-6)
    assert codec.encode(x, n_q=2).shape == (2, 8, 2) and codec.decode(codes[..., :1]).shape == (2, 48, 1)
    with pytest.raises(ShapeError, match="multiple of 6"):
        codec(tones(1, length=50))
    with pytest.raises(ValueError, match="strides"):
        models.AudioCodec(strides=(1, 2))


def test_loss_is_l1_plus_stft_plus_quantiser_loss():
    codec = models.AudioCodec(seed=1).eval()
    x = tones(2, seed=1)
    loss, out = codec.loss(x, stft_weight=0.5)
    reconstruction = out.reconstruction.numpy()[..., 0]
    stft = F.multi_resolution_stft_loss(reconstruction, x, (64, 128, 32), (16, 32, 8), (64, 128, 32))
    expected = np.abs(reconstruction - x).mean() + 0.5 * float(stft.numpy()) + float(out.vq_loss.numpy())
    np.testing.assert_allclose(float(loss.numpy()), expected, rtol=1e-5)


def test_a_briefly_trained_codec_reconstructs_tones_better_with_more_stages():
    lamina.manual_seed(0)
    codec = models.AudioCodec(channels=8, strides=(2, 4), dim=8, num_quantizers=4, codebook_size=16, seed=0)
    held_out = tones(16, seed=1000)
    untrained = si_sdr_db(codec, held_out)
    optimizer = optim.Adam(codec, lr=3e-3)
    for step in range(200):         # the waveform's L1 leads: the STFT terms alone leave the phase (scored here) free
        loss, _ = codec.loss(tones(16, seed=step), stft_weight=0.1)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    scores = [si_sdr_db(codec, held_out, n_q) for n_q in (1, 2, 4)]
    print(f"SI-SDR untrained {untrained:.1f} dB, trained with 1/2/4 stages {scores}")
    assert scores[-1] > untrained + 15 and scores[-1] > 8, (untrained, scores)
    assert scores[0] < scores[1] < scores[2], scores


def test_readme_example_trains_a_codec():
    printed, names = run_readme_section("A neural audio codec with residual vector quantization")
    assert printed.split()[0] == "bitrate" and float(printed.split()[1]) == names["codec"].bitrate()
    assert names["codes"].shape == (4, 32, 4) and names["after"] > names["before"]
