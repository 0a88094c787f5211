"""DiffWave: the residual layer and the spectrogram upsampler against float64 torch rewrites of
the published formulas (outputs, input and parameter gradients), float64 gradient checks, the
step embedding and the fast schedule's step alignment against hand computations, the samplers
and the loss against plain NumPy rewrites, the presets' parameter counts, saving, input errors
and a learning test on a toy family of sine waves."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, perturb_parameters, randn, run_readme_section
from lamina import models, optim
from lamina.errors import ShapeError


# -- torch rewrites of the published formulas (channels-first inside, as the paper's code) -----
def torch_residual_layer(h, e, cond, step_w, step_b, conv_w, conv_b, cond_w, cond_b, out_w, out_b, dilation):
    """y = x + e D; z = conv_d(y) + conv1x1(c); u = sigmoid(z_1) tanh(z_2); [r, s] = conv1x1(u);
    returns ((x + r) / sqrt(2), s), channels-last at the boundary."""
    x = h.transpose(1, 2)                                               # (N, C, L)
    y = x + (e @ step_w + step_b)[:, :, None]
    z = torch.nn.functional.conv1d(y, conv_w.permute(0, 2, 1), conv_b, padding=dilation, dilation=dilation)
    z = z + torch.nn.functional.conv1d(cond.transpose(1, 2), cond_w.T[:, :, None], cond_b)
    gate, filt = z.chunk(2, dim=1)
    out = torch.nn.functional.conv1d(torch.sigmoid(gate) * torch.tanh(filt), out_w.T[:, :, None], out_b)
    residual, skip = out.chunk(2, dim=1)
    return ((x + residual) / math.sqrt(2.0)).transpose(1, 2), skip.transpose(1, 2)


def torch_upsampler(mel, strides, *params):
    """Per stride s: ConvTranspose2d(1, 1, (3, 2s), stride (1, s), padding (1, s / 2)) over the
    (mel, time) image, then leaky ReLU 0.4."""
    x = mel.transpose(1, 2)[:, None]                                    # (N, 1, n_mels, F)
    for s, w, b in zip(strides, params[0::2], params[1::2]):
        weight = w[0, :, :, 0].T[None, None]                            # (1, 1, 3, 2s)
        x = torch.nn.functional.conv_transpose2d(x, weight, b, stride=(1, s), padding=(1, s // 2))
        x = torch.nn.functional.leaky_relu(x, 0.4)
    return x[:, 0].transpose(1, 2)


def _compare(ours, theirs, inputs, params):
    """Outputs and the gradients of a random projection of them, for inputs and parameters."""
    xs = [lamina.tensor(x, requires_grad=True, dtype=np.float64) for x in inputs]
    ts = [torch.tensor(x, requires_grad=True) for x in inputs]
    tp = [torch.tensor(p.numpy(), requires_grad=True) for p in params]
    out_l, out_t = ours(*xs), theirs(*ts, *tp)
    out_l = out_l if isinstance(out_l, tuple) else (out_l,)
    out_t = out_t if isinstance(out_t, tuple) else (out_t,)
    total_l, total_t = 0.0, 0.0
    for k, (a, b) in enumerate(zip(out_l, out_t)):
        np.testing.assert_allclose(a.numpy(), b.detach().numpy(), rtol=1e-10, atol=1e-12)
        up = randn(*a.shape, seed=10 + k)
        total_l = total_l + (a * lamina.tensor(up)).sum()
        total_t = total_t + (b * torch.tensor(up)).sum()
    total_l.backward()
    total_t.backward()
    for a, b in zip(xs + list(params), ts + tp):
        np.testing.assert_allclose(a.grad, b.grad.numpy(), rtol=1e-9, atol=1e-11)


@pytest.mark.parametrize("dilation", [1, 4])
def test_residual_layer_matches_the_torch_rewrite(float64, dilation):
    layer = models.DiffWaveResidualLayer(3, dilation=dilation, step_channels=5, n_mels=4)
    perturb_parameters(layer)
    params = [layer.step_weight, layer.step_bias, layer.conv_weight, layer.conv_bias, layer.cond_weight,
              layer.cond_bias, layer.out_weight, layer.out_bias]
    _compare(layer, lambda h, e, c, *p: torch_residual_layer(h, e, c, *p, dilation=dilation),
             [randn(2, 11, 3, seed=1), randn(2, 5, seed=2), randn(2, 11, 4, seed=3)], params)


def test_upsampler_matches_torch_transposed_convolutions(float64):
    upsampler = models.SpectrogramUpsampler((4, 2))
    perturb_parameters(upsampler)
    params = [upsampler.weight0, upsampler.bias0, upsampler.weight1, upsampler.bias1]
    mel = randn(2, 3, 5, seed=4)
    assert upsampler(lamina.tensor(mel)).shape == (2, 24, 5)           # 3 frames x hop 8
    _compare(upsampler, lambda m, *p: torch_upsampler(m, (4, 2), *p), [mel], params)


def test_gradients(float64):
    layer = models.DiffWaveResidualLayer(3, dilation=2, step_channels=4, n_mels=2)
    perturb_parameters(layer, scale=0.2)
    assert check_gradients(lambda h, e, c: layer(h, e, c)[0] + 2.0 * layer(h, e, c)[1], randn(2, 7, 3, seed=1),
                           randn(2, 4, seed=2), randn(2, 7, 2, seed=3))
    model = models.diffwave_tiny(n_mels=3, residual_channels=4, residual_layers=3, dilation_cycle=2)
    perturb_parameters(model, scale=0.2)
    steps = np.array([3, 40])
    assert check_gradients(lambda x, m: model(x, steps, m), randn(2, 32, seed=4), randn(2, 2, 3, seed=5))


def test_network_layout_dilations_and_zero_initial_output():
    model = models.DiffWave(8, 7, 3, n_mels=None, step_dim=8, step_hidden=6)
    assert [layer.dilation for layer in model.layers] == [1, 2, 4, 1, 2, 4, 1]
    assert model.upsampler is None and model.hop_length is None
    out = model(randn(2, 20, seed=1).astype(np.float32), 4)
    assert out.shape == (2, 20) and out.dtype == np.float32
    np.testing.assert_array_equal(out.numpy(), 0.0)                   # the output projection starts at 0


def test_step_features_are_the_papers_sinusoids_interpolated_between_steps():
    table = np.asarray(models.diffwave_step_features(np.array([3, 2, 2.25]), 128, np.float64))
    j = np.arange(64)
    np.testing.assert_allclose(table[0, :64], np.sin(3 * 10.0 ** (j * 4 / 63)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(table[0, 64:], np.cos(3 * 10.0 ** (j * 4 / 63)), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(table[2], 0.75 * table[1] + 0.25 * table[0], rtol=1e-12, atol=1e-12)


# -- the schedule: fast sampling's step alignment ------------------------------------------------
def test_fast_schedule_alignment_matches_a_hand_computation():
    train = np.linspace(1e-4, 0.05, 50)
    alpha_bar = np.cumprod(1 - train)
    gamma_bar = np.cumprod(1 - np.array([0.0001, 0.001, 0.01, 0.05, 0.2, 0.5]))
    # gamma_bar_s and the training steps t (0-based) with alpha_bar_{t+1} <= gamma_bar_s <= alpha_bar_t,
    # read off alpha_bar by hand: 0.9999 = alpha_bar_0 exactly, then steps 0, 4, 10, 22, 42
    np.testing.assert_allclose(gamma_bar, [0.9999, 0.9989001, 0.9889111, 0.9394655, 0.7515724, 0.3757862],
                               rtol=1e-7)
    brackets = [0, 0, 4, 10, 22, 42]
    hand = [t + (math.sqrt(alpha_bar[t]) - math.sqrt(g)) / (math.sqrt(alpha_bar[t]) - math.sqrt(alpha_bar[t + 1]))
            for t, g in zip(brackets, gamma_bar)]
    for t, g in zip(brackets[1:], gamma_bar[1:]):
        assert alpha_bar[t + 1] <= g <= alpha_bar[t]
    aligned = models.align_steps(train, models.FAST_SCHEDULE)
    np.testing.assert_allclose(aligned, hand, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(aligned, [0.0, 0.8941341, 4.0866540, 10.4518165, 22.9924933, 42.9186431], atol=1e-6)
    np.testing.assert_allclose(models.align_steps(train, train), np.arange(50), atol=1e-9)   # the full schedule


def test_alignment_rejects_a_schedule_outside_the_training_range():
    with pytest.raises(ValueError, match="align_steps: gamma_bar_1 = 0.99999 lies outside"):
        models.align_steps(np.linspace(1e-4, 0.05, 50), (1e-5, 0.5))
    with pytest.raises(ValueError, match="align_steps"):
        models.align_steps(np.linspace(1e-4, 0.05, 50), (0.5, 0.9, 0.9))


# -- the loss and the samplers against NumPy rewrites -------------------------------------------
def _trained_looking(n_mels=None, seed=3):
    model = models.diffwave_tiny(n_mels=n_mels, residual_channels=4, residual_layers=2, dilation_cycle=2)
    perturb_parameters(model, seed=seed, scale=0.2)
    return model


@pytest.mark.parametrize("loss_type", ["l1", "l2"])
def test_loss_is_the_noise_prediction_error(float64, loss_type):
    model = models.diffwave_tiny(residual_channels=4, residual_layers=2, loss_type=loss_type)
    perturb_parameters(model, scale=0.2)
    x0 = randn(3, 16, seed=1)
    got = model.loss(x0, rng=np.random.default_rng(5)).item()
    rng = np.random.default_rng(5)
    t, eps = rng.integers(0, 50, 3), rng.standard_normal((3, 16))
    alpha_bar = np.cumprod(1 - np.linspace(1e-4, 0.05, 50))[t][:, None]
    error = eps - model(np.sqrt(alpha_bar) * x0 + np.sqrt(1 - alpha_bar) * eps, t).numpy()
    assert got == pytest.approx(np.abs(error).mean() if loss_type == "l1" else (error ** 2).mean(), rel=1e-12)


@pytest.mark.parametrize("fast", [False, True])
def test_sampler_is_the_papers_reverse_process(float64, fast):
    model = _trained_looking(n_mels=2)
    mel = randn(2, 2, 2, seed=7)
    etas = np.array(models.FAST_SCHEDULE) if fast else np.linspace(1e-4, 0.05, 50)
    steps = models.align_steps(np.linspace(1e-4, 0.05, 50), etas) if fast else np.arange(50)
    got = model.sample(mel=mel, infer_betas=models.FAST_SCHEDULE if fast else None, seed=11)
    rng = np.random.default_rng(11)
    x = rng.standard_normal((2, 32))
    gamma_bar = np.cumprod(1 - etas)
    for s in reversed(range(etas.size)):
        eps = model(x, np.full(2, steps[s]), mel).numpy()
        x = (x - etas[s] / np.sqrt(1 - gamma_bar[s]) * eps) / np.sqrt(1 - etas[s])
        if s > 0:
            x = x + np.sqrt((1 - gamma_bar[s - 1]) / (1 - gamma_bar[s]) * etas[s]) * rng.standard_normal(x.shape)
    np.testing.assert_allclose(got, x, rtol=1e-10, atol=1e-12)


def test_sampling_is_seeded_and_repeatable():
    model = _trained_looking()
    a = model.sample(3, 24, infer_betas=models.FAST_SCHEDULE, seed=1)
    np.testing.assert_array_equal(a, model.sample(3, 24, infer_betas=models.FAST_SCHEDULE, seed=1))
    assert a.shape == (3, 24) and a.dtype == np.float32
    assert not np.allclose(a, model.sample(3, 24, infer_betas=models.FAST_SCHEDULE, seed=2))
    assert np.abs(model.sample(3, 24, seed=1, clip=0.5)).max() <= 0.5


# -- presets, saving, errors --------------------------------------------------------------------
def _count(channels, layers, n_mels, step_dim=128, hidden=512, upsample=(16, 16)):
    """The published architecture's parameters, counted layer by layer."""
    per_layer = (hidden * channels + channels) + (3 * channels * 2 * channels + 2 * channels) \
        + (channels * 2 * channels + 2 * channels) + ((n_mels * 2 * channels + 2 * channels) if n_mels else 0)
    return (2 * channels + (step_dim * hidden + hidden) + (hidden * hidden + hidden)
            + ((sum(2 * s * 3 + 1 for s in upsample)) if n_mels else 0) + layers * per_layer
            + (channels * channels + channels) + (channels + 1))


