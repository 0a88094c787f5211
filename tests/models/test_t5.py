"""T5 in Hugging Face's layout: relative position buckets, encoder outputs, logits, loss and
gradients against a PyTorch reference with Hugging Face's names (weights moved by
load_hf_t5_state_dict), parameter counts, cached generation and beam search, a toy task, and
the loader's checks."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from reference_checks import assert_gradients_match_the_table
from torch_t5_reference import T5ForConditionalGeneration
from torch_t5_reference import relative_position_bucket as torch_bucket

import lamina
from helpers import assert_close, check_gradients, randn
from lamina import functional as F
from lamina import models, optim, saving
from lamina.io.safetensors import save_file
from lamina.models.t5 import T5Block, hf_t5_table, relative_position_bucket
from lamina.nn import init

TINY = {"vocab_size": 11, "d_model": 8, "d_kv": 3, "d_ff": 12, "num_layers": 2, "num_decoder_layers": 3,
        "num_heads": 2, "relative_attention_num_buckets": 6, "relative_attention_max_distance": 10,
        "dropout_rate": 0.0, "layer_norm_epsilon": 1e-6}


def _pair(seed: int = 0, **options):
    config = {**TINY, "feed_forward_proj": "relu", "tie_word_embeddings": True, **options}
    torch.manual_seed(seed)
    reference = T5ForConditionalGeneration(config).double()
    model = models.T5(**config)
    models.load_hf_t5_state_dict(model, reference.state_dict())
    return model, reference


@pytest.mark.parametrize("bidirectional", [True, False])
def test_relative_position_buckets_follow_the_reference(bidirectional):
    distances = np.arange(-300, 301)[None, :]
    for buckets, distance in ((32, 128), (6, 10), (8, 16)):
        expected = torch_bucket(torch.tensor(distances), bidirectional, buckets, distance).numpy()
        assert np.array_equal(relative_position_bucket(distances, bidirectional, buckets, distance), expected)


@pytest.mark.parametrize("options", [{}, {"feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}])
def test_outputs_loss_and_gradients_equal_the_reference(f64, options):
    model, reference = _pair(**options)
    rng = np.random.default_rng(0)
    ids = rng.integers(2, TINY["vocab_size"], size=(2, 7))
    mask = np.ones((2, 7), dtype=np.int64)
    mask[1, 5:] = 0                                  # right padding of the second input
    labels = rng.integers(2, TINY["vocab_size"], size=(2, 5))
    labels[0, 3:] = -100
    encoded, logits, loss = reference(torch.tensor(ids), torch.tensor(mask), labels=torch.tensor(labels))
    ours_encoded = model.encode(ids, mask.astype(bool)).numpy()
    assert_close(ours_encoded[mask.astype(bool)], encoded.detach().numpy()[mask.astype(bool)], 1e-10, "encoder")
    ours_logits = model(ids, model.shift_right(labels), mask.astype(bool))
    assert_close(ours_logits.numpy(), logits.detach().numpy(), 1e-10, "logits")
    ours_loss = model.loss(ids, labels, mask.astype(bool))
    assert_close(ours_loss.numpy(), loss.detach().numpy(), 1e-10, "loss")
    ours_loss.backward()
    loss.backward()
    grads = {key: value.grad.numpy() for key, value in reference.named_parameters()}
    assert_gradients_match_the_table(model, hf_t5_table(model), grads, every_parameter=True)


def test_decoder_block_gradients_by_finite_differences(f64):
    block = T5Block(6, 2, 8, 3, is_decoder=True, has_relative_attention_bias=True, relative_attention_num_buckets=4,
                    relative_attention_max_distance=8, dropout_rate=0.0, feed_forward_proj="gated-gelu")
    bias = block.layer[0].SelfAttention
    block.build((2, 3, 6))

    def fn(x, memory):
        return block(x, bias.position_bias(3, 3), memory, np.zeros((1, 1, 1, 4)))
    assert check_gradients(fn, randn(2, 3, 6), randn(2, 4, 6, seed=1))


def test_parameter_counts_of_the_published_configs():
    expected = {"small": 60_506_624, "base": 222_903_552, "v1_1_small": 76_961_152}
    for name, count in expected.items():
        with init.meta():
            model = models.t5(name)
            model.build((None, 1))
        assert model.num_parameters() == count, name
    assert "t5" in models.list_models("language")
    assert isinstance(models.get_model("t5", config="tiny"), models.T5)


def test_decoding_step_by_step_with_the_cache_gives_the_full_scores(f64):
    model, _ = _pair(4)
    rng = np.random.default_rng(2)
    ids = rng.integers(2, TINY["vocab_size"], size=(2, 6))
    mask = np.array([[1] * 6, [1] * 4 + [0] * 2], dtype=bool)
    prefix = rng.integers(0, TINY["vocab_size"], size=(2, 7))
    encoded = model.encode(ids, mask)
    full = model.decode(prefix, encoded, mask).numpy()
    caches = [{} for _ in range(model.num_decoder_layers)]
    steps = [model.decode(prefix[:, :3], encoded, mask, caches, 0).numpy()]          # a chunk, then single steps
    steps += [model.decode(prefix[:, t:t + 1], encoded, mask, caches, t).numpy() for t in range(3, 7)]
    assert_close(np.concatenate(steps, axis=1), full, 1e-10, "cached decoder scores")


@pytest.mark.parametrize("beam_width", [1, 3])
def test_cached_generation_equals_rerun_generation(f64, beam_width):
    lamina.manual_seed(0)
    model = models.T5(**{**TINY, "num_layers": 1, "num_decoder_layers": 2, "initializer_factor": 3.0})
    ids = np.array([[3, 4, 5, 6, 1], [7, 8, 9, 1, 0]])
    mask = ids != 0
    mask[0, :] = True
    calls = []
    decode = model.decode
    model.decode = lambda prefix, *args, **kw: calls.append(np.shape(prefix)[1]) or decode(prefix, *args, **kw)
    cached = model.generate(ids, max_length=9, beam_width=beam_width, attention_mask=mask)
    assert set(calls) == {1}                          # one new token per step
    calls.clear()
    rerun = model.generate(ids, max_length=9, beam_width=beam_width, attention_mask=mask, use_cache=False)
    assert max(calls) > 1
    assert np.array_equal(cached, rerun)
    assert (cached[:, 0] == 0).all() and cached.shape[1] > 2


def test_beam_search_finds_a_sequence_at_least_as_likely_as_greedy(f64):
    model, _ = _pair(2, num_layers=1, num_decoder_layers=1, vocab_size=6)
    ids = np.array([[2, 3, 4, 1]])

    def log_prob(sequence):
        labels = np.asarray([list(sequence[1:])])
        logits = model(ids, model.shift_right(labels))
        picked = np.take_along_axis(F.log_softmax(logits, axis=-1).numpy(), labels[..., None], -1)
        return float(picked.sum())
    greedy = model.generate(ids, max_length=5)[0]
    beam = model.generate(ids, max_length=5, beam_width=4)[0]
    assert log_prob(beam) >= log_prob(greedy) - 1e-12


def _reversal_batch(rng, n: int):
    """Four digits (tokens 2..7) and the end token 1 -> the digits reversed, then the end token."""
    digits = rng.integers(2, 8, size=(n, 4))
    end = np.ones((n, 1), dtype=np.int64)
    return np.concatenate([digits, end], axis=1), np.concatenate([digits[:, ::-1], end], axis=1)


def test_a_tiny_t5_learns_to_reverse_digit_strings():
    rng = np.random.default_rng(0)
    lamina.manual_seed(0)
    model = models.t5("tiny", vocab_size=8, dropout_rate=0.0, num_layers=1)
    optimizer = optim.Adam(model, lr=0.01)
    start = time.perf_counter()
    for _ in range(300):
        loss = model.loss(*_reversal_batch(rng, 64))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    elapsed = time.perf_counter() - start
    inputs, labels = _reversal_batch(np.random.default_rng(1), 64)         # strings not trained on (mostly)
    generated = model.generate(inputs, max_length=8)
    assert generated.shape[1] <= 8 and (generated[:, 0] == 0).all()
    padded = np.zeros((64, 8), dtype=np.int64)
    padded[:, :generated.shape[1]] = generated
    accuracy = float(((padded[:, 1:6] == labels).all(axis=1) & (padded[:, 6:] == 0).all(axis=1)).mean())
    print(f"toy reversal: loss {float(loss.numpy()):.4f}, exact-match accuracy {accuracy:.2f}, {elapsed:.1f} s")
    assert accuracy >= 0.8


def test_loading_from_safetensors_and_its_checks(tmp_path, f64):
    model, reference = _pair(3)
    arrays = {key: value.numpy() for key, value in reference.state_dict().items()}
    assert "encoder.embed_tokens.weight" in arrays and "lm_head.weight" in arrays   # copies, ignored
    path = tmp_path / "model.safetensors"
    save_file(arrays, path)
    loaded = models.T5(**TINY)
    models.load_hf_t5_state_dict(loaded, path)
    for key, value in model.state_dict().items():
        assert np.array_equal(loaded.state_dict()[key], value), key
    key = "decoder.block.1.layer.1.EncDecAttention.k.weight"
    with pytest.raises(KeyError, match=f"missing keys.*{key}"):
        models.load_hf_t5_state_dict(models.T5(**TINY), {k: v for k, v in arrays.items() if k != key})
    with pytest.raises(KeyError, match="missing keys.*lm_head.weight"):
        models.load_hf_t5_state_dict(models.T5(**TINY, tie_word_embeddings=False),
                                     {k: v for k, v in arrays.items() if k != "lm_head.weight"})
    extra = "encoder.block.0.layer.1.DenseReluDense.wi_0.weight"
    with pytest.raises(KeyError, match=f"unexpected keys.*{extra}"):
        models.load_hf_t5_state_dict(models.T5(**TINY), {**arrays, extra: np.zeros((12, 8))})
    with pytest.raises(lamina.ShapeError, match="shared.weight"):
        models.load_hf_t5_state_dict(models.T5(**{**TINY, "vocab_size": 12}), arrays)
    with pytest.raises(TypeError, match="expected a T5 model"):
        models.load_hf_t5_state_dict(models.GPT2(n_embd=8, n_head=2, n_layer=1), arrays)
    with pytest.raises(ValueError, match="config must be one of"):
        models.t5("t5-11b")
    with pytest.raises(ValueError, match="feed_forward_proj must be"):
        models.T5(**TINY, feed_forward_proj="swiglu")


def test_a_saved_model_loads_with_its_weights(tmp_path):
    model = models.t5("tiny", feed_forward_proj="gated-gelu", tie_word_embeddings=False)
    model.eval()
    ids, decoder_ids = np.array([[3, 4, 5, 1]]), np.array([[0, 6, 7]])
    expected = model(ids, decoder_ids).numpy()
    saving.save(model, tmp_path / "t5.lamina")
    loaded = saving.load(tmp_path / "t5.lamina")
    loaded.eval()
    assert isinstance(loaded, models.T5) and loaded.get_config() == model.get_config()
    assert np.array_equal(loaded(ids, decoder_ids).numpy(), expected)
