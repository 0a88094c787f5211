"""A sentence encoder: a transformer, a pooling and an optional normalisation, with
sentence-transformers' ``encode``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

from lamina import backend
from lamina.autograd import Tensor, no_grad
from lamina.errors import ShapeError
from lamina.functional.shape import concat
from lamina.text.embeddings.pooling import Normalize, SentencePooling

__all__ = ["SentenceEncoder", "pad_ids"]


def pad_ids(sequences: Sequence[Sequence[int]], pad_id: int = 0, side: str = "right",
            max_length: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Token id lists -> ids (N, T) and attention mask (N, T) (1 on real tokens), padded with
    ``pad_id`` on ``side`` ('right' or 'left') to the longest, each cut to ``max_length``."""
    if side not in ("right", "left"):
        raise ValueError(f"pad_ids: side must be 'right' or 'left', got {side!r}")
    cut = [list(s)[:max_length] if max_length else list(s) for s in sequences]
    longest = max((len(s) for s in cut), default=0)
    ids = np.full((len(cut), longest), pad_id, dtype=np.int64)
    mask = np.zeros((len(cut), longest), dtype=np.int64)
    for i, s in enumerate(cut):
        where = slice(0, len(s)) if side == "right" else slice(longest - len(s), longest)
        ids[i, where], mask[i, where] = s, 1
    return ids, mask


class SentenceEncoder:
    """texts or token ids -> sentence embeddings (N, D), as a ``SentenceTransformer``.

    ``transformer(ids, attention_mask=mask)`` maps ids (N, T) to hidden states (N, T, H)
    (a :class:`lamina.models.BERT`, or any module with that call); ``pooling`` a
    :class:`SentencePooling` (mean by default); ``normalize`` appends :class:`Normalize`.
    ``tokenizer`` (text -> list of ids) is needed only for text inputs; ``pad_id``,
    ``padding_side`` and ``max_seq_length`` shape the batches.

    Calling the encoder on a padded batch, ``encoder(ids, attention_mask)``, records the graph
    (for training); :meth:`encode` runs without it, in batches.
    """

    def __init__(self, transformer, pooling: SentencePooling | None = None, normalize: bool = False,
                 tokenizer: Callable[[str], Sequence[int]] | None = None, pad_id: int = 0,
                 padding_side: str = "right", max_seq_length: int | None = None):
        self.transformer = transformer
        self.pooling = pooling if pooling is not None else SentencePooling("mean")
        self.normalize = Normalize() if normalize else None
        self.tokenizer = tokenizer
        self.pad_id = int(pad_id)
        if padding_side not in ("right", "left"):
            raise ValueError(f"SentenceEncoder: padding_side must be 'right' or 'left', got {padding_side!r}")
        self.padding_side = padding_side
        self.max_seq_length = max_seq_length

    def parameters(self, trainable_only: bool = False) -> list:
        """The transformer's parameters (pooling and normalisation have none)."""
        return self.transformer.parameters(trainable_only)

    def __call__(self, ids, attention_mask=None) -> Tensor:
        ids = ids.data if isinstance(ids, Tensor) else backend.xp.asarray(ids)
        if ids.ndim != 2:
            raise ShapeError(f"SentenceEncoder: ids must have shape (N, T), got shape {ids.shape}")
        if attention_mask is None:
            attention_mask = backend.xp.ones(ids.shape, dtype=ids.dtype)
        hidden = self.transformer(ids, attention_mask=attention_mask)
        embeddings = self.pooling(hidden, attention_mask)
        return self.normalize(embeddings) if self.normalize is not None else embeddings

    def tokenize(self, items: Sequence) -> tuple[np.ndarray, np.ndarray]:
        """Texts (through ``tokenizer``) or id lists -> padded ids and attention mask."""
        sequences = []
        for item in items:
            if isinstance(item, str):
                if self.tokenizer is None:
                    raise ValueError("SentenceEncoder: got text but no tokenizer; pass tokenizer= or token ids")
                item = self.tokenizer(item)
            sequences.append(item)
        return pad_ids(sequences, self.pad_id, self.padding_side, self.max_seq_length)

    def encode(self, sentences, batch_size: int = 32, convert_to_numpy: bool = True,
               normalize_embeddings: bool = False):
        """Embeddings of ``sentences`` (texts or id lists; one text gives one vector).

        As sentence-transformers, the inputs are sorted longest first (by ``len``: characters
        of a text, tokens of an id list) so that a batch pads little, and the embeddings come
        back in the input order. ``normalize_embeddings`` scales them to unit length.
        Returns a NumPy array (``convert_to_numpy``) or a tensor.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"SentenceEncoder.encode: batch_size must be an int >= 1, got {batch_size!r}")
        single = isinstance(sentences, str) or (len(sentences) > 0 and isinstance(sentences[0], (int, np.integer)))
        items = [sentences] if single else list(sentences)
        order = np.argsort([-len(item) for item in items], kind="stable")
        batches = []
        with no_grad():
            for start in range(0, len(items), batch_size):
                ids, mask = self.tokenize([items[i] for i in order[start:start + batch_size]])
                out = self(ids, mask)
                batches.append(Normalize()(out) if normalize_embeddings else out)
            if not batches:
                return np.zeros((0, 0)) if convert_to_numpy else Tensor(np.zeros((0, 0)))
            sorted_embeddings = concat(batches, axis=0) if len(batches) > 1 else batches[0]
            embeddings = sorted_embeddings[backend.xp.asarray(np.argsort(order))]
        if single:
            embeddings = embeddings[0]
        return backend.to_numpy(embeddings.data) if convert_to_numpy else embeddings

    def __repr__(self) -> str:
        return f"SentenceEncoder({type(self.transformer).__name__}, {self.pooling!r}, normalize={bool(self.normalize)})"
