"""FastSpeech 2: the length regulator against NumPy's repeat and torch's repeat_interleave, the
variance predictor and the FFT block against float64 torch rewrites (values and gradients),
padding masks, duration control, the loss helper, frame energies, and a short learning run on
a synthetic language whose symbols each stand for a fixed mel pattern, duration, pitch and energy.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import assert_close, randn, run_readme_section
from lamina.errors import ShapeError
from lamina.models import (
    FastSpeech2,
    FFTBlock,
    LengthRegulator,
    VarianceAdaptor,
    VariancePredictor,
    fastspeech2_loss,
    frame_energy,
)
from lamina.optim import Adam

HIDDEN, HEADS = 8, 2


def torch_params(module):
    return {name: torch.tensor(np.asarray(p.data), requires_grad=True) for name, p in module.named_parameters()}


def randomise(module, seed):
    rng = np.random.default_rng(seed)
    for name, p in module.named_parameters():
        p.data[...] = rng.standard_normal(p.shape) * 0.4 + ("norm" in name and name.endswith("weight"))


def torch_conv(x, p, name):
    """'same' 1-D convolution of (B, T, C) with lamina's (K, f, c) weight; NLC <-> NCL here only."""
    weight = p[f"{name}.weight"]
    y = TF.conv1d(x.transpose(1, 2), weight.permute(0, 2, 1), p[f"{name}.bias"], padding=(weight.shape[1] - 1) // 2)
    return y.transpose(1, 2)


def torch_layer_norm(x, p, name):
    return TF.layer_norm(x, (x.shape[-1],), p[f"{name}.weight"], p[f"{name}.bias"])


def torch_variance_predictor(x, p, keep):
    x = x * keep[..., None]
    x = torch_layer_norm(torch.relu(torch_conv(x, p, "conv1")), p, "norm1") * keep[..., None]
    x = torch_layer_norm(torch.relu(torch_conv(x, p, "conv2")), p, "norm2")
    return (x @ p["linear.weight"] + p["linear.bias"])[..., 0] * keep


def torch_fft_block(x, p, keep):
    """Post-norm: y = LN(x + MHSA(x)), z = LN(y + conv2(relu(conv1(y)))), padded steps zeroed."""
    x = x * keep[..., None]
    t = x.transpose(0, 1)
    attended, _ = TF.multi_head_attention_forward(
        t, t, t, HIDDEN, HEADS, p["attention.in_weight"].T, p["attention.in_bias"], None, None, False, 0.0,
        p["attention.out_weight"].T, p["attention.out_bias"], training=False, key_padding_mask=~keep.bool(),
        need_weights=False)
    y = torch_layer_norm(x + attended.transpose(0, 1), p, "attention_norm") * keep[..., None]
    z = torch_conv(torch.relu(torch_conv(y, p, "conv1")), p, "conv2")
    return torch_layer_norm(y + z, p, "conv_norm") * keep[..., None]


LENGTHS = np.array([6, 3, 1])


def compare_layer(layer, torch_forward, seed):
    x = randn(3, 6, HIDDEN, seed=seed)
    mask = np.arange(6)[None, :] < LENGTHS[:, None]
    xs = lamina.tensor(x, requires_grad=True)
    layer(xs, mask)
    randomise(layer, seed)
    p = torch_params(layer)
    ours = layer(xs, mask)
    xt = torch.tensor(x, requires_grad=True)
    theirs = torch_forward(xt, p, torch.tensor(mask, dtype=torch.float64))
    assert_close(ours.numpy(), theirs.detach().numpy(), 1e-10, "output")
    upstream = randn(*ours.shape, seed=seed + 1)
    ours.backward(upstream)
    theirs.backward(torch.tensor(upstream))
    assert_close(xs.grad, xt.grad.numpy(), 1e-9, "input gradient")
    for name, param in layer.named_parameters():
        assert_close(param.grad, p[name].grad.numpy(), 1e-9, f"gradient of {name}")


def test_variance_predictor_matches_torch(f64):
    compare_layer(VariancePredictor(10, kernel_size=3, dropout=0.0), torch_variance_predictor, seed=1)


def test_fft_block_matches_torch(f64):
    compare_layer(FFTBlock(HIDDEN, HEADS, 12, kernel_sizes=(3, 1), dropout=0.0), torch_fft_block, seed=2)


def test_length_regulator_repeats_tokens_and_sums_their_frame_gradients(f64):
    x = randn(2, 4, 3, seed=3)
    durations = np.array([[2, 0, 3, 1], [1, 4, 0, 0]])
    xs = lamina.tensor(x, requires_grad=True)
    y, lengths = LengthRegulator()(xs, durations, max_frames=7)
    assert y.shape == (2, 7, 3) and lengths.tolist() == [6, 5]
    for b in range(2):
        expected = np.repeat(x[b], durations[b], axis=0)
        assert np.array_equal(y.numpy()[b, :lengths[b]], expected)
        assert not y.numpy()[b, lengths[b]:].any()
    upstream = randn(2, 7, 3, seed=4)
    y.backward(upstream)
    xt = torch.tensor(x, requires_grad=True)
    for b in range(2):
        frames = torch.repeat_interleave(xt[b], torch.tensor(durations[b]), dim=0)
        (frames * torch.tensor(upstream[b, :lengths[b]])).sum().backward()
    assert_close(xs.grad, xt.grad.numpy(), 1e-12, "token gradients")
    with pytest.raises(ValueError, match="max_frames=5"):
        LengthRegulator()(xs, durations, max_frames=5)
    with pytest.raises(ValueError, match="non-negative integers"):
        LengthRegulator()(xs, -durations)
    with pytest.raises(ShapeError, match="durations must have shape"):
        LengthRegulator()(xs, durations[:, :2])


def tiny_model(**options):
    return FastSpeech2(7, n_mels=5, hidden=HIDDEN, num_heads=HEADS, encoder_layers=2, decoder_layers=1,
                       filter_size=12, kernel_sizes=(3, 1), predictor_filter_size=8, n_bins=8, **options)


@pytest.mark.parametrize("postnet_layers", [0, 2])
def test_padded_tokens_and_frames_do_not_change_the_valid_outputs(f64, postnet_layers):
    model = tiny_model(postnet_layers=postnet_layers, postnet_channels=6)
    tokens = np.array([[1, 2, 3, 4], [5, 6, 0, 0], [3, 0, 0, 0]])
    durations = np.array([[1, 2, 1, 3], [2, 2, 0, 0], [3, 0, 0, 0]])
    rng = np.random.default_rng(6)
    pitch, energy = rng.normal(size=(3, 9)), rng.normal(size=(3, 9))
    model(tokens, durations, pitch, energy, max_frames=9)
    randomise(model, 7)
    model.eval()
    out = model(tokens, durations, pitch, energy, max_frames=9)
    synthesized, lengths = model.synthesize(tokens)
    for b, n in enumerate([4, 2, 1]):
        frames = durations[b].sum()
        alone = model(tokens[b:b + 1, :n], durations[b:b + 1, :n], pitch[b:b + 1, :frames], energy[b:b + 1, :frames])
        for key in ("mel", "mel_postnet", "pitch", "energy"):
            assert_close(out[key].numpy()[b, :frames], alone[key].numpy()[0], 1e-10, key)
        assert_close(out["log_duration"].numpy()[b, :n], alone["log_duration"].numpy()[0], 1e-10, "log durations")
        assert not out["mel"].numpy()[b, frames:].any()
        mel_alone, length_alone = model.synthesize(tokens[b:b + 1, :n])
        assert lengths[b] == length_alone[0]
        assert_close(synthesized.numpy()[b, :lengths[b]], mel_alone.numpy()[0], 1e-10, "synthesized mel")


def test_duration_control_scales_the_number_of_frames():
    model = tiny_model()
    tokens = np.array([[1, 2, 3, 4, 5], [6, 1, 2, 0, 0]])
    model.synthesize(tokens)
    linear = model.variance_adaptor.duration_predictor.linear
    linear.weight.data[...] = 0.0
    linear.bias.data[...] = np.log(5.0)                   # every token predicted to last 4 frames
    for speed, per_token in [(1.0, 4), (2.0, 2), (0.5, 8), (4.0, 1)]:
        mel, lengths = model.synthesize(tokens, speed=speed)
        assert lengths.tolist() == [5 * per_token, 3 * per_token] and mel.shape == (2, 5 * per_token, 5)
    out = model(tokens, duration_control=1.5)
    assert out["durations"].tolist() == [[6] * 5, [6, 6, 6, 0, 0]]
    with pytest.raises(ValueError, match="speed must be positive"):
        model.synthesize(tokens, speed=0.0)
    linear.bias.data[...] = -5.0                          # every token predicted to last no frame
    mel, lengths = model.synthesize(np.array([[1, 2], [0, 0]]))
    assert lengths.tolist() == [1, 1] and np.isfinite(mel.numpy()).all()    # one frame each, padding too


def test_variance_adaptor_adds_the_bucket_embeddings_of_given_targets(f64):
    adaptor = VarianceAdaptor(HIDDEN, filter_size=8, dropout=0.0, n_bins=4, pitch_range=(-1.0, 1.0),
                              energy_range=(0.0, 2.0))
    x = randn(1, 2, HIDDEN, seed=8)
    pitch, energy = np.array([[-5.0, 0.1, 0.5]]), np.array([[0.5, 1.5, 9.0]])
    out = adaptor(x, np.ones((1, 2), bool), np.array([[1, 2]]), pitch, energy)
    pitch_bins, energy_bins = [0, 2, 2], [1, 2, 3]        # boundaries -1, 0, 1 and 0, 1, 2
    expected = (np.repeat(x[0], [1, 2], axis=0) + adaptor.pitch_embedding.weight.numpy()[pitch_bins]
                + adaptor.energy_embedding.weight.numpy()[energy_bins])
    assert_close(out["hidden"].numpy()[0], expected, 1e-12, "adapted hidden states")


def test_loss_is_masked_l1_and_mse_by_hand(f64):
    model = tiny_model()
    tokens, durations = np.array([[1, 2], [3, 0]]), np.array([[2, 1], [1, 0]])
    rng = np.random.default_rng(9)
    mel, pitch, energy = rng.normal(size=(2, 3, 5)), rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    out = model(tokens, durations, pitch, energy, max_frames=3)
    losses = fastspeech2_loss(out, mel, durations, pitch, energy)
    frames, tok = np.array([[1, 1, 1], [1, 0, 0]], bool), np.array([[1, 1], [1, 0]], bool)
    assert np.isclose(float(losses["mel"].numpy()), np.abs(out["mel"].numpy() - mel)[frames].mean())
    log_d = out["log_duration"].numpy()
    assert np.isclose(float(losses["duration"].numpy()), ((log_d - np.log(durations + 1.0)) ** 2)[tok].mean())
    assert np.isclose(float(losses["pitch"].numpy()), ((out["pitch"].numpy() - pitch) ** 2)[frames].mean())
    total = sum(float(losses[k].numpy()) for k in ("mel", "duration", "pitch", "energy"))
    assert np.isclose(float(losses["loss"].numpy()), total) and "postnet" not in losses
    with pytest.raises(ShapeError, match="max_frames"):
        fastspeech2_loss(out, mel[:, :2], durations, pitch, energy)


def test_frame_energy_is_the_norm_of_the_stft_magnitude():
    wave = np.random.default_rng(10).normal(size=(2, 300))
    got = frame_energy(wave, n_fft=64, hop_length=16)
    spec = torch.stft(torch.tensor(wave), 64, 16, window=torch.hann_window(64, dtype=torch.float64),
                      center=True, pad_mode="reflect", return_complex=True)
    assert got.shape == (2, 19)
    assert_close(got, spec.abs().pow(2).sum(1).sqrt().numpy(), 1e-10, "frame energies")


# -- learning -------------------------------------------------------------------------------
SYMBOLS, MELS = 6, 4
DURATION = np.array([0, 1, 2, 3, 2, 1])
PITCH = np.array([0.0, -0.6, 0.6, 1.9, -1.9, 0.6])      # mid-bin values of 6 bins with boundaries
ENERGY = np.array([0.0, 0.6, -1.9, 1.9, -0.6, -0.6])    # -2.5, -1.25, 0, 1.25, 2.5
PATTERN = np.random.default_rng(0).normal(size=(SYMBOLS, MELS))


def language_batch(rng, size, shortest, longest):
    """Random symbol strings (0 pads) and their frame-level mel, pitch and energy targets."""
    lengths = rng.integers(shortest, longest + 1, size)
    tokens = np.zeros((size, lengths.max()), np.int64)
    for b, n in enumerate(lengths):
        tokens[b, :n] = rng.integers(1, SYMBOLS, n)
    durations = DURATION[tokens]
    frames = durations.sum(axis=1).max()
    mel, pitch, energy = np.zeros((size, frames, MELS)), np.zeros((size, frames)), np.zeros((size, frames))
    for b in range(size):
        spoken = np.repeat(tokens[b], durations[b])
        mel[b, :len(spoken)], pitch[b, :len(spoken)], energy[b, :len(spoken)] = (PATTERN[spoken], PITCH[spoken],
                                                                                 ENERGY[spoken])
    return tokens, durations, mel, pitch, energy


def synthesis_scores(model, seed=5):
    """On new random strings (mostly longer than those trained on): the mean squared error of
    the synthesized mel over the frames it shares with the target (a wrong duration shifts all
    later frames), and the fraction of tokens whose predicted duration is exact."""
    tokens, durations, mel, _, _ = language_batch(np.random.default_rng(seed), 24, 4, 7)
    synthesized, lengths = model.synthesize(tokens)
    errors = [np.mean((synthesized.numpy()[b, :n] - mel[b, :n]) ** 2)
              for b, n in enumerate(np.minimum(lengths, durations.sum(axis=1)))]
    model.eval()
    predicted = model(tokens)["durations"]
    model.train()
    return float(np.mean(errors)), float((predicted == durations)[tokens > 0].mean())


def test_learns_a_synthetic_language():
    rng = np.random.default_rng(1)
    model = FastSpeech2(SYMBOLS, n_mels=MELS, hidden=16, num_heads=2, encoder_layers=1, decoder_layers=1,
                        filter_size=32, kernel_sizes=(3, 1), dropout=0.0, predictor_filter_size=16,
                        predictor_dropout=0.0, n_bins=6, pitch_range=(-2.5, 2.5), energy_range=(-2.5, 2.5))
    model(language_batch(rng, 2, 2, 3)[0])
    untrained_error, untrained_accuracy = synthesis_scores(model)
    optimizer = Adam(model.parameters(), lr=5e-3)
    for _ in range(200):
        tokens, durations, mel, pitch, energy = language_batch(rng, 16, 2, 6)
        losses = fastspeech2_loss(model(tokens, durations, pitch, energy, max_frames=mel.shape[1]), mel, durations,
                                  pitch, energy)
        optimizer.zero_grad()
        losses["loss"].backward()
        optimizer.step()
    error, accuracy = synthesis_scores(model)
    assert error < 0.1 * untrained_error, (error, untrained_error)
    assert accuracy > 0.9 > untrained_accuracy, (accuracy, untrained_accuracy)


def test_readme_example_synthesizes_mel_frames():
    printed, names = run_readme_section("Text to speech with FastSpeech 2")
    mel, lengths = names["mel"], names["lengths"]
    assert mel.shape[0] == 2 and mel.shape[2] == 16 and lengths.max() == mel.shape[1]
    assert names["wave"].shape == (2, mel.shape[1] * 16)
    assert printed.split() == ["['duration',", "'energy',", "'loss',", "'mel',", "'pitch']", "True"]
