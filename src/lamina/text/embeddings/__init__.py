"""Sentence embeddings and retrieval, as sentence-transformers: pooling token vectors into
one sentence vector, an encoder with ``encode``, similarity search in chunks, BM25 and a
cross-encoder. The training losses are in :mod:`lamina.functional.losses_sentence`, the
retrieval evaluation in :mod:`lamina.train.retrieval`."""

from lamina.functional.losses_sentence import cos_sim, dot_score, pairwise_angle_sim, pairwise_cos_sim
from lamina.text.embeddings.bm25 import BM25
from lamina.text.embeddings.cross_encoder import CrossEncoder
from lamina.text.embeddings.encoder import SentenceEncoder, pad_ids
from lamina.text.embeddings.pooling import POOLING_MODES, Normalize, SentencePooling
from lamina.text.embeddings.search import paraphrase_mining, semantic_search

__all__ = [
    "BM25", "POOLING_MODES", "CrossEncoder", "Normalize", "SentenceEncoder", "SentencePooling", "cos_sim",
    "dot_score", "pad_ids", "pairwise_angle_sim", "pairwise_cos_sim", "paraphrase_mining", "semantic_search",
]
