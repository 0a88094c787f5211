"""End-to-end memory networks (Sukhbaatar, Szlam, Weston and Fergus 2015): a question answered
by reading a story, sentence by sentence kept in memory, over K hops of soft attention.

Sentence i of the story (word ids x_i1..x_iJ) is stored twice, as an input memory m_i and an
output memory c_i, and the question q as the state u_1:

    m_i = sum_j l_j * A x_ij + T_A(i),   c_i = sum_j l_j * C x_ij + T_C(i),   u_1 = sum_j l_j * B q_j

with l_j the position encoding l_kj = (1 - j/J) - (k/d)(1 - 2j/J) (:func:`position_encoding`;
all ones for a bag of words) and T_A, T_C learned vectors for the sentence's age (temporal
encoding: the latest sentence is age 0). Each hop k reads

    p = softmax(u_k^T m),   o_k = sum_i p_i c_i,   u_{k+1} = u_k + o_k   (or H u_k + o_k)

and the answer is softmax(W (u_K + o_K)) over the vocabulary. Weight tying: ``'adjacent'``
uses K + 1 embeddings E_0..E_K with A^k = E_{k-1}, C^k = E_k, B = A^1 and W = (C^K)^T;
``'layerwise'`` shares A and C across hops, has its own B and W, and the map H between hops.
``linear_start=True`` drops the softmax over the memories (the paper trains with it at
first, then puts the softmax back).
"""

from __future__ import annotations

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor
from lamina.errors import ShapeError
from lamina.nn.layer import positive_int, register_layer
from lamina.nn.module import Module

__all__ = ["MemN2N", "position_encoding"]

MASKED = -1e9


def position_encoding(sentence_length: int, embed_dim: int) -> np.ndarray:
    """l (J, d): l_kj = (1 - j/J) - (k/d)(1 - 2j/J) for word j = 1..J and dimension
    k = 1..d, stored as [j - 1, k - 1]; the word embeddings are multiplied by it
    elementwise before they are summed into a sentence, so word order counts."""
    j = np.arange(1, sentence_length + 1, dtype=np.float64)[:, None] / sentence_length
    k = np.arange(1, embed_dim + 1, dtype=np.float64)[None, :] / embed_dim
    return (1 - j) - k * (1 - 2 * j)


