"""Training pairs for Word2Vec's skip-gram with negative sampling, and queries on the learned
embedding matrix (course notes, Embedding matrix: "Algorithms: Word2Vec, negative sampling").

Skip-gram learns E by asking each word (the *center* c) to tell its neighbours (the
*contexts* o) apart from random words. From a sequence of word ids :func:`skipgram_pairs`
makes, in three vectorised steps, as Mikolov et al.'s word2vec does:

1. **Subsampling.** A word of corpus frequency f_w = count_w / (total count) is kept with
   probability p_w = min(1, (sqrt(f_w / t) + 1) t / f_w) (the formula of word2vec's code;
   the paper's is 1 - sqrt(t / f_w)), so that words far above the threshold t ("the", ",")
   are thinned out and rare words are all kept. Pairs are made on the kept sequence, so
   the window reaches further where frequent words were dropped.
2. **Dynamic window.** Each kept position draws a reach b uniformly from 1..``window`` and
   pairs with every word at most b steps before or after it: a word at distance d is a
   context with probability (window - d + 1) / window, near words count more.
3. **Negative sampling.** Each pair gets K noise words drawn independently from the
   unigram distribution raised to 3/4, P_n(w) = count_w^0.75 / sum_v count_v^0.75. Nothing
   is excluded: a noise word may by chance be the context itself (rare for K << W).

The model scores a context by u_o . v_c and is trained on labels [1, 0, ..., 0] (see
:class:`lamina.models.SkipGram`). Afterwards the rows of its input table are the word
vectors e_v, and :func:`most_similar` and :func:`analogy` (from :mod:`lamina.text.word_vectors`)
read them by cosine similarity.
"""

from __future__ import annotations

import numpy as np

from lamina.errors import ShapeError
from lamina.text.word_vectors import analogy, most_similar

__all__ = ["analogy", "keep_probabilities", "most_similar", "noise_distribution", "skipgram_pairs",
           "subsample_words"]


def keep_probabilities(counts, t: float = 1e-3) -> np.ndarray:
    """p_w = min(1, (sqrt(f_w / t) + 1) t / f_w) for every word w of ``counts`` (words
    never seen are kept: p = 1). f_w = count_w / sum of counts."""
    counts = _check_counts(counts, "keep_probabilities")
    if not t > 0:
        raise ValueError(f"keep_probabilities: the threshold t must be > 0, got {t!r}")
    freq = counts / max(counts.sum(), 1.0)
    with np.errstate(divide="ignore"):
        keep = (np.sqrt(freq / t) + 1.0) * t / freq
    return np.minimum(np.where(freq > 0, keep, 1.0), 1.0)


def noise_distribution(counts, power: float = 0.75) -> np.ndarray:
    """P_n(w) = count_w^power / sum_v count_v^power: the distribution of negative words."""
    weights = _check_counts(counts, "noise_distribution") ** power
    total = weights.sum()
    if not total > 0:
        raise ValueError("noise_distribution: every count is zero; there is no word to draw")
    return weights / total


def subsample_words(ids, t: float = 1e-3, seed=None, counts=None) -> np.ndarray:
    """The ids kept by frequent-word subsampling (step 1), in order; ``counts`` default to
    the counts of ``ids`` themselves."""
    ids = _check_ids(ids, "subsample_words")
    counts = _counts_for(ids, counts, "subsample_words")
    rng = np.random.default_rng(seed)
    return ids[rng.random(ids.shape[0]) < keep_probabilities(counts, t)[ids]]


