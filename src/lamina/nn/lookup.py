"""Vocabulary lookup layers (Keras's ``IntegerLookup`` and ``StringLookup``): each token
becomes its index in a vocabulary, given or learned by ``adapt`` from token frequencies.

Index layout in ``output_mode='int'``: the mask token (if any) at 0, then
``num_oov_indices`` out-of-vocabulary (OOV) indices, then the vocabulary, most frequent
token first. In the encoding modes ('one_hot', 'multi_hot', 'count', 'tf_idf') there is no
mask index (mask tokens are dropped) and the OOV indices come first. With several OOV
indices, an unknown token goes to OOV bucket ``token mod num_oov_indices`` (integers) or
its :func:`~lamina.nn.adapt.stable_hash` bucket (strings); with none it is an error.

tf-idf: ``count(t, doc) * idf(t)`` with Keras's ``idf(t) = log(1 + N / (1 + df(t)))`` over
the N adapted documents (``df``: documents containing t); the OOV indices get the mean idf
of the vocabulary. (scikit-learn's smoothed idf is ``log((1 + N) / (1 + df)) + 1``.) A
document is one sample: the last axis of a batch (each value of a 1-D batch).

Adapted vocabularies are ordered by decreasing count, ties by decreasing token (as Keras
does), and capped to ``max_tokens`` indices in all, special indices included.
"""

from __future__ import annotations

import os
from collections import Counter
from typing import Any

import numpy as np

from lamina.autograd import Tensor
from lamina.nn.adapt import (
    PreprocessingLayer,
    as_array,
    check_mode,
    check_not_sparse,
    encode_categorical,
    encoded_shape,
    stable_hash,
)
from lamina.nn.layer import register_layer

__all__ = ["IntegerLookup", "StringLookup"]

MODES = ("int", "one_hot", "multi_hot", "count", "tf_idf")


