"""wav2vec 2.0 with a CTC head in Hugging Face's layout: the input normalisation, the feature
encoder (group and layer norm), the weight-normed positional convolution, both kinds of encoder
layer and the whole model's logits, CTC loss and every gradient against a PyTorch reference with
Hugging Face's names (weights moved by load_hf_wav2vec2_state_dict, both weight-norm namings),
parameter counts, the loader's checks, and a tiny model learning to transcribe tone sequences."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from torch_wav2vec2_reference import Wav2Vec2ForCTC

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import models, optim, saving
from lamina.models.wav2vec2_weights import hf_wav2vec2_table
from lamina.nn import init
from lamina.text import ctc_greedy_decode

LARGE_LIKE = {"feat_extract_norm": "layer", "do_stable_layer_norm": True, "conv_bias": True}


@pytest.fixture
def f64():
    lamina.set_default_dtype(np.float64)
    yield
    lamina.set_default_dtype(np.float32)


def _pair(seed: int = 0, parametrizations: bool = False, **options):
    model = models.wav2vec2("test", apply_spec_augment=False, **options)      # the reference does not mask
    torch.manual_seed(seed)
    reference = Wav2Vec2ForCTC(model.config, parametrizations).double()
    with torch.no_grad():                   # non-trivial norms, gains and biases
        for name, value in reference.named_parameters():
            if name.endswith(("norm.weight", "norm.bias", ".bias", "original0", "weight_g")):
                value.add_(0.1 * torch.randn_like(value))
    models.load_hf_wav2vec2_state_dict(model, reference.state_dict())
    return model, reference


def _compare_parameter_gradients(model, reference, prefix: str = "", rtol: float = 1e-9):
    """Every lamina gradient under ``prefix`` against the reference's, through the loader's table."""
    grads = {key: value.grad for key, value in reference.named_parameters()}
    grads.update({key.replace(".parametrizations.weight.original0", ".weight_g")
                     .replace(".parametrizations.weight.original1", ".weight_v"): value
                  for key, value in list(grads.items())})
    params = dict(model.named_parameters())
    checked = 0
    for ours_key, weight in hf_wav2vec2_table(model).items():
        if not ours_key.startswith(prefix) or ours_key.endswith("masked_spec_embed"):
            continue
        expected = weight.convert(grads[weight.keys[0]].numpy())
        if np.abs(expected).max() < 1e-12:          # the key bias: softmax ignores a shift of all scores
            assert np.abs(params[ours_key].grad).max() < 1e-12, ours_key
        else:
            assert_close(params[ours_key].grad, expected, rtol, ours_key)
        checked += 1
    assert checked


def _audio(n: int = 2, samples: int = 400, seed: int = 1) -> np.ndarray:
    return randn(n, samples, seed=seed)


def _run_both(ours_fn, ref_fn, x: np.ndarray):
    """Outputs of both on ``x``, each backpropagated from sum(out * r) with the same random r;
    the input gradients are compared."""
    ours_in = lamina.tensor(x, requires_grad=True)
    ref_in = torch.tensor(x, requires_grad=True)
    ours, expected = ours_fn(ours_in), ref_fn(ref_in)
    assert_close(ours.numpy(), expected.detach().numpy(), 1e-10, "outputs")
    weights = randn(*expected.shape, seed=7)
    lamina.functional.sum(lamina.functional.mul(ours, lamina.tensor(weights))).backward()
    (expected * torch.tensor(weights)).sum().backward()
    assert_close(ours_in.grad, ref_in.grad.numpy(), 1e-9, "input gradient")


# -- input ----------------------------------------------------------------------------------------
def test_input_values_are_each_utterance_normalised_then_padded():
    long, short = randn(50, seed=1) * 3 + 2, randn(30, seed=2) * 0.1 - 1
    values, mask = models.wav2vec2_input_values([long, short], padding_value=0.5)
    assert values.shape == mask.shape == (2, 50) and values.dtype == np.float64
    assert_close(values[1, :30], (short - short.mean()) / np.sqrt(short.var() + 1e-7), 1e-12, "normalised")
    assert np.all(values[1, 30:] == 0.5) and mask.sum(axis=1).tolist() == [50, 30]
    assert abs(values[0].mean()) < 1e-12 and abs(values[0].std() - 1) < 1e-6
    with pytest.raises(lamina.ShapeError, match="wav2vec2_input_values"):
        models.wav2vec2_input_values([np.zeros((2, 3))])


# -- parts against the reference ------------------------------------------------------------------
@pytest.mark.parametrize("options", [{}, LARGE_LIKE], ids=["group", "layer"])
def test_feature_encoder_equals_the_reference(f64, options):
    model, reference = _pair(**options)
    _run_both(model.wav2vec2.feature_extractor, reference.wav2vec2.feature_extractor, _audio())
    _compare_parameter_gradients(model, reference, "wav2vec2.feature_extractor")
    assert model.output_lengths([400, 300, 54]).tolist() == [19, 14, 1]


@pytest.mark.parametrize("parametrizations", [False, True], ids=["weight_g", "parametrizations"])
@pytest.mark.parametrize("kernel", [8, 7])
def test_weight_normed_positional_conv_equals_the_reference(f64, parametrizations, kernel):
    model, reference = _pair(2, parametrizations, num_conv_pos_embeddings=kernel)
    x = randn(2, 9, 16, seed=3)
    _run_both(model.wav2vec2.encoder.pos_conv_embed, reference.wav2vec2.encoder.pos_conv_embed, x)
    _compare_parameter_gradients(model, reference, "wav2vec2.encoder.pos_conv_embed")
    assert model.wav2vec2.encoder.pos_conv_embed(x).shape == (2, 9, 16)


@pytest.mark.parametrize("options", [{}, LARGE_LIKE], ids=["post-norm", "stable-layer-norm"])
def test_encoder_layers_equal_the_reference(f64, options):
    model, reference = _pair(3, **options)
    x = randn(2, 6, 16, seed=4)
    mask = np.array([[True] * 6, [True] * 4 + [False] * 2])
    additive = torch.tensor(np.where(mask, 0.0, torch.finfo(torch.float64).min)[:, None, None, :])
    ours_mask = np.where(mask, 0.0, -1e9)[:, None, None, :]
    _run_both(lambda h: model.wav2vec2.encoder.layers[0](h, ours_mask),
              lambda h: reference.wav2vec2.encoder.layers[0](h, additive), x)
    _compare_parameter_gradients(model, reference, "wav2vec2.encoder.layers.0.")


def test_positional_conv_and_encoder_layer_pass_gradient_checks(f64):
    model = models.wav2vec2("test", **LARGE_LIKE)
    model.build()
    x = randn(1, 5, 16, seed=5)
    assert check_gradients(lambda h: model.wav2vec2.encoder.pos_conv_embed(h), x)
    assert check_gradients(lambda h: model.wav2vec2.encoder.layers[1](h), x)


# -- the whole model ------------------------------------------------------------------------------
@pytest.mark.parametrize("options", [{}, LARGE_LIKE], ids=["base-like", "large-like"])
def test_logits_ctc_loss_and_all_gradients_equal_the_reference(f64, options):
    model, reference = _pair(4, **options)
    audio = _audio(2, 400)
    attention_mask = np.ones((2, 400), dtype=np.int64)
    attention_mask[1, 290:] = 0
    audio[1, 290:] = 0.0
    labels = np.array([[1, 2, 2, 3, 5], [4, 6, 7, -100, -100]])
    logits, loss = reference(torch.tensor(audio), torch.tensor(attention_mask), torch.tensor(labels))
    assert_close(model(audio, attention_mask).numpy(), logits.detach().numpy(), 1e-10, "logits")
    assert logits.shape == (2, 19, 8)
    ours_loss = model.loss(audio, labels, attention_mask)
    assert_close(ours_loss.numpy(), loss.detach().numpy(), 1e-10, "loss")
    ours_loss.backward()
    loss.backward()
    _compare_parameter_gradients(model, reference)


def test_padding_does_not_change_the_real_frames(f64):
    model, _ = _pair(5, **LARGE_LIKE)
    audio = _audio(1, 300)
    alone = model(audio).numpy()
    padded = np.concatenate([audio, np.zeros((1, 100))], axis=1)
    mask = np.concatenate([np.ones((1, 300)), np.zeros((1, 100))], axis=1)
    with_mask = model(padded, mask).numpy()
    frames = int(model.output_lengths(300))
    assert_close(with_mask[:, :frames], alone, 1e-9, "real frames")


def test_parameter_counts_of_the_published_configurations():
    counts = {}
    for config in ("base", "large-lv60"):
        model = models.wav2vec2(config)
        with init.meta():
            model.build()
        counts[config] = sum(int(np.prod(p.shape)) for p in model.parameters())
    assert counts == {"base": 94_396_320, "large-lv60": 315_471_520}


# -- the loader -----------------------------------------------------------------------------------
@pytest.mark.parametrize("parametrizations", [False, True], ids=["weight_g", "parametrizations"])
def test_loader_round_trip_with_both_weight_norm_namings(parametrizations):
    model, reference = _pair(6, parametrizations)
    state = reference.state_dict()
    suffix = "parametrizations.weight.original0" if parametrizations else "weight_g"
    g_key = f"wav2vec2.encoder.pos_conv_embed.conv.{suffix}"
    assert g_key in state and state[g_key].shape == (1, 1, 8)
    params = dict(model.named_parameters())
    assert_close(params["wav2vec2.encoder.pos_conv_embed.conv.g"].numpy(), state[g_key].numpy().ravel(), 1e-6, "g")
    for ours_key, weight in hf_wav2vec2_table(model, parametrizations).items():
        assert_close(params[ours_key].numpy(), weight.convert(*(state[k].numpy() for k in weight.keys)), 1e-6,
                     ours_key)
    assert set(weight.keys[0] for weight in hf_wav2vec2_table(model, parametrizations).values()) == set(state)


def test_loader_reports_missing_unexpected_and_misshaped_weights():
    model, reference = _pair(7)
    state = dict(reference.state_dict())
    state["quantizer.codevectors"] = torch.zeros(1, 4, 2)          # pretraining weights are ignored
    models.load_hf_wav2vec2_state_dict(model, state)
    state.pop("lm_head.bias")
    state["extra.weight"] = torch.zeros(2)
    with pytest.raises(KeyError, match=r"missing keys \['lm_head.bias'\], unexpected keys \['extra.weight'\]"):
        models.load_hf_wav2vec2_state_dict(model, state)
    state = dict(reference.state_dict())
    state["lm_head.weight"] = torch.zeros(3, 16)
    with pytest.raises(lamina.ShapeError):
        models.load_hf_wav2vec2_state_dict(model, state)
    with pytest.raises(TypeError, match="Wav2Vec2ForCTC"):
        models.load_hf_wav2vec2_state_dict(models.whisper("test"), state)


def test_builder_registry_and_config_checks():
    assert "wav2vec2" in models.list_models(module="language")
    model = models.get_model("wav2vec2", config="test")
    assert isinstance(model, models.Wav2Vec2ForCTC) and model.config["hidden_size"] == 16
    with pytest.raises(ValueError, match="config must be one of"):
        models.wav2vec2("huge")
    with pytest.raises(ValueError, match="feat_extract_norm"):
        models.wav2vec2("test", feat_extract_norm="batch")
    with pytest.raises(lamina.ShapeError, match="too few"):
        models.wav2vec2("test")(np.zeros((1, 20)))


def test_a_saved_model_loads_with_its_weights(tmp_path):
    model = models.wav2vec2("test", **LARGE_LIKE)
    model.eval()
    audio = _audio(1, 300).astype(np.float32)
    expected = model(audio).numpy()
    saving.save(model, tmp_path / "wav2vec2.lamina")
    loaded = saving.load(tmp_path / "wav2vec2.lamina")
    loaded.eval()
    assert isinstance(loaded, models.Wav2Vec2ForCTC) and loaded.get_config() == model.get_config()
    assert np.array_equal(loaded(audio).numpy(), expected)


# -- learning -------------------------------------------------------------------------------------
FREQUENCIES = (0.04, 0.09, 0.16, 0.27)     # cycles per sample of tones 1..4 (0 is the blank)


def _tone_batch(rng, n: int, symbols: int = 3, tone: int = 96, gap: int = 32):
    """Audio of ``symbols`` random tones (each ``tone`` samples, random phase) separated by
    silences, and the tone ids as labels."""
    labels = rng.integers(1, len(FREQUENCIES) + 1, size=(n, symbols))
    audio = np.zeros((n, gap + symbols * (tone + gap)))
    t = np.arange(tone)
    for i in range(n):
        for j, label in enumerate(labels[i]):
            start = gap + j * (tone + gap)
            audio[i, start:start + tone] = np.sin(2 * np.pi * FREQUENCIES[label - 1] * t + rng.uniform(0, 6.3))
    audio += 0.05 * rng.standard_normal(audio.shape)
    return models.wav2vec2_input_values(list(audio))[0], labels


def _character_error_rate(hypotheses, references) -> float:
    def distance(a, b):
        row = list(range(len(b) + 1))
        for i, x in enumerate(a, 1):
            previous, row[0] = row[0], i
            for j, y in enumerate(b, 1):
                previous, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, previous + (x != y))
        return row[-1]
    return sum(distance(h, list(r)) for h, r in zip(hypotheses, references)) / sum(len(r) for r in references)


def test_a_tiny_wav2vec2_learns_to_transcribe_tone_sequences():
    lamina.backend.manual_seed(0)
    rng = np.random.default_rng(0)
    model = models.wav2vec2("test", vocab_size=5, hidden_size=32, intermediate_size=64, conv_dim=(32, 32, 32),
                            num_conv_pos_embedding_groups=4, ctc_loss_reduction="mean", apply_spec_augment=False,
                            **LARGE_LIKE)
    test_audio, test_labels = _tone_batch(np.random.default_rng(99), 32)
    model(test_audio[:1])
    optimizer = optim.Adam(model.parameters(), lr=3e-3)
    start = time.perf_counter()
    for _ in range(250):
        audio, labels = _tone_batch(rng, 16)
        optimizer.zero_grad()
        loss = model.loss(audio, labels)
        loss.backward()
        optimizer.step()
    seconds = time.perf_counter() - start
    model.eval()
    hypotheses = ctc_greedy_decode(model(test_audio).numpy())
    cer = _character_error_rate(hypotheses, test_labels)
    accuracy = np.mean([list(h) == list(r) for h, r in zip(hypotheses, test_labels)])
    print(f"tone transcription: CER {cer:.3f}, sequence accuracy {accuracy:.2f}, {seconds:.1f} s of training")
    assert cer < 0.1
