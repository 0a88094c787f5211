"""Neural retrievers on BERT encoders: DPR's dual encoder (Karpukhin et al., "Dense passage
retrieval for open-domain question answering", 2020) and ColBERT (Khattab & Zaharia, "ColBERT:
efficient and effective passage search via contextualized late interaction over BERT", 2020).

Dual encoder: a query q and a passage p are each encoded to the [CLS] vector of the last
hidden states, E_Q(q) and E_P(p), and scored by their dot product sim(q, p) = E_Q(q) . E_P(p).

ColBERT: every token is encoded, projected to a small dimension and L2-normalised; queries
are padded with [MASK] tokens to a fixed length (query augmentation), and document tokens
that are padding or punctuation are left out. The score is the late interaction

    S(q, d) = sum_i max_j q_i . d_j        (i over query tokens, j over kept document tokens).

Both are trained with in-batch negatives: for B queries with positive passages p_1 .. p_B
(and optional hard negatives n_1 .. n_M shared by the batch), with s_kj the score of query k
and candidate j of [p_1 .. p_B, n_1 .. n_M],

    J = -(1/B) sum_k log( exp s_kk / sum_j exp s_kj ).
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np

from lamina import backend
from lamina import functional as F
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.models.bert import BERT
from lamina.models.id_inputs import token_ids
from lamina.nn.constructor_config import register_with_arguments
from lamina.nn.dense import Dense
from lamina.nn.layer import positive_int
from lamina.nn.module import Module, as_tensor

__all__ = ["ColBERT", "DPRDualEncoder", "DenseIndex", "augment_queries", "document_token_mask",
           "in_batch_negatives_loss", "late_interaction_scores"]

_MASKED_OUT = -1e9   # a similarity no real token reaches, so max over j never picks a masked token


def _bool_mask(mask, shape: tuple, what: str, who: str) -> np.ndarray:
    mask = np.asarray(backend.to_numpy(mask.data) if isinstance(mask, Tensor) else mask)
    if mask.shape != shape:
        raise ShapeError(f"{who}: {what} of shape {mask.shape} must match shape {shape}")
    return mask != 0


def in_batch_negatives_loss(scores) -> Tensor:
    """J = -(1/B) sum_k log softmax_j(s_kj)[k] for scores (B, M), M >= B: row k scores query k
    against candidate j, and candidate k is query k's positive; the other positives of the
    batch, and any columns past B (hard negatives), are its negatives."""
    scores = as_tensor(scores)
    if scores.ndim != 2 or scores.shape[1] < scores.shape[0]:
        raise ShapeError(f"in_batch_negatives_loss: expected scores (B, M) with M >= B (the B positives "
                         f"first, then hard negatives), got shape {tuple(scores.shape)}")
    return F.categorical_cross_entropy(scores, backend.xp.arange(scores.shape[0]), from_logits=True)


def _top_k(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The k largest scores of each row, best first, and their columns."""
    k = min(k, scores.shape[1])
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    order = np.argsort(-np.take_along_axis(scores, part, axis=1), axis=1, kind="stable")
    columns = np.take_along_axis(part, order, axis=1)
    return np.take_along_axis(scores, columns, axis=1), columns


def _batches(n: int, batch_size: int):
    return (slice(i, min(i + batch_size, n)) for i in range(0, n, batch_size))


