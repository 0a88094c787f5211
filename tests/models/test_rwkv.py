"""RWKV-4 language model: its parallel (training) and recurrent forms give the same scores and
gradients; generation carries the token-shift inputs and WKV states (one token per call after
the prompt) and chooses the tokens of rerunning the whole prefix (greedy, sampling, beams); it
learns a short text in seconds; RWKV's parameter names; errors."""

from __future__ import annotations

import numpy as np
import pytest
from language_model_checks import assert_cached_generation_equals_rerun, assert_overfits_a_short_text

import lamina
from helpers import assert_close, watch_call_lengths
from lamina import models


def _ids(shape=(2, 9), seed: int = 0):
    return np.random.default_rng(seed).integers(0, 13, shape)


def test_parallel_and_recurrent_forms_agree_in_scores_and_gradients(f64):
    lamina.manual_seed(0)
    model = models.RWKV(13, embed_dim=8, num_layers=2)
    results = []
    for form in ("parallel", "recurrent"):
        model.zero_grad()
        scores = model(_ids(), form=form)
        scores.sum().backward()
        results.append((scores.numpy(), {n: p.grad.copy() for n, p in model.named_parameters()}))
    assert_close(results[1][0], results[0][0], 1e-10, "scores")
    for name, grad in results[1][1].items():
        assert_close(grad, results[0][1][name], 1e-9, name)


def test_parameter_names_follow_rwkv():
    model = models.RWKV(13, embed_dim=8, num_layers=2)
    model.build((1, 1))
    names = set(dict(model.named_parameters()))
    assert {"emb.weight", "ln0.weight", "blocks.1.att.time_decay", "blocks.1.att.time_first",
            "blocks.0.att.key.weight", "blocks.0.ffn.receptance.weight", "ln_out.bias", "head.weight"} <= names


def test_greedy_generation_with_the_state_equals_rerunning_the_prefix(f64):
    lamina.manual_seed(1)
    model = models.RWKV(13, embed_dim=8, num_layers=2)
    prompt = _ids((2, 3), seed=2)
    lengths = watch_call_lengths(model)
    generated = model.generate(prompt, max_new_tokens=8)
    assert lengths == [3] + [1] * 7
    rerun = prompt
    for _ in range(8):
        rerun = np.concatenate([rerun, model(rerun).numpy()[:, -1].argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(generated, rerun)


def test_sampling_and_beam_search_with_the_state_equal_the_rerun(f64):
    assert_cached_generation_equals_rerun(lambda vocab: models.RWKV(vocab, embed_dim=8, num_layers=2))


def test_learns_a_short_text():
    assert_overfits_a_short_text(lambda vocab: models.RWKV(vocab, embed_dim=32, num_layers=2), 60)


def test_config_round_trip_and_errors():
    model = models.RWKV(13, embed_dim=8, num_layers=3, hidden_dim=20, form="recurrent")
    assert models.RWKV(**model.get_config()).get_config() == model.get_config()
    with pytest.raises(ValueError, match="RWKV: form must be one of"):
        models.RWKV(13, form="chunkwise")
    with pytest.raises(ValueError, match=r"RWKV: expected token ids of shape \(batch, time\)"):
        model(np.zeros((3,), dtype=np.int64))
