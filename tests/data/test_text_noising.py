"""BART's document corruptions: hand-built examples, their invariants over many seeds, and
reproducibility from the seed."""

from __future__ import annotations

from itertools import permutations

import numpy as np
import pytest

from lamina import data

DOC = np.arange(10, 30)          # 20 distinct token ids
MASK = 3


def test_infill_spans_on_a_hand_built_example():
    tokens = [5, 6, 7, 8, 9, 10]
    assert data.infill_spans(tokens, [(1, 2), (4, 0)], MASK).tolist() == [5, MASK, 8, MASK, 9, 10]
    assert data.infill_spans(tokens, [(0, 6)], MASK).tolist() == [MASK]
    assert data.infill_spans(tokens, [(6, 0)], MASK).tolist() == [*tokens, MASK]
    assert data.infill_spans(tokens, [], MASK).tolist() == tokens
    with pytest.raises(ValueError, match="infill_spans: span"):
        data.infill_spans(tokens, [(2, 2), (3, 1)], MASK)


@pytest.mark.parametrize("ratio", [0.0, 0.15, 0.3, 0.5, 1.0])
def test_text_infilling_keeps_its_invariants(ratio):
    for seed in range(30):
        corrupted, spans = data.text_infilling(DOC, MASK, ratio=ratio, seed=seed, return_spans=True)
        assert (corrupted == MASK).sum() == len(spans)                     # one mask per span
        assert sum(length for _, length in spans) == round(ratio * DOC.size)
        assert corrupted[corrupted != MASK].tolist() == [t for t in DOC.tolist()
                                                         if not any(s <= DOC.tolist().index(t) < s + n
                                                                    for s, n in spans)]
        kept = corrupted[corrupted != MASK]
        assert np.all(np.diff(kept) > 0)                                    # the kept tokens in order
        assert np.array_equal(corrupted, data.infill_spans(DOC, spans, MASK))
        assert not np.any((corrupted[1:] == MASK) & (corrupted[:-1] == MASK))  # masks never touch


def test_text_infilling_span_lengths_are_poisson():
    lengths = [n for seed in range(300)
               for n in [length for _, length in data.text_infilling(np.arange(1000), MASK, ratio=0.3, seed=seed,
                                                                      return_spans=True)[1]][:-1]]
    lengths = np.asarray(lengths)                      # the last span of each document is cut to fit
    assert abs(lengths.mean() - 3.0) < 0.1 and abs(lengths.var() - 3.0) < 0.3
    assert abs((lengths == 0).mean() - np.exp(-3.0)) < 0.01                  # zero-length spans occur


def test_token_masking_and_deletion():
    masked = data.token_masking(DOC, MASK, ratio=0.25, seed=0)
    assert (masked == MASK).sum() == 5 and np.array_equal(masked[masked != MASK], DOC[masked != MASK])
    assert data.token_masking(DOC, MASK, ratio=1.0, seed=1).tolist() == [MASK] * 20
    deleted = data.token_deletion(DOC, ratio=0.25, seed=0)
    assert deleted.size == 15 and np.all(np.diff(deleted) > 0) and set(deleted) <= set(DOC)
    assert data.token_deletion(DOC, ratio=0.0, seed=0).tolist() == DOC.tolist()
    assert data.token_deletion([1, 2], ratio=1.0, seed=0).size == 0


def test_sentence_permutation_keeps_the_sentences():
    full_stop = 9
    document = [1, 2, 9, 3, 9, 4, 5, 6, 9, 7]          # sentences [1 2 9] [3 9] [4 5 6 9] and the fragment [7]
    sentences = [(1, 2, 9), (3, 9), (4, 5, 6, 9), (7,)]
    orderings = {tuple(t for k in order for t in sentences[k]) for order in permutations(range(4))}
    seen = set()
    for seed in range(40):
        shuffled = tuple(data.sentence_permutation(document, [full_stop], seed=seed).tolist())
        assert shuffled in orderings             # the same multiset of whole sentences, reordered
        seen.add(shuffled)
    assert len(seen) > 10
    assert data.sentence_permutation([1, 2, 3], [9], seed=0).tolist() == [1, 2, 3]     # one sentence


def test_document_rotation_starts_at_a_drawn_token():
    starts = set()
    for seed in range(60):
        rotated = data.document_rotation(DOC, seed=seed)
        k = int(np.flatnonzero(DOC == rotated[0])[0])
        assert rotated.tolist() == DOC.tolist()[k:] + DOC.tolist()[:k]
        starts.add(k)
    assert len(starts) > 12
    assert data.document_rotation([7], seed=0).tolist() == [7]


@pytest.mark.parametrize("noise", [
    lambda seed: data.token_masking(DOC, MASK, seed=seed),
    lambda seed: data.token_deletion(DOC, seed=seed),
    lambda seed: data.text_infilling(DOC, MASK, seed=seed),
    lambda seed: data.sentence_permutation(DOC, [12, 18, 25], seed=seed),
    lambda seed: data.document_rotation(DOC, seed=seed),
])
def test_the_seed_fixes_the_draws(noise):
    assert np.array_equal(noise(4), noise(4))
    assert any(not np.array_equal(noise(4), noise(s)) for s in range(5, 10))
    assert np.array_equal(noise(np.random.default_rng(4)), noise(4))


def test_bad_inputs_are_reported():
    with pytest.raises(ValueError, match="token_masking: ratio"):
        data.token_masking(DOC, MASK, ratio=1.5)
    with pytest.raises(ValueError, match="text_infilling: expected a 1-D array"):
        data.text_infilling(np.zeros((2, 3), dtype=np.int64), MASK)
    with pytest.raises(ValueError, match="poisson_lambda"):
        data.text_infilling(DOC, MASK, poisson_lambda=-1)