# -- DPR -------------------------------------------------------------------------------------
@register_with_arguments
class DPRDualEncoder(Module):
    """DPR's dual encoder: (query ids (Nq, Tq), passage ids (Np, Tp)) -> scores (Nq, Np),
    E_Q(q) . E_P(p), E the [CLS] vector (position 0) of a :class:`BERT`'s last hidden states.

    ``shared=True`` uses one encoder for both (``passage_encoder`` is ``query_encoder``; else
    it is the sub-module ``separate_passage_encoder``);
    ``bert_config`` are :class:`BERT`'s arguments (vocab_size, hidden_size, ...). The
    attention masks (N, T), 1 on tokens and 0 on padding, default to all tokens."""

    def __init__(self, shared: bool = False, name: str | None = None, **bert_config):
        super().__init__(name=name)
        self.shared = bool(shared)
        bert_config = {**bert_config, "add_pooling_layer": False}
        self.query_encoder = BERT(**bert_config)
        self.query_encoder.build((None, 1))
        if not self.shared:
            self.separate_passage_encoder = BERT(**bert_config)
            self.separate_passage_encoder.build((None, 1))
        self.built = True

    @property
    def passage_encoder(self) -> BERT:
        """The passage encoder: ``query_encoder`` itself when shared."""
        return self.query_encoder if self.shared else self.separate_passage_encoder

    @staticmethod
    def _cls(encoder: BERT, ids, attention_mask) -> Tensor:
        return F.getitem(encoder(ids, attention_mask=attention_mask), (slice(None), 0))

    def encode_queries(self, ids, attention_mask=None) -> Tensor:
        """E_Q(q): (N, hidden_size)."""
        return self._cls(self.query_encoder, token_ids(ids, self._label()), attention_mask)

    def encode_passages(self, ids, attention_mask=None) -> Tensor:
        """E_P(p): (N, hidden_size)."""
        return self._cls(self.passage_encoder, token_ids(ids, self._label()), attention_mask)

    def forward(self, query_ids, passage_ids, query_mask=None, passage_mask=None) -> Tensor:
        queries = self.encode_queries(query_ids, query_mask)
        passages = self.encode_passages(passage_ids, passage_mask)
        return F.matmul(queries, F.transpose(passages, 1, 0))

    def loss(self, query_ids, passage_ids, query_mask=None, passage_mask=None) -> Tensor:
        """:func:`in_batch_negatives_loss` of the B queries against the passages: the first B
        are the queries' positives, any further ones hard negatives."""
        return in_batch_negatives_loss(self(query_ids, passage_ids, query_mask, passage_mask))


class DenseIndex:
    """Exact inner-product search over the passages of a :class:`DPRDualEncoder`:
    ``encode_passages`` adds passages (their vectors kept as a NumPy array), ``search`` gives
    each query's k best passages by E_Q(q) . E_P(p), best first."""

    def __init__(self, model: DPRDualEncoder, batch_size: int = 64):
        if not isinstance(model, DPRDualEncoder):
            raise TypeError(f"DenseIndex: expected a DPRDualEncoder, got {type(model).__name__}")
        self.model = model
        self.batch_size = positive_int(batch_size, "DenseIndex: batch_size")
        self.vectors = np.zeros((0, model.query_encoder.hidden_size), dtype=backend.get_default_dtype())

    def __len__(self) -> int:
        return len(self.vectors)

    def _encode(self, encode, ids, attention_mask) -> np.ndarray:
        ids = token_ids(ids, "DenseIndex")
        mask = None if attention_mask is None else np.asarray(attention_mask)
        parts = []
        with no_grad():
            for rows in _batches(len(ids), self.batch_size):
                part = encode(ids[rows], None if mask is None else mask[rows])
                parts.append(backend.to_numpy(part.data))
        return np.concatenate(parts) if parts else self.vectors[:0]

    def encode_passages(self, ids, attention_mask=None) -> np.ndarray:
        """Encode passages (N, T) and append them to the index; returns their vectors (N, hidden)."""
        vectors = self._encode(self.model.encode_passages, ids, attention_mask)
        self.vectors = np.concatenate([self.vectors, vectors.astype(self.vectors.dtype)])
        return vectors

    def search(self, query_ids, k: int, attention_mask=None) -> tuple[np.ndarray, np.ndarray]:
        """(scores, passage indices), each (N, min(k, len(index))), best first."""
        return self.search_vectors(self._encode(self.model.encode_queries, query_ids, attention_mask), k)

    def search_vectors(self, query_vectors, k: int) -> tuple[np.ndarray, np.ndarray]:
        """:meth:`search` for query vectors (N, hidden) already encoded."""
        positive_int(k, "DenseIndex.search: k")
        if not len(self):
            raise ValueError("DenseIndex.search: the index is empty; call encode_passages first")
        queries = np.asarray(query_vectors)
        if queries.ndim != 2 or queries.shape[1] != self.vectors.shape[1]:
            raise ShapeError(f"DenseIndex.search: expected query vectors (N, {self.vectors.shape[1]}), got shape "
                             f"{queries.shape}")
        return _top_k(queries @ self.vectors.T, k)


