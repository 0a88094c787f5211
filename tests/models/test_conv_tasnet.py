"""Conv-TasNet: norms and the whole network against a torch rewrite (float64, values and every
parameter's gradient), shapes, the receptive field, and learning to separate two sources."""

import numpy as np
import pytest
import torch
import torch.nn.functional as tF

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, randn, run_readme_section
from lamina import functional as F
from lamina import optim
from lamina.errors import ShapeError
from lamina.models import ChannelwiseLayerNorm, ConvTasNet, GlobalLayerNorm


def randomise(model, seed=0):
    """Random values in every parameter (so biases, norms' gains and slopes all matter)."""
    rng = np.random.default_rng(seed)
    for _, p in model.named_parameters():
        p.data[...] = rng.uniform(0.2, 0.8, p.shape) if p.shape == (1,) else rng.standard_normal(p.shape) * 0.4


def torch_norm(kind, x, gamma, beta):
    """x (batch, C, frames): gLN as GroupNorm(1, C), cLN as LayerNorm(C) over each frame."""
    if kind == "gLN":
        return tF.group_norm(x, 1, gamma, beta, eps=1e-8)
    return tF.layer_norm(x.transpose(1, 2), (x.shape[1],), gamma, beta, eps=1e-8).transpose(1, 2)


def pointwise(x, weight, bias):
    """A 1 x 1 Conv1d from lamina's (C_in, C_out) matrix."""
    return tF.conv1d(x, weight.T[:, :, None], bias)


