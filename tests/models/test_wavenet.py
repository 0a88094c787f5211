"""WaveNet: a torch re-implementation, causality, queue-based generation, learning."""

import numpy as np
import pytest
import torch
import torch.nn.functional as TF

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import models, optim
from lamina.errors import ShapeError


def _small(**options):
    config = {"quantization_channels": 12, "residual_channels": 6, "gate_channels": 5, "skip_channels": 7,
              "end_channels": 9, "layers_per_stack": 3, "stacks": 2}
    config.update(options)
    return models.WaveNet(**config)


def torch_wavenet(p, codes, local_steps, speakers, model):
    """The same network in torch, channels-first convolutions, from the parameters ``p``."""
    h = p["input_embedding"][torch.tensor(codes)]
    speaker = None if speakers is None else p["speaker_embedding"][torch.tensor(speakers)]
    skips = 0
    for i, layer in enumerate(model.layers):
        q = {k.split(".", 2)[2]: v for k, v in p.items() if k.startswith(f"layers.{i}.")}
        history = layer.dilation * (layer.kernel_size - 1)
        padded = TF.pad(h.transpose(1, 2), (history, 0))
        z = TF.conv1d(padded, q["conv_weight"].permute(0, 2, 1), q["conv_bias"], dilation=layer.dilation)
        z = z.transpose(1, 2)
        if local_steps is not None:
            z = z + local_steps @ q["local_weight"]
        if speaker is not None:
            z = z + (speaker @ q["global_weight"])[:, None]
        g = layer.gate_channels
        u = torch.tanh(z[..., :g]) * torch.sigmoid(z[..., g:])
        skips = skips + u @ q["skip_weight"] + q["skip_bias"]
        if layer.residual:
            h = h + u @ q["residual_weight"] + q["residual_bias"]
    hidden = torch.relu(torch.relu(skips) @ p["end_weight"] + p["end_bias"])
    return hidden @ p["output_weight"] + p["output_bias"]