# -- ColBERT ---------------------------------------------------------------------------------
def augment_queries(ids, query_maxlen: int, mask_token_id: int, pad_token_id: int = 0) -> np.ndarray:
    """ColBERT's query augmentation: query ids (N, T) cut or extended to (N, query_maxlen),
    every padding id (``pad_token_id``) and every added position set to ``mask_token_id``."""
    ids = token_ids(ids, "augment_queries")
    positive_int(query_maxlen, "augment_queries: query_maxlen")
    out = np.full((ids.shape[0], query_maxlen), mask_token_id, dtype=ids.dtype)
    kept = ids[:, :query_maxlen]
    out[:, :kept.shape[1]] = np.where(kept == pad_token_id, mask_token_id, kept)
    return out


def document_token_mask(ids, attention_mask=None, skiplist: Iterable[int] = (), pad_token_id: int = 0) -> np.ndarray:
    """The document tokens late interaction uses, boolean (N, T): not padding (attention mask
    0, or the id ``pad_token_id`` when no mask is given) and not in ``skiplist`` (punctuation)."""
    ids = token_ids(ids, "document_token_mask")
    keep = (ids != pad_token_id) if attention_mask is None else _bool_mask(
        attention_mask, ids.shape, "attention_mask", "document_token_mask")
    skip = np.asarray(list(skiplist), dtype=ids.dtype)
    return keep & ~np.isin(ids, skip)


def late_interaction_scores(queries, documents, document_mask=None, query_mask=None) -> Tensor:
    """S(q, d) = sum_i max_j q_i . d_j for every query and document: queries (Nq, Lq, d),
    documents (Nd, Ld, d) -> (Nq, Nd). ``document_mask`` (Nd, Ld) marks the document tokens
    max_j ranges over, ``query_mask`` (Nq, Lq) the query tokens summed (default: all)."""
    who = "late_interaction_scores"
    q, d = as_tensor(queries), as_tensor(documents)
    if q.ndim != 3 or d.ndim != 3 or q.shape[2] != d.shape[2]:
        raise ShapeError(f"{who}: expected queries (Nq, Lq, dim) and documents (Nd, Ld, dim) of one dim, got "
                         f"{tuple(q.shape)} and {tuple(d.shape)}")
    similarity = F.einsum("qid,njd->qnij", q, d)
    if document_mask is not None:
        keep = _bool_mask(document_mask, tuple(d.shape[:2]), "document_mask", who)
        similarity = F.masked_fill(similarity, backend.xp.asarray(~keep)[None, :, None, :], _MASKED_OUT)
    best = F.max(similarity, axis=3)
    if query_mask is not None:
        keep = _bool_mask(query_mask, tuple(q.shape[:2]), "query_mask", who)
        best = best * backend.xp.asarray(keep[:, None, :], dtype=best.dtype)
    return F.sum(best, axis=2)


