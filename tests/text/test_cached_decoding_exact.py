"""Cached greedy decoding of GPT-2, Llama (grouped-query attention, scaled rotary positions) and
Mistral (sliding window) gives the scores of one full forward pass on the decoded text, in
float32 and float64; reordering the cache's rows (beam search) continues the reordered texts."""

from __future__ import annotations

import numpy as np
import pytest

import lamina
from helpers import assert_close
from lamina import models
from lamina.text import caching_keys_values, reorder_caches

TOLERANCE = {np.float32: 1e-6, np.float64: 1e-12}
LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 16}


@pytest.fixture(params=[np.float32, np.float64], ids=["float32", "float64"])
def dtype(request):
    lamina.set_default_dtype(request.param)
    yield request.param
    lamina.set_default_dtype(np.float32)


def _built(model, dtype):
    lamina.manual_seed(0)
    model.build((None, 1))
    return model.eval()


def _greedy(model, prompt: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """The ids read (prompt and greedy tokens, (N, P + steps)) and the scores of every id read,
    the prompt in one call and then one token per call through the key/value cache."""
    with lamina.no_grad(), caching_keys_values(model):
        scores = [model(lamina.tensor(prompt)).numpy()]
        ids = prompt
        for _ in range(steps):
            token = scores[-1][:, -1].argmax(axis=-1)[:, None]
            ids = np.concatenate([ids, token], axis=1)
            scores.append(model(lamina.tensor(token)).numpy())
    return ids, np.concatenate(scores, axis=1)


def _check_cached_equals_full(model, prompt, steps: int, dtype) -> None:
    ids, cached = _greedy(model, prompt, steps)
    with lamina.no_grad():
        full = model(lamina.tensor(ids)).numpy()
    assert cached.dtype == dtype
    assert_close(cached, full, TOLERANCE[dtype], "cached scores")


def _prompt(length: int, rows: int = 1, vocab: int = 50) -> np.ndarray:
    return np.random.default_rng(length).integers(1, vocab, size=(rows, length))


def test_gpt2_cached_decoding_gives_the_full_forward_scores(dtype):
    model = _built(models.GPT2(vocab_size=61, n_positions=40, n_embd=32, n_layer=2, n_head=4), dtype)
    _check_cached_equals_full(model, _prompt(5, rows=2), 12, dtype)


@pytest.mark.parametrize("scaling", [None, LLAMA3, {"rope_type": "linear", "factor": 2.0}],
                         ids=["plain", "llama3", "linear"])
def test_llama_with_grouped_query_attention_cached_gives_the_full_forward_scores(dtype, scaling):
    model = _built(models.llama("tiny", rope_scaling=scaling), dtype)
    assert model.num_key_value_heads < model.num_attention_heads
    _check_cached_equals_full(model, _prompt(6), 14, dtype)


@pytest.mark.parametrize("prompt_length", [1, 13], ids=["one-token prompt", "prompt past the window"])
def test_mistral_sliding_window_cached_gives_the_full_forward_scores(dtype, prompt_length):
    model = _built(models.mistral("tiny"), dtype)
    assert model.sliding_window < prompt_length + 14
    _check_cached_equals_full(model, _prompt(prompt_length), 14, dtype)


def test_reordered_cache_rows_continue_the_reordered_texts():
    model = _built(models.GPT2(vocab_size=61, n_positions=40, n_embd=32, n_layer=2, n_head=4), np.float32)
    texts = _prompt(7, rows=3)
    rows_per_step = [np.array([2, 0, 1]), np.array([1, 1, 0])]       # a permutation, then a repeated row
    with lamina.no_grad(), caching_keys_values(model):
        model(lamina.tensor(texts[:, :5]))
        for step, rows in enumerate(rows_per_step):
            reorder_caches(model, rows)
            texts = texts[rows]
            cached = model(lamina.tensor(texts[:, 5 + step:6 + step])).numpy()
    with lamina.no_grad():
        full = model(lamina.tensor(texts)).numpy()
    assert_close(cached[:, 0], full[:, 6], 1e-6, "scores after reordering")
    assert not np.allclose(cached[0, 0], cached[2, 0])          # the rows do differ