@pytest.mark.parametrize("conditioned", [False, True])
def test_matches_torch_values_and_gradients(f64, conditioned):
    options = {"local_channels": 3, "hop_length": 4, "num_speakers": 3, "global_channels": 4} if conditioned else {}
    model = _small(kernel_size=3 if conditioned else 2, **options)
    rng = np.random.default_rng(0)
    codes = rng.integers(0, 12, (2, 19))
    local = rng.standard_normal((2, 5, 3)) if conditioned else None
    speakers = np.array([2, 0]) if conditioned else None
    logits = model(codes, local, speakers)
    upstream = rng.standard_normal(logits.shape)
    (logits * lamina.tensor(upstream)).sum().backward()
    params = {name: torch.tensor(p.numpy(), requires_grad=True) for name, p in model.named_parameters()}
    local_steps = None if local is None else torch.tensor(local[:, np.arange(19) // 4])
    expected = torch_wavenet(params, codes, local_steps, speakers, model)
    assert_close(logits.numpy(), expected.detach().numpy(), 1e-10)
    (expected * torch.tensor(upstream)).sum().backward()
    assert not model.layers[-1].residual and all(layer.residual for layer in model.layers[:-1])
    for name, p in model.named_parameters():
        assert_close(p.grad, params[name].grad.numpy(), 1e-10, f"gradient of {name}")


def test_output_is_causal():
    model = _small(layers_per_stack=2, stacks=1)
    codes = np.random.default_rng(1).integers(0, 12, (1, 10))
    embedded = lamina.tensor(model.input_embedding.numpy()[codes], requires_grad=True)
    h, skips = embedded, None
    for layer in model.layers:
        h, skip = layer(h)
        skips = skip if skips is None else skips + skip
    t = 5
    skips[:, t].sum().backward()
    reach = np.abs(embedded.grad[0]).sum(axis=-1)
    assert not reach[t + 1:].any()                                # nothing after t
    assert reach[t] > 0 and reach[t - (model.receptive_field - 1)] > 0
    assert not reach[:t - (model.receptive_field - 1)].any()      # nothing before the receptive field
    # the whole model: logits at t unchanged when later codes change
    changed = codes.copy()
    changed[0, t + 1:] = (changed[0, t + 1:] + 3) % 12
    assert_close(model(changed).numpy()[:, :t + 1], model(codes).numpy()[:, :t + 1], 1e-6)


def test_layer_gradients_by_finite_differences(f64):
    layer = models.WaveNetLayer(4, 3, 5, kernel_size=3, dilation=2, local_channels=2, global_channels=3)
    local, speaker = lamina.tensor(randn(2, 7, 2, seed=3)), lamina.tensor(randn(2, 3, seed=4))

    def both(h, local, speaker):
        out, skip = layer(h, local, speaker)
        return (out * out).sum() + (skip * skip).sum()

    assert check_gradients(both, randn(2, 7, 4, seed=2), local.numpy(), speaker.numpy())


def test_receptive_field_and_config():
    assert models.WaveNet(layers_per_stack=10, stacks=2).receptive_field == 2 * 1023 + 1
    assert _small(kernel_size=3, dilations=[1, 2, 4]).receptive_field == 2 * 7 + 1
    assert models.WaveNet().dilations == [2 ** i for i in range(10)]
    model = _small(local_channels=2, hop_length=4, num_speakers=3)
    again = models.WaveNet(**model.get_config())
    shapes = {name: p.shape for name, p in model.named_parameters()}
    assert shapes == {name: p.shape for name, p in again.named_parameters()}
    assert again.receptive_field == model.receptive_field == 2 * (1 + 2 + 4) + 1


@pytest.mark.parametrize("conditioned", [False, True])
def test_fast_generation_equals_slow_generation(conditioned):
    options = {"local_channels": 2, "hop_length": 3, "num_speakers": 2, "global_channels": 3} if conditioned else {}
    model = _small(kernel_size=3 if conditioned else 2, **options)
    rng = np.random.default_rng(2)
    prime = rng.integers(0, 12, (2, 4))
    local = rng.standard_normal((2, 8, 2)).astype(np.float32) if conditioned else None
    speakers = np.array([1, 0]) if conditioned else None
    fast = model.generate(18, local, speakers, temperature=1.0, seed=7, prime=prime)
    slow = model.generate(18, local, speakers, temperature=1.0, seed=7, prime=prime, fast=False)
    assert fast.shape == (2, 22) and np.array_equal(fast[:, :4], prime)
    np.testing.assert_array_equal(fast, slow)
    assert np.array_equal(fast, model.generate(18, local, speakers, seed=7, prime=prime))
    assert len(set(map(tuple, fast[:, 4:]))) == 2 and fast.min() >= 0 and fast.max() < 12


def test_learns_a_periodic_mu_law_sequence():
    period = 8
    wave = np.sin(2 * np.pi * np.arange(period) / period) * 0.8
    pattern = lamina.functional.mu_law_encoding(lamina.tensor(wave), 16).numpy()
    codes = np.tile(pattern, 6)[None]                         # (1, 48)
    lamina.backend.manual_seed(0)
    model = models.WaveNet(quantization_channels=16, residual_channels=8, gate_channels=8, skip_channels=16,
                           layers_per_stack=3)                # receptive field 8 >= one period
    opt = optim.Adam(model, lr=1e-2)
    first = model.loss(codes).item()
    for _ in range(80):
        loss = model.loss(codes)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.05 < first
    generated = model.generate(24, temperature=0, prime=codes[:, :period])
    np.testing.assert_array_equal(generated[0], np.tile(pattern, 4))


def test_errors():
    with pytest.raises(ValueError, match="quantization_channels must be an int >= 2"):
        models.WaveNet(quantization_channels=1)
    model = _small(local_channels=2, hop_length=4)
    with pytest.raises(ValueError, match=r"codes must be in \[0, 12\)"):
        model(np.full((1, 5), 12), np.zeros((1, 2, 2)))
    with pytest.raises(ShapeError, match=r"\(batch, steps\)"):
        model(np.zeros(5, dtype=np.int64))
    with pytest.raises(ShapeError, match="frames >= 3"):
        model(np.zeros((1, 9), dtype=np.int64), np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="needs local conditioning"):
        model(np.zeros((1, 9), dtype=np.int64))
    with pytest.raises(ValueError, match="no global conditioning"):
        model(np.zeros((1, 4), dtype=np.int64), np.zeros((1, 1, 2)), np.array([0]))
    with pytest.raises(ValueError, match="temperature"):
        _small().generate(3, temperature=-1.0)