@register_layer
class MemN2N(Module):
    """Stories (N, sentences, words) and questions (N, words) of word ids (0 = padding) ->
    answer logits (N, vocab); see the module notes. ``memory_size``: the most sentences a
    story may have (the temporal encodings); ``embed``: d. A sentence of padding only is
    left out of the attention; a story shorter than others is padded with such sentences
    at its start, so that its latest sentence comes last (age 0)."""

    def __init__(self, vocab: int, embed: int = 20, hops: int = 3, weight_tying: str = "adjacent",
                 position_encoding: bool = True, temporal_encoding: bool = True, memory_size: int = 50,
                 init_std: float = 0.1, name: str | None = None):
        super().__init__(name=name)
        self.vocab = positive_int(vocab, "MemN2N: vocab")
        self.embed = positive_int(embed, "MemN2N: embed")
        self.hops = positive_int(hops, "MemN2N: hops")
        self.memory_size = positive_int(memory_size, "MemN2N: memory_size")
        if weight_tying not in ("adjacent", "layerwise"):
            raise ValueError(f"MemN2N: weight_tying must be 'adjacent' or 'layerwise', got {weight_tying!r}")
        self.weight_tying = weight_tying
        self.use_position_encoding = bool(position_encoding)
        self.use_temporal_encoding = bool(temporal_encoding)
        self.init_std = float(init_std)
        self.linear_start = False
        dtype = backend.get_default_dtype()

        def normal(*shape):
            return backend.xp.asarray(self.init_std * backend.rng().standard_normal(shape), dtype=dtype)

        # tables: one (vocab, d) word embedding and one (memory_size, d) temporal table each
        tables = hops + 1 if weight_tying == "adjacent" else 3                 # layerwise: A, C, B
        memory_tables = tables if weight_tying == "adjacent" else 2            # those that read sentences
        for t in range(tables):
            self.add_parameter(f"embedding_{t}", normal(vocab, embed))
            if self.use_temporal_encoding and t < memory_tables:
                self.add_parameter(f"temporal_{t}", normal(memory_size, embed))
        if weight_tying == "layerwise":
            self.add_parameter("hop_map", normal(embed, embed))               # H
            self.add_parameter("answer", normal(embed, vocab))                # W
        self.built = True

    # -- which table is which ------------------------------------------------------------------
    def _tables(self, hop: int) -> tuple[int, int]:
        """The indices of A and C at hop ``hop`` (0-based)."""
        return (hop, hop + 1) if self.weight_tying == "adjacent" else (0, 1)

    def _question_table(self) -> int:
        return 0 if self.weight_tying == "adjacent" else 2

    # -- pieces --------------------------------------------------------------------------------
    def _check(self, stories, questions) -> tuple[np.ndarray, np.ndarray]:
        stories, questions = np.asarray(stories), np.asarray(questions)
        if stories.ndim != 3 or questions.ndim != 2 or stories.shape[0] != questions.shape[0]:
            raise ShapeError(f"{self._label()}: expected stories (batch, sentences, words) and questions (batch, "
                             f"words) with the same batch, got {stories.shape} and {questions.shape}")
        for what, ids in (("stories", stories), ("questions", questions)):
            if ids.dtype.kind not in "iu":
                raise TypeError(f"{self._label()}: {what} must hold integer word ids, got {ids.dtype}")
            if ids.size and (ids.min() < 0 or ids.max() >= self.vocab):
                raise ValueError(f"{self._label()}: {what} hold word ids in [{ids.min()}, {ids.max()}]; the "
                                 f"vocabulary has ids 0..{self.vocab - 1}")
        if stories.shape[1] > self.memory_size:
            raise ValueError(f"{self._label()}: a story of {stories.shape[1]} sentences does not fit the "
                             f"memory_size={self.memory_size}")
        return stories.astype(np.int64), questions.astype(np.int64)

    def _word_weights(self, ids: np.ndarray) -> np.ndarray:
        """(..., words, d): l_j for each word (0 at padding), J the sentence's own length."""
        lengths = (ids != 0).sum(axis=-1)
        weights = np.zeros((*ids.shape, self.embed))
        if not self.use_position_encoding:
            weights[:] = 1.0
        else:
            for length in np.unique(lengths[lengths > 0]):
                weights[lengths == length, :length] = position_encoding(int(length), self.embed)
        weights[ids == 0] = 0.0
        return weights.astype(backend.get_default_dtype())

    def _encode(self, ids: np.ndarray, word_weights: np.ndarray, table: int) -> Tensor:
        """sum_j l_j * E x_j over the last axis of ``ids``: (..., d)."""
        embedded = F.index_select(getattr(self, f"embedding_{table}"), 0, ids.reshape(-1))
        embedded = F.reshape(embedded, (*ids.shape, self.embed))
        return F.sum(F.mul(embedded, word_weights), axis=-2)

    def _memories(self, stories: np.ndarray, word_weights: np.ndarray, table: int) -> Tensor:
        memories = self._encode(stories, word_weights, table)                    # (N, S, d)
        if self.use_temporal_encoding:
            sentences = stories.shape[1]
            ages = np.arange(sentences - 1, -1, -1)                               # the last sentence is age 0
            memories = F.add(memories, F.index_select(getattr(self, f"temporal_{table}"), 0, ages))
        return memories

    def forward(self, stories, questions, return_attention: bool = False):
        """The answer logits W (u_K + o_K), (N, vocab); with ``return_attention`` also the
        memory weights p of every hop, (N, hops, sentences), to see which sentences the
        answer came from."""
        stories, questions = self._check(stories, questions)
        story_weights = self._word_weights(stories)
        empty = ~(stories != 0).any(axis=-1)                                      # (N, S): padding sentences
        u = self._encode(questions, self._word_weights(questions), self._question_table())
        o, attention, memories = None, [], {}
        for hop in range(self.hops):
            if hop > 0:
                u = F.add(F.matmul(u, self.hop_map) if self.weight_tying == "layerwise" else u, o)
            a_table, c_table = self._tables(hop)
            for table in (a_table, c_table):            # adjacent tying: this hop's C is the next hop's A
                if table not in memories:
                    memories[table] = self._memories(stories, story_weights, table)
            m, c = memories[a_table], memories[c_table]
            scores = F.reshape(F.matmul(m, F.expand_dims(u, -1)), stories.shape[:2])       # u^T m_i
            if empty.any():
                scores = F.where(~empty, scores, backend.xp.asarray(MASKED if not self.linear_start else 0.0,
                                                                   dtype=scores.dtype))
            p = scores if self.linear_start else F.softmax(scores, axis=-1)
            o = F.reshape(F.matmul(F.expand_dims(p, 1), c), (stories.shape[0], self.embed))
            attention.append(p.numpy().copy())
        answer = (self.answer if self.weight_tying == "layerwise"
                  else F.transpose(getattr(self, f"embedding_{self.hops}")))
        logits = F.matmul(F.add(u, o), answer)
        return (logits, np.stack(attention, axis=1)) if return_attention else logits

    def get_config(self) -> dict:
        return {"vocab": self.vocab, "embed": self.embed, "hops": self.hops, "weight_tying": self.weight_tying,
                "position_encoding": self.use_position_encoding, "temporal_encoding": self.use_temporal_encoding,
                "memory_size": self.memory_size, "init_std": self.init_std, "name": self.name}
