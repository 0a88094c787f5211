"""Skip-gram pairs (subsampling, dynamic window, negative sampling) and the embedding queries
most_similar and analogy."""

from __future__ import annotations

import numpy as np
import pytest

from lamina.errors import ShapeError
from lamina.text import Vocabulary
from lamina.text.skipgram import (
    analogy,
    keep_probabilities,
    most_similar,
    noise_distribution,
    skipgram_pairs,
    subsample_words,
)


def _keep_formula(f, t):
    return np.minimum(1.0, (np.sqrt(f / t) + 1.0) * t / f)


def test_keep_probabilities_follow_the_word2vec_formula():
    # f = 0.04, 0.01, 0.95 with t = 0.01: (2 + 1) / 4, (1 + 1) clipped to 1, (sqrt(95) + 1) / 95
    p = keep_probabilities([4, 1, 95, 0], t=0.01)
    np.testing.assert_allclose(p, [0.75, 1.0, (np.sqrt(95) + 1) / 95, 1.0])


def test_subsampling_keeps_each_word_at_the_formulas_rate():
    rng = np.random.default_rng(0)
    probs = np.array([0.5, 0.3, 0.15] + [0.05 / 500] * 500)     # three very frequent words, 500 rare ones
    ids = rng.choice(len(probs), size=200_000, p=probs)
    counts = np.bincount(ids, minlength=len(probs))
    kept = np.bincount(subsample_words(ids, t=1e-3, seed=1), minlength=len(probs))
    expected = _keep_formula(counts / counts.sum(), 1e-3)
    for w in range(3):                                           # binomial(count_w, p_w): within 5 sd
        mean, sd = counts[w] * expected[w], np.sqrt(counts[w] * expected[w] * (1 - expected[w]))
        assert abs(kept[w] - mean) < 5 * sd, (w, kept[w], mean, sd)
    assert expected[0] < 0.05 and np.array_equal(kept[3:], counts[3:])   # the rare words are all kept


def test_pairs_lie_within_the_window_of_the_subsampled_sequence():
    # every id occurs once, so an id is its position; the counts given make every third word frequent
    n, window, t = 6000, 3, 1e-4
    ids = np.arange(n)
    counts = np.where(ids % 3 == 0, 200.0, 1.0)
    centers, contexts = skipgram_pairs(ids, window=window, negatives=2, subsample=t, seed=0, counts=counts)
    kept = np.unique(centers)                                   # each kept word is the center of some pair
    rank = np.full(n, -1)
    rank[kept] = np.arange(kept.size)
    assert (rank[contexts[:, 0]] >= 0).all()
    distance = np.abs(rank[contexts[:, 0]] - rank[centers])
    assert distance.min() == 1 and distance.max() == window
    frequent = ids % 3 == 0
    p = _keep_formula(200.0 / counts.sum(), t)
    rate = np.isin(ids[frequent], kept).mean()
    assert 0.3 < p < 0.9 and abs(rate - p) < 5 * np.sqrt(p * (1 - p) / frequent.sum())
    assert np.isin(ids[~frequent], kept).all()


def test_the_dynamic_window_favours_near_words():
    # P(a word d steps away is a context) = (window - d + 1) / window
    n, window = 100_000, 4
    centers, contexts = skipgram_pairs(np.arange(n), window=window, negatives=1, subsample=None, seed=3)
    distance = np.abs(contexts[:, 0] - centers)
    per_distance = np.bincount(distance, minlength=window + 1)
    assert per_distance[0] == 0 and per_distance.sum() == len(centers)
    d = np.arange(1, window + 1)
    expected = 2 * (n - d) * (window - d + 1) / window
    np.testing.assert_allclose(per_distance[1:], expected, rtol=0.03)
    assert per_distance[1] / per_distance[window] == pytest.approx(window, rel=0.05)


def test_negatives_follow_the_unigram_distribution_to_the_three_quarters():
    rng = np.random.default_rng(4)
    counts = np.array([0] + [int(4000 / k) for k in range(1, 20)])   # Zipf-like; word 0 never seen
    ids = rng.permutation(np.repeat(np.arange(len(counts)), counts))
    _, contexts = skipgram_pairs(ids, window=2, negatives=20, subsample=None, seed=5)
    drawn = np.bincount(contexts[:, 1:].ravel(), minlength=len(counts))
    assert drawn[0] == 0
    total = drawn.sum()

    def chi_square(p):
        return (((drawn[1:] - total * p[1:]) ** 2) / (total * p[1:])).sum()

    powered = counts ** 0.75 / (counts ** 0.75).sum()
    np.testing.assert_allclose(noise_distribution(counts), powered)
    assert chi_square(powered) < 60                              # 18 degrees of freedom: mean 18, sd 6
    assert chi_square(counts / counts.sum()) > 1000              # the plain unigram is clearly rejected
    assert np.abs(drawn / total - powered).max() < 0.05 * powered.max()


