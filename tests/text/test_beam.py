"""Beam search finds what an exhaustive search over all short sequences finds, is greedy
decoding at width 1, ranks by the length penalty, and drives language models and the
encoder-decoder."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

import lamina
from helpers import FixedBigram
from lamina.models import AttentionSeq2Seq
from lamina.text import Vocabulary, beam_search, beam_search_text, sample_text

V, EOS = 4, 0


def _markov_step(table):
    """A step over a fixed table of next-token log-probabilities given the last token."""
    def step(last, state):
        return table[last], state
    return step


def _random_table(seed):
    rng = np.random.default_rng(seed)
    z = rng.normal(0.0, 1.5, (V, V))
    return z - np.log(np.exp(z).sum(axis=1, keepdims=True))


def _exhaustive(table, first, max_length, length_penalty):
    """Every sequence that ends at EOS within max_length tokens, or runs to max_length."""
    best = []
    for length in range(1, max_length + 1):
        for ids in itertools.product(range(V), repeat=length):
            if EOS in ids[:-1] or (length < max_length and ids[-1] != EOS):
                continue
            prev = (first, *ids[:-1])
            log_prob = sum(table[a, b] for a, b in zip(prev, ids))
            best.append((log_prob / length**length_penalty, list(ids)))
    return sorted(best, key=lambda pair: -pair[0])


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_a_wide_beam_finds_the_best_sequence_of_an_exhaustive_search(seed, length_penalty):
    table = _random_table(seed)
    found = beam_search(_markov_step(table), np.zeros(1), first_id=1, eos_id=EOS, beam_width=V**3, max_length=4,
                        length_penalty=length_penalty, num_return=3)
    expected = _exhaustive(table, 1, 4, length_penalty)[:3]
    assert [h.ids for h in found] == [ids for _, ids in expected]
    np.testing.assert_allclose([h.score for h in found], [score for score, _ in expected], rtol=1e-12)
    for h in found:                       # the log-probability is the sum along the path
        prev = [1, *h.ids[:-1]]
        assert h.log_prob == pytest.approx(sum(table[a, b] for a, b in zip(prev, h.ids)))


def test_width_one_is_greedy_and_a_wider_beam_is_never_worse():
    for seed in range(20):
        table = _random_table(seed)
        greedy, last = [], 1
        for _ in range(6):
            last = int(np.argmax(table[last]))
            greedy.append(last)
            if last == EOS:
                break
        one = beam_search(_markov_step(table), np.zeros(1), 1, EOS, beam_width=1, max_length=6)[0]
        assert one.ids == greedy
        wide = beam_search(_markov_step(table), np.zeros(1), 1, EOS, beam_width=3, max_length=6)[0]
        if EOS in one.ids and EOS in wide.ids:
            assert wide.log_prob >= one.log_prob - 1e-12


def test_a_beam_can_prefer_a_path_that_starts_less_likely():
    # from 1: to 2 (p 0.6) then anything (p 1/4 each, all ends weak), or to 3 (p 0.4) then EOS (p 0.99)
    p = np.full((V, V), 1e-3)
    p[1, 2], p[1, 3] = 0.6, 0.4
    p[2] = 0.25
    p[3, EOS] = 0.99
    table = np.log(p / p.sum(axis=1, keepdims=True))
    greedy = beam_search(_markov_step(table), np.zeros(1), 1, EOS, beam_width=1, max_length=2)[0]
    beam = beam_search(_markov_step(table), np.zeros(1), 1, EOS, beam_width=2, max_length=2)[0]
    assert greedy.ids[0] == 2 and beam.ids == [3, EOS]


def test_the_state_follows_the_surviving_hypotheses():
    # a model of the next token given the last two: only a state reordered with the surviving
    # rows (here the paths so far) gives each hypothesis its own history
    rng = np.random.default_rng(5)
    z = rng.normal(0.0, 1.5, (V, V, V))
    trigram = z - np.log(np.exp(z).sum(axis=-1, keepdims=True))

    def step(last, paths):
        paths = np.concatenate([paths, last[:, None]], axis=1)
        return trigram[paths[:, -2], paths[:, -1]], paths

    found = beam_search(step, np.asarray([[3]]), 1, EOS, beam_width=V**3, max_length=4, num_return=20)
    scored = []
    for length in range(1, 5):
        for ids in itertools.product(range(V), repeat=length):
            if EOS in ids[:-1] or (length < 4 and ids[-1] != EOS):
                continue
            path = (3, 1, *ids)
            scored.append((sum(trigram[path[t - 2], path[t - 1], path[t]] for t in range(2, len(path))), list(ids)))
    scored.sort(key=lambda pair: -pair[0])
    assert [h.ids for h in found] == [ids for _, ids in scored[:20]]
    np.testing.assert_allclose([h.log_prob for h in found], [lp for lp, _ in scored[:20]], rtol=1e-12)


def test_bad_arguments_are_named():
    step = _markov_step(_random_table(0))
    with pytest.raises(ValueError, match="beam_search: beam_width must be a positive int, got 0"):
        beam_search(step, np.zeros(1), 1, EOS, beam_width=0)
    with pytest.raises(ValueError, match=r"num_return must lie in \[1, beam_width=2\], got 3"):
        beam_search(step, np.zeros(1), 1, EOS, beam_width=2, num_return=3)
    with pytest.raises(ValueError, match=r"log-probabilities of shape \(1, V\).*got \(4,\)"):
        beam_search(lambda last, s: (np.zeros(4), s), np.zeros(1), 1, EOS)


def test_beam_search_text_on_a_language_model():
    vocab = Vocabulary("abc", bos=".", eos=".")               # <pad> <unk> . a b c
    table = np.full((6, 6), -50.0)
    table[2, 3] = table[3, 4] = table[4, 5] = table[5, 2] = 50.0   # . -> a -> b -> c -> .
    model = FixedBigram(table)
    assert beam_search_text(model, vocab, beam_width=3) == "abc" == sample_text(model, vocab, seed=0)
    assert beam_search_text(model, vocab, prompt="b", beam_width=2) == "bc"
    assert beam_search_text(model, vocab, max_length=2) == "ab"
    assert model.training                                     # put back as it was
    # . -> a (0.55) -> c -> c ... (each 0.6); . -> b (0.45) -> . (0.95): a beam of 2 ends at once
    p = np.full((6, 6), 1e-6)
    p[2, 3], p[2, 4] = 0.55, 0.45
    p[3, 5], p[3, 2], p[5, 5], p[5, 2] = 0.6, 0.4, 0.6, 0.4
    p[4, 2] = 0.95
    bigram = FixedBigram(np.log(p / p.sum(axis=1, keepdims=True)))
    assert beam_search_text(bigram, vocab, beam_width=1, max_length=4) == "accc"
    assert beam_search_text(bigram, vocab, beam_width=2, max_length=4) == "b"
    with pytest.raises(ValueError, match=r"must map ids \(1, 1\) to scores \(1, 1, 6\), got \(1, 1, 5\)"):
        beam_search_text(FixedBigram(np.zeros((6, 5))), vocab)


def test_the_encoder_decoder_translates_by_beam_search():
    lamina.manual_seed(0)
    model = AttentionSeq2Seq(9, 7, embed_dim=8, hidden=8, attention_units=8)
    source = np.random.default_rng(0).integers(3, 9, (3, 4))
    model(source, np.ones((3, 2), dtype=np.int64))
    greedy = model.translate(source, bos_id=1, eos_id=2, max_length=6)
    one = model.translate(source, bos_id=1, eos_id=2, max_length=6, beam_width=1)
    np.testing.assert_array_equal(one, greedy)

    def log_prob(i, ids):
        target_in = np.asarray([[1, *ids[:-1]]])
        scores = model(source[i:i + 1], target_in).numpy()[0].astype(np.float64)
        scores -= scores.max(axis=-1, keepdims=True)
        log_p = scores - np.log(np.exp(scores).sum(axis=-1, keepdims=True))
        return sum(log_p[t, token] for t, token in enumerate(ids))

    beam = model.translate(source, bos_id=1, eos_id=2, max_length=3, beam_width=7**3)
    greedy3 = model.translate(source, bos_id=1, eos_id=2, max_length=3)
    for i in range(3):
        ids = [int(t) for t in beam[i]]
        ids = ids[: ids.index(2) + 1] if 2 in ids else ids
        candidates = [list(c) for n in (1, 2, 3) for c in itertools.product(range(7), repeat=n)
                      if 2 not in c[:-1] and (n == 3 or c[-1] == 2)]
        best = max(candidates, key=lambda c: log_prob(i, c))
        assert ids == best
        g = [int(t) for t in greedy3[i]]
        g = g[: g.index(2) + 1] if 2 in g else g
        assert log_prob(i, ids) >= log_prob(i, g) - 1e-9
    with pytest.raises(ValueError, match="return_attention is only offered with greedy decoding"):
        model.translate(source, 1, 2, beam_width=2, return_attention=True)


def test_nucleus_sampling_draws_from_the_smallest_set_reaching_top_p():
    vocab = Vocabulary("abc", bos=".", eos=".")               # <pad> <unk> . a b c
    p = np.full((6, 6), 1e-9)
    p[:, 3], p[:, 4], p[:, 5] = 0.5, 0.3, 0.2                 # a, b, c after anything; never the end
    model = FixedBigram(np.log(p / p.sum(axis=1, keepdims=True)))
    def letters(top_p):
        return set("".join(sample_text(model, vocab, max_length=30, seed=s, top_p=top_p) for s in range(4)))
    assert letters(0.5) == {"a"}                 # a alone reaches 0.5
    assert letters(0.6) == {"a", "b"}            # a + b = 0.8 is the smallest set reaching 0.6
    assert letters(0.81) == {"a", "b", "c"}
    assert letters(1.0) == {"a", "b", "c"}
    with pytest.raises(ValueError, match=r"top_p must lie in \(0, 1\], got 0"):
        sample_text(model, vocab, top_p=0)
