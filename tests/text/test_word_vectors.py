"""Word-vector evaluations: 3CosAdd and 3CosMul analogies on hand-built vectors where the two
disagree, analogy accuracy over a question list, and Spearman's rho against SciPy."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

from lamina.errors import ShapeError
from lamina.text import Vocabulary, analogy, analogy_accuracy, word_similarity_spearman


def _capitals():
    """london, england, baghdad along e1, e2, e3; each other word given its cosines with them
    (the rest of its unit length on e4), then scaled: the scale must not matter.

    For "london : england :: baghdad : ?", mosul (cosines 0, 0.2, 0.97 with london, england,
    baghdad) wins 3CosAdd, 0.2 - 0 + 0.97 = 1.17 against iraq's 0.65 - 0 + 0.5 = 1.15, carried
    by its one large similarity to baghdad; 3CosMul, with cos' = (1 + cos) / 2, prefers iraq:
    0.825 * 0.75 / 0.501 = 1.235 against mosul's 0.6 * 0.985 / 0.501 = 1.180.
    """
    cosines = {"iraq": (0.0, 0.65, 0.5), "mosul": (0.0, 0.2, 0.97), "paris": (0.9, 0.1, 0.0),
               "france": (0.1, 0.8, -0.2)}
    rows = {"<pad>": (0.0, 1.0, 1.0, 0.0), "<unk>": (0.0, 0.7, 0.6, 0.1),      # specials: never answers
            "london": (1.0, 0.0, 0.0, 0.0), "england": (0.0, 1.0, 0.0, 0.0), "baghdad": (0.0, 0.0, 2.0, 0.0)}
    for scale, (word, cos) in zip((3.0, 0.5, 1.0, 2.0), cosines.items()):
        rows[word] = scale * np.array([*cos, np.sqrt(1.0 - np.sum(np.square(cos)))])
    vocab = Vocabulary(["london", "england", "baghdad", "iraq", "mosul", "paris", "france"], level="word")
    assert vocab.tokens == list(rows)
    return vocab, np.array([rows[w] for w in vocab.tokens]), cosines


def test_3cosadd_and_3cosmul_on_hand_built_vectors():
    vocab, table, cosines = _capitals()
    found_add = analogy(table, vocab, "london", "england", "baghdad", k=4)
    found_mul = analogy(table, vocab, "london", "england", "baghdad", k=4, method="3cosmul")
    assert found_add[0][0] == "mosul" and found_mul[0][0] == "iraq"
    # scores: the cosine with the unit direction of e2 - e1 + e3, and the 3CosMul ratio
    add = {w: (cb - ca + cc) / np.sqrt(3.0) for w, (ca, cb, cc) in cosines.items()}
    mul = {w: (1 + cb) / 2 * (1 + cc) / 2 / ((1 + ca) / 2 + 1e-3) for w, (ca, cb, cc) in cosines.items()}
    for found, expected in ((found_add, add), (found_mul, mul)):
        assert [w for w, _ in found] == sorted(expected, key=expected.get, reverse=True)
        for word, score in found:
            assert score == pytest.approx(expected[word], rel=1e-12)
    assert analogy(table, vocab, "england", "london", "france")[0][0] == "paris"


def test_analogy_accuracy_counts_the_answers_and_skips_unknown_words():
    vocab, table, _ = _capitals()
    questions = [("london", "england", "baghdad", "iraq"), ("england", "london", "france", "paris"),
                 ("london", "england", "paris", "france"), ("london", "england", "rome", "italy")]
    assert analogy_accuracy(table, vocab, questions) == (pytest.approx(2 / 3), 3)
    assert analogy_accuracy(table, vocab, questions, method="3cosmul") == (1.0, 3)
    for (a, b, c, d), method in [(q, m) for q in questions[:3] for m in ("3cosadd", "3cosmul")]:
        hit = analogy(table, vocab, a, b, c, method=method)[0][0] == d
        assert hit == (analogy_accuracy(table, vocab, [(a, b, c, d)], method=method)[0] == 1.0)
    accuracy, asked = analogy_accuracy(table, vocab, questions[3:])
    assert asked == 0 and np.isnan(accuracy)


def test_spearman_matches_scipy_with_ties_and_skips_unknown_pairs():
    rng = np.random.default_rng(0)
    words = [f"w{i}" for i in range(12)]
    vocab = Vocabulary(words, level="word")
    table = rng.normal(size=(len(vocab), 5))
    pairs = [(words[i], words[j]) for i, j in rng.integers(0, 12, (40, 2)) if i != j]
    judged = [(a, b, float(s)) for (a, b), s in zip(pairs, rng.integers(0, 4, len(pairs)))]   # many ties
    unit = table / np.linalg.norm(table, axis=1, keepdims=True)
    cosines = [unit[vocab[a]] @ unit[vocab[b]] for a, b, _ in judged]
    expected = stats.spearmanr(cosines, [s for *_, s in judged]).statistic
    result = word_similarity_spearman(table, vocab, judged + [("w1", "unseen", 3.0), ("nowhere", "w2", 1.0)])
    assert result.spearman == pytest.approx(expected, rel=1e-12)
    assert (result.found, result.total) == (len(judged), len(judged) + 2)
    # a table whose cosines follow the scores exactly: rho = 1 (and -1 when reversed)
    exact = [(a, b, float(unit[vocab[a]] @ unit[vocab[b]])) for a, b, _ in judged]
    assert word_similarity_spearman(table, vocab, exact).spearman == pytest.approx(1.0)
    assert word_similarity_spearman(table, vocab, [(a, b, -s) for a, b, s in exact]).spearman == pytest.approx(-1.0)


def test_evaluations_check_their_arguments():
    vocab, table, _ = _capitals()
    with pytest.raises(ValueError, match=r"analogy: method must be one of \('3cosadd', '3cosmul'\), got '3cos'"):
        analogy(table, vocab, "london", "england", "baghdad", method="3cos")
    with pytest.raises(ShapeError, match=r"word_similarity_spearman: embeddings must have shape \(W, A\) = \(9, A\)"):
        word_similarity_spearman(table[:5], vocab, [("iraq", "mosul", 1.0)])
    with pytest.raises(ValueError, match="word_similarity_spearman: 1 of the 2 pairs have both words in the "
                                         "vocabulary; a rank correlation needs at least 2"):
        word_similarity_spearman(table, vocab, [("iraq", "mosul", 1.0), ("iraq", "rome", 2.0)])
    with pytest.raises(ValueError, match=r"analogy_accuracy: each question must be 4 words"):
        analogy_accuracy(table, vocab, [("london", "england", "baghdad")])
    with pytest.raises(KeyError, match="analogy: 'rome' is not in the vocabulary of 9 words"):
        analogy(table, vocab, "london", "england", "rome")
