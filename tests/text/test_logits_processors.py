"""The logits processors, each against a reference written from Hugging Face's documented
formula, and their composition."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.text import (
    LogitsProcessorList,
    MinNewTokensLogitsProcessor,
    MinPLogitsWarper,
    NoBadWordsLogitsProcessor,
    NoRepeatNGramLogitsProcessor,
    RepetitionPenaltyLogitsProcessor,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
    TypicalLogitsWarper,
)

V = 9


def _scores(rows: int = 3, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=2.0, size=(rows, V))


def _ids(rows: int = 3, length: int = 7, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 4, size=(rows, length))


def _probabilities(row: np.ndarray) -> np.ndarray:
    p = np.exp(row - row.max())
    return p / p.sum()


def test_temperature_divides():
    scores = _scores()
    np.testing.assert_allclose(TemperatureLogitsWarper(0.7)(_ids(), scores), scores / 0.7)
    with pytest.raises(ValueError, match="TemperatureLogitsWarper: temperature must be > 0"):
        TemperatureLogitsWarper(0.0)


def test_top_k_keeps_the_k_highest():
    scores = _scores()
    out = TopKLogitsWarper(3)(_ids(), scores)
    for row, new in zip(scores, out):
        best = set(np.argsort(-row)[:3].tolist())
        for token in range(V):
            assert new[token] == (row[token] if token in best else -np.inf)


@pytest.mark.parametrize("top_p", [0.3, 0.75, 0.95])
def test_top_p_keeps_the_nucleus(top_p):
    scores = _scores()
    out = TopPLogitsWarper(top_p)(_ids(), scores)
    for row, new in zip(scores, out):
        p = _probabilities(row)
        for token in range(V):           # kept iff the tokens likelier than it hold less than top_p
            likelier = p[p > p[token]].sum()
            assert new[token] == (row[token] if likelier < top_p else -np.inf)
        assert np.isfinite(new).sum() >= 1


def test_min_p_keeps_tokens_near_the_likeliest():
    scores = _scores()
    out = MinPLogitsWarper(0.2)(_ids(), scores)
    for row, new in zip(scores, out):
        p = _probabilities(row)
        np.testing.assert_array_equal(np.isfinite(new), p >= 0.2 * p.max())


@pytest.mark.parametrize("mass", [0.2, 0.6, 0.9])
def test_typical_keeps_the_most_typical_tokens_up_to_the_mass(mass):
    scores = _scores()
    out = TypicalLogitsWarper(mass)(_ids(), scores)
    for row, new in zip(scores, out):
        p = _probabilities(row)
        entropy = -(p * np.log(p)).sum()
        order = sorted(range(V), key=lambda t: abs(-np.log(p[t]) - entropy))
        kept, total = set(), 0.0
        for token in order:              # the most typical first, until their mass reaches `mass`
            kept.add(token)
            total += p[token]
            if total >= mass:
                break
        assert set(np.flatnonzero(np.isfinite(new)).tolist()) == kept


def test_repetition_penalty_divides_positive_and_multiplies_negative_scores():
    scores, ids = _scores(), _ids()
    out = RepetitionPenaltyLogitsProcessor(1.5)(ids, scores)
    for row, new, seen in zip(scores, out, ids):
        for token in range(V):
            if token in seen:
                expected = row[token] / 1.5 if row[token] > 0 else row[token] * 1.5
            else:
                expected = row[token]
            assert new[token] == pytest.approx(expected)


@pytest.mark.parametrize("n", [1, 2, 3])
def test_no_repeat_ngram_bans_the_completions_of_seen_ngrams(n):
    ids = np.array([[1, 2, 3, 1, 2], [4, 4, 4, 4, 4], [0, 1, 2, 3, 5]])
    out = NoRepeatNGramLogitsProcessor(n)(ids, np.zeros((3, V)))
    for row, new in zip(ids.tolist(), out):
        grams = {tuple(row[i:i + n]) for i in range(len(row) - n + 1)}
        for token in range(V):
            repeats = tuple(row[len(row) - n + 1:] + [token]) in grams
            assert new[token] == (-np.inf if repeats else 0.0)


def test_bad_words_ban_the_last_token_after_their_prefix():
    ids = np.array([[5, 1, 2], [5, 2, 1]])
    bad = [[3], [1, 2, 4], [2, 1, 6], [8]]
    out = NoBadWordsLogitsProcessor(bad, eos_token_id=8)(ids, np.zeros((2, V)))
    np.testing.assert_array_equal(np.flatnonzero(np.isinf(out[0])), [3, 4])
    np.testing.assert_array_equal(np.flatnonzero(np.isinf(out[1])), [3, 6])


def test_min_new_tokens_forbids_the_end_until_enough_tokens():
    processor = MinNewTokensLogitsProcessor(prompt_length=3, min_new_tokens=2, eos_token_id=[4, 7])
    early = processor(np.zeros((2, 4), dtype=np.int64), np.zeros((2, V)))
    assert np.isinf(early[:, [4, 7]]).all() and np.isfinite(np.delete(early, [4, 7], axis=1)).all()
    late = processor(np.zeros((2, 5), dtype=np.int64), np.zeros((2, V)))
    assert np.isfinite(late).all()


def test_a_list_applies_its_processors_in_order_and_leaves_its_inputs():
    scores, ids = _scores(), _ids()
    kept = scores.copy()
    processors = LogitsProcessorList([RepetitionPenaltyLogitsProcessor(2.0), TemperatureLogitsWarper(0.5),
                                      TopKLogitsWarper(4), lambda _, s: s + 1.0])
    by_hand = TopKLogitsWarper(4)(ids, TemperatureLogitsWarper(0.5)(
        ids, RepetitionPenaltyLogitsProcessor(2.0)(ids, scores))) + 1.0
    np.testing.assert_array_equal(processors(ids, scores), by_hand)
    np.testing.assert_array_equal(scores, kept)
    with pytest.raises(TypeError, match="LogitsProcessorList: every processor must be callable"):
        LogitsProcessorList([3])