@register_with_arguments
class ColBERT(Module):
    """ColBERT: (query ids (Nq, T), document ids (Nd, Td)) -> late-interaction scores (Nq, Nd).

    Token vectors are normalize(W h_t) with h the last hidden states of a :class:`BERT`
    (``bert_config``: its arguments) and W a bias-free Dense to ``dim``; one encoder serves
    queries and documents. Queries are augmented to ``query_maxlen`` tokens with
    ``mask_token_id`` (:func:`augment_queries`), every position then scored; with
    ``attend_to_mask_tokens=False`` (the paper's code) the encoder's attention skips the
    [MASK] tokens. Document tokens that are padding or in ``skiplist`` (punctuation ids)
    are left out of the max (:func:`document_token_mask`)."""

    def __init__(self, dim: int = 128, query_maxlen: int = 32, mask_token_id: int = 103, pad_token_id: int = 0,
                 skiplist=(), attend_to_mask_tokens: bool = False, name: str | None = None, **bert_config):
        super().__init__(name=name)
        self.dim = positive_int(dim, "ColBERT: dim")
        self.query_maxlen = positive_int(query_maxlen, "ColBERT: query_maxlen")
        self.mask_token_id, self.pad_token_id = int(mask_token_id), int(pad_token_id)
        self.skiplist = tuple(int(i) for i in skiplist)
        self.attend_to_mask_tokens = bool(attend_to_mask_tokens)
        self.encoder = BERT(**{**bert_config, "add_pooling_layer": False})
        self.encoder.build((None, 1))
        self.linear = Dense(self.dim, use_bias=False)
        self.linear.build((None, None, self.encoder.hidden_size))
        self.built = True

    def _token_vectors(self, ids, attention_mask) -> Tensor:
        return F.normalize(self.linear(self.encoder(ids, attention_mask=attention_mask)), axis=-1)

    def encode_queries(self, ids) -> Tensor:
        """Query token vectors (N, query_maxlen, dim) of query ids (N, T), padding = ``pad_token_id``."""
        ids = token_ids(ids, self._label())
        augmented = augment_queries(ids, self.query_maxlen, self.mask_token_id, self.pad_token_id)
        attention = np.ones(augmented.shape, dtype=np.int64)
        if not self.attend_to_mask_tokens:
            kept = min(ids.shape[1], self.query_maxlen)
            attention[:, :kept] = ids[:, :kept] != self.pad_token_id
            attention[:, kept:] = 0
        return self._token_vectors(augmented, attention)

    def encode_documents(self, ids, attention_mask=None) -> tuple[Tensor, np.ndarray]:
        """(document token vectors (N, T, dim), the boolean mask (N, T) of the tokens scored)."""
        ids = token_ids(ids, self._label())
        mask = document_token_mask(ids, attention_mask, self.skiplist, self.pad_token_id)
        attention = (ids != self.pad_token_id) if attention_mask is None else np.asarray(attention_mask)
        return self._token_vectors(ids, attention), mask

    def forward(self, query_ids, document_ids, document_attention_mask=None) -> Tensor:
        documents, mask = self.encode_documents(document_ids, document_attention_mask)
        return late_interaction_scores(self.encode_queries(query_ids), documents, mask)

    def loss(self, query_ids, document_ids, document_attention_mask=None) -> Tensor:
        """:func:`in_batch_negatives_loss` of the B queries against the documents: the first B
        are the queries' positives, any further ones hard negatives."""
        return in_batch_negatives_loss(self(query_ids, document_ids, document_attention_mask))

    def rerank(self, query_ids, document_ids, candidates, document_attention_mask=None,
               batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
        """Exact late-interaction re-ranking: ``candidates`` (Nq, C) are indices into the
        documents (Nd, Td) for each query; returns (scores, document indices), (Nq, C), each
        query's candidates sorted best first."""
        candidates = np.asarray(candidates)
        query_ids, document_ids = token_ids(query_ids, self._label()), token_ids(document_ids, self._label())
        if candidates.ndim != 2 or len(candidates) != len(query_ids):
            raise ShapeError(f"{self._label()}.rerank: expected candidates (Nq={len(query_ids)}, C), got shape "
                             f"{candidates.shape}")
        if candidates.size and not 0 <= candidates.min() <= candidates.max() < len(document_ids):
            raise ValueError(f"{self._label()}.rerank: candidate indices must lie in [0, {len(document_ids)})")
        needed = np.unique(candidates)
        attention = None if document_attention_mask is None else np.asarray(document_attention_mask)[needed]
        with no_grad():
            vectors, masks = [], []
            for rows in _batches(len(needed), batch_size):
                docs, mask = self.encode_documents(document_ids[needed[rows]],
                                                   None if attention is None else attention[rows])
                vectors.append(backend.to_numpy(docs.data))
                masks.append(mask)
            queries = backend.to_numpy(self.encode_queries(query_ids).data)
        documents, mask = np.concatenate(vectors), np.concatenate(masks)
        position = np.searchsorted(needed, candidates)
        scores = np.empty(candidates.shape, dtype=documents.dtype)
        for k in range(len(candidates)):
            chosen = position[k]
            similarity = np.einsum("id,njd->nij", queries[k], documents[chosen])
            similarity = np.where(mask[chosen][:, None, :], similarity, _MASKED_OUT)
            scores[k] = similarity.max(axis=2).sum(axis=1)
        order = np.argsort(-scores, axis=1, kind="stable")
        return np.take_along_axis(scores, order, axis=1), np.take_along_axis(candidates, order, axis=1)