def test_presets_parameter_counts():
    base, large = models.diffwave_base(), models.diffwave_large()
    assert base.num_parameters() == _count(64, 30, 80) == 2_619_971       # the paper: 2.64M
    assert large.num_parameters() == _count(128, 30, 80) == 6_885_315     # the paper: 6.91M
    assert abs(base.num_parameters() / 2.64e6 - 1) < 0.01 and abs(large.num_parameters() / 6.91e6 - 1) < 0.005
    assert models.diffwave_base(n_mels=None).num_parameters() == _count(64, 30, None)
    assert (base.num_timesteps, large.num_timesteps, base.hop_length) == (50, 200, 256)
    np.testing.assert_allclose(large.schedule.betas[[0, -1]], [1e-4, 0.02])


def test_save_and_load_round_trip(tmp_path):
    model = _trained_looking(n_mels=3)
    x, mel = randn(2, 32, seed=1).astype(np.float32), randn(2, 2, 3, seed=2).astype(np.float32)
    expected = model(x, np.array([1, 30]), mel).numpy()
    lamina.save(model, tmp_path / "diffwave.safetensors")
    twin = lamina.load(tmp_path / "diffwave.safetensors")
    assert type(twin) is models.DiffWave and twin.get_config() == model.get_config()
    np.testing.assert_array_equal(twin(x, np.array([1, 30]), mel).numpy(), expected)