def skipgram_pairs(ids, window: int = 2, negatives: int = 5, subsample: float | None = 1e-3, seed=None,
                   counts=None) -> tuple[np.ndarray, np.ndarray]:
    """Skip-gram training examples from a 1-D sequence of word ids (see the module notes).

    Returns ``(centers, contexts)``: ``centers`` (N,) holds c and ``contexts`` (N, 1 + K)
    holds the true context o in column 0 and K = ``negatives`` noise words after it (labels
    [1, 0, ..., 0]), pairs in corpus order (shuffle them for training). ``subsample``: the
    threshold t, or None to keep every word. ``counts`` (one per word id): the word counts
    behind subsampling and P_n, by default those of ``ids``; pass the training corpus's to
    sample held-out text with the same statistics. ``seed``: an int, None or a NumPy
    Generator; the same seed gives the same pairs.
    """
    who = "skipgram_pairs"
    ids = _check_ids(ids, who)
    _check_positive(window, "window", who)
    _check_positive(negatives, "negatives", who)
    if subsample is not None and not subsample > 0:
        raise ValueError(f"{who}: subsample must be a threshold t > 0 or None, got {subsample!r}")
    counts = _counts_for(ids, counts, who)
    rng = np.random.default_rng(seed)
    if subsample is not None:
        ids = ids[rng.random(ids.shape[0]) < keep_probabilities(counts, subsample)[ids]]
    centers, positives = _window_pairs(ids, window, rng)
    cumulative = np.cumsum(noise_distribution(counts))
    draws = rng.random((centers.shape[0], negatives)) * cumulative[-1]
    noise = np.minimum(np.searchsorted(cumulative, draws, side="right"), counts.shape[0] - 1)
    return centers, np.concatenate([positives[:, None], noise], axis=1)


def _window_pairs(ids: np.ndarray, window: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(center, context) pairs with a reach drawn from 1..window at each position."""
    n = ids.shape[0]
    reach = rng.integers(1, window + 1, size=n)
    offsets = np.concatenate([np.arange(-window, 0), np.arange(1, window + 1)])
    where = np.arange(n)[:, None] + offsets
    valid = (np.abs(offsets) <= reach[:, None]) & (where >= 0) & (where < n)
    rows, cols = np.nonzero(valid)
    return ids[rows], ids[where[rows, cols]]


def _check_ids(ids, who: str, vocab_size: int | None = None) -> np.ndarray:
    """``ids`` as a 1-D int64 array of word ids >= 0 (and < ``vocab_size`` when given)."""
    array = np.asarray(ids)
    if array.ndim != 1:
        raise ShapeError(f"{who}: ids must be a 1-D sequence of word ids, got shape {array.shape}")
    if array.size == 0:
        return array.astype(np.int64)
    if array.dtype.kind not in "iu":
        raise TypeError(f"{who}: ids must be integers, got dtype {array.dtype}")
    if array.min() < 0:
        raise ValueError(f"{who}: word ids must be >= 0, got {int(array.min())}")
    if vocab_size is not None and array.max() >= vocab_size:
        raise ValueError(f"{who}: word ids must lie in [0, {vocab_size}) (vocab_size), got ids from "
                         f"{int(array.min())} to {int(array.max())}")
    return array.astype(np.int64, copy=False)


def _check_counts(counts, who: str) -> np.ndarray:
    array = np.asarray(counts, dtype=np.float64)
    if array.ndim != 1 or array.size == 0:
        raise ShapeError(f"{who}: counts must be a non-empty 1-D array (one count per word), got shape {array.shape}")
    if not np.all(array >= 0):
        raise ValueError(f"{who}: counts must be >= 0")
    return array


def _counts_for(ids: np.ndarray, counts, who: str) -> np.ndarray:
    if counts is None:
        if ids.size == 0:
            raise ValueError(f"{who}: no word ids given (and no counts to draw noise words from)")
        return np.bincount(ids).astype(np.float64)
    counts = _check_counts(counts, who)
    if ids.size and int(ids.max()) >= counts.shape[0]:
        raise ValueError(f"{who}: word id {int(ids.max())} has no count; counts holds {counts.shape[0]} words")
    return counts


def _check_positive(value, what: str, who: str) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{who}: {what} must be an int >= 1, got {value!r}")
