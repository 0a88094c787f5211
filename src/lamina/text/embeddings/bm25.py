"""BM25 (Robertson et al. 1994): the lexical ranking that dense retrieval is measured against.

For a query of terms q and a document D of length |D| (avgdl the corpus' mean length),

    score(D, q) = sum_{t in q} idf(t) * f(t, D) c / (f(t, D) + k1 (1 - b + b |D| / avgdl))

f(t, D) the count of t in D, a repeated query term counted each time. Two variants:

- ``'okapi'`` (the rank_bm25 package's ``BM25Okapi``): c = k1 + 1, idf = ln((N - n + 0.5) / (n + 0.5))
  with n the number of documents holding t; a term in more than half the documents would get
  a negative idf, which is replaced by ``epsilon`` times the mean idf over the vocabulary;
- ``'lucene'`` (Lucene >= 8, the bm25s package's default): c = 1, idf = ln(1 + (N - n + 0.5) / (n + 0.5)).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

import numpy as np

__all__ = ["BM25"]

VARIANTS = ("okapi", "lucene")


class BM25:
    """BM25 over a corpus of tokenized documents (lists of terms); see the module docstring.

    ``get_scores(query)`` gives one score per document, ``get_top_n(query, documents, n)``
    the ``n`` best of ``documents`` (any objects, one per corpus document), as rank_bm25.
    """

    def __init__(self, corpus: Sequence[Sequence[str]], k1: float = 1.5, b: float = 0.75, variant: str = "okapi",
                 epsilon: float = 0.25):
        if variant not in VARIANTS:
            raise ValueError(f"BM25: variant must be one of {', '.join(map(repr, VARIANTS))}, got {variant!r}")
        if not corpus:
            raise ValueError("BM25: the corpus is empty")
        if isinstance(corpus[0], str):
            raise TypeError("BM25: expected tokenized documents (lists of terms), got strings; split them first")
        if not k1 >= 0 or not 0 <= b <= 1:
            raise ValueError(f"BM25: needs k1 >= 0 and 0 <= b <= 1, got k1={k1!r}, b={b!r}")
        self.k1, self.b, self.variant, self.epsilon = float(k1), float(b), variant, float(epsilon)
        self.doc_freqs = [Counter(doc) for doc in corpus]
        self.doc_len = np.array([len(doc) for doc in corpus], dtype=np.float64)
        self.corpus_size = len(corpus)
        self.avgdl = float(self.doc_len.sum() / self.corpus_size)
        holding = Counter(term for counts in self.doc_freqs for term in counts)
        self.idf = self._idf(holding)

    def _idf(self, holding: Counter) -> dict[str, float]:
        n_docs = self.corpus_size
        if self.variant == "lucene":
            return {t: math.log(1 + (n_docs - n + 0.5) / (n + 0.5)) for t, n in holding.items()}
        idf = {t: math.log(n_docs - n + 0.5) - math.log(n + 0.5) for t, n in holding.items()}
        floor = self.epsilon * sum(idf.values()) / len(idf) if idf else 0.0
        return {t: (floor if value < 0 else value) for t, value in idf.items()}

    def get_scores(self, query: Sequence[str]) -> np.ndarray:
        """The score of every document for the tokenized ``query`` (corpus_size,)."""
        if isinstance(query, str):
            raise TypeError("BM25.get_scores: expected a tokenized query (a list of terms), got a string")
        norm = self.k1 * (1 - self.b + self.b * self.doc_len / self.avgdl)
        numerator = self.k1 + 1 if self.variant == "okapi" else 1.0
        scores = np.zeros(self.corpus_size)
        for term in query:
            counts = np.array([doc.get(term, 0) for doc in self.doc_freqs], dtype=np.float64)
            scores += self.idf.get(term, 0.0) * counts * numerator / (counts + norm)
        return scores

    def get_top_n(self, query: Sequence[str], documents: Sequence, n: int = 5) -> list:
        """The ``n`` highest-scoring of ``documents``, best first (ties: the earlier document first)."""
        if len(documents) != self.corpus_size:
            raise ValueError(f"BM25.get_top_n: got {len(documents)} documents for a corpus of {self.corpus_size}")
        best = np.argsort(-self.get_scores(query), kind="stable")[:n]
        return [documents[i] for i in best]