def test_bad_inputs_are_named():
    model = _trained_looking(n_mels=3)
    with pytest.raises(ShapeError, match=r"mel frames must be \(batch=2, frames=2, 3\) for 32 samples at hop 16"):
        model(np.zeros((2, 32), np.float32), 1, np.zeros((2, 3, 3), np.float32))
    with pytest.raises(ValueError, match="steps must lie in"):
        model(np.zeros((2, 32), np.float32), 50, np.zeros((2, 2, 3), np.float32))
    with pytest.raises(ValueError, match="unconditional"):
        _trained_looking()(np.zeros((1, 8), np.float32), 1, np.zeros((1, 1, 3), np.float32))
    with pytest.raises(ValueError, match="loss_type"):
        models.DiffWave(loss_type="huber")
    with pytest.raises(ValueError, match="even"):
        models.SpectrogramUpsampler((3,))


# -- learning -----------------------------------------------------------------------------------
FREQUENCIES = np.array([3, 7, 12])                                      # cycles per 256 samples


def _sines(n, rng):
    cycles, phase = rng.choice(FREQUENCIES, n), rng.uniform(0, 2 * np.pi, n)
    return (0.8 * np.sin(2 * np.pi * cycles[:, None] * np.arange(256) / 256 + phase[:, None])).astype(np.float32)


