"""T5's generation options and decoder masks: decoder_attention_mask against the PyTorch
reference (and through the cache), the flan-t5 configs, sampling (the sampler applied to the
model's scores, its distribution, the seed), beam search's length_penalty and early_stopping
as Hugging Face ranks and stops, and batched decoding equal to row-by-row decoding."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from reference_checks import assert_gradients_match_the_table
from torch_t5_reference import T5ForConditionalGeneration

import lamina
from helpers import assert_close
from lamina import functional as F
from lamina import models
from lamina.models.t5 import hf_t5_table
from lamina.nn import init
from lamina.text import sample_token

TINY = {"vocab_size": 11, "d_model": 8, "d_kv": 3, "d_ff": 12, "num_layers": 1, "num_decoder_layers": 2,
        "num_heads": 2, "relative_attention_num_buckets": 6, "relative_attention_max_distance": 10,
        "dropout_rate": 0.0, "layer_norm_epsilon": 1e-6}
INPUTS = np.array([[3, 4, 5, 6, 1], [7, 8, 9, 1, 0], [2, 9, 1, 0, 0]])
MASK = INPUTS != 0


def _model(seed: int, **options):
    lamina.manual_seed(seed)
    return models.T5(**{**TINY, "initializer_factor": 3.0, **options}).eval()


def _log_prob(model, row: int, sequence) -> tuple[float, int]:
    """log P(sequence[1:] | input row) by one teacher-forced call, and the tokens generated."""
    sequence = np.asarray(sequence)
    logits = model(INPUTS[row:row + 1], sequence[None, :-1], MASK[row:row + 1])
    picked = np.take_along_axis(F.log_softmax(logits, axis=-1).numpy()[0], sequence[1:, None], -1)
    return float(picked.sum()), len(sequence) - 1


def _trimmed(row) -> list[int]:
    """A generated row up to its end token (the start token kept)."""
    row = list(row)
    return row[:row.index(1) + 1] if 1 in row else row


def test_decoder_attention_mask_equals_the_reference(f64):
    config = {**TINY, "feed_forward_proj": "gated-gelu", "tie_word_embeddings": False}
    torch.manual_seed(0)
    reference = T5ForConditionalGeneration(config).double()
    model = models.T5(**config)
    models.load_hf_t5_state_dict(model, reference.state_dict())
    rng = np.random.default_rng(0)
    labels = rng.integers(2, TINY["vocab_size"], size=(2, 6))
    decoder_mask = np.array([[1, 1, 0, 1, 1, 1], [1, 0, 0, 1, 0, 1]])       # padding inside the decoder inputs
    _, logits, loss = reference(torch.tensor(INPUTS[:2]), torch.tensor(MASK[:2]), labels=torch.tensor(labels),
                                decoder_attention_mask=torch.tensor(decoder_mask))
    ours = model.loss(INPUTS[:2], labels, MASK[:2], decoder_mask.astype(bool))
    ours_logits = model(INPUTS[:2], model.shift_right(labels), MASK[:2], decoder_mask.astype(bool))
    assert_close(ours_logits.numpy(), logits.detach().numpy(), 1e-10, "logits")
    unmasked = model(INPUTS[:2], model.shift_right(labels), MASK[:2]).numpy()
    assert np.abs(unmasked - ours_logits.numpy()).max() > 1e-3
    assert_close(ours.numpy(), loss.detach().numpy(), 1e-10, "loss")
    ours.backward()
    loss.backward()
    grads = {key: value.grad.numpy() for key, value in reference.named_parameters()}
    assert_gradients_match_the_table(model, hf_t5_table(model), grads)
    encoded = model.encode(INPUTS[:2], MASK[:2])
    prefix = model.shift_right(labels)
    caches = [{} for _ in range(model.num_decoder_layers)]
    steps = [model.decode(prefix[:, :2], encoded, MASK[:2], caches, 0, decoder_mask[:, :2].astype(bool))]
    steps += [model.decode(prefix[:, t:t + 1], encoded, MASK[:2], caches, t, decoder_mask[:, :t + 1].astype(bool))
              for t in range(2, 6)]
    assert_close(np.concatenate([s.numpy() for s in steps], axis=1), ours_logits.numpy(), 1e-10, "cached")
    with pytest.raises(ValueError, match=r"decoder_attention_mask of shape \(2, 3\).*expected \(2, 6\)"):
        model(INPUTS[:2], prefix, MASK[:2], decoder_mask[:, :3])


def test_flan_t5_configs_build_with_their_parameter_counts():
    expected = {"flan_small": 76_961_152, "flan_base": 247_577_856}
    for name, count in expected.items():
        with init.meta():
            model = models.t5(name)
            model.build((None, 1))
        assert model.num_parameters() == count, name
        assert not model.tie_word_embeddings and "lm_head.weight" in model.state_dict()
    model = models.t5("tiny", num_layers=1, num_decoder_layers=3, tie_word_embeddings=False)
    model.build((None, 1))
    assert (len(model.encoder.block), len(model.decoder.block)) == (1, 3)


def test_sampling_draws_what_the_sampler_draws_from_the_models_scores(f64):
    model = _model(1)
    options = {"temperature": 0.8, "top_k": 6, "top_p": 0.9}
    generated = model.generate(INPUTS, max_length=8, attention_mask=MASK, do_sample=True, seed=5, **options)
    assert np.array_equal(generated, model.generate(INPUTS, max_length=8, attention_mask=MASK, do_sample=True,
                                                    seed=5, **options))
    rerun = model.generate(INPUTS, max_length=8, attention_mask=MASK, do_sample=True, seed=5, use_cache=False,
                           **options)
    assert np.array_equal(generated, rerun)
    for row in range(len(INPUTS)):
        rng = np.random.default_rng(5 + row)
        sequence = [model.decoder_start_token_id]
        while len(sequence) < 8 and sequence[-1] != model.eos_token_id:
            scores = model(INPUTS[row:row + 1], np.asarray([sequence]), MASK[row:row + 1]).numpy()[0, -1]
            sequence.append(sample_token(scores, rng, **options))
        assert _trimmed(generated[row]) == sequence, row
        alone = model.generate(INPUTS[row:row + 1], max_length=8, attention_mask=MASK[row:row + 1], do_sample=True,
                               seed=5 + row, **options)
        assert _trimmed(alone[0]) == sequence, row
    others = [model.generate(INPUTS, max_length=8, attention_mask=MASK, do_sample=True, seed=s, **options)
              for s in (6, 7)]
    assert any(not np.array_equal(generated, other) for other in others)


def test_the_first_sampled_token_follows_the_tempered_top_k_distribution(f64):
    model = _model(2)
    n, temperature, top_k = 4000, 0.7, 4
    inputs = np.repeat(INPUTS[:1], n, axis=0)
    first = model.generate(inputs, max_length=2, do_sample=True, seed=0, temperature=temperature, top_k=top_k)[:, 1]
    scores = model(INPUTS[:1], np.array([[0]])).numpy()[0, -1] / temperature
    kept = np.argsort(-scores)[:top_k]
    p = np.zeros_like(scores)
    p[kept] = np.exp(scores[kept] - scores[kept].max())
    p /= p.sum()
    frequencies = np.bincount(first, minlength=len(p)) / n
    assert frequencies[p == 0].sum() == 0
    assert np.all(np.abs(frequencies - p) <= 4.5 * np.sqrt(p * (1 - p) / n) + 1e-9), (frequencies, p)


@pytest.mark.parametrize("options", [{}, {"beam_width": 3}, {"beam_width": 3, "early_stopping": True},
                                     {"beam_width": 2, "early_stopping": "never", "length_penalty": 2.0}])
def test_batched_decoding_equals_row_by_row_and_the_rerun(f64, options):
    model = _model(3)
    batched = model.generate(INPUTS, max_length=9, attention_mask=MASK, **options)
    rerun = model.generate(INPUTS, max_length=9, attention_mask=MASK, use_cache=False, **options)
    assert np.array_equal(batched, rerun)
    for row in range(len(INPUTS)):
        alone = model.generate(INPUTS[row:row + 1], max_length=9, attention_mask=MASK[row:row + 1], **options)
        assert _trimmed(batched[row]) == _trimmed(alone[0]), row
        assert (batched[row, len(_trimmed(batched[row])):] == model.pad_token_id).all()


def test_length_penalty_ranks_hypotheses_by_the_formula(f64):
    """score = log P / L^length_penalty (L: tokens generated, end token included): with 0 the
    search prefers a short sequence, with 3 a longer one that wins under its own formula."""
    model = _model(3)
    short, short_scores = model.generate(INPUTS, max_length=10, beam_width=3, attention_mask=MASK,
                                         length_penalty=0.0, return_scores=True)
    long, long_scores = model.generate(INPUTS, max_length=10, beam_width=3, attention_mask=MASK,
                                       length_penalty=3.0, return_scores=True)
    for ids, scores, penalty in ((short, short_scores, 0.0), (long, long_scores, 3.0)):
        for row in range(len(INPUTS)):
            log_prob, length = _log_prob(model, row, _trimmed(ids[row]))
            assert scores[row] == pytest.approx(log_prob / length ** penalty, rel=1e-9), (penalty, row)
    a, b = _trimmed(short[0]), _trimmed(long[0])
    assert len(a) < len(b) and a[-1] == b[-1] == model.eos_token_id
    (log_a, length_a), (log_b, length_b) = _log_prob(model, 0, a), _log_prob(model, 0, b)
    assert log_a > log_b and log_b / length_b ** 3 > log_a / length_a ** 3


def test_early_stopping_decides_how_long_the_search_runs(f64):
    model = _model(3)
    calls = []
    decode = model.decode
    model.decode = lambda *args, **kw: calls.append(1) or decode(*args, **kw)
    counts = {}
    for stopping in (True, False, "never"):
        calls.clear()
        model.generate(INPUTS[:1], max_length=12, beam_width=3, attention_mask=MASK[:1], length_penalty=2.0,
                       early_stopping=stopping)
        counts[stopping] = len(calls)
    assert counts[True] <= counts[False] <= counts["never"] and counts[True] < counts["never"], counts
    assert counts["never"] == 11                      # 'never' with a positive penalty: up to max_length
    with pytest.raises(ValueError, match="early_stopping must be True, False or 'never'"):
        model.generate(INPUTS, beam_width=2, early_stopping="soon")
    with pytest.raises(ValueError, match="beam sampling is not supported"):
        model.generate(INPUTS, beam_width=2, do_sample=True)
    with pytest.raises(ValueError, match="top_p must lie in"):
        model.generate(INPUTS, do_sample=True, top_p=1.5)


class _ScriptedDecoder:
    """A stand-in for T5 whose next-token probabilities depend only on the prefix length."""

    num_decoder_layers, eos_token_id, pad_token_id, decoder_start_token_id = 1, 1, 0, 0

    def __init__(self, steps):
        self.steps = [np.log(np.asarray(p, dtype=np.float64)) for p in steps]

    def decode(self, prefixes, encoded, mask, caches=None, offset=0):
        prefixes = np.asarray(prefixes)
        scores = self.steps[prefixes.shape[1] - 1]
        return lamina.tensor(np.broadcast_to(scores, (prefixes.shape[0], 1, len(scores))).copy())


def test_an_end_token_ranked_past_the_beam_width_finishes_nothing(f64):
    """As Hugging Face's beam scorer: of the 2 width best extensions, an end token ranked
    width or later is dropped. Width 2: after [2] (0.6) and [3] (0.3), the end token ranks
    first after [2] (0.3, finished) and third after [3] (0.15, dropped), so the search goes on
    and [2, 2] + end (0.6 * 0.45 * 0.99, over 3 tokens) beats [2] + end (0.3, over 2) with
    length_penalty 1; counting the dropped one would have stopped the search a step earlier."""
    from lamina.models.t5_generation import t5_beam_search
    scripted = _ScriptedDecoder([[0.05, 0.05, 0.6, 0.3], [0.025, 0.5, 0.45, 0.025], [0.004, 0.99, 0.003, 0.003],
                                 [0.25] * 4])
    encoded = lamina.tensor(np.zeros((1, 1, 2)))
    ids, scores = t5_beam_search(scripted, encoded, None, max_length=5, width=2, use_cache=False,
                                 length_penalty=1.0, early_stopping=True)
    assert ids.tolist() == [[0, 2, 2, 1]]
    assert scores[0] == pytest.approx(np.log(0.6 * 0.45 * 0.99) / 3, rel=1e-9)
