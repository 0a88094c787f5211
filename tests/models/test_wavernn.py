"""WaveRNN: the coarse/fine split, the masked GRU against a torch rewrite, teacher forcing
against step-by-step unrolling, generation, saving and a small learning run."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lamina
from helpers import check_gradients, randn, run_readme_section
from lamina import models, optim
from lamina.autograd import no_grad
from lamina.errors import ShapeError


def _model(dtype=np.float64, **options):
    lamina.backend.manual_seed(3)
    model = models.WaveRNN(**{"hidden_size": 8, "head_size": 6, **options}).to(dtype)
    rng = np.random.default_rng(1)
    for param in model.parameters():      # non-zero biases and a non-identity upsampling
        param.data = (param.data + 0.3 * rng.normal(size=param.shape)).astype(dtype)
    return model


def _samples(model, batch=2, steps=9, seed=0):
    return np.random.default_rng(seed).integers(0, model.sample_levels, (batch, steps))


def _tensor(array, requires_grad=False):
    return lamina.tensor(array, requires_grad=requires_grad, dtype=np.float64)


def test_split_and_merge_round_trip_every_16_bit_value():
    x = np.arange(65536)
    coarse, fine = models.split_coarse_fine(x)
    assert coarse.min() == 0 and coarse.max() == 255 and fine.min() == 0 and fine.max() == 255
    np.testing.assert_array_equal(coarse * 256 + fine, x)
    np.testing.assert_array_equal(models.merge_coarse_fine(coarse, fine), x)
    model = models.WaveRNN(4)
    np.testing.assert_array_equal(model.encode(model.decode(x)), x)
    assert model.encode(np.array([-1.0, 0.0, 1.0])).tolist() == [0, 32768, 65535]
    with pytest.raises(ValueError, match="split_coarse_fine"):
        models.split_coarse_fine(np.array([65536]))


def _cell_inputs(model, batch=3, seed=0):
    rng = np.random.default_rng(seed)
    d = model.input_weight.shape[0]
    return rng.uniform(-1, 1, (batch, d)), rng.uniform(-1, 1, (batch, model.hidden_size))


def test_coarse_half_is_blind_to_the_current_coarse_sample_and_the_fine_half_is_not():
    model = _model()
    half = model.hidden_size // 2
    x, h = _cell_inputs(model)
    moved = x.copy()
    moved[:, 2] += 0.7                                          # c_t
    with no_grad():
        a, b = model.cell(_tensor(x), _tensor(h)).numpy(), model.cell(_tensor(moved), _tensor(h)).numpy()
    np.testing.assert_array_equal(a[:, :half], b[:, :half])
    assert np.abs(a[:, half:] - b[:, half:]).min() > 1e-6
    # the same through the teacher-forced network: the coarse byte of sample t changes the fine
    # logits predicting sample t but not the coarse ones
    samples = _samples(model)
    changed = samples.copy()
    changed[:, 4] = (changed[:, 4] + 256 * 40) % 65536
    with no_grad():
        (c1, f1), (c2, f2) = model(samples), model(changed)
    np.testing.assert_array_equal(c1.numpy()[:, :4], c2.numpy()[:, :4])
    assert np.abs(f1.numpy()[:, 3] - f2.numpy()[:, 3]).max() > 1e-6


def _torch_cell(x, h, w_x, w_h, b_x, b_h, mask):
    n = h.shape[1]
    gx = x @ (w_x * mask) + b_x
    gh = h @ w_h + b_h
    r = torch.sigmoid(gx[:, :n] + gh[:, :n])
    z = torch.sigmoid(gx[:, n:2 * n] + gh[:, n:2 * n])
    candidate = torch.tanh(gx[:, 2 * n:] + r * gh[:, 2 * n:])
    return (1 - z) * candidate + z * h


@pytest.mark.parametrize("mode", ["dual", "single"])
def test_cell_equals_a_torch_rewrite_in_values_and_gradients(mode):
    model = _model(mode=mode, local_channels=2, hop_length=3)
    x, h = _cell_inputs(model)
    weights = [model.input_weight, model.recurrent_weight, model.input_bias, model.recurrent_bias]
    mask = np.asarray(model.input_mask)
    if mode == "dual":                                          # c_t reaches the fine half only
        n = model.hidden_size
        assert mask[2].reshape(3, n)[:, :n // 2].sum() == 0 and mask[2].reshape(3, n)[:, n // 2:].all()
        assert mask[[0, 1, 3, 4]].all()
    else:
        assert mask.all()
    upstream = randn(3, model.hidden_size, seed=5)
    ours_x, ours_h = _tensor(x, True), _tensor(h, True)
    out = model.cell(ours_x, ours_h)
    for w in weights:
        w.grad = None
    (out * _tensor(upstream)).sum().backward()
    theirs = [torch.tensor(a, requires_grad=True) for a in (x, h, *(w.numpy() for w in weights))]
    expected = _torch_cell(*theirs, torch.tensor(mask, dtype=torch.float64))
    (expected * torch.tensor(upstream)).sum().backward()
    np.testing.assert_allclose(out.numpy(), expected.detach().numpy(), rtol=1e-12, atol=1e-12)
    for ours, their in zip([ours_x, ours_h, *weights], theirs):
        np.testing.assert_allclose(ours.grad.numpy() if hasattr(ours.grad, "numpy") else ours.grad,
                                   their.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_float64_gradients():
    model = _model(local_channels=2, hop_length=3, upsample="learned")
    x, h = _cell_inputs(model)
    assert check_gradients(lambda a, b: model.cell(a, b), x, h)
    samples = _samples(model, steps=7)
    mels = randn(2, 2, 2, seed=2)
    assert check_gradients(lambda m: model(samples, m)[1], mels)
    loss = model.loss(samples, mels)
    model.input_weight.grad = model.recurrent_weight.grad = model.upsample_weight.grad = None
    loss.backward()
    for param, index in ((model.input_weight, (4, 3)), (model.input_weight, (2, 21)),
                         (model.recurrent_weight, (1, 9)), (model.upsample_weight, (1, 4))):
        analytic = np.asarray(param.grad.numpy() if hasattr(param.grad, "numpy") else param.grad)[index]
        values = []
        for step in (1e-6, -1e-6):
            param.data[index] += step
            with no_grad():
                values.append(model.loss(samples, mels).item())
            param.data[index] -= step
        np.testing.assert_allclose(analytic, (values[0] - values[1]) / 2e-6, rtol=1e-5, atol=1e-8)


@pytest.mark.parametrize("options", [{}, {"local_channels": 2, "hop_length": 3, "upsample": "learned"},
                                     {"mode": "single", "bits": 9, "local_channels": 2, "hop_length": 4}])
def test_teacher_forcing_equals_unrolling_the_cell(options):
    model = _model(**options)
    samples = _samples(model, steps=10)
    mels = randn(2, 3, 2, seed=4) if "local_channels" in options else None
    with no_grad():
        logits = model(samples, mels)
        local = model.conditioning(mels, 2, 9)
        inputs = model._inputs(samples, local).numpy()
        h = _tensor(np.zeros((2, model.hidden_size)))
        states = []
        for t in range(9):
            h = model.cell(_tensor(inputs[:, t]), h)
            states.append(h.numpy())
    states = np.stack(states, axis=1)
    np.testing.assert_allclose(model.states(samples, mels).numpy(), states, rtol=1e-10, atol=1e-12)
    if model.mode == "single":
        assert logits.shape == (2, 9, 512)
        np.testing.assert_allclose(logits.numpy(), model.head(_tensor(states)).numpy(), rtol=1e-10, atol=1e-12)
    else:
        half = model.hidden_size // 2
        np.testing.assert_allclose(logits[0].numpy(), model.head(_tensor(states[..., :half]), "coarse").numpy(),
                                   rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(logits[1].numpy(), model.head(_tensor(states[..., half:]), "fine").numpy(),
                                   rtol=1e-10, atol=1e-12)
    if local is not None and model.upsample == "repeat":
        np.testing.assert_array_equal(local.numpy(), mels[:, np.arange(9) // 4])


@pytest.mark.parametrize("mode", ["dual", "single"])
def test_greedy_generation_is_argmax_decoding_of_the_teacher_forced_network(mode):
    model = _model(mode=mode, local_channels=2, hop_length=3)
    mels = randn(2, 3, 2, seed=6)
    greedy = model.generate(mels, temperature=0)
    assert greedy.shape == (2, 9)
    np.testing.assert_array_equal(greedy, model.generate(mels, temperature=0, seed=11))
    # feeding the greedy samples back with teacher forcing, each one is the argmax of its logits
    prefixed = np.concatenate([np.full((2, 1), model.silence()), greedy], axis=1)
    with no_grad():
        logits = model(prefixed, mels)
    if mode == "single":
        np.testing.assert_array_equal(logits.numpy().argmax(-1), greedy)
    else:
        coarse, fine = models.split_coarse_fine(greedy)
        np.testing.assert_array_equal(logits[0].numpy().argmax(-1), coarse)
        np.testing.assert_array_equal(logits[1].numpy().argmax(-1), fine)
    drawn = model.generate(mels, temperature=1.0, seed=2)
    np.testing.assert_array_equal(drawn, model.generate(mels, temperature=1.0, seed=2))
    assert not np.array_equal(drawn, greedy)


def test_save_and_load_round_trip(tmp_path):
    model = _model(np.float32, local_channels=2, hop_length=3, upsample="learned")
    samples, mels = _samples(model), randn(2, 3, 2, seed=7).astype(np.float32)
    lamina.save(model, tmp_path / "wavernn.safetensors")
    twin = lamina.load(tmp_path / "wavernn.safetensors")
    assert type(twin) is models.WaveRNN and twin.get_config() == model.get_config()
    with no_grad():
        for a, b in zip(model(samples, mels), twin(samples, mels)):
            np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_array_equal(twin.generate(mels, temperature=0), model.generate(mels, temperature=0))


def test_learns_a_periodic_waveform():
    period = 16
    lamina.backend.manual_seed(0)
    model = models.WaveRNN(32, 32)
    samples = model.encode(0.6 * np.sin(2 * np.pi * np.arange(8 * period) / period))[None]
    opt = optim.Adam(model, lr=1e-2)
    first = model.loss(samples).item()
    for _ in range(150):
        loss = model.loss(samples)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert first > 0.9 * 2 * np.log(256) and loss.item() < 0.1 * np.log(256)
    audio = model.decode(model.generate(length=6 * period, temperature=0)[0])
    audio = audio - audio.mean()
    lags = np.arange(4, 3 * period)
    correlation = [np.dot(audio[:-k], audio[k:]) / np.dot(audio, audio) for k in lags]
    assert lags[int(np.argmax(correlation))] == period and max(correlation) > 0.5
    assert np.abs(audio).max() > 0.4


def test_errors():
    with pytest.raises(ValueError, match="mode must be one of"):
        models.WaveRNN(mode="triple")
    with pytest.raises(ValueError, match="hidden_size must be even"):
        models.WaveRNN(7)
    with pytest.raises(ValueError, match="bits must be an int"):
        models.WaveRNN(mode="single", bits=17)
    model = models.WaveRNN(4, local_channels=2, hop_length=4)
    with pytest.raises(ValueError, match=r"samples must be in \[0, 65536\)"):
        model(np.full((1, 5), 65536), np.zeros((1, 2, 2)))
    with pytest.raises(ShapeError, match=r"\(batch, steps\)"):
        model(np.zeros(5, dtype=np.int64))
    with pytest.raises(ShapeError, match="frames >= 3"):
        model(np.zeros((1, 10), dtype=np.int64), np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="needs mels"):
        model(np.zeros((1, 9), dtype=np.int64))
    with pytest.raises(ValueError, match="temperature"):
        model.generate(np.zeros((1, 1, 2)), temperature=-1.0)
    with pytest.raises(ValueError, match="give mels or a length"):
        models.WaveRNN(4).generate()


def test_readme_example():
    printed, names = run_readme_section("WaveRNN")
    first, last, period = printed.split()
    assert float(last) < 0.5 * float(first) and int(period) == 16
