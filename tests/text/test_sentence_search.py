"""Chunked semantic search against brute force, BM25 against its formula, and the cross-encoder."""

import math
from collections import Counter

import numpy as np
import pytest
from tests.helpers import randn

import lamina
from lamina.errors import ShapeError
from lamina.text.embeddings import BM25, CrossEncoder, cos_sim, dot_score, paraphrase_mining, semantic_search


def brute_force(queries, corpus, top_k, score):
    scores = score(queries, corpus)
    return [sorted(range(len(row)), key=lambda j: (-row[j], j))[:top_k] for row in scores]


@pytest.mark.parametrize("query_chunk, corpus_chunk", [(100, 500000), (1, 3), (2, 1), (4, 7)])
@pytest.mark.parametrize("top_k", [1, 4, 30])
def test_semantic_search_equals_brute_force(query_chunk, corpus_chunk, top_k):
    queries, corpus = randn(5, 4, seed=1), randn(17, 4, seed=2)
    corpus[9] = corpus[3] * 2.0          # a tie in cosine similarity: the lower id first
    hits = semantic_search(queries, corpus, query_chunk_size=query_chunk, corpus_chunk_size=corpus_chunk,
                           top_k=top_k)
    normalized = lambda x: x / np.linalg.norm(x, axis=1, keepdims=True)  # noqa: E731
    cosine = normalized(queries) @ normalized(corpus).T
    assert [[h["corpus_id"] for h in row] for row in hits] == brute_force(queries, corpus, top_k, lambda a, b: cosine)
    for row, found in zip(cosine, hits):
        np.testing.assert_allclose([h["score"] for h in found], [row[h["corpus_id"]] for h in found], rtol=1e-6)


def test_semantic_search_with_dot_score_and_a_tie():
    corpus = np.array([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])
    hits = semantic_search(np.array([[2.0, 1.0]]), corpus, top_k=3, corpus_chunk_size=1, score_function=dot_score)
    assert [(h["corpus_id"], h["score"]) for h in hits[0]] == [(0, 2.0), (2, 2.0), (1, 1.0)]
    with pytest.raises(ShapeError, match="different widths"):
        semantic_search(np.ones((1, 3)), corpus)


def test_paraphrase_mining_finds_the_closest_pairs():
    rows = randn(6, 5, seed=3)
    rows[4] = rows[1] + 0.01
    rows[5] = rows[2] - 0.02
    pairs = paraphrase_mining(rows, top_k=5, chunk_size=4)
    cosine = cos_sim(rows, rows).numpy()
    expected = sorted(((cosine[i, j], i, j) for i in range(6) for j in range(i + 1, 6)), key=lambda p: (-p[0], p[1:]))
    assert [p[1:] for p in pairs] == [p[1:] for p in expected]
    assert pairs[0][1:] == (1, 4)


CORPUS = [
    "the cat sat on the mat".split(),
    "the dog sat on the log".split(),
    "cats and dogs are pets".split(),
    "the quick brown fox".split(),
    "a dog and a cat and a fox".split(),
]


def rank_bm25_okapi(corpus, query, k1=1.5, b=0.75, epsilon=0.25):
    """rank_bm25's BM25Okapi, written out."""
    n_docs, avgdl = len(corpus), sum(map(len, corpus)) / len(corpus)
    holding = Counter(t for doc in corpus for t in set(doc))
    idf = {t: math.log(n_docs - n + 0.5) - math.log(n + 0.5) for t, n in holding.items()}
    floor = epsilon * sum(idf.values()) / len(idf)
    idf = {t: floor if v < 0 else v for t, v in idf.items()}
    scores = []
    for doc in corpus:
        counts, total = Counter(doc), 0.0
        for t in query:
            f = counts[t]
            total += idf.get(t, 0.0) * f * (k1 + 1) / (f + k1 * (1 - b + b * len(doc) / avgdl))
        scores.append(total)
    return np.array(scores)


@pytest.mark.parametrize("query", [["the", "cat"], ["dog", "dog", "fox"], ["unknown"], ["a", "and"]])
def test_bm25_okapi_equals_the_formula(query):
    bm25 = BM25(CORPUS)
    assert math.log(5 - 3 + 0.5) - math.log(3 + 0.5) < 0 < bm25.idf["the"]      # in 3 of 5: floored
    np.testing.assert_allclose(bm25.get_scores(query), rank_bm25_okapi(CORPUS, query), rtol=1e-12)
    np.testing.assert_allclose(BM25(CORPUS, k1=1.2, b=0.5).get_scores(query),
                               rank_bm25_okapi(CORPUS, query, k1=1.2, b=0.5), rtol=1e-12)


def test_bm25_lucene_and_top_n():
    bm25 = BM25(CORPUS, variant="lucene")
    n = 2       # documents holding 'fox'
    idf = math.log(1 + (5 - n + 0.5) / (n + 0.5))
    avgdl = sum(map(len, CORPUS)) / 5
    doc = CORPUS[3]
    expected = idf * 1 / (1 + 1.5 * (1 - 0.75 + 0.75 * len(doc) / avgdl))
    assert bm25.get_scores(["fox"])[3] == pytest.approx(expected, rel=1e-12)
    names = ["cat", "dog", "pets", "fox", "all"]
    assert BM25(CORPUS).get_top_n(["quick", "fox"], names, n=2) == ["fox", "all"]
    with pytest.raises(ValueError, match="variant must be one of 'okapi', 'lucene'"):
        BM25(CORPUS, variant="bm25+")


class Hidden:
    """Hidden states: a table lookup of the ids shifted by the segment, so the pair's order matters."""

    hidden_size = 3

    def __init__(self):
        self.table = lamina.tensor(randn(200, 3, seed=4), requires_grad=True)

    def __call__(self, ids, token_type_ids=None, attention_mask=None):
        return self.table[np.asarray(ids) + 50 * np.asarray(token_type_ids)]

    def parameters(self, trainable_only=False):
        return [self.table]


def test_cross_encoder_predict_and_rank():
    model = CrossEncoder(Hidden())
    ids, types, mask = model.tokenize([([5, 6], [7]), ([8], [9, 10])])
    np.testing.assert_array_equal(ids, [[101, 5, 6, 102, 7, 102], [101, 8, 102, 9, 10, 102]])
    np.testing.assert_array_equal(types, [[0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1]])
    np.testing.assert_array_equal(mask, np.ones((2, 6)))
    model.bias = lamina.tensor(np.array([0.3], dtype=np.float32), requires_grad=True)
    cls = model.transformer.table.numpy()[101]
    expected = 1 / (1 + np.exp(-(cls @ model.weight.numpy()[:, 0] + 0.3)))
    np.testing.assert_allclose(model.predict([([1], [2]), ([3], [4])]), [expected, expected], rtol=1e-6)
    ranked = CrossEncoder(Hidden(), num_labels=1).rank([1], [[2], [3], [4]], return_documents=True)
    assert [r["corpus_id"] for r in ranked] == [0, 1, 2]           # equal scores keep the order
    assert ranked[0]["text"] == [2]
    assert CrossEncoder(Hidden(), num_labels=3).predict([([1], [2])]).shape == (1, 3)