def torch_conv_tasnet(model, p, mixture):
    """The network in PyTorch's (batch, channels, frames) layout from lamina's parameters ``p``."""
    length, stride, n, s = mixture.shape[1], model.stride, model.N, model.num_sources
    x = tF.pad(mixture, (0, model.padded_length(length) - length))[:, None, :]
    w = torch.relu(tF.conv1d(x, p["encoder_weight"].permute(0, 2, 1), stride=stride))
    u = pointwise(torch_norm(model.norm, w, p["input_norm.gamma"], p["input_norm.beta"]),
                  p["bottleneck_weight"], p["bottleneck_bias"])
    skip = 0.0
    for i, block in enumerate(model.blocks):
        q = {k[len(f"blocks.{i}."):]: v for k, v in p.items() if k.startswith(f"blocks.{i}.")}
        h = tF.prelu(pointwise(u, q["in_weight"], q["in_bias"]), q["in_slope"])
        h = torch_norm(model.norm, h, q["in_norm.gamma"], q["in_norm.beta"])
        reach = (model.P - 1) * block.dilation
        padding = (reach, 0) if model.causal else (reach // 2, reach - reach // 2)
        h = tF.conv1d(tF.pad(h, padding), q["depthwise_weight"].permute(0, 2, 1), q["depthwise_bias"],
                      dilation=block.dilation, groups=model.H)
        h = torch_norm(model.norm, tF.prelu(h, q["depthwise_slope"]), q["depthwise_norm.gamma"],
                       q["depthwise_norm.beta"])
        skip = skip + pointwise(h, q["skip_weight"], q["skip_bias"])
        if block.residual:
            u = u + pointwise(h, q["residual_weight"], q["residual_bias"])
    logits = pointwise(tF.prelu(skip, p["output_slope"]), p["mask_weight"], p["mask_bias"])
    masks = torch.sigmoid(logits) if model.mask_activation == "sigmoid" else torch.relu(logits)
    batch, frames = w.shape[0], w.shape[2]
    masked = w[:, None] * masks.reshape(batch, s, n, frames)
    out = tF.conv_transpose1d(masked.reshape(batch * s, n, frames), p["decoder_weight"].permute(0, 2, 1),
                              stride=stride)
    return out.reshape(batch, s, -1)[:, :, :length]


@pytest.mark.parametrize("config", [
    dict(norm="gLN", causal=False, P=3, mask_activation="sigmoid"),
    dict(norm="cLN", causal=True, P=2, mask_activation="relu"),
])
def test_matches_a_torch_rewrite_in_values_and_gradients(config):
    lamina.set_default_dtype(np.float64)
    model = ConvTasNet(N=6, L=4, B=5, H=7, X=2, R=2, num_sources=3, **config)
    randomise(model)
    mixture = randn(2, 29, seed=1)
    ours = lamina.tensor(mixture, dtype=np.float64, requires_grad=True)
    out = model(ours)
    assert out.shape == (2, 3, 29)
    params = {k: torch.tensor(v.data, requires_grad=True) for k, v in model.named_parameters()}
    theirs = torch.tensor(mixture, requires_grad=True)
    expected = torch_conv_tasnet(model, params, theirs)
    assert_close(out.numpy(), expected.detach().numpy(), 1e-10)
    upstream = randn(*out.shape, seed=2)
    (out * lamina.tensor(upstream, dtype=np.float64)).sum().backward()
    (expected * torch.tensor(upstream)).sum().backward()
    assert_close(ours.grad, theirs.grad.numpy(), 1e-9, "mixture gradient")
    for name, p in model.named_parameters():
        assert_close(p.grad, params[name].grad.numpy(), 1e-9, f"gradient of {name}")


def test_gradients_float64():
    lamina.set_default_dtype(np.float64)
    model = ConvTasNet(N=3, L=4, B=2, H=3, P=3, X=2, R=1, num_sources=2)
    randomise(model, seed=11)
    assert check_gradients(model, randn(2, 10, seed=12))


@pytest.mark.parametrize("kind, layer", [("gLN", GlobalLayerNorm), ("cLN", ChannelwiseLayerNorm)])
def test_norms_match_torch(kind, layer):
    norm = layer(4)
    gamma, beta = randn(4, seed=3), randn(4, seed=4)
    norm.gamma.data[...], norm.beta.data[...] = gamma, beta
    compare_with_torch(norm, lambda x: torch_norm(kind, x.transpose(1, 2), torch.tensor(gamma, dtype=x.dtype),
                                                  torch.tensor(beta, dtype=x.dtype)).transpose(1, 2),
                       randn(2, 5, 4, seed=5), rtol=1e-4)
    lamina.set_default_dtype(np.float64)
    norm = layer(4)
    norm.gamma.data[...], norm.beta.data[...] = gamma, beta
    assert check_gradients(norm, randn(2, 5, 4, seed=6))


@pytest.mark.parametrize("length", [1, 7, 16, 33, 100])
def test_output_shape_covers_any_length(length):
    model = ConvTasNet(N=8, L=8, B=4, H=6, X=2, R=1, num_sources=2)
    out = model(lamina.tensor(randn(3, length)))
    assert out.shape == (3, 2, length) and out.dtype == np.float32
    covered = model.padded_length(length)
    assert covered >= max(length, 8) and (covered - 8) % 4 == 0 and covered - 4 < max(length, 8)


@pytest.mark.parametrize("causal", [False, True])
def test_receptive_field_formula(causal):
    lamina.set_default_dtype(np.float64)
    model = ConvTasNet(N=4, L=4, B=3, H=5, P=3, X=3, R=2, num_sources=2, norm="cLN", causal=causal)
    assert model.receptive_field_frames == 1 + 2 * 2 * 7
    assert model.receptive_field == 4 + 28 * 2
    randomise(model, seed=7)
    features = randn(1, 80, 4, seed=8)
    base = model.masks(lamina.tensor(features)).numpy().copy()
    frame = 40
    features[:, frame, 0] += 1.0
    changed = np.abs(model.masks(lamina.tensor(features)).numpy() - base).max(axis=(0, 1, 3)) > 0
    reached = np.flatnonzero(changed)
    assert reached.size == model.receptive_field_frames
    assert reached[-1] - reached[0] + 1 == model.receptive_field_frames
    half = (model.receptive_field_frames - 1) // 2
    assert reached[0] == (frame if causal else frame - half)


def test_errors_name_the_model():
    model = ConvTasNet(N=4, L=4, B=3, H=5, X=1, R=1)
    with pytest.raises(ShapeError, match="ConvTasNet.*\\(batch, time\\).*\\(2, 3, 10\\)"):
        model(lamina.tensor(np.zeros((2, 3, 10), dtype=np.float32)))
    with pytest.raises(ValueError, match="norm must be one of"):
        ConvTasNet(norm="BN")
    with pytest.raises(ValueError, match="mask_activation"):
        ConvTasNet(mask_activation="softmax")


def two_band_mixtures(rng, batch, length=512, rate=8000):
    """Sources (batch, 2, length) at 8 kHz, a low one (two sinusoids in 100-300 Hz) and a high
    one (a sinusoid in 1.5-2.5 kHz), random amplitudes and phases, and their sums (batch, length)."""
    t = np.arange(length) / rate

    def tone(low, high):
        freq, phase = rng.uniform(low, high, (batch, 1)), rng.uniform(0, 2 * np.pi, (batch, 1))
        return rng.uniform(0.5, 1.5, (batch, 1)) * np.sin(2 * np.pi * freq * t + phase)

    sources = np.stack([tone(100, 300) + tone(100, 300), tone(1500, 2500)], axis=1).astype(np.float32)
    return sources.sum(axis=1), sources


def test_learns_to_separate_two_bands_with_pit_si_sdr():
    rng = np.random.default_rng(0)
    model = ConvTasNet(N=32, L=16, B=16, H=32, P=3, X=3, R=1, num_sources=2)
    opt = optim.Adam(model, lr=1e-2)

    def pit(estimate, sources):
        return F.permutation_invariant_loss(lambda e, r: F.si_sdr_loss(e, r, reduction="none"), estimate,
                                            lamina.tensor(sources))[0]

    test_mixture, test_sources = two_band_mixtures(np.random.default_rng(99), 16)
    mixture_score = float(F.si_sdr(np.repeat(test_mixture[:, None], 2, 1), test_sources, zero_mean=True).numpy().mean())

    def improvement():
        with lamina.no_grad():
            return -float(pit(model(lamina.tensor(test_mixture)), test_sources).numpy()) - mixture_score

    before = improvement()
    for _ in range(80):
        mixture, sources = two_band_mixtures(rng, 8)
        loss = pit(model(lamina.tensor(mixture)), sources)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = improvement()
    print(f"SI-SDR improvement over the mixture: {before:.1f} dB before, {after:.1f} dB after training")
    assert after > 6.0 and after > before + 6.0


def test_save_and_load_round_trip(tmp_path):
    model = ConvTasNet(N=6, L=4, B=5, H=7, X=2, R=1, num_sources=2, norm="cLN", causal=True)
    randomise(model, seed=9)
    mixture = randn(2, 21, seed=10).astype(np.float32)
    expected = model(lamina.tensor(mixture)).numpy()
    lamina.save(model, str(tmp_path / "tasnet.safetensors"))
    twin = lamina.load(str(tmp_path / "tasnet.safetensors"))
    assert twin.causal and twin.norm == "cLN"
    np.testing.assert_array_equal(twin(lamina.tensor(mixture)).numpy(), expected)


def test_readme_example_runs():
    printed, names = run_readme_section("Source separation")
    assert printed.splitlines() == ["(2, 2, 400) 32", "[[1, 0], [1, 0]]", "True"]
    assert names["model"].encoder_weight.grad is not None
