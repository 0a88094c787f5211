"""CIDEr-D (Vedantam et al. 2015) as the coco-caption / pycocoevalcap ``CiderD`` scorer
computes it.

Captions are split on whitespace (pycocoevalcap runs the PTB tokenizer first: tokenize
and lowercase before calling). Over a corpus of I images, each with a candidate c_i and
references S_i = {s_i1 .. s_im}:

* the document frequency df(g) of an n-gram g is the number of images whose references
  hold g; the weight of g in a caption with count h(g) is g_n(g) = h(g) (log I - log
  max(1, df(g))), one vector per order n = 1 .. 4;
* CIDEr-D_n(c, S) = (10 / m) sum_j [sum_g min(g_n^c(g), g_n^s(g)) g_n^s(g)] /
  (||g_n^c|| ||g_n^s_j||) exp(-(l_c - l_s)^2 / (2 sigma^2)), the candidate's weights clipped
  by the reference's, sigma = 6; the lengths l are pycocoevalcap's: the number of
  *bigrams* of the caption, which differ as the word counts do wherever the score is not
  0 anyway (an empty caption has a zero vector);
* CIDEr-D = (1/4) sum_n CIDEr-D_n, per image; the corpus score is the mean over images.

A zero norm leaves that order's dot product undivided (it is 0 then).

:func:`cider` is the original CIDEr (pycocoevalcap's ``Cider``): the same tf-idf vectors and
x10, plain cosine similarities, without the clipping and the length penalty.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

from lamina.text.metrics.ngrams import ngram_counts

__all__ = ["cider", "cider_d"]


def _counts(caption: str, max_order: int) -> Counter:
    words = caption.split()
    counts: Counter = Counter()
    for n in range(1, max_order + 1):
        counts.update(ngram_counts(words, n))
    return counts


def _weights(counts: Counter, document_frequency: Counter, log_images: float, max_order: int):
    """(tf-idf weights per order, their norms per order, the bigram count as length)."""
    vectors: list[dict] = [{} for _ in range(max_order)]
    norms = [0.0] * max_order
    for gram, count in counts.items():
        weight = count * (log_images - math.log(max(1.0, document_frequency[gram])))
        vectors[len(gram) - 1][gram] = weight
        norms[len(gram) - 1] += weight * weight
    length = sum(count for gram, count in counts.items() if len(gram) == 2)
    return vectors, [math.sqrt(v) for v in norms], length


def cider_d(candidates: Sequence[str], references: Sequence[Sequence[str]], max_order: int = 4,
            sigma: float = 6.0) -> tuple[float, np.ndarray]:
    """(the corpus CIDEr-D, the per-image scores (I,)): ``candidates[i]`` one caption of
    image i, ``references[i]`` its reference captions; the document frequencies come from
    these references (pycocoevalcap's ``df='corpus'``)."""
    return _cider("cider_d", candidates, references, max_order, sigma, penalized=True)


def cider(candidates: Sequence[str], references: Sequence[Sequence[str]],
          max_order: int = 4) -> tuple[float, np.ndarray]:
    """(the corpus CIDEr, the per-image scores (I,)): as :func:`cider_d` without the clipping
    and the length penalty."""
    return _cider("cider", candidates, references, max_order, 6.0, penalized=False)


def _cider(caller: str, candidates, references, max_order: int, sigma: float,
           penalized: bool) -> tuple[float, np.ndarray]:
    if isinstance(candidates, str):
        raise TypeError(f"{caller}: candidates must be a list of captions, got one string")
    if len(candidates) != len(references):
        raise ValueError(f"{caller}: {len(candidates)} candidates but {len(references)} lists of references")
    if not candidates:
        raise ValueError(f"{caller}: no candidates to score")
    for i, refs in enumerate(references):
        if isinstance(refs, str) or not refs:
            raise ValueError(f"{caller}: references[{i}] must be a non-empty list of captions, got {refs!r}")
    reference_counts = [[_counts(r, max_order) for r in refs] for refs in references]
    document_frequency: Counter = Counter()
    for refs in reference_counts:
        document_frequency.update(set().union(*refs))
    log_images = math.log(len(candidates))
    scores = np.zeros(len(candidates))
    for i, (candidate, refs) in enumerate(zip(candidates, reference_counts)):
        vectors, norms, length = _weights(_counts(candidate, max_order), document_frequency, log_images, max_order)
        total = np.zeros(max_order)
        for ref in refs:
            ref_vectors, ref_norms, ref_length = _weights(ref, document_frequency, log_images, max_order)
            penalty = math.exp(-((length - ref_length) ** 2) / (2 * sigma ** 2)) if penalized else 1.0
            for n in range(max_order):
                dot = sum((min(w, ref_vectors[n].get(g, 0.0)) if penalized else w) * ref_vectors[n].get(g, 0.0)
                          for g, w in vectors[n].items())
                if norms[n] != 0 and ref_norms[n] != 0:
                    dot /= norms[n] * ref_norms[n]
                total[n] += dot * penalty
        scores[i] = 10.0 * total.mean() / len(refs)
    return float(scores.mean()), scores
