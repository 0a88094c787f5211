"""RetNet language model: its parallel, recurrent and chunkwise forms give the same scores and
gradients to 1e-10; generation carries the retention states (one token per call after the
prompt) and chooses the tokens of rerunning the whole prefix (greedy, sampling, beams); it
learns a short text in seconds; the configuration round trip; errors."""

from __future__ import annotations

import numpy as np
import pytest
from language_model_checks import assert_cached_generation_equals_rerun, assert_overfits_a_short_text

import lamina
from helpers import assert_close, watch_call_lengths
from lamina import models


def _ids(shape=(2, 11), seed: int = 0):
    return np.random.default_rng(seed).integers(0, 13, shape)


def test_forms_agree_in_scores_and_gradients(f64):
    lamina.manual_seed(0)
    model = models.RetNet(13, embed_dim=8, num_layers=2, num_heads=2, chunk_size=4)
    ids = _ids()
    results = []
    for form in ("parallel", "recurrent", "chunkwise"):
        model.zero_grad()
        scores = model(ids, form=form)
        scores.sum().backward()
        results.append((scores.numpy(), {n: p.grad.copy() for n, p in model.named_parameters()}))
    for scores, grads in results[1:]:
        assert_close(scores, results[0][0], 1e-10, "scores")
        for name, grad in grads.items():
            assert_close(grad, results[0][1][name], 1e-10, name)


@pytest.mark.parametrize("tied", [False, True])
def test_greedy_generation_with_the_state_equals_rerunning_the_prefix(f64, tied):
    lamina.manual_seed(1)
    model = models.RetNet(13, embed_dim=8, num_layers=2, num_heads=2, tie_word_embeddings=tied)
    prompt = _ids((2, 4), seed=2)
    lengths = watch_call_lengths(model)
    generated = model.generate(prompt, max_new_tokens=8)
    assert lengths == [4] + [1] * 7                     # the prompt once, then one token per call
    rerun = prompt
    for _ in range(8):
        rerun = np.concatenate([rerun, model(rerun).numpy()[:, -1].argmax(-1)[:, None]], axis=1)
    np.testing.assert_array_equal(generated, rerun)


def test_sampling_and_beam_search_with_the_state_equal_the_rerun(f64):
    assert_cached_generation_equals_rerun(lambda vocab: models.RetNet(vocab, embed_dim=8, num_layers=2, num_heads=2,
                                                                      form="chunkwise", chunk_size=2))


def test_learns_a_short_text():
    assert_overfits_a_short_text(lambda vocab: models.RetNet(vocab, embed_dim=32, num_layers=2, num_heads=2), 60)


def test_config_round_trip_and_errors():
    model = models.RetNet(13, embed_dim=8, num_heads=2, form="recurrent", tie_word_embeddings=True)
    copy = models.RetNet(**model.get_config())
    assert copy.get_config() == model.get_config()
    assert all(layer.retention.form == "recurrent" for layer in copy.layers)
    with pytest.raises(ValueError, match="RetNet: form must be one of"):
        model.form = "quadratic"
    with pytest.raises(ValueError, match=r"RetNet: expected token ids of shape \(batch, time\)"):
        model(np.zeros((2, 3, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="MultiScaleRetention: embed_dim 12 must split into num_heads 4 heads"):
        models.RetNet(13, embed_dim=12, num_heads=4)