def test_the_same_seed_gives_the_same_pairs():
    ids = np.random.default_rng(6).integers(0, 50, 3000)
    first = skipgram_pairs(ids, seed=7)
    again = skipgram_pairs(ids, seed=np.random.default_rng(7))
    other = skipgram_pairs(ids, seed=8)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))
    assert first[1].shape[1] == 6 and first[1].dtype == np.int64
    assert not (first[0].shape == other[0].shape and np.array_equal(first[1], other[1]))


def test_a_corpus_of_a_quarter_million_words_gives_pairs_for_every_center():
    ids = (np.random.default_rng(8).zipf(1.3, 250_000) % 12_000).astype(np.int64)
    centers, contexts = skipgram_pairs(ids, window=5, negatives=5, seed=0)
    assert len(centers) > 250_000 and contexts.shape == (len(centers), 6)


def test_bad_arguments_are_refused():
    ids = np.arange(10)
    with pytest.raises(ValueError, match="skipgram_pairs: window must be an int >= 1, got 0"):
        skipgram_pairs(ids, window=0)
    with pytest.raises(ValueError, match="skipgram_pairs: negatives must be an int >= 1, got 0"):
        skipgram_pairs(ids, negatives=0)
    with pytest.raises(ShapeError, match=r"skipgram_pairs: ids must be a 1-D .* got shape \(2, 5\)"):
        skipgram_pairs(ids.reshape(2, 5))
    with pytest.raises(TypeError, match="skipgram_pairs: ids must be integers, got dtype float64"):
        skipgram_pairs(ids.astype(float))
    with pytest.raises(ValueError, match="word ids must be >= 0"):
        skipgram_pairs(ids - 1)
    with pytest.raises(ValueError, match="subsample must be a threshold t > 0 or None"):
        skipgram_pairs(ids, subsample=0)
    with pytest.raises(ValueError, match="word id 9 has no count; counts holds 5 words"):
        skipgram_pairs(ids, counts=np.ones(5))


# -- queries on an embedding matrix --------------------------------------------------------

def _hand_made():
    """Attributes (royal, male, fruit); <pad> and <unk> come first in the vocabulary."""
    vocab = Vocabulary(["king", "queen", "man", "woman", "empire", "apple", "pear"], level="word")
    table = np.array([
        [2, -2, 0],           # <pad>: along queen's direction, and must never be offered
        [1, -1, 0.1],         # <unk>: likewise
        [1, 1, 0], [1, -1, 0], [0, 1, 0], [0, -1, 0],
        [5, 0, 0],            # empire: the largest dot product with king - man + woman, but not the closest angle
        [0, 0, 1], [0, 0.2, 1],
    ], dtype=np.float32)
    return vocab, table


def test_analogy_answers_by_cosine_and_leaves_out_the_query_words():
    vocab, table = _hand_made()
    (answer, score), = analogy(table, vocab, "man", "king", "woman")
    unit = table / np.linalg.norm(table, axis=1, keepdims=True)
    target = unit[vocab["king"]] - unit[vocab["man"]] + unit[vocab["woman"]]
    assert answer == "queen" and score == pytest.approx(unit[vocab["queen"]] @ target / np.linalg.norm(target))
    top = [w for w, _ in analogy(table, vocab, "man", "king", "woman", k=4)]
    assert top[:2] == ["queen", "empire"] and not {"man", "king", "woman", "<pad>", "<unk>"} & set(top)
    assert analogy(table, vocab, "woman", "queen", "man")[0][0] == "king"


def test_most_similar_ranks_by_cosine():
    vocab, table = _hand_made()
    found = most_similar(table, vocab, "apple", k=3)
    assert [w for w, _ in found][:1] == ["pear"] and "apple" not in [w for w, _ in found]
    pear, apple = table[vocab["pear"]], table[vocab["apple"]]
    assert found[0][1] == pytest.approx(pear @ apple / np.linalg.norm(pear) / np.linalg.norm(apple))
    scores = [s for _, s in found]
    assert scores == sorted(scores, reverse=True)
    assert len(most_similar(table, vocab, "king", k=50)) == 6     # 9 rows less the word and the two specials


def test_queries_check_their_arguments():
    vocab, table = _hand_made()
    with pytest.raises(KeyError, match="most_similar: 'prince' is not in the vocabulary of 9 words"):
        most_similar(table, vocab, "prince")
    with pytest.raises(ShapeError, match=r"analogy: embeddings must have shape \(W, A\) = \(9, A\).*\(8, 3\)"):
        analogy(table[:8], vocab, "man", "king", "woman")
    with pytest.raises(ValueError, match="most_similar: k must be an int >= 1"):
        most_similar(table, vocab, "king", k=0)