class IndexLookup(PreprocessingLayer):
    """The shared machinery of :class:`IntegerLookup` and :class:`StringLookup`."""

    _vocabulary_buffers: tuple[str, ...] = ()

    def __init__(self, max_tokens: int | None, num_oov_indices: int, mask_token: Any, oov_token: Any,
                 vocabulary: Any, idf_weights: Any, invert: bool, output_mode: str, pad_to_max_tokens: bool,
                 sparse: bool, name: str | None):
        super().__init__(name=name)
        who = type(self).__name__
        if isinstance(num_oov_indices, bool) or not isinstance(num_oov_indices, int) or num_oov_indices < 0:
            raise ValueError(f"{who}: num_oov_indices must be an int >= 0; got {num_oov_indices!r}")
        self.num_oov_indices = num_oov_indices
        self.mask_token, self.oov_token = mask_token, oov_token
        self.output_mode = check_mode(output_mode, MODES, who)
        self.sparse = check_not_sparse(sparse, who)
        self.invert = bool(invert)
        if self.invert and output_mode != "int":
            raise ValueError(f"{who}: invert=True maps indices back to tokens and needs output_mode='int'; "
                             f"got {output_mode!r}")
        if max_tokens is not None and (isinstance(max_tokens, bool) or not isinstance(max_tokens, int)
                                       or max_tokens <= self._start()):
            raise ValueError(f"{who}: max_tokens must be None or an int above the {self._start()} special "
                             f"indices; got {max_tokens!r}")
        self.max_tokens = max_tokens
        if pad_to_max_tokens and max_tokens is None:
            raise ValueError(f"{who}: pad_to_max_tokens=True needs max_tokens")
        self.pad_to_max_tokens = bool(pad_to_max_tokens)
        self._tokens: list | None = None
        self._index: dict = {}
        self._written: Any = None          # the buffers last written from the vocabulary
        for buffer in self._vocabulary_buffers:
            self.register_buffer(buffer, None)
        self.register_buffer("idf_weights", None)
        if vocabulary is not None:
            self.set_vocabulary(vocabulary, idf_weights)
        elif idf_weights is not None:
            raise ValueError(f"{who}: idf_weights need a vocabulary of the same length")

    # -- vocabulary ---------------------------------------------------------------------------
    def _start(self) -> int:
        """The index of the first vocabulary token in the current output mode."""
        mask = self.mask_token is not None and self.output_mode == "int"
        return self.num_oov_indices + int(mask)

    def _clean(self, token: Any) -> Any:
        raise NotImplementedError

    def _state_to_buffers(self) -> None:
        raise NotImplementedError

    def _buffers_to_tokens(self) -> list | None:
        """The vocabulary held in the buffers, or None when they are the ones last written."""
        raise NotImplementedError

    def set_vocabulary(self, vocabulary: Any, idf_weights: Any = None) -> None:
        """Install a vocabulary (without special tokens) and, for 'tf_idf', its idf weights."""
        who = self._label()
        if isinstance(vocabulary, (str, os.PathLike)):
            with open(vocabulary, encoding="utf-8") as f:
                vocabulary = [line.rstrip("\n") for line in f if line.rstrip("\n")]
        tokens = [self._clean(t) for t in as_array(vocabulary).reshape(-1).tolist()]
        specials = {t for t in (self.mask_token, self.oov_token) if t is not None}
        bad = [t for t in tokens if t in specials]
        if bad:
            raise ValueError(f"{who}: the vocabulary must not contain the mask or OOV token; found {bad[0]!r}")
        if len(set(tokens)) != len(tokens):
            repeated = next(t for t, n in Counter(tokens).items() if n > 1)
            raise ValueError(f"{who}: the vocabulary repeats the token {repeated!r}")
        if self.max_tokens is not None and len(tokens) + self._start() > self.max_tokens:
            raise ValueError(f"{who}: a vocabulary of {len(tokens)} tokens and {self._start()} special indices "
                             f"exceeds max_tokens={self.max_tokens}")
        if self.output_mode == "tf_idf":
            if idf_weights is None:
                raise ValueError(f"{who}: output_mode='tf_idf' with a given vocabulary needs idf_weights")
            idf = np.asarray(idf_weights, dtype=np.float64).reshape(-1)
            if len(idf) != len(tokens):
                raise ValueError(f"{who}: {len(idf)} idf_weights for a vocabulary of {len(tokens)} tokens")
            mean = idf.mean() if len(idf) else 0.0
            self.idf_weights = np.concatenate([np.full(self.num_oov_indices, mean), idf])
        elif idf_weights is not None:
            raise ValueError(f"{who}: idf_weights are only used with output_mode='tf_idf'")
        self._install(tokens)

    def _install(self, tokens: list) -> None:
        self._tokens = tokens
        self._index = {t: self._start() + i for i, t in enumerate(tokens)}
        self._state_to_buffers()

    def _sync(self) -> None:
        """Re-read the vocabulary when load_state_dict replaced the buffers."""
        tokens = self._buffers_to_tokens()
        if tokens is not None:
            self._install(tokens)

    @property
    def is_adapted(self) -> bool:
        self._sync()
        return self._tokens is not None

    def get_vocabulary(self, include_special_tokens: bool = True) -> list:
        """The tokens by index (the mask and OOV tokens first, as in the current output mode)."""
        self._require_adapted()
        self._sync()
        if not include_special_tokens:
            return list(self._tokens)
        mask = [self.mask_token] if self.mask_token is not None and self.output_mode == "int" else []
        return mask + [self.oov_token] * self.num_oov_indices + list(self._tokens)

    def vocabulary_size(self) -> int:
        """The number of indices, special ones included."""
        self._require_adapted()
        self._sync()
        return self._start() + len(self._tokens)

    # -- adapt ----------------------------------------------------------------------------------
    def _start_adapt(self) -> None:
        self._counts: Counter = Counter()
        self._document_counts: Counter = Counter()
        self._documents = 0

    def _documents_of(self, batch: np.ndarray) -> list[list]:
        rows = batch.reshape(-1, 1) if batch.ndim < 2 else batch.reshape(-1, batch.shape[-1])
        return [[self._clean(t) for t in row] for row in rows.tolist()]

    def _update_adapt(self, batch: np.ndarray) -> None:
        self.count_documents(self._documents_of(batch))

    def count_documents(self, documents: list[list]) -> None:
        """Add token and document frequencies of a list of documents (lists of tokens)."""
        specials = {t for t in (self.mask_token, self.oov_token) if t is not None}
        for document in documents:
            tokens = [t for t in document if t not in specials]
            self._counts.update(tokens)
            self._document_counts.update(set(tokens))
        self._documents += len(documents)

    def _finish_adapt(self) -> None:
        ranked = sorted(self._counts.items(), key=lambda item: (item[1], item[0]), reverse=True)
        if self.max_tokens is not None:
            ranked = ranked[:self.max_tokens - self._start()]
        tokens = [t for t, _ in ranked]
        if self.output_mode == "tf_idf":
            df = np.array([self._document_counts[t] for t in tokens], dtype=np.float64)
            idf = np.log1p(self._documents / (1.0 + df))
            self.idf_weights = np.concatenate([np.full(self.num_oov_indices, idf.mean() if len(idf) else 0.0), idf])
        del self._counts, self._document_counts, self._documents
        self._install(tokens)

    # -- running --------------------------------------------------------------------------------
    def _oov_buckets(self, tokens: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def lookup(self, values: np.ndarray) -> np.ndarray:
        """Indices of the tokens in ``values`` (int64, same shape; -1 for dropped mask tokens)."""
        self._require_adapted()
        self._sync()
        flat = values.reshape(-1)
        uniques, inverse = np.unique(flat, return_inverse=True) if flat.size else (flat, flat.astype(np.int64))
        keys = [self._clean(u) for u in uniques.tolist()]
        codes = np.array([self._index.get(k, -2) for k in keys], dtype=np.int64)
        if self.mask_token is not None:
            codes[[k == self.mask_token for k in keys]] = 0 if self.output_mode == "int" else -1
        unknown = np.flatnonzero(codes == -2)
        if len(unknown):
            if self.num_oov_indices == 0:
                raise KeyError(f"{self._label()}: {keys[unknown[0]]!r} is not in the vocabulary and "
                               "num_oov_indices=0 leaves no index for unknown tokens")
            offset = 1 if self.mask_token is not None and self.output_mode == "int" else 0
            codes[unknown] = offset + self._oov_buckets(uniques[unknown])
        return codes[inverse].reshape(values.shape)

    def depth(self) -> int:
        """The length of an encoding (the vocabulary size, or max_tokens when padding to it)."""
        return self.max_tokens if self.pad_to_max_tokens else self.vocabulary_size()

    def encode(self, indices: np.ndarray) -> np.ndarray:
        """The output of the current mode for lookup indices."""
        if self.output_mode == "int":
            return indices
        mode = "count" if self.output_mode == "tf_idf" else self.output_mode
        out = encode_categorical(indices, self.depth(), mode)
        if self.output_mode == "tf_idf":
            idf = np.zeros(self.depth())
            idf[:len(self.idf_weights)] = self.idf_weights
            out = (out * idf).astype(out.dtype)
        return out

    def forward(self, x):
        values = as_array(x)
        if self.invert:
            return self._invert(values)
        return Tensor(self.encode(self.lookup(values)))

    def _invert(self, indices: np.ndarray):
        vocabulary = self.get_vocabulary()
        if not np.issubdtype(indices.dtype, np.integer):
            raise TypeError(f"{self._label()}: invert=True takes integer indices; got dtype {indices.dtype}")
        table = np.array(vocabulary + [self.oov_token], dtype=object)
        out_of_range = (indices < 0) | (indices >= len(vocabulary))
        return table[np.where(out_of_range, len(vocabulary), indices)]

    def compute_output_shape(self, input_shape):
        return encoded_shape(input_shape, self.depth(), self.output_mode)

    # -- description ----------------------------------------------------------------------------
    def _vocabulary_config(self) -> list | None:
        if not self.is_adapted:
            return None
        self._sync()
        return list(self._tokens)

    def get_config(self) -> dict:
        idf = None
        if self.output_mode == "tf_idf" and self.idf_weights is not None:
            idf = np.asarray(self.idf_weights[self.num_oov_indices:], dtype=np.float64).tolist()
        return {"max_tokens": self.max_tokens, "num_oov_indices": self.num_oov_indices,
                "mask_token": self.mask_token, "oov_token": self.oov_token, "vocabulary": self._vocabulary_config(),
                "idf_weights": idf, "invert": self.invert, "output_mode": self.output_mode,
                "pad_to_max_tokens": self.pad_to_max_tokens, "sparse": self.sparse, "name": self.name}

    def extra_repr(self) -> str:
        size = self.vocabulary_size() if self.is_adapted else "not adapted"
        return f"vocabulary_size={size}, output_mode={self.output_mode!r}"


@register_layer
class IntegerLookup(IndexLookup):
    """Integer tokens (ids, category codes) to vocabulary indices; see :mod:`lamina.nn.lookup`.
    The vocabulary is saved as the int64 buffer ``vocabulary``. Defaults as Keras: no mask,
    one OOV index, OOV token -1."""

    def __init__(self, max_tokens: int | None = None, num_oov_indices: int = 1, mask_token: int | None = None,
                 oov_token: int = -1, vocabulary: Any = None, idf_weights: Any = None, invert: bool = False,
                 output_mode: str = "int", pad_to_max_tokens: bool = False, sparse: bool = False,
                 name: str | None = None):
        super().__init__(max_tokens, num_oov_indices, mask_token, oov_token, vocabulary, idf_weights, invert,
                         output_mode, pad_to_max_tokens, sparse, name)

    def _clean(self, token):
        if isinstance(token, (str, bytes)) or (isinstance(token, float) and not token.is_integer()):
            raise TypeError(f"{self._label()}: tokens must be integers; got {token!r}")
        return int(token)

    _vocabulary_buffers = ("vocabulary",)
    reads_ids = True           # saving builds a model that starts with it on integer zeros

    def _state_to_buffers(self) -> None:
        self.register_buffer("vocabulary", np.array(self._tokens, dtype=np.int64))
        self._written = self.vocabulary

    def _buffers_to_tokens(self):
        buffer = self._buffers.get("vocabulary")
        return None if buffer is None or buffer is self._written else [int(t) for t in buffer]

    def _oov_buckets(self, tokens):
        return np.asarray(tokens, dtype=np.int64) % self.num_oov_indices

    def forward(self, x):
        out = super().forward(x)
        return Tensor(out.astype(np.int64)) if self.invert else out


@register_layer
class StringLookup(IndexLookup):
    """String tokens to vocabulary indices; see :mod:`lamina.nn.lookup`. ``vocabulary`` may
    also be the path of a text file with one token per line. With ``invert=True`` the output
    is a NumPy array of strings (dtype object). The vocabulary is saved as the UTF-8 bytes
    of the tokens (``vocabulary_bytes``, uint8) and their lengths (``vocabulary_lengths``).
    Defaults as Keras: no mask, one OOV index, OOV token '[UNK]'."""

    reads_strings = True

    def __init__(self, max_tokens: int | None = None, num_oov_indices: int = 1, mask_token: str | None = None,
                 oov_token: str = "[UNK]", vocabulary: Any = None, idf_weights: Any = None, invert: bool = False,
                 output_mode: str = "int", pad_to_max_tokens: bool = False, sparse: bool = False,
                 name: str | None = None):
        super().__init__(max_tokens, num_oov_indices, mask_token, oov_token, vocabulary, idf_weights, invert,
                         output_mode, pad_to_max_tokens, sparse, name)

    def _clean(self, token):
        if isinstance(token, bytes):
            return token.decode("utf-8")
        if not isinstance(token, str):
            raise TypeError(f"{self._label()}: tokens must be strings; got {token!r}")
        return token

    _vocabulary_buffers = ("vocabulary_bytes", "vocabulary_lengths")

    def _state_to_buffers(self) -> None:
        encoded = [t.encode("utf-8") for t in self._tokens]
        self.register_buffer("vocabulary_bytes", np.frombuffer(b"".join(encoded), dtype=np.uint8).copy())
        self.register_buffer("vocabulary_lengths", np.array([len(e) for e in encoded], dtype=np.int64))
        self._written = (self.vocabulary_bytes, self.vocabulary_lengths)

    def _buffers_to_tokens(self):
        data, lengths = self._buffers.get("vocabulary_bytes"), self._buffers.get("vocabulary_lengths")
        if data is None or lengths is None or (self._written is not None and data is self._written[0]
                                               and lengths is self._written[1]):
            return None
        blob, ends = np.asarray(data, dtype=np.uint8).tobytes(), np.cumsum(lengths)
        return [blob[end - n:end].decode("utf-8") for end, n in zip(ends.tolist(), lengths.tolist())]

    def _oov_buckets(self, tokens):
        return stable_hash(np.asarray([self._clean(t) for t in tokens.tolist()], dtype=object),
                           self.num_oov_indices)
