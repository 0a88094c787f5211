"""GloVe's co-occurrence counts: hand-counted corpora (windows, 1/d weighting, symmetry) and a
pair-by-pair count of a random corpus through both ways of summing (dense and sorted cells)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import sparse

from lamina.errors import ShapeError
from lamina.text import Vocabulary, cooccurrence_matrix


def test_a_hand_counted_corpus():
    # "a b c a b": the pairs one apart are ab, bc, ca, ab (1 each), two apart ac, ba, cb (1/2 each)
    vocab = Vocabulary(["a", "b", "c"], level="word", pad=None, unk=None)
    ids = vocab.encode("a b c a b")
    after = cooccurrence_matrix(ids, 3, window=2, symmetric=False)
    assert sparse.issparse(after) and after.format == "csr" and after.dtype == np.float64
    np.testing.assert_array_equal(after.toarray(), [[0, 2, 0.5],
                                                    [0.5, 0, 1],
                                                    [1, 0.5, 0]])
    both = cooccurrence_matrix(ids, 3, window=2)
    np.testing.assert_array_equal(both.toarray(), [[0, 2.5, 1.5],
                                                   [2.5, 0, 1.5],
                                                   [1.5, 1.5, 0]])
    counted = cooccurrence_matrix(ids, 3, window=2, symmetric=False, distance_weighting=False)
    np.testing.assert_array_equal(counted.toarray(), [[0, 2, 1],
                                                      [1, 0, 1],
                                                      [1, 1, 0]])
    near = cooccurrence_matrix(ids, 3, window=1)
    np.testing.assert_array_equal(near.toarray(), [[0, 2, 1],
                                                   [2, 0, 1],
                                                   [1, 1, 0]])
    assert both.nnz == 6                                    # the zero diagonal is not stored


def test_a_word_beside_itself_and_a_window_longer_than_the_corpus():
    # 0 0 1 with window 5: (0, 0) one apart, (0, 1) one and two apart; word 2 never occurs
    counts = cooccurrence_matrix(np.array([0, 0, 1]), 3, window=5).toarray()
    np.testing.assert_array_equal(counts, [[2, 1.5, 0],
                                           [1.5, 0, 0],
                                           [0, 0, 0]])
    for ids in (np.array([2]), np.array([], dtype=np.int64)):
        empty = cooccurrence_matrix(ids, 4, window=3)
        assert empty.shape == (4, 4) and empty.nnz == 0


def _pair_by_pair(ids, vocab_size, window, symmetric, weighted):
    counts = np.zeros((vocab_size, vocab_size))
    for p in range(len(ids)):
        for q in range(p + 1, min(p + window, len(ids) - 1) + 1):
            add = 1.0 / (q - p) if weighted else 1.0
            counts[ids[p], ids[q]] += add
            if symmetric:
                counts[ids[q], ids[p]] += add
    return counts


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("weighted", [True, False])
def test_a_random_corpus_matches_a_pair_by_pair_count(symmetric, weighted):
    ids = np.random.default_rng(0).integers(0, 30, 600)
    expected = _pair_by_pair(ids, 30, 4, symmetric, weighted)
    dense_cells = cooccurrence_matrix(ids, 30, window=4, symmetric=symmetric, distance_weighting=weighted)
    # 5000 words: more cells than the dense array holds, so the cells are found by sorting
    sorted_cells = cooccurrence_matrix(ids, 5000, window=4, symmetric=symmetric, distance_weighting=weighted)
    np.testing.assert_allclose(dense_cells.toarray(), expected, rtol=1e-12)
    assert sorted_cells.shape == (5000, 5000) and sorted_cells.nnz == np.count_nonzero(expected)
    np.testing.assert_allclose(sorted_cells[:30, :30].toarray(), expected, rtol=1e-12)
    assert sorted_cells.has_sorted_indices
    if symmetric:
        assert abs(dense_cells - dense_cells.T).max() == 0


def test_bad_arguments_are_named():
    with pytest.raises(ShapeError, match=r"cooccurrence_matrix: ids must be a 1-D sequence .* shape \(2, 2\)"):
        cooccurrence_matrix(np.zeros((2, 2), dtype=int), 3)
    with pytest.raises(ValueError, match=r"cooccurrence_matrix: word ids must lie in \[0, 3\) .* from 0 to 3"):
        cooccurrence_matrix(np.array([0, 3, 1]), 3)
    with pytest.raises(TypeError, match="cooccurrence_matrix: ids must be integers, got dtype float64"):
        cooccurrence_matrix(np.array([0.0, 1.0]), 3)
    with pytest.raises(ValueError, match="cooccurrence_matrix: window must be an int >= 1, got 0"):
        cooccurrence_matrix(np.array([0, 1]), 3, window=0)
    with pytest.raises(ValueError, match="cooccurrence_matrix: vocab_size must be an int >= 1"):
        cooccurrence_matrix(np.array([0, 1]), 0)