def _in_family(waves) -> float:
    """The fraction of waves whose strongest frequency (DC left out) is one of the family's."""
    dominant = np.abs(np.fft.rfft(waves, axis=1))[:, 1:].argmax(axis=1) + 1
    return float(np.isin(dominant, FREQUENCIES).mean())


def test_learns_a_family_of_sine_waves():
    """A tiny unconditional DiffWave trained on sines of three frequencies (random phases)
    draws waves, by the six-step fast sampler, whose dominant frequency is one of the three
    far more often than the untrained model (noise: 3 of 128 bins)."""
    lamina.backend.manual_seed(0)
    rng = np.random.default_rng(0)
    model = models.diffwave_tiny()
    before = _in_family(model.sample(64, 256, infer_betas=models.FAST_SCHEDULE, seed=100, clip=1.0))
    optimizer = optim.Adam(model, lr=5e-3)
    for _ in range(150):
        loss = model.loss(_sines(32, rng), rng=rng)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = _in_family(model.sample(64, 256, infer_betas=models.FAST_SCHEDULE, seed=100, clip=1.0))
    # measured: 150 steps at lr 5e-3, before 0.05, after 0.81 (the same with OpenBLAS's own kernels and with
    # OPENBLAS_CORETYPE=Haswell); 120 steps gave 0.70
    assert before < 0.15 and after > 0.5


def test_readme_example():
    printed, names = run_readme_section("DiffWave")
    assert printed.splitlines() == ["[ 0.    0.89  4.09 10.45 22.99 42.92]", "(4, 256) 2619971"]
    assert names["loss"].item() < 0.8
