"""Whisper in Hugging Face's layout: the log-mel front end and the Slaney filter bank against
their formulas (torch.stft), encoder outputs, logits, loss and gradients against a PyTorch
reference with Hugging Face's names (weights moved by load_hf_whisper_state_dict), parameter
counts, cached generation, beam search and token suppression, a toy task, and the loader's
checks."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch_whisper_reference import WhisperForConditionalGeneration, log_mel_spectrogram, sinusoids, slaney_mel_filters

import lamina
from helpers import assert_close, check_gradients, compare_with_torch, randn
from lamina import functional as F
from lamina import models, optim, saving
from lamina.io.safetensors import save_file
from lamina.models.whisper import N_FRAMES, N_SAMPLES, WHISPER_CONFIGS, WhisperDecoderLayer, hf_whisper_table
from lamina.nn import init

TEST = WHISPER_CONFIGS["test"]
START, END = TEST["decoder_start_token_id"], TEST["eos_token_id"]


def _pair(seed: int = 0):
    torch.manual_seed(seed)
    reference = WhisperForConditionalGeneration(TEST).double()
    model = models.whisper("test")
    models.load_hf_whisper_state_dict(model, reference.state_dict())
    return model, reference


def _features(n: int, frames: int = 16, seed: int = 1) -> np.ndarray:
    return randn(n, TEST["num_mel_bins"], frames, seed=seed)


# -- front end ------------------------------------------------------------------------------------
@pytest.mark.parametrize("n_mels", [80, 128])
def test_the_slaney_filter_bank_equals_the_formula(n_mels):
    ours = lamina.functional.mel_filterbank(201, 0.0, 8000.0, n_mels, 16000, norm="slaney", mel_scale="slaney",
                                            dtype=np.float64).numpy()
    assert_close(ours, slaney_mel_filters(16000, 400, n_mels).T, 1e-12, "filters")


def test_log_mel_features_and_their_gradients_equal_the_reference():
    rng = np.random.default_rng(0)
    audio = rng.standard_normal((2, 2400)) * np.array([[1.0], [1e-4]])     # a quiet row: its own floor
    audio[0, 1200:] = 0.0                                                   # silence: the floor max - 8 acts
    compare_with_torch(lambda a: models.whisper_log_mel_spectrogram(a, n_mels=40),
                       lambda a: log_mel_spectrogram(a, n_mels=40), audio, dtype=np.float64, rtol=1e-10)
    features = models.whisper_log_mel_spectrogram(audio[0], padding=160).numpy()
    assert features.shape == (80, 16)                                       # (2400 + 160) / 160 frames


def test_one_30_second_window_gives_3000_frames():
    audio = np.random.default_rng(1).standard_normal(16000).astype(np.float32)
    window = models.pad_or_trim(audio)
    assert window.shape == (N_SAMPLES,) and np.array_equal(window[:16000], audio) and not window[16000:].any()
    features = models.whisper_log_mel_spectrogram(window)
    assert features.shape == (80, N_FRAMES) and features.dtype == np.float32
    assert models.pad_or_trim(np.zeros((2, 80, 3100)), N_FRAMES).shape == (2, 80, N_FRAMES)
    trimmed = models.pad_or_trim(lamina.tensor(np.ones((1, 5))), 3)
    padded = models.pad_or_trim(lamina.tensor(np.ones((1, 5))), 7)
    assert trimmed.shape == (1, 3) and np.array_equal(padded.numpy(), [[1, 1, 1, 1, 1, 0, 0]])
    with pytest.raises(lamina.ShapeError, match="whisper_log_mel_spectrogram.*more than 200 samples"):
        models.whisper_log_mel_spectrogram(np.zeros(100))


# -- the model against the reference --------------------------------------------------------------
def test_encoder_logits_loss_and_gradients_equal_the_reference(f64):
    model, reference = _pair()
    features = _features(2)
    labels = np.array([[1, 2, 3, 4, END], [5, 6, END, -100, -100]])
    encoded, logits, loss = reference(torch.tensor(features), torch.tensor(labels))
    assert_close(model.encode(features).numpy(), encoded.detach().numpy(), 1e-10, "encoder")
    assert_close(model(features, model.shift_right(labels)).numpy(), logits.detach().numpy(), 1e-10, "logits")
    ours_loss = model.loss(features, labels)
    assert_close(ours_loss.numpy(), loss.detach().numpy(), 1e-10, "loss")
    ours_loss.backward()
    loss.backward()
    grads = {key: value.grad for key, value in reference.named_parameters()}
    params = dict(model.named_parameters())
    table = hf_whisper_table(model)
    assert set(table) == set(params)
    for ours_key, weight in table.items():
        expected = grads[weight.keys[0]]
        if expected is None:                                   # the fixed sinusoids
            assert ours_key == "model.encoder.embed_positions.weight" and params[ours_key].grad is None
            continue
        assert_close(params[ours_key].grad, weight.convert(expected.numpy()), 1e-9, ours_key)


def test_shorter_inputs_use_the_first_positions(f64):
    model, reference = _pair(1)
    features, ids = _features(1, frames=9), np.array([[START, 3, 4]])
    encoded = reference.model.encoder(torch.tensor(features))
    assert_close(model.encode(features).numpy(), encoded.detach().numpy(), 1e-10, "encoder")
    assert model.encode(features).shape == (1, 5, TEST["d_model"])
    with pytest.raises(lamina.ShapeError, match="at most 16 frames"):
        model(_features(1, frames=17), ids)
    with pytest.raises(ValueError, match="13 tokens exceed max_target_positions 12"):
        model(features, np.full((1, 13), 3))


def test_fresh_weights_hold_the_fixed_sinusoids_and_tie_the_output_to_the_tokens(f64):
    model = models.whisper("test")
    model.build()
    positions = model.encoder.embed_positions.weight
    assert not positions.trainable
    assert_close(positions.numpy(), sinusoids(8, 16).numpy(), 1e-12, "sinusoids")
    features, ids = _features(1), np.array([[START, 3]])
    hidden = model.decoder(ids, model.encode(features)).numpy()
    table = model.decoder.embed_tokens.weight.numpy()
    assert_close(model(features, ids).numpy(), hidden @ table.T, 1e-12, "tied output projection")


def test_decoder_layer_gradients_by_finite_differences(f64):
    layer = WhisperDecoderLayer(6, 2, 8)
    layer.build((2, 3, 6))
    causal = np.triu(np.full((3, 3), -1e9), 1)
    assert check_gradients(lambda x, memory: layer(x, memory, causal), randn(2, 3, 6), randn(2, 4, 6, seed=1))


def test_encoder_gradients_by_finite_differences(f64):
    model = models.whisper("test", d_model=8, encoder_layers=1, encoder_ffn_dim=8, num_mel_bins=3,
                           max_source_positions=3)
    model.build()
    assert check_gradients(model.encoder, randn(1, 3, 6, seed=2))


def test_parameter_counts_of_the_published_configs():
    expected = {"tiny": 37_760_640, "base": 72_593_920, "small": 241_734_912}
    for name, count in expected.items():
        with init.meta():
            model = models.whisper(name)
            model.build()
        assert model.num_parameters() == count, name
    fixed = 1500 * 384                                  # the encoder's sinusoids are not trained
    with init.meta():
        tiny = models.whisper("tiny")
        tiny.build()
    assert tiny.num_parameters(trainable_only=True) == 37_760_640 - fixed
    assert "whisper" in models.list_models("language")
    assert isinstance(models.get_model("whisper", config="test"), models.Whisper)


# -- generation -----------------------------------------------------------------------------------
def _lively_model(**options):
    """A test-size model whose greedy outputs depend on the input (larger weights than HF's init)."""
    model = models.whisper("test", **options)
    model.build()
    for _, param in model.named_parameters(trainable_only=True):
        param.data[...] = np.random.default_rng(param.size).standard_normal(param.shape) * 2.0
    return model


def test_decoding_step_by_step_with_the_cache_gives_the_full_scores(f64):
    model, _ = _pair(4)
    encoded = model.encode(_features(2))
    prefix = np.random.default_rng(2).integers(0, TEST["vocab_size"], size=(2, 7))
    full = model.decode(prefix, encoded).numpy()
    caches = [{} for _ in model.decoder.layers]
    steps = [model.decode(prefix[:, :3], encoded, caches, 0).numpy()]          # a chunk, then single steps
    steps += [model.decode(prefix[:, t:t + 1], encoded, caches, t).numpy() for t in range(3, 7)]
    assert_close(np.concatenate(steps, axis=1), full, 1e-10, "cached decoder scores")


@pytest.mark.parametrize("beam_width", [1, 3])
def test_cached_generation_equals_uncached_generation(f64, beam_width):
    model = _lively_model()
    features = _features(3, seed=5)
    prompt = [START, 1, 2]
    calls, encodes = [], []
    decode, encode = model.decode, model.encode
    model.decode = lambda ids, *args, **kw: calls.append(np.shape(ids)[1]) or decode(ids, *args, **kw)
    model.encode = lambda x: encodes.append(1) or encode(x)
    cached = model.generate(features, 8, decoder_prompt_ids=prompt, beam_width=beam_width)
    prompts = 1 if beam_width == 1 else len(features)      # the batch at once, or one beam search per input
    assert calls[0] == 3 and calls.count(3) == prompts and set(calls) == {1, 3}  # the prompt, then one token a step
    assert len(encodes) == 1
    calls.clear()
    uncached = model.generate(features, 8, decoder_prompt_ids=prompt, beam_width=beam_width, use_cache=False)
    assert max(calls) > 3
    assert np.array_equal(cached, uncached)
    assert (cached[:, :3] == prompt).all() and cached.shape[1] > 4
    assert len({tuple(row) for row in cached}) > 1                           # the rows depend on their audio


def test_greedy_generation_follows_the_argmax_and_pads_after_the_end_token(f64):
    end = 8                                  # an end token that some rows reach before others
    model = _lively_model(eos_token_id=end)
    features = _features(4, seed=6)
    out = model.generate(features, 9)
    lengths = []
    for row, feature in zip(out, features):
        ids = [START]
        while len(ids) < 10 and ids[-1] != end:
            ids.append(int(model(feature[None], np.array([ids])).numpy()[0, -1].argmax()))
        assert list(row[:len(ids)]) == ids and (row[len(ids):] == TEST["pad_token_id"]).all()
        lengths.append(len(ids))
    assert min(lengths) < out.shape[1] == max(lengths)
    assert np.array_equal(model.generate(features, 9, beam_width=1), out)


def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy(f64):
    model = _lively_model()
    features = _features(1, seed=7)

    def log_prob(row):
        ids = [int(t) for t in row]
        ids = ids[:ids.index(END) + 1] if END in ids[1:] else ids
        logits = model(features, np.array([ids[:-1]]))
        picked = np.take_along_axis(F.log_softmax(logits, axis=-1).numpy()[0], np.array(ids[1:])[:, None], -1)
        return float(picked.sum())
    greedy = model.generate(features, 6)[0]
    beam = model.generate(features, 6, beam_width=4)[0]
    assert log_prob(beam) >= log_prob(greedy) - 1e-12


def test_suppressed_tokens_are_never_generated(f64):
    model = _lively_model()
    features = _features(4, seed=8)
    free = model.generate(features, 8)
    common = np.bincount(free[:, 1:].ravel(), minlength=TEST["vocab_size"]).argmax()
    suppressed = [int(common), END]
    for width in (1, 2):
        out = model.generate(features, 8, beam_width=width, suppress_tokens=suppressed)
        assert out.shape[1] == 9 and not np.isin(out[:, 1:], suppressed).any()
    for width in (1, 2):
        first = int(model.generate(features, 8, beam_width=width)[0, 1])
        begin = model.generate(features, 8, beam_width=width, begin_suppress_tokens=[first])
        assert (begin[:, 1] != first).all()
    with pytest.raises(ValueError, match="suppress_tokens must be token ids below 16"):
        model.generate(features, 2, suppress_tokens=[16])
    with pytest.raises(ValueError, match="3 prompt tokens \\+ max_new_tokens 10 exceed max_target_positions 12"):
        model.generate(features, 10, decoder_prompt_ids=[START, 1, 2])
    with pytest.raises(ValueError, match="decoder_prompt_ids must be a non-empty list"):
        model.generate(features, 2, decoder_prompt_ids=[])


# -- a toy task: tone sequences -> their ids -------------------------------------------------------
TONES_HZ = (400.0, 1000.0, 2000.0, 3500.0)
TONE_END, TONE_START = 4, 5


def _tone_batch(rng, n: int):
    """2 or 3 tones of 0.1 s (random amplitude and phase, in faint noise) -> their ids, then the end token."""
    t = np.arange(1600) / 16000
    audio = 0.01 * rng.standard_normal((n, 4800))
    labels = np.full((n, 4), -100)
    for i in range(n):
        tones = rng.integers(0, len(TONES_HZ), size=rng.integers(2, 4))
        for j, tone in enumerate(tones):
            wave = np.sin(2 * np.pi * TONES_HZ[tone] * t + rng.uniform(0, 2 * np.pi))
            audio[i, 1600 * j:1600 * (j + 1)] += rng.uniform(0.3, 1.0) * wave
        labels[i, :len(tones)] = tones
        labels[i, len(tones)] = TONE_END
    return models.whisper_log_mel_spectrogram(audio, n_mels=16).numpy(), labels


def test_a_tiny_whisper_learns_to_transcribe_tone_sequences():
    rng = np.random.default_rng(0)
    lamina.manual_seed(0)
    model = models.whisper("test", vocab_size=6, num_mel_bins=16, d_model=32, encoder_layers=1, decoder_layers=1,
                           encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=15, max_target_positions=8,
                           pad_token_id=TONE_END, bos_token_id=TONE_END, eos_token_id=TONE_END,
                           decoder_start_token_id=TONE_START)
    optimizer = optim.Adam(model, lr=5e-3)
    features, labels = _tone_batch(rng, 512)
    start = time.perf_counter()
    for _ in range(300):
        rows = rng.integers(0, len(features), 32)
        loss = model.loss(features[rows], labels[rows])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    elapsed = time.perf_counter() - start
    test_features, test_labels = _tone_batch(np.random.default_rng(1), 100)
    generated = model.generate(test_features, 4)
    padded = np.full((100, 5), TONE_END)
    padded[:, :generated.shape[1]] = generated
    accuracy = float((padded[:, 1:] == np.where(test_labels == -100, TONE_END, test_labels)).all(axis=1).mean())
    print(f"toy tones: loss {float(loss.numpy()):.4f}, exact-match accuracy {accuracy:.2f}, {elapsed:.1f} s")
    assert (generated[:, 0] == TONE_START).all()
    assert accuracy >= 0.9


# -- loading and saving ---------------------------------------------------------------------------
def test_loading_from_safetensors_and_its_checks(tmp_path, f64):
    model, reference = _pair(3)
    arrays = {key: value.numpy() for key, value in reference.state_dict().items()}
    assert "proj_out.weight" in arrays                                        # the tied copy, ignored
    path = tmp_path / "model.safetensors"
    save_file(arrays, path)
    loaded = models.whisper("test")
    models.load_hf_whisper_state_dict(loaded, path)
    for key, value in model.state_dict().items():
        assert np.array_equal(loaded.state_dict()[key], value), key
    bare = models.whisper("test")                                             # WhisperModel's keys
    models.load_hf_whisper_state_dict(bare, {k[len("model."):]: v for k, v in arrays.items()
                                            if k != "proj_out.weight"})
    conv = "model.encoder.conv1.weight"
    assert np.array_equal(bare.state_dict()[conv], model.state_dict()[conv])
    key = "model.decoder.layers.1.encoder_attn.k_proj.weight"
    with pytest.raises(KeyError, match=f"missing keys.*{key}"):
        models.load_hf_whisper_state_dict(models.whisper("test"), {k: v for k, v in arrays.items() if k != key})
    extra = "model.decoder.layers.0.encoder_attn.k_proj.bias"
    with pytest.raises(KeyError, match=f"unexpected keys.*{extra}"):
        models.load_hf_whisper_state_dict(models.whisper("test"), {**arrays, extra: np.zeros(16)})
    with pytest.raises(lamina.ShapeError, match="conv1.weight"):
        models.load_hf_whisper_state_dict(models.whisper("test", num_mel_bins=9), arrays)
    with pytest.raises(TypeError, match="expected a Whisper model"):
        models.load_hf_whisper_state_dict(models.t5("tiny"), arrays)
    with pytest.raises(ValueError, match="config must be one of"):
        models.whisper("large-v3")
    with pytest.raises(ValueError, match="pad_token_id 50257 is not a token id of the vocabulary of 100"):
        models.Whisper(vocab_size=100)


def test_a_saved_model_loads_with_its_weights(tmp_path):
    model = models.whisper("test")
    model.eval()
    features, ids = _features(1).astype(np.float32), np.array([[START, 3, 4]])
    expected = model(features, ids).numpy()
    saving.save(model, tmp_path / "whisper.lamina")
    loaded = saving.load(tmp_path / "whisper.lamina")
    loaded.eval()
    assert isinstance(loaded, models.Whisper) and loaded.get_config() == model.get_config()
    assert np.array_equal(loaded(features, ids).numpy(), expected)
