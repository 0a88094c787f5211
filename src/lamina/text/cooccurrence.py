"""The word-word co-occurrence matrix X that GloVe is fitted to (Pennington, Socher and
Manning, "GloVe: Global Vectors for Word Representation", 2014, section 3).

X_ij says how often word j appears in the context of word i: within ``window`` words of it.
With distance weighting, as in the paper, a pair d words apart adds 1/d instead of 1, "so
that very distant word pairs are expected to contain less relevant information about the
words' relationship to one another":

    X_ij = sum over the positions p, q with ids[p] = i, ids[q] = j, 1 <= |q - p| <= window
           of 1 / |q - p|                                  (symmetric, weighted)

``symmetric=False`` keeps only the contexts that follow a word (q > p): X_ij then counts j
after i, and the symmetric matrix is X + X^T. The window * n pairs of a corpus of n words are formed
at once and summed by one ``bincount`` over their (i, j) cells (in a dense V x V array for a
vocabulary of up to 2048 words, else over the distinct cells found by sorting), with no loop
over tokens.
"""

from __future__ import annotations

import numpy as np
from scipy import sparse

from lamina.text.skipgram import _check_ids

__all__ = ["cooccurrence_matrix"]

#: Up to this many cells (32 MB of float64) the counts are summed in a dense V x V array.
_DENSE_CELLS = 1 << 22


def cooccurrence_matrix(ids, vocab_size: int, window: int = 10, symmetric: bool = True,
                        distance_weighting: bool = True) -> sparse.csr_matrix:
    """The (``vocab_size``, ``vocab_size``) co-occurrence counts X of a 1-D sequence of word
    ids, as a float64 CSR matrix holding only the non-zero entries (module notes).

    ``window``: how many words on each side count as context. ``symmetric``: count the words
    on both sides (True) or only the ones after each word (False, X_ij = j seen after i).
    ``distance_weighting``: add 1/d for a pair d words apart (True) or 1 (False). Words to be
    ignored (an unknown-word id, say) are best removed from ``ids`` first; the window then
    reaches over them, as GloVe's own counting tool does.
    """
    who = "cooccurrence_matrix"
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
        raise ValueError(f"{who}: vocab_size must be an int >= 1, got {vocab_size!r}")
    if isinstance(window, bool) or not isinstance(window, (int, np.integer)) or window < 1:
        raise ValueError(f"{who}: window must be an int >= 1, got {window!r}")
    vocab_size = int(vocab_size)
    ids = _check_ids(ids, who, vocab_size)
    n = ids.shape[0]
    reach = min(int(window), max(n - 1, 0))
    if reach == 0:
        return sparse.csr_matrix((vocab_size, vocab_size), dtype=np.float64)
    # every pair (p, p + d), d = 1..window: word ids[p] with the context ids[p + d] after it
    rows = np.concatenate([ids[:n - d] for d in range(1, reach + 1)])
    cols = np.concatenate([ids[d:] for d in range(1, reach + 1)])
    distances = np.arange(1, reach + 1)
    weights = np.repeat(1.0 / distances if distance_weighting else np.ones(reach), n - distances)
    keys = rows * vocab_size + cols
    if vocab_size * vocab_size <= _DENSE_CELLS:
        counts = np.bincount(keys, weights=weights, minlength=vocab_size * vocab_size).reshape(vocab_size, vocab_size)
        if symmetric:
            counts = counts + counts.T
        return sparse.csr_matrix(counts)
    keys, where = np.unique(keys, return_inverse=True)
    counts = np.bincount(where.reshape(-1), weights=weights)
    matrix = sparse.csr_matrix((counts, (keys // vocab_size, keys % vocab_size)), shape=(vocab_size, vocab_size))
    if symmetric:
        matrix = (matrix + matrix.T).tocsr()
    matrix.sort_indices()
    return matrix

