"""Retrieval quality of a sentence encoder, as sentence-transformers' ``InformationRetrievalEvaluator``.

Each query's corpus entries are ranked by similarity; with rel_r = 1 when the entry at rank
r (from 1) is relevant and R the query's number of relevant entries, the metrics at k are

- accuracy@k: 1 if any of the top k is relevant;
- precision@k: sum_{r <= k} rel_r / k;  recall@k: sum_{r <= k} rel_r / R;
- MRR@k: 1 / (the rank of the first relevant entry), 0 if none is in the top k;
- nDCG@k: sum_{r <= k} rel_r / log2(r + 1) over the same sum for the ideal ranking (R ones first);
- MAP@k: sum_{r <= k} rel_r precision@r / min(k, R);

each averaged over the queries that have a relevant entry. Binary nDCG and recall equal
:func:`lamina.train.ranking_metrics.ndcg_at_k` and ``recall_at_k`` for the same ranking.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np

from lamina.functional.losses_sentence import cos_sim
from lamina.text.embeddings import semantic_search

__all__ = ["METRICS", "retrieval_metrics", "retrieval_metrics_from_rankings"]

METRICS = ("accuracy", "precision", "recall", "mrr", "ndcg", "map")


def _check_k_values(k_values, fn: str) -> list[int]:
    ks = list(k_values)
    if not ks or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1 for k in ks):
        raise ValueError(f"{fn}: k_values must be ints >= 1, got {k_values!r}")
    return sorted({int(k) for k in ks})


def _query_metrics(ranked: Sequence, relevant: set, k: int) -> dict[str, float]:
    hits = np.array([doc in relevant for doc in list(ranked)[:k]], dtype=np.float64)
    ranks = np.arange(1, len(hits) + 1)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = discounts[:min(k, len(relevant))].sum()
    first = int(np.argmax(hits)) if hits.any() else None
    return {
        "accuracy": float(hits.any()),
        "precision": hits.sum() / k,
        "recall": hits.sum() / len(relevant),
        "mrr": 0.0 if first is None else 1.0 / (first + 1),
        "ndcg": float((hits * discounts[:len(hits)]).sum() / ideal),
        "map": float((hits * np.cumsum(hits) / ranks).sum() / min(k, len(relevant))),
    }


def retrieval_metrics_from_rankings(rankings: Mapping, relevant_docs: Mapping,
                                    k_values: Sequence[int] = (1, 3, 5, 10)) -> dict[str, float]:
    """The metrics of the module docstring for given rankings: ``rankings`` maps a query id to
    its corpus ids, best first; ``relevant_docs`` maps a query id to its relevant corpus ids.
    Queries without relevant ids are left out. Keys ``'accuracy@k'``, ``'precision@k'``,
    ``'recall@k'``, ``'mrr@k'``, ``'ndcg@k'``, ``'map@k'`` for every k in ``k_values``."""
    fn = "retrieval_metrics_from_rankings"
    ks = _check_k_values(k_values, fn)
    queries = [q for q in relevant_docs if len(relevant_docs[q]) > 0]
    if not queries:
        raise ValueError(f"{fn}: no query has a relevant document")
    missing = [q for q in queries if q not in rankings]
    if missing:
        raise ValueError(f"{fn}: no ranking for queries {missing[:5]}")
    totals = {f"{m}@{k}": 0.0 for k in ks for m in METRICS}
    for q in queries:
        relevant = set(relevant_docs[q])
        for k in ks:
            for name, value in _query_metrics(rankings[q], relevant, k).items():
                totals[f"{name}@{k}"] += value
    return {key: value / len(queries) for key, value in totals.items()}


def retrieval_metrics(encoder, queries: Mapping, corpus: Mapping, relevant_docs: Mapping,
                      k_values: Sequence[int] = (1, 3, 5, 10), score_function: Callable = cos_sim,
                      batch_size: int = 32, corpus_chunk_size: int = 50000) -> dict[str, float]:
    """Encode ``queries`` and ``corpus`` (id -> text or token ids) with ``encoder`` (anything
    with ``encode(items, batch_size=...)``, such as :class:`lamina.text.embeddings.SentenceEncoder`),
    rank the corpus for each query by ``score_function`` (:func:`semantic_search`) and give
    :func:`retrieval_metrics_from_rankings` against ``relevant_docs`` (query id -> corpus ids)."""
    ks = _check_k_values(k_values, "retrieval_metrics")
    query_ids = [q for q in queries if q in relevant_docs and len(relevant_docs[q]) > 0]
    corpus_ids = list(corpus)
    query_embeddings = encoder.encode([queries[q] for q in query_ids], batch_size=batch_size)
    corpus_embeddings = encoder.encode([corpus[c] for c in corpus_ids], batch_size=batch_size)
    hits = semantic_search(query_embeddings, corpus_embeddings, top_k=min(max(ks), len(corpus_ids)),
                           corpus_chunk_size=corpus_chunk_size, score_function=score_function)
    rankings = {q: [corpus_ids[h["corpus_id"]] for h in found] for q, found in zip(query_ids, hits)}
    return retrieval_metrics_from_rankings(rankings, {q: relevant_docs[q] for q in query_ids}, ks)
