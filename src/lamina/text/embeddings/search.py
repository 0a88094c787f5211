"""Nearest neighbours among sentence embeddings: sentence-transformers' ``semantic_search``
and ``paraphrase_mining``, computed in chunks so that the score matrix never has to fit whole."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.functional.losses_sentence import cos_sim

__all__ = ["paraphrase_mining", "semantic_search"]


def _matrix(x, name: str, fn: str) -> np.ndarray:
    data = backend.to_numpy(x.data) if isinstance(x, Tensor) else np.asarray(x)
    if data.dtype.kind != "f":
        data = data.astype(np.float32)
    if data.ndim == 1:
        data = data[None, :]
    if data.ndim != 2:
        raise ShapeError(f"{fn}: {name} must be embeddings of shape (N, D), got shape {data.shape}")
    return data


def _scores(score_function: Callable, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with no_grad():        # the embeddings' own dtype: float64 ones are scored in float64
        out = score_function(Tensor(a, dtype=a.dtype), Tensor(b, dtype=b.dtype))
    return backend.to_numpy(out.data) if isinstance(out, Tensor) else np.asarray(out)


def _positive_int(value, name: str, fn: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{fn}: {name} must be an int >= 1, got {value!r}")
    return int(value)


def _best(scores: np.ndarray, k: int) -> np.ndarray:
    """Column indices of each row's k highest scores, ties to the lower index, best first."""
    columns = np.arange(scores.shape[1])
    return np.lexsort((np.broadcast_to(columns, scores.shape), -scores), axis=1)[:, :k]


def semantic_search(query_embeddings, corpus_embeddings, query_chunk_size: int = 100,
                    corpus_chunk_size: int = 500000, top_k: int = 10,
                    score_function: Callable = cos_sim) -> list[list[dict]]:
    """For each query, its ``top_k`` corpus entries by ``score_function`` (cosine by default).

    Queries are taken ``query_chunk_size`` and the corpus ``corpus_chunk_size`` rows at a time;
    each chunk's best ``top_k`` are kept and merged. Returns one list per query of
    ``{"corpus_id": j, "score": s}`` sorted by score, highest first (ties: lower id first).
    """
    fn = "semantic_search"
    queries = _matrix(query_embeddings, "query_embeddings", fn)
    corpus = _matrix(corpus_embeddings, "corpus_embeddings", fn)
    if queries.shape[1] != corpus.shape[1]:
        raise ShapeError(f"{fn}: query embeddings {queries.shape} and corpus embeddings {corpus.shape} "
                         "have different widths")
    top_k = _positive_int(top_k, "top_k", fn)
    query_chunk_size = _positive_int(query_chunk_size, "query_chunk_size", fn)
    corpus_chunk_size = _positive_int(corpus_chunk_size, "corpus_chunk_size", fn)
    results: list[list[dict]] = []
    for q_start in range(0, len(queries), query_chunk_size):
        q_chunk = queries[q_start:q_start + query_chunk_size]
        kept_scores, kept_ids = [], []
        for c_start in range(0, len(corpus), corpus_chunk_size):
            scores = _scores(score_function, q_chunk, corpus[c_start:c_start + corpus_chunk_size])
            best = _best(scores, top_k)
            kept_scores.append(np.take_along_axis(scores, best, axis=1))
            kept_ids.append(best + c_start)
        scores, ids = np.concatenate(kept_scores, axis=1), np.concatenate(kept_ids, axis=1)
        order = np.lexsort((ids, -scores), axis=1)[:, :top_k]
        for row_scores, row_ids in zip(np.take_along_axis(scores, order, 1), np.take_along_axis(ids, order, 1)):
            results.append([{"corpus_id": int(j), "score": float(s)} for j, s in zip(row_ids, row_scores)])
    return results


def paraphrase_mining(embeddings, top_k: int = 100, max_pairs: int = 500000, chunk_size: int = 1000,
                      score_function: Callable = cos_sim) -> list[tuple[float, int, int]]:
    """The most similar pairs (score, i, j), i < j, among the rows of ``embeddings``: each
    row's ``top_k`` neighbours (itself left out), deduplicated, sorted by score (highest
    first, ties by (i, j)) and cut to ``max_pairs`` (sentence-transformers'
    ``paraphrase_mining_embeddings``)."""
    fn = "paraphrase_mining"
    rows = _matrix(embeddings, "embeddings", fn)
    top_k = _positive_int(top_k, "top_k", fn)
    chunk_size = _positive_int(chunk_size, "chunk_size", fn)
    pairs: dict[tuple[int, int], float] = {}
    for start in range(0, len(rows), chunk_size):
        scores = _scores(score_function, rows[start:start + chunk_size], rows).astype(np.float64)
        own = np.arange(start, start + len(scores))
        scores[np.arange(len(scores)), own] = -np.inf
        for i, (row, best) in enumerate(zip(scores, _best(scores, min(top_k, len(rows) - 1)))):
            for j in best:
                key = (min(i + start, int(j)), max(i + start, int(j)))
                pairs[key] = float(row[j])
    ranked = sorted(((s, i, j) for (i, j), s in pairs.items()), key=lambda p: (-p[0], p[1], p[2]))
    return ranked[:max_pairs]
