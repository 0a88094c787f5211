"""A cross-encoder: query and passage read together by one transformer, scored by a linear
head on the first token, as sentence-transformers' ``CrossEncoder``. Slower than comparing
two embeddings but more accurate, it typically re-ranks a retriever's candidates."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.functional.activation import sigmoid
from lamina.functional.shape import getitem

__all__ = ["CrossEncoder"]


class CrossEncoder:
    """Scores of (query, passage) pairs: logits = h_[CLS] W + b over the joint sequence
    [CLS] query [SEP] passage [SEP] (segment ids 0 then 1).

    ``transformer(ids, token_type_ids=..., attention_mask=...)`` gives hidden states (N, T, H)
    of width ``hidden_size`` (read from the transformer's ``hidden_size`` when not given);
    ``num_labels`` outputs, the one-label score passed through a sigmoid by :meth:`predict`
    (as sentence-transformers' default). Texts go through ``tokenizer`` (text -> ids), id
    lists are taken as they are. The head (``weight``, ``bias``) starts N(0, 0.02) and zero.
    """

    def __init__(self, transformer, num_labels: int = 1, tokenizer: Callable[[str], Sequence[int]] | None = None,
                 hidden_size: int | None = None, cls_id: int = 101, sep_id: int = 102, pad_id: int = 0,
                 max_length: int | None = None, seed: int = 0):
        if isinstance(num_labels, bool) or not isinstance(num_labels, int) or num_labels < 1:
            raise ValueError(f"CrossEncoder: num_labels must be an int >= 1, got {num_labels!r}")
        hidden_size = hidden_size or getattr(transformer, "hidden_size", None)
        if not hidden_size:
            raise ValueError("CrossEncoder: pass hidden_size= (the transformer has no hidden_size attribute)")
        self.transformer, self.num_labels, self.tokenizer = transformer, num_labels, tokenizer
        self.cls_id, self.sep_id, self.pad_id, self.max_length = cls_id, sep_id, pad_id, max_length
        rng = np.random.default_rng(seed)
        self.weight = Tensor(rng.normal(0.0, 0.02, (hidden_size, num_labels)).astype(np.float32), requires_grad=True)
        self.bias = Tensor(np.zeros(num_labels, dtype=np.float32), requires_grad=True)

    def parameters(self, trainable_only: bool = False) -> list:
        return [*self.transformer.parameters(trainable_only), self.weight, self.bias]

    def _ids(self, item) -> list[int]:
        if isinstance(item, str):
            if self.tokenizer is None:
                raise ValueError("CrossEncoder: got text but no tokenizer; pass tokenizer= or token ids")
            item = self.tokenizer(item)
        return [int(i) for i in item]

    def tokenize(self, pairs: Sequence) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(query, passage) pairs -> ids, token type ids and attention mask, each (N, T), right-padded."""
        rows, types = [], []
        for query, passage in pairs:
            first = [self.cls_id, *self._ids(query), self.sep_id]
            second = [*self._ids(passage), self.sep_id]
            row, kind = (first + second), [0] * len(first) + [1] * len(second)
            rows.append(row[:self.max_length] if self.max_length else row)
            types.append(kind[:self.max_length] if self.max_length else kind)
        longest = max(len(r) for r in rows)
        ids = np.full((len(rows), longest), self.pad_id, dtype=np.int64)
        token_types = np.zeros_like(ids)
        mask = np.zeros_like(ids)
        for i, (row, kind) in enumerate(zip(rows, types)):
            ids[i, :len(row)], token_types[i, :len(row)], mask[i, :len(row)] = row, kind, 1
        return ids, token_types, mask

    def __call__(self, ids, token_type_ids=None, attention_mask=None) -> Tensor:
        """The logits (N, num_labels) of a tokenized batch, on the graph (for training)."""
        hidden = self.transformer(ids, token_type_ids=token_type_ids, attention_mask=attention_mask)
        return getitem(hidden, (slice(None), 0)) @ self.weight + self.bias

    def predict(self, pairs: Sequence, batch_size: int = 32, activation: bool = True) -> np.ndarray:
        """Scores of ``pairs``: (N,) with one label (sigmoid of the logit unless
        ``activation=False``), else (N, num_labels) logits."""
        if not pairs:
            return np.zeros((0,) if self.num_labels == 1 else (0, self.num_labels))
        parts = []
        with no_grad():
            for start in range(0, len(pairs), batch_size):
                logits = self(*self.tokenize(pairs[start:start + batch_size]))
                if self.num_labels == 1 and activation:
                    logits = sigmoid(logits)
                parts.append(backend.to_numpy(logits.data))
        scores = np.concatenate(parts, axis=0)
        return scores[:, 0] if self.num_labels == 1 else scores

    def rank(self, query, documents: Sequence, top_k: int | None = None, return_documents: bool = False,
             batch_size: int = 32) -> list[dict]:
        """``documents`` ordered by their score with ``query``: ``{"corpus_id", "score"}`` (and
        ``"text"``), highest first, ties by index; the best ``top_k`` when given."""
        if self.num_labels != 1:
            raise ValueError(f"CrossEncoder.rank: needs a one-label model, this one has num_labels={self.num_labels}")
        scores = self.predict([(query, doc) for doc in documents], batch_size=batch_size)
        order = np.argsort(-scores, kind="stable")[:top_k]
        ranked = []
        for i in order:
            entry = {"corpus_id": int(i), "score": float(scores[i])}
            if return_documents:
                entry["text"] = documents[i]
            ranked.append(entry)
        return ranked
